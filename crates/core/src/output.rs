//! A result's output as the customer reads it in the log, checked against the digest
//! the agent signed (docs/formats.md, "Result"). The output carries no customer
//! content by design: the agent reduced it to the action's output schema.

use crate::canonical::value_to_canonical_vec;
use crate::digest::Sha256Digest;
use crate::event::{ResultEvent, MAX_LOGGED_OUTPUT_BYTES};

/// Why a result's logged output cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("the result carries an output but no output digest")]
    NoDigest,
    #[error("the output is not canonical JSON: {0}")]
    NotCanonical(String),
    #[error("the logged output hashes to {computed}, but the result's output digest is {logged}: the output was altered")]
    Mismatch {
        logged: Sha256Digest,
        computed: Sha256Digest,
    },
}

/// The output to log for `value`: itself when small enough, else nothing (the
/// digest alone is logged).
pub fn loggable(value: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    let v = value?;
    let bytes = value_to_canonical_vec(v).ok()?;
    (bytes.len() <= MAX_LOGGED_OUTPUT_BYTES).then(|| v.clone())
}

impl ResultEvent {
    /// Checks that the logged output, if any, is the one whose digest is logged.
    pub fn check_output(&self) -> Result<(), OutputError> {
        let Some(output) = &self.output else {
            return Ok(());
        };
        let logged = self.output_digest.ok_or(OutputError::NoDigest)?;
        let bytes =
            value_to_canonical_vec(output).map_err(|e| OutputError::NotCanonical(e.to_string()))?;
        let computed = Sha256Digest::of(&bytes);
        if computed != logged {
            return Err(OutputError::Mismatch { logged, computed });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use crate::id::{ClusterId, EventId};
    use crate::time::Timestamp;

    fn result(output: serde_json::Value) -> ResultEvent {
        let bytes = value_to_canonical_vec(&output).expect("canonical");
        ResultEvent {
            event_id: EventId::parse("0123456789abcdef0123456789abcdef").expect("id"),
            time: Timestamp::from_unix_seconds(1_764_000_000),
            cluster: ClusterId::parse("demo").expect("cluster"),
            intent: EventId::parse("fedcba9876543210fedcba9876543210").expect("id"),
            outcome: Outcome::Succeeded,
            output_digest: Some(Sha256Digest::of(&bytes)),
            output: Some(output),
            detail: None,
            reconciled: false,
            agent: None,
            agent_refusal: None,
        }
    }

    #[test]
    fn an_altered_output_does_not_match_its_digest() {
        let r = result(serde_json::json!({"db_size": 4096, "leader": true}));
        assert_eq!(r.check_output(), Ok(()));
        let mut altered = r.clone();
        altered.output = Some(serde_json::json!({"db_size": 1, "leader": true}));
        assert!(matches!(
            altered.check_output(),
            Err(OutputError::Mismatch { .. })
        ));
        let mut undigested = r;
        undigested.output_digest = None;
        assert_eq!(undigested.check_output(), Err(OutputError::NoDigest));
        let big = serde_json::Value::String("x".repeat(MAX_LOGGED_OUTPUT_BYTES));
        assert_eq!(loggable(Some(&big)), None, "too large to log itself");
    }
}
