//! The action policy as data: what a policy file says once it has been linted.
//!
//! These types mirror the YAML format field by field (docs/policy.md), and their
//! serde serialization *is* the document that the policy digest covers: the digest is
//! SHA-256 over the canonical JSON ([`palisade_core::canonical`]) of
//! [`PolicyDocument`], so comments, key order and YAML spelling do not change it, while
//! every field that changes what an operator may do does.
//!
//! Nothing here can be built from untrusted input except through
//! [`crate::lint::lint`], which checks every field and every narrowing rule.

use palisade_core::ActionName;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The only `apiVersion` this crate reads.
pub const API_VERSION: &str = "palisade.dev/v1";
/// The only `kind` this crate reads.
pub const KIND: &str = "ActionPolicy";

/// Where an action runs: on the cluster as a whole (any healthy instance, or the
/// cluster's Kubernetes API), or on one named control-plane instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Cluster,
    Instance,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Cluster => "cluster",
            Target::Instance => "instance",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "cluster" => Some(Target::Cluster),
            "instance" => Some(Target::Instance),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much an action can disturb a cluster. Ordered: `Read < Mutate < Disruptive`.
/// A policy may raise an action's risk above its handler's, never lower it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads state; changes nothing.
    Read,
    /// Changes state in a way that is easily undone (cordon, a new backup).
    Mutate,
    /// Interrupts service or destroys something (restart, upgrade, defragment, prune).
    Disruptive,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Mutate => "mutate",
            Risk::Disruptive => "disruptive",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Risk::Read),
            "mutate" => Some(Risk::Mutate),
            "disruptive" => Some(Risk::Disruptive),
            _ => None,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole number of seconds, written as one number and one unit: `30s`, `5m`, `24h`,
/// `7d`. One spelling per value: [`fmt::Display`] uses the largest unit that divides
/// the value exactly (`90s` stays `90s`, `60m` becomes `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: u64,
}

/// The largest duration anything in a policy may name: ten years.
pub const MAX_DURATION_SECS: u64 = 10 * 366 * 86_400;

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    pub fn as_secs(self) -> u64 {
        self.secs
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }

    /// Parses `<digits><unit>` with unit `s`, `m`, `h` or `d`, at most ten years.
    /// Nothing else: no sign, no fraction, no spaces, no compound forms (`1h30m`).
    pub fn parse(text: &str) -> Option<Self> {
        let unit_at = text.len().checked_sub(1)?;
        let (digits, unit) = (text.get(..unit_at)?, text.get(unit_at..)?);
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return None,
        };
        let secs = n.checked_mul(scale)?;
        (secs <= MAX_DURATION_SECS).then_some(Self { secs })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        if s == 0 {
            f.write_str("0s")
        } else if s % 86_400 == 0 {
            write!(f, "{}d", s / 86_400)
        } else if s % 3_600 == 0 {
            write!(f, "{}h", s / 3_600)
        } else if s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The type of one parameter and its constraints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamType {
    /// A string. `pattern` is anchored (`\A(?:pattern)\z`) and matched on the exact
    /// code points received: nothing is normalised first.
    String {
        #[serde(skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        /// In bytes of UTF-8.
        #[serde(rename = "maxLength")]
        max_length: u32,
        /// Off unless the handler allows it; even then, text must be NFC and free of
        /// invisible format and bidirectional controls.
        #[serde(rename = "allowNonAscii", skip_serializing_if = "is_false")]
        allow_non_ascii: bool,
    },
    /// A signed 64-bit integer in `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    /// A [`Duration`] in `min..=max`, given as a string such as `"30s"`.
    Duration {
        min: Duration,
        max: Duration,
    },
    /// One of a fixed list of strings, compared byte for byte.
    Enum {
        values: Vec<String>,
    },
}

impl ParamType {
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::String { .. } => "string",
            ParamType::Integer { .. } => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Duration { .. } => "duration",
            ParamType::Enum { .. } => "enum",
        }
    }
}

/// One parameter of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamSpec {
    pub description: String,
    pub required: bool,
    #[serde(flatten)]
    pub ty: ParamType,
}

/// At most `max` requests of this action per operator per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub max: u32,
    pub per: Duration,
}

/// What the justification of a request must look like. A justification (ticket id and
/// reason) is always required: a policy can make it stricter, never waive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JustificationSpec {
    /// Anchored like parameter patterns; the ticket id is also at most 64 ASCII bytes.
    #[serde(rename = "ticketPattern")]
    pub ticket_pattern: String,
    /// In characters.
    #[serde(rename = "minReasonLength")]
    pub min_reason_length: u32,
}

/// One action the policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionSpec {
    pub name: ActionName,
    pub description: String,
    /// The id of the built-in handler ([`crate::catalogue`]) that executes it.
    pub handler: String,
    pub target: Target,
    /// The role an operator's on-call grant must carry.
    pub role: String,
    pub risk: Risk,
    /// The output schema the agent reduces the handler's output to.
    #[serde(rename = "outputSchema")]
    pub output_schema: String,
    #[serde(rename = "rateLimit")]
    pub rate_limit: RateLimit,
    pub justification: JustificationSpec,
    pub params: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// Increases with every published policy; the agent refuses to go back.
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A linted policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDocument {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub actions: Vec<ActionSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_spelling() {
        for (text, secs, shown) in [
            ("30s", 30, "30s"),
            ("90s", 90, "90s"),
            ("60s", 60, "1m"),
            ("5m", 300, "5m"),
            ("60m", 3600, "1h"),
            ("24h", 86_400, "1d"),
            ("7d", 604_800, "7d"),
            ("0s", 0, "0s"),
        ] {
            let d = Duration::parse(text).expect(text);
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(Duration::parse(shown), Some(d));
        }
        for bad in [
            "",
            "s",
            "5",
            "-5m",
            "+5m",
            "5 m",
            "1h30m",
            "1.5h",
            "5M",
            "5w",
            "５m",
            "99999999999s",
            "3661d",
            "5m\n",
        ] {
            assert_eq!(Duration::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn risk_is_ordered() {
        assert!(Risk::Read < Risk::Mutate && Risk::Mutate < Risk::Disruptive);
    }
}
