//! Reading *what* a peer is from its certificate, after TLS has established *that* the
//! Palisade CA signed it.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};
use crate::role::{CertName, Role, ROLE_URI_PREFIX};

/// The role and name a certificate carries.
///
/// Exactly one `urn:palisade:role:<role>` URI SAN with a known role and exactly one
/// common name that is a valid [`CertName`] are required; anything else is an error, so
/// a certificate from another issuer or an older/newer scheme is refused, never guessed.
///
/// This does **not** verify the certificate: call it only on a certificate that a TLS
/// handshake configured by this crate (or another chain check against the Palisade CA)
/// has already accepted.
pub fn peer_role(cert_der: &[u8]) -> Result<(Role, CertName)> {
    let (rest, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| Error::MalformedCertificate {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(Error::MalformedCertificate {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let subject = cert.subject().to_string();

    let common_names = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::MalformedCertificate {
            reason: format!("the common name of `{subject}` is not a string ({e})"),
        })?;
    let name = match common_names.as_slice() {
        [cn] => CertName::new(cn)?,
        _ => {
            return Err(Error::MalformedCertificate {
                reason: format!(
                    "`{subject}` has {} common names; a Palisade certificate has exactly one",
                    common_names.len()
                ),
            })
        }
    };

    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::MalformedCertificate {
            reason: format!("the subject alternative names of `{subject}` are invalid ({e})"),
        })?;
    // Any URI that looks like a role claim counts, whatever its case, so that a second,
    // differently spelled claim makes the certificate ambiguous instead of being ignored.
    let role_uris: Vec<&str> = san
        .map(|ext| ext.value.general_names.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|gn| match gn {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .filter(|uri| {
            uri.get(..ROLE_URI_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ROLE_URI_PREFIX))
        })
        .collect();

    match role_uris.as_slice() {
        [] => Err(Error::NoRole { subject }),
        [uri] => uri
            .strip_prefix(ROLE_URI_PREFIX)
            .and_then(|role| role.parse::<Role>().ok())
            .map(|role| (role, name))
            .ok_or_else(|| Error::AmbiguousRole {
                subject,
                uris: (*uri).to_owned(),
            }),
        uris => Err(Error::AmbiguousRole {
            subject,
            uris: uris.join(", "),
        }),
    }
}

/// The role of a connected peer, if it is one of `allowed`.
///
/// `peer_certs` is what `rustls::ServerConnection::peer_certificates()` (or the client
/// side's) returns once the handshake is complete; its first certificate is the peer's
/// own. Every Palisade server calls this on each accepted connection, even when its
/// [`ClientAuth::Required`](crate::ClientAuth::Required) verifier has already checked the
/// role during the handshake: the check stays visible where the request is handled.
pub fn require_role(peer_certs: Option<&[CertificateDer<'_>]>, allowed: &[Role]) -> Result<Role> {
    let end_entity = peer_certs
        .and_then(|certs| certs.first())
        .ok_or(Error::NoPeerCertificate)?;
    check_role(end_entity, allowed)
}

/// The role of `end_entity` if it is one of `allowed`.
pub(crate) fn check_role(end_entity: &CertificateDer<'_>, allowed: &[Role]) -> Result<Role> {
    let (role, name) = peer_role(end_entity)?;
    if allowed.contains(&role) {
        Ok(role)
    } else {
        Err(Error::RoleNotAllowed {
            role,
            name: name.to_string(),
            allowed: if allowed.is_empty() {
                "no roles".into()
            } else {
                allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }
}
