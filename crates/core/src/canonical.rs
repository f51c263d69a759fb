//! The canonical JSON encoding: the exact bytes that are hashed and signed.
//!
//! The rule is RFC 8785 (JSON Canonicalization Scheme) restricted to the values
//! Palisade signs, which contain no floating-point numbers:
//! - no insignificant whitespace;
//! - object members sorted by their names compared as UTF-16 code units (RFC 8785
//!   §3.2.3), each name at most once;
//! - strings as in RFC 8785 §3.2.2.2: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//!   control characters as `\u00xx` (lower-case hex), everything else as itself (UTF-8);
//! - numbers: integers only (i64 or u64 range), in shortest decimal form. A float is an
//!   error rather than a silent re-encoding, so a value either has one canonical form
//!   or none.
//!
//! [`from_canonical_slice`] accepts only bytes that are already canonical, so a signed
//! document cannot be accepted in a second spelling (duplicated keys, reordered
//! members, escaped characters, whitespace).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("cannot encode as JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("JSON number {0} is not an integer; canonical JSON here carries integers only")]
    NotInteger(String),
    #[error("not valid JSON: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("JSON is valid but not in canonical form (whitespace, member order, escaping or a duplicated key)")]
    NotCanonical,
    #[error("JSON does not match the expected structure: {0}")]
    Structure(#[source] serde_json::Error),
}

/// Encodes a value as canonical JSON bytes.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(CanonicalError::Serialize)?;
    let mut out = Vec::with_capacity(256);
    write_value(&value, &mut out)?;
    Ok(out)
}

/// Encodes an already-parsed JSON value canonically.
pub fn value_to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Decodes bytes that must already be canonical JSON.
pub fn from_canonical_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CanonicalError> {
    let value: Value = serde_json::from_slice(bytes).map_err(CanonicalError::Parse)?;
    // serde_json keeps the last of duplicated keys, so the re-encoding then differs.
    if value_to_canonical_vec(&value)? != bytes {
        return Err(CanonicalError::NotCanonical);
    }
    serde_json::from_value(value).map_err(CanonicalError::Structure)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonicalError::NotInteger(n.to_string()));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // RFC 8785 §3.2.3: sort by UTF-16 code units, not by UTF-8 bytes (they
            // differ for characters above U+FFFF against U+E000..U+FFFF).
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(value_to_canonical_vec(v).expect("canonical")).expect("utf8")
    }

    #[test]
    fn member_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":true,"x":null},"c":[3,2]}"#).expect("a");
        let b: Value =
            serde_json::from_str(r#"{ "c" : [3,2], "a":{"x":null,"y":true}, "b":1 }"#).expect("b");
        assert_eq!(canon(&a), r#"{"a":{"x":null,"y":true},"b":1,"c":[3,2]}"#);
        assert_eq!(canon(&a), canon(&b));
    }

    #[test]
    fn rfc8785_sorting_vector() {
        // RFC 8785 §3.2.3 example names (the float-valued members replaced by integers).
        let v = json!({
            "\u{20ac}": 1, "\r": 2, "\u{fb33}": 3, "1": 4, "\u{1f600}": 5, "\u{80}": 6, "\u{f6}": 7
        });
        let want = "{\"\\r\":2,\"1\":4,\"\u{80}\":6,\"\u{f6}\":7,\"\u{20ac}\":1,\"\u{1f600}\":5,\"\u{fb33}\":3}";
        assert_eq!(canon(&v), want);
    }

    #[test]
    fn rfc8785_string_escaping_vector() {
        // RFC 8785 §3.2.2.2 example string.
        let v = json!("\u{20ac}$\u{f}\nA'B\"\\\\\"/");
        assert_eq!(canon(&v), "\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"");
        assert_eq!(
            canon(&json!("\u{7f}\u{2028}\u{1}")),
            "\"\u{7f}\u{2028}\\u0001\""
        );
    }

    #[test]
    fn integers_only() {
        assert_eq!(
            canon(&json!([
                0,
                -1,
                18446744073709551615u64,
                -9223372036854775808i64
            ])),
            "[0,-1,18446744073709551615,-9223372036854775808]"
        );
        let err = value_to_canonical_vec(&json!({"x": 1.5})).expect_err("float");
        assert!(matches!(err, CanonicalError::NotInteger(_)), "{err}");
    }

    #[test]
    fn decoding_accepts_only_canonical_bytes() {
        let ok: Value = from_canonical_slice(br#"{"a":1,"b":"x"}"#).expect("canonical");
        assert_eq!(ok, json!({"a":1,"b":"x"}));
        for bad in [
            &br#"{"b":"x","a":1}"#[..],
            br#"{"a":1, "b":"x"}"#,
            br#"{"a":1,"a":2,"b":"x"}"#,
            br#"{"a":1,"b":"\u0078"}"#,
            br#"{"a":1,"b":"x"} "#,
        ] {
            let err = from_canonical_slice::<Value>(bad).expect_err("not canonical");
            assert!(matches!(err, CanonicalError::NotCanonical), "{err}");
        }
        assert!(matches!(
            from_canonical_slice::<Value>(b"{"),
            Err(CanonicalError::Parse(_))
        ));
    }
}
