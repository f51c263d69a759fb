//! The request validator: untrusted parameter bytes in, a [`ValidatedAction`] out.
//!
//! Parse, don't validate: a [`ValidatedAction`] can only be made here, so a handler
//! that takes one cannot run on parameters that skipped a check. The validator
//! resists the attack classes of docs/threat-model.md, whatever the policy's patterns say:
//!
//! - **bytes**: at most [`MAX_PARAMS_BYTES`]; invalid UTF-8 is refused at the byte
//!   boundary, before JSON parsing;
//! - **structure**: a JSON object of scalars; duplicated keys (also when spelled with
//!   escapes) are refused, not resolved; unknown and missing parameters are errors;
//! - **types**: strict JSON types — no number as string, no string as number, no float
//!   for an integer (`1.0`, `1e3`), no integer beyond `i64`, no array, object or null
//!   for a scalar;
//! - **strings, always**: no control characters (C0 including NUL, DEL, C1), no
//!   leading `-` (a value must never become an option), at most `maxLength` bytes,
//!   and ASCII only unless the parameter allows non-ASCII — in which case the text
//!   must be NFC and free of invisible format and bidirectional characters. Patterns
//!   are matched on the exact code points received: nothing is normalised, folded or
//!   trimmed first, so a look-alike can match only what the pattern spells out;
//! - **strings, by pattern**: the handler's pattern *and* the policy's, both anchored.
//!
//! Every error names the parameter and the reason, echoing at most 64 characters of
//! the offending value (escaped).

use crate::catalogue::Handler;
use crate::model::{Duration, Risk, Target};
use crate::policy::Policy;
use palisade_core::event::{Justification, ParamValue, PolicyRef};
use palisade_core::ActionName;
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use unicode_normalization::{is_nfc_quick, IsNormalized};

/// The largest parameters object accepted, in bytes.
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// The most members a parameters object may have.
pub const MAX_PARAM_ENTRIES: usize = 64;
/// The longest ticket id.
pub const MAX_TICKET_BYTES: usize = 64;
/// The longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1_024;

/// Why a request was refused. Every variant about a parameter names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("parameters are {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("parameters are not valid UTF-8 (invalid byte sequence at byte {at})")]
    NotUtf8 { at: usize },
    #[error("parameters are not valid JSON: {detail}")]
    Malformed { detail: String },
    #[error("parameters must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("more than {max} parameters")]
    TooManyParameters { max: usize },
    #[error("action {action:?} is not in the policy")]
    UnknownAction { action: String },
    #[error("parameter {param:?} is not a parameter of {action} (its parameters: {allowed})")]
    UnknownParameter {
        param: String,
        action: String,
        allowed: String,
    },
    #[error("parameter {param:?} is given more than once")]
    DuplicateParameter { param: String },
    #[error("parameter {param:?} is required")]
    MissingParameter { param: String },
    #[error("parameter {param:?} must be {expected}, found {found}")]
    WrongType {
        param: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("parameter {param:?} must be an integer, found {found} (no fraction or exponent)")]
    NotAnInteger { param: String, found: String },
    #[error("parameter {param:?}: {value} does not fit a signed 64-bit integer")]
    IntegerOverflow { param: String, value: String },
    #[error("parameter {param:?}: {value} is outside {min}..={max}")]
    OutOfRange {
        param: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("parameter {param:?} is {len} bytes; the limit is {max}")]
    TooLong {
        param: String,
        len: usize,
        max: usize,
    },
    #[error("parameter {param:?} contains the control character U+{code:04X} at byte {at}")]
    ControlCharacter { param: String, code: u32, at: usize },
    #[error("parameter {param:?} contains the non-ASCII character {found:?} (U+{code:04X}) at byte {at}; only ASCII is accepted")]
    NonAscii {
        param: String,
        found: char,
        code: u32,
        at: usize,
    },
    #[error("parameter {param:?} contains the invisible or bidirectional character U+{code:04X} at byte {at}")]
    InvisibleCharacter { param: String, code: u32, at: usize },
    #[error("parameter {param:?} is not in Unicode normalization form C")]
    NotNormalized { param: String },
    #[error("parameter {param:?}: value {value:?} starts with '-' and could be read as an option; values never may")]
    LeadingDash { param: String, value: String },
    #[error("parameter {param:?}: value {value:?} does not match the pattern {pattern:?}")]
    PatternMismatch {
        param: String,
        value: String,
        pattern: String,
    },
    #[error("parameter {param:?}: value {value:?} is not one of {allowed}")]
    NotInEnum {
        param: String,
        value: String,
        allowed: String,
    },
    #[error("parameter {param:?}: {value:?} is not a duration such as 30s, 5m, 24h or 7d")]
    BadDuration { param: String, value: String },
    #[error("parameter {param:?}: {value} is outside {min}..={max}")]
    DurationOutOfRange {
        param: String,
        value: Duration,
        min: Duration,
        max: Duration,
    },
    #[error("parameter {param:?}: a boolean is written true or false, found {found:?}")]
    NotABoolean { param: String, found: String },
    #[error("justification reason is {len} characters; at least {min} are required")]
    ReasonTooShort { len: usize, min: u32 },
}

impl ValidationError {
    /// The parameter the error is about, if it is about one (`justification.ticket` and
    /// `justification.reason` for the justification).
    pub fn param(&self) -> Option<&str> {
        use ValidationError::*;
        match self {
            UnknownParameter { param, .. }
            | DuplicateParameter { param }
            | MissingParameter { param }
            | WrongType { param, .. }
            | NotAnInteger { param, .. }
            | IntegerOverflow { param, .. }
            | OutOfRange { param, .. }
            | TooLong { param, .. }
            | ControlCharacter { param, .. }
            | NonAscii { param, .. }
            | InvisibleCharacter { param, .. }
            | NotNormalized { param }
            | LeadingDash { param, .. }
            | PatternMismatch { param, .. }
            | NotInEnum { param, .. }
            | BadDuration { param, .. }
            | DurationOutOfRange { param, .. }
            | NotABoolean { param, .. } => Some(param),
            ReasonTooShort { .. } => Some("justification.reason"),
            TooLarge { .. }
            | NotUtf8 { .. }
            | Malformed { .. }
            | NotAnObject { .. }
            | TooManyParameters { .. }
            | UnknownAction { .. } => None,
        }
    }
}

/// An action request that passed every check of the policy it names.
///
/// Only this module can make one. Handlers take `&ValidatedAction`, and events are
/// built from [`ValidatedAction::params`], so what is logged is what was checked.
///
/// ```compile_fail
/// // Its fields are private: a ValidatedAction cannot be forged outside this crate.
/// let forged = palisade_policy::ValidatedAction { params: Default::default() };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedAction {
    name: ActionName,
    handler: &'static str,
    target: Target,
    risk: Risk,
    output_schema: &'static str,
    params: BTreeMap<String, ParamValue>,
    policy: PolicyRef,
}

impl ValidatedAction {
    pub fn name(&self) -> &ActionName {
        &self.name
    }
    /// The built-in handler id ([`crate::catalogue`]).
    pub fn handler(&self) -> &'static str {
        self.handler
    }
    pub fn target(&self) -> Target {
        self.target
    }
    pub fn risk(&self) -> Risk {
        self.risk
    }
    pub fn output_schema(&self) -> &'static str {
        self.output_schema
    }
    /// The typed parameters, in name order; durations in their one canonical spelling.
    pub fn params(&self) -> &BTreeMap<String, ParamValue> {
        &self.params
    }
    pub fn into_params(self) -> BTreeMap<String, ParamValue> {
        self.params
    }
    /// The policy version and digest the request was validated against.
    pub fn policy(&self) -> &PolicyRef {
        &self.policy
    }
    pub fn policy_digest(&self) -> palisade_core::Sha256Digest {
        self.policy.digest
    }
    pub fn str_param(&self, name: &str) -> Option<&str> {
        match self.params.get(name) {
            Some(ParamValue::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn int_param(&self, name: &str) -> Option<i64> {
        match self.params.get(name) {
            Some(ParamValue::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn bool_param(&self, name: &str) -> Option<bool> {
        match self.params.get(name) {
            Some(ParamValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    /// A duration parameter (stored canonically, so this parse cannot fail for one).
    pub fn duration_param(&self, name: &str) -> Option<Duration> {
        self.str_param(name).and_then(Duration::parse)
    }
}

/// A compiled pattern and its source (for messages).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub(crate) source: String,
    pub(crate) regex: regex::Regex,
}

/// The effective check of one parameter: handler and policy constraints combined.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    String {
        max_length: usize,
        allow_non_ascii: bool,
        /// The handler's pattern first, then the policy's; all must match.
        patterns: Vec<Pattern>,
    },
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    Duration {
        min: Duration,
        max: Duration,
    },
    Enum(Vec<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledParam {
    pub(crate) name: String,
    pub(crate) required: bool,
    pub(crate) check: Check,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledAction {
    pub(crate) handler: &'static Handler,
    /// Sorted by name.
    pub(crate) params: Vec<CompiledParam>,
    pub(crate) ticket: Pattern,
}

/// A JSON value as received, before it is typed by the policy.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX` (JSON allows it; we do not).
    Big(u64),
    Float(f64),
    Str(String),
    Array,
    Object,
}

impl Raw {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a boolean",
            Raw::Int(_) | Raw::Big(_) => "an integer",
            Raw::Float(_) => "a number with a fraction or exponent",
            Raw::Str(_) => "a string",
            Raw::Array => "an array",
            Raw::Object => "an object",
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or(Raw::Big(v), Raw::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        // Drained, not kept: no parameter takes an array. (serde_json bounds nesting.)
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Object)
    }
}

impl<'de> de::Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// The top level: an object's members *in order, duplicates kept* (serde_json's own
/// maps keep only the last of a duplicated key), or what was found instead.
enum Top {
    Object(Vec<(String, Raw)>),
    Other(&'static str),
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.len() >= MAX_PARAM_ENTRIES {
                return Err(de::Error::custom(TOO_MANY));
            }
            let value = map.next_value::<Raw>()?;
            entries.push((key, value));
        }
        Ok(Top::Object(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other("an array"))
    }
    fn visit_unit<E>(self) -> Result<Top, E> {
        Ok(Top::Other("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
        Ok(Top::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Top, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Top, E> {
        Ok(Top::Other("a string"))
    }
}

const TOO_MANY: &str = "palisade: too many parameters";

/// Echo at most 64 characters of an untrusted value (Debug formatting escapes it).
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn parse_object(bytes: &[u8]) -> Result<Vec<(String, Raw)>, ValidationError> {
    if bytes.len() > MAX_PARAMS_BYTES {
        return Err(ValidationError::TooLarge {
            len: bytes.len(),
            max: MAX_PARAMS_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ValidationError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de.deserialize_any(TopVisitor).and_then(|top| {
        de.end()?;
        Ok(top)
    });
    match top {
        Ok(Top::Object(entries)) => Ok(entries),
        Ok(Top::Other(found)) => Err(ValidationError::NotAnObject { found }),
        Err(e) if e.to_string().starts_with(TOO_MANY) => Err(ValidationError::TooManyParameters {
            max: MAX_PARAM_ENTRIES,
        }),
        Err(e) => Err(ValidationError::Malformed {
            detail: shown(&e.to_string()),
        }),
    }
}

/// Validates `params_json` (the raw bytes of a JSON object) for `action` under `policy`.
pub fn validate(
    policy: &Policy,
    action: &str,
    params_json: &[u8],
) -> Result<ValidatedAction, ValidationError> {
    let (spec_index, compiled) = lookup(policy, action)?;
    let entries = parse_object(params_json)?;
    finish(policy, spec_index, compiled, entries)
}

/// Validates CLI-style `name=value` pairs. Each value is typed by its parameter's
/// declared type: `"3"` becomes the integer 3 only if the parameter is an integer,
/// `true`/`false` a boolean only if it is a boolean; everything else stays a string
/// and gets every string check.
pub fn validate_args(
    policy: &Policy,
    action: &str,
    args: &[(String, String)],
) -> Result<ValidatedAction, ValidationError> {
    let (spec_index, compiled) = lookup(policy, action)?;
    let len: usize = args.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if len > MAX_PARAMS_BYTES {
        return Err(ValidationError::TooLarge {
            len,
            max: MAX_PARAMS_BYTES,
        });
    }
    if args.len() > MAX_PARAM_ENTRIES {
        return Err(ValidationError::TooManyParameters {
            max: MAX_PARAM_ENTRIES,
        });
    }
    let mut entries = Vec::with_capacity(args.len());
    for (name, value) in args {
        let raw = match compiled
            .params
            .iter()
            .find(|p| &p.name == name)
            .map(|p| &p.check)
        {
            Some(Check::Integer { .. }) => parse_cli_integer(name, value)?,
            Some(Check::Boolean) => match value.as_str() {
                "true" => Raw::Bool(true),
                "false" => Raw::Bool(false),
                _ => {
                    return Err(ValidationError::NotABoolean {
                        param: shown(name),
                        found: shown(value),
                    })
                }
            },
            _ => Raw::Str(value.clone()),
        };
        entries.push((name.clone(), raw));
    }
    finish(policy, spec_index, compiled, entries)
}

fn parse_cli_integer(name: &str, value: &str) -> Result<Raw, ValidationError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::NotAnInteger {
            param: shown(name),
            found: format!("{:?}", shown(value)),
        });
    }
    value
        .parse::<i64>()
        .map(Raw::Int)
        .map_err(|_| ValidationError::IntegerOverflow {
            param: shown(name),
            value: shown(value),
        })
}

fn lookup<'p>(
    policy: &'p Policy,
    action: &str,
) -> Result<(usize, &'p CompiledAction), ValidationError> {
    policy
        .compiled(action)
        .ok_or_else(|| ValidationError::UnknownAction {
            action: shown(action),
        })
}

fn finish(
    policy: &Policy,
    spec_index: usize,
    compiled: &CompiledAction,
    entries: Vec<(String, Raw)>,
) -> Result<ValidatedAction, ValidationError> {
    let spec = policy
        .spec_at(spec_index)
        .ok_or_else(|| ValidationError::UnknownAction {
            action: String::new(),
        })?;
    // Pass 1: names. Unknown and duplicated names are reported before any value.
    let mut slots: Vec<Option<Raw>> = vec![None; compiled.params.len()];
    let mut matched: Vec<(usize, Raw)> = Vec::with_capacity(entries.len());
    for (name, raw) in entries {
        let Some(i) = compiled.params.iter().position(|p| p.name == name) else {
            let allowed: Vec<&str> = compiled.params.iter().map(|p| p.name.as_str()).collect();
            return Err(ValidationError::UnknownParameter {
                param: shown(&name),
                action: spec.name.to_string(),
                allowed: if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(", ")
                },
            });
        };
        if matched.iter().any(|(j, _)| *j == i) {
            return Err(ValidationError::DuplicateParameter { param: name });
        }
        matched.push((i, raw));
    }
    for (i, raw) in matched {
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(raw);
        }
    }
    // Pass 2: values, in name order; pass 3: what is missing.
    let mut params = BTreeMap::new();
    for (p, slot) in compiled.params.iter().zip(slots) {
        match slot {
            Some(raw) => {
                params.insert(p.name.clone(), check_value(&p.name, &p.check, raw)?);
            }
            None if p.required => {
                return Err(ValidationError::MissingParameter {
                    param: p.name.clone(),
                })
            }
            None => {}
        }
    }
    Ok(ValidatedAction {
        name: spec.name.clone(),
        handler: compiled.handler.id,
        target: spec.target,
        risk: spec.risk,
        output_schema: compiled.handler.output_schema,
        params,
        policy: policy.reference(),
    })
}

fn check_value(param: &str, check: &Check, raw: Raw) -> Result<ParamValue, ValidationError> {
    let wrong = |expected: &'static str, raw: &Raw| ValidationError::WrongType {
        param: param.to_string(),
        expected,
        found: raw.kind(),
    };
    match check {
        Check::Integer { min, max } => {
            let value = match raw {
                Raw::Int(i) => i,
                Raw::Big(u) => {
                    return Err(ValidationError::IntegerOverflow {
                        param: param.to_string(),
                        value: u.to_string(),
                    })
                }
                // A float with no fraction but beyond i64 is an overflow; any other
                // float (1.0, 1e3, 1.5) is not an integer, whatever its value.
                Raw::Float(f) if f.fract() == 0.0 && f.abs() >= 9.223_372_036_854_776e18 => {
                    return Err(ValidationError::IntegerOverflow {
                        param: param.to_string(),
                        value: format!("{f:e}"),
                    })
                }
                Raw::Float(f) => {
                    return Err(ValidationError::NotAnInteger {
                        param: param.to_string(),
                        found: format!("{f:?}"),
                    })
                }
                other => return Err(wrong("an integer", &other)),
            };
            if value < *min || value > *max {
                return Err(ValidationError::OutOfRange {
                    param: param.to_string(),
                    value,
                    min: *min,
                    max: *max,
                });
            }
            Ok(ParamValue::Int(value))
        }
        Check::Boolean => match raw {
            Raw::Bool(b) => Ok(ParamValue::Bool(b)),
            other => Err(wrong("true or false", &other)),
        },
        Check::String {
            max_length,
            allow_non_ascii,
            patterns,
        } => {
            let Raw::Str(s) = raw else {
                return Err(wrong("a string", &raw));
            };
            check_string(param, &s, *max_length, *allow_non_ascii, patterns)?;
            Ok(ParamValue::Str(s))
        }
        Check::Enum(values) => {
            let Raw::Str(s) = raw else {
                return Err(wrong("a string", &raw));
            };
            if values.contains(&s) {
                return Ok(ParamValue::Str(s));
            }
            // The hygiene checks give a sharper reason for hostile values.
            check_hygiene(param, &s, 256, false)?;
            Err(ValidationError::NotInEnum {
                param: param.to_string(),
                value: shown(&s),
                allowed: values.join(", "),
            })
        }
        Check::Duration { min, max } => {
            let Raw::Str(s) = raw else {
                return Err(wrong("a duration string such as \"30m\"", &raw));
            };
            check_hygiene(param, &s, 16, false)?;
            let d = Duration::parse(&s).ok_or_else(|| ValidationError::BadDuration {
                param: param.to_string(),
                value: shown(&s),
            })?;
            if d < *min || d > *max {
                return Err(ValidationError::DurationOutOfRange {
                    param: param.to_string(),
                    value: d,
                    min: *min,
                    max: *max,
                });
            }
            Ok(ParamValue::Str(d.to_string()))
        }
    }
}

/// Invisible format characters and bidirectional controls: refused even where a
/// parameter allows non-ASCII (Trojan Source, zero-width look-alikes, line and
/// paragraph separators that start a forged line).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// The checks every string value gets, whatever the policy says: [`check_chars`]
/// and no leading `-`.
fn check_hygiene(
    param: &str,
    s: &str,
    max_length: usize,
    allow_non_ascii: bool,
) -> Result<(), ValidationError> {
    check_chars(param, s, max_length, allow_non_ascii)?;
    if s.starts_with('-') {
        return Err(ValidationError::LeadingDash {
            param: param.to_string(),
            value: shown(s),
        });
    }
    Ok(())
}

/// Length, control characters, and non-ASCII (refused, or else NFC and visible).
fn check_chars(
    param: &str,
    s: &str,
    max_length: usize,
    allow_non_ascii: bool,
) -> Result<(), ValidationError> {
    if s.len() > max_length {
        return Err(ValidationError::TooLong {
            param: param.to_string(),
            len: s.len(),
            max: max_length,
        });
    }
    for (at, c) in s.char_indices() {
        if c.is_control() {
            return Err(ValidationError::ControlCharacter {
                param: param.to_string(),
                code: u32::from(c),
                at,
            });
        }
        if !c.is_ascii() {
            if !allow_non_ascii {
                return Err(ValidationError::NonAscii {
                    param: param.to_string(),
                    found: c,
                    code: u32::from(c),
                    at,
                });
            }
            if is_invisible(c) {
                return Err(ValidationError::InvisibleCharacter {
                    param: param.to_string(),
                    code: u32::from(c),
                    at,
                });
            }
        }
    }
    if allow_non_ascii && !s.is_ascii() && is_nfc_quick(s.chars()) != IsNormalized::Yes {
        // `Maybe` needs the full check; `No` is a refusal.
        let nfc: String = unicode_normalization::UnicodeNormalization::nfc(s).collect();
        if nfc != s {
            return Err(ValidationError::NotNormalized {
                param: param.to_string(),
            });
        }
    }
    Ok(())
}

/// Every check of a string parameter: hygiene, then each pattern in turn.
pub(crate) fn check_string(
    param: &str,
    s: &str,
    max_length: usize,
    allow_non_ascii: bool,
    patterns: &[Pattern],
) -> Result<(), ValidationError> {
    check_hygiene(param, s, max_length, allow_non_ascii)?;
    for p in patterns {
        if !p.regex.is_match(s) {
            return Err(ValidationError::PatternMismatch {
                param: param.to_string(),
                value: shown(s),
                pattern: p.source.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a request's justification against the action's rules and returns it typed.
pub(crate) fn check_justification(
    compiled: &CompiledAction,
    min_reason: u32,
    ticket: &str,
    reason: &str,
) -> Result<Justification, ValidationError> {
    check_string(
        "justification.ticket",
        ticket,
        MAX_TICKET_BYTES,
        false,
        std::slice::from_ref(&compiled.ticket),
    )?;
    // A reason is prose: any language, but no control or invisible characters.
    check_chars("justification.reason", reason, MAX_REASON_BYTES, true)?;
    let len = reason.trim().chars().count();
    if len < min_reason as usize {
        return Err(ValidationError::ReasonTooShort {
            len,
            min: min_reason,
        });
    }
    Ok(Justification {
        ticket: ticket.to_string(),
        reason: reason.to_string(),
    })
}
