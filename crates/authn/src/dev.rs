//! The development issuer: an Ed25519 key that mints tokens for whoever asks, so
//! that `palisade up` can be tried without an identity provider.
//!
//! It authenticates nobody. The gateway enables it only under `palisade up` or an
//! explicit development flag; a real deployment names a real issuer. Its tokens are
//! ordinary EdDSA JWTs, checked by the same [`Verifier`](crate::Verifier) as any
//! other issuer's, against the public key set [`DevIssuer::jwks_json`] writes.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use crate::error::AuthError;
use crate::identity::{operator_name, MAX_GROUPS};
use crate::settings::{JwksSource, OidcSettings};

/// The longest lifetime of a development token.
pub const MAX_DEV_TTL_SECS: u64 = 24 * 3600;

const PEM_LABEL: &str = "PRIVATE KEY";

/// An Ed25519 signing key, kept in a PKCS#8 PEM file of mode 0600.
pub struct DevIssuer {
    signing: EncodingKey,
    public: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Generates a key and writes it to `path`, which must not exist yet.
    pub fn create(path: &Path) -> Result<Self, AuthError> {
        Self::create_new(path)?.ok_or_else(|| dev_key(path, "it exists already".into()))
    }

    /// `None` if something is at `path` already.
    fn create_new(path: &Path) -> Result<Option<Self>, AuthError> {
        let pkcs8 = Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| dev_key(path, "key generation failed".into()))?;
        let pem = pem_encode(pkcs8.as_ref());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(dev_key(path, format!("cannot create it: {e}"))),
        };
        file.write_all(pem.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| dev_key(path, format!("cannot write it: {e}")))?;
        Self::from_pkcs8(path, pkcs8.as_ref()).map(Some)
    }

    /// Reads the key at `path`; refuses a file others may read.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let file = File::open(path).map_err(|e| dev_key(path, format!("cannot open it: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| dev_key(path, format!("cannot inspect it: {e}")))?;
        if meta.mode() & 0o077 != 0 {
            return Err(dev_key(
                path,
                format!(
                    "its mode is {:o}; a private key must be readable by its owner only (chmod 600)",
                    meta.mode() & 0o777
                ),
            ));
        }
        let mut pem = String::new();
        file.take(64 * 1024)
            .read_to_string(&mut pem)
            .map_err(|e| dev_key(path, format!("cannot read it: {e}")))?;
        let der = pem_decode(&pem)
            .ok_or_else(|| dev_key(path, format!("not a PEM file with one {PEM_LABEL} block")))?;
        Self::from_pkcs8(path, &der)
    }

    /// [`load`](Self::load)s the key at `path`, or [`create`](Self::create)s it if
    /// there is none (without racing another process doing the same).
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        match Self::create_new(path)? {
            Some(issuer) => Ok(issuer),
            None => Self::load(path),
        }
    }

    fn from_pkcs8(path: &Path, der: &[u8]) -> Result<Self, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| dev_key(path, format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(DevIssuer {
            signing: EncodingKey::from_ed_der(der),
            kid: thumbprint(&public),
            public,
        })
    }

    /// The key id: the JWK thumbprint (RFC 7638) of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `operator`, valid from `now_unix` for `ttl_secs`. The operator
    /// name must already be in Palisade's spelling; it goes into `sub` and
    /// `preferred_username` (and `email` when it is an address), so settings from
    /// [`settings`](Self::settings) (identity claim `sub`) accept it.
    pub fn issue(
        &self,
        issuer: &str,
        audience: &str,
        operator: &str,
        groups: &[String],
        ttl_secs: u64,
        now_unix: i64,
    ) -> Result<String, AuthError> {
        let refuse = |reason: String| AuthError::DevIssue { reason };
        if issuer.is_empty() || audience.is_empty() {
            return Err(refuse(
                "the issuer and the audience must not be empty".into(),
            ));
        }
        if operator_name("operator", operator)? != operator {
            return Err(refuse(format!(
                "operator {operator:?} must be written in lower case"
            )));
        }
        if !(1..=MAX_DEV_TTL_SECS).contains(&ttl_secs) {
            return Err(refuse(format!(
                "the lifetime must be 1 to {MAX_DEV_TTL_SECS} seconds, not {ttl_secs}"
            )));
        }
        if groups.len() > MAX_GROUPS
            || groups
                .iter()
                .any(|g| g.is_empty() || g.len() > 256 || g.chars().any(char::is_control))
        {
            return Err(refuse(format!(
                "at most {MAX_GROUPS} groups of 1 to 256 bytes without control characters"
            )));
        }
        let ttl = i64::try_from(ttl_secs).map_err(|_| refuse("lifetime too large".into()))?;
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| refuse("no randomness for the token id".into()))?;
        let mut claims = json!({
            "iss": issuer,
            "aud": audience,
            "sub": operator,
            "preferred_username": operator,
            "groups": groups,
            "iat": now_unix,
            "nbf": now_unix,
            "exp": now_unix.saturating_add(ttl),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        if operator.contains('@') {
            claims["email"] = json!(operator);
            claims["email_verified"] = json!(true);
        }
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| refuse(format!("signing failed: {e}")))
    }

    /// The public key as a JWK Set, for a [`JwksSource::File`].
    pub fn jwks_json(&self) -> String {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(&self.public),
                "kid": self.kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
        .to_string()
    }

    /// Verifier settings for this issuer's tokens, its key set in `jwks_file`
    /// (write [`jwks_json`](Self::jwks_json) there first).
    pub fn settings(issuer: &str, audience: &str, jwks_file: PathBuf) -> OidcSettings {
        let mut s = OidcSettings::new(issuer, audience, JwksSource::File(jwks_file));
        s.identity_claim = "sub".to_owned();
        s.groups_claim = Some("groups".to_owned());
        s
    }
}

fn dev_key(path: &Path, reason: String) -> AuthError {
    AuthError::DevKey {
        path: path.to_path_buf(),
        reason,
    }
}

/// RFC 7638 §3: SHA-256 over the required members, lexically ordered, no spaces.
fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem.get(start..)?.find(&end)?;
    let body: String = pem
        .get(start..stop)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 Appendix A.3: the thumbprint of the Ed25519 example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn key_file_is_private_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        let made = DevIssuer::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(DevIssuer::create(&path).is_err(), "create never overwrites");
        let loaded = DevIssuer::load(&path).unwrap();
        assert_eq!(made.kid(), loaded.kid());
        assert_eq!(DevIssuer::load_or_create(&path).unwrap().kid(), made.kid());
        assert_eq!(made.jwks_json(), loaded.jwks_json());
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        DevIssuer::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = DevIssuer::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn issue_refuses_names_the_verifier_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevIssuer::create(&dir.path().join("k")).unwrap();
        let iss = "https://127.0.0.1:7400/dev";
        assert!(dev.issue(iss, "palisade", "alice", &[], 60, 0).is_ok());
        assert!(dev
            .issue(iss, "palisade", "Alice Smith", &[], 60, 0)
            .is_err());
        assert!(dev.issue(iss, "palisade", "Alice", &[], 60, 0).is_err());
        assert!(dev.issue(iss, "palisade", "alice", &[], 0, 0).is_err());
        assert!(dev
            .issue(iss, "palisade", "alice", &[], MAX_DEV_TTL_SECS + 1, 0)
            .is_err());
        assert!(dev.issue(iss, "", "alice", &[], 60, 0).is_err());
    }
}
