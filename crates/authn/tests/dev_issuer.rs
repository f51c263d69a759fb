//! The development issuer's tokens go through the same verifier as any issuer's.
#![allow(clippy::unwrap_used)]

use palisade_authn::{AuthError, DevIssuer, Verifier};

const ISSUER: &str = "https://127.0.0.1:7400/dev";
const NOW: i64 = 1_700_000_000;

#[tokio::test]
async fn dev_tokens_verify_against_the_published_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevIssuer::load_or_create(&dir.path().join("dev.key")).unwrap();
    let jwks = dir.path().join("dev-jwks.json");
    std::fs::write(&jwks, dev.jwks_json()).unwrap();
    let v = Verifier::new(DevIssuer::settings(ISSUER, "palisade", jwks))
        .await
        .unwrap();

    let groups = vec!["sre".to_owned()];
    let t = dev
        .issue(ISSUER, "palisade", "alice", &groups, 3600, NOW)
        .unwrap();
    let id = v.verify(&t, NOW + 10).await.unwrap();
    assert_eq!(id.operator, "alice");
    assert_eq!(id.groups, groups);
    assert_eq!(id.expires_at, NOW + 3600);

    let err = v.verify(&t, NOW + 3600 + 61).await.unwrap_err();
    assert!(matches!(err, AuthError::Expired { .. }), "{err}");
    let other = dev
        .issue(ISSUER, "grafana", "alice", &[], 3600, NOW)
        .unwrap();
    assert!(matches!(
        v.verify(&other, NOW).await.unwrap_err(),
        AuthError::WrongAudience { .. }
    ));

    // Another development key (another `palisade up`) is not this issuer.
    let stranger = DevIssuer::create(&dir.path().join("other.key")).unwrap();
    let forged = stranger
        .issue(ISSUER, "palisade", "alice", &[], 3600, NOW)
        .unwrap();
    assert!(matches!(
        v.verify(&forged, NOW).await.unwrap_err(),
        AuthError::UnknownKey { .. }
    ));
}
