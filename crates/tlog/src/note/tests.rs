use super::*;

/// The C2SP signed-note specification's vector.
const FOO_KEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const FOO_SIG: &str =
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=";
const FOO_TEXT: &str = "This is an example message.\n";

/// The golang.org/x/mod/sumdb/note documentation vector.
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n\
                          \n\
                          — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn foo_note() -> String {
    format!("{FOO_TEXT}\n— example.com/foo {FOO_SIG}\n")
}

fn key(name: &str, key_type: KeyType) -> SignerKey {
    SignerKey::generate(name, key_type).unwrap()
}

#[test]
fn protocols_vector_verifies() {
    let verifier = VerifierKey::parse(FOO_KEY).unwrap();
    assert_eq!(verifier.key_id(), 0x530d_903a);
    assert_eq!(verifier.key_type(), KeyType::Ed25519);
    assert_eq!(verifier.to_string(), FOO_KEY);
    let opened = open(foo_note().as_bytes(), &[verifier]).unwrap();
    assert_eq!(opened.text(), FOO_TEXT);
    assert_eq!(opened.verified().len(), 1);
    assert_eq!(opened.verified()[0].timestamp(), None);
    // One changed byte of text breaks it, and a known key that fails rejects.
    let tampered = foo_note().replace("example message", "example massage");
    assert_eq!(
        open(tampered.as_bytes(), &[VerifierKey::parse(FOO_KEY).unwrap()]).unwrap_err(),
        NoteError::BadSignature {
            name: "example.com/foo".into(),
            key_id: 0x530d_903a
        }
    );
}

#[test]
fn go_sumdb_note_vector_signs_and_verifies() {
    let signer = SignerKey::parse(PETER_SKEY).unwrap();
    assert_eq!(signer.to_private_text(), PETER_SKEY);
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);
    let mut note = Note::new(PETER_NOTE.split("\n\n").next().unwrap().to_owned() + "\n").unwrap();
    note.sign(&signer).unwrap();
    // Ed25519 is deterministic, so the bytes match exactly.
    assert_eq!(note.to_string(), PETER_NOTE);
    open(
        PETER_NOTE.as_bytes(),
        &[VerifierKey::parse(PETER_VKEY).unwrap()],
    )
    .unwrap();
    assert!(!format!("{signer:?}").contains("AYEKFAL"));
}

#[test]
fn generated_keys_round_trip_through_text() {
    for key_type in [KeyType::Ed25519, KeyType::Cosignature] {
        let signer = key("witness.example/w1", key_type);
        let again = SignerKey::parse(&signer.to_private_text()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        let verifier = VerifierKey::parse(&signer.verifier().to_string()).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert_eq!(
            verifier.key_id(),
            key_id("witness.example/w1", key_type, &verifier.public_key())
        );
    }
    // Different types give different ids for the same key material.
    let seed = [9u8; 32];
    let a = SignerKey::from_seed("n", KeyType::Ed25519, &seed).unwrap();
    let b = SignerKey::from_seed("n", KeyType::Cosignature, &seed).unwrap();
    assert_ne!(a.key_id(), b.key_id());
}

#[test]
fn bad_key_texts_are_rejected() {
    let good = VerifierKey::parse(FOO_KEY).unwrap();
    let material = FOO_KEY.rsplit('+').next().unwrap();
    let cases = [
        "example.com/foo",
        "example.com/foo+530d903a",
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
        "example.com/foo+530d903a+!!!",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ];
    for text in cases {
        assert!(VerifierKey::parse(text).is_err(), "{text}");
    }
    assert!(matches!(
        VerifierKey::parse(&format!("example.com/bar+530d903a+{material}")),
        Err(KeyError::WrongKeyId { .. })
    ));
    assert!(matches!(
        VerifierKey::parse(&format!("example com+530d903a+{material}")),
        Err(KeyError::BadName { .. })
    ));
    // Unsupported type byte 0x02 (ECDSA).
    let ecdsa = BASE64.encode([&[2u8][..], &good.public_key()].concat());
    assert!(matches!(
        VerifierKey::parse(&format!("example.com/foo+530d903a+{ecdsa}")),
        Err(KeyError::UnsupportedType { byte: 2, .. })
    ));
    assert!(SignerKey::parse(FOO_KEY).is_err());
    assert!(SignerKey::parse("PRIVATE+KEY+a+00000000+AQ==").is_err());
    for name in ["", "a b", "a+b", "a\u{a0}b", "a\tb", "a\u{2003}b"] {
        assert!(!is_valid_key_name(name), "{name:?}");
        assert!(SignerKey::generate(name, KeyType::Ed25519).is_err());
    }
}

#[test]
fn cosignatures_carry_their_timestamp() {
    let log = key("example.com/log", KeyType::Ed25519);
    let witness = key("witness.example/w1", KeyType::Cosignature);
    let mut note = Note::new("example.com/log\n1\nAAAA\n").unwrap();
    note.sign(&log).unwrap();
    note.cosign(&witness, 1_679_315_147).unwrap();
    let cosig = &note.signatures()[1];
    assert_eq!(cosig.signature().len(), 72);
    assert_eq!(&cosig.signature()[..8], &1_679_315_147u64.to_be_bytes());

    let opened = Note::parse(&note.to_bytes())
        .unwrap()
        .open(&[log.verifier(), witness.verifier()])
        .unwrap();
    let times: Vec<Option<u64>> = opened.verified().iter().map(|v| v.timestamp()).collect();
    assert_eq!(times, vec![None, Some(1_679_315_147)]);

    // Signing with the wrong kind of key is refused.
    assert!(matches!(
        note.sign(&witness),
        Err(NoteError::WrongKeyType { .. })
    ));
    assert!(matches!(
        note.cosign(&log, 1),
        Err(NoteError::WrongKeyType { .. })
    ));

    // A timestamp above 2^63 - 1 is invalid even with a valid signature over it.
    let mut bad = Note::new("x\n").unwrap();
    bad.cosign(&witness, 1 << 63).unwrap();
    assert!(matches!(
        bad.open(&[witness.verifier()]),
        Err(NoteError::BadSignature { .. })
    ));
    // The timestamp is signed: changing it breaks the signature.
    let mut moved = note.clone();
    let mut sig = moved.signatures()[1].clone();
    sig.signature[7] ^= 1;
    moved.add_signature(sig).unwrap();
    assert!(matches!(
        moved.open(&[witness.verifier()]),
        Err(NoteError::BadSignature { .. })
    ));
}

#[test]
fn unknown_keys_are_ignored_but_one_known_signature_is_required() {
    let a = key("a.example", KeyType::Ed25519);
    let b = key("b.example", KeyType::Ed25519);
    let mut note = Note::new("hello\n").unwrap();
    note.sign(&a).unwrap();
    note.sign(&b).unwrap();
    let opened = note.clone().open(&[b.verifier()]).unwrap();
    assert_eq!(opened.verified().len(), 1);
    assert_eq!(opened.verified()[0].key().name(), "b.example");
    assert!(matches!(
        note.clone()
            .open(&[key("c.example", KeyType::Ed25519).verifier()]),
        Err(NoteError::NoTrustedSignature { .. })
    ));
    // A key configured twice still works.
    assert!(note.clone().open(&[b.verifier(), b.verifier()]).is_ok());
    // Same name, different key (so a different id): ignored, not a failure.
    let impostor = key("b.example", KeyType::Ed25519);
    assert!(note
        .clone()
        .open(&[impostor.verifier(), a.verifier()])
        .is_ok());
}

#[test]
fn duplicated_signatures_count_once_and_are_all_checked() {
    let a = key("a.example", KeyType::Ed25519);
    let mut note = Note::new("hello\n").unwrap();
    note.sign(&a).unwrap();
    let line = note.signatures()[0].to_line();
    let doubled = format!("hello\n\n{line}{line}");
    let opened = open(doubled.as_bytes(), &[a.verifier()]).unwrap();
    assert_eq!(opened.verified().len(), 1);
    assert_eq!(opened.note().signatures().len(), 2);

    // A second, bad line from the same known key still rejects the note.
    let mut bad = note.signatures()[0].clone();
    bad.signature[0] ^= 1;
    let with_bad = format!("hello\n\n{line}{}", bad.to_line());
    assert!(matches!(
        open(with_bad.as_bytes(), &[a.verifier()]),
        Err(NoteError::BadSignature { .. })
    ));
}

#[test]
fn signature_count_is_bounded() {
    let a = key("a.example", KeyType::Ed25519);
    let mut note = Note::new("hello\n").unwrap();
    note.sign(&a).unwrap();
    let line = note.signatures()[0].to_line();
    // 16 lines must be accepted; more than MAX_SIGNATURES are refused unparsed.
    let sixteen = format!("hello\n\n{}", line.repeat(16));
    assert!(open(sixteen.as_bytes(), &[a.verifier()]).is_ok());
    let most = format!("hello\n\n{}", line.repeat(MAX_SIGNATURES));
    assert!(open(most.as_bytes(), &[a.verifier()]).is_ok());
    let too_many = format!("hello\n\n{}", line.repeat(MAX_SIGNATURES + 1));
    assert_eq!(
        Note::parse(too_many.as_bytes()).unwrap_err(),
        NoteError::TooManySignatures {
            count: MAX_SIGNATURES + 1
        }
    );
    let huge = vec![b'a'; MAX_NOTE_LEN + 1];
    assert_eq!(
        Note::parse(&huge).unwrap_err(),
        NoteError::TooLarge {
            len: MAX_NOTE_LEN + 1
        }
    );
}

#[test]
fn malformed_notes_are_rejected() {
    let good = foo_note();
    let sig_line = format!("— example.com/foo {FOO_SIG}");
    let cases: Vec<(Vec<u8>, NoteError)> = vec![
        (
            format!("{FOO_TEXT}{sig_line}\n").into_bytes(),
            NoteError::MissingBlankLine,
        ),
        (
            format!("{FOO_TEXT}\n").into_bytes(),
            NoteError::NoSignatures,
        ),
        (
            good.replace('\n', "\r\n").into_bytes(),
            NoteError::ControlCharacter {
                code: 13,
                offset: 27,
            },
        ),
        (
            format!("{FOO_TEXT}\n{sig_line}").into_bytes(),
            NoteError::BadSignatureLine {
                line: sig_line.clone(),
            },
        ),
        (
            [FOO_TEXT.as_bytes(), b"\xff\n\n", sig_line.as_bytes(), b"\n"].concat(),
            NoteError::NotUtf8,
        ),
        (
            good.replace("message.", "message.\t").into_bytes(),
            NoteError::ControlCharacter {
                code: 9,
                offset: 27,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            Note::parse(&bytes).unwrap_err(),
            want,
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let bad_lines = [
        format!("- example.com/foo {FOO_SIG}"),
        format!("—example.com/foo {FOO_SIG}"),
        format!("— example.com/foo  {FOO_SIG}"),
        format!("— example.com/foo {FOO_SIG} "),
        format!("— example.com/foo {}", FOO_SIG.trim_end_matches('=')),
        format!("— example.com/foo {}!", &FOO_SIG[..FOO_SIG.len() - 1]),
        "— example.com/foo AAAAAA==".to_owned(),
        format!("— {FOO_SIG}"),
        format!("— bad+name {FOO_SIG}"),
        format!("—  {FOO_SIG}"),
    ];
    for line in bad_lines {
        let bytes = format!("{FOO_TEXT}\n{line}\n");
        assert!(
            matches!(
                Note::parse(bytes.as_bytes()),
                Err(NoteError::BadSignatureLine { .. })
            ),
            "{line}"
        );
    }
    // Texts a signer refuses.
    assert_eq!(Note::new("no newline").unwrap_err(), NoteError::BadText);
    assert!(Note::new("bell\u{7}\n").is_err());
}

#[test]
fn the_last_blank_line_separates_text_from_signatures() {
    let a = key("a.example", KeyType::Ed25519);
    let mut note = Note::new("para one\n\npara two\n\n").unwrap();
    note.sign(&a).unwrap();
    let opened = open(&note.to_bytes(), &[a.verifier()]).unwrap();
    assert_eq!(opened.text(), "para one\n\npara two\n\n");
    // A note that is all text and no signatures after its last blank line fails.
    let trailing = format!("{}\n", String::from_utf8(note.to_bytes()).unwrap());
    assert_eq!(
        Note::parse(trailing.as_bytes()).unwrap_err(),
        NoteError::NoSignatures
    );
}
