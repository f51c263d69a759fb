//! The verifier against hand-built tokens: each test is one claim of the crate docs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use palisade_authn::{AuthError, JwksSource, OidcSettings, RefreshPolicy, Verifier};
use serde_json::{json, Value};

fn settings(jwks: JwksSource) -> OidcSettings {
    let mut s = OidcSettings::new(ISSUER, AUDIENCE, jwks);
    s.groups_claim = Some("groups".into());
    s
}

/// A verifier reading `keys` from a file (kept alive by the returned directory).
async fn file_verifier(keys: &[Value]) -> (Verifier, tempfile::TempDir) {
    file_verifier_with(keys, |_| {}).await
}

async fn file_verifier_with(
    keys: &[Value],
    tweak: impl FnOnce(&mut OidcSettings),
) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    let mut s = settings(JwksSource::File(path));
    tweak(&mut s);
    (Verifier::new(s).await.unwrap(), dir)
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[tokio::test]
async fn valid_token_names_operator_from_email_with_groups() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let id = v
        .verify(&token(&key, Some("k1"), &claims()), NOW)
        .await
        .unwrap();
    assert_eq!(id.operator, "alice@example.com");
    assert_eq!(id.subject, "00u1a2b3c4");
    assert_eq!(id.issuer, ISSUER);
    assert_eq!(id.groups, vec!["sre", "oncall"]);
    assert_eq!(id.expires_at, NOW + 3600);
    assert!(id.operator_id().is_ok());
}

#[tokio::test]
async fn identity_can_come_from_sub_and_groups_are_optional() {
    let key = TestKey::ed();
    let (v, _dir) = file_verifier_with(&[key.jwk("k1")], |s| {
        s.identity_claim = "sub".into();
        s.groups_claim = None;
    })
    .await;
    let claims = with(claims(), "sub", json!("svc-deployer"));
    let id = v
        .verify(&token(&key, Some("k1"), &claims), NOW)
        .await
        .unwrap();
    assert_eq!(id.operator, "svc-deployer");
    assert!(id.groups.is_empty());
}

#[tokio::test]
async fn expired_token_is_refused_after_the_skew() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let t = token(&key, Some("k1"), &with(claims(), "exp", json!(NOW - 30)));
    // Within the default 60 s of skew: still good.
    assert!(v.verify(&t, NOW).await.is_ok());
    let err = v.verify(&t, NOW + 30).await.unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
    let no_exp = token(&key, Some("k1"), &without(claims(), "exp"));
    let err = v.verify(&no_exp, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::MissingClaim { ref claim } if claim == "exp"),
        "{err}"
    );
}

#[tokio::test]
async fn token_from_the_future_is_refused() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let nbf = token(&key, Some("k1"), &with(claims(), "nbf", json!(NOW + 61)));
    let err = v.verify(&nbf, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::NotYetValid { claim: "nbf", .. }),
        "{err}"
    );
    let iat = token(&key, Some("k1"), &with(claims(), "iat", json!(NOW + 3000)));
    let err = v.verify(&iat, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::NotYetValid { claim: "iat", .. }),
        "{err}"
    );
    // Inside the skew it is a clock difference, not a forgery.
    let near = token(&key, Some("k1"), &with(claims(), "nbf", json!(NOW + 59)));
    assert!(v.verify(&near, NOW).await.is_ok());
}

#[tokio::test]
async fn subject_must_be_1_to_255_bytes() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    for sub in [String::new(), "s".repeat(256)] {
        let t = token(&key, Some("k1"), &with(claims(), "sub", json!(sub)));
        let err = v.verify(&t, NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::BadClaim { ref claim, .. } if claim == "sub"),
            "{} bytes: {err}",
            sub.len()
        );
        assert!(err.to_string().contains("sub"), "{err}");
    }
    let longest = token(
        &key,
        Some("k1"),
        &with(claims(), "sub", json!("s".repeat(255))),
    );
    assert_eq!(
        v.verify(&longest, NOW).await.unwrap().subject,
        "s".repeat(255)
    );
}

#[tokio::test]
async fn fractional_expiry_is_read_and_absurd_expiry_refused() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    // RFC 7519 §2 allows fractional seconds; they are rounded down.
    let soon = token(
        &key,
        Some("k1"),
        &with(claims(), "exp", json!(NOW as f64 + 3600.5)),
    );
    assert_eq!(v.verify(&soon, NOW).await.unwrap().expires_at, NOW + 3600);
    let past = token(
        &key,
        Some("k1"),
        &with(claims(), "exp", json!(NOW as f64 - 3600.5)),
    );
    let err = v.verify(&past, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
    // A date beyond any clock must not saturate into "never expires".
    for exp in [1e300, -1e300, 1e15 + 0.5] {
        let t = token(&key, Some("k1"), &with(claims(), "exp", json!(exp)));
        let err = v.verify(&t, NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::BadClaim { ref claim, .. } if claim == "exp"),
            "{exp}: {err}"
        );
    }
}

#[tokio::test]
async fn wrong_audience_is_refused_as_string_and_as_array() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    for aud in [json!("grafana"), json!(["grafana", "vault"]), json!([])] {
        let t = token(&key, Some("k1"), &with(claims(), "aud", aud.clone()));
        let err = v.verify(&t, NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::WrongAudience { .. }),
            "{aud}: {err}"
        );
    }
    let ours = token(
        &key,
        Some("k1"),
        &with(claims(), "aud", json!(["grafana", AUDIENCE])),
    );
    assert!(v.verify(&ours, NOW).await.is_ok());
    let missing = token(&key, Some("k1"), &without(claims(), "aud"));
    assert!(v.verify(&missing, NOW).await.is_err());
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    for iss in [
        json!("https://evil.example.com"),
        json!(format!("{ISSUER}/")),
        json!([ISSUER]),
    ] {
        let t = token(&key, Some("k1"), &with(claims(), "iss", iss.clone()));
        let err = v.verify(&t, NOW).await.unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::WrongIssuer { .. } | AuthError::BadClaim { .. }
            ),
            "{iss}: {err}"
        );
    }
}

#[tokio::test]
async fn unsigned_token_with_alg_none_is_refused() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    for alg in ["none", "None", "NONE"] {
        let input = signing_input(&json!({"alg": alg, "kid": "k1"}), &claims());
        for t in [format!("{input}."), format!("{input}.{}", b64(b"sig"))] {
            let err = v.verify(&t, NOW).await.unwrap_err();
            assert!(
                matches!(err, AuthError::AlgorithmNotAllowed { .. }),
                "{alg}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_as_secret_is_refused() {
    use aws_lc_rs::hmac;
    let key = TestKey::rsa();
    let jwk = key.jwk("k1");
    let (v, _dir) = file_verifier(std::slice::from_ref(&jwk)).await;
    let der = key.public_der();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    let secrets: [Vec<u8>; 3] = [der, pem.into_bytes(), jwk.to_string().into_bytes()];
    for secret in secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            let input = signing_input(&json!({"alg": alg, "kid": "k1"}), &claims());
            let mac = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            let t = format!("{input}.{}", b64(mac.as_ref()));
            let err = v.verify(&t, NOW).await.unwrap_err();
            assert!(
                matches!(err, AuthError::AlgorithmNotAllowed { .. }),
                "{alg}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn header_algorithm_other_than_the_keys_is_refused() {
    let rsa = TestKey::rsa();
    let ec = TestKey::ec();
    let (v, _dir) = file_verifier(&[rsa.jwk("rsa"), ec.jwk("ec")]).await;
    // An ES256 signature presented under the RSA key's id, and the reverse.
    let t = token(&ec, Some("rsa"), &claims());
    let err = v.verify(&t, NOW).await.unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::AlgorithmMismatch {
                key_alg: "RS256",
                ..
            }
        ),
        "{err}"
    );
    let t = token(&rsa, Some("ec"), &claims());
    let err = v.verify(&t, NOW).await.unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::AlgorithmMismatch {
                key_alg: "ES256",
                ..
            }
        ),
        "{err}"
    );
}

/// A key id may name one key per algorithm (an issuer rotating from RSA to EC under one
/// id): the token's header picks among them. A second key with the same id *and*
/// algorithm is skipped: the first stays the one that verifies.
#[tokio::test]
async fn one_kid_may_name_one_key_per_algorithm() {
    let rsa = TestKey::rsa();
    let ec = TestKey::ec();
    let second_rsa = TestKey::rsa();
    let (v, _dir) = file_verifier(&[rsa.jwk("k1"), ec.jwk("k1"), second_rsa.jwk("k1")]).await;
    for key in [&rsa, &ec] {
        let id = v
            .verify(&token(key, Some("k1"), &claims()), NOW)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.alg()));
        assert_eq!(id.operator, "alice@example.com");
    }
    let err = v
        .verify(&token(&second_rsa, Some("k1"), &claims()), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::BadSignature), "{err}");
}

#[tokio::test]
async fn changed_payload_breaks_the_signature() {
    let key = TestKey::rsa();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let good = token(&key, Some("k1"), &claims());
    let sig = good.rsplit('.').next().unwrap();
    let forged_claims = with(claims(), "email", json!("root@example.com"));
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let forged = format!("{}.{sig}", signing_input(&header, &forged_claims));
    let err = v.verify(&forged, NOW).await.unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    // Another key of the same type, claiming the issuer's kid.
    let other = TestKey::rsa();
    let err = v
        .verify(&token(&other, Some("k1"), &claims()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let err = v
        .verify(&token(&key, Some("k9"), &claims()), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey { .. }), "{err}");
}

#[tokio::test]
async fn kid_is_required_only_when_the_issuer_has_several_keys() {
    let a = TestKey::ec();
    let b = TestKey::ec();
    let (one, _d1) = file_verifier(&[a.jwk("a")]).await;
    assert!(one.verify(&token(&a, None, &claims()), NOW).await.is_ok());
    let (two, _d2) = file_verifier(&[a.jwk("a"), b.jwk("b")]).await;
    let err = two
        .verify(&token(&a, None, &claims()), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::MissingKeyId { keys: 2 });
}

#[tokio::test]
async fn jwks_file_with_rsa_ec_and_ed25519_keys_verifies_each() {
    let keys = [TestKey::rsa(), TestKey::ec(), TestKey::ed()];
    let jwks: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.jwk(&format!("k{i}")))
        .collect();
    // Keys Palisade does not use are skipped, not fatal: encryption, HMAC, other curves.
    let mut all = jwks.clone();
    all.push(json!({"kty": "oct", "kid": "h", "k": b64(b"secret")}));
    all.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    all.push(json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}));
    let (v, _dir) = file_verifier(&all).await;
    for (i, key) in keys.iter().enumerate() {
        let id = v
            .verify(&token(key, Some(&format!("k{i}")), &claims()), NOW)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.alg()));
        assert_eq!(id.operator, "alice@example.com");
    }
    // The skipped HMAC key cannot be used for anything.
    let input = signing_input(&json!({"alg": "HS256", "kid": "h"}), &claims());
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"secret"),
        input.as_bytes(),
    );
    let err = v
        .verify(&format!("{input}.{}", b64(mac.as_ref())), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::AlgorithmNotAllowed { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn verifier_fails_closed_without_usable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let missing = settings(JwksSource::File(dir.path().join("absent.json")));
    let err = Verifier::new(missing).await.unwrap_err();
    assert!(matches!(err, AuthError::JwksUnavailable { .. }), "{err}");
    assert!(err.is_unavailable());

    let path = dir.path().join("weak.json");
    let weak_rsa = json!({"kty": "RSA", "kid": "small", "n": b64(&[0xc5; 128]), "e": "AQAB"});
    let ed = TestKey::ed();
    let mut with_private = ed.jwk("priv");
    with_private["d"] = json!(b64(&[1; 32]));
    for keys in [
        vec![],
        vec![json!({"kty": "oct", "k": "c2VjcmV0"})],
        vec![weak_rsa],
        vec![with_private],
    ] {
        std::fs::write(&path, jwks(&keys)).unwrap();
        let err = Verifier::new(settings(JwksSource::File(path.clone())))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::JwksUnavailable { .. }),
            "{keys:?}: {err}"
        );
    }
    std::fs::write(&path, "not json").unwrap();
    assert!(Verifier::new(settings(JwksSource::File(path.clone())))
        .await
        .is_err());

    let server = JwksServer::start(String::new()).await;
    server.set(500, "oops".into());
    let err = Verifier::new(settings(JwksSource::Url {
        url: server.url.clone(),
        ca: None,
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, AuthError::JwksUnavailable { .. }), "{err}");
}

/// Each key of the set is checked when it is read: `key_ops` must include `verify`,
/// a `kid` is 1 to 256 bytes, an RSA modulus 2048 to 8192 bits. A set whose only key
/// fails one of these has no usable key, and the verifier does not start.
#[tokio::test]
async fn keys_are_checked_one_by_one_when_the_set_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let load = |keys: Vec<Value>| {
        std::fs::write(&path, jwks(&keys)).unwrap();
        Verifier::new(settings(JwksSource::File(path.clone())))
    };
    let ec = TestKey::ec();
    let with_ops = |ops: Value| {
        let mut k = ec.jwk("ops");
        k["key_ops"] = ops;
        k
    };
    let rsa_of = |first: u8| {
        let mut n = vec![first];
        n.extend_from_slice(&[0x5b; 255]);
        json!({"kty": "RSA", "kid": "rsa", "n": b64(&n), "e": "AQAB"})
    };
    let rsa_with_e = |e: &[u8]| {
        let mut key = rsa_of(0xc5);
        key["e"] = json!(b64(e));
        key
    };
    for (what, key) in [
        ("key_ops without verify", with_ops(json!(["encrypt"]))),
        ("an empty kid", ec.jwk("")),
        ("a kid of 257 bytes", ec.jwk(&"k".repeat(257))),
        ("an RSA modulus of 2047 bits", rsa_of(0x7f)),
        ("an empty RSA exponent", rsa_with_e(&[])),
        ("an even RSA exponent", rsa_with_e(&[2])),
        ("an RSA exponent of 5 bytes", rsa_with_e(&[1, 0, 0, 0, 1])),
    ] {
        let err = load(vec![key]).await.unwrap_err();
        assert!(
            matches!(err, AuthError::JwksUnavailable { .. }),
            "{what}: {err}"
        );
    }
    for (what, key) in [
        ("key_ops with verify", with_ops(json!(["sign", "verify"]))),
        ("a kid of 256 bytes", ec.jwk(&"k".repeat(256))),
        ("an RSA modulus of 2048 bits", rsa_of(0x80)),
        ("an RSA exponent of 4 bytes", rsa_with_e(&[1, 0, 0, 1])),
    ] {
        if let Err(e) = load(vec![key]).await {
            panic!("{what}: {e}");
        }
    }
    // The key with `verify` among its operations verifies.
    let v = load(vec![with_ops(json!(["verify"]))]).await.unwrap();
    v.verify(&token(&ec, Some("ops"), &claims()), NOW)
        .await
        .unwrap();

    // A set is read only up to 1 MiB (here padded with trailing white space).
    const MAX: usize = 1024 * 1024;
    let text = jwks(&[ec.jwk("k")]);
    let padded = |len: usize| format!("{text}{}", " ".repeat(len - text.len()));
    std::fs::write(&path, padded(MAX)).unwrap();
    Verifier::new(settings(JwksSource::File(path.clone())))
        .await
        .unwrap();
    std::fs::write(&path, padded(MAX + 1)).unwrap();
    let err = Verifier::new(settings(JwksSource::File(path.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::JwksUnavailable { .. }), "{err}");
    // The same bound over HTTP, where the body arrives in several chunks.
    let server = JwksServer::start(padded(MAX)).await;
    let by_url = || {
        settings(JwksSource::Url {
            url: server.url.clone(),
            ca: None,
        })
    };
    Verifier::new(by_url()).await.unwrap();
    server.set(200, padded(MAX + 1));
    let err = Verifier::new(by_url()).await.unwrap_err();
    assert!(matches!(err, AuthError::JwksUnavailable { .. }), "{err}");
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_retired_keys_refused() {
    let old = TestKey::ec();
    let new = TestKey::ed();
    let server = JwksServer::start(jwks(&[old.jwk("old")])).await;
    let policy = RefreshPolicy {
        refresh_every: Duration::from_secs(3600),
        min_refetch_interval: Duration::ZERO,
    };
    let v = Verifier::with_refresh_policy(
        settings(JwksSource::Url {
            url: server.url.clone(),
            ca: None,
        }),
        policy,
    )
    .await
    .unwrap();
    assert_eq!(server.hits(), 1);
    let old_token = token(&old, Some("old"), &claims());
    assert!(v.verify(&old_token, NOW).await.is_ok());

    // The issuer rotates: the new key replaces the old one.
    server.set(200, jwks(&[new.jwk("new")]));
    let id = v
        .verify(&token(&new, Some("new"), &claims()), NOW)
        .await
        .unwrap();
    assert_eq!(id.operator, "alice@example.com");
    assert_eq!(
        server.hits(),
        2,
        "the unknown kid made the verifier re-read the set"
    );
    let err = v.verify(&old_token, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey { .. }), "{err}");
}

#[tokio::test]
async fn unknown_kids_re_read_the_set_at_most_once_per_interval() {
    let k1 = TestKey::ec();
    let k2 = TestKey::ec();
    let server = JwksServer::start(jwks(&[k1.jwk("k1")])).await;
    let v = Verifier::new(settings(JwksSource::Url {
        url: server.url.clone(),
        ca: None,
    }))
    .await
    .unwrap();
    assert_eq!(server.hits(), 1);
    let t2 = token(&k2, Some("k2"), &claims());
    let err = v.verify(&t2, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey { .. }), "{err}");
    assert_eq!(server.hits(), 2);
    // Published now, but within 30 s of the last re-read: no new fetch, still unknown.
    server.set(200, jwks(&[k1.jwk("k1"), k2.jwk("k2")]));
    for kid in ["k2", "k3", "k4"] {
        let err = v
            .verify(&token(&k2, Some(kid), &claims()), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::UnknownKey { .. }), "{err}");
    }
    assert_eq!(server.hits(), 2, "forged kids cannot hammer the issuer");
    assert!(v
        .verify(&token(&k1, Some("k1"), &claims()), NOW)
        .await
        .is_ok());
}

#[tokio::test]
async fn periodic_refresh_keeps_the_last_good_set_when_the_issuer_fails() {
    let k1 = TestKey::ec();
    let k2 = TestKey::ec();
    let server = JwksServer::start(jwks(&[k1.jwk("k1")])).await;
    let policy = RefreshPolicy {
        refresh_every: Duration::from_millis(100),
        min_refetch_interval: Duration::from_secs(3600),
    };
    let v = Verifier::with_refresh_policy(
        settings(JwksSource::Url {
            url: server.url.clone(),
            ca: None,
        }),
        policy,
    )
    .await
    .unwrap();
    server.set(503, "down".into());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(server.hits() >= 2, "refreshed {} times", server.hits());
    assert!(v
        .verify(&token(&k1, Some("k1"), &claims()), NOW)
        .await
        .is_ok());

    server.set(200, jwks(&[k2.jwk("k2")]));
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Only the periodic refresh can have loaded k2 (re-reads are held off for 1 h).
    assert!(v
        .verify(&token(&k2, Some("k2"), &claims()), NOW)
        .await
        .is_ok());
    drop(v);
    // A refresh already under way when the verifier went may still reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(server.hits(), hits, "the refresh stops with the verifier");
}

#[tokio::test]
async fn oversize_token_is_refused_before_decoding() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let big = with(claims(), "padding", json!("x".repeat(16 * 1024)));
    let t = token(&key, Some("k1"), &big);
    let err = v.verify(&t, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::TooLarge { max: 16384, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn identity_that_is_not_an_operator_name_is_refused_clearly() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let t = token(
        &key,
        Some("k1"),
        &with(claims(), "email", json!("Alice Smith")),
    );
    let err = v.verify(&t, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::BadIdentity { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"Alice Smith\"") && msg.contains("' '"),
        "{msg}"
    );

    let t = token(&key, Some("k1"), &without(claims(), "email"));
    let err = v.verify(&t, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::MissingClaim { ref claim } if claim == "email"),
        "{err}"
    );

    let t = token(
        &key,
        Some("k1"),
        &with(claims(), "email_verified", json!(false)),
    );
    assert_eq!(
        v.verify(&t, NOW).await.unwrap_err(),
        AuthError::EmailNotVerified
    );
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_echoing_them() {
    let key = TestKey::ec();
    let (v, _dir) = file_verifier(&[key.jwk("k1")]).await;
    let good = token(&key, Some("k1"), &claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let sig = parts.pop().unwrap().to_owned();
    let payload = parts.pop().unwrap().to_owned();
    let cases = [
        String::new(),
        "abc".to_owned(),
        format!("{good}.extra"),
        format!("!!!.{payload}.{sig}"),
        format!("{}.{payload}.{sig}", b64(b"[1,2]")),
        format!(
            "{}.{payload}.{sig}",
            b64(br#"{"alg":"ES256","crit":["exp"]}"#)
        ),
        format!(
            "{}.{}.{sig}",
            b64(br#"{"alg":"ES256","kid":"k1"}"#),
            b64(b"[]")
        ),
    ];
    for t in cases {
        let err = v.verify(&t, NOW).await.unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains(&sig) && !msg.contains(&payload), "{msg}");
        assert!(
            matches!(err, AuthError::Malformed { .. } | AuthError::BadSignature),
            "{t:?}: {err}"
        );
    }
}
