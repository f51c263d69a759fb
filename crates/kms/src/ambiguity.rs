//! Telling a bad ciphertext from a broken backend.
//!
//! kube-apiserver and monitoring read `UNAVAILABLE` as "the plugin is down" and
//! `INVALID_ARGUMENT` as "this request's data is wrong". A backend cannot always say
//! which one a failed Decrypt is: an HSM may report a GCM tag that does not verify
//! with the same code as a token that stopped working, and a cloud KMS may answer a
//! malformed blob with a generic error. So when a backend reports a Decrypt failure
//! as [`KekError::Unavailable`], the same key runs a known-answer probe
//! ([`Kek::health`]: encrypt a fresh random value and decrypt it again). If the probe
//! round-trips (within [`PROBE_TIMEOUT`]), the backend works and the ciphertext is what failed
//! ([`KekError::Undecryptable`], answered `INVALID_ARGUMENT`); otherwise the backend
//! really is unavailable. A failure that took [`SLOW_FAILURE`] or longer is a timeout
//! and is not probed. Backends that can tell the two apart themselves (the
//! PKCS#11 backend probes on the same session; AWS names `InvalidCiphertextException`;
//! the file key verifies the tag locally) never reach the probe for bad data.

use crate::kek::{Kek, KekError, KeyId};
use std::time::{Duration, Instant};

/// A Decrypt that took this long to fail timed out on the backend: it is down, and a
/// probe would only push the answer past the caller's deadline (3 s).
pub const SLOW_FAILURE: Duration = Duration::from_secs(1);
/// The probe's own bound; a probe that takes longer counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// `kek.decrypt`, with an ambiguous `Unavailable` resolved by a known-answer probe.
pub async fn decrypt(
    kek: &dyn Kek,
    key_id: &KeyId,
    ciphertext: &[u8],
) -> Result<Vec<u8>, KekError> {
    let started = Instant::now();
    match kek.decrypt(key_id, ciphertext).await {
        Err(KekError::Unavailable(reason)) if started.elapsed() < SLOW_FAILURE => {
            match tokio::time::timeout(PROBE_TIMEOUT, kek.health()).await {
                Ok(Ok(())) => {
                    tracing::debug!(key_id = %key_id, %reason, "decrypt failed but the key answers a known-answer probe: the ciphertext is bad");
                    Err(KekError::Undecryptable)
                }
                Ok(Err(_)) | Err(_) => Err(KekError::Unavailable(reason)),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::Backend;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A backend whose Decrypt fails as "unavailable" for anything it did not produce,
    /// and which can be switched off.
    struct Ambiguous {
        id: KeyId,
        up: AtomicBool,
    }

    #[async_trait::async_trait]
    impl Kek for Ambiguous {
        fn key_id(&self) -> &KeyId {
            &self.id
        }
        fn backend(&self) -> Backend {
            Backend::File
        }
        async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
            if !self.up.load(Ordering::SeqCst) {
                return Err(KekError::Unavailable("down".into()));
            }
            Ok(plaintext.iter().rev().copied().chain([0xAA]).collect())
        }
        async fn decrypt(&self, _: &KeyId, ciphertext: &[u8]) -> Result<Vec<u8>, KekError> {
            match ciphertext.split_last() {
                Some((0xAA, body)) if self.up.load(Ordering::SeqCst) => {
                    Ok(body.iter().rev().copied().collect())
                }
                _ => Err(KekError::Unavailable("general error".into())),
            }
        }
    }

    #[tokio::test]
    async fn bad_data_is_undecryptable_only_while_the_backend_works() {
        let k = Ambiguous {
            id: KeyId::new("k1").unwrap(),
            up: AtomicBool::new(true),
        };
        let good = k.encrypt(b"seed").await.unwrap();
        assert_eq!(decrypt(&k, &k.id, &good).await.unwrap(), b"seed");
        assert_eq!(
            decrypt(&k, &k.id, b"tampered").await,
            Err(KekError::Undecryptable)
        );
        k.up.store(false, Ordering::SeqCst);
        assert_eq!(
            decrypt(&k, &k.id, b"tampered").await,
            Err(KekError::Unavailable("general error".into()))
        );
        assert!(matches!(
            decrypt(&k, &k.id, &good).await,
            Err(KekError::Unavailable(_))
        ));
    }
}
