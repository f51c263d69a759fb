//! Who is on call from a YAML rota: hand-offs to the second, DST, overrides, `always`,
//! and the next shift.

use jiff::{SignedDuration, Timestamp};
use palisade_oncall::{parse_rota, Schedules, Shift};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

fn second_before(t: &str) -> Timestamp {
    ts(t) - SignedDuration::from_secs(1)
}

fn schedules(yaml: &str) -> Schedules {
    let rota = parse_rota(yaml).expect("valid rota");
    let mut s = Schedules::new();
    s.add_rota(&rota).expect("adds");
    s
}

fn rota(name: &str, tz: &str, rotation: &str, extra: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n  - name: {name}\n    timeZone: {tz}\n    rotation: {rotation}\n{extra}"
    )
}

fn only(shifts: Vec<Shift>) -> Shift {
    assert_eq!(shifts.len(), 1, "{shifts:?}");
    shifts.into_iter().next().expect("one shift")
}

const WEEKLY_BERLIN: &str = "\
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

#[test]
fn weekly_handoff_changes_hands_exactly_at_the_handoff_second() {
    let s = schedules(WEEKLY_BERLIN);
    let handoff = "2026-01-12T09:00:00+01:00";
    let alice = only(s.on_call("alice", second_before(handoff)));
    assert_eq!(alice.start, ts("2026-01-05T09:00:00+01:00"));
    assert_eq!(alice.end, ts(handoff));
    assert_eq!(alice.schedule, "primary");
    assert!(s.on_call("bob", second_before(handoff)).is_empty());

    assert!(s.on_call("alice", ts(handoff)).is_empty());
    let bob = only(s.on_call("bob", ts(handoff)));
    assert_eq!(
        (bob.start, bob.end),
        (ts(handoff), ts("2026-01-19T09:00:00+01:00"))
    );
    // The rotation wraps around.
    assert_eq!(
        only(s.on_call("alice", ts("2026-01-26T09:00:00+01:00"))).end,
        ts("2026-02-02T09:00:00+01:00")
    );
}

#[test]
fn nobody_is_on_call_before_the_first_handoff() {
    let s = schedules(WEEKLY_BERLIN);
    let first = "2026-01-05T09:00:00+01:00";
    for who in ["alice", "bob", "carol"] {
        assert!(s.on_call(who, second_before(first)).is_empty(), "{who}");
    }
    assert_eq!(only(s.on_call("alice", ts(first))).start, ts(first));
}

#[test]
fn daily_handoff_boundary_in_new_york() {
    let s = schedules(&rota(
        "ops",
        "America/New_York",
        "daily",
        "    handoff: \"17:30\"\n    start: 2026-06-01\n    participants: [alice, bob]\n",
    ));
    let handoff = "2026-06-02T17:30:00-04:00";
    assert_eq!(
        only(s.on_call("alice", second_before(handoff))).end,
        ts(handoff)
    );
    assert!(s.on_call("alice", ts(handoff)).is_empty());
    assert_eq!(only(s.on_call("bob", ts(handoff))).start, ts(handoff));
}

fn hours(shift: &Shift) -> i64 {
    shift.end.duration_since(shift.start).as_hours()
}

#[test]
fn berlin_spring_forward_day_is_23_hours_and_fall_back_day_25() {
    let s = schedules(&rota(
        "eu",
        "Europe/Berlin",
        "daily",
        "    handoff: \"09:00\"\n    start: 2026-03-27\n    participants: [alice, bob]\n",
    ));
    // 2026-03-29: clocks go from 02:00 to 03:00 CET→CEST.
    let bob = only(s.on_call("bob", ts("2026-03-29T08:59:59+02:00")));
    assert_eq!(bob.start, ts("2026-03-28T09:00:00+01:00"));
    assert_eq!(bob.end, ts("2026-03-29T09:00:00+02:00"));
    assert_eq!(hours(&bob), 23);
    assert_eq!(
        only(s.on_call("alice", ts("2026-03-29T09:00:00+02:00"))).start,
        bob.end
    );

    // 2026-10-25: clocks go from 03:00 back to 02:00 CEST→CET.
    let shift = s
        .on_call("alice", ts("2026-10-25T02:30:00+01:00"))
        .into_iter()
        .chain(s.on_call("bob", ts("2026-10-25T02:30:00+01:00")))
        .next()
        .expect("someone is on call");
    assert_eq!(shift.start, ts("2026-10-24T09:00:00+02:00"));
    assert_eq!(shift.end, ts("2026-10-25T09:00:00+01:00"));
    assert_eq!(hours(&shift), 25);
}

#[test]
fn new_york_dst_changes_both_ways() {
    let s = schedules(&rota(
        "us",
        "America/New_York",
        "weekly",
        "    handoff: \"10:00\"\n    handoffDay: friday\n    start: 2026-03-06\n    participants: [alice, bob]\n",
    ));
    // 2026-03-08: EST→EDT inside alice's first week.
    let alice = only(s.on_call("alice", ts("2026-03-08T12:00:00-04:00")));
    assert_eq!(alice.start, ts("2026-03-06T10:00:00-05:00"));
    assert_eq!(alice.end, ts("2026-03-13T10:00:00-04:00"));
    assert_eq!(hours(&alice), 7 * 24 - 1);
    // 2026-11-01: EDT→EST. Weeks from 2026-03-06 to 2026-10-30 is 34, so alice again.
    let week = only(s.on_call("alice", ts("2026-11-01T12:00:00-05:00")));
    assert_eq!(week.start, ts("2026-10-30T10:00:00-04:00"));
    assert_eq!(week.end, ts("2026-11-06T10:00:00-05:00"));
    assert_eq!(hours(&week), 7 * 24 + 1);
}

#[test]
fn a_handoff_inside_the_spring_forward_gap_moves_forward() {
    let s = schedules(&rota(
        "night",
        "Europe/Berlin",
        "daily",
        "    handoff: \"02:30\"\n    start: 2026-03-28\n    participants: [alice, bob]\n",
    ));
    // 02:30 does not exist on 2026-03-29; the hand-off happens at 03:30 CEST.
    let alice = only(s.on_call("alice", ts("2026-03-29T03:00:00+02:00")));
    assert_eq!(alice.end, ts("2026-03-29T03:30:00+02:00"));
    assert_eq!(
        only(s.on_call("bob", ts("2026-03-29T03:30:00+02:00"))).end,
        ts("2026-03-30T02:30:00+02:00")
    );
}

#[test]
fn an_override_splits_the_regular_shift() {
    let s = schedules(WEEKLY_BERLIN);
    // The week of 2026-11-23 is hand-off 46: bob (46 mod 3 = 1).
    let before = only(s.on_call("bob", second_before("2026-11-26T09:00:00+01:00")));
    assert_eq!(before.start, ts("2026-11-23T09:00:00+01:00"));
    assert_eq!(
        before.end,
        ts("2026-11-26T09:00:00+01:00"),
        "bob's grant ends when dave takes over"
    );

    let during = ts("2026-11-26T12:00:00+01:00");
    assert!(
        s.on_call("bob", during).is_empty(),
        "the regular participant is off call during the override"
    );
    let dave = only(s.on_call("dave", during));
    assert_eq!(
        (dave.start, dave.end),
        (
            ts("2026-11-26T09:00:00+01:00"),
            ts("2026-11-26T18:00:00+01:00")
        )
    );
    assert!(s
        .on_call("dave", ts("2026-11-26T18:00:00+01:00"))
        .is_empty());

    let after = only(s.on_call("bob", ts("2026-11-26T18:00:00+01:00")));
    assert_eq!(
        (after.start, after.end),
        (
            ts("2026-11-26T18:00:00+01:00"),
            ts("2026-11-30T09:00:00+01:00")
        )
    );
}

#[test]
fn next_shift_finds_the_next_start() {
    let s = schedules(WEEKLY_BERLIN);
    let during_override = ts("2026-11-26T12:00:00+01:00");
    // bob's own week resumes after the override.
    assert_eq!(
        s.next_shift("bob", during_override).map(|x| x.start),
        Some(ts("2026-11-26T18:00:00+01:00"))
    );
    // carol has week 47, alice week 48.
    assert_eq!(
        s.next_shift("carol", during_override).map(|x| x.start),
        Some(ts("2026-11-30T09:00:00+01:00"))
    );
    assert_eq!(
        s.next_shift("alice", during_override).map(|x| x.start),
        Some(ts("2026-12-07T09:00:00+01:00"))
    );
    assert_eq!(
        s.next_shift("dave", ts("2026-01-01T00:00:00Z"))
            .map(|x| x.start),
        Some(ts("2026-11-26T09:00:00+01:00"))
    );
    assert_eq!(s.next_shift("dave", during_override), None);
    assert_eq!(s.next_shift("mallory", during_override), None);
    // Before the rota starts, the first hand-off is next.
    assert_eq!(
        s.next_shift("alice", ts("2025-06-01T00:00:00Z"))
            .map(|x| x.start),
        Some(ts("2026-01-05T09:00:00+01:00"))
    );
}

#[test]
fn always_keeps_one_operator_on_call() {
    let s = schedules(&rota(
        "demo",
        "UTC",
        "always",
        "    participants: [alice]\n",
    ));
    let shift = only(s.on_call("alice", ts("2026-05-01T00:00:00Z")));
    assert_eq!((shift.start, shift.end), (Timestamp::MIN, Timestamp::MAX));
    assert!(s.on_call("bob", ts("2026-05-01T00:00:00Z")).is_empty());
    assert_eq!(s.next_shift("alice", ts("2026-05-01T00:00:00Z")), None);
}

#[test]
fn always_with_a_start_and_an_override() {
    let s = schedules(&rota(
        "demo",
        "Europe/Berlin",
        "always",
        "    start: 2026-01-01\n    participants: [alice]\n    overrides:\n      - operator: bob\n        start: 2026-02-01T00:00:00Z\n        end: 2026-02-02T00:00:00Z\n",
    ));
    assert!(s.on_call("alice", ts("2025-12-31T22:59:59Z")).is_empty());
    assert_eq!(
        s.next_shift("alice", ts("2025-12-01T00:00:00Z"))
            .map(|x| x.start),
        Some(ts("2026-01-01T00:00:00+01:00"))
    );
    let first = only(s.on_call("alice", ts("2026-01-15T00:00:00Z")));
    assert_eq!(first.end, ts("2026-02-01T00:00:00Z"));
    assert!(s.on_call("alice", ts("2026-02-01T12:00:00Z")).is_empty());
    assert_eq!(
        only(s.on_call("bob", ts("2026-02-01T12:00:00Z"))).end,
        ts("2026-02-02T00:00:00Z")
    );
    assert_eq!(
        s.next_shift("alice", ts("2026-02-01T12:00:00Z"))
            .map(|x| (x.start, x.end)),
        Some((ts("2026-02-02T00:00:00Z"), Timestamp::MAX))
    );
}

#[test]
fn one_shift_per_schedule_across_rotas_and_feeds() {
    let mut s = schedules(WEEKLY_BERLIN);
    let at = ts("2026-01-06T12:00:00Z");
    let feed = vec![Shift {
        schedule: String::new(),
        operator: "alice".into(),
        start: ts("2026-01-06T00:00:00Z"),
        end: ts("2026-01-07T00:00:00Z"),
    }];
    s.add_shifts("secondary", feed.clone()).expect("adds");
    let shifts = s.on_call("alice", at);
    assert_eq!(
        shifts
            .iter()
            .map(|x| x.schedule.as_str())
            .collect::<Vec<_>>(),
        ["primary", "secondary"]
    );
    assert_eq!(s.schedule_names(), ["primary", "secondary"]);

    // A refresh replaces the feed's shifts.
    s.add_shifts("secondary", Vec::new()).expect("replaces");
    assert_eq!(s.on_call("alice", at).len(), 1);

    // A feed may not take over a rota's schedule, nor carry invalid names.
    assert!(s.add_shifts("primary", feed.clone()).is_err());
    assert!(s.add_shifts("Bad Name", feed.clone()).is_err());
    let mut bad = feed;
    bad[0].operator = "Alice".into();
    assert!(s.add_shifts("other", bad).is_err());
}

#[test]
fn next_shift_looks_two_years_ahead_and_no_further() {
    // 800 participants, one day each from 2026-01-01 09:00 UTC: p731's first shift
    // starts 731 days after the first hand-off (inside the 732-day horizon), p799's
    // 799 days after (beyond it).
    let names: Vec<String> = (0..800).map(|i| format!("p{i}")).collect();
    let s = schedules(&rota(
        "long",
        "UTC",
        "daily",
        &format!(
            "    handoff: \"09:00\"\n    start: 2026-01-01\n    participants: [{}]\n",
            names.join(", ")
        ),
    ));
    let before = ts("2026-01-01T00:00:00Z");
    let day = |d: i64| ts("2026-01-01T09:00:00Z") + SignedDuration::from_hours(24 * d);
    for (who, start) in [
        ("p0", 0),
        ("p40", 40),
        ("p200", 200),
        ("p400", 400),
        ("p731", 731),
    ] {
        assert_eq!(
            s.next_shift(who, before).map(|x| x.start),
            Some(day(start)),
            "{who}"
        );
    }
    assert_eq!(s.next_shift("p799", before), None);
}

#[test]
fn a_rota_started_decades_ago_still_hands_off_on_time() {
    // 13,301 daily hand-offs before 2026-06-02: the index of the shift covering an
    // instant is estimated from its date and corrected around the hand-off time of
    // day; the answer must be exact the second before the hand-off and at it.
    let s = schedules(&rota(
        "old",
        "UTC",
        "daily",
        "    handoff: \"09:00\"\n    start: 1990-01-01\n    participants: [alice, bob, carol]\n",
    ));
    let handoff = "2026-06-02T09:00:00Z";
    // Day 13,300 is bob's, day 13,301 carol's.
    let bob = only(s.on_call("bob", second_before(handoff)));
    assert_eq!(
        (bob.start, bob.end),
        (ts("2026-06-01T09:00:00Z"), ts(handoff))
    );
    assert!(s.on_call("carol", second_before(handoff)).is_empty());
    for at in [ts(handoff), ts("2026-06-02T20:00:00Z")] {
        let carol = only(s.on_call("carol", at));
        assert_eq!(
            (carol.start, carol.end),
            (ts(handoff), ts("2026-06-03T09:00:00Z"))
        );
        assert!(s.on_call("bob", at).is_empty());
        assert!(s.on_call("alice", at).is_empty());
    }
    assert_eq!(
        s.next_shift("alice", ts(handoff)).map(|x| x.start),
        Some(ts("2026-06-03T09:00:00Z"))
    );
}

#[test]
fn rota_shifts_between_lists_no_empty_piece_and_nothing_outside_the_range() {
    // dave's override takes alice's whole day 2; erin's splits bob's day 3; gina's
    // ends exactly where the range starts and frank's starts exactly where it ends.
    let overrides = [
        ("gina", "2026-03-01T18:00:00Z", "2026-03-02T00:00:00Z"),
        ("dave", "2026-03-03T00:00:00Z", "2026-03-04T00:00:00Z"),
        ("erin", "2026-03-04T06:00:00Z", "2026-03-04T12:00:00Z"),
        ("frank", "2026-03-05T00:00:00Z", "2026-03-05T06:00:00Z"),
    ]
    .iter()
    .map(|(who, start, end)| {
        format!("      - operator: {who}\n        start: {start}\n        end: {end}\n")
    })
    .collect::<String>();
    let s = schedules(&rota(
        "r",
        "UTC",
        "daily",
        &format!(
            "    handoff: \"00:00\"\n    start: 2026-03-01\n    participants: [alice, bob]\n    overrides:\n{overrides}"
        ),
    ));
    let listed: Vec<(String, Timestamp, Timestamp)> = s
        .shifts_between(ts("2026-03-02T00:00:00Z"), ts("2026-03-05T00:00:00Z"))
        .into_iter()
        .map(|x| (x.operator, x.start, x.end))
        .collect();
    let shift = |who: &str, start: &str, end: &str| (who.to_string(), ts(start), ts(end));
    assert_eq!(
        listed,
        vec![
            shift("bob", "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"),
            shift("dave", "2026-03-03T00:00:00Z", "2026-03-04T00:00:00Z"),
            shift("bob", "2026-03-04T00:00:00Z", "2026-03-04T06:00:00Z"),
            shift("erin", "2026-03-04T06:00:00Z", "2026-03-04T12:00:00Z"),
            shift("bob", "2026-03-04T12:00:00Z", "2026-03-05T00:00:00Z"),
        ]
    );
    // alice's day 2, taken whole by dave, leaves her no shift and is not her next
    // one: that is what frank leaves of her day 4.
    assert!(s.on_call("alice", ts("2026-03-03T00:00:00Z")).is_empty());
    assert_eq!(
        s.next_shift("alice", ts("2026-03-02T12:00:00Z"))
            .map(|x| x.start),
        Some(ts("2026-03-05T06:00:00Z"))
    );
}
