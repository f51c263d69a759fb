//! Operator authentication for Palisade's gateway (docs/architecture.md, the pipeline, step 1,
//! "Authenticate"): an OIDC ID or access token in, an [`Identity`] out.
//!
//! [`Verifier`] checks a compact JWT against the issuer's published keys (a JWK Set
//! read from a file or an `https://` URL) and then its claims against
//! [`OidcSettings`] and the caller's clock.
//!
//! What it refuses:
//! - tokens over 16 KiB, before decoding anything;
//! - every algorithm but RS256, ES256 and EdDSA — `none` and HMAC above all;
//! - algorithm confusion: the algorithm comes from the key (`kty`, `crv`, `alg`), and
//!   a header naming another is refused; symmetric JWKs are never loaded, and keys
//!   are never taken from the token (`jwk`, `jku`, `x5u`, `x5c` are ignored);
//! - a missing `kid` when the issuer has several keys; an unknown `kid` after
//!   re-reading the set (at most every 30 s);
//! - wrong `iss` (exact match), wrong `aud` (string or array), missing or past `exp`,
//!   `nbf`/`iat` in the future — each with at most `clock_skew_secs` (≤ 300) of slack;
//! - an identity claim that is not a Palisade operator name (`a-z 0-9 . _ @ -`, at most
//!   64, lower-cased from ASCII only), or an `email` the issuer marks unverified.
//!
//! What it does not do: revocation (a token is good until `exp`; keep issuer
//! lifetimes short), replay protection (bearer tokens are replayable within their
//! life: TLS is what keeps them secret), OIDC discovery (`jwks_url` is configured
//! directly), or checking `azp`/`nonce` (those concern the client that logged in,
//! not the API that is called).
//!
//! The key set is re-read every 10 minutes in the background; a failed read keeps the
//! last good set, and only a verifier that never loaded one fails (it cannot be built).
//!
//! [`DevIssuer`] is the development issuer of `palisade up`: it signs tokens for any
//! name, so it must never be enabled on a real deployment.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))] // Tests may unwrap; library code may not.

mod claims;
mod dev;
mod error;
mod identity;
mod jwks;
mod settings;
mod token;
mod verifier;

pub use dev::{DevIssuer, MAX_DEV_TTL_SECS};
pub use error::AuthError;
pub use identity::{operator_name, Identity, MAX_GROUPS, MAX_OPERATOR_LEN};
pub use jwks::RefreshPolicy;
pub use settings::{JwksSource, OidcSettings, DEFAULT_CLOCK_SKEW_SECS, MAX_CLOCK_SKEW_SECS};
pub use token::MAX_TOKEN_BYTES;
pub use verifier::Verifier;
