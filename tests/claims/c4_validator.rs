//! Claim C4 (the administrative API's allowlist): the action validator refuses every
//! attack class of docs/threat-model.md, naming the parameter and the reason, and a policy
//! cannot widen what a built-in handler accepts.
//!
//! Table-driven: each row is one adversarial input and the exact refusal expected.
//! Run with `cargo test -p palisade-policy --test c4_validator`.

use palisade_core::event::ParamValue;
use palisade_policy::{Policy, ValidationError};

const DEFAULT_POLICY: &str = include_str!("../../deploy/policy/default.yaml");

fn policy() -> Policy {
    match Policy::parse_yaml(DEFAULT_POLICY) {
        Ok(p) => p,
        Err(errors) => panic!("default policy does not lint: {errors:#?}"),
    }
}

/// The reason of a refusal, without its details: what each table row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    TooLarge,
    NotUtf8,
    Malformed,
    NotAnObject,
    UnknownAction,
    Unknown,
    Duplicate,
    Missing,
    WrongType,
    NotAnInteger,
    Overflow,
    OutOfRange,
    TooLong,
    Control,
    NonAscii,
    Invisible,
    NotNfc,
    LeadingDash,
    Pattern,
    NotInEnum,
    BadDuration,
    DurationRange,
    NotABoolean,
    TooShortJustification,
}

fn reason_of(e: &ValidationError) -> Reason {
    use ValidationError as V;
    match e {
        V::TooLarge { .. } => Reason::TooLarge,
        V::NotUtf8 { .. } => Reason::NotUtf8,
        V::Malformed { .. } => Reason::Malformed,
        V::NotAnObject { .. } => Reason::NotAnObject,
        V::TooManyParameters { .. } => Reason::TooLarge,
        V::UnknownAction { .. } => Reason::UnknownAction,
        V::UnknownParameter { .. } => Reason::Unknown,
        V::DuplicateParameter { .. } => Reason::Duplicate,
        V::MissingParameter { .. } => Reason::Missing,
        V::WrongType { .. } => Reason::WrongType,
        V::NotAnInteger { .. } => Reason::NotAnInteger,
        V::IntegerOverflow { .. } => Reason::Overflow,
        V::OutOfRange { .. } => Reason::OutOfRange,
        V::TooLong { .. } => Reason::TooLong,
        V::ControlCharacter { .. } => Reason::Control,
        V::NonAscii { .. } => Reason::NonAscii,
        V::InvisibleCharacter { .. } => Reason::Invisible,
        V::NotNormalized { .. } => Reason::NotNfc,
        V::LeadingDash { .. } => Reason::LeadingDash,
        V::PatternMismatch { .. } => Reason::Pattern,
        V::NotInEnum { .. } => Reason::NotInEnum,
        V::BadDuration { .. } => Reason::BadDuration,
        V::DurationOutOfRange { .. } => Reason::DurationRange,
        V::NotABoolean { .. } => Reason::NotABoolean,
        V::ReasonTooShort { .. } => Reason::TooShortJustification,
    }
}

/// One table row: label, action, raw parameters, the parameter named, the reason.
type Row = (
    &'static str,
    &'static str,
    &'static [u8],
    Option<&'static str>,
    Reason,
);

/// A parameters object with one string member, JSON-escaped properly.
fn one(name: &str, value: &str) -> Vec<u8> {
    serde_json::json!({ name: value }).to_string().into_bytes()
}

/// Asserts a refusal with the expected reason, naming the expected parameter both in
/// the error's `param()` and in its message.
fn assert_refused(
    p: &Policy,
    label: &str,
    action: &str,
    params: &[u8],
    param: Option<&str>,
    want: Reason,
) {
    let err = match p.validate(action, params) {
        Ok(ok) => panic!(
            "{label}: accepted {:?} as {ok:?}",
            String::from_utf8_lossy(params)
        ),
        Err(e) => e,
    };
    assert_eq!(reason_of(&err), want, "{label}: wrong reason: {err}");
    assert_eq!(err.param(), param, "{label}: wrong parameter: {err}");
    let msg = err.to_string();
    if let Some(name) = param {
        assert!(
            msg.contains(&format!("{name:?}")),
            "{label}: message does not name {name}: {msg}"
        );
    }
    // Echoed values are bounded and escaped: no raw control characters reach a log line.
    assert!(
        msg.len() < 600,
        "{label}: message too long ({} bytes)",
        msg.len()
    );
    assert!(
        !msg.chars().any(|c| c.is_control()),
        "{label}: raw control character in {msg:?}"
    );
}

/// Rows of (label, value for `node` of kube.cordon, expected reason).
fn node_rows(p: &Policy, rows: &[(&str, &str, Reason)]) {
    for (label, value, want) in rows {
        assert_refused(
            p,
            label,
            "kube.cordon",
            &one("node", value),
            Some("node"),
            *want,
        );
        // The same value through the CLI path gets the same verdict.
        let args = [("node".to_string(), (*value).to_string())];
        let err = p.validate_args("kube.cordon", &args).expect_err(label);
        assert_eq!(reason_of(&err), *want, "{label} (cli): {err}");
    }
}

#[test]
fn validator_refuses_option_injection_in_node_name() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("single dash option", "-x", Reason::LeadingDash),
            ("long option", "--force", Reason::LeadingDash),
            ("bare dash", "-", Reason::LeadingDash),
            ("double dash", "--", Reason::LeadingDash),
            (
                "option with value",
                "--kubeconfig=/etc/kubernetes/admin.conf",
                Reason::LeadingDash,
            ),
            ("combined short options", "-rf", Reason::LeadingDash),
            ("negative-number look", "-1", Reason::LeadingDash),
            ("option after a space", "node --force", Reason::Pattern),
            ("option after a valid name", "worker-1 -x", Reason::Pattern),
        ],
    );
}

#[test]
fn validator_refuses_option_injection_in_version_and_component() {
    let p = policy();
    let rows: &[(&str, &[u8], &str, Reason)] = &[
        (
            "version as option",
            br#"{"component":"etcd","version":"--help"}"#,
            "version",
            Reason::LeadingDash,
        ),
        (
            "version dash prefix",
            br#"{"component":"etcd","version":"-v1.2.3"}"#,
            "version",
            Reason::LeadingDash,
        ),
        (
            "component as option",
            br#"{"component":"--all","version":"1.2.3"}"#,
            "component",
            Reason::LeadingDash,
        ),
    ];
    for (label, params, param, want) in rows {
        assert_refused(&p, label, "component.upgrade", params, Some(param), *want);
    }
}

#[test]
fn validator_refuses_shell_metacharacters() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("semicolon", "worker-1;reboot", Reason::Pattern),
            ("pipe", "worker-1|sh", Reason::Pattern),
            ("ampersand", "worker-1&", Reason::Pattern),
            ("and-and", "a&&b", Reason::Pattern),
            ("command substitution", "$(id)", Reason::Pattern),
            ("variable", "${IFS}", Reason::Pattern),
            ("dollar", "worker$1", Reason::Pattern),
            ("backticks", "`id`", Reason::Pattern),
            ("redirect out", "a>b", Reason::Pattern),
            ("redirect in", "a<b", Reason::Pattern),
            ("parentheses", "(a)", Reason::Pattern),
            ("space", "worker 1", Reason::Pattern),
            ("single quote", "a'b", Reason::Pattern),
            ("double quote", "a\"b", Reason::Pattern),
            ("backslash", "a\\b", Reason::Pattern),
            ("hash comment", "a#b", Reason::Pattern),
            ("newline", "worker-1\nreboot", Reason::Control),
            ("carriage return", "worker-1\rreboot", Reason::Control),
            ("tab", "worker-1\treboot", Reason::Control),
        ],
    );
    let upgrade = br#"{"component":"etcd","version":"1.2.3;curl x|sh"}"#;
    assert_refused(
        &p,
        "version metachar",
        "component.upgrade",
        upgrade,
        Some("version"),
        Reason::Pattern,
    );
}

#[test]
fn validator_refuses_globs_and_wildcards() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("star", "*", Reason::Pattern),
            ("prefix glob", "worker-*", Reason::Pattern),
            ("question mark", "worker-?", Reason::Pattern),
            ("bracket class", "worker-[0-9]", Reason::Pattern),
            ("brace expansion", "{a,b}", Reason::Pattern),
            ("tilde", "~", Reason::Pattern),
            ("label selector", "role=worker", Reason::Pattern),
            ("all", "--all", Reason::LeadingDash),
        ],
    );
    assert_refused(
        &p,
        "enum glob",
        "component.restart",
        &one("component", "*"),
        Some("component"),
        Reason::NotInEnum,
    );
    assert_refused(
        &p,
        "enum prefix glob",
        "component.restart",
        &one("component", "kube-*"),
        Some("component"),
        Reason::NotInEnum,
    );
}

#[test]
fn validator_refuses_path_traversal_and_paths() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("parent", "../etc", Reason::Pattern),
            ("dot dot", "..", Reason::Pattern),
            ("absolute", "/etc/passwd", Reason::Pattern),
            ("relative", "./x", Reason::Pattern),
            ("nested", "a/b", Reason::Pattern),
            ("encoded traversal", "%2e%2e%2f", Reason::Pattern),
            ("windows path", "C:\\x", Reason::Pattern),
            ("leading dot", ".hidden", Reason::Pattern),
            ("upper case", "Worker-1", Reason::Pattern),
        ],
    );
    let upgrade = br#"{"component":"etcd","version":"../../1.2.3"}"#;
    assert_refused(
        &p,
        "version traversal",
        "component.upgrade",
        upgrade,
        Some("version"),
        Reason::Pattern,
    );
}

#[test]
fn validator_refuses_control_characters_and_nul() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("nul alone", "\0", Reason::Control),
            ("nul inside", "worker\u{0}-1", Reason::Control),
            ("nul terminator", "worker-1\0", Reason::Control),
            ("escape sequence", "\u{1b}[31mworker", Reason::Control),
            ("delete", "worker\u{7f}", Reason::Control),
            ("bell", "worker\u{7}", Reason::Control),
            ("C1 next line", "worker\u{85}", Reason::Control),
            ("C1 CSI", "worker\u{9b}", Reason::Control),
            ("form feed", "worker\u{c}", Reason::Control),
            ("vertical tab", "worker\u{b}", Reason::Control),
        ],
    );
    // A raw (unescaped) control byte inside a JSON string is not JSON at all.
    assert_refused(
        &p,
        "raw nul byte",
        "kube.cordon",
        b"{\"node\":\"a\x00b\"}",
        None,
        Reason::Malformed,
    );
    assert_refused(
        &p,
        "raw newline",
        "kube.cordon",
        b"{\"node\":\"a\nb\"}",
        None,
        Reason::Malformed,
    );
    assert_refused(
        &p,
        "enum nul",
        "component.restart",
        &one("component", "etcd\0"),
        Some("component"),
        Reason::Control,
    );
    assert_refused(
        &p,
        "duration newline",
        "etcd.backup-prune",
        br#"{"keep_last":3,"older_than":"7d\n"}"#,
        Some("older_than"),
        Reason::Control,
    );
}

#[test]
fn validator_refuses_unicode_lookalikes_and_normalization_tricks() {
    let p = policy();
    node_rows(
        &p,
        &[
            ("cyrillic o", "w\u{43e}rker-1", Reason::NonAscii),
            ("cyrillic a", "m\u{430}ster", Reason::NonAscii),
            ("greek omicron", "w\u{3bf}rker", Reason::NonAscii),
            ("full-width letters", "\u{ff57}orker", Reason::NonAscii),
            ("full-width digit", "worker-\u{ff11}", Reason::NonAscii),
            ("combining acute", "worke\u{301}r", Reason::NonAscii),
            ("NFC e-acute", "caf\u{e9}", Reason::NonAscii),
            ("NFD e-acute", "cafe\u{301}", Reason::NonAscii),
            ("zero-width space", "worker\u{200b}-1", Reason::NonAscii),
            ("zero-width joiner", "worker\u{200d}", Reason::NonAscii),
            ("RTL override", "\u{202e}1-rekrow", Reason::NonAscii),
            ("byte order mark", "\u{feff}worker", Reason::NonAscii),
            ("non-breaking space", "worker\u{a0}1", Reason::NonAscii),
            ("line separator", "worker\u{2028}", Reason::NonAscii),
            ("dotless i", "\u{131}nstance", Reason::NonAscii),
            ("kelvin sign", "\u{212a}ube", Reason::NonAscii),
            ("fi ligature", "\u{fb01}le", Reason::NonAscii),
            ("en dash option", "\u{2013}force", Reason::NonAscii),
            ("full-width hyphen-minus", "\u{ff0d}x", Reason::NonAscii),
            ("tag characters", "worker\u{e0041}", Reason::NonAscii),
        ],
    );
    assert_refused(
        &p,
        "cyrillic e in enum",
        "component.restart",
        &one("component", "\u{435}tcd"),
        Some("component"),
        Reason::NonAscii,
    );
    assert_refused(
        &p,
        "full-width duration",
        "etcd.backup-prune",
        "{\"keep_last\":3,\"older_than\":\"\u{ff18}d\"}".as_bytes(),
        Some("older_than"),
        Reason::NonAscii,
    );
    // A look-alike parameter *name* is simply not a parameter.
    assert_refused(
        &p,
        "cyrillic key",
        "kube.cordon",
        &one("n\u{43e}de", "worker-1"),
        Some("n\u{43e}de"),
        Reason::Unknown,
    );
}

#[test]
fn justification_refuses_invisible_and_unnormalized_text() {
    let p = policy();
    let ok = p
        .check_justification(
            "kube.cordon",
            "INC-42",
            "Node worker-1 has a failing disk; cordon before replacement",
        )
        .expect("valid justification");
    assert_eq!(ok.ticket, "INC-42");
    // A reason is prose, never an argument: a leading dash is fine there.
    assert!(p
        .check_justification(
            "kube.cordon",
            "INC-42",
            "- disk failing on worker-1, see ticket"
        )
        .is_ok());
    // Prose may be in any language (NFC) ...
    assert!(p
        .check_justification("kube.cordon", "INC-42", "Le disque du nœud est défaillant")
        .is_ok());
    let rows: &[(&str, &str, &str, &str, Reason)] = &[
        (
            "ticket option",
            "-INC-1",
            "a long enough reason here",
            "justification.ticket",
            Reason::LeadingDash,
        ),
        (
            "ticket shell",
            "INC-1;id",
            "a long enough reason here",
            "justification.ticket",
            Reason::Pattern,
        ),
        (
            "ticket look-alike",
            "INC-\u{ff11}",
            "a long enough reason here",
            "justification.ticket",
            Reason::NonAscii,
        ),
        (
            "ticket oversize",
            &"A".repeat(65),
            "a long enough reason here",
            "justification.ticket",
            Reason::TooLong,
        ),
        (
            "reason RTL override",
            "INC-1",
            "disk failing \u{202e}gnilr",
            "justification.reason",
            Reason::Invisible,
        ),
        (
            "reason zero-width",
            "INC-1",
            "disk fail\u{200b}ing on worker",
            "justification.reason",
            Reason::Invisible,
        ),
        (
            "reason line separator",
            "INC-1",
            "disk failing\u{2028}status: resolved",
            "justification.reason",
            Reason::Invisible,
        ),
        (
            "reason paragraph separator",
            "INC-1",
            "disk failing\u{2029}status: resolved",
            "justification.reason",
            Reason::Invisible,
        ),
        (
            "reason NFD",
            "INC-1",
            "le disque du noeud est de\u{301}faillant",
            "justification.reason",
            Reason::NotNfc,
        ),
        (
            "reason newline",
            "INC-1",
            "disk failing\nrm -rf",
            "justification.reason",
            Reason::Control,
        ),
        (
            "reason too short",
            "INC-1",
            "disk",
            "justification.reason",
            Reason::TooShortJustification,
        ),
        (
            "reason oversize",
            "INC-1",
            &"x".repeat(1025),
            "justification.reason",
            Reason::TooLong,
        ),
    ];
    for (label, ticket, reason, param, want) in rows {
        let err = p
            .check_justification("kube.cordon", ticket, reason)
            .expect_err(label);
        assert_eq!(reason_of(&err), *want, "{label}: {err}");
        assert_eq!(err.param(), Some(*param), "{label}: {err}");
    }
}

#[test]
fn validator_refuses_oversize_input() {
    let p = policy();
    let big = format!("{{\"node\":\"{}\"}}", "a".repeat(20 * 1024));
    assert_refused(
        &p,
        "object over 16 KiB",
        "kube.cordon",
        big.as_bytes(),
        None,
        Reason::TooLarge,
    );
    let padded = format!("{{\"node\":\"w\"{}}}", " ".repeat(17 * 1024));
    assert_refused(
        &p,
        "whitespace padding over 16 KiB",
        "kube.cordon",
        padded.as_bytes(),
        None,
        Reason::TooLarge,
    );
    assert_refused(
        &p,
        "node 254 bytes",
        "kube.cordon",
        &one("node", &"a".repeat(254)),
        Some("node"),
        Reason::TooLong,
    );
    assert_refused(
        &p,
        "node 10000 bytes",
        "kube.cordon",
        &one("node", &"a".repeat(10_000)),
        Some("node"),
        Reason::TooLong,
    );
    let version = br#"{"component":"etcd","version":"1234.1234.1234.1234"}"#;
    assert_refused(
        &p,
        "version above policy maxLength 16",
        "component.upgrade",
        version,
        Some("version"),
        Reason::TooLong,
    );
    let many: String = (0..100)
        .map(|i| format!("\"p{i}\":1"))
        .collect::<Vec<_>>()
        .join(",");
    assert_refused(
        &p,
        "too many members",
        "kube.cordon",
        format!("{{{many}}}").as_bytes(),
        None,
        Reason::TooLarge,
    );
    let deep = format!("{{\"node\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    // Skipped without recursion (no stack to exhaust), then refused as the wrong type.
    assert_refused(
        &p,
        "deep nesting",
        "kube.cordon",
        deep.as_bytes(),
        Some("node"),
        Reason::WrongType,
    );
    let args: Vec<(String, String)> = vec![("node".into(), "a".repeat(17 * 1024))];
    let err = p
        .validate_args("kube.cordon", &args)
        .expect_err("cli oversize");
    assert_eq!(reason_of(&err), Reason::TooLarge, "{err}");
}

/// The CLI path bounds `name=value` pairs as the JSON path bounds the object: each
/// pair counts its name, its value and two bytes of separators.
#[test]
fn cli_arguments_are_bounded_in_total_size() {
    use palisade_policy::validate::{MAX_PARAMS_BYTES, MAX_PARAM_ENTRIES};
    let p = policy();
    let too_large = |args: &[(String, String)]| {
        matches!(
            p.validate_args("kube.cordon", args),
            Err(ValidationError::TooLarge { max, .. }) if max == MAX_PARAMS_BYTES
        )
    };
    // One byte over, as a value and as a name with an empty value.
    let over = MAX_PARAMS_BYTES + 1 - "node".len() - 2;
    assert!(too_large(&[("node".into(), "a".repeat(over))]));
    assert!(!too_large(&[("node".into(), "a".repeat(over - 1))]));
    assert!(too_large(&[(
        "n".repeat(MAX_PARAMS_BYTES - 1),
        String::new()
    )]));
    // Many short pairs: the separators count too, before their number does.
    let tiny: Vec<(String, String)> = (0..MAX_PARAMS_BYTES / 3 + 1)
        .map(|_| ("n".to_string(), String::new()))
        .collect();
    assert!(too_large(&tiny));
    // And their number is bounded on its own, before any name is looked at.
    let pairs = |n: usize| -> Vec<(String, String)> {
        (0..n).map(|_| ("node".into(), "a".into())).collect()
    };
    let count = MAX_PARAM_ENTRIES;
    assert_eq!(
        p.validate_args("kube.cordon", &pairs(count + 1)),
        Err(ValidationError::TooManyParameters { max: count })
    );
    assert!(matches!(
        p.validate_args("kube.cordon", &pairs(count)),
        Err(ValidationError::DuplicateParameter { .. })
    ));
}

#[test]
fn echoed_values_are_cut_at_64_characters_and_marked() {
    let p = policy();
    let value = format!("-{}", "a".repeat(100));
    let err = p
        .validate("kube.cordon", &one("node", &value))
        .expect_err("leading dash");
    let ValidationError::LeadingDash { value: shown, .. } = &err else {
        panic!("not refused for its leading dash: {err}");
    };
    assert_eq!(shown, &format!("{}\u{2026}", &value[..64]));
    assert!(!err.to_string().contains(&value), "{err}");
}

#[test]
fn validator_refuses_integer_overflow_floats_and_negatives() {
    let p = policy();
    let rows: &[(&str, &str, Reason)] = &[
        ("2^63", "9223372036854775808", Reason::Overflow),
        ("u64 max", "18446744073709551615", Reason::Overflow),
        ("2^64", "18446744073709551616", Reason::Overflow),
        ("-2^63-1", "-9223372036854775809", Reason::Overflow),
        ("huge", "1000000000000000000000000000000", Reason::Overflow),
        ("exponent", "1e3", Reason::NotAnInteger),
        ("float one", "1.0", Reason::NotAnInteger),
        ("fraction", "3.5", Reason::NotAnInteger),
        ("negative zero", "-0", Reason::NotAnInteger),
        ("upper exponent", "5E1", Reason::NotAnInteger),
        ("number as string", "\"5\"", Reason::WrongType),
        ("boolean for int", "true", Reason::WrongType),
        ("null for int", "null", Reason::WrongType),
        ("array for int", "[5]", Reason::WrongType),
        ("object for int", "{\"v\":5}", Reason::WrongType),
        ("negative", "-1", Reason::OutOfRange),
        ("zero", "0", Reason::OutOfRange),
        ("below policy min 3", "2", Reason::OutOfRange),
        ("above handler max", "1001", Reason::OutOfRange),
        ("i64 min", "-9223372036854775808", Reason::OutOfRange),
        ("i64 max", "9223372036854775807", Reason::OutOfRange),
        ("out-of-range float", "1e400", Reason::Malformed),
        ("hex", "0x10", Reason::Malformed),
        ("leading plus", "+5", Reason::Malformed),
        ("leading zero", "05", Reason::Malformed),
        ("NaN", "NaN", Reason::Malformed),
        ("Infinity", "Infinity", Reason::Malformed),
    ];
    for (label, json, want) in rows {
        let params = format!("{{\"keep_last\":{json}}}");
        let param = if *want == Reason::Malformed {
            None
        } else {
            Some("keep_last")
        };
        assert_refused(
            &p,
            label,
            "etcd.backup-prune",
            params.as_bytes(),
            param,
            *want,
        );
    }
    // CLI: "3" is an integer only because keep_last is one; other spellings are not.
    for (value, want) in [
        ("9223372036854775808", Reason::Overflow),
        ("1e3", Reason::NotAnInteger),
        ("1.0", Reason::NotAnInteger),
        ("+5", Reason::NotAnInteger),
        (" 5", Reason::NotAnInteger),
        ("", Reason::NotAnInteger),
        ("-1", Reason::OutOfRange),
        ("0x10", Reason::NotAnInteger),
    ] {
        let err = p
            .validate_args("etcd.backup-prune", &[("keep_last".into(), value.into())])
            .expect_err(value);
        assert_eq!(reason_of(&err), want, "{value:?}: {err}");
        assert_eq!(err.param(), Some("keep_last"), "{value:?}: {err}");
    }
}

#[test]
fn validator_refuses_bad_durations() {
    let p = policy();
    let rows: &[(&str, &str, Reason)] = &[
        ("below policy min", "\"1h\"", Reason::DurationRange),
        ("above handler max", "\"367d\"", Reason::DurationRange),
        ("negative", "\"-7d\"", Reason::LeadingDash),
        ("space", "\"7 d\"", Reason::BadDuration),
        ("weeks", "\"1w\"", Reason::BadDuration),
        ("compound", "\"7d12h\"", Reason::BadDuration),
        ("iso 8601", "\"P7D\"", Reason::BadDuration),
        ("fraction", "\"7.5d\"", Reason::BadDuration),
        ("injection", "\"7d;rm\"", Reason::BadDuration),
        ("bare number string", "\"604800\"", Reason::BadDuration),
        ("number", "604800", Reason::WrongType),
        (
            "oversize digits",
            "\"99999999999999999999s\"",
            Reason::TooLong,
        ),
        (
            "overflowing digits",
            "\"99999999999s\"",
            Reason::BadDuration,
        ),
    ];
    for (label, json, want) in rows {
        let params = format!("{{\"keep_last\":3,\"older_than\":{json}}}");
        assert_refused(
            &p,
            label,
            "etcd.backup-prune",
            params.as_bytes(),
            Some("older_than"),
            *want,
        );
    }
}

#[test]
fn validator_refuses_duplicated_json_keys() {
    let p = policy();
    let rows: &[(&str, &str, &[u8], &str)] = &[
        (
            "same value twice",
            "kube.cordon",
            br#"{"node":"worker-1","node":"worker-1"}"#,
            "node",
        ),
        (
            "last one would win",
            "kube.cordon",
            br#"{"node":"worker-1","node":"control-0"}"#,
            "node",
        ),
        (
            "escaped spelling",
            "kube.cordon",
            br#"{"node":"worker-1","no\u0064e":"worker-2"}"#,
            "node",
        ),
        (
            "integer twice",
            "etcd.backup-prune",
            br#"{"keep_last":3,"keep_last":1000}"#,
            "keep_last",
        ),
        (
            "enum twice",
            "component.restart",
            br#"{"component":"etcd","component":"kube-apiserver"}"#,
            "component",
        ),
        (
            "separated",
            "etcd.backup-prune",
            br#"{"keep_last":3,"older_than":"7d","keep_last":5}"#,
            "keep_last",
        ),
    ];
    for (label, action, params, param) in rows {
        assert_refused(&p, label, action, params, Some(param), Reason::Duplicate);
    }
    let args = [
        ("node".to_string(), "a".to_string()),
        ("node".to_string(), "b".to_string()),
    ];
    let err = p
        .validate_args("kube.cordon", &args)
        .expect_err("cli duplicate");
    assert_eq!(reason_of(&err), Reason::Duplicate, "{err}");
}

#[test]
fn validator_refuses_type_confusion() {
    let p = policy();
    let rows: &[Row] = &[
        (
            "array for string",
            "kube.cordon",
            br#"{"node":["worker-1"]}"#,
            Some("node"),
            Reason::WrongType,
        ),
        (
            "object for string",
            "kube.cordon",
            br#"{"node":{"name":"worker-1"}}"#,
            Some("node"),
            Reason::WrongType,
        ),
        (
            "null for string",
            "kube.cordon",
            br#"{"node":null}"#,
            Some("node"),
            Reason::WrongType,
        ),
        (
            "number for string",
            "kube.cordon",
            br#"{"node":1}"#,
            Some("node"),
            Reason::WrongType,
        ),
        (
            "boolean for string",
            "kube.cordon",
            br#"{"node":true}"#,
            Some("node"),
            Reason::WrongType,
        ),
        (
            "number for enum",
            "component.restart",
            br#"{"component":0}"#,
            Some("component"),
            Reason::WrongType,
        ),
        (
            "array for enum",
            "component.restart",
            br#"{"component":["etcd"]}"#,
            Some("component"),
            Reason::WrongType,
        ),
        (
            "string for boolean",
            "component.restart",
            br#"{"component":"etcd","wait_healthy":"true"}"#,
            Some("wait_healthy"),
            Reason::WrongType,
        ),
        (
            "number for boolean",
            "component.restart",
            br#"{"component":"etcd","wait_healthy":1}"#,
            Some("wait_healthy"),
            Reason::WrongType,
        ),
        (
            "null for boolean",
            "component.restart",
            br#"{"component":"etcd","wait_healthy":null}"#,
            Some("wait_healthy"),
            Reason::WrongType,
        ),
        (
            "array top level",
            "kube.cordon",
            br#"[{"node":"worker-1"}]"#,
            None,
            Reason::NotAnObject,
        ),
        (
            "string top level",
            "kube.cordon",
            br#""worker-1""#,
            None,
            Reason::NotAnObject,
        ),
        (
            "null top level",
            "kube.cordon",
            b"null",
            None,
            Reason::NotAnObject,
        ),
        (
            "number top level",
            "etcd.status",
            b"0",
            None,
            Reason::NotAnObject,
        ),
    ];
    for (label, action, params, param, want) in rows {
        assert_refused(&p, label, action, params, *param, *want);
    }
    for (value, want) in [
        ("yes", Reason::NotABoolean),
        ("1", Reason::NotABoolean),
        ("True", Reason::NotABoolean),
    ] {
        let args = [
            ("component".to_string(), "etcd".to_string()),
            ("wait_healthy".to_string(), value.to_string()),
        ];
        let err = p
            .validate_args("component.restart", &args)
            .expect_err(value);
        assert_eq!(reason_of(&err), want, "{value}: {err}");
        assert_eq!(err.param(), Some("wait_healthy"));
    }
}

#[test]
fn validator_refuses_unknown_missing_and_malformed() {
    let p = policy();
    let rows: &[Row] = &[
        (
            "missing required",
            "kube.cordon",
            b"{}",
            Some("node"),
            Reason::Missing,
        ),
        (
            "missing among others",
            "component.upgrade",
            br#"{"component":"etcd"}"#,
            Some("version"),
            Reason::Missing,
        ),
        (
            "extra flag",
            "kube.cordon",
            br#"{"node":"worker-1","force":true}"#,
            Some("force"),
            Reason::Unknown,
        ),
        (
            "case variant",
            "kube.cordon",
            br#"{"Node":"worker-1"}"#,
            Some("Node"),
            Reason::Unknown,
        ),
        (
            "trailing space in name",
            "kube.cordon",
            br#"{"node ":"worker-1"}"#,
            Some("node "),
            Reason::Unknown,
        ),
        (
            "prototype pollution",
            "kube.cordon",
            br#"{"node":"worker-1","__proto__":{}}"#,
            Some("__proto__"),
            Reason::Unknown,
        ),
        (
            "parameter on a read",
            "etcd.status",
            br#"{"endpoint":"http://evil"}"#,
            Some("endpoint"),
            Reason::Unknown,
        ),
        (
            "handler option smuggled",
            "etcd.defragment",
            br#"{"cluster":true}"#,
            Some("cluster"),
            Reason::Unknown,
        ),
        (
            "invalid utf-8",
            "kube.cordon",
            b"{\"node\":\"w\xffrker\"}",
            None,
            Reason::NotUtf8,
        ),
        (
            "overlong utf-8 slash",
            "kube.cordon",
            b"{\"node\":\"..\xc0\xafetc\"}",
            None,
            Reason::NotUtf8,
        ),
        (
            "utf-16 surrogate bytes",
            "kube.cordon",
            b"{\"node\":\"\xed\xa0\x80\"}",
            None,
            Reason::NotUtf8,
        ),
        (
            "lone surrogate escape",
            "kube.cordon",
            br#"{"node":"\ud800"}"#,
            None,
            Reason::Malformed,
        ),
        (
            "trailing garbage",
            "kube.cordon",
            br#"{"node":"worker-1"} x"#,
            None,
            Reason::Malformed,
        ),
        (
            "two objects",
            "kube.cordon",
            br#"{"node":"a"}{"node":"b"}"#,
            None,
            Reason::Malformed,
        ),
        (
            "trailing comma",
            "kube.cordon",
            br#"{"node":"worker-1",}"#,
            None,
            Reason::Malformed,
        ),
        (
            "comment",
            "kube.cordon",
            b"{\"node\":\"worker-1\" /* x */}",
            None,
            Reason::Malformed,
        ),
        (
            "single quotes",
            "kube.cordon",
            b"{'node':'worker-1'}",
            None,
            Reason::Malformed,
        ),
        ("empty body", "kube.cordon", b"", None, Reason::Malformed),
    ];
    for (label, action, params, param, want) in rows {
        assert_refused(&p, label, action, params, *param, *want);
    }
    for action in [
        "etcd.exec",
        "shell",
        "",
        "../etcd.status",
        "etcd.status;id",
        "ETCD.STATUS",
        "etcd.status\0",
        "\u{435}tcd.status",
    ] {
        assert_refused(&p, action, action, b"{}", None, Reason::UnknownAction);
    }
}

#[test]
fn validator_refuses_values_outside_enums() {
    let p = policy();
    for (label, value) in [
        ("not listed", "kube-proxy"),
        ("case", "ETCD"),
        ("trailing space", "etcd "),
        ("leading space", " etcd"),
        ("prefix", "etc"),
        ("suffix", "etcd2"),
        ("empty", ""),
        ("all", "all"),
    ] {
        assert_refused(
            &p,
            label,
            "component.restart",
            &one("component", value),
            Some("component"),
            Reason::NotInEnum,
        );
    }
}

#[test]
fn validator_accepts_well_formed_requests() {
    let p = policy();
    for node in [
        "worker-1",
        "a",
        "ip-10-0-0-1.eu-west-1.compute.internal",
        "0",
        &"a".repeat(253),
        "node.example",
    ] {
        let ok = p.validate("kube.cordon", &one("node", node)).expect(node);
        assert_eq!(ok.str_param("node"), Some(node));
        assert_eq!(ok.handler(), "kube.cordon");
        assert_eq!(ok.policy_digest(), p.digest());
    }
    for action in [
        "etcd.status",
        "etcd.members",
        "etcd.alarms",
        "etcd.health",
        "etcd.backups",
        "kube.nodes",
        "certs.expiry",
        "instance.resources",
    ] {
        let ok = p.validate(action, b"{}").expect(action);
        assert!(ok.params().is_empty());
        assert!(
            p.validate(action, b" { } \n").is_ok(),
            "{action} with whitespace"
        );
    }
    // JSON escapes of plain ASCII are just another spelling of the same value.
    let ok = p
        .validate("kube.cordon", br#"{"node":"w\u006frker-1"}"#)
        .expect("escaped");
    assert_eq!(ok.str_param("node"), Some("worker-1"));

    let ok = p
        .validate(
            "etcd.backup-prune",
            br#"{"keep_last":3,"older_than":"168h"}"#,
        )
        .expect("prune");
    assert_eq!(ok.int_param("keep_last"), Some(3));
    // Durations come out in their one canonical spelling.
    assert_eq!(
        ok.params().get("older_than"),
        Some(&ParamValue::Str("7d".into()))
    );
    assert_eq!(
        ok.duration_param("older_than").map(|d| d.as_secs()),
        Some(7 * 86_400)
    );
    assert!(p
        .validate(
            "etcd.backup-prune",
            br#"{"keep_last":1000,"older_than":"366d"}"#
        )
        .is_ok());
    assert!(p
        .validate("etcd.backup-prune", br#"{"keep_last":3}"#)
        .is_ok());

    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let ok = p
            .validate("component.restart", &one("component", component))
            .expect(component);
        assert_eq!(ok.str_param("component"), Some(component));
    }
    let ok = p
        .validate(
            "component.restart",
            br#"{"wait_healthy":true,"component":"etcd"}"#,
        )
        .expect("bool");
    assert_eq!(ok.bool_param("wait_healthy"), Some(true));
    for version in ["3.5.17", "v1.31.2", "0.0.0"] {
        let params = format!("{{\"component\":\"etcd\",\"version\":\"{version}\"}}");
        assert!(
            p.validate("component.upgrade", params.as_bytes()).is_ok(),
            "{version}"
        );
    }
    // The policy narrows the handler: the handler takes pre-releases, this policy not.
    let pre = br#"{"component":"etcd","version":"3.6.0-rc.1"}"#;
    assert_refused(
        &p,
        "pre-release",
        "component.upgrade",
        pre,
        Some("version"),
        Reason::Pattern,
    );

    // CLI pairs are typed by the spec.
    let args = [
        ("keep_last".to_string(), "3".to_string()),
        ("older_than".to_string(), "30d".to_string()),
    ];
    let ok = p.validate_args("etcd.backup-prune", &args).expect("cli");
    assert_eq!(ok.params().get("keep_last"), Some(&ParamValue::Int(3)));
    let ok = p
        .validate_args("kube.cordon", &[("node".to_string(), "3".to_string())])
        .expect("cli node");
    assert_eq!(ok.params().get("node"), Some(&ParamValue::Str("3".into())));
    let args = [
        ("component".to_string(), "etcd".to_string()),
        ("wait_healthy".to_string(), "false".to_string()),
    ];
    assert_eq!(
        p.validate_args("component.restart", &args)
            .expect("cli bool")
            .bool_param("wait_healthy"),
        Some(false)
    );
    let args = [
        ("component".to_string(), "etcd".to_string()),
        ("wait_healthy".to_string(), "true".to_string()),
    ];
    assert_eq!(
        p.validate_args("component.restart", &args)
            .expect("cli bool")
            .bool_param("wait_healthy"),
        Some(true)
    );
}

// ---------------------------------------------------------------------------------
// Policy merges and edits that widen a grant are lint errors.
// ---------------------------------------------------------------------------------

/// A one-action policy around the given action body (indented under `- `).
fn one_action(body: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1\nkind: ActionPolicy\nmetadata:\n  version: 1\nactions:\n{body}"
    )
}

const CORDON: &str = "  - name: kube.cordon
    description: Cordon a node.
    handler: kube.cordon
    target: cluster
    role: operator
    risk: mutate
    outputSchema: palisade.dev/output/kube-node/v1
    rateLimit: {max: 20, per: 1h}
    justification: {ticketPattern: \"[A-Z]+-[0-9]+\", minReasonLength: 10}
    params:
      node:
        type: string
        maxLength: 253
";

const PRUNE: &str = "  - name: etcd.backup-prune
    description: Prune backups.
    handler: etcd.backup-prune
    target: cluster
    role: senior-operator
    risk: disruptive
    outputSchema: palisade.dev/output/etcd-backup-prune/v1
    rateLimit: {max: 2, per: 1d}
    justification: {ticketPattern: \"[A-Z]+-[0-9]+\", minReasonLength: 10}
    params:
      keep_last: {type: integer, min: 3, max: 1000}
      older_than: {type: duration, required: false, min: 7d, max: 366d}
";

const RESTART: &str = "  - name: component.restart
    description: Restart a component.
    handler: component.restart
    target: instance
    role: senior-operator
    risk: disruptive
    outputSchema: palisade.dev/output/component-restart/v1
    rateLimit: {max: 2, per: 1h}
    justification: {ticketPattern: \"[A-Z]+-[0-9]+\", minReasonLength: 10}
    params:
      component: {type: enum, values: [etcd, kube-apiserver]}
";

/// Asserts that the policy text is refused with an error at `line` whose path ends
/// with `path` and whose message contains `want`.
fn assert_lint_refuses(label: &str, text: &str, line: usize, path: &str, want: &str) {
    let errors = match Policy::parse_yaml(text) {
        Ok(_) => panic!("{label}: policy accepted:\n{text}"),
        Err(e) => e,
    };
    let hit = errors.iter().any(|e| {
        e.line == line && e.column >= 1 && e.path.ends_with(path) && e.message.contains(want)
    });
    assert!(
        hit,
        "{label}: expected line {line}, path …{path}, message ~{want:?}; got:\n{errors:#?}"
    );
}

#[test]
fn lint_baselines_are_accepted() {
    for body in [CORDON, PRUNE, RESTART] {
        let text = one_action(body);
        if let Err(e) = Policy::parse_yaml(&text) {
            panic!("baseline refused: {e:#?}\n{text}");
        }
    }
}

#[test]
fn policy_cannot_widen_a_handler_grant() {
    // (label, policy text, line, path suffix, message fragment). Line 6 is the first
    // line of the action; `params:` of CORDON is line 15, `node:` line 16.
    let rows: Vec<(&str, String, usize, &str, &str)> = vec![
        (
            "maxLength above handler",
            one_action(&CORDON.replace("maxLength: 253", "maxLength: 254")),
            18,
            "params.node.maxLength",
            "widens",
        ),
        (
            "non-ASCII allowed",
            one_action(&CORDON.replace("maxLength: 253", "allowNonAscii: true")),
            18,
            "params.node.allowNonAscii",
            "widens",
        ),
        (
            "required made optional",
            one_action(&CORDON.replace("maxLength: 253", "required: false")),
            18,
            "params.node.required",
            "cannot be optional",
        ),
        (
            "extra parameter",
            one_action(&format!("{CORDON}      force: {{type: boolean}}\n")),
            19,
            "params.force",
            "cannot add parameters",
        ),
        (
            "type changed",
            one_action(&CORDON.replace("type: string\n        maxLength: 253", "type: integer")),
            17,
            "params.node.type",
            "not integer",
        ),
        (
            "target changed",
            one_action(&CORDON.replace("target: cluster", "target: instance")),
            9,
            "target",
            "runs on the cluster",
        ),
        (
            "risk lowered",
            one_action(&CORDON.replace("risk: mutate", "risk: read")),
            11,
            "risk",
            "lower than",
        ),
        (
            "output schema changed",
            one_action(&CORDON.replace("kube-node/v1", "kube-nodes/v1")),
            12,
            "outputSchema",
            "cannot be changed",
        ),
        (
            "unknown handler",
            one_action(&CORDON.replace("handler: kube.cordon", "handler: shell.exec")),
            8,
            "handler",
            "unknown handler",
        ),
        (
            "range above handler max",
            one_action(&PRUNE.replace("max: 1000}", "max: 1001}")),
            16,
            "params.keep_last.max",
            "widens",
        ),
        (
            "range below handler min",
            one_action(&PRUNE.replace("min: 3,", "min: 0,")),
            16,
            "params.keep_last.min",
            "widens",
        ),
        (
            "duration below handler min",
            one_action(&PRUNE.replace("min: 7d", "min: 1m")),
            17,
            "params.older_than.min",
            "widens",
        ),
        (
            "duration above handler max",
            one_action(&PRUNE.replace("max: 366d", "max: 3660d")),
            17,
            "params.older_than.max",
            "widens",
        ),
        (
            "enum value added",
            one_action(&RESTART.replace("kube-apiserver]", "kube-apiserver, kube-proxy]")),
            16,
            "params.component.values",
            "widens",
        ),
        (
            "enum on an integer",
            one_action(&PRUNE.replace(
                "{type: integer, min: 3, max: 1000}",
                "{type: enum, values: [\"3\"]}",
            )),
            16,
            "params.keep_last.type",
            "not enum",
        ),
        (
            "required parameter dropped",
            one_action(&CORDON.replace(
                "    params:\n      node:\n        type: string\n        maxLength: 253\n",
                "",
            )),
            6,
            "params",
            "needs parameter",
        ),
        (
            "enum on a string must fit the handler",
            one_action(&CORDON.replace(
                "type: string\n        maxLength: 253",
                "type: enum\n        values: [\"Worker-1\"]",
            )),
            18,
            "params.node.values",
            "widens",
        ),
    ];
    for (label, text, line, path, want) in &rows {
        assert_lint_refuses(label, text, *line, path, want);
    }
}

#[test]
fn policy_yaml_merges_anchors_and_duplicates_are_refused() {
    let rows: Vec<(&str, String, usize, &str, &str)> = vec![
        (
            "merge key widening a grant",
            one_action(&CORDON.replace(
                "      node:\n        type: string\n        maxLength: 253\n",
                "      node:\n        <<: {type: string, maxLength: 999}\n",
            )),
            17,
            "",
            "merge keys",
        ),
        (
            "anchor and alias",
            one_action(&format!(
                "{}{}",
                CORDON.replace(
                    "rateLimit: {max: 20, per: 1h}",
                    "rateLimit: &rl {max: 20, per: 1h}"
                ),
                "  - name: kube.uncordon\n    rateLimit: *rl\n"
            )),
            13,
            "",
            "anchors",
        ),
        (
            "duplicated YAML key keeps the wider value elsewhere",
            one_action(&CORDON.replace(
                "maxLength: 253\n",
                "maxLength: 10\n        maxLength: 253\n",
            )),
            19,
            "",
            "duplicated key",
        ),
        (
            "duplicated action field",
            one_action(&CORDON.replace("risk: mutate\n", "risk: disruptive\n    risk: mutate\n")),
            12,
            "",
            "duplicated key",
        ),
        (
            "duplicated action name",
            one_action(&format!("{CORDON}{CORDON}")),
            19,
            "actions[1].name",
            "already defined at line 6",
        ),
        (
            "tagged value",
            one_action(&CORDON.replace("maxLength: 253", "maxLength: !!int 253")),
            18,
            "",
            "tags",
        ),
        (
            "second document",
            format!("{}---\n{}", one_action(CORDON), one_action(CORDON)),
            19,
            "",
            "exactly one",
        ),
    ];
    for (label, text, line, path, want) in &rows {
        assert_lint_refuses(label, text, *line, path, want);
    }
}

#[test]
fn policy_patterns_are_checked_and_bounded() {
    let with_pattern = |p: &str| {
        one_action(&CORDON.replace(
            "maxLength: 253",
            &format!("maxLength: 253\n        pattern: '{p}'"),
        ))
    };
    let rows: Vec<(&str, String, &str)> = vec![
        ("unbalanced", with_pattern("worker-("), "invalid pattern"),
        ("anchor escape", with_pattern("a)|(?:.*"), "invalid pattern"),
        (
            "huge compiled size",
            with_pattern("(a{1000}){1000}"),
            "invalid pattern",
        ),
        (
            "huge repetition",
            with_pattern("[a-z]{100000}"),
            "invalid pattern",
        ),
        (
            "non-ASCII pattern",
            with_pattern("w\u{43e}rker-[0-9]+"),
            "printable ASCII",
        ),
        ("too long", with_pattern(&"a".repeat(1025)), "limit is 1024"),
    ];
    for (label, text, want) in &rows {
        assert_lint_refuses(label, text, 19, "params.node.pattern", want);
    }
    // A bad ticket pattern is refused too.
    let text = one_action(&CORDON.replace("\"[A-Z]+-[0-9]+\"", "\"(\""));
    assert_lint_refuses(
        "ticket pattern",
        &text,
        14,
        "justification.ticketPattern",
        "invalid pattern",
    );
}

#[test]
fn policy_pattern_applies_in_addition_to_the_handler_pattern() {
    // The policy pattern alone would allow anything; the handler's still applies.
    let text =
        one_action(&CORDON.replace("maxLength: 253", "maxLength: 253\n        pattern: '.*'"));
    let p = Policy::parse_yaml(&text).expect("a permissive pattern is not a widening");
    assert_refused(
        &p,
        "handler pattern still applies",
        "kube.cordon",
        &one("node", "a;b"),
        Some("node"),
        Reason::Pattern,
    );
    // A narrower pattern narrows.
    let text = one_action(&CORDON.replace(
        "maxLength: 253",
        "maxLength: 32\n        pattern: 'worker-[0-9]+'",
    ));
    let p = Policy::parse_yaml(&text).expect("narrow");
    assert!(p.validate("kube.cordon", &one("node", "worker-7")).is_ok());
    assert_refused(
        &p,
        "outside narrowed pattern",
        "kube.cordon",
        &one("node", "control-0"),
        Some("node"),
        Reason::Pattern,
    );
    assert_refused(
        &p,
        "above narrowed length",
        "kube.cordon",
        &one("node", &format!("worker-{}", "1".repeat(30))),
        Some("node"),
        Reason::TooLong,
    );
}

#[test]
fn policy_lint_refuses_unknown_fields_and_bad_scalars() {
    let rows: Vec<(&str, String, usize, &str, &str)> = vec![
        (
            "typo in a field",
            one_action(&CORDON.replace("maxLength: 253", "maxlength: 253")),
            18,
            "params.node.maxlength",
            "unknown field",
        ),
        (
            "unknown action field",
            one_action(&CORDON.replace("role: operator", "role: operator\n    sudo: true")),
            11,
            "sudo",
            "unknown field",
        ),
        (
            "quoted integer",
            one_action(&CORDON.replace("maxLength: 253", "maxLength: \"253\"")),
            18,
            "params.node.maxLength",
            "quoted string",
        ),
        (
            "hex integer",
            one_action(&CORDON.replace("maxLength: 253", "maxLength: 0xfd")),
            18,
            "params.node.maxLength",
            "decimal integer",
        ),
        (
            "yaml 1.1 boolean",
            one_action(&CORDON.replace("maxLength: 253", "required: yes")),
            18,
            "params.node.required",
            "true or false",
        ),
        (
            "bad role",
            one_action(&CORDON.replace("role: operator", "role: Operator;root")),
            10,
            "role",
            "not a role name",
        ),
        (
            "bad action name",
            one_action(&CORDON.replace("name: kube.cordon", "name: kube/cordon")),
            6,
            "name",
            "action name",
        ),
        (
            "zero rate limit",
            one_action(&CORDON.replace("max: 20", "max: 0")),
            13,
            "rateLimit.max",
            "outside 1..=10000",
        ),
        (
            "bad apiVersion",
            one_action(CORDON).replace("palisade.dev/v1", "palisade.dev/v2"),
            1,
            "apiVersion",
            "is not",
        ),
    ];
    for (label, text, line, path, want) in &rows {
        assert_lint_refuses(label, text, *line, path, want);
    }
}

#[test]
fn policy_digest_covers_meaning_not_spelling() {
    let a = Policy::parse_yaml(&one_action(CORDON)).expect("a");
    // Comments, flow style and key order do not change the digest ...
    let respelled = one_action(&CORDON.replace(
        "    params:\n      node:\n        type: string\n        maxLength: 253\n",
        "    # the node\n    params: {node: {maxLength: 253, type: string}}\n",
    ));
    let b = Policy::parse_yaml(&respelled).expect("b");
    assert_eq!(a.digest(), b.digest());
    // ... and a narrowing does.
    let c = Policy::parse_yaml(&one_action(
        &CORDON.replace("maxLength: 253", "maxLength: 63"),
    ))
    .expect("c");
    assert_ne!(a.digest(), c.digest());
    let d = Policy::parse_yaml(&one_action(CORDON).replace("version: 1", "version: 2")).expect("d");
    assert_ne!(a.digest(), d.digest());
    assert_eq!(d.version(), 2);
    let v = a
        .validate("kube.cordon", &one("node", "worker-1"))
        .expect("valid");
    assert_eq!(v.policy().digest, a.digest());
    assert_eq!(v.policy().version, 1);
}
