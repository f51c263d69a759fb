//! The issuer's public keys: a JWK Set (RFC 7517 §5) parsed into keys that each fix
//! their own algorithm, and the store that keeps the set current.
//!
//! The algorithm a token is checked with comes from the *key* (its `kty`, `crv` and
//! `alg`), never from the token alone: a token whose header names another algorithm
//! than its key's is refused. Symmetric (`oct`) keys are never loaded, so no token can
//! be checked as an HMAC with a public key as the secret.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::error::{shown, AuthError};
use crate::settings::{check_jwks_url, JwksSource};

/// The only signature algorithms Palisade accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl KeyAlg {
    /// The algorithm a token header names, if it is one we accept at all.
    pub(crate) fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(KeyAlg::Rs256),
            "ES256" => Some(KeyAlg::Es256),
            "EdDSA" => Some(KeyAlg::EdDsa),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            KeyAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
            KeyAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            KeyAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// One public key of the issuer, usable for exactly one algorithm.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: KeyAlg,
    pub(crate) key: DecodingKey,
}

impl VerifyingKey {
    pub(crate) fn kid_shown(&self) -> String {
        self.kid
            .as_deref()
            .map_or_else(|| "(no kid)".to_owned(), shown)
    }
}

/// A parsed JWK Set: the keys Palisade can use, in the issuer's order.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// What a key set says about a token's `kid`.
pub(crate) enum Lookup<'a> {
    Found(&'a VerifyingKey),
    /// The key exists, but for another algorithm than the token's header names.
    WrongAlg(&'a VerifyingKey),
    NotFound,
    /// No `kid` in the token, and more than one key to choose from.
    Ambiguous(usize),
}

/// The largest JWK Set read from a file or URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

impl KeySet {
    /// Parses a JWK Set, keeping the keys Palisade accepts and naming the others
    /// (encryption keys, other algorithms, symmetric keys) in the second value.
    /// A set with no usable key is an error: fail closed.
    pub(crate) fn parse(json: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, value) in raw.keys.into_iter().enumerate() {
            match parse_jwk(value) {
                Ok(key) => {
                    if key.kid.is_some()
                        && keys
                            .iter()
                            .any(|k: &VerifyingKey| k.kid == key.kid && k.alg == key.alg)
                    {
                        skipped.push(format!(
                            "key {i} ({}): a second key with this id and algorithm",
                            key.kid_shown()
                        ));
                        continue;
                    }
                    keys.push(key);
                }
                Err(reason) => skipped.push(format!("key {i}: {reason}")),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                "it holds no keys".to_owned()
            } else {
                format!("it holds no usable key ({})", skipped.join("; "))
            };
            return Err(why);
        }
        Ok((KeySet { keys }, skipped))
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key for a token that names `kid` (or none) and `alg`.
    pub(crate) fn lookup(&self, kid: Option<&str>, alg: KeyAlg) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let Some(first) = named.next() else {
                    return Lookup::NotFound;
                };
                if first.alg == alg {
                    return Lookup::Found(first);
                }
                named
                    .find(|k| k.alg == alg)
                    .map_or(Lookup::WrongAlg(first), Lookup::Found)
            }
            None => match self.keys.as_slice() {
                [only] if only.alg == alg => Lookup::Found(only),
                [only] => Lookup::WrongAlg(only),
                many => Lookup::Ambiguous(many.len()),
            },
        }
    }
}

/// The members of a JWK this crate reads (RFC 7517 §4, RFC 7518 §6).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    d: Option<serde_json::Value>,
}

fn parse_jwk(value: serde_json::Value) -> Result<VerifyingKey, String> {
    let jwk: RawJwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    let kid_label = jwk
        .kid
        .as_deref()
        .map_or_else(|| "(no kid)".to_owned(), shown);
    let skip = |reason: &str| format!("{kid_label}: {reason}");
    if jwk.d.is_some() {
        return Err(skip(
            "it contains private key material; a JWKS must publish public keys only",
        ));
    }
    if let Some(u) = &jwk.key_use {
        if u != "sig" {
            return Err(skip(&format!("its use is {}, not sig", shown(u))));
        }
    }
    if let Some(ops) = &jwk.key_ops {
        if !ops.iter().any(|op| op == "verify") {
            return Err(skip("its key_ops do not include verify"));
        }
    }
    if let Some(kid) = &jwk.kid {
        if kid.is_empty() || kid.len() > 256 {
            return Err(skip("its kid must be 1 to 256 bytes"));
        }
    }
    let alg_is = |accepted: &[&str]| match jwk.alg.as_deref() {
        None => true,
        Some(a) => accepted.contains(&a),
    };
    let (alg, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            if !alg_is(&["RS256"]) {
                return Err(skip(&format!(
                    "RSA key for {}, only RS256 is accepted",
                    shown(jwk.alg.as_deref().unwrap_or_default())
                )));
            }
            let n = b64_field(&jwk.n, "n").map_err(|r| skip(&r))?;
            let e = b64_field(&jwk.e, "e").map_err(|r| skip(&r))?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(skip(&format!(
                    "RSA modulus of {bits} bits; 2048 to 8192 are accepted"
                )));
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
                return Err(skip("RSA public exponent is not a small odd number"));
            }
            (KeyAlg::Rs256, DecodingKey::from_rsa_raw_components(n, e))
        }
        ("EC", Some("P-256")) => {
            if !alg_is(&["ES256"]) {
                return Err(skip("P-256 key for another algorithm than ES256"));
            }
            let x = b64_field(&jwk.x, "x").map_err(|r| skip(&r))?;
            let y = b64_field(&jwk.y, "y").map_err(|r| skip(&r))?;
            if x.len() != 32 || y.len() != 32 {
                return Err(skip("P-256 coordinates must be 32 bytes each"));
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .map_err(|_| skip("the point is not on the P-256 curve"))?;
            (KeyAlg::Es256, DecodingKey::from_ec_der(&point))
        }
        ("OKP", Some("Ed25519")) => {
            if !alg_is(&["EdDSA", "Ed25519"]) {
                return Err(skip("Ed25519 key for another algorithm than EdDSA"));
            }
            let x = b64_field(&jwk.x, "x").map_err(|r| skip(&r))?;
            ParsedPublicKey::new(&ED25519, &x)
                .map_err(|_| skip("not a valid Ed25519 public key"))?;
            (KeyAlg::EdDsa, DecodingKey::from_ed_der(&x))
        }
        ("oct", _) => return Err(skip("symmetric keys are never accepted")),
        (kty, crv) => {
            return Err(skip(&format!(
                "key type {}{} is not accepted (RSA, EC P-256 and OKP Ed25519 are)",
                shown(kty),
                crv.map(|c| format!(" curve {}", shown(c)))
                    .unwrap_or_default()
            )))
        }
    };
    Ok(VerifyingKey {
        kid: jwk.kid,
        alg,
        key,
    })
}

/// base64url, padded or not (RFC 7518 says unpadded; some issuers pad).
const B64_JWK: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn b64_field(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value
        .as_deref()
        .ok_or_else(|| format!("member {name} is missing"))?;
    B64_JWK
        .decode(value)
        .map_err(|_| format!("member {name} is not base64url"))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// How often the store goes back to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Every so often the set is read again, in the background; a failed read keeps
    /// the last good set.
    pub refresh_every: Duration,
    /// A token naming an unknown key makes the store read the set again at once,
    /// but at most this often (so forged `kid`s cannot hammer the issuer).
    pub min_refetch_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_every: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(30),
        }
    }
}

/// Reads the JWK Set from its source.
enum Fetcher {
    File(PathBuf),
    Url {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

impl Fetcher {
    fn new(source: &JwksSource) -> Result<Self, AuthError> {
        match source {
            JwksSource::File(path) => Ok(Fetcher::File(path.clone())),
            JwksSource::Url { url, ca } => {
                let parsed = check_jwks_url(url)?;
                let https = parsed.scheme() == "https";
                let unavailable = |reason: String| AuthError::JwksUnavailable {
                    source_name: url.clone(),
                    reason,
                };
                let builder = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    // An https key set may not be redirected to plain http; a loopback
                    // http one is not redirected at all.
                    .https_only(https)
                    .redirect(if https {
                        reqwest::redirect::Policy::limited(3)
                    } else {
                        reqwest::redirect::Policy::none()
                    });
                let builder = match ca {
                    Some(ca) => {
                        let roots =
                            palisade_pki::load_roots(ca).map_err(|e| unavailable(e.to_string()))?;
                        let tls = rustls::ClientConfig::builder_with_provider(
                            palisade_pki::crypto_provider(),
                        )
                        .with_safe_default_protocol_versions()
                        .map_err(|e| unavailable(e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                        builder.tls_backend_preconfigured(tls)
                    }
                    None => {
                        // reqwest then verifies with the platform's trust store and the
                        // process-wide rustls provider: make it Palisade's unless one
                        // is installed already.
                        palisade_pki::install_default_provider();
                        builder
                    }
                };
                let client = builder.build().map_err(|e| unavailable(error_chain(&e)))?;
                Ok(Fetcher::Url {
                    url: parsed,
                    client,
                })
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Fetcher::File(path) => path.display().to_string(),
            Fetcher::Url { url, .. } => url.to_string(),
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let bytes = match self {
            Fetcher::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
                }
                bytes
            }
            Fetcher::Url { url, client } => {
                let mut response = client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| error_chain(&e))?;
                if !response.status().is_success() {
                    return Err(format!("HTTP status {}", response.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                body
            }
        };
        let (set, skipped) = KeySet::parse(&bytes)?;
        for reason in skipped {
            tracing::warn!(jwks = %self.name(), "ignoring a key of the issuer's JWKS: {reason}");
        }
        Ok(set)
    }
}

/// The current key set, shared by all requests, and the rules for replacing it.
pub(crate) struct KeyStore {
    fetcher: Fetcher,
    current: RwLock<Arc<KeySet>>,
    /// When a token with an unknown `kid` last made us re-read the set; held while
    /// re-reading, so concurrent requests wait for one fetch instead of each making one.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    policy: RefreshPolicy,
}

impl KeyStore {
    /// Reads the set once; an unreadable or empty set is an error (fail closed).
    pub(crate) async fn load(
        source: &JwksSource,
        policy: RefreshPolicy,
    ) -> Result<Self, AuthError> {
        let fetcher = Fetcher::new(source)?;
        let set = fetcher
            .fetch()
            .await
            .map_err(|reason| AuthError::JwksUnavailable {
                source_name: fetcher.name(),
                reason,
            })?;
        Ok(KeyStore {
            fetcher,
            current: RwLock::new(Arc::new(set)),
            last_refetch: tokio::sync::Mutex::new(None),
            policy,
        })
    }

    pub(crate) fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked between two whole-Arc
        // assignments; the value inside is still a complete set.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The periodic refresh: on failure the last good set stays.
    pub(crate) async fn refresh(&self) {
        match self.fetcher.fetch().await {
            Ok(set) => self.replace(set),
            Err(reason) => tracing::warn!(
                jwks = %self.fetcher.name(),
                "refreshing the issuer's keys failed; keeping the last good set: {reason}"
            ),
        }
    }

    /// A token names `kid`, which the current set lacks: re-read the set, unless that
    /// was done less than `min_refetch_interval` ago. Returns the set to look in.
    pub(crate) async fn refetch_for(&self, kid: &str) -> Arc<KeySet> {
        let mut last = self.last_refetch.lock().await;
        // Another request may have fetched the key while we waited for the lock.
        let current = self.current();
        if current.contains_kid(kid) {
            return current;
        }
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.policy.min_refetch_interval) {
            return current;
        }
        *last = Some(now);
        match self.fetcher.fetch().await {
            Ok(set) => {
                tracing::info!(jwks = %self.fetcher.name(), kid = %shown(kid), "re-read the issuer's keys for an unknown key id");
                self.replace(set);
            }
            Err(reason) => tracing::warn!(
                jwks = %self.fetcher.name(),
                "re-reading the issuer's keys failed; keeping the last good set: {reason}"
            ),
        }
        self.current()
    }
}

/// An error with its causes: reqwest's own message is only the outermost one.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
