//! A rota file, parsed once into typed schedules (the format is described in the crate
//! docs). Everything a later lookup relies on is checked here: the time zone exists,
//! the first hand-off is a real date and time, names are valid, overrides are ordered
//! and do not overlap.

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::operator::{validate_operator, InvalidOperator};
use crate::yaml::{self, Key, Node, NodeKind, Pos};

pub const API_VERSION: &str = "palisade.dev/v1";
pub const KIND: &str = "Rota";
pub const MAX_ROTA_BYTES: usize = 1024 * 1024;
pub const MAX_SCHEDULES: usize = 256;
pub const MAX_PARTICIPANTS: usize = 1000;
pub const MAX_OVERRIDES: usize = 1000;
pub const MAX_SCHEDULE_NAME_LEN: usize = 64;

/// A parsed rota file: one or more schedules with distinct names.
#[derive(Debug, Clone)]
pub struct Rota {
    schedules: Vec<RotaSchedule>,
}

impl Rota {
    pub fn schedules(&self) -> &[RotaSchedule] {
        &self.schedules
    }
}

/// How a schedule's regular shifts follow each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The single participant is on call permanently, from `first_handoff` (local
    /// time) if given. For demos and very small teams.
    Always { first_handoff: Option<DateTime> },
    /// A hand-off every day at the local time of `first_handoff`.
    Daily { first_handoff: DateTime },
    /// A hand-off every seven days at the local weekday and time of `first_handoff`.
    Weekly { first_handoff: DateTime },
}

/// Someone covering `[start, end)` in place of the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub operator: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One schedule of a rota.
#[derive(Debug, Clone)]
pub struct RotaSchedule {
    pub(crate) name: String,
    pub(crate) time_zone_name: String,
    pub(crate) time_zone: TimeZone,
    pub(crate) rotation: Rotation,
    pub(crate) participants: Vec<String>,
    /// Sorted by start; no two overlap.
    pub(crate) overrides: Vec<Override>,
}

impl RotaSchedule {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The IANA name of the schedule's time zone.
    pub fn time_zone(&self) -> &str {
        &self.time_zone_name
    }
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }
    pub fn participants(&self) -> &[String] {
        &self.participants
    }
    /// Overrides in order of their start.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }
}

/// Why a rota file was refused, and where: `line:column: field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {field}: {problem}")]
pub struct RotaError {
    pub line: usize,
    pub column: usize,
    /// The field's path, such as `schedules[0].handoff` (empty for the whole file).
    pub field: String,
    pub problem: RotaProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotaProblem {
    #[error("the rota is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Yaml(String),
    #[error("unknown field {name:?}; expected one of: {expected}")]
    UnknownField {
        name: String,
        expected: &'static str,
    },
    #[error("missing required field {0:?}")]
    MissingField(&'static str),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{value:?} is not {expected}")]
    Invalid {
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Operator(InvalidOperator),
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Berlin or UTC")]
    UnknownTimeZone(String),
    #[error("{len} entries; at most {max} are allowed")]
    TooMany { len: usize, max: usize },
    #[error("at least one entry is required")]
    Empty,
    #[error("not allowed with rotation: {0}")]
    NotAllowedFor(&'static str),
    #[error("required with rotation: {0}")]
    RequiredFor(&'static str),
    #[error("duplicated schedule name {name:?} (first at line {first_line})")]
    DuplicateSchedule { name: String, first_line: usize },
    #[error("start {start} is a {actual}, but handoffDay is {declared}")]
    HandoffDayMismatch {
        start: Date,
        actual: String,
        declared: String,
    },
    #[error("rotation: always has exactly one participant, not {0}")]
    AlwaysNeedsOne(usize),
    #[error("end {end} is not after start {start}")]
    EndNotAfterStart { start: Timestamp, end: Timestamp },
    #[error(
        "overlaps overrides[{other}]; overlapping overrides would leave who is on call ambiguous"
    )]
    OverlappingOverrides { other: usize },
    #[error("the first hand-off {0} cannot be placed in the time zone")]
    Unrepresentable(DateTime),
}

fn err(pos: Pos, field: &str, problem: RotaProblem) -> RotaError {
    RotaError {
        line: pos.line,
        column: pos.column,
        field: field.to_owned(),
        problem,
    }
}

/// Parses a rota file. The first problem found is returned, with its position.
pub fn parse_rota(text: &str) -> Result<Rota, RotaError> {
    let top = Pos { line: 1, column: 1 };
    if text.len() > MAX_ROTA_BYTES {
        return Err(err(
            top,
            "",
            RotaProblem::TooLarge {
                size: text.len(),
                max: MAX_ROTA_BYTES,
            },
        ));
    }
    let root = yaml::parse(text).map_err(|e| err(e.pos, "", RotaProblem::Yaml(e.message)))?;
    let doc = Fields::of(&root, "", &["apiVersion", "kind", "schedules"])?;
    let api = scalar(doc.require("apiVersion")?, "apiVersion")?;
    if api.1 != API_VERSION {
        return Err(err(api.0, "apiVersion", invalid(api.1, "palisade.dev/v1")));
    }
    let kind = scalar(doc.require("kind")?, "kind")?;
    if kind.1 != KIND {
        return Err(err(kind.0, "kind", invalid(kind.1, "Rota")));
    }
    let list = seq(doc.require("schedules")?, "schedules", MAX_SCHEDULES)?;
    if list.is_empty() {
        return Err(err(top, "schedules", RotaProblem::Empty));
    }
    let mut schedules: Vec<RotaSchedule> = Vec::with_capacity(list.len());
    let mut first_lines: Vec<usize> = Vec::with_capacity(list.len());
    for (i, node) in list.iter().enumerate() {
        let path = format!("schedules[{i}]");
        let schedule = parse_schedule(node, &path)?;
        if let Some(j) = schedules.iter().position(|s| s.name == schedule.name) {
            let first_line = first_lines.get(j).copied().unwrap_or(0);
            return Err(err(
                node.pos,
                &format!("{path}.name"),
                RotaProblem::DuplicateSchedule {
                    name: schedule.name,
                    first_line,
                },
            ));
        }
        first_lines.push(node.pos.line);
        schedules.push(schedule);
    }
    Ok(Rota { schedules })
}

const SCHEDULE_FIELDS: &[&str] = &[
    "name",
    "timeZone",
    "rotation",
    "handoff",
    "handoffDay",
    "start",
    "participants",
    "overrides",
];

fn parse_schedule(node: &Node, path: &str) -> Result<RotaSchedule, RotaError> {
    let f = Fields::of(node, path, SCHEDULE_FIELDS)?;
    let at = |field: &str| format!("{path}.{field}");

    let (pos, name) = scalar(f.require("name")?, &at("name"))?;
    validate_schedule_name(name).map_err(|p| err(pos, &at("name"), p))?;

    let (pos, tz_name) = scalar(f.require("timeZone")?, &at("timeZone"))?;
    let time_zone = TimeZone::get(tz_name).map_err(|_| {
        err(
            pos,
            &at("timeZone"),
            RotaProblem::UnknownTimeZone(tz_name.into()),
        )
    })?;

    let (rotation_pos, kind) = scalar(f.require("rotation")?, &at("rotation"))?;
    let kind = match kind {
        "always" => "always",
        "daily" => "daily",
        "weekly" => "weekly",
        other => {
            return Err(err(
                rotation_pos,
                &at("rotation"),
                invalid(other, "one of always, daily, weekly"),
            ))
        }
    };

    let handoff = match f.get("handoff") {
        Some(n) => {
            let (pos, text) = scalar(n, &at("handoff"))?;
            Some(parse_hhmm(text).ok_or_else(|| err(pos, &at("handoff"), invalid(text, "HH:MM")))?)
        }
        None if kind == "always" => None,
        None => return Err(err(f.pos, &at("handoff"), RotaProblem::RequiredFor(kind))),
    };
    let start = match f.get("start") {
        Some(n) => {
            let (pos, text) = scalar(n, &at("start"))?;
            Some((
                pos,
                parse_date(text)
                    .ok_or_else(|| err(pos, &at("start"), invalid(text, "a date YYYY-MM-DD")))?,
            ))
        }
        None if kind == "always" => None,
        None => return Err(err(f.pos, &at("start"), RotaProblem::RequiredFor(kind))),
    };
    match (kind, f.get_key("handoffDay")) {
        ("weekly", None) => {
            return Err(err(
                f.pos,
                &at("handoffDay"),
                RotaProblem::RequiredFor("weekly"),
            ))
        }
        ("weekly", Some((_, n))) => {
            let (pos, text) = scalar(n, &at("handoffDay"))?;
            let declared = parse_weekday(text).ok_or_else(|| {
                err(
                    pos,
                    &at("handoffDay"),
                    invalid(text, "a weekday (monday … sunday)"),
                )
            })?;
            if let Some((start_pos, date)) = start {
                if date.weekday() != declared {
                    return Err(err(
                        start_pos,
                        &at("start"),
                        RotaProblem::HandoffDayMismatch {
                            start: date,
                            actual: weekday_name(date.weekday()).into(),
                            declared: weekday_name(declared).into(),
                        },
                    ));
                }
            }
        }
        (_, Some((key, _))) => {
            return Err(err(
                key.pos,
                &at("handoffDay"),
                RotaProblem::NotAllowedFor(kind),
            ))
        }
        (_, None) => {}
    }

    let first_handoff =
        start.map(|(_, date)| date.to_datetime(handoff.unwrap_or(Time::midnight())));
    if let Some(dt) = first_handoff {
        // Every later hand-off is the same wall-clock time on a later date; if the
        // first one resolves, the zone is usable for this schedule.
        dt.to_zoned(time_zone.clone())
            .map_err(|_| err(f.pos, &at("start"), RotaProblem::Unrepresentable(dt)))?;
    }
    let rotation = match (kind, first_handoff) {
        ("always", first_handoff) => Rotation::Always { first_handoff },
        ("daily", Some(first_handoff)) => Rotation::Daily { first_handoff },
        (_, Some(first_handoff)) => Rotation::Weekly { first_handoff },
        (_, None) => return Err(err(f.pos, &at("start"), RotaProblem::RequiredFor(kind))),
    };

    let participants_node = f.require("participants")?;
    let list = seq(participants_node, &at("participants"), MAX_PARTICIPANTS)?;
    if list.is_empty() {
        return Err(err(
            participants_node.pos,
            &at("participants"),
            RotaProblem::Empty,
        ));
    }
    if kind == "always" && list.len() != 1 {
        return Err(err(
            participants_node.pos,
            &at("participants"),
            RotaProblem::AlwaysNeedsOne(list.len()),
        ));
    }
    let mut participants = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        let field = format!("{path}.participants[{i}]");
        let (pos, who) = scalar(n, &field)?;
        validate_operator(who).map_err(|e| err(pos, &field, RotaProblem::Operator(e)))?;
        participants.push(who.to_owned());
    }

    let overrides = match f.get("overrides") {
        Some(n) => parse_overrides(n, &at("overrides"))?,
        None => Vec::new(),
    };

    Ok(RotaSchedule {
        name: name.to_owned(),
        time_zone_name: tz_name.to_owned(),
        time_zone,
        rotation,
        participants,
        overrides,
    })
}

fn parse_overrides(node: &Node, path: &str) -> Result<Vec<Override>, RotaError> {
    let list = seq(node, path, MAX_OVERRIDES)?;
    let mut parsed: Vec<(usize, Pos, Override)> = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        let item = format!("{path}[{i}]");
        let f = Fields::of(n, &item, &["operator", "start", "end"])?;
        let (pos, who) = scalar(f.require("operator")?, &format!("{item}.operator"))?;
        validate_operator(who)
            .map_err(|e| err(pos, &format!("{item}.operator"), RotaProblem::Operator(e)))?;
        let start = instant(f.require("start")?, &format!("{item}.start"))?;
        let (end_pos, end) = {
            let n = f.require("end")?;
            (n.pos, instant(n, &format!("{item}.end"))?)
        };
        if end <= start {
            return Err(err(
                end_pos,
                &format!("{item}.end"),
                RotaProblem::EndNotAfterStart { start, end },
            ));
        }
        parsed.push((
            i,
            n.pos,
            Override {
                operator: who.to_owned(),
                start,
                end,
            },
        ));
    }
    parsed.sort_by_key(|(_, _, o)| o.start);
    for pair in parsed.windows(2) {
        if let [(earlier, _, a), (later, pos, b)] = pair {
            if b.start < a.end {
                return Err(err(
                    *pos,
                    &format!("{path}[{later}]"),
                    RotaProblem::OverlappingOverrides { other: *earlier },
                ));
            }
        }
    }
    Ok(parsed.into_iter().map(|(_, _, o)| o).collect())
}

fn instant(node: &Node, field: &str) -> Result<Timestamp, RotaError> {
    let (pos, text) = scalar(node, field)?;
    // jiff refuses an instant without an offset (a bare local time would be
    // ambiguous); the bracketed time-zone annotation is refused to keep one spelling.
    let parsed = if text.contains('[') {
        None
    } else {
        text.parse::<Timestamp>().ok()
    };
    parsed.ok_or_else(|| {
        err(
            pos,
            field,
            invalid(
                text,
                "an RFC 3339 instant with an offset, like 2026-11-26T09:00:00+01:00",
            ),
        )
    })
}

/// Schedule names appear in grants and logs: one spelling, no surprises.
pub(crate) fn validate_schedule_name(name: &str) -> Result<(), RotaProblem> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME_LEN
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(name, "a schedule name (1-64 chars a-z 0-9 . _ -)"))
    }
}

fn invalid(value: &str, expected: &'static str) -> RotaProblem {
    RotaProblem::Invalid {
        value: value.to_owned(),
        expected,
    }
}

/// Strict `HH:MM`, 24-hour.
fn parse_hhmm(text: &str) -> Option<Time> {
    let b = text.as_bytes();
    if b.len() != 5 || b.get(2) != Some(&b':') {
        return None;
    }
    let hh: i8 = text.get(0..2)?.parse().ok()?;
    let mm: i8 = text.get(3..5)?.parse().ok()?;
    if !text.get(0..2)?.bytes().all(|c| c.is_ascii_digit())
        || !text.get(3..5)?.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Time::new(hh, mm, 0, 0).ok()
}

/// Strict `YYYY-MM-DD`.
fn parse_date(text: &str) -> Option<Date> {
    let shape = text.len() == 10
        && text.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    text.parse::<Date>().ok()
}

fn parse_weekday(text: &str) -> Option<Weekday> {
    Some(match text {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// A mapping whose keys are checked against the fields a type knows.
struct Fields<'a> {
    pos: Pos,
    path: String,
    entries: &'a [(Key, Node)],
}

impl<'a> Fields<'a> {
    fn of(node: &'a Node, path: &str, known: &'static [&'static str]) -> Result<Self, RotaError> {
        let NodeKind::Map(entries) = &node.kind else {
            return Err(wrong_type(node, path, "a mapping"));
        };
        if let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| !known.contains(&k.name.as_str()))
        {
            let field = if path.is_empty() {
                key.name.clone()
            } else {
                format!("{path}.{}", key.name)
            };
            return Err(err(
                key.pos,
                &field,
                RotaProblem::UnknownField {
                    name: key.name.clone(),
                    expected: expected_list(known),
                },
            ));
        }
        Ok(Fields {
            pos: node.pos,
            path: path.to_owned(),
            entries,
        })
    }

    fn get_key(&self, name: &str) -> Option<(&'a Key, &'a Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, v)| (k, v))
    }

    fn get(&self, name: &str) -> Option<&'a Node> {
        self.get_key(name).map(|(_, v)| v)
    }

    fn require(&self, name: &'static str) -> Result<&'a Node, RotaError> {
        self.get(name).ok_or_else(|| {
            let field = if self.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.path)
            };
            err(self.pos, &field, RotaProblem::MissingField(name))
        })
    }
}

fn expected_list(known: &'static [&'static str]) -> &'static str {
    match known.first() {
        Some(&"apiVersion") => "apiVersion, kind, schedules",
        Some(&"operator") => "operator, start, end",
        _ => "name, timeZone, rotation, handoff, handoffDay, start, participants, overrides",
    }
}

fn describe(node: &Node) -> &'static str {
    match &node.kind {
        NodeKind::Scalar(_) => "a scalar",
        NodeKind::Map(_) => "a mapping",
        NodeKind::Seq(_) => "a sequence",
    }
}

fn wrong_type(node: &Node, path: &str, expected: &'static str) -> RotaError {
    err(
        node.pos,
        path,
        RotaProblem::WrongType {
            expected,
            found: describe(node),
        },
    )
}

fn scalar<'a>(node: &'a Node, path: &str) -> Result<(Pos, &'a str), RotaError> {
    match &node.kind {
        NodeKind::Scalar(text) => Ok((node.pos, text.as_str())),
        _ => Err(wrong_type(node, path, "a scalar")),
    }
}

fn seq<'a>(node: &'a Node, path: &str, max: usize) -> Result<&'a [Node], RotaError> {
    let NodeKind::Seq(items) = &node.kind else {
        return Err(wrong_type(node, path, "a sequence"));
    };
    if items.len() > max {
        return Err(err(
            node.pos,
            path,
            RotaProblem::TooMany {
                len: items.len(),
                max,
            },
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEKLY: &str = "\
apiVersion: palisade.dev/v1
kind: Rota
schedules:
  - name: primary
    timeZone: Europe/Berlin
    rotation: weekly
    handoff: \"09:00\"
    handoffDay: monday
    start: 2026-01-05
    participants: [alice, bob, carol]
    overrides:
      - operator: dave
        start: 2026-11-26T09:00:00+01:00
        end: 2026-11-26T18:00:00+01:00
";

    fn refuse(text: &str) -> String {
        parse_rota(text).expect_err(text).to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let rota = parse_rota(WEEKLY).expect("valid");
        let s = &rota.schedules()[0];
        assert_eq!(s.name(), "primary");
        assert_eq!(s.time_zone(), "Europe/Berlin");
        assert_eq!(s.participants(), ["alice", "bob", "carol"]);
        assert_eq!(
            s.rotation(),
            &Rotation::Weekly {
                first_handoff: jiff::civil::date(2026, 1, 5).at(9, 0, 0, 0)
            }
        );
        assert_eq!(s.overrides()[0].operator, "dave");
    }

    #[test]
    fn error_names_line_column_and_field() {
        let text = WEEKLY.replace("\"09:00\"", "\"25:00\"");
        assert_eq!(
            refuse(&text),
            "7:14: schedules[0].handoff: \"25:00\" is not HH:MM"
        );
    }

    #[test]
    fn refuses_unknown_fields() {
        let text = WEEKLY.replace(
            "    rotation: weekly\n",
            "    rotation: weekly\n    rotaton: daily\n",
        );
        let e = refuse(&text);
        assert!(
            e.starts_with("7:5: schedules[0].rotaton: unknown field"),
            "{e}"
        );
        let e = refuse(&format!("{WEEKLY}extra: 1\n"));
        assert!(e.contains("unknown field \"extra\""), "{e}");
    }

    #[test]
    fn refuses_duplicated_schedule_names() {
        let second = WEEKLY
            .split_once("schedules:\n")
            .map(|(_, s)| s)
            .unwrap_or("");
        let e = refuse(&format!("{WEEKLY}{second}"));
        assert!(
            e.contains("duplicated schedule name \"primary\" (first at line 4)"),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_operator_names() {
        let e = refuse(&WEEKLY.replace("[alice, bob, carol]", "[alice, Bob, carol]"));
        assert!(e.contains("schedules[0].participants[1]"), "{e}");
        assert!(e.contains("lower-case"), "{e}");
        let e = refuse(&WEEKLY.replace("operator: dave", "operator: \"dave smith\""));
        assert!(e.contains("schedules[0].overrides[0].operator"), "{e}");
    }

    #[test]
    fn refuses_a_start_that_is_not_the_handoff_day() {
        let e = refuse(&WEEKLY.replace("2026-01-05", "2026-01-06"));
        assert!(
            e.contains("start 2026-01-06 is a tuesday, but handoffDay is monday"),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_values() {
        for (from, to, needle) in [
            ("Europe/Berlin", "Europe/Berlinn", "unknown time zone"),
            ("weekly", "monthly", "one of always, daily, weekly"),
            ("2026-01-05", "2026-1-5", "YYYY-MM-DD"),
            ("palisade.dev/v1", "palisade.dev/v2", "apiVersion"),
            (
                "2026-11-26T09:00:00+01:00",
                "2026-11-26T09:00:00",
                "with an offset",
            ),
            (
                "end: 2026-11-26T18:00:00+01:00",
                "end: 2026-11-26T08:00:00+01:00",
                "is not after start",
            ),
            ("[alice, bob, carol]", "[]", "at least one"),
            ("[alice, bob, carol]", "alice", "expected a sequence"),
        ] {
            let e = refuse(&WEEKLY.replace(from, to));
            assert!(e.contains(needle), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn refuses_handoff_day_on_daily_and_missing_handoff() {
        let e = refuse(&WEEKLY.replace("rotation: weekly", "rotation: daily"));
        assert!(
            e.contains("handoffDay: not allowed with rotation: daily"),
            "{e}"
        );
        let e = refuse(&WEEKLY.replace("    handoff: \"09:00\"\n", ""));
        assert!(
            e.contains("schedules[0].handoff: required with rotation: weekly"),
            "{e}"
        );
    }

    #[test]
    fn refuses_overlapping_overrides() {
        let text = format!(
            "{WEEKLY}      - operator: erin\n        start: 2026-11-26T17:00:00+01:00\n        end: 2026-11-26T20:00:00+01:00\n"
        );
        let e = refuse(&text);
        assert!(e.contains("overrides[1]: overlaps overrides[0]"), "{e}");
    }

    #[test]
    fn always_needs_exactly_one_participant() {
        let text = "apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: demo\n    timeZone: UTC\n    rotation: always\n    participants: [alice, bob]\n";
        assert!(refuse(text).contains("exactly one participant, not 2"));
        let ok = text.replace("[alice, bob]", "[alice]");
        let rota = parse_rota(&ok).expect("valid");
        assert_eq!(
            rota.schedules()[0].rotation(),
            &Rotation::Always {
                first_handoff: None
            }
        );
    }

    #[test]
    fn bounds_the_number_of_participants() {
        let many: Vec<String> = (0..1001).map(|i| format!("op{i}")).collect();
        let e = refuse(&WEEKLY.replace("[alice, bob, carol]", &format!("[{}]", many.join(", "))));
        assert!(e.contains("1001 entries; at most 1000"), "{e}");
    }
}
