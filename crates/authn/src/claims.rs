//! The registered claims of a signed token (RFC 7519 §4.1, OIDC Core §2), checked
//! against the settings and the caller's clock, in this order: `iss`, `aud`, `exp`,
//! `nbf`, `iat`, `sub`, then the identity and groups claims.

use serde_json::{Map, Value};

use crate::error::{shown, AuthError};
use crate::identity::{groups, operator_name, Identity};
use crate::settings::OidcSettings;
use crate::token::SignedClaims;

pub(crate) fn check(
    signed: SignedClaims,
    settings: &OidcSettings,
    now: i64,
) -> Result<Identity, AuthError> {
    let claims = signed.0;
    let skew = settings.clock_skew_secs;
    let skew_i = i64::try_from(skew).unwrap_or(i64::MAX);

    // iss: one string, byte for byte.
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == settings.issuer => {}
        Some(Value::String(iss)) => {
            return Err(AuthError::WrongIssuer {
                found: shown(iss),
                expected: shown(&settings.issuer),
            })
        }
        Some(_) => return Err(AuthError::bad_claim("iss", "it must be a string")),
        None => {
            return Err(AuthError::MissingClaim {
                claim: "iss".into(),
            })
        }
    }

    // aud: a string, or an array of strings containing ours.
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| AuthError::bad_claim("aud", "its members must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AuthError::bad_claim(
                "aud",
                "it must be a string or an array of strings",
            ))
        }
        None => {
            return Err(AuthError::MissingClaim {
                claim: "aud".into(),
            })
        }
    };
    if !audiences.contains(&settings.audience.as_str()) {
        let found = if audiences.is_empty() {
            "(none)".to_owned()
        } else {
            audiences
                .iter()
                .take(4)
                .map(|a| shown(a))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(AuthError::WrongAudience {
            found,
            expected: shown(&settings.audience),
        });
    }

    // exp: required; the token is good strictly before exp (+ skew).
    let exp = numeric_date(&claims, "exp")?.ok_or(AuthError::MissingClaim {
        claim: "exp".into(),
    })?;
    if now >= exp.saturating_add(skew_i) {
        return Err(AuthError::Expired {
            expired_at: exp,
            now,
            skew_secs: skew,
        });
    }
    // nbf, iat: optional; neither may lie in the future beyond the skew.
    for claim in ["nbf", "iat"] {
        if let Some(t) = numeric_date(&claims, claim)? {
            if t > now.saturating_add(skew_i) {
                return Err(AuthError::NotYetValid {
                    claim,
                    valid_from: t,
                    now,
                    skew_secs: skew,
                });
            }
        }
    }

    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => s.clone(),
        Some(_) => {
            return Err(AuthError::bad_claim(
                "sub",
                "it must be a string of 1 to 255 bytes",
            ))
        }
        None => {
            return Err(AuthError::MissingClaim {
                claim: "sub".into(),
            })
        }
    };

    let id_claim = settings.identity_claim.as_str();
    let operator = match claims.get(id_claim) {
        Some(Value::String(v)) => operator_name(id_claim, v)?,
        Some(_) => return Err(AuthError::bad_claim(id_claim, "it must be a string")),
        None => {
            return Err(AuthError::MissingClaim {
                claim: id_claim.to_owned(),
            })
        }
    };
    // An address the issuer says it has not verified names nobody in particular.
    if id_claim == "email" && email_unverified(claims.get("email_verified")) {
        return Err(AuthError::EmailNotVerified);
    }

    let groups = match &settings.groups_claim {
        Some(claim) => groups(claim, claims.get(claim))?,
        None => Vec::new(),
    };

    Ok(Identity {
        operator,
        subject,
        issuer: settings.issuer.clone(),
        groups,
        expires_at: exp,
    })
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional.
fn numeric_date(claims: &Map<String, Value>, claim: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                // Whole seconds are enough; rounding down is on the strict side for
                // exp by at most one second and irrelevant for nbf/iat.
                Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                _ => Err(AuthError::bad_claim(
                    claim,
                    "it is not a usable NumericDate",
                )),
            }
        }
        Some(_) => Err(AuthError::bad_claim(
            claim,
            "it must be a number (seconds since the epoch)",
        )),
    }
}

/// `email_verified` explicitly false (some issuers send the string "false").
fn email_unverified(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(false)))
        || matches!(value, Some(Value::String(s)) if s.eq_ignore_ascii_case("false"))
}
