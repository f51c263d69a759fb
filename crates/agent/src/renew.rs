//! `certs.rotate`: renews one certificate of a supervised component from the CA
//! material on this instance, then restarts the component and waits for its health.
//!
//! The new certificate keeps the old one's subject, subject alternative names and
//! extended key usages; it gets a new P-256 key, a random serial and `renew_days` of
//! validity (never beyond the CA's). The old certificate must have been issued by the
//! configured CA. Both new files are written and synced beside the live ones, then
//! renamed in place back to back, the previous ones copied to `<file>.prev` (mode
//! 0600); if the component does not come back healthy on the new pair, the previous
//! pair is put back and the component restarted again; once it is healthy, the
//! `.prev` copies are deleted. One renewal runs at a time.
//! The output is names, dates and serials: never a key, a certificate or a path.

use crate::config::{CertKind, NamedCert};
use crate::supervisor::Supervisor;
use palisade_core::time::Timestamp;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use x509_parser::extensions::{GeneralName, ParsedExtension};

pub const ROTATE_SCHEMA: &str = "palisade.dev/output/certs-rotate/v1";

/// Output of `certs.rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateOutput {
    pub component: String,
    pub kind: CertKind,
    /// The configured name of the certificate (`[[cert]] name`).
    pub name: String,
    pub serial_before: String,
    pub serial_after: String,
    pub not_after_before: Timestamp,
    pub not_after_after: Timestamp,
    /// The component answered its health URL on the new certificate.
    pub healthy: bool,
}

/// What can go wrong; messages name files by their configured role, never content.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no [[cert]] of this agent renews {component}'s {kind} certificate")]
    NotConfigured { component: String, kind: CertKind },
    #[error("certificate {name}: {why}")]
    Material { name: String, why: String },
    #[error("{0}")]
    Component(String),
}

fn material(name: &str, why: impl std::fmt::Display) -> RotateError {
    RotateError::Material {
        name: name.to_string(),
        why: why.to_string(),
    }
}

/// Renews `component`'s `kind` certificate and restarts the component.
pub async fn rotate(
    certs: &[NamedCert],
    supervisor: &Supervisor,
    component: &str,
    kind: CertKind,
) -> Result<RotateOutput, RotateError> {
    let cert = certs
        .iter()
        .find(|c| c.component.as_deref() == Some(component) && c.kind == Some(kind))
        .ok_or_else(|| RotateError::NotConfigured {
            component: component.to_string(),
            kind,
        })?;
    // One renewal at a time on this agent: a second would overwrite the `.prev`
    // files the first may need to put back.
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE.lock().await;
    let renewed = {
        let cert = cert.clone();
        tokio::task::spawn_blocking(move || renew(&cert, Timestamp::now()))
            .await
            .map_err(|e| RotateError::Component(e.to_string()))??
    };
    match supervisor.restart(component, true).await {
        Ok(r) if r.healthy != Some(false) => {
            // The old key is no longer needed to go back: it does not stay on disk.
            renewed.forget();
            Ok(RotateOutput {
                component: component.to_string(),
                kind,
                name: cert.name.clone(),
                serial_before: renewed.serial_before,
                serial_after: renewed.serial_after,
                not_after_before: renewed.not_after_before,
                not_after_after: renewed.not_after_after,
                healthy: r.healthy.unwrap_or(true),
            })
        }
        outcome => {
            let why = match outcome {
                Ok(_) => "it did not report healthy".to_string(),
                Err(e) => e.to_string(),
            };
            let restored = renewed.put_back();
            let again = supervisor.restart(component, true).await;
            Err(RotateError::Component(format!(
                "{component} did not come back on the renewed certificate ({why}); {}",
                match (restored, again) {
                    (Ok(()), Ok(_)) => "the previous certificate and key are back and it was restarted on them".to_string(),
                    (Ok(()), Err(e)) => format!("the previous certificate and key are back, but restarting on them failed: {e}"),
                    (Err(e), _) => format!("putting the previous files back failed: {e}"),
                }
            )))
        }
    }
}

/// The files written and what they replaced.
struct Renewed {
    serial_before: String,
    serial_after: String,
    not_after_before: Timestamp,
    not_after_after: Timestamp,
    /// (live file, its previous content's copy)
    replaced: Vec<(PathBuf, PathBuf)>,
}

impl Renewed {
    fn put_back(&self) -> std::io::Result<()> {
        put_back(&self.replaced)
    }

    fn forget(&self) {
        for (_, prev) in &self.replaced {
            let _ = std::fs::remove_file(prev);
        }
    }
}

fn read_pem_der(path: &Path, name: &str, what: &str) -> Result<Vec<u8>, RotateError> {
    let bytes = std::fs::read(path)
        .map_err(|e| material(name, format!("cannot read its {what}: {}", e.kind())))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .map_err(|_| material(name, format!("its {what} is not PEM")))?;
    if pem.label != "CERTIFICATE" {
        return Err(material(name, format!("its {what} is not a CERTIFICATE")));
    }
    Ok(pem.contents)
}

fn renew(c: &NamedCert, now: Timestamp) -> Result<Renewed, RotateError> {
    let name = c.name.as_str();
    let (Some(key_path), Some(ca_cert), Some(ca_key)) = (&c.key, &c.ca_cert, &c.ca_key) else {
        return Err(material(
            name,
            "it has no key, ca_cert and ca_key to renew with",
        ));
    };
    let old_der = read_pem_der(&c.path, name, "certificate")?;
    let (_, old) = x509_parser::parse_x509_certificate(&old_der)
        .map_err(|_| material(name, "the certificate is not X.509"))?;
    let ca_der = read_pem_der(ca_cert, name, "CA certificate")?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|_| material(name, "the CA certificate is not X.509"))?;
    if old.issuer() != ca.subject() || old.verify_signature(Some(ca.public_key())).is_err() {
        return Err(material(
            name,
            "it was not issued by the configured CA: it is not renewed",
        ));
    }
    let ca_key_pem = std::fs::read_to_string(ca_key)
        .map_err(|e| material(name, format!("cannot read the CA key: {}", e.kind())))?;
    let ca_keypair =
        KeyPair::from_pem(&ca_key_pem).map_err(|_| material(name, "the CA key is unusable"))?;
    if ca_keypair.public_key_raw() != &*ca.public_key().subject_public_key.data {
        return Err(material(
            name,
            "the CA key does not match the CA certificate",
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), ca_keypair)
        .map_err(|_| material(name, "the CA certificate cannot sign"))?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for cn in old.subject().iter_common_name() {
        if let Ok(v) = cn.as_str() {
            dn.push(DnType::CommonName, v);
        }
    }
    for o in old.subject().iter_organization() {
        if let Ok(v) = o.as_str() {
            dn.push(DnType::OrganizationName, v);
        }
    }
    params.distinguished_name = dn;
    for ext in old.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for g in &san.general_names {
                    let entry = match g {
                        GeneralName::DNSName(d) => {
                            (*d).to_string().try_into().ok().map(SanType::DnsName)
                        }
                        GeneralName::URI(u) => (*u).to_string().try_into().ok().map(SanType::URI),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip)
                                .ok()
                                .map(|b| SanType::IpAddress(std::net::IpAddr::from(b))),
                            16 => <[u8; 16]>::try_from(*ip)
                                .ok()
                                .map(|b| SanType::IpAddress(std::net::IpAddr::from(b))),
                            _ => None,
                        },
                        _ => None,
                    };
                    params.subject_alt_names.extend(entry);
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                if eku.server_auth {
                    params
                        .extended_key_usages
                        .push(ExtendedKeyUsagePurpose::ServerAuth);
                }
                if eku.client_auth {
                    params
                        .extended_key_usages
                        .push(ExtendedKeyUsagePurpose::ClientAuth);
                }
            }
            _ => {}
        }
    }
    let days = i64::from(c.renew_days.unwrap_or(365));
    let start = now.unix_seconds() - 300;
    let ca_end = ca.validity().not_after.timestamp();
    let end = (now.unix_seconds() + days * 86_400).min(ca_end);
    if end <= now.unix_seconds() + 86_400 {
        return Err(material(
            name,
            "the CA expires within a day: renew the CA first",
        ));
    }
    let at = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s)
            .map_err(|_| material(name, "a validity date out of range"))
    };
    params.not_before = at(start)?;
    params.not_after = at(end)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    getrandom::getrandom(&mut serial).map_err(|e| material(name, format!("no randomness: {e}")))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|_| material(name, "cannot generate a key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|_| material(name, "cannot sign the renewed certificate"))?;

    if key_path == &c.path {
        return Err(material(name, "its key and certificate are the same file"));
    }
    // Everything is written and synced beside the live files first; then the two
    // renames, back to back. A failure before them changes nothing; between or
    // after them, the previous pair is put back.
    let files = [
        (key_path.as_path(), key.serialize_pem(), 0o600),
        (c.path.as_path(), cert.pem(), 0o644),
    ];
    let mut replaced = Vec::new();
    let mut staged = Vec::new();
    for (live, content, mode) in &files {
        let prev = PathBuf::from(format!("{}.prev", live.display()));
        copy_private(live, &prev)
            .map_err(|e| material(name, format!("cannot keep the previous file: {}", e.kind())))?;
        replaced.push((live.to_path_buf(), prev));
        let tmp = stage(live, content.as_bytes(), *mode)
            .map_err(|e| material(name, format!("cannot write the renewed file: {}", e.kind())))?;
        staged.push((tmp, live.to_path_buf()));
    }
    for (tmp, live) in &staged {
        if let Err(e) = std::fs::rename(tmp, live) {
            let _ = put_back(&replaced);
            for (t, _) in &staged {
                let _ = std::fs::remove_file(t);
            }
            return Err(material(
                name,
                format!("cannot put the renewed file in place: {}", e.kind()),
            ));
        }
    }
    Ok(Renewed {
        serial_before: hex::encode(old.raw_serial()),
        serial_after: hex::encode(serial),
        not_after_before: Timestamp::from_unix_seconds(old.validity().not_after.timestamp()),
        not_after_after: Timestamp::from_unix_seconds(end),
        replaced,
    })
}

/// Copies each previous file (`.prev`) back over its live one.
fn put_back(replaced: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    for (live, prev) in replaced {
        std::fs::copy(prev, live)?;
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` with `mode` and syncs it;
/// returns the temporary file.
fn stage(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.renewing", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Copies `from` to `to` readable by the owner only (a key's copy stays private).
fn copy_private(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    let tmp = stage(to, &bytes, 0o600)?;
    std::fs::rename(tmp, to)
}
