//! Typed identifiers.
//!
//! Every identifier that crosses a trust boundary (a request, a config file, a log
//! entry) is parsed into one of these types once, at the edge. The rules are those of
//! a DNS label (RFC 1123 §2.1) because identifiers end up in log origins, file names,
//! certificate names and URLs: lower-case ASCII letters, digits and `-`, starting and
//! ending with a letter or digit, at most 63 bytes. Operator ids also allow `.`, `_`
//! and `@` (they are often e-mail-like subjects) and may be up to 128 bytes.
//! Nothing is normalised: `Demo` is refused rather than lower-cased, so two spellings
//! can never name one thing (and look-alike Unicode never reaches a comparison).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused. The message names the kind and the offending value
/// (escaped with `{:?}`, so control characters stay visible).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is {len} bytes long; it must be exactly {want}")]
    WrongLength {
        kind: &'static str,
        value: String,
        len: usize,
        want: usize,
    },
    #[error("{kind} {value:?} is {len} bytes long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} {value:?} contains {found:?} at byte {at}; allowed are {allowed}")]
    BadChar {
        kind: &'static str,
        value: String,
        found: char,
        at: usize,
        allowed: &'static str,
    },
    #[error("{kind} {value:?} must start and end with a lower-case letter or digit")]
    BadEdge { kind: &'static str, value: String },
}

/// The character rules of one identifier kind.
struct Rule {
    kind: &'static str,
    max: usize,
    extra: &'static [char],
    allowed: &'static str,
}

const LABEL: &str = "lower-case ASCII letters, digits and '-'";

fn check(rule: &Rule, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind: rule.kind });
    }
    if value.len() > rule.max {
        // Keep the echoed value bounded: an oversize input is not worth printing whole.
        let shown: String = value.chars().take(80).collect();
        return Err(IdError::TooLong {
            kind: rule.kind,
            value: shown,
            len: value.len(),
            max: rule.max,
        });
    }
    for (at, c) in value.char_indices() {
        let ok =
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || rule.extra.contains(&c);
        if !ok {
            return Err(IdError::BadChar {
                kind: rule.kind,
                value: value.to_string(),
                found: c,
                at,
                allowed: rule.allowed,
            });
        }
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        return Err(IdError::BadEdge {
            kind: rule.kind,
            value: value.to_string(),
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $extra:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            const RULE: Rule = Rule { kind: $kind, max: $max, extra: $extra, allowed: $allowed };

            /// Parses and validates an identifier.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check(&Self::RULE, value)?;
                Ok(Self(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// For literals in this crate that a test shows to be valid.
            #[allow(dead_code)]
            pub(crate) fn from_literal(value: &'static str) -> Self {
                debug_assert!(check(&Self::RULE, value).is_ok(), "{value}");
                Self(value.to_string())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                check(&Self::RULE, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

identifier!(
    /// A tenant: the customer who owns one or more clusters.
    TenantId, "tenant id", 63, &[], LABEL
);
identifier!(
    /// A cluster; its log origin is `<base-origin>/<cluster-id>`.
    ClusterId, "cluster id", 63, &[], LABEL
);
identifier!(
    /// One control-plane instance of a cluster (where one agent runs).
    InstanceId, "instance id", 63, &[], LABEL
);
identifier!(
    /// An operator, or the stable pseudonym that stands for one in customer views.
    OperatorId, "operator id", 128, &['.', '_', '@'],
    "lower-case ASCII letters, digits, '-', '.', '_' and '@'"
);

/// An event id: 128 random bits as 32 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    pub const LEN: usize = 32;

    /// A fresh random id from the operating system's generator.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }

    pub fn parse(value: &str) -> Result<Self, IdError> {
        const KIND: &str = "event id";
        if value.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if value.len() != Self::LEN {
            return Err(IdError::WrongLength {
                kind: KIND,
                value: value.chars().take(80).collect(),
                len: value.len(),
                want: Self::LEN,
            });
        }
        if let Some((at, found)) = value
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || ('a'..='f').contains(c)))
        {
            return Err(IdError::BadChar {
                kind: KIND,
                value: value.to_string(),
                found,
                at,
                allowed: "32 lower-case hex digits",
            });
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EventId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in [
            "demo",
            "a",
            "demo-0",
            "0",
            "prod-eu-west-1",
            &"a".repeat(63),
        ] {
            assert_eq!(
                ClusterId::parse(ok).map(|c| c.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn refuses_bad_labels_naming_the_value() {
        let cases = [
            ("", "must not be empty"),
            ("Demo", "contains 'D'"),
            ("-demo", "must start and end"),
            ("demo-", "must start and end"),
            ("de mo", "contains ' '"),
            ("de/mo", "contains '/'"),
            ("de..mo", "contains '.'"),
            ("demo\0", "contains '\\0'"),
            ("demo\n", "contains '\\n'"),
        ];
        for (bad, want) in cases {
            let err = ClusterId::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
            assert!(err.starts_with("cluster id"), "{err}");
        }
    }

    #[test]
    fn refuses_oversize_and_bounds_the_echo() {
        let long = "a".repeat(10_000);
        let err = TenantId::parse(&long).expect_err("oversize").to_string();
        assert!(err.contains("10000 bytes long; the limit is 63"), "{err}");
        assert!(err.len() < 300, "echo must be bounded: {} bytes", err.len());
        assert!(InstanceId::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn refuses_unicode_lookalikes() {
        // Cyrillic 'е' (U+0435) looks like Latin 'e'; full-width and combining forms too.
        for bad in ["d\u{435}mo", "ｄemo", "de\u{301}mo", "demo\u{200b}", "ǆ"] {
            let err = ClusterId::parse(bad).expect_err(bad);
            assert!(matches!(err, IdError::BadChar { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn operator_ids_allow_subject_characters() {
        assert!(OperatorId::parse("alice@example.com").is_ok());
        assert!(OperatorId::parse("svc_bot.1").is_ok());
        assert!(OperatorId::parse("alice@").is_err());
        assert!(OperatorId::parse("Alice").is_err());
        assert!(OperatorId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn serde_validates_at_the_edge() {
        let ok: ClusterId = serde_json::from_str("\"demo\"").expect("valid");
        assert_eq!(ok.as_str(), "demo");
        let err = serde_json::from_str::<ClusterId>("\"../etc\"").expect_err("invalid");
        assert!(err.to_string().contains("cluster id"), "{err}");
        assert_eq!(serde_json::to_string(&ok).expect("ser"), "\"demo\"");
    }

    #[test]
    fn event_ids_are_random_hex() {
        let a = EventId::random().expect("rng");
        let b = EventId::random().expect("rng");
        assert_ne!(a, b);
        assert_eq!(EventId::parse(a.as_str()), Ok(a.clone()));
        assert!(EventId::parse("0123").is_err());
        assert!(EventId::parse(&"G".repeat(32)).is_err());
    }
}

/// The name of an action in the policy, e.g. `etcd.status` or `kube.cordon`: two or
/// more dot-separated words of lower-case letters, digits and `-`, each starting with
/// a letter; at most 64 bytes. (No `/`, no spaces, nothing a shell or a path could use.)
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActionName(String);

impl ActionName {
    pub const MAX: usize = 64;

    pub fn parse(value: &str) -> Result<Self, IdError> {
        const KIND: &str = "action name";
        const ALLOWED: &str = "dot-separated words of lower-case letters, digits and '-'";
        if value.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if value.len() > Self::MAX {
            return Err(IdError::TooLong {
                kind: KIND,
                value: value.chars().take(80).collect(),
                len: value.len(),
                max: Self::MAX,
            });
        }
        if let Some((at, found)) = value.char_indices().find(|(_, c)| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')
        }) {
            return Err(IdError::BadChar {
                kind: KIND,
                value: value.to_string(),
                found,
                at,
                allowed: ALLOWED,
            });
        }
        let words: Vec<&str> = value.split('.').collect();
        let word_ok = |w: &&str| {
            w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && w.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
        };
        if words.len() < 2 || !words.iter().all(word_ok) {
            return Err(IdError::BadEdge {
                kind: KIND,
                value: value.to_string(),
            });
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ActionName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ActionName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ActionName> for String {
    fn from(a: ActionName) -> String {
        a.0
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionName({:?})", self.0)
    }
}

#[cfg(test)]
mod action_tests {
    use super::*;

    #[test]
    fn action_names() {
        for ok in [
            "etcd.status",
            "kube.cordon",
            "etcd.backup-prune",
            "component.upgrade",
        ] {
            assert!(ActionName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "shell",
            "etcd.",
            ".etcd",
            "etcd..status",
            "etcd/status",
            "Etcd.status",
            "etcd.status;id",
            "etcd.-x",
            "1etcd.status",
            "etcd status",
            "etcd.stat\u{fe}s",
        ] {
            assert!(ActionName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
