//! Ed25519 signing keys that never leave a PKCS#11 token: a customer's approver
//! signs approvals with one (`palisade customer keygen --pkcs11-module …` makes it,
//! `palisade customer approve --pkcs11-module …` uses it). The private key is
//! generated inside the token as sensitive and non-extractable; only the public key
//! (the token's `CKA_EC_POINT`) and signatures come out.

use crate::kek::KekError;
use crate::pkcs11::{find_slot, read_pin};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::{Path, PathBuf};

/// DER of the Ed25519 curve's OID (1.3.101.112), as `CKA_EC_PARAMS`.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where a signing key lives.
#[derive(Debug, Clone)]
pub struct TokenKey {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: PathBuf,
    /// The key pair's `CKA_LABEL`.
    pub label: String,
}

/// A logged-in session and the private key, ready to sign.
pub struct TokenSigner {
    // Kept so that the module stays initialized while the session lives.
    _ctx: Pkcs11,
    session: Session,
    private: ObjectHandle,
    public: [u8; 32],
}

fn failed(call: &str, e: &CkError) -> KekError {
    let reason = match e {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    };
    KekError::Unavailable(format!("{call}: {reason}"))
}

fn login(key: &TokenKey) -> Result<(Pkcs11, Session), KekError> {
    let ctx = Pkcs11::new(&key.module).map_err(|e| {
        KekError::Unavailable(format!(
            "cannot load the PKCS#11 module {}: {e}",
            key.module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed("C_Initialize", &e)),
    }
    let slot = find_slot(&ctx, &key.token_label)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| failed("C_OpenSession", &e))?;
    let pin = read_pin(&key.pin_file)?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(KekError::Unavailable(format!(
                "the token rejected the PIN in {}",
                key.pin_file.display()
            )))
        }
        Err(e) => return Err(failed("C_Login", &e)),
    }
    Ok((ctx, session))
}

/// The 32-byte public key from a `CKA_EC_POINT` (a DER OCTET STRING, or the raw
/// point some modules return).
fn point(bytes: &[u8]) -> Result<[u8; 32], KekError> {
    let raw = match bytes {
        [0x04, 32, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => {
            return Err(KekError::Invalid(format!(
                "CKA_EC_POINT of {} bytes is not an Ed25519 public key",
                bytes.len()
            )))
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(raw);
    Ok(out)
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>, KekError> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| failed("C_FindObjects", &e))
}

impl TokenKey {
    /// Generates an Ed25519 key pair labelled `label` inside the token (private half
    /// sensitive, non-extractable, for signing only); returns the public key. Refuses
    /// a label already in use.
    pub fn generate(&self) -> Result<[u8; 32], KekError> {
        let (_ctx, session) = login(self)?;
        if !find(&session, ObjectClass::PRIVATE_KEY, &self.label)?.is_empty() {
            return Err(KekError::Refused(format!(
                "a key labelled {:?} already exists in token {:?}",
                self.label, self.token_label
            )));
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id)
            .map_err(|_| KekError::Unavailable("no operating-system randomness".into()))?;
        let label = self.label.as_bytes().to_vec();
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_OID.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(id.to_vec()),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Label(label),
            Attribute::Id(id.to_vec()),
        ];
        let (pub_handle, _) = session
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
            .map_err(|e| failed("C_GenerateKeyPair", &e))?;
        read_point(&session, pub_handle)
    }

    /// Logs in and finds the key pair labelled `label`; its private half must be
    /// sensitive and non-extractable.
    pub fn open(&self) -> Result<TokenSigner, KekError> {
        let (ctx, session) = login(self)?;
        let private = match find(&session, ObjectClass::PRIVATE_KEY, &self.label)?.as_slice() {
            [one] => *one,
            [] => {
                return Err(KekError::Unavailable(format!(
                    "no Ed25519 key labelled {:?} in token {:?}",
                    self.label, self.token_label
                )))
            }
            _ => {
                return Err(KekError::Invalid(format!(
                    "several keys labelled {:?}: labels must name one key",
                    self.label
                )))
            }
        };
        let attrs = session
            .get_attributes(
                private,
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .map_err(|e| failed("C_GetAttributeValue", &e))?;
        let (mut sensitive, mut extractable) = (false, true);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                _ => {}
            }
        }
        if !sensitive || extractable {
            return Err(KekError::Invalid(format!(
                "the key {:?} can leave the token (sensitive {sensitive}, extractable {extractable}): refusing to use it",
                self.label
            )));
        }
        let public = match find(&session, ObjectClass::PUBLIC_KEY, &self.label)?.as_slice() {
            [one] => read_point(&session, *one)?,
            _ => {
                return Err(KekError::Unavailable(format!(
                    "no single public key labelled {:?} beside the private one",
                    self.label
                )))
            }
        };
        Ok(TokenSigner {
            _ctx: ctx,
            session,
            private,
            public,
        })
    }
}

fn read_point(session: &Session, handle: ObjectHandle) -> Result<[u8; 32], KekError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(|e| failed("C_GetAttributeValue", &e))?;
    for a in attrs {
        if let Attribute::EcPoint(bytes) = a {
            return point(&bytes);
        }
    }
    Err(KekError::Invalid(
        "the public key has no CKA_EC_POINT".into(),
    ))
}

impl TokenSigner {
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// A pure Ed25519 signature over `msg`, made inside the token.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KekError> {
        let params = EddsaParams::new(EddsaSignatureScheme::Pure);
        self.session
            .sign(&Mechanism::Eddsa(params), self.private, msg)
            .map_err(|e| failed("C_Sign", &e))
    }
}

/// The path-like description of a token key, for messages.
pub fn describe(key: &TokenKey) -> String {
    format!(
        "pkcs11:{}/{} ({})",
        key.token_label,
        key.label,
        Path::new(&key.module).display()
    )
}
