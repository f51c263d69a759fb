//! The TOML shape of the OIDC settings, as the gateway's configuration embeds them.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use palisade_authn::{JwksSource, OidcSettings};

#[derive(serde::Deserialize)]
struct Gateway {
    oidc: OidcSettings,
}

fn parse(toml_text: &str) -> Result<OidcSettings, String> {
    toml::from_str::<Gateway>(toml_text)
        .map(|g| g.oidc)
        .map_err(|e| e.to_string())
}

#[test]
fn url_settings_read_well_in_toml() {
    let s = parse(
        r#"
        [oidc]
        issuer = "https://login.example.com"
        audience = "palisade"
        jwks_url = "https://login.example.com/.well-known/jwks.json"
        jwks_ca = "/etc/palisade/idp-ca.pem"
        clock_skew_secs = 30
        identity_claim = "preferred_username"
        groups_claim = "groups"
        "#,
    )
    .unwrap();
    assert_eq!(
        s.jwks,
        JwksSource::Url {
            url: "https://login.example.com/.well-known/jwks.json".into(),
            ca: Some(PathBuf::from("/etc/palisade/idp-ca.pem")),
        }
    );
    assert_eq!(s.clock_skew_secs, 30);
    assert_eq!(s.identity_claim, "preferred_username");
    assert_eq!(s.groups_claim.as_deref(), Some("groups"));
    // And back: what `palisade up` writes reads the same.
    let again: OidcSettings = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn file_settings_take_the_defaults() {
    let s = parse(
        r#"
        [oidc]
        issuer = "https://127.0.0.1:7400/dev"
        audience = "palisade"
        jwks_file = "dev-jwks.json"
        "#,
    )
    .unwrap();
    assert_eq!(s.jwks, JwksSource::File("dev-jwks.json".into()));
    assert_eq!(s.clock_skew_secs, 60);
    assert_eq!(s.identity_claim, "email");
    assert_eq!(s.groups_claim, None);
}

#[test]
fn doubtful_settings_are_refused_at_parse_time() {
    let base = "[oidc]\nissuer = \"https://i\"\naudience = \"a\"\n";
    for (extra, why) in [
        ("jwks_file = \"f\"\ntypo = 1\n", "unknown field"),
        ("", "jwks_url"),
        (
            "jwks_file = \"f\"\njwks_url = \"https://i/k\"\n",
            "not both",
        ),
        ("jwks_file = \"f\"\njwks_ca = \"ca.pem\"\n", "jwks_ca"),
        ("jwks_file = \"f\"\nclock_skew_secs = 301\n", "300"),
        ("jwks_url = \"http://idp.example.com/k\"\n", "https"),
        ("jwks_url = \"http://localhost:8080/k\"\n", "loopback IP"),
        ("jwks_url = \"https://user:pw@i/k\"\n", "credentials"),
        ("jwks_url = \"file:///etc/jwks\"\n", "not https"),
        ("jwks_file = \"f\"\nidentity_claim = \"\"\n", "claim name"),
    ] {
        let err = parse(&format!("{base}{extra}")).unwrap_err();
        assert!(err.contains(why), "{extra}: {err}");
    }
    // Plain http only to a loopback address, for tests and local issuers.
    for url in ["http://127.0.0.1:9000/jwks", "http://[::1]:9000/jwks"] {
        assert!(
            parse(&format!("{base}jwks_url = \"{url}\"\n")).is_ok(),
            "{url}"
        );
    }
}

#[test]
fn paths_can_be_resolved_by_the_embedding_config() {
    let mut s = OidcSettings::new("i", "a", JwksSource::File("rel.json".into()));
    for (name, path) in s.paths_mut() {
        assert_eq!(name, "oidc.jwks_file");
        *path = PathBuf::from("/etc/palisade").join(&path);
    }
    assert_eq!(s.jwks, JwksSource::File("/etc/palisade/rel.json".into()));
}
