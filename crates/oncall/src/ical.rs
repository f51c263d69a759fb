//! On-call shifts from an iCalendar feed (RFC 5545), the format PagerDuty, Opsgenie and
//! Grafana OnCall export.
//!
//! The reader takes only what decides who is on call, and refuses what it cannot read
//! unambiguously:
//!
//! - Lines are unfolded (§3.1: a line starting with a space or tab continues the
//!   previous one); errors name the line where the logical line starts.
//! - Each `VEVENT` inside a `VCALENDAR` is one shift (or one per occurrence of its
//!   `RRULE`). `VTIMEZONE` blocks are skipped: a `TZID` must be an IANA name, which
//!   is resolved with the bundled tz database. `VALARM` and other nested components
//!   are skipped.
//! - `DTSTART` and `DTEND` must be UTC (`20260105T090000Z`) or carry `TZID=`; a
//!   floating time or an all-day date is refused. `DURATION` may replace `DTEND`
//!   (weeks and days are calendar days in the start's zone, hours and less are exact).
//!   For a recurring event with `TZID`, each occurrence keeps the wall-clock start and
//!   the calendar length of the first, so a 09:00-to-09:00 shift stays that across a
//!   DST change.
//! - Operator: every `ATTENDEE` with a `mailto:` address (lower-cased), skipping
//!   `PARTSTAT=DECLINED`; an event without attendees is read from `SUMMARY`:
//!   `On Call - <name> - …` (PagerDuty), `On call: <name>` (for hand-written feeds), or
//!   `<name>` alone (Grafana OnCall). `\,` `\;` `\n` `\\` are decoded first.
//! - `STATUS:CANCELLED` events are ignored (a cancelled `RECURRENCE-ID` instance
//!   removes that occurrence). `EXDATE` removes occurrences; an event with
//!   `RECURRENCE-ID` replaces the occurrence of the same `UID` that starts then.
//!   `RDATE` and `RANGE=THISANDFUTURE` are refused.
//! - Limits: 8 MiB of text, 50,000 events, 200,000 shifts after expansion.

use std::collections::HashSet;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, Unit, Zoned};

use crate::operator::{validate_operator, InvalidOperator};
use crate::rrule;
use crate::Shift;

pub const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_EVENTS: usize = 50_000;
pub const MAX_SHIFTS: usize = 200_000;

/// Why a feed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalError {
    #[error("the feed is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("line {line}: {problem}")]
    At { line: usize, problem: IcalProblem },
}

impl IcalError {
    /// The line the problem was found on, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            IcalError::TooLarge { .. } => None,
            IcalError::At { line, .. } => Some(*line),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalProblem {
    #[error("a continuation line with nothing to continue")]
    LeadingContinuation,
    #[error("not a content line (NAME[;PARAM=VALUE]:VALUE): {0:?}")]
    Malformed(String),
    #[error("{0:?} outside BEGIN:VCALENDAR … END:VCALENDAR")]
    OutsideCalendar(String),
    #[error("END:{found} does not close BEGIN:{expected}")]
    MismatchedEnd { expected: String, found: String },
    #[error("BEGIN:{0} is never closed")]
    Unclosed(String),
    #[error("no VCALENDAR in the feed")]
    NoCalendar,
    #[error("more than {max} events")]
    TooManyEvents { max: usize },
    #[error("more than {max} shifts after expanding recurrences")]
    TooManyShifts { max: usize },
    #[error("{0} appears twice in one event")]
    Duplicate(String),
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("the event has both DTEND and DURATION")]
    EndAndDuration,
    #[error("{property} {value:?} is a floating time (no Z, no TZID); its instant would depend on the reader's zone")]
    Floating { property: String, value: String },
    #[error("{property} {value:?} is an all-day date; on-call shifts need a start and end time")]
    AllDay { property: String, value: String },
    #[error("{property} {value:?} is not a date-time like 20260105T090000Z")]
    BadDateTime { property: String, value: String },
    #[error("unknown TZID {0:?}; feeds must use IANA time-zone names such as Europe/Berlin")]
    UnknownTimeZone(String),
    #[error("DURATION {0:?} is not a positive RFC 5545 duration like PT8H or P1W")]
    BadDuration(String),
    #[error("the event ends ({end}) before or when it starts ({start})")]
    EndNotAfterStart { start: Timestamp, end: Timestamp },
    #[error("ATTENDEE {0:?} is not a mailto: address")]
    NotMailto(String),
    #[error("the event names no operator: no ATTENDEE, and SUMMARY {0:?} is not \"On call: <name>\", \"On Call - <name> - …\" or a bare operator name")]
    NoOperator(String),
    #[error("operator: {0}")]
    Operator(InvalidOperator),
    #[error("RRULE: {0}")]
    Rrule(String),
    #[error("{0} is not supported")]
    Unsupported(String),
}

fn at(line: usize, problem: IcalProblem) -> IcalError {
    IcalError::At { line, problem }
}

/// One unfolded content line.
#[derive(Debug, Clone)]
struct Property {
    line: usize,
    name: String,
    params: Vec<(String, String)>,
    value: String,
}

impl Property {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads every shift of a feed; `schedule` names the schedule the feed stands for.
pub fn parse_ical(text: &str, schedule: &str) -> Result<Vec<Shift>, IcalError> {
    if text.len() > MAX_FEED_BYTES {
        return Err(IcalError::TooLarge {
            size: text.len(),
            max: MAX_FEED_BYTES,
        });
    }
    let events = read_events(text)?;
    let events = events
        .iter()
        .map(|(line, props)| Event::read(*line, props))
        .collect::<Result<Vec<_>, _>>()?;

    // Occurrences replaced by a RECURRENCE-ID event (or cancelled by one).
    let replaced: HashSet<(&str, Timestamp)> = events
        .iter()
        .filter_map(|e| Some((e.uid.as_deref()?, e.recurrence_id?)))
        .collect();

    let mut shifts = Vec::new();
    for event in &events {
        if event.cancelled {
            continue;
        }
        let Some(timing) = &event.timing else {
            continue;
        };
        let starts = match (&event.rrule, event.recurrence_id) {
            (Some((line, rule)), None) => {
                rrule::expand(rule, &timing.start).map_err(|e| at(*line, IcalProblem::Rrule(e)))?
            }
            _ => vec![timing.start.clone()],
        };
        for start in starts {
            let ts = start.timestamp();
            if event.exdates.contains(&ts) {
                continue;
            }
            let is_master = event.recurrence_id.is_none();
            if is_master
                && event
                    .uid
                    .as_deref()
                    .is_some_and(|uid| replaced.contains(&(uid, ts)))
            {
                continue;
            }
            let end = timing.end_for(&start).map_err(|p| at(timing.line, p))?;
            for operator in &event.operators {
                if shifts.len() >= MAX_SHIFTS {
                    return Err(at(
                        event.line,
                        IcalProblem::TooManyShifts { max: MAX_SHIFTS },
                    ));
                }
                shifts.push(Shift {
                    schedule: schedule.to_owned(),
                    operator: operator.clone(),
                    start: ts,
                    end,
                });
            }
        }
    }
    shifts.sort_by(|a, b| (a.start, &a.operator).cmp(&(b.start, &b.operator)));
    Ok(shifts)
}

/// Unfolds the text and returns the properties of each VEVENT (with the line of its
/// BEGIN), checking the component structure on the way.
fn read_events(text: &str) -> Result<Vec<(usize, Vec<Property>)>, IcalError> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = line.strip_prefix([' ', '\t']) {
            match logical.last_mut() {
                Some((_, prev)) => prev.push_str(rest),
                None => return Err(at(i + 1, IcalProblem::LeadingContinuation)),
            }
        } else if !line.is_empty() {
            logical.push((i + 1, line.to_owned()));
        }
    }

    let mut events = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, Vec<Property>)> = None;
    let mut calendars = 0usize;
    for (line, content) in logical {
        let prop = parse_content_line(line, &content)?;
        match prop.name.as_str() {
            "BEGIN" => {
                let name = prop.value.to_ascii_uppercase();
                if stack.is_empty() && name != "VCALENDAR" {
                    return Err(at(line, IcalProblem::OutsideCalendar(content)));
                }
                if stack.len() >= 8 {
                    return Err(at(
                        line,
                        IcalProblem::Unsupported("nesting deeper than 8 components".into()),
                    ));
                }
                if name == "VCALENDAR" {
                    calendars += 1;
                }
                if name == "VEVENT" && stack.len() == 1 {
                    if events.len() >= MAX_EVENTS {
                        return Err(at(line, IcalProblem::TooManyEvents { max: MAX_EVENTS }));
                    }
                    current = Some((line, Vec::new()));
                }
                stack.push((line, name));
            }
            "END" => {
                let name = prop.value.to_ascii_uppercase();
                match stack.pop() {
                    Some((_, open)) if open == name => {}
                    Some((_, open)) => {
                        return Err(at(
                            line,
                            IcalProblem::MismatchedEnd {
                                expected: open,
                                found: name,
                            },
                        ))
                    }
                    None => return Err(at(line, IcalProblem::OutsideCalendar(content))),
                }
                if name == "VEVENT" && stack.len() == 1 {
                    events.extend(current.take());
                }
            }
            _ if stack.is_empty() => return Err(at(line, IcalProblem::OutsideCalendar(content))),
            // Properties of the VEVENT itself, not of a nested VALARM.
            _ if stack.len() == 2 => {
                if let Some((_, props)) = current.as_mut() {
                    props.push(prop);
                }
            }
            _ => {}
        }
    }
    if let Some((line, name)) = stack.pop() {
        return Err(at(line, IcalProblem::Unclosed(name)));
    }
    if calendars == 0 {
        return Err(at(1, IcalProblem::NoCalendar));
    }
    Ok(events)
}

/// `NAME *(";" PARAM "=" VALUE) ":" VALUE` (RFC 5545 §3.1), with quoted parameter
/// values that may contain `:` `;` `,`.
fn parse_content_line(line: usize, content: &str) -> Result<Property, IcalError> {
    let malformed = || at(line, IcalProblem::Malformed(truncate(content)));
    let mut in_quotes = false;
    let mut colon = None;
    let mut cuts = Vec::new();
    for (i, c) in content.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => cuts.push(i),
            ':' if !in_quotes => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon.ok_or_else(malformed)?;
    let head = content.get(..colon).ok_or_else(malformed)?;
    let value = content.get(colon + 1..).ok_or_else(malformed)?;
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts {
        pieces.push(head.get(from..cut).ok_or_else(malformed)?);
        from = cut + 1;
    }
    pieces.push(head.get(from..).ok_or_else(malformed)?);
    let mut pieces = pieces.into_iter();
    let name = pieces.next().unwrap_or_default();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(malformed());
    }
    let mut params = Vec::new();
    for p in pieces {
        let (n, v) = p.split_once('=').ok_or_else(malformed)?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        params.push((n.to_ascii_uppercase(), v.to_owned()));
    }
    Ok(Property {
        line,
        name: name.to_ascii_uppercase(),
        params,
        value: value.to_owned(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// When an event starts and how long it lasts.
#[derive(Debug)]
struct Timing {
    /// The line of DTEND or DURATION (or DTSTART), for errors about the end.
    line: usize,
    start: Zoned,
    length: Length,
}

#[derive(Debug)]
enum Length {
    /// Calendar arithmetic in the start's zone (days keep wall-clock time).
    Civil(Span),
    Exact(SignedDuration),
}

impl Timing {
    fn end_for(&self, start: &Zoned) -> Result<Timestamp, IcalProblem> {
        let end = match &self.length {
            Length::Civil(span) => start.checked_add(*span).map(|z| z.timestamp()),
            Length::Exact(d) => start.timestamp().checked_add(*d),
        }
        .map_err(|_| IcalProblem::Unsupported("an event ending beyond the year 9999".into()))?;
        if end <= start.timestamp() {
            return Err(IcalProblem::EndNotAfterStart {
                start: start.timestamp(),
                end,
            });
        }
        Ok(end)
    }
}

/// The parts of a VEVENT that matter.
#[derive(Debug)]
struct Event {
    line: usize,
    uid: Option<String>,
    cancelled: bool,
    recurrence_id: Option<Timestamp>,
    /// `None` for a cancelled event (its times are not needed, and cancelled Grafana
    /// events end when they start).
    timing: Option<Timing>,
    operators: Vec<String>,
    rrule: Option<(usize, rrule::RRule)>,
    exdates: Vec<Timestamp>,
}

impl Event {
    fn read(line: usize, props: &[Property]) -> Result<Self, IcalError> {
        let single = |name: &'static str| -> Result<Option<&Property>, IcalError> {
            let mut found = props.iter().filter(|p| p.name == name);
            let first = found.next();
            match found.next() {
                Some(dup) => Err(at(dup.line, IcalProblem::Duplicate(name.into()))),
                None => Ok(first),
            }
        };
        if let Some(p) = props.iter().find(|p| p.name == "RDATE") {
            return Err(at(p.line, IcalProblem::Unsupported("RDATE".into())));
        }
        let uid = single("UID")?.map(|p| p.value.clone());
        let cancelled =
            single("STATUS")?.is_some_and(|p| p.value.eq_ignore_ascii_case("CANCELLED"));
        let recurrence_id = match single("RECURRENCE-ID")? {
            Some(p) => {
                if p.param("RANGE").is_some() {
                    return Err(at(
                        p.line,
                        IcalProblem::Unsupported("RECURRENCE-ID;RANGE".into()),
                    ));
                }
                Some(date_time(p)?.timestamp())
            }
            None => None,
        };
        let dtstart = single("DTSTART")?;
        let dtend = single("DTEND")?;
        let duration = single("DURATION")?;
        let rrule = single("RRULE")?;
        let summary = single("SUMMARY")?;
        if cancelled {
            return Ok(Event {
                line,
                uid,
                cancelled,
                recurrence_id,
                timing: None,
                operators: Vec::new(),
                rrule: None,
                exdates: Vec::new(),
            });
        }

        let dtstart = dtstart.ok_or_else(|| at(line, IcalProblem::Missing("DTSTART")))?;
        let start = date_time(dtstart)?;
        let timing = match (dtend, duration) {
            (Some(_), Some(d)) => return Err(at(d.line, IcalProblem::EndAndDuration)),
            (None, None) => return Err(at(line, IcalProblem::Missing("DTEND or DURATION"))),
            (Some(p), None) => {
                let end = date_time(p)?;
                let length = if end.time_zone() == start.time_zone() {
                    Length::Civil(
                        start
                            .until((Unit::Day, &end))
                            .map_err(|_| at(p.line, bad_date_time(p)))?,
                    )
                } else {
                    Length::Exact(end.timestamp().duration_since(start.timestamp()))
                };
                Timing {
                    line: p.line,
                    start,
                    length,
                }
            }
            (None, Some(p)) => Timing {
                line: p.line,
                start,
                length: Length::Civil(
                    parse_duration(&p.value)
                        .ok_or_else(|| at(p.line, IcalProblem::BadDuration(p.value.clone())))?,
                ),
            },
        };
        // Refuse an event that ends before it starts even when it never recurs.
        timing
            .end_for(&timing.start)
            .map_err(|e| at(timing.line, e))?;

        let mut operators = Vec::new();
        for p in props.iter().filter(|p| p.name == "ATTENDEE") {
            if p.param("PARTSTAT")
                .is_some_and(|s| s.eq_ignore_ascii_case("DECLINED"))
            {
                continue;
            }
            let address = p
                .value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
                .and_then(|_| p.value.get(7..))
                .ok_or_else(|| at(p.line, IcalProblem::NotMailto(p.value.clone())))?;
            let who = address.trim().to_ascii_lowercase();
            validate_operator(&who).map_err(|e| at(p.line, IcalProblem::Operator(e)))?;
            if !operators.contains(&who) {
                operators.push(who);
            }
        }
        if operators.is_empty() {
            let (summary_line, text) = match summary {
                Some(p) => (p.line, unescape_text(&p.value)),
                None => (line, String::new()),
            };
            let who = operator_from_summary(&text);
            if who.is_empty() {
                return Err(at(summary_line, IcalProblem::NoOperator(text)));
            }
            validate_operator(&who).map_err(|e| {
                at(
                    summary_line,
                    match e {
                        InvalidOperator::BadCharacter { .. } => {
                            IcalProblem::NoOperator(text.clone())
                        }
                        other => IcalProblem::Operator(other),
                    },
                )
            })?;
            operators.push(who);
        }

        let rrule = match rrule {
            Some(p) => Some((
                p.line,
                rrule::parse(&p.value).map_err(|e| at(p.line, IcalProblem::Rrule(e)))?,
            )),
            None => None,
        };
        let mut exdates = Vec::new();
        for p in props.iter().filter(|p| p.name == "EXDATE") {
            for value in p.value.split(',') {
                let one = Property {
                    value: value.to_owned(),
                    ..p.clone()
                };
                exdates.push(date_time(&one)?.timestamp());
            }
        }
        Ok(Event {
            line,
            uid,
            cancelled,
            recurrence_id,
            timing: Some(timing),
            operators,
            rrule,
            exdates,
        })
    }
}

fn bad_date_time(p: &Property) -> IcalProblem {
    IcalProblem::BadDateTime {
        property: p.name.clone(),
        value: p.value.clone(),
    }
}

/// A DATE-TIME property value: UTC, or local with an IANA `TZID`.
fn date_time(p: &Property) -> Result<Zoned, IcalError> {
    let fail = |problem| Err(at(p.line, problem));
    let value = p.value.trim();
    match p.param("VALUE").map(str::to_ascii_uppercase).as_deref() {
        None | Some("DATE-TIME") => {}
        Some("DATE") => {
            return fail(IcalProblem::AllDay {
                property: p.name.clone(),
                value: value.into(),
            })
        }
        Some(other) => {
            return fail(IcalProblem::Unsupported(format!(
                "{};VALUE={other}",
                p.name
            )))
        }
    }
    if value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()) {
        return fail(IcalProblem::AllDay {
            property: p.name.clone(),
            value: value.into(),
        });
    }
    let (civil, utc) = match value.strip_suffix('Z') {
        Some(civil) => (civil, true),
        None => (value, false),
    };
    let Some(dt) = parse_basic_datetime(civil) else {
        return fail(bad_date_time(p));
    };
    match (utc, p.param("TZID")) {
        (true, Some(_)) => fail(IcalProblem::BadDateTime {
            property: format!("{} with TZID", p.name),
            value: value.into(),
        }),
        (true, None) => dt
            .to_zoned(TimeZone::UTC)
            .or_else(|_| fail(bad_date_time(p))),
        (false, Some(tzid)) => {
            // A leading '/' marks a "globally unique" id (§3.2.19); the rest is the name.
            let name = tzid.strip_prefix('/').unwrap_or(tzid);
            let tz = TimeZone::get(name)
                .map_err(|_| at(p.line, IcalProblem::UnknownTimeZone(tzid.to_owned())))?;
            // Compatible resolution: a time in a gap moves forward, a repeated time is
            // the earlier instant, as §3.3.5 prescribes.
            dt.to_zoned(tz).or_else(|_| fail(bad_date_time(p)))
        }
        (false, None) => fail(IcalProblem::Floating {
            property: p.name.clone(),
            value: value.into(),
        }),
    }
}

/// `YYYYMMDDTHHMMSS` (RFC 5545 §3.3.5 without the `Z`).
pub(crate) fn parse_basic_datetime(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    if b.len() != 15 || b.get(8) != Some(&b'T') {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<i32> {
        let part = s.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = i16::try_from(digits(0, 4)?).ok()?;
    let small = |from, to| digits(from, to).and_then(|v| i8::try_from(v).ok());
    DateTime::new(
        year,
        small(4, 6)?,
        small(6, 8)?,
        small(9, 11)?,
        small(11, 13)?,
        small(13, 15)?,
        0,
    )
    .ok()
}

/// Adds `n` of one unit to a span.
type AddUnit = fn(Span, i64) -> Option<Span>;

/// `dur-value` (§3.3.6): `P[n]W` or `P[nD][T[nH][nM][nS]]`, positive only.
fn parse_duration(value: &str) -> Option<Span> {
    let rest = value.strip_prefix('+').unwrap_or(value);
    let rest = rest.strip_prefix('P')?;
    let (date_part, time_part) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut span = Span::new();
    let mut any = false;
    let mut number = String::new();
    let mut take = |designators: &[(char, AddUnit)], part: &str| -> Option<()> {
        let mut last = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let idx = designators.iter().position(|(d, _)| *d == c)?;
            // Designators appear at most once, in order.
            if idx < last || number.is_empty() {
                return None;
            }
            last = idx + 1;
            let n: i64 = number.parse().ok()?;
            number.clear();
            span = designators.get(idx).and_then(|(_, add)| add(span, n))?;
            any = true;
        }
        number.is_empty().then_some(())
    };
    take(
        &[
            ('W', |s, n| s.try_weeks(n).ok()),
            ('D', |s, n| s.try_days(n).ok()),
        ],
        date_part,
    )?;
    if let Some(t) = time_part {
        take(
            &[
                ('H', |s, n| s.try_hours(n).ok()),
                ('M', |s, n| s.try_minutes(n).ok()),
                ('S', |s, n| s.try_seconds(n).ok()),
            ],
            t,
        )?;
    }
    // Weeks do not mix with other units (§3.3.6), and a zero length is no shift.
    let weeks_mixed = span.get_weeks() != 0 && (span.get_days() != 0 || time_part.is_some());
    (any && !weeks_mixed && span.is_positive()).then_some(span)
}

/// TEXT values (§3.3.11): `\\` `\;` `\,` `\n` `\N`.
fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other @ ('\\' | ';' | ',')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The operator a SUMMARY names, lower-cased; see the module docs for the forms.
fn operator_from_summary(summary: &str) -> String {
    let text = summary.trim();
    let strip = |prefix: &str| {
        text.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .and_then(|_| text.get(prefix.len()..))
    };
    let name = if let Some(rest) = strip("on call - ") {
        rest.split(" - ").next().unwrap_or(rest)
    } else if let Some(rest) = strip("on call:") {
        rest
    } else {
        text
    };
    name.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let hours = |v: &str| {
            parse_duration(v).map(|s| {
                s.total((Unit::Hour, jiff::SpanRelativeTo::days_are_24_hours()))
                    .unwrap_or(-1.0)
            })
        };
        assert_eq!(hours("PT8H"), Some(8.0));
        assert_eq!(hours("P1W"), Some(168.0));
        assert_eq!(hours("P1DT12H"), Some(36.0));
        assert_eq!(hours("PT90M"), Some(1.5));
        for bad in [
            "", "P", "PT", "-PT8H", "P1H", "PT8D", "P1W2D", "PT0S", "PT8H8H", "P1DT", "8H",
        ] {
            assert!(parse_duration(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn summaries() {
        assert_eq!(
            operator_from_summary("On Call - alice@example.com - Primary"),
            "alice@example.com"
        );
        assert_eq!(operator_from_summary("on call: Bob"), "bob");
        assert_eq!(operator_from_summary("  carol "), "carol");
        assert_eq!(
            operator_from_summary("On Call - Jane Doe - Primary"),
            "jane doe"
        );
    }

    #[test]
    fn text_escapes() {
        assert_eq!(unescape_text(r"a\, b\; c\nd\\e\x"), "a, b; c\nd\\e\\x");
    }

    #[test]
    fn content_lines_with_quoted_parameters() {
        let p = parse_content_line(
            3,
            r#"ATTENDEE;CN="Doe, Jane: SRE";PARTSTAT=ACCEPTED:mailto:jane@example.com"#,
        )
        .expect("valid");
        assert_eq!(p.name, "ATTENDEE");
        assert_eq!(p.param("CN"), Some("Doe, Jane: SRE"));
        assert_eq!(p.value, "mailto:jane@example.com");
        assert!(parse_content_line(4, "NO COLON HERE").is_err());
        assert!(parse_content_line(4, ";X=1:v").is_err());
    }
}
