//! The PKCS#11 backend: an AES-256 KEK generated inside an HSM, sensitive and
//! non-extractable, used only through `C_Encrypt`/`C_Decrypt` with `CKM_AES_GCM`.
//!
//! - One [`Token`] per (module, token label, PIN file): it owns the PKCS#11 context
//!   and a small pool of sessions (`sessions`, default 4), so that concurrent
//!   Encrypt/Decrypt calls run in the HSM in parallel instead of queueing on one
//!   session. The first session logs in; PKCS#11 login state belongs to the
//!   application and token, not to a session, so the other sessions are opened
//!   already logged in (PKCS#11 v2.40 §5.6, "Session management").
//! - Any failure that is not about the ciphertext itself (token removed, session
//!   closed, login lost) marks the whole pool broken: no session is handed out any
//!   more, the sessions in use are closed as they come back, and when the last one is
//!   back the module is finalized. The next call re-initializes the module, logs in
//!   again and finds the keys again, so the plugin recovers by itself. (Finalizing
//!   while another thread is inside a call would pull the module out from under it.)
//! - A PIN the token rejected is remembered (as a hash) and never retried until the
//!   PIN file changes: HSMs lock the user PIN after a few wrong attempts, and health
//!   checks must not be what locks it.
//! - A key is used only if it is a 256-bit AES secret key with `CKA_SENSITIVE` true
//!   and `CKA_EXTRACTABLE` false; this is checked whenever the key is (re)found, in
//!   every new session.
//! - key_id = `pkcs11:<token label>/<key label>/<CKA_ID hex>`; `keygen` gives every
//!   key a fresh random 16-byte CKA_ID, so a new key under an old label gets a new id.

use crate::envelope::{self, Sealed, IV_LEN, TAG_LEN};
use crate::kek::{check_key_id, Backend, Kek, KekError, KeyId};
use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Where the KEKs live: a PKCS#11 module, a token label and the file holding the PIN,
/// and how many sessions the plugin may keep open on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: PathBuf,
    /// At most this many Encrypt/Decrypt calls run in the HSM at once.
    pub sessions: NonZeroUsize,
}

impl TokenConfig {
    /// The default size of the session pool: enough for the 2–4 cores a control-plane
    /// host has, small enough for HSMs that limit sessions per application.
    pub const DEFAULT_SESSIONS: NonZeroUsize = match NonZeroUsize::new(4) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    };
}

/// A token with a pool of open, logged-in sessions, shared by its keys.
pub struct Token {
    config: TokenConfig,
    state: Mutex<TokenState>,
    /// Signalled whenever a session comes back to the pool.
    returned: Condvar,
    /// The most sessions open at once (see [`PoolStats`]).
    peak: AtomicUsize,
}

#[derive(Default)]
struct TokenState {
    open: Option<Open>,
    /// SHA-256 of the last PIN the token rejected.
    rejected_pin: Option<[u8; 32]>,
}

/// The module initialized and logged in, with the sessions not in use right now.
struct Open {
    ctx: Pkcs11,
    slot: Slot,
    idle: Vec<Pooled>,
    /// Sessions handed out and not yet back.
    in_use: usize,
    /// A call failed for a reason other than its data: hand out nothing more, close
    /// every session as it comes back, finalize when the last one is back.
    broken: bool,
}

/// One session of the pool.
struct Pooled {
    session: Session,
    /// Key handles by label, found (and checked) since this session opened.
    handles: HashMap<String, ObjectHandle>,
}

/// The identity of a key, read from the token and checked.
struct KeyFacts {
    handle: ObjectHandle,
    id: Vec<u8>,
}

/// How many sessions the pool holds, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Sessions open now (idle and in use).
    pub open: usize,
    /// The most sessions that were open at once since the token was created.
    pub peak: usize,
}

impl Token {
    pub fn new(config: TokenConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(TokenState::default()),
            returned: Condvar::new(),
            peak: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// The sessions open now and the most that were ever open at once.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            open: state.open.as_ref().map_or(0, |o| o.idle.len() + o.in_use),
            peak: self.peak(),
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        // A panic while holding the lock cannot leave a broken session usable: a
        // session is only returned to the pool after its call succeeded.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a session from the pool, opening the module (and logging in) or another
    /// session when needed, or waiting for one to come back when all are in use.
    /// `rw`: a read-write session of its own, closed after use (key generation).
    fn checkout(&self, rw: bool) -> Result<Pooled, KekError> {
        let mut state = self.lock();
        loop {
            if state.open.as_ref().is_some_and(|o| o.broken) {
                // Wait for the calls still running on the broken module to finish.
                state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if state.open.is_none() {
                let (open, first) = self.open(&mut state)?;
                let mut open = open;
                open.idle.push(first);
                state.open = Some(open);
            }
            let Some(open) = state.open.as_mut() else {
                return Err(KekError::Unavailable("no session".into()));
            };
            if rw {
                let session = open
                    .ctx
                    .open_rw_session(open.slot)
                    .map_err(|e| unavailable("C_OpenSession", &e));
                return match session {
                    Ok(session) => {
                        open.in_use += 1;
                        self.note_open(open);
                        Ok(Pooled {
                            session,
                            handles: HashMap::new(),
                        })
                    }
                    Err(e) => {
                        self.break_pool(&mut state);
                        Err(e)
                    }
                };
            }
            if let Some(pooled) = open.idle.pop() {
                open.in_use += 1;
                return Ok(pooled);
            }
            if open.in_use < self.config.sessions.get() {
                // The token is already logged in: a new session shares the login.
                match open.ctx.open_ro_session(open.slot) {
                    Ok(session) => {
                        open.in_use += 1;
                        self.note_open(open);
                        return Ok(Pooled {
                            session,
                            handles: HashMap::new(),
                        });
                    }
                    Err(e) => {
                        let e = unavailable("C_OpenSession", &e);
                        self.break_pool(&mut state);
                        return Err(e);
                    }
                }
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn note_open(&self, open: &Open) {
        self.peak
            .fetch_max(open.idle.len() + open.in_use, Ordering::Relaxed);
    }

    /// Gives a session back after a call. `healthy`: the call did not fail for a
    /// reason other than its data, so the session may be used again.
    fn checkin(&self, pooled: Pooled, healthy: bool, rw: bool) {
        let mut state = self.lock();
        if let Some(open) = state.open.as_mut() {
            open.in_use = open.in_use.saturating_sub(1);
            if healthy && !rw && !open.broken {
                open.idle.push(pooled);
            } else {
                drop(pooled);
                if !healthy {
                    open.broken = true;
                }
            }
        } else {
            drop(pooled);
        }
        if state.open.as_ref().is_some_and(|o| o.broken) {
            self.break_pool(&mut state);
        }
        drop(state);
        self.returned.notify_all();
    }

    /// Marks the pool broken; once no session is in use any more, closes every
    /// session and finalizes the module so that the next call starts from scratch.
    fn break_pool(&self, state: &mut TokenState) {
        let Some(open) = state.open.as_mut() else {
            return;
        };
        open.broken = true;
        open.idle.clear();
        if open.in_use == 0 {
            if let Some(open) = state.open.take() {
                close(open);
            }
            self.returned.notify_all();
        }
    }

    /// Runs `op` on a session of the pool. When `op` fails for any reason other than
    /// the data, the pool is torn down (see the module docs).
    fn with_session<T>(
        &self,
        rw: bool,
        op: impl FnOnce(&mut Pooled) -> Result<T, OpError>,
    ) -> Result<T, KekError> {
        let mut pooled = self.checkout(rw)?;
        let result = op(&mut pooled);
        let healthy = !matches!(result, Err(OpError::Fatal(_)));
        self.checkin(pooled, healthy, rw);
        match result {
            Ok(v) => Ok(v),
            Err(OpError::Data(e) | OpError::Fatal(e)) => Err(e),
        }
    }

    /// Initializes the module, finds the token, opens a first session and logs in.
    fn open(&self, state: &mut TokenState) -> Result<(Open, Pooled), KekError> {
        let cfg = &self.config;
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| {
            KekError::Unavailable(format!(
                "cannot load the PKCS#11 module {}: {e}",
                cfg.module.display()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(unavailable("C_Initialize", &e)),
        }
        match self.login(state, &ctx) {
            Ok((slot, session)) => {
                let open = Open {
                    ctx,
                    slot,
                    idle: Vec::new(),
                    in_use: 0,
                    broken: false,
                };
                self.peak.fetch_max(1, Ordering::Relaxed);
                Ok((
                    open,
                    Pooled {
                        session,
                        handles: HashMap::new(),
                    },
                ))
            }
            // As before the pool: a failed open is not finalized (another token of this
            // process may be using the module); its session, if any, is closed on drop.
            Err(e) => Err(e),
        }
    }

    fn login(&self, state: &mut TokenState, ctx: &Pkcs11) -> Result<(Slot, Session), KekError> {
        let cfg = &self.config;
        let slot = find_slot(ctx, &cfg.token_label)?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| unavailable("C_OpenSession", &e))?;

        let pin = read_pin(&cfg.pin_file)?;
        let pin_hash: [u8; 32] = Sha256::digest(pin.as_bytes()).into();
        if state.rejected_pin == Some(pin_hash) {
            return Err(KekError::Unavailable(format!(
                "the token rejected the PIN in {}; not retrying it (to avoid locking the \
                 token) until the file changes",
                cfg.pin_file.display()
            )));
        }
        match session.login(UserType::User, Some(&AuthPin::from(pin.to_string()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                state.rejected_pin = None;
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                state.rejected_pin = Some(pin_hash);
                tracing::error!(
                    token = %cfg.token_label,
                    pin_file = %cfg.pin_file.display(),
                    "the token rejected the PIN; fix the PIN file (it will not be retried until it changes)"
                );
                return Err(KekError::Unavailable("wrong PIN".into()));
            }
            Err(e) => return Err(unavailable("C_Login", &e)),
        }
        Ok((slot, session))
    }

    /// Generates a new KEK labelled `label` inside the token. Refuses if a key with
    /// that label exists (labels name keys in the plugin's configuration).
    pub fn generate_key(self: &Arc<Self>, label: &str) -> Result<KeyId, KekError> {
        let key_id_prefix = format!("pkcs11:{}/{label}/", self.config.token_label);
        self.with_session(true, |open| {
            let existing = open
                .session
                .find_objects(&key_template(label))
                .map_err(|e| OpError::Fatal(unavailable("C_FindObjects", &e)))?;
            if !existing.is_empty() {
                return Err(OpError::Data(KekError::Refused(format!(
                    "a key labelled {label:?} already exists in token {:?}; choose a new label",
                    self.config.token_label
                ))));
            }
            let mut id = [0u8; 16];
            getrandom::getrandom(&mut id).map_err(|_| {
                OpError::Fatal(KekError::Unavailable(
                    "no operating-system randomness".into(),
                ))
            })?;
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Copyable(false),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ];
            open.session
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(|e| OpError::Fatal(unavailable("C_GenerateKey", &e)))?;
            Ok(id)
        })
        .and_then(|id| {
            KeyId::new(format!("{key_id_prefix}{}", hex::encode(id)))
                .map_err(|e| KekError::Invalid(format!("key_id: {e}")))
        })
    }
}

fn close(open: Open) {
    let Open { idle, ctx, .. } = open;
    drop(idle);
    // Finalize so that the next open re-reads the token from scratch.
    if let Err(e) = ctx.finalize() {
        tracing::debug!(error = %e, "C_Finalize failed");
    }
}

/// What went wrong inside an operation: the data (keep the session) or anything else
/// (tear the pool down).
enum OpError {
    Data(KekError),
    Fatal(KekError),
}

fn unavailable(call: &str, e: &CkError) -> KekError {
    // cryptoki's messages name the PKCS#11 return value; they never contain data.
    let reason = match e {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    };
    KekError::Unavailable(format!("{call}: {reason}"))
}

pub(crate) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, KekError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| unavailable("C_GetSlotList", &e))?;
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(KekError::Unavailable(format!("token {label:?} not found")))
}

pub(crate) fn read_pin(path: &std::path::Path) -> Result<Zeroizing<String>, KekError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        KekError::Unavailable(format!("cannot read the PIN file {}: {e}", path.display()))
    })?);
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(KekError::Unavailable(format!(
            "the PIN file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(pin.to_string()))
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Finds the key labelled `label` and checks that it may be used as a KEK.
fn find_key(session: &Session, label: &str) -> Result<KeyFacts, OpError> {
    let found = session
        .find_objects(&key_template(label))
        .map_err(|e| OpError::Fatal(unavailable("C_FindObjects", &e)))?;
    let handle = match found.as_slice() {
        [] => {
            return Err(OpError::Fatal(KekError::Unavailable(format!(
                "no key labelled {label:?} in the token"
            ))))
        }
        [one] => *one,
        _ => {
            return Err(OpError::Data(KekError::Refused(format!(
                "{} keys are labelled {label:?}; a label must name exactly one key",
                found.len()
            ))))
        }
    };
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Id,
            ],
        )
        .map_err(|e| OpError::Fatal(unavailable("C_GetAttributeValue", &e)))?;
    let mut aes = false;
    let mut len_ok = false;
    let mut sensitive = false;
    let mut extractable = true;
    let mut id = Vec::new();
    for a in attrs {
        match a {
            Attribute::KeyType(t) => aes = t == KeyType::AES,
            Attribute::ValueLen(n) => len_ok = u64::from(n) == 32,
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Extractable(b) => extractable = b,
            Attribute::Id(v) => id = v,
            _ => {}
        }
    }
    let refuse = |why: &str| {
        tracing::error!(key_label = %label, "refusing the key: {why}");
        Err(OpError::Data(KekError::Refused(format!(
            "key {label:?}: {why}"
        ))))
    };
    if !aes || !len_ok {
        return refuse("not a 256-bit AES key");
    }
    if !sensitive {
        return refuse("CKA_SENSITIVE is false (the key could be read out)");
    }
    if extractable {
        return refuse("CKA_EXTRACTABLE is true (the key could be wrapped out)");
    }
    if id.is_empty() {
        return refuse("it has no CKA_ID (generate keys with `palisade kms keygen`)");
    }
    Ok(KeyFacts { handle, id })
}

/// A KEK in a PKCS#11 token.
pub struct Pkcs11Kek(Arc<KeyInner>);

struct KeyInner {
    token: Arc<Token>,
    label: String,
    id: Vec<u8>,
    key_id: KeyId,
}

impl Pkcs11Kek {
    /// Finds and checks the key labelled `label`; refuses keys that could leave the HSM.
    pub async fn open(token: Arc<Token>, label: &str) -> Result<Self, KekError> {
        let t = token.clone();
        let l = label.to_string();
        let id = blocking(move || {
            t.with_session(false, |open| {
                let facts = find_key(&open.session, &l)?;
                open.handles.insert(l.clone(), facts.handle);
                Ok(facts.id)
            })
        })
        .await?;
        let key_id = KeyId::new(format!(
            "pkcs11:{}/{label}/{}",
            token.config.token_label,
            hex::encode(&id)
        ))
        .map_err(|e| {
            KekError::Invalid(format!(
                "token and key labels must be printable ASCII without spaces: {e}"
            ))
        })?;
        Ok(Self(Arc::new(KeyInner {
            token,
            label: label.to_string(),
            id,
            key_id,
        })))
    }
}

impl KeyInner {
    /// The handle of this key in this session, (re)finding and re-checking it when the
    /// session is new. A key whose CKA_ID changed is refused: its key_id would
    /// otherwise name a different key.
    fn handle(&self, open: &mut Pooled) -> Result<ObjectHandle, OpError> {
        if let Some(h) = open.handles.get(&self.label) {
            return Ok(*h);
        }
        let facts = find_key(&open.session, &self.label)?;
        if facts.id != self.id {
            return Err(OpError::Fatal(KekError::Refused(format!(
                "the key labelled {:?} is not the key {} any more (its CKA_ID changed)",
                self.label, self.key_id
            ))));
        }
        open.handles.insert(self.label.clone(), facts.handle);
        Ok(facts.handle)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KekError> + Send + 'static,
) -> Result<T, KekError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| KekError::Unavailable("PKCS#11 worker stopped".into()))?
}

fn is_data_error(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange,
            _
        )
    )
}

/// Encrypts a fresh random probe with `handle` and decrypts it again: `Ok` when the
/// token and the key work now. Any failure or a different answer is `Err`.
fn known_answer(session: &Session, handle: ObjectHandle, key_id: &KeyId) -> Result<(), ()> {
    let mut probe = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; IV_LEN];
    getrandom::getrandom(probe.as_mut_slice()).map_err(drop)?;
    getrandom::getrandom(&mut iv).map_err(drop)?;
    let aad = key_id.as_str().as_bytes();
    let mut iv_encrypt = iv;
    let params = GcmParams::new(&mut iv_encrypt, aad, 128.into()).map_err(drop)?;
    let ct = session
        .encrypt(&Mechanism::AesGcm(params), handle, probe.as_slice())
        .map_err(drop)?;
    let mut iv_decrypt = iv;
    let params = GcmParams::new(&mut iv_decrypt, aad, 128.into()).map_err(drop)?;
    let back = Zeroizing::new(
        session
            .decrypt(&Mechanism::AesGcm(params), handle, &ct)
            .map_err(drop)?,
    );
    if back.as_slice() == probe.as_slice() {
        Ok(())
    } else {
        Err(())
    }
}

#[async_trait]
impl Kek for Pkcs11Kek {
    fn key_id(&self) -> &KeyId {
        &self.0.key_id
    }

    fn backend(&self) -> Backend {
        Backend::Pkcs11
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, KekError> {
        let this = self.0.clone();
        let plaintext = Zeroizing::new(plaintext.to_vec());
        blocking(move || {
            let mut iv = [0u8; IV_LEN];
            getrandom::getrandom(&mut iv)
                .map_err(|_| KekError::Unavailable("no operating-system randomness".into()))?;
            let token = this.token.clone();
            token.with_session(false, |open| {
                let handle = this.handle(open)?;
                let mut iv_param = iv;
                let params =
                    GcmParams::new(&mut iv_param, this.key_id.as_str().as_bytes(), 128.into())
                        .map_err(|_| OpError::Data(KekError::Invalid("GCM parameters".into())))?;
                let ct = open
                    .session
                    .encrypt(&Mechanism::AesGcm(params), handle, &plaintext)
                    .map_err(|e| {
                        if is_data_error(&e) {
                            OpError::Data(KekError::Invalid(format!("{e}")))
                        } else {
                            OpError::Fatal(unavailable("C_Encrypt", &e))
                        }
                    })?;
                if ct.len() != plaintext.len() + TAG_LEN {
                    return Err(OpError::Fatal(KekError::Unavailable(
                        "C_Encrypt returned an unexpected length".into(),
                    )));
                }
                Ok(envelope::assemble(&iv, &ct))
            })
        })
        .await
    }

    async fn decrypt(&self, key_id: &KeyId, ciphertext: &[u8]) -> Result<Vec<u8>, KekError> {
        check_key_id(&self.0.key_id, key_id)?;
        let sealed = Sealed::parse(ciphertext).map_err(|_| KekError::Undecryptable)?;
        let mut iv = *sealed.iv;
        let ct = sealed.ct_and_tag.to_vec();
        let this = self.0.clone();
        blocking(move || {
            let token = this.token.clone();
            token.with_session(false, |open| {
                let handle = this.handle(open)?;
                let params =
                    GcmParams::new(&mut iv, this.key_id.as_str().as_bytes(), 128.into())
                        .map_err(|_| OpError::Data(KekError::Invalid("GCM parameters".into())))?;
                match open
                    .session
                    .decrypt(&Mechanism::AesGcm(params), handle, &ct)
                {
                    Ok(plaintext) => Ok(plaintext),
                    Err(e) if is_data_error(&e) => Err(OpError::Data(KekError::Undecryptable)),
                    // Tokens report a GCM tag that does not verify with the codes of a
                    // broken token (SoftHSM2: CKR_GENERAL_ERROR). A known-answer probe
                    // with the same key on the same session tells the two apart: if it
                    // round-trips, the token works and the ciphertext was bad.
                    Err(e) => match known_answer(&open.session, handle, &this.key_id) {
                        Ok(()) => Err(OpError::Data(KekError::Undecryptable)),
                        Err(()) => Err(OpError::Fatal(unavailable("C_Decrypt", &e))),
                    },
                }
            })
        })
        .await
    }
}
