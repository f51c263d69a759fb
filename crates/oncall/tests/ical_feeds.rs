//! Shifts from iCalendar feeds shaped like PagerDuty, Opsgenie and Grafana OnCall
//! exports (samples written for these tests), and the feeds that must be refused.

use jiff::Timestamp;
use palisade_oncall::{parse_ical, IcalError, IcalProblem, Schedules, Shift};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

fn summary(shifts: &[Shift]) -> Vec<(String, Timestamp, Timestamp)> {
    shifts
        .iter()
        .map(|s| (s.operator.clone(), s.start, s.end))
        .collect()
}

fn refused(text: &str) -> (usize, IcalProblem) {
    match parse_ical(text, "feed").expect_err("refused") {
        IcalError::At { line, problem } => (line, problem),
        other => panic!("unexpected {other}"),
    }
}

/// PagerDuty: UTC times with VALUE=DATE-TIME, the on-call user as ATTENDEE, and a
/// "On Call - <name> - <schedule>" summary.
const PAGERDUTY_SHAPED: &str = "\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example Paging Service//On-call export//EN
METHOD:PUBLISH
X-WR-CALNAME:Primary
BEGIN:VEVENT
UID:Q1EXAMPLE-20260105
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE-TIME:20260105T080000Z
DTEND;VALUE=DATE-TIME:20260112T080000Z
SUMMARY:On Call - Alice Example - Primary
ATTENDEE;CN=Alice Example:mailto:Alice@Example.COM
URL:https://example.invalid/schedules#Q1EXAMPLE
END:VEVENT
BEGIN:VEVENT
UID:Q1EXAMPLE-20260112
DTSTAMP:20260101T000000Z
DTSTART;VALUE=DATE-TIME:20260112T080000Z
DTEND;VALUE=DATE-TIME:20260119T080000Z
SUMMARY:On Call - bob@example.com - Primary
END:VEVENT
END:VCALENDAR
";

#[test]
fn pagerduty_shaped_feed() {
    let shifts = parse_ical(&crlf(PAGERDUTY_SHAPED), "primary").expect("valid");
    assert_eq!(
        summary(&shifts),
        [
            (
                "alice@example.com".into(),
                ts("2026-01-05T08:00:00Z"),
                ts("2026-01-12T08:00:00Z")
            ),
            (
                "bob@example.com".into(),
                ts("2026-01-12T08:00:00Z"),
                ts("2026-01-19T08:00:00Z")
            ),
        ]
    );
    assert!(shifts.iter().all(|s| s.schedule == "primary"));
}

/// Opsgenie: a VTIMEZONE block and local times with TZID, ATTENDEE with quoted CN.
const OPSGENIE_SHAPED: &str = "\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example Alerting//Schedule export//EN
CALSCALE:GREGORIAN
BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:STANDARD
DTSTART:19701025T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
UID:ops-rotation-1@example.invalid
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Berlin:20261024T090000
DTEND;TZID=Europe/Berlin:20261025T090000
SUMMARY:ops_schedule - Carol
ATTENDEE;CN=\"Carol, SRE\";ROLE=REQ-PARTICIPANT:MAILTO:carol@example.com
BEGIN:VALARM
ACTION:DISPLAY
TRIGGER:-PT15M
DESCRIPTION:Shift starts
END:VALARM
END:VEVENT
END:VCALENDAR
";

#[test]
fn opsgenie_shaped_feed_with_tzid_across_fall_back() {
    let shifts = parse_ical(OPSGENIE_SHAPED, "ops").expect("valid");
    assert_eq!(
        summary(&shifts),
        [(
            "carol@example.com".into(),
            ts("2026-10-24T09:00:00+02:00"),
            ts("2026-10-25T09:00:00+01:00")
        )]
    );
    assert_eq!(shifts[0].end.duration_since(shifts[0].start).as_hours(), 25);
}

/// Grafana OnCall: the username as SUMMARY, UTC times, and removed shifts kept as
/// STATUS:CANCELLED events that end when they start.
const GRAFANA_SHAPED: &str = "\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Example OnCall//Final schedule//EN
X-WR-CALNAME:Backend
BEGIN:VEVENT
SUMMARY:dave
DTSTART:20260301T000000Z
DTEND:20260301T120000Z
DTSTAMP:20260220T000000Z
LAST-MODIFIED:20260220T000000Z
PRIORITY:0
LOCATION:primary
UID:SHIFT1-202603010000-UDAVE
END:VEVENT
BEGIN:VEVENT
SUMMARY:erin
DTSTART:20260301T120000Z
DTEND:20260301T120000Z
STATUS:CANCELLED
UID:SHIFT1-202603011200-UERIN
END:VEVENT
BEGIN:VEVENT
SUMMARY:Erin
DTSTART:20260301T120000Z
DTEND:20260302T000000Z
PRIORITY:1
LOCATION:overrides
UID:OVR1-202603011200-UERIN
END:VEVENT
END:VCALENDAR
";

#[test]
fn grafana_shaped_feed_skips_cancelled_events() {
    let shifts = parse_ical(GRAFANA_SHAPED, "backend").expect("valid");
    assert_eq!(
        summary(&shifts),
        [
            (
                "dave".into(),
                ts("2026-03-01T00:00:00Z"),
                ts("2026-03-01T12:00:00Z")
            ),
            (
                "erin".into(),
                ts("2026-03-01T12:00:00Z"),
                ts("2026-03-02T00:00:00Z")
            ),
        ]
    );
}

#[test]
fn feed_shifts_answer_on_call_and_next_shift() {
    let mut s = Schedules::new();
    s.add_shifts(
        "backend",
        parse_ical(GRAFANA_SHAPED, "backend").expect("valid"),
    )
    .expect("adds");
    let noon = ts("2026-03-01T12:00:00Z");
    assert_eq!(s.on_call("dave", ts("2026-03-01T11:59:59Z")).len(), 1);
    assert!(s.on_call("dave", noon).is_empty());
    assert_eq!(s.on_call("erin", noon)[0].end, ts("2026-03-02T00:00:00Z"));
    assert_eq!(
        s.next_shift("erin", ts("2026-02-01T00:00:00Z"))
            .map(|x| x.start),
        Some(noon)
    );
    assert_eq!(s.next_shift("erin", noon), None);
}

#[test]
fn folded_lines_and_escaped_text_are_read() {
    let text = crlf(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20260105T080000Z\nDTEND:20260105T1\n 60000Z\nSUMMARY:On call:\n  Frank\\, \n\tjr\nEND:VEVENT\nBEGIN:VEVENT\nDTSTART:20260106T080000Z\nDURATION:PT8H\nATTENDEE;CN=Grace:mailto:grace.h\n @example.com\nEND:VEVENT\nEND:VCALENDAR\n",
    );
    // "Frank\, jr" unescapes to "frank, jr": not an operator name, so it is refused...
    let (line, problem) = refused(&text);
    assert_eq!(line, 6, "the SUMMARY starts on line 6");
    assert!(
        matches!(problem, IcalProblem::NoOperator(ref s) if s == "On call: Frank, jr"),
        "{problem}"
    );
    // ...while a folded name that is one reads fine.
    let text = text.replace("Frank\\, \r\n\tjr", "fra\r\n nk");
    let shifts = parse_ical(&text, "feed").expect("valid");
    assert_eq!(
        summary(&shifts),
        [
            (
                "frank".into(),
                ts("2026-01-05T08:00:00Z"),
                ts("2026-01-05T16:00:00Z")
            ),
            (
                "grace.h@example.com".into(),
                ts("2026-01-06T08:00:00Z"),
                ts("2026-01-06T16:00:00Z")
            ),
        ]
    );
}

fn event(body: &str) -> String {
    format!("BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:e1\n{body}END:VEVENT\nEND:VCALENDAR\n")
}

#[test]
fn duration_days_keep_wall_clock_time_across_dst() {
    let text = event(
        "DTSTART;TZID=America/New_York:20261031T170000\nDURATION:P1D\nSUMMARY:On call: heidi\n",
    );
    let shifts = parse_ical(&text, "us").expect("valid");
    assert_eq!(shifts[0].end, ts("2026-11-01T17:00:00-05:00"));
    assert_eq!(shifts[0].end.duration_since(shifts[0].start).as_hours(), 25);
}

#[test]
fn rrule_daily_with_count_across_spring_forward() {
    let text = event(
        "DTSTART;TZID=Europe/Berlin:20260328T090000\nDTEND;TZID=Europe/Berlin:20260329T090000\nRRULE:FREQ=DAILY;COUNT=3\nATTENDEE:mailto:ivan@example.com\n",
    );
    let shifts = parse_ical(&text, "eu").expect("valid");
    let starts: Vec<_> = shifts.iter().map(|s| s.start).collect();
    assert_eq!(
        starts,
        [
            ts("2026-03-28T09:00:00+01:00"),
            ts("2026-03-29T09:00:00+02:00"),
            ts("2026-03-30T09:00:00+02:00")
        ]
    );
    // Each shift ends at the next day's 09:00: the first is 23 hours long.
    assert_eq!(shifts[0].end, starts[1]);
    assert_eq!(shifts[1].end, starts[2]);
}

#[test]
fn rrule_weekly_with_until_exdate_and_a_moved_occurrence() {
    let text = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:wk\nDTSTART:20260105T080000Z\nDURATION:P7D\nRRULE:FREQ=WEEKLY;UNTIL=20260202T080000Z\nEXDATE:20260119T080000Z\nSUMMARY:judy\nEND:VEVENT\nBEGIN:VEVENT\nUID:wk\nRECURRENCE-ID:20260112T080000Z\nDTSTART:20260112T080000Z\nDURATION:P7D\nSUMMARY:kim\nEND:VEVENT\nEND:VCALENDAR\n";
    let shifts = parse_ical(text, "weekly").expect("valid");
    assert_eq!(
        summary(&shifts),
        [
            (
                "judy".into(),
                ts("2026-01-05T08:00:00Z"),
                ts("2026-01-12T08:00:00Z")
            ),
            (
                "kim".into(),
                ts("2026-01-12T08:00:00Z"),
                ts("2026-01-19T08:00:00Z")
            ),
            (
                "judy".into(),
                ts("2026-01-26T08:00:00Z"),
                ts("2026-02-02T08:00:00Z")
            ),
            (
                "judy".into(),
                ts("2026-02-02T08:00:00Z"),
                ts("2026-02-09T08:00:00Z")
            ),
        ]
    );
}

#[test]
fn several_attendees_are_each_on_call_and_declined_ones_are_not() {
    let text = event(
        "DTSTART:20260105T080000Z\nDTEND:20260105T160000Z\nATTENDEE:mailto:a@example.com\nATTENDEE;PARTSTAT=DECLINED:mailto:b@example.com\nATTENDEE:mailto:c@example.com\n",
    );
    let who: Vec<_> = parse_ical(&text, "f")
        .expect("valid")
        .into_iter()
        .map(|s| s.operator)
        .collect();
    assert_eq!(who, ["a@example.com", "c@example.com"]);
}

#[test]
fn malformed_feeds_are_refused_with_the_line() {
    let times = "DTSTART:20260105T080000Z\nDTEND:20260105T160000Z\n";
    let cases: Vec<(String, usize, &str)> = vec![
        (
            event("DTSTART:20260105T080000\nDTEND:20260105T160000Z\nSUMMARY:x\n"),
            5,
            "floating time",
        ),
        (
            event("DTSTART;VALUE=DATE:20260105\nDTEND;VALUE=DATE:20260106\nSUMMARY:x\n"),
            5,
            "all-day",
        ),
        (
            event("DTSTART;TZID=Mars/Olympus:20260105T080000\nDURATION:PT1H\nSUMMARY:x\n"),
            5,
            "unknown TZID",
        ),
        (
            event("DTSTART:20260105T080000Z\nDTEND:20260105T070000Z\nSUMMARY:x\n"),
            6,
            "before or when it starts",
        ),
        (
            event("DTSTART:20260105T080000Z\nDURATION:PT8X\nSUMMARY:x\n"),
            6,
            "DURATION",
        ),
        (
            event(&format!("{times}DURATION:PT1H\nSUMMARY:x\n")),
            7,
            "both DTEND and DURATION",
        ),
        (
            event(&format!("{times}SUMMARY:Primary rotation\n")),
            7,
            "names no operator",
        ),
        (
            event(&format!("{times}ATTENDEE:urn:uuid:1234\n")),
            7,
            "not a mailto",
        ),
        (
            event(&format!("{times}ATTENDEE:mailto:a+b@example.com\n")),
            7,
            "lower-case",
        ),
        (
            event(&format!("{times}SUMMARY:x\nRRULE:FREQ=MONTHLY;COUNT=2\n")),
            8,
            "FREQ=MONTHLY is not supported",
        ),
        (
            event(&format!("{times}SUMMARY:x\nRRULE:FREQ=DAILY\n")),
            8,
            "neither COUNT nor UNTIL",
        ),
        (
            event(&format!(
                "{times}SUMMARY:x\nRRULE:FREQ=DAILY;UNTIL=20300101T000000Z\n"
            )),
            8,
            "2 years",
        ),
        (
            event(&format!("{times}SUMMARY:x\nRDATE:20260107T080000Z\n")),
            8,
            "RDATE is not supported",
        ),
        (
            event(&format!("{times}SUMMARY:x\nSUMMARY:y\n")),
            8,
            "appears twice",
        ),
        (
            event("DTEND:20260105T160000Z\nSUMMARY:x\n"),
            3,
            "no DTSTART",
        ),
        (
            event(&format!("{times}SUMMARY x\n")),
            7,
            "not a content line",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VCALENDAR\n".into(),
            3,
            "does not close BEGIN:VEVENT",
        ),
        ("BEGIN:VCALENDAR\nVERSION:2.0\n".into(), 1, "never closed"),
        ("VERSION:2.0\n".into(), 1, "outside"),
        (
            " folded\nBEGIN:VCALENDAR\nEND:VCALENDAR\n".into(),
            1,
            "continuation",
        ),
        ("\n\n".into(), 1, "no VCALENDAR"),
    ];
    for (text, want_line, needle) in cases {
        let err = parse_ical(&text, "feed").expect_err(needle);
        assert_eq!(err.line(), Some(want_line), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[test]
fn oversized_feeds_are_refused() {
    let big = "X".repeat(8 * 1024 * 1024 + 1);
    assert!(matches!(
        parse_ical(&big, "f"),
        Err(IcalError::TooLarge { .. })
    ));
}

#[test]
fn too_many_events_are_refused() {
    let one = "BEGIN:VEVENT\nDTSTART:20260105T080000Z\nDURATION:PT1H\nSUMMARY:x\nEND:VEVENT\n";
    let text = format!("BEGIN:VCALENDAR\n{}END:VCALENDAR\n", one.repeat(50_001));
    let (_, problem) = refused(&text);
    assert_eq!(problem, IcalProblem::TooManyEvents { max: 50_000 });
}

#[test]
fn overlapping_feed_shifts_give_the_grant_that_ends_first() {
    let text = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20260105T080000Z\nDTEND:20260106T080000Z\nSUMMARY:lena\nEND:VEVENT\nBEGIN:VEVENT\nDTSTART:20260105T120000Z\nDTEND:20260105T180000Z\nSUMMARY:On call: lena\nEND:VEVENT\nEND:VCALENDAR\n";
    let mut s = Schedules::new();
    s.add_shifts("f", parse_ical(text, "f").expect("valid"))
        .expect("adds");
    let now = s.on_call("lena", ts("2026-01-05T13:00:00Z"));
    assert_eq!(now.len(), 1, "one shift per schedule");
    assert_eq!(now[0].end, ts("2026-01-05T18:00:00Z"));
    // Asking again when that grant ends finds the longer shift.
    assert_eq!(
        s.on_call("lena", ts("2026-01-05T18:00:00Z"))[0].end,
        ts("2026-01-06T08:00:00Z")
    );
}
