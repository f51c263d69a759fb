//! The bounds on what the gateway holds (schedules, shifts per feed), which of
//! several schedules' next shifts is named, and the listing of a time range.

use jiff::{SignedDuration, Timestamp};
use palisade_oncall::ical::MAX_SHIFTS;
use palisade_oncall::rota::MAX_SCHEDULES;
use palisade_oncall::{parse_rota, ScheduleError, Schedules, Shift};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

/// A rota of one `always` schedule per name, each with `alice` on call.
fn rota_of(names: impl IntoIterator<Item = String>) -> palisade_oncall::Rota {
    let mut yaml = String::from("apiVersion: palisade.dev/v1\nkind: Rota\nschedules:\n");
    for name in names {
        yaml.push_str(&format!(
            "  - name: {name}\n    timeZone: UTC\n    rotation: always\n    participants: [alice]\n"
        ));
    }
    parse_rota(&yaml).expect("valid rota")
}

fn shift(operator: &str, start: &str, end: &str) -> Shift {
    Shift {
        schedule: String::new(),
        operator: operator.into(),
        start: ts(start),
        end: ts(end),
    }
}

#[test]
fn rota_schedules_beyond_the_maximum_are_refused() {
    let full = rota_of((0..MAX_SCHEDULES).map(|i| format!("s{i}")));
    let mut s = Schedules::new();
    s.add_rota(&full).expect("the maximum is accepted");
    // Reloading the same rota adds nothing new.
    s.add_rota(&full).expect("reload at the maximum");
    let one_more = rota_of(["extra".to_owned()]);
    assert_eq!(s.add_rota(&one_more), Err(ScheduleError::TooManySchedules));
    assert_eq!(s.schedule_names().len(), MAX_SCHEDULES);
    assert!(!s.schedule_names().contains(&"extra".to_owned()));

    // The same bound when the schedules come from two rotas.
    let mut s = Schedules::new();
    s.add_rota(&rota_of((1..MAX_SCHEDULES).map(|i| format!("s{i}"))))
        .expect("one below the maximum");
    let two = rota_of(["s0".to_owned(), "extra".to_owned()]);
    assert_eq!(s.add_rota(&two), Err(ScheduleError::TooManySchedules));
    assert_eq!(s.schedule_names().len(), MAX_SCHEDULES - 1);
}

#[test]
fn feed_beyond_the_maximum_schedules_is_refused() {
    let mut s = Schedules::new();
    for i in 0..MAX_SCHEDULES {
        s.add_shifts(&format!("feed{i}"), Vec::new())
            .expect("up to the maximum");
    }
    let feed = vec![shift(
        "alice",
        "2026-01-06T00:00:00Z",
        "2026-01-07T00:00:00Z",
    )];
    assert_eq!(
        s.add_shifts("one-more", feed.clone()),
        Err(ScheduleError::TooManySchedules)
    );
    assert_eq!(s.schedule_names().len(), MAX_SCHEDULES);
    // Refreshing a feed already held is not adding one.
    s.add_shifts("feed0", feed).expect("refresh at the maximum");
    assert_eq!(s.on_call("alice", ts("2026-01-06T12:00:00Z")).len(), 1);
}

#[test]
fn feed_with_more_than_the_maximum_shifts_is_refused() {
    let start = ts("2026-01-01T00:00:00Z");
    let shifts: Vec<Shift> = (0..=MAX_SHIFTS)
        .map(|i| {
            let at = start + SignedDuration::from_secs(i64::try_from(i).expect("small") * 60);
            Shift {
                schedule: String::new(),
                operator: "alice".into(),
                start: at,
                end: at + SignedDuration::from_secs(60),
            }
        })
        .collect();
    let mut s = Schedules::new();
    let err = s
        .add_shifts("big", shifts.clone())
        .expect_err("one shift too many");
    assert_eq!(
        err,
        ScheduleError::TooManyShifts {
            schedule: "big".into(),
            len: MAX_SHIFTS + 1,
        }
    );
    assert!(s.schedule_names().is_empty());
    let mut at_most = shifts;
    at_most.pop();
    s.add_shifts("big", at_most)
        .expect("the maximum is accepted");
}

#[test]
fn next_shift_is_the_earliest_across_schedules() {
    let mut s = Schedules::new();
    s.add_shifts(
        "a-late",
        vec![shift(
            "alice",
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
        )],
    )
    .expect("adds");
    s.add_shifts(
        "b-early",
        vec![shift(
            "alice",
            "2026-02-01T00:00:00Z",
            "2026-02-02T00:00:00Z",
        )],
    )
    .expect("adds");
    s.add_shifts(
        "c-later",
        vec![shift(
            "alice",
            "2026-04-01T00:00:00Z",
            "2026-04-02T00:00:00Z",
        )],
    )
    .expect("adds");
    let next = s
        .next_shift("alice", ts("2026-01-01T00:00:00Z"))
        .expect("a next shift");
    assert_eq!(
        (next.schedule.as_str(), next.start),
        ("b-early", ts("2026-02-01T00:00:00Z"))
    );

    // A tie goes to the first schedule by name.
    s.add_shifts(
        "a-late",
        vec![shift(
            "alice",
            "2026-02-01T00:00:00Z",
            "2026-02-03T00:00:00Z",
        )],
    )
    .expect("refreshes");
    let next = s
        .next_shift("alice", ts("2026-01-01T00:00:00Z"))
        .expect("a next shift");
    assert_eq!(next.schedule, "a-late");
}

#[test]
fn shifts_between_lists_exactly_the_overlapping_shifts_in_start_order() {
    let mut s = Schedules::new();
    s.add_shifts(
        "feed",
        vec![
            shift("carol", "2026-05-01T02:00:00Z", "2026-05-01T03:00:00Z"),
            shift("alice", "2026-05-01T00:00:00Z", "2026-05-01T01:00:00Z"),
        ],
    )
    .expect("adds");
    s.add_shifts(
        "other",
        vec![shift("bob", "2026-05-01T00:30:00Z", "2026-05-01T02:30:00Z")],
    )
    .expect("adds");
    let listed = |from: &str, until: &str| -> Vec<(String, String)> {
        s.shifts_between(ts(from), ts(until))
            .into_iter()
            .map(|x| (x.schedule, x.operator))
            .collect()
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    // [from, until) against [start, end): touching at either end is not overlapping.
    assert_eq!(
        listed("2026-05-01T01:00:00Z", "2026-05-01T02:00:00Z"),
        [pair("other", "bob")]
    );
    assert_eq!(
        listed("2026-05-01T00:00:00Z", "2026-05-01T03:00:00Z"),
        [
            pair("feed", "alice"),
            pair("other", "bob"),
            pair("feed", "carol")
        ]
    );
    assert!(listed("2026-05-01T03:00:00Z", "2026-05-02T00:00:00Z").is_empty());
}
