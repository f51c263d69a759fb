//! The AWS KMS backend takes the standard AWS credential chain: here, a shared
//! profile (`AWS_PROFILE` in `AWS_SHARED_CREDENTIALS_FILE`), with no key in the
//! environment. Without any credentials it refuses, naming the chain. (A test binary
//! of its own: it sets the process environment.)

#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

mod support;

use palisade_kms::aws::{AwsConfig, AwsKek, AwsKms};
use support::*;

#[tokio::test]
async fn a_shared_profile_is_enough_and_no_credentials_is_refused_naming_the_chain() {
    let moto = Moto::start();
    let arn = moto.create_key();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[palisade-kms]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ] {
        std::env::remove_var(v);
    }
    // No instance metadata here: do not wait for it.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", dir.path().join("no-config"));
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);

    // No such profile: refused, naming where credentials are looked for.
    std::env::set_var("AWS_PROFILE", "nobody");
    let kms = AwsKms::new(AwsConfig::standard(
        AWS_REGION.into(),
        Some(moto.endpoint.clone()),
    ))
    .unwrap();
    let refused = AwsKek::open(kms, &arn)
        .await
        .err()
        .expect("no credentials, no key");
    assert!(
        refused.to_string().contains("standard AWS provider chain"),
        "{refused}"
    );

    // The profile: the key opens and wraps.
    std::env::set_var("AWS_PROFILE", "palisade-kms");
    let kms = AwsKms::new(AwsConfig::standard(
        AWS_REGION.into(),
        Some(moto.endpoint.clone()),
    ))
    .unwrap();
    let kek = AwsKek::open(kms, &arn).await.expect("the profile's keys");
    let wrapped = palisade_kms::kek::Kek::encrypt(&kek, b"a data key of 32 bytes, exactly!")
        .await
        .expect("encrypt");
    let key_id = palisade_kms::kek::Kek::key_id(&kek).clone();
    let back = palisade_kms::kek::Kek::decrypt(&kek, &key_id, &wrapped)
        .await
        .expect("decrypt");
    assert_eq!(back, b"a data key of 32 bytes, exactly!");
}
