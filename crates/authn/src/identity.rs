//! Who a verified token names: the operator, in the one spelling Palisade uses.

use palisade_core::id::OperatorId;
use serde_json::Value;

use crate::error::{shown, AuthError};

/// The longest operator name accepted from a token.
pub const MAX_OPERATOR_LEN: usize = 64;
/// At most this many groups are taken from a token.
pub const MAX_GROUPS: usize = 256;
const MAX_GROUP_LEN: usize = 256;

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From the configured identity claim, lower-cased (ASCII only), 1 to 64 of
    /// `a-z 0-9 . _ @ -`, starting and ending with a letter or digit: always a valid
    /// [`OperatorId`].
    pub operator: String,
    /// The token's `sub`: the issuer's stable id for the person.
    pub subject: String,
    pub issuer: String,
    /// From the configured groups claim; empty if there is none.
    pub groups: Vec<String>,
    /// The token's `exp` (Unix seconds): the identity is not good after it.
    pub expires_at: i64,
}

impl Identity {
    /// The operator as Palisade's identifier type.
    pub fn operator_id(&self) -> Result<OperatorId, AuthError> {
        OperatorId::parse(&self.operator).map_err(|e| AuthError::BadIdentity {
            claim: "operator".to_owned(),
            value: shown(&self.operator),
            reason: e.to_string(),
        })
    }
}

/// The operator name for `value`: ASCII lower-cased, then held to the rules of
/// [`Identity::operator`]. Non-ASCII letters are refused, not folded, so look-alike
/// Unicode can never become somebody else's name.
pub fn operator_name(claim: &str, value: &str) -> Result<String, AuthError> {
    let refuse = |reason: String| AuthError::BadIdentity {
        claim: claim.to_owned(),
        value: shown(value),
        reason,
    };
    let lowered = value.to_ascii_lowercase();
    if lowered.is_empty() || lowered.len() > MAX_OPERATOR_LEN {
        return Err(refuse(format!(
            "it must be 1 to {MAX_OPERATOR_LEN} characters"
        )));
    }
    if let Some(c) = lowered.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-'))
    }) {
        return Err(refuse(format!(
            "it contains {c:?}; allowed are letters, digits, '.', '_', '@' and '-' (configure identity_claim to name a claim that holds a user name or email)"
        )));
    }
    OperatorId::parse(&lowered).map_err(|e| refuse(e.to_string()))?;
    Ok(lowered)
}

/// The groups claim: an array of strings, or one string.
pub(crate) fn groups(claim: &str, value: Option<&Value>) -> Result<Vec<String>, AuthError> {
    let bad = |reason: &str| AuthError::bad_claim(claim, reason);
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        Some(_) => return Err(bad("it must be an array of strings")),
    };
    if items.len() > MAX_GROUPS {
        return Err(bad(&format!(
            "{} groups; at most {MAX_GROUPS} are accepted (have the issuer send only the relevant ones)",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(g) = item else {
            return Err(bad("it must be an array of strings"));
        };
        if g.is_empty() || g.len() > MAX_GROUP_LEN || g.chars().any(char::is_control) {
            return Err(bad(&format!(
                "group {} must be 1 to {MAX_GROUP_LEN} bytes without control characters",
                shown(g)
            )));
        }
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_are_lower_cased_and_restricted() {
        assert_eq!(
            operator_name("email", "Alice@Example.COM").unwrap(),
            "alice@example.com"
        );
        assert_eq!(operator_name("sub", "svc_bot.1").unwrap(), "svc_bot.1");
        for bad in [
            "",
            "Alice Smith",
            "al/ice",
            "alice@",
            "-alice",
            "ålice",
            "\u{212a}elvin",
        ] {
            let err = operator_name("email", bad).expect_err(bad);
            assert!(matches!(err, AuthError::BadIdentity { .. }), "{bad}: {err}");
        }
        assert!(operator_name("sub", &"a".repeat(65)).is_err());
        assert!(operator_name("sub", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn groups_may_be_a_string_or_an_array() {
        let one = Value::String("sre".into());
        assert_eq!(groups("groups", Some(&one)).unwrap(), vec!["sre"]);
        let many = serde_json::json!(["sre", "dba", "sre"]);
        assert_eq!(groups("groups", Some(&many)).unwrap(), vec!["sre", "dba"]);
        assert!(groups("groups", None).unwrap().is_empty());
        assert!(groups("groups", Some(&serde_json::json!([1]))).is_err());
        assert!(groups("groups", Some(&serde_json::json!({"a": 1}))).is_err());
    }

    #[test]
    fn groups_are_bounded_in_number_and_size_and_hold_no_control_characters() {
        let n = |count: usize| {
            let all: Vec<String> = (0..count).map(|i| format!("g{i}")).collect();
            groups("groups", Some(&serde_json::json!(all)))
        };
        assert_eq!(n(MAX_GROUPS).expect("at the bound").len(), MAX_GROUPS);
        assert!(n(MAX_GROUPS + 1).is_err());
        let one = |g: String| groups("groups", Some(&Value::String(g)));
        assert!(one("a".repeat(MAX_GROUP_LEN)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(MAX_GROUP_LEN + 1),
            "sre\nadmins".to_owned(),
            "sre\u{7f}".to_owned(),
        ] {
            let err = one(bad.clone()).expect_err(&bad);
            assert!(matches!(err, AuthError::BadClaim { .. }), "{bad:?}: {err}");
        }
    }
}
