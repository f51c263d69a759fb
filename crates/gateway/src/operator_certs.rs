//! Operator certificates: an explicit choice, and only from the CAs named for them.
//!
//! The deployment's CA issues every component certificate; whoever holds its key could
//! mint an `operator` certificate for anyone on call and skip the identity provider.
//! So certificate authentication for operators is off unless `operator_certificates`
//! is set, and then a certificate counts only if it chains to a CA of the separate
//! `operator_ca` bundle (by default none). `palisade up` turns it on for its demo,
//! with its own CA.

use palisade_core::event::Authn;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Checks operator certificates against the `operator_ca` bundle.
pub struct OperatorCas {
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Why an operator certificate does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum OperatorCertError {
    #[error(
        "this gateway does not accept operator certificates (operator_certificates is off): \
         log in with your identity provider (palisade op login)"
    )]
    Disabled,
    #[error("no certificate was presented")]
    Missing,
    #[error(
        "the certificate was not issued by a CA this gateway accepts for operators \
         (operator_ca): {0}"
    )]
    NotFromOperatorCa(String),
}

/// The gateway's TLS server configuration: clients may present no certificate
/// (operators use tokens; tenants bearer tokens), or one that chains to the
/// deployment's CA `ca_cert` or, when operator certificates are on, to a CA of
/// `operator_ca`. What a certificate may do is decided per request: only an
/// `operator` certificate authenticates, and only through [`OperatorCas::check`].
pub fn server_tls(
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
    operator_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, String> {
    let provider = palisade_pki::crypto_provider();
    let mut roots = palisade_pki::load_roots(ca_cert).map_err(|e| e.to_string())?;
    if let Some(bundle) = operator_ca {
        for c in palisade_pki::load_certs(bundle, "operator CA certificate")
            .map_err(|e| e.to_string())?
        {
            roots.add(c).map_err(|e| {
                format!(
                    "operator_ca {}: not a usable CA certificate ({e})",
                    bundle.display()
                )
            })?;
        }
    }
    let presented =
        Arc::new(palisade_pki::ReloadingCert::for_server(cert, key).map_err(|e| e.to_string())?);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(presented))
}

impl OperatorCas {
    /// Loads the `operator_ca` bundle (PEM, one or more CA certificates).
    pub fn load(bundle: &Path) -> Result<Self, String> {
        let roots = palisade_pki::load_roots(bundle)
            .map_err(|e| format!("operator_ca {}: {e}", bundle.display()))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            palisade_pki::crypto_provider(),
        )
        .build()
        .map_err(|e| format!("operator_ca {}: {e}", bundle.display()))?;
        Ok(Self { verifier })
    }

    /// Checks that `chain` (the peer's certificate first) chains to an operator CA and
    /// is valid now; returns how the operator authenticated.
    pub fn check(&self, chain: &[CertificateDer<'static>]) -> Result<Authn, OperatorCertError> {
        let (leaf, intermediates) = chain.split_first().ok_or(OperatorCertError::Missing)?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| OperatorCertError::NotFromOperatorCa(e.to_string()))?;
        Ok(Authn::Certificate {
            sha256: hex::encode(Sha256::digest(leaf.as_ref())),
        })
    }
}
