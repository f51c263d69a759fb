//! What a refusal tells the customer: a fixed [`RefusalReason`] code, the HTTP status
//! the caller was answered, and the action only as a validated name, never as text
//! the caller chose. The caller gets the detailed message in their own answer; the
//! log holds no operator name, e-mail, group or schedule name, and nothing that could
//! forge a line of its own (docs/formats.md, "Refusal").

use crate::digest::Sha256Digest;
use crate::id::ActionName;
use serde::{Deserialize, Serialize};

/// Why the gateway refused: one of a fixed set of codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// No valid credential.
    NotAuthenticated,
    /// No current on-call shift for the cluster.
    NotOnCall,
    /// A current shift, but not with the role the action requires.
    RoleInsufficient,
    /// The action is not in the approved policy.
    UnknownAction,
    /// The parameters do not pass the policy's validator.
    InvalidParameters,
    /// The ticket or the reason do not pass the policy's checks.
    InvalidJustification,
    /// The instance named is not one of the cluster's.
    UnknownInstance,
    /// The action acts on one instance and none was named.
    InstanceRequired,
    /// The cluster has no instance to act on.
    NoInstance,
    /// The action's rate limit for this operator is reached.
    RateLimited,
    /// The rate-limit state could not be read (refused, fail closed).
    RateLimitUnavailable,
    /// An on-call feed that grants on the cluster has not been fetched recently
    /// enough; its grants count for nothing until it is (fail closed).
    OncallFeedStale,
    /// The gateway's policy repository cannot be verified now (its metadata
    /// expired, it is unreadable): no new action until fresh metadata verifies.
    TrustMetadata,
    /// A summary: more refusals than the log takes one by one came from this
    /// operator on this cluster; the event's `not_logged` counts them.
    RefusalsNotLogged,
    /// The action changes an object the customer owns, which needs the customer's
    /// approval, and the tenant's statement names no approvers.
    NoApprovers,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAuthenticated => "not-authenticated",
            Self::NotOnCall => "not-on-call",
            Self::RoleInsufficient => "role-insufficient",
            Self::UnknownAction => "unknown-action",
            Self::InvalidParameters => "invalid-parameters",
            Self::InvalidJustification => "invalid-justification",
            Self::UnknownInstance => "unknown-instance",
            Self::InstanceRequired => "instance-required",
            Self::NoInstance => "no-instance",
            Self::RateLimited => "rate-limited",
            Self::RateLimitUnavailable => "rate-limit-unavailable",
            Self::OncallFeedStale => "oncall-feed-stale",
            Self::TrustMetadata => "trust-metadata",
            Self::RefusalsNotLogged => "refusals-not-logged",
            Self::NoApprovers => "no-approvers",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The placeholder logged for an action name that is not a valid name.
pub const UNKNOWN_ACTION: &str = "unknown-action";
/// The action of a summary of refusals not logged one by one (no action can be
/// named so: it has no dot).
pub const SUMMARY_ACTION: &str = "refusals-not-logged";

/// The action a refused request named, as the log holds it: a valid action name, or
/// [`UNKNOWN_ACTION`] (which no action can be named: it has no dot). What was sent
/// instead is only in the event's `action_digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LoggedAction(String);

impl LoggedAction {
    /// `requested` as logged, with the SHA-256 of its bytes when it is not a valid
    /// action name.
    pub fn of(requested: &str) -> (Self, Option<Sha256Digest>) {
        match ActionName::parse(requested) {
            Ok(name) => (Self(name.to_string()), None),
            Err(_) => (
                Self(UNKNOWN_ACTION.to_string()),
                Some(Sha256Digest::of(requested.as_bytes())),
            ),
        }
    }

    /// As [`LoggedAction::of`], but a valid name is logged only when `known` says the
    /// approved policy has it: any other name, however well-formed, is text the
    /// caller chose and goes to the log only as its digest.
    pub fn of_known(
        requested: &str,
        known: impl FnOnce(&str) -> bool,
    ) -> (Self, Option<Sha256Digest>) {
        match ActionName::parse(requested) {
            Ok(name) if known(&name.to_string()) => (Self(name.to_string()), None),
            _ => (
                Self(UNKNOWN_ACTION.to_string()),
                Some(Sha256Digest::of(requested.as_bytes())),
            ),
        }
    }

    /// The action of a summary of refusals not logged one by one.
    pub fn summary() -> Self {
        Self(SUMMARY_ACTION.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LoggedAction {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        if value == UNKNOWN_ACTION || value == SUMMARY_ACTION || ActionName::parse(&value).is_ok() {
            Ok(Self(value))
        } else {
            Err(format!(
                "a refusal's action must be an action name, {UNKNOWN_ACTION:?} or {SUMMARY_ACTION:?}"
            ))
        }
    }
}

impl From<LoggedAction> for String {
    fn from(a: LoggedAction) -> String {
        a.0
    }
}

impl std::fmt::Display for LoggedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_names_are_logged_as_sent() {
        let (a, d) = LoggedAction::of("etcd.status");
        assert_eq!((a.as_str(), d), ("etcd.status", None));
        for forged in [
            "etcd.status\n",
            "x\u{1b}[2K",
            "etcd.\u{202e}sutats",
            "unknown-action",
        ] {
            let (a, d) = LoggedAction::of(forged);
            assert_eq!(a.as_str(), UNKNOWN_ACTION, "{forged:?}");
            assert_eq!(d, Some(Sha256Digest::of(forged.as_bytes())));
        }
        assert!(LoggedAction::try_from("etcd.status\n".to_string()).is_err());
        assert_eq!(
            serde_json::to_string(&RefusalReason::NotOnCall)
                .ok()
                .as_deref(),
            Some("\"not-on-call\"")
        );
    }

    #[test]
    fn a_well_formed_name_the_policy_lacks_is_logged_only_as_its_digest() {
        let known = |n: &str| n == "etcd.status";
        let (a, d) = LoggedAction::of_known("etcd.status", known);
        assert_eq!((a.as_str(), d), ("etcd.status", None));
        let (a, d) = LoggedAction::of_known("restore.completed-ok", known);
        assert_eq!(a.as_str(), UNKNOWN_ACTION);
        assert_eq!(d, Some(Sha256Digest::of(b"restore.completed-ok")));
    }
}
