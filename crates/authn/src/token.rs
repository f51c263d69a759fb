//! A compact JWS (RFC 7515 §7.1) before and after its signature is checked.
//!
//! [`UnverifiedToken`] is what the bytes say about themselves: only the header is
//! read, and only to pick a key. [`SignedClaims`] exists only once a key of the issuer
//! has verified the signature over header and payload.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{shown, AuthError};
use crate::jwks::{KeyAlg, VerifyingKey};

/// Tokens larger than this are refused before anything is decoded. Real ID and
/// access tokens are a few KiB, even with many groups.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token whose header was read but whose signature is unchecked.
pub(crate) struct UnverifiedToken<'a> {
    raw: &'a str,
    pub(crate) alg: KeyAlg,
    pub(crate) kid: Option<String>,
}

/// The JOSE header members this crate reads; others are ignored (keys are never
/// taken from `jwk`, `jku`, `x5u` or `x5c`: only from the configured JWKS).
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl<'a> UnverifiedToken<'a> {
    pub(crate) fn parse(raw: &'a str) -> Result<Self, AuthError> {
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge {
                len: raw.len(),
                max: MAX_TOKEN_BYTES,
            });
        }
        let mut parts = raw.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::malformed(
                "a JWT has three base64url parts separated by '.'",
            ));
        };
        for (name, part) in [("header", header), ("payload", payload)] {
            if part.is_empty() || !is_base64url(part) {
                return Err(AuthError::malformed(format!("the {name} is not base64url")));
            }
        }
        if !is_base64url(signature) {
            return Err(AuthError::malformed("the signature is not base64url"));
        }
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::malformed("the header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|_| AuthError::malformed("the header is not a JSON object with an alg"))?;
        let Some(alg) = KeyAlg::from_header(&header.alg) else {
            // `none` lands here too: an unsigned token is never accepted.
            return Err(AuthError::AlgorithmNotAllowed {
                alg: shown(&header.alg),
            });
        };
        if header.crit.is_some() {
            return Err(AuthError::malformed(
                "the header has critical extensions (crit), which are not supported",
            ));
        }
        if signature.is_empty() {
            return Err(AuthError::malformed("the signature is empty"));
        }
        if let Some(kid) = &header.kid {
            if kid.is_empty() || kid.len() > 256 {
                return Err(AuthError::malformed("the kid must be 1 to 256 bytes"));
            }
        }
        Ok(UnverifiedToken {
            raw,
            alg,
            kid: header.kid,
        })
    }

    /// Checks the signature with `key`, which must be for the header's algorithm.
    pub(crate) fn verify(self, key: &VerifyingKey) -> Result<SignedClaims, AuthError> {
        if key.alg != self.alg {
            return Err(AuthError::AlgorithmMismatch {
                alg: self.alg.name().to_owned(),
                key_alg: key.alg.name(),
                kid: key.kid_shown(),
            });
        }
        // The key fixes the one algorithm allowed; the library checks the signature
        // only. Every claim is checked by `claims::check`, against the caller's clock.
        let mut validation = jsonwebtoken::Validation::new(key.alg.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Map<String, Value>>(self.raw, &key.key, &validation) {
            Ok(data) => Ok(SignedClaims(data.claims)),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => {
                    AuthError::malformed("the payload is not a base64url JSON object")
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    AuthError::AlgorithmMismatch {
                        alg: self.alg.name().to_owned(),
                        key_alg: key.alg.name(),
                        kid: key.kid_shown(),
                    }
                }
                _ => AuthError::BadSignature,
            }),
        }
    }
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The payload of a token whose signature a key of the issuer verified; its claims
/// are not checked yet.
pub(crate) struct SignedClaims(pub(crate) Map<String, Value>);
