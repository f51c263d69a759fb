//! Fixed keys the targets verify against, made once per process. The log and witness
//! keys come from fixed seeds, so that seed inputs signed by them stay valid between
//! runs; the other keys exist only as files, so they are generated into a temporary
//! directory that lives as long as the process.

use palisade_kms::file_key::FileKek;
use palisade_policy::keys::{PublicKey, SigningKey};
use palisade_tlog::checkpoint::LogPolicy;
use palisade_tlog::note::{KeyType, SignerKey, VerifierKey};
use std::sync::OnceLock;

pub const ORIGIN: &str = "fuzz.palisade.example/cluster-a";

pub struct Keys {
    pub log: SignerKey,
    pub witness: SignerKey,
    pub policy: LogPolicy,
    pub gateway_public: Vec<PublicKey>,
    _dir: tempfile::TempDir,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| make().unwrap_or_else(|e| panic!("fuzz keys: {e}")))
}

fn make() -> Result<Keys, String> {
    let log =
        SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[7; 32]).map_err(|e| e.to_string())?;
    let witness = SignerKey::from_seed("witness.fuzz.example", KeyType::Cosignature, &[9; 32])
        .map_err(|e| e.to_string())?;
    let policy = LogPolicy::new(ORIGIN, log.verifier())
        .and_then(|p| p.with_witnesses(vec![witness.verifier()], 1))
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let files =
        palisade_policy::keys::generate("gateway", dir.path(), false).map_err(|e| e.to_string())?;
    let gateway = SigningKey::read(&files.private).map_err(|e| e.to_string())?;
    let gateway_public = vec![gateway.public().clone()];
    drop(gateway);
    Ok(Keys {
        log,
        witness,
        policy,
        gateway_public,
        _dir: dir,
    })
}

/// The verifier key of the log, for targets that need it alone.
pub fn log_verifier() -> VerifierKey {
    keys().log.verifier()
}

/// A file KEK with fixed key bytes, so that seed ciphertexts stay decryptable.
pub fn fixed_kek() -> Result<FileKek, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("kek");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| e.to_string())?;
    f.write_all("03".repeat(32).as_bytes())
        .map_err(|e| e.to_string())?;
    FileKek::load(&path).map_err(|e| e.to_string())
}

/// A signing key nobody trusts, for seeds that need some valid signature: what the
/// fuzzer makes of them must never verify under [`Keys::gateway_public`].
pub fn untrusted_signer() -> Result<SigningKey, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let files = palisade_policy::keys::generate("seed-signer", dir.path(), false)
        .map_err(|e| e.to_string())?;
    SigningKey::read(&files.private).map_err(|e| e.to_string())
}
