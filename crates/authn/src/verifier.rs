//! Step 1 of the gateway's pipeline (docs/architecture.md, "Authenticate"): an OIDC
//! token in, an [`Identity`] out, or a refusal.

use std::sync::{Arc, OnceLock, Weak};

use crate::claims;
use crate::error::{shown, AuthError};
use crate::identity::Identity;
use crate::jwks::{KeyStore, Lookup, RefreshPolicy};
use crate::settings::OidcSettings;
use crate::token::UnverifiedToken;

/// Verifies the tokens of one OIDC issuer. Cheap to clone; clones share the key set.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OidcSettings,
    keys: KeyStore,
    /// The periodic refresh; stopped when the last clone of the verifier goes.
    refresher: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.get() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .field("keys", &self.inner.keys.current().len())
            .finish()
    }
}

impl Verifier {
    /// Loads the issuer's key set once, with the default refresh policy (every 10
    /// minutes; an unknown key id re-reads at most every 30 s). Fails closed: no
    /// verifier without at least one usable key.
    pub async fn new(settings: OidcSettings) -> Result<Self, AuthError> {
        Self::with_refresh_policy(settings, RefreshPolicy::default()).await
    }

    pub async fn with_refresh_policy(
        settings: OidcSettings,
        policy: RefreshPolicy,
    ) -> Result<Self, AuthError> {
        settings.validate()?;
        let keys = KeyStore::load(&settings.jwks, policy).await?;
        let inner = Arc::new(Inner {
            settings,
            keys,
            refresher: OnceLock::new(),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn(refresh_loop(Arc::downgrade(&inner), policy));
                let _ = inner.refresher.set(task.abort_handle());
            }
            Err(_) => tracing::warn!(
                "no tokio runtime: the issuer's keys will only be re-read for unknown key ids"
            ),
        }
        Ok(Verifier { inner })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.inner.settings
    }

    /// Authenticates `token` at time `now_unix` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<Identity, AuthError> {
        // 1. Shape: at most 16 KiB, three base64url parts, a header naming RS256,
        //    ES256 or EdDSA (never `none`, never HMAC).
        let token = UnverifiedToken::parse(token)?;
        // 2. Key: by `kid` from the issuer's set; the key's type must be the
        //    header's algorithm.
        let key = {
            let set = self.inner.keys.current();
            let set = match (
                token.kid.as_deref(),
                set.lookup(token.kid.as_deref(), token.alg),
            ) {
                (Some(kid), Lookup::NotFound) => self.inner.keys.refetch_for(kid).await,
                _ => set,
            };
            match set.lookup(token.kid.as_deref(), token.alg) {
                Lookup::Found(key) => key.clone(),
                Lookup::WrongAlg(key) => {
                    return Err(AuthError::AlgorithmMismatch {
                        alg: token.alg.name().to_owned(),
                        key_alg: key.alg.name(),
                        kid: key.kid_shown(),
                    })
                }
                Lookup::NotFound => {
                    return Err(AuthError::UnknownKey {
                        kid: shown(token.kid.as_deref().unwrap_or_default()),
                    })
                }
                Lookup::Ambiguous(keys) => return Err(AuthError::MissingKeyId { keys }),
            }
        };
        // 3. Signature.
        let signed = token.verify(&key)?;
        // 4. Claims (iss, aud, exp, nbf, iat, sub) and 5. identity and groups.
        claims::check(signed, &self.inner.settings, now_unix)
    }
}

async fn refresh_loop(inner: Weak<Inner>, policy: RefreshPolicy) {
    let mut every = tokio::time::interval(policy.refresh_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate; the set was just loaded
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.keys.refresh().await;
    }
}
