//! Ed25519 keys for TUF roles, reviewers, the pipeline and CI.
//!
//! A private key is a PKCS#8 v2 document in a PEM `PRIVATE KEY` file (mode 0600);
//! its public half is a `<name>.pub` JSON file `{"name": …, "key": <TUF key>}` whose
//! `key` is exactly the TUF key object (`keytype`, `scheme`, `keyval.public` hex), so
//! the key id is the one TUF computes (SHA-256 of the canonical key JSON).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path} is not an Ed25519 PKCS#8 PEM private key ({reason})")]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{path} is not a Palisade public key file ({reason})")]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("key name {0:?} must be 1-64 characters of [a-z0-9._-], not starting with '-' or '.'")]
    BadName(String),
    #[error("cannot generate a key: the system random source failed")]
    Random,
}

/// A public key with the name it was created under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub name: String,
    pub key: Key,
}

impl PublicKey {
    pub fn from_raw(name: &str, public: &[u8]) -> Self {
        Self {
            name: name.to_string(),
            key: Key::Ed25519 {
                keyval: Ed25519Key {
                    public: Decoded::from(public.to_vec()),
                    _extra: HashMap::new(),
                },
                scheme: Ed25519Scheme::Ed25519,
                _extra: HashMap::new(),
            },
        }
    }

    /// The TUF key id: hex SHA-256 of the canonical JSON of the key object.
    pub fn key_id(&self) -> String {
        key_id_hex(&self.key)
    }

    /// Raw 32-byte Ed25519 public key, if this is an Ed25519 key.
    pub fn raw(&self) -> Option<&[u8]> {
        match &self.key {
            Key::Ed25519 { keyval, .. } => Some(keyval.public.as_ref()),
            _ => None,
        }
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.raw().is_some_and(|raw| {
            UnparsedPublicKey::new(&ED25519, raw)
                .verify(msg, sig)
                .is_ok()
        })
    }

    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key: PublicKey =
            serde_json::from_slice(&bytes).map_err(|e| KeyError::BadPublicKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        check_name(&key.name)?;
        if key.raw().map(<[u8]>::len) != Some(32) {
            return Err(KeyError::BadPublicKey {
                path: path.to_path_buf(),
                reason: "only 32-byte Ed25519 keys are accepted".into(),
            });
        }
        Ok(key)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Hex key id of a TUF key (empty if the key cannot be serialised, which cannot
/// happen for the key types built here).
pub fn key_id_hex(key: &Key) -> String {
    key.key_id()
        .map(|id| hex::encode(id.as_ref()))
        .unwrap_or_default()
}

pub fn key_id_decoded(hex_id: &str) -> Decoded<Hex> {
    Decoded::from(hex::decode(hex_id).unwrap_or_default())
}

/// A private Ed25519 key loaded from its PEM file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
    /// The public key's TUF key id, computed once (every signature names it).
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.public.name, self.key_id)
    }
}

impl SigningKey {
    /// Loads `<path>`; the key's name is the file stem (`alice.key` → `alice`).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPrivateKey {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let doc = pem::parse(&text).map_err(|e| bad(e.to_string()))?;
        if doc.tag() != "PRIVATE KEY" {
            return Err(bad(format!("PEM label is {:?}", doc.tag())));
        }
        let pair = Ed25519KeyPair::from_pkcs8(doc.contents())
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(doc.contents()))
            .map_err(|e| bad(e.to_string()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("key")
            .to_string();
        let public = PublicKey::from_raw(&name, pair.public_key().as_ref());
        let key_id = public.key_id();
        Ok(Self {
            pair,
            public,
            key_id,
        })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn key_id(&self) -> String {
        self.key_id.clone()
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.chars().take(80).collect()))
    }
}

/// Paths of a generated key pair.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key_id: String,
}

/// Generates `<dir>/<name>.key` (0600) and `<dir>/<name>.pub`. Refuses to overwrite
/// unless `force`.
pub fn generate(name: &str, dir: &Path, force: bool) -> Result<KeyFiles, KeyError> {
    check_name(name)?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    if !force {
        for p in [&private, &public] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
    }
    let rng = SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Random)?;
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
    write_file(&private, pem_text.as_bytes(), true, force)?;
    let pubkey = PublicKey::from_raw(name, pair.public_key().as_ref());
    write_file(&public, &pubkey.to_json(), false, force)?;
    Ok(KeyFiles {
        private,
        public,
        key_id: pubkey.key_id(),
    })
}

fn write_file(path: &Path, bytes: &[u8], secret: bool, force: bool) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}
