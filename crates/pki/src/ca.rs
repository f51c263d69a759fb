//! The certificate authority: creating it (`pki init`), loading it, and issuing role
//! certificates with it (`pki issue`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};
use crate::files::{self, CERT_MODE, KEY_MODE};
use crate::role::{CertName, Role, SubjectAltName};

/// How long a CA created by [`init_ca`] is valid: about ten years.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// The default validity of an issued certificate: one year.
pub const DEFAULT_LEAF_DAYS: u32 = 365;

/// How far `notBefore` is set in the past, so that a peer whose clock is slightly behind
/// still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::minutes(5);

/// The organization in every subject this crate writes.
const ORGANIZATION: &str = "Palisade";

/// Where a PKI directory keeps its CA: `D/ca.crt` and `D/ca.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// The CA certificate (PEM, mode 0644): give it to every Palisade process as trust anchor.
    pub cert: PathBuf,
    /// The CA private key (PKCS#8 PEM, mode 0600): only `pki issue` needs it.
    pub key: PathBuf,
}

impl CaPaths {
    /// The CA files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CaPaths {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        }
    }
}

/// Where a PKI directory keeps one issued certificate: `D/<role>-<name>.crt` and `.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedPaths {
    /// The certificate (PEM, mode 0644).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
}

impl IssuedPaths {
    /// The files of the certificate for `role` and `name` in `dir`.
    ///
    /// `CertName` cannot contain `/` or `.`, so these paths stay inside `dir`.
    pub fn in_dir(dir: &Path, role: Role, name: &CertName) -> Self {
        let stem = format!("{role}-{name}");
        IssuedPaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// A CA loaded from a PKI directory, ready to sign.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    paths: CaPaths,
}

impl std::fmt::Debug for CertificateAuthority {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert", &self.paths.cert)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Where the CA was loaded from.
    pub fn paths(&self) -> &CaPaths {
        &self.paths
    }
}

/// `palisade pki init`: creates a new CA in `dir` (created with mode 0700 if missing).
///
/// The CA is an ECDSA P-256 key with a self-signed certificate: basicConstraints
/// `CA:TRUE, pathlen:0` (it signs leaves only), keyUsage `keyCertSign, cRLSign`, valid
/// [`CA_VALIDITY_DAYS`]. Refuses, changing nothing, if `ca.crt` or `ca.key` exists
/// unless `force`; with `force` both are replaced, and every certificate issued by the
/// old CA stops being trusted by processes given the new `ca.crt`.
pub fn init_ca(dir: &Path, force: bool) -> Result<CaPaths> {
    let paths = CaPaths::in_dir(dir);
    files::refuse_existing(&[&paths.cert, &paths.key], force)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: "the CA key",
        source,
    })?;
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A random tag in the CN tells two Palisade CAs apart in `openssl x509 -text` and logs.
    dn.push(DnType::CommonName, format!("Palisade CA {}", &serial.1));
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.serial_number = Some(serial.0);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(CA_VALIDITY_DAYS)?;
    let cert = params.self_signed(&key).map_err(|source| Error::Generate {
        what: "the CA certificate",
        source,
    })?;

    files::ensure_dir(dir)?;
    let staged = vec![
        files::stage(&paths.key, key.serialize_pem().as_bytes(), KEY_MODE)?,
        files::stage(&paths.cert, cert.pem().as_bytes(), CERT_MODE)?,
    ];
    files::commit_all(staged, force)?;
    Ok(paths)
}

/// Loads the CA of `dir` for signing.
///
/// Refuses a CA key that group or others can read, a certificate that is not a CA, and
/// a key that does not belong to the certificate.
pub fn load_ca(dir: &Path) -> Result<CertificateAuthority> {
    let paths = CaPaths::in_dir(dir);
    for path in [&paths.cert, &paths.key] {
        if !files::exists(path)? {
            return Err(Error::CaMissing {
                dir: dir.to_path_buf(),
                path: path.clone(),
            });
        }
    }

    let mode = std::fs::metadata(&paths.key)
        .map_err(|e| Error::io("inspect", &paths.key, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::CaKeyTooOpen {
            path: paths.key.clone(),
            mode: mode & 0o7777,
        });
    }

    let cert_der =
        CertificateDer::from_pem_slice(&files::read(&paths.cert)?).map_err(|e| Error::Pem {
            what: "the CA certificate",
            path: paths.cert.clone(),
            reason: e.to_string(),
        })?;
    let key_pem = String::from_utf8(files::read(&paths.key)?).map_err(|_| Error::Pem {
        what: "the CA private key",
        path: paths.key.clone(),
        reason: "it is not text".into(),
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
        what: "the CA private key",
        path: paths.key.clone(),
        reason: e.to_string(),
    })?;

    let bad_ca = |reason: String| Error::BadCa {
        path: paths.cert.clone(),
        reason,
    };
    let (rest, x509) = X509Certificate::from_der(&cert_der)
        .map_err(|e| bad_ca(format!("it is not an X.509 certificate ({e})")))?;
    if !rest.is_empty() {
        return Err(bad_ca("it has trailing bytes after the certificate".into()));
    }
    if !x509.is_ca() {
        return Err(bad_ca(
            "it is not a CA certificate (basicConstraints CA:FALSE)".into(),
        ));
    }
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(Error::BadCa {
            path: paths.key.clone(),
            reason: format!("this key does not belong to {}", paths.cert.display()),
        });
    }
    let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
        .map_err(|_| bad_ca("its notAfter is out of range".into()))?;
    drop(x509);

    let issuer = Issuer::from_ca_cert_der(&cert_der, key)
        .map_err(|e| bad_ca(format!("rcgen cannot sign with it ({e})")))?;
    Ok(CertificateAuthority {
        issuer,
        cert_der,
        not_after,
        paths,
    })
}

/// `palisade pki issue`: issues a certificate for `role` named `name`, signed by the CA in
/// `dir`, valid `days` days.
///
/// The certificate carries:
/// - subject `CN=<name>, O=Palisade`;
/// - the URI SAN `urn:palisade:role:<role>` (see [`ROLE_URI_PREFIX`](crate::ROLE_URI_PREFIX));
/// - for a serving role, DNS SANs `<name>` and `localhost`, IP SANs `127.0.0.1` and `::1`,
///   and `extra_sans` (refused for a client-only role);
/// - keyUsage `digitalSignature`, the extended key usages of [`Role::serves`] / [`Role::calls`],
///   basicConstraints `CA:FALSE`, subject and authority key identifiers, a random serial.
///
/// Refuses, changing nothing, if the certificate or key file exists unless `force`, or if
/// the certificate would outlive the CA.
pub fn issue(
    dir: &Path,
    role: Role,
    name: &CertName,
    extra_sans: &[SubjectAltName],
    days: u32,
    force: bool,
) -> Result<IssuedPaths> {
    if !role.serves() && !extra_sans.is_empty() {
        return Err(Error::SansOnClientOnlyRole { role });
    }
    let (not_before, not_after) = validity(days)?;
    let paths = IssuedPaths::in_dir(dir, role, name);
    files::refuse_existing(&[&paths.cert, &paths.key], force)?;

    let ca = load_ca(dir)?;
    if not_after > ca.not_after {
        return Err(Error::OutlivesCa {
            days,
            ca_cert: ca.paths.cert.clone(),
            ca_not_after: ca.not_after.unix_timestamp(),
        });
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: "the certificate key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name.as_str());
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?.0);
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = role.extended_key_usages();
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = subject_alt_names(role, name, extra_sans)?;

    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| Error::Generate {
            what: "the certificate",
            source,
        })?;

    let staged = vec![
        files::stage(&paths.key, key.serialize_pem().as_bytes(), KEY_MODE)?,
        files::stage(&paths.cert, cert.pem().as_bytes(), CERT_MODE)?,
    ];
    files::commit_all(staged, force)?;
    Ok(paths)
}

/// The SANs of a leaf: the role URI first, then (serving roles only) host names.
fn subject_alt_names(
    role: Role,
    name: &CertName,
    extra: &[SubjectAltName],
) -> Result<Vec<SanType>> {
    let generate = |source| Error::Generate {
        what: "the subject alternative names",
        source,
    };
    let ia5 = |s: String| s.try_into().map_err(generate);

    let mut sans = vec![SanType::URI(ia5(role.uri())?)];
    if role.serves() {
        // BTreeSet: each name once, in a stable order.
        let mut dns: BTreeSet<String> = BTreeSet::new();
        let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
        dns.insert(name.as_str().to_owned());
        dns.insert("localhost".to_owned());
        ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        for san in extra {
            match san {
                SubjectAltName::Dns(d) => {
                    dns.insert(d.clone());
                }
                SubjectAltName::Ip(ip) => {
                    ips.insert(*ip);
                }
            }
        }
        for d in dns {
            sans.push(SanType::DnsName(ia5(d)?));
        }
        sans.extend(ips.into_iter().map(SanType::IpAddress));
    }
    Ok(sans)
}

/// `(notBefore, notAfter)` for a certificate valid `days` days from now.
fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if days == 0 {
        return Err(Error::InvalidDays { days });
    }
    let now = OffsetDateTime::now_utc();
    let not_after = now
        .checked_add(Duration::days(i64::from(days)))
        .ok_or(Error::InvalidDays { days })?;
    Ok((now - BACKDATE, not_after))
}

/// A random positive 128-bit serial (RFC 5280 §4.1.2.2 allows up to 20 octets), and its
/// first four bytes in hex for display.
fn random_serial() -> Result<(SerialNumber, String)> {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes)?;
    // Positive (top bit clear) and with a non-zero first octet, so the DER INTEGER is
    // always exactly 16 octets with no padding.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    let tag = files::hex(&bytes[..4]);
    Ok((SerialNumber::from_slice(&bytes), tag))
}
