//! Mutual-TLS configurations for every Palisade server and client.
//!
//! Both sides use rustls with the *ring* provider, TLS 1.3 and 1.2, trust only the
//! Palisade CA, and check the peer's **role** inside the handshake: a certificate that
//! chains to the CA but carries the wrong role fails the handshake just like one from a
//! stranger. The wrappers below only add that check after rustls' own WebPKI verification
//! (chain, validity, EKU, and on the client side the host name) has passed.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::files;
use crate::peer::{check_role, peer_role};
use crate::role::Role;

/// Whether and whom a server asks for a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a CA-signed certificate with one of these roles;
    /// anyone else fails the handshake.
    Required(Vec<Role>),
    /// A client may present a CA-signed certificate (a wrong one still fails the
    /// handshake) or none, e.g. an operator authenticating with an OIDC token instead.
    /// The server must then call [`require_role`](crate::require_role) or authenticate
    /// the request another way.
    Optional,
}

/// The crypto provider of every Palisade TLS endpoint: ring, never aws-lc-rs.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes [`crypto_provider`] the process default, for clients built without an
/// explicit TLS configuration (object storage, cloud KMS). Idempotent.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        let _ = Arc::unwrap_or_clone(crypto_provider()).install_default();
    }
}

/// A TLS server configuration presenting `cert`/`key` (as written by
/// [`issue`](crate::issue) for a serving role) and checking clients against the CA
/// certificate `ca_cert` according to `client_auth`.
pub fn server_config(
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
    client_auth: ClientAuth,
) -> Result<ServerConfig> {
    let provider = crypto_provider();
    let roots = Arc::new(load_roots(ca_cert)?);
    let presented = Arc::new(crate::reload::ReloadingCert::new(
        cert,
        key,
        Role::serves,
        "server",
        provider.clone(),
    )?);

    let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
        ClientAuth::Required(allowed) => {
            if allowed.is_empty() {
                return Err(Error::NoRolesAllowed);
            }
            let inner =
                WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
            Arc::new(RoleCheckingClientVerifier { inner, allowed })
        }
        ClientAuth::Optional => {
            WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .allow_unauthenticated()
                .build()?
        }
    };

    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(presented))
}

/// A TLS client configuration presenting `cert`/`key` (as written by
/// [`issue`](crate::issue) for a calling role), trusting only the CA certificate
/// `ca_cert`, and accepting only servers whose certificate carries one of
/// `server_roles`.
///
/// The server role check matters because every serving certificate is valid for
/// `localhost`: without it, a gateway calling an agent on one machine would also accept
/// the log's or a witness's certificate.
pub fn client_config(
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
    server_roles: &[Role],
) -> Result<ClientConfig> {
    if server_roles.is_empty() {
        return Err(Error::NoRolesAllowed);
    }
    let provider = crypto_provider();
    let roots = Arc::new(load_roots(ca_cert)?);
    let presented = Arc::new(crate::reload::ReloadingCert::new(
        cert,
        key,
        Role::calls,
        "client",
        provider.clone(),
    )?);

    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let verifier = Arc::new(RoleCheckingServerVerifier {
        inner,
        allowed: server_roles.to_vec(),
    });

    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        // "dangerous" only because it is a custom verifier: it delegates every check to
        // rustls' WebPKI verifier and then adds the role check.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(presented))
}

/// The trust anchors: exactly the certificates in `path` (the Palisade CA).
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| Error::Pem {
            what: "CA certificate",
            path: path.to_path_buf(),
            reason: format!("it is not a usable trust anchor ({e})"),
        })?;
    }
    Ok(roots)
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = files::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what,
            path: path.to_path_buf(),
            reason: "it contains no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = files::read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| Error::Pem {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Our own certificate chain, refused early (with a clear message, instead of a
/// handshake failure at the peer) if its role cannot play `side`.
pub(crate) fn load_own_cert(
    path: &Path,
    plays: fn(Role) -> bool,
    side: &'static str,
) -> Result<Vec<CertificateDer<'static>>> {
    let chain = load_certs(path, "certificate")?;
    if let Some(end_entity) = chain.first() {
        let (role, _) = peer_role(end_entity)?;
        if !plays(role) {
            return Err(Error::WrongSide {
                path: path.to_path_buf(),
                role,
                side,
            });
        }
    }
    Ok(chain)
}

/// Turns a role refusal into the rustls error that aborts the handshake.
fn refuse(e: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// rustls' WebPKI client verifier, then the role check.
#[derive(Debug)]
struct RoleCheckingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<Role>,
}

impl ClientCertVerifier for RoleCheckingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_role(end_entity, &self.allowed).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// rustls' WebPKI server verifier (chain, validity, EKU, host name), then the role check.
#[derive(Debug)]
struct RoleCheckingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    allowed: Vec<Role>,
}

impl ServerCertVerifier for RoleCheckingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_role(end_entity, &self.allowed).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
