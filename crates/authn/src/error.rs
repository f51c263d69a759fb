//! Why a token, a key set or a setting was refused.
//!
//! Every message is safe to show the caller: the token itself is never echoed, and
//! the few values taken from it (an algorithm name, a key id, a claim value) are
//! shortened and escaped with `{:?}` so they cannot forge log lines.

use std::path::PathBuf;

/// A refusal. The gateway answers 401 for everything except
/// [`is_unavailable`](AuthError::is_unavailable) errors (503: the token may well be
/// good, the issuer's keys could not be read) and configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("the token is {len} bytes long; the limit is {max}")]
    TooLarge { len: usize, max: usize },

    #[error("the token is malformed: {reason}")]
    Malformed { reason: String },

    #[error("the token's algorithm {alg} is not allowed (only RS256, ES256 and EdDSA are)")]
    AlgorithmNotAllowed { alg: String },

    #[error("the token says it is signed with {alg}, but key {kid} is a {key_alg} key; refused (algorithm confusion)")]
    AlgorithmMismatch {
        alg: String,
        key_alg: &'static str,
        kid: String,
    },

    #[error("the token names no key (`kid`), and the issuer publishes {keys} keys")]
    MissingKeyId { keys: usize },

    #[error("the issuer publishes no key {kid} (checked again with the issuer); is the token from another issuer, or was the key retired?")]
    UnknownKey { kid: String },

    #[error("the token's signature does not verify")]
    BadSignature,

    #[error("the token was issued by {found}, not by {expected}")]
    WrongIssuer { found: String, expected: String },

    #[error("the token is for audience {found}, not for {expected}")]
    WrongAudience { found: String, expected: String },

    #[error("the token expired at {expired_at} (now {now}, clock skew allowed {skew_secs} s); log in again")]
    Expired {
        expired_at: i64,
        now: i64,
        skew_secs: u64,
    },

    #[error("the token is not valid before {valid_from} ({claim}; now {now}, clock skew allowed {skew_secs} s); check the clocks")]
    NotYetValid {
        claim: &'static str,
        valid_from: i64,
        now: i64,
        skew_secs: u64,
    },

    #[error("the token has no {claim} claim")]
    MissingClaim { claim: String },

    #[error("the token's {claim} claim is not usable: {reason}")]
    BadClaim { claim: String, reason: String },

    #[error("the token's {claim} claim {value} is not a valid operator name: {reason}")]
    BadIdentity {
        claim: String,
        value: String,
        reason: String,
    },

    #[error("the issuer has not verified the token's email address (email_verified is false)")]
    EmailNotVerified,

    #[error("the issuer's keys (JWKS) from {source_name} are unavailable: {reason}")]
    JwksUnavailable { source_name: String, reason: String },

    #[error("OIDC settings: {reason}")]
    Settings { reason: String },

    #[error("development issuer key {path}: {reason}")]
    DevKey { path: PathBuf, reason: String },

    #[error("cannot issue a development token: {reason}")]
    DevIssue { reason: String },
}

impl AuthError {
    /// The refusal is on the server's side (keys unreadable, settings wrong), not
    /// the caller's: the token may be perfectly good.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::JwksUnavailable { .. }
                | AuthError::Settings { .. }
                | AuthError::DevKey { .. }
                | AuthError::DevIssue { .. }
        )
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        AuthError::Malformed {
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_claim(claim: &str, reason: impl Into<String>) -> Self {
        AuthError::BadClaim {
            claim: claim.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn settings(reason: impl Into<String>) -> Self {
        AuthError::Settings {
            reason: reason.into(),
        }
    }
}

/// A value taken from an untrusted token, fit for a message: at most 64 characters,
/// quoted and escaped.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 64;
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_values_are_escaped_and_bounded() {
        assert_eq!(shown("kid-1"), "\"kid-1\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = shown(&"x".repeat(1000));
        assert!(long.len() < 80, "{long}");
        assert!(long.ends_with('…'));
    }
}
