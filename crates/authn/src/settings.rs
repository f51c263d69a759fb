//! Which issuer the gateway trusts, and how it reads the issuer's keys.
//!
//! In the gateway's TOML configuration:
//!
//! ```toml
//! [oidc]
//! issuer = "https://login.example.com"
//! audience = "palisade"
//! jwks_url = "https://login.example.com/.well-known/jwks.json"
//! jwks_ca = "/etc/palisade/idp-ca.pem"   # optional: a private CA; default the system's roots
//! # or, instead of jwks_url: jwks_file = "/etc/palisade/idp-jwks.json"
//! clock_skew_secs = 60                    # optional, at most 300
//! identity_claim = "email"                # optional: "email", "sub", "preferred_username", …
//! groups_claim = "groups"                 # optional
//! ```

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The largest clock skew a configuration may allow, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// The clock skew allowed when the configuration says nothing.
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;

/// The OIDC issuer whose tokens the gateway accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawOidcSettings", into = "RawOidcSettings")]
pub struct OidcSettings {
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// Must be the token's `aud`, or one of its members.
    pub audience: String,
    pub jwks: JwksSource,
    /// Tolerance for `exp`, `nbf` and `iat`; at most [`MAX_CLOCK_SKEW_SECS`].
    pub clock_skew_secs: u64,
    /// The claim that names the operator, e.g. `email`, `sub`, `preferred_username`.
    pub identity_claim: String,
    /// The claim listing the operator's groups, e.g. `groups`; none if unset.
    pub groups_claim: Option<String>,
}

/// Where the issuer's public keys (a JWK Set, RFC 7517 §5) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local file; re-read on rotation like a URL is re-fetched.
    File(PathBuf),
    /// `https://` (verified against `ca` if given, else the system's trust store);
    /// plain `http://` only to a loopback IP address (tests, a local issuer).
    Url { url: String, ca: Option<PathBuf> },
}

impl OidcSettings {
    /// Settings with the defaults for everything but the issuer, audience and keys.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        OidcSettings {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks,
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
            identity_claim: default_identity_claim(),
            groups_claim: None,
        }
    }

    /// Refuses settings that cannot be used safely.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.issuer.trim().is_empty() {
            return Err(AuthError::settings("issuer must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(AuthError::settings("audience must not be empty"));
        }
        if self.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return Err(AuthError::settings(format!(
                "clock_skew_secs is {}; the limit is {MAX_CLOCK_SKEW_SECS}",
                self.clock_skew_secs
            )));
        }
        check_claim_name("identity_claim", &self.identity_claim)?;
        if let Some(groups) = &self.groups_claim {
            check_claim_name("groups_claim", groups)?;
        }
        match &self.jwks {
            JwksSource::File(path) => {
                if path.as_os_str().is_empty() {
                    return Err(AuthError::settings("jwks_file must not be empty"));
                }
            }
            JwksSource::Url { url, .. } => {
                check_jwks_url(url)?;
            }
        }
        Ok(())
    }

    /// The file paths in these settings, named as in the TOML, so that a process
    /// configuration can resolve them relative to its own file.
    pub fn paths_mut(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        match &mut self.jwks {
            JwksSource::File(path) => vec![("oidc.jwks_file", path)],
            JwksSource::Url { ca: Some(ca), .. } => vec![("oidc.jwks_ca", ca)],
            JwksSource::Url { ca: None, .. } => Vec::new(),
        }
    }
}

fn check_claim_name(field: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::settings(format!(
            "{field} {name:?} is not a claim name (1 to 64 ASCII letters, digits, '_', '-', '.', ':', '/')"
        )))
    }
}

/// A JWKS URL must be `https://`, or `http://` to a loopback IP literal (a name like
/// `localhost` could resolve elsewhere); no credentials, no fragment.
pub(crate) fn check_jwks_url(url: &str) -> Result<reqwest::Url, AuthError> {
    let bad = |reason: &str| AuthError::settings(format!("jwks_url {url:?}: {reason}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("it must not carry a #fragment"));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback_ip(&parsed) => Ok(parsed),
        "http" => Err(bad(
            "use https:// (plain http is only accepted for a loopback IP address such as 127.0.0.1)",
        )),
        other => Err(bad(&format!("scheme {other:?} is not https"))),
    }
}

fn is_loopback_ip(url: &reqwest::Url) -> bool {
    // The url crate has already normalised the host: IPv4 in dotted form, IPv6 in
    // brackets. A name never parses as an address.
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

fn default_identity_claim() -> String {
    "email".to_owned()
}

fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECS
}

/// The TOML form: the key source flattened into `jwks_file` / `jwks_url` + `jwks_ca`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawOidcSettings {
    issuer: String,
    audience: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwks_ca: Option<PathBuf>,
    #[serde(default = "default_clock_skew")]
    clock_skew_secs: u64,
    #[serde(default = "default_identity_claim")]
    identity_claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups_claim: Option<String>,
}

impl TryFrom<RawOidcSettings> for OidcSettings {
    type Error = String;

    fn try_from(raw: RawOidcSettings) -> Result<Self, String> {
        let jwks = match (raw.jwks_file, raw.jwks_url, raw.jwks_ca) {
            (Some(file), None, None) => JwksSource::File(file),
            (None, Some(url), ca) => JwksSource::Url { url, ca },
            (Some(_), None, Some(_)) => {
                return Err("jwks_ca only applies to jwks_url, not to jwks_file".to_owned())
            }
            (Some(_), Some(_), _) => {
                return Err("set one of jwks_file and jwks_url, not both".to_owned())
            }
            (None, None, _) => {
                return Err("the issuer's keys are needed: set jwks_url (or jwks_file)".to_owned())
            }
        };
        let settings = OidcSettings {
            issuer: raw.issuer,
            audience: raw.audience,
            jwks,
            clock_skew_secs: raw.clock_skew_secs,
            identity_claim: raw.identity_claim,
            groups_claim: raw.groups_claim,
        };
        settings.validate().map_err(|e| match e {
            AuthError::Settings { reason } => reason,
            other => other.to_string(),
        })?;
        Ok(settings)
    }
}

impl From<OidcSettings> for RawOidcSettings {
    fn from(s: OidcSettings) -> Self {
        let (jwks_file, jwks_url, jwks_ca) = match s.jwks {
            JwksSource::File(file) => (Some(file), None, None),
            JwksSource::Url { url, ca } => (None, Some(url), ca),
        };
        RawOidcSettings {
            issuer: s.issuer,
            audience: s.audience,
            jwks_file,
            jwks_url,
            jwks_ca,
            clock_skew_secs: s.clock_skew_secs,
            identity_claim: s.identity_claim,
            groups_claim: s.groups_claim,
        }
    }
}
