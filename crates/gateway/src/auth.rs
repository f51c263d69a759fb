//! Step 1: who is calling. An OIDC token verified against the issuer's JWKS
//! (`palisade-authn`), the development issuer's token when `palisade up` enabled it,
//! or an operator certificate (mTLS, role `operator`) when `operator_certificates` is
//! on and it chains to `operator_ca` ([`crate::operator_certs`]).

use crate::operator_certs::{OperatorCas, OperatorCertError};
use crate::pipeline::{Credential, Operator};
use crate::problem::Problem;
use palisade_authn::{AuthError, DevIssuer, JwksSource, OidcSettings, Verifier};
use palisade_core::event::Authn;
use palisade_core::time::Timestamp;
use std::path::Path;

/// The audience of development tokens.
pub const DEV_AUDIENCE: &str = "palisade-gateway";

struct Dev {
    issuer: DevIssuer,
    verifier: Verifier,
    issuer_url: String,
    ttl_secs: u64,
}

pub struct Authenticators {
    oidc: Option<(Verifier, String)>,
    dev: Option<Dev>,
    /// `None`: operator certificates are not accepted (`operator_certificates` off).
    operator_cas: Option<OperatorCas>,
}

fn unauthenticated(detail: impl Into<String>) -> Problem {
    Problem::new(401, "not authenticated", detail)
}

impl Authenticators {
    /// `dev_issuer_url` is the gateway's own URL plus `/dev` (the `iss` of its
    /// development tokens).
    /// `operator_ca`: the bundle operator certificates must chain to, when
    /// certificate authentication for operators is on.
    pub async fn new(
        oidc: Option<OidcSettings>,
        dev: Option<(&Path, u64)>,
        dev_issuer_url: &str,
        state_dir: &Path,
        operator_ca: Option<&Path>,
    ) -> Result<Self, String> {
        let oidc = match oidc {
            Some(s) => {
                let issuer = s.issuer.clone();
                let v = Verifier::new(s).await.map_err(|e| format!("OIDC: {e}"))?;
                Some((v, issuer))
            }
            None => None,
        };
        let operator_cas = operator_ca.map(OperatorCas::load).transpose()?;
        let dev = match dev {
            Some((key, ttl_secs)) => {
                let issuer =
                    DevIssuer::load(key).map_err(|e| format!("development issuer: {e}"))?;
                let jwks = state_dir.join("dev-jwks.json");
                std::fs::write(&jwks, issuer.jwks_json())
                    .map_err(|e| format!("{}: {e}", jwks.display()))?;
                let verifier = Verifier::new(OidcSettings {
                    issuer: dev_issuer_url.to_string(),
                    audience: DEV_AUDIENCE.to_string(),
                    jwks: JwksSource::File(jwks),
                    clock_skew_secs: 60,
                    identity_claim: "sub".into(),
                    groups_claim: Some("groups".into()),
                })
                .await
                .map_err(|e| format!("development issuer: {e}"))?;
                tracing::warn!("the development issuer is enabled: anyone who can reach the gateway can log in as anyone. Never use it outside a demo.");
                Some(Dev {
                    issuer,
                    verifier,
                    issuer_url: dev_issuer_url.to_string(),
                    ttl_secs,
                })
            }
            None => None,
        };
        Ok(Self {
            oidc,
            dev,
            operator_cas,
        })
    }

    pub fn dev_enabled(&self) -> bool {
        self.dev.is_some()
    }

    /// A development token for `operator` (only when the development issuer is on).
    pub fn dev_login(&self, operator: &str, now: Timestamp) -> Result<(String, i64), Problem> {
        let dev = self.dev.as_ref().ok_or_else(|| {
            Problem::new(
                404,
                "not found",
                "the development issuer is not enabled on this gateway",
            )
        })?;
        let token = dev
            .issuer
            .issue(
                &dev.issuer_url,
                DEV_AUDIENCE,
                operator,
                &[],
                dev.ttl_secs,
                now.unix_seconds(),
            )
            .map_err(|e| Problem::new(422, "invalid request", e.to_string()))?;
        let expires = now.unix_seconds() + i64::try_from(dev.ttl_secs).unwrap_or(0);
        Ok((token, expires))
    }

    pub async fn authenticate(
        &self,
        cred: &Credential,
        now: Timestamp,
    ) -> Result<Operator, Problem> {
        match cred {
            Credential::None => Err(unauthenticated(
                "no credentials: send `Authorization: Bearer <token>` (palisade op login) or an operator certificate",
            )),
            Credential::Certificate(name, chain) => {
                let authn = match &self.operator_cas {
                    None => Err(OperatorCertError::Disabled),
                    Some(cas) => cas.check(chain),
                }
                .map_err(|e| unauthenticated(e.to_string()))?;
                Ok(Operator {
                    name: name.as_str().to_string(),
                    groups: Vec::new(),
                    via: "certificate",
                    authn,
                    service: None,
                })
            }
            Credential::Bearer(token) => {
                let now = now.unix_seconds();
                let mut first_error: Option<AuthError> = None;
                if let Some((v, issuer)) = &self.oidc {
                    match v.verify(token, now).await {
                        Ok(id) => {
                            return Ok(Operator {
                                name: id.operator,
                                groups: id.groups,
                                via: "oidc",
                                authn: Authn::Oidc {
                                    issuer: issuer.clone(),
                                },
                                service: None,
                            })
                        }
                        Err(e) => first_error = Some(e),
                    }
                }
                if let Some(dev) = &self.dev {
                    match dev.verifier.verify(token, now).await {
                        Ok(id) => {
                            return Ok(Operator {
                                name: id.operator,
                                groups: id.groups,
                                via: "dev",
                                authn: Authn::Oidc {
                                    issuer: dev.issuer_url.clone(),
                                },
                                service: None,
                            })
                        }
                        Err(e) => {
                            if first_error.is_none() || !matches!(e, AuthError::WrongIssuer { .. }) {
                                first_error = Some(e);
                            }
                        }
                    }
                }
                match first_error {
                    // The issuer's keys could not be read: not the caller's fault.
                    Some(e) if e.is_unavailable() => Err(Problem::new(
                        503,
                        "authentication unavailable",
                        format!("tokens cannot be checked right now: {e}"),
                    )),
                    Some(e) => Err(unauthenticated(format!("the token was refused: {e}"))),
                    None => Err(unauthenticated("no token issuer is configured")),
                }
            }
        }
    }
}
