//! `palisade pki init` / `pki issue` against a real directory, checked with OpenSSL.

use std::error::Error as StdError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use palisade_pki::{
    init_ca, issue, load_ca, peer_role, CaPaths, CertName, Error, IssuedPaths, Role,
    SubjectAltName, DEFAULT_LEAF_DAYS,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

type TestResult = Result<(), Box<dyn StdError>>;

fn name(s: &str) -> Result<CertName, Error> {
    s.parse()
}

fn mode(path: &Path) -> Result<u32, std::io::Error> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Runs `openssl verify` and says whether it accepted the certificate. A missing openssl
/// is a test failure, never a skip: the claim is that OpenSSL accepts our certificates.
fn openssl_verify(
    ca: &Path,
    cert: &Path,
    purpose: Option<&str>,
) -> Result<bool, Box<dyn StdError>> {
    let mut cmd = Command::new("openssl");
    cmd.arg("verify");
    if let Some(purpose) = purpose {
        cmd.args(["-purpose", purpose]);
    }
    cmd.arg("-CAfile").arg(ca).arg(cert);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("openssl is not on PATH: install openssl (apt-get install openssl) to run this test")
        }
        Err(e) => return Err(e.into()),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success() && stdout.contains(": OK"))
}

fn cert_der(path: &Path) -> Result<CertificateDer<'static>, Box<dyn StdError>> {
    Ok(CertificateDer::from_pem_file(path)?)
}

#[test]
fn init_and_issue_produce_certificates_openssl_verifies_with_private_keys_0600() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("pki");
    let ca = init_ca(&dir, false)?;
    assert_eq!(ca, CaPaths::in_dir(&dir));
    assert_eq!(mode(&ca.key)?, 0o600, "CA key must be 0600");
    assert_eq!(mode(&ca.cert)?, 0o644);
    assert_eq!(mode(&dir)?, 0o700, "a new PKI directory holds keys: 0700");

    for role in Role::ALL {
        let n = name(&format!("{role}-1"))?;
        let issued = issue(&dir, role, &n, &[], DEFAULT_LEAF_DAYS, false)?;
        assert_eq!(issued, IssuedPaths::in_dir(&dir, role, &n));
        assert_eq!(
            issued.cert.file_name().and_then(|f| f.to_str()),
            Some(format!("{role}-{role}-1.crt").as_str())
        );
        assert_eq!(mode(&issued.key)?, 0o600, "{role} key must be 0600");
        assert_eq!(mode(&issued.cert)?, 0o644);

        assert!(
            openssl_verify(&ca.cert, &issued.cert, None)?,
            "openssl verify -CAfile must accept the {role} certificate"
        );
        // The EKUs match what the role does, as OpenSSL reads them.
        assert_eq!(
            openssl_verify(&ca.cert, &issued.cert, Some("sslserver"))?,
            role.serves(),
            "{role}: serverAuth"
        );
        assert_eq!(
            openssl_verify(&ca.cert, &issued.cert, Some("sslclient"))?,
            role.calls(),
            "{role}: clientAuth"
        );
        // The key on disk is the certificate's key, as OpenSSL sees it.
        let pubkey_of = |args: &[&str]| -> Result<Vec<u8>, Box<dyn StdError>> {
            Ok(Command::new("openssl").args(args).output()?.stdout)
        };
        let from_cert = pubkey_of(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            &issued.cert.to_string_lossy(),
        ])?;
        let from_key = pubkey_of(&["pkey", "-pubout", "-in", &issued.key.to_string_lossy()])?;
        assert!(!from_cert.is_empty());
        assert_eq!(
            from_cert, from_key,
            "{role}: key and certificate must match"
        );
    }
    Ok(())
}

#[test]
fn peer_role_reads_the_role_of_every_kind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    init_ca(tmp.path(), false)?;
    for role in Role::ALL {
        let n = name("node-7")?;
        let issued = issue(tmp.path(), role, &n, &[], 30, false)?;
        let (got_role, got_name) = peer_role(&cert_der(&issued.cert)?)?;
        assert_eq!(got_role, role);
        assert_eq!(got_name, n);
    }
    Ok(())
}

#[test]
fn serving_certificates_name_loopback_and_the_given_names_client_only_ones_none() -> TestResult {
    let tmp = tempfile::tempdir()?;
    init_ca(tmp.path(), false)?;
    let extra: Vec<SubjectAltName> = vec!["gw.example.internal".parse()?, "10.1.2.3".parse()?];
    let gw = issue(tmp.path(), Role::Gateway, &name("gw-1")?, &extra, 30, false)?;
    let der = cert_der(&gw.cert)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let sans = cert
        .subject_alternative_name()?
        .ok_or("no SAN extension")?
        .value
        .general_names
        .clone();
    let has = |want: &GeneralName| sans.iter().any(|g| g == want);
    assert!(has(&GeneralName::URI("urn:palisade:role:gateway")));
    assert!(has(&GeneralName::DNSName("gw-1")));
    assert!(has(&GeneralName::DNSName("localhost")));
    assert!(has(&GeneralName::DNSName("gw.example.internal")));
    assert!(has(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    assert!(has(&GeneralName::IPAddress(&[10, 1, 2, 3])));
    let v6_loopback = std::net::Ipv6Addr::LOCALHOST.octets();
    assert!(has(&GeneralName::IPAddress(&v6_loopback)));
    assert!(!cert.is_ca());
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().ok())
        .collect();
    assert_eq!(cn, [Some("gw-1")]);

    let op = issue(tmp.path(), Role::Operator, &name("alice")?, &[], 30, false)?;
    let der = cert_der(&op.cert)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    let sans = &cert
        .subject_alternative_name()?
        .ok_or("no SAN extension")?
        .value
        .general_names;
    assert_eq!(sans, &[GeneralName::URI("urn:palisade:role:operator")]);

    let err = issue(tmp.path(), Role::Operator, &name("bob")?, &extra, 30, false).err();
    assert!(matches!(
        err,
        Some(Error::SansOnClientOnlyRole {
            role: Role::Operator
        })
    ));
    Ok(())
}

#[test]
fn second_init_without_force_refuses_and_changes_nothing() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = init_ca(tmp.path(), false)?;
    let cert_before = fs::read(&ca.cert)?;
    let key_before = fs::read(&ca.key)?;

    let err = init_ca(tmp.path(), false).err();
    assert!(
        matches!(&err, Some(Error::AlreadyExists { .. })),
        "got {err:?}"
    );
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("--force") && msg.contains("ca."),
        "message: {msg}"
    );
    assert_eq!(fs::read(&ca.cert)?, cert_before);
    assert_eq!(fs::read(&ca.key)?, key_before);
    assert_eq!(fs::read_dir(tmp.path())?.count(), 2, "no stray files");

    // Either file alone is enough to refuse, and the other is not created.
    fs::remove_file(&ca.cert)?;
    assert!(matches!(
        init_ca(tmp.path(), false),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(!ca.cert.exists());
    assert_eq!(fs::read(&ca.key)?, key_before);
    Ok(())
}

#[test]
fn init_with_force_replaces_the_ca() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = init_ca(tmp.path(), false)?;
    let old_cert = fs::read(&ca.cert)?;
    let old_key = fs::read(&ca.key)?;
    let old_leaf = issue(tmp.path(), Role::Agent, &name("a1")?, &[], 30, false)?;

    init_ca(tmp.path(), true)?;
    assert_ne!(fs::read(&ca.cert)?, old_cert);
    assert_ne!(fs::read(&ca.key)?, old_key);
    assert_eq!(mode(&ca.key)?, 0o600);
    // Certificates of the old CA are no longer trusted.
    assert!(!openssl_verify(&ca.cert, &old_leaf.cert, None)?);
    Ok(())
}

#[test]
fn issue_without_force_refuses_existing_files_and_force_replaces_them() -> TestResult {
    let tmp = tempfile::tempdir()?;
    init_ca(tmp.path(), false)?;
    let n = name("w1")?;
    let issued = issue(tmp.path(), Role::Witness, &n, &[], 30, false)?;
    let cert_before = fs::read(&issued.cert)?;
    let key_before = fs::read(&issued.key)?;

    let err = issue(tmp.path(), Role::Witness, &n, &[], 30, false).err();
    assert!(matches!(err, Some(Error::AlreadyExists { .. })));
    assert_eq!(fs::read(&issued.cert)?, cert_before);
    assert_eq!(fs::read(&issued.key)?, key_before);

    // Only the key left: still refused, and no certificate appears.
    fs::remove_file(&issued.cert)?;
    assert!(matches!(
        issue(tmp.path(), Role::Witness, &n, &[], 30, false),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(!issued.cert.exists());

    let again = issue(tmp.path(), Role::Witness, &n, &[], 30, true)?;
    assert_ne!(fs::read(&again.key)?, key_before);
    assert_eq!(mode(&again.key)?, 0o600);
    assert!(openssl_verify(
        &CaPaths::in_dir(tmp.path()).cert,
        &again.cert,
        None
    )?);
    Ok(())
}

#[test]
fn bad_names_are_refused_naming_the_value() {
    for bad in [
        "",
        "Gateway",
        "-x",
        "x-",
        "a.b",
        "../../etc/passwd",
        "a_b",
        &"x".repeat(64),
    ] {
        match name(bad) {
            Err(e @ Error::InvalidName { .. }) => {
                assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
            }
            other => panic!("{bad:?} must be refused, got {other:?}"),
        }
    }
    assert!(matches!(
        "root".parse::<Role>(),
        Err(Error::InvalidRole { .. })
    ));
}

#[test]
fn issue_without_a_ca_says_to_run_init_first() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let err = issue(tmp.path(), Role::Gateway, &name("gw")?, &[], 30, false).err();
    let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(err, Some(Error::CaMissing { .. })), "{msg}");
    assert!(msg.contains("run `palisade pki init --dir"), "{msg}");
    assert_eq!(fs::read_dir(tmp.path())?.count(), 0, "nothing written");
    Ok(())
}

#[test]
fn issue_refuses_a_ca_key_others_can_read() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let ca = init_ca(tmp.path(), false)?;
    fs::set_permissions(&ca.key, fs::Permissions::from_mode(0o644))?;
    let err = issue(tmp.path(), Role::Gateway, &name("gw")?, &[], 30, false).err();
    assert!(
        matches!(err, Some(Error::CaKeyTooOpen { mode: 0o644, .. })),
        "{err:?}"
    );
    assert!(matches!(
        load_ca(tmp.path()),
        Err(Error::CaKeyTooOpen { .. })
    ));
    Ok(())
}

#[test]
fn issue_refuses_zero_days_and_certificates_outliving_the_ca() -> TestResult {
    let tmp = tempfile::tempdir()?;
    init_ca(tmp.path(), false)?;
    let n = name("gw")?;
    assert!(matches!(
        issue(tmp.path(), Role::Gateway, &n, &[], 0, false),
        Err(Error::InvalidDays { days: 0 })
    ));
    assert!(matches!(
        issue(tmp.path(), Role::Gateway, &n, &[], 20 * 365, false),
        Err(Error::OutlivesCa { .. })
    ));
    assert_eq!(fs::read_dir(tmp.path())?.count(), 2, "only the CA files");
    Ok(())
}

#[test]
fn load_ca_refuses_a_key_that_is_not_the_cas() -> TestResult {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    let ca_a = init_ca(a.path(), false)?;
    let ca_b = init_ca(b.path(), false)?;
    fs::copy(&ca_b.key, &ca_a.key)?;
    assert!(matches!(load_ca(a.path()), Err(Error::BadCa { .. })));
    let loaded = load_ca(b.path())?;
    assert_eq!(loaded.paths(), &ca_b);
    Ok(())
}

#[test]
fn peer_role_refuses_certificates_without_exactly_one_known_role() -> TestResult {
    let key = rcgen::KeyPair::generate()?;
    let self_signed = |uris: &[&str]| -> Result<Vec<u8>, Box<dyn StdError>> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gw-1");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into()?));
        }
        Ok(params.self_signed(&key)?.der().to_vec())
    };

    assert!(matches!(
        peer_role(&self_signed(&[])?),
        Err(Error::NoRole { .. })
    ));
    assert!(matches!(
        peer_role(&self_signed(&[
            "urn:palisade:role:gateway",
            "urn:palisade:role:operator"
        ])?),
        Err(Error::AmbiguousRole { .. })
    ));
    assert!(matches!(
        peer_role(&self_signed(&[
            "urn:palisade:role:gateway",
            "URN:PALISADE:ROLE:operator"
        ])?),
        Err(Error::AmbiguousRole { .. })
    ));
    assert!(matches!(
        peer_role(&self_signed(&["urn:palisade:role:root"])?),
        Err(Error::AmbiguousRole { .. })
    ));
    assert!(matches!(
        peer_role(&self_signed(&[
            "spiffe://x/gateway",
            "urn:palisade:role:log"
        ])?),
        Ok((Role::Log, _))
    ));
    assert!(matches!(
        peer_role(b"not a certificate"),
        Err(Error::MalformedCertificate { .. })
    ));
    assert!(matches!(
        peer_role(&[]),
        Err(Error::MalformedCertificate { .. })
    ));
    Ok(())
}
