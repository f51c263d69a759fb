//! Claim C5: no operator can obtain the plaintext key-encryption key. A KEK made by
//! `palisade kms keygen --backend pkcs11` cannot be read, wrapped out or copied into
//! an extractable key through PKCS#11, and the plugin refuses to use a key that could.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

#[path = "../../crates/kms/tests/support/mod.rs"]
mod support;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use palisade_kms::kek::KekError;
use palisade_kms::pkcs11::{Pkcs11Kek, Token};
use palisade_kms::server::{open_keys, BackendConfig, ServeError};
use support::*;

fn session(token_label: &str) -> (Pkcs11, Session) {
    let ctx = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token_label)
        .expect("token");
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(USER_PIN.to_string())))
        .unwrap();
    (ctx, session)
}

fn find(session: &Session, label: &str) -> ObjectHandle {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    found[0]
}

#[test]
fn kek_cannot_be_read_wrapped_or_copied_out_of_the_hsm() {
    let _guard = pkcs11_lock_blocking();
    let hsm = SoftHsm::new("c5-export");
    Token::new(hsm.token_config())
        .generate_key("customer-kek")
        .unwrap();

    let (ctx, s) = session("c5-export");
    let kek = find(&s, "customer-kek");

    // Its attributes say it never was and never can be exported.
    let attrs = s
        .get_attributes(
            kek,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    for a in &attrs {
        match a {
            Attribute::Sensitive(b) => assert!(*b, "CKA_SENSITIVE"),
            Attribute::Extractable(b) => assert!(!*b, "CKA_EXTRACTABLE"),
            Attribute::AlwaysSensitive(b) => assert!(*b, "CKA_ALWAYS_SENSITIVE"),
            Attribute::NeverExtractable(b) => assert!(*b, "CKA_NEVER_EXTRACTABLE"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(attrs.len(), 4);

    // C_GetAttributeValue(CKA_VALUE) fails or returns no value.
    match s.get_attributes(kek, &[AttributeType::Value]) {
        Err(_) => {}
        Ok(v) => assert!(
            v.iter()
                .all(|a| !matches!(a, Attribute::Value(bytes) if !bytes.is_empty())),
            "CKA_VALUE of the KEK was readable"
        ),
    }

    // C_WrapKey with another (wrap-capable, extractable) key fails.
    let wrapper = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        )
        .unwrap();
    assert!(
        s.wrap_key(&Mechanism::AesKeyWrap, wrapper, kek).is_err(),
        "C_WrapKey exported the KEK"
    );
    assert!(
        s.wrap_key(&Mechanism::AesKeyWrapPad, wrapper, kek).is_err(),
        "C_WrapKey (padded) exported the KEK"
    );

    // A copy that would be extractable or readable is refused, and so is flipping the
    // attributes in place.
    assert!(
        s.copy_object(kek, &[Attribute::Extractable(true)]).is_err(),
        "C_CopyObject made an extractable copy"
    );
    assert!(
        s.copy_object(kek, &[Attribute::Sensitive(false)]).is_err(),
        "C_CopyObject made a non-sensitive copy"
    );
    assert!(
        s.update_attributes(kek, &[Attribute::Extractable(true)])
            .is_err(),
        "CKA_EXTRACTABLE was set to true"
    );
    assert!(
        s.update_attributes(kek, &[Attribute::Sensitive(false)])
            .is_err(),
        "CKA_SENSITIVE was set to false"
    );
    drop(s);
    ctx.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_refuses_keys_that_could_leave_the_hsm() {
    let _guard = pkcs11_lock().await;
    let hsm = SoftHsm::new("c5-refuse");
    {
        let (ctx, s) = session("c5-refuse");
        let base = |label: &str| {
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ]
        };
        let mut extractable = base("extractable");
        extractable.extend([Attribute::Sensitive(true), Attribute::Extractable(true)]);
        s.generate_key(&Mechanism::AesKeyGen, &extractable).unwrap();
        let mut readable = base("readable");
        readable.extend([Attribute::Sensitive(false), Attribute::Extractable(false)]);
        s.generate_key(&Mechanism::AesKeyGen, &readable).unwrap();
        drop(s);
        ctx.finalize().unwrap();
    }
    let token = Token::new(hsm.token_config());
    for label in ["extractable", "readable"] {
        match Pkcs11Kek::open(token.clone(), label).await {
            Err(KekError::Refused(why)) => assert!(why.contains(label), "{why}"),
            Err(other) => panic!("{label}: refused for the wrong reason: {other}"),
            Ok(_) => panic!("the plugin accepted the {label} key"),
        }
        let err = open_keys(&BackendConfig::Pkcs11 {
            token: hsm.token_config(),
            key_labels: vec![label.to_string()],
        })
        .await
        .err()
        .expect("serve refuses to start");
        assert!(matches!(err, ServeError::Key { .. }), "{err}");
    }
}
