//! Certificates renewed without a restart: [`ReloadingCert`] presents the certificate
//! and key at two paths, and reads them again when either file changes (checked at
//! most once a second, at a handshake). Every Palisade TLS server and client uses it,
//! so `palisade pki issue --force` (or any renewal that replaces the files) takes
//! effect at the next connection.
//!
//! A renewal caught half-written (a new certificate beside the old key) does not
//! match: the previous pair stays in use, with a warning, until both files agree.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use crate::error::Result;
use crate::role::Role;

/// How often the files are looked at (a stat of each).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A certificate and key read from files, read again when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    plays: fn(Role) -> bool,
    side: &'static str,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// What identifies a version of the two files.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(paths: [&Path; 2]) -> Stamp {
    paths.map(|p| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

impl ReloadingCert {
    /// Reads the pair now (failing if it does not load or match); `plays` is the
    /// role check of [`crate::tls`] for the `side` (server or client) it is used on.
    pub(crate) fn new(
        cert: &Path,
        key: &Path,
        plays: fn(Role) -> bool,
        side: &'static str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self> {
        let stamp = stamp([cert, key]);
        let current = load(cert, key, plays, side, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            plays,
            side,
            provider,
            state: Mutex::new(State {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// A server's certificate (its role must be one that serves).
    pub fn for_server(cert: &Path, key: &Path) -> Result<Self> {
        Self::new(
            cert,
            key,
            Role::serves,
            "server",
            crate::tls::crypto_provider(),
        )
    }

    /// The pair in use, read again first if the files changed.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().ok()?;
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamp([&self.cert, &self.key]);
            if now != state.stamp {
                match load(&self.cert, &self.key, self.plays, self.side, &self.provider) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate renewed: presenting the new one");
                        state.current = fresh;
                        state.stamp = now;
                    }
                    Err(e) => {
                        tracing::warn!(cert = %self.cert.display(), error = %e, "the renewed TLS certificate does not load (yet); keeping the one in use");
                    }
                }
            }
        }
        Some(state.current.clone())
    }
}

fn load(
    cert: &Path,
    key: &Path,
    plays: fn(Role) -> bool,
    side: &'static str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>> {
    let chain = crate::tls::load_own_cert(cert, plays, side)?;
    let der = crate::tls::load_private_key(key)?;
    let signing =
        provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| crate::error::Error::Pem {
                what: "private key",
                path: key.to_path_buf(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing);
    // A key that is not the certificate's (a renewal caught half-written).
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
