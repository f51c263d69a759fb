//! Who is on call, and when.
//!
//! The gateway authorizes an operator only while they hold a *current* on-call
//! [`Shift`], and a grant ends exactly when the shift ends (there is no break-glass).
//! This crate turns the two places schedules live into shifts:
//!
//! - a **YAML rota** ([`parse_rota`]): daily or weekly rotations that hand off at a
//!   local wall-clock time in an IANA time zone, with overrides;
//! - **iCalendar feeds** ([`parse_ical`]): what PagerDuty, Opsgenie and Grafana OnCall
//!   export (RFC 5545).
//!
//! [`Schedules`] holds both and answers the two questions the gateway asks:
//! [`Schedules::on_call`] ("which shifts make this operator on call at this instant?")
//! and [`Schedules::next_shift`] ("when does their next shift start?").
//!
//! The crate is pure logic: callers pass text in, nothing here touches the network or
//! the file system. Time zones come from the tz database bundled into the binary
//! (jiff's `tzdb-bundle-always`), so a hand-off is computed the same way on every
//! machine.
//!
//! # What it protects against, and what not
//!
//! It refuses what it cannot read unambiguously, rather than guessing: floating and
//! all-day iCalendar times, unknown time zones, recurrence rules it does not implement,
//! unknown YAML fields, operator names outside `[a-z0-9._@-]{1,64}`. A refused input
//! yields an error naming the line, never a partial schedule. It cannot tell whether a
//! feed or a rota is *true*: whoever can edit the rota file or the upstream schedule
//! can put anyone on call. Authenticity of that input is the caller's job.
//!
//! # The rota format
//!
//! ```yaml
//! apiVersion: palisade.dev/v1
//! kind: Rota
//! schedules:
//!   - name: primary
//!     timeZone: Europe/Berlin        # IANA name; hand-offs at local wall-clock time
//!     rotation: weekly               # always | daily | weekly
//!     handoff: "09:00"               # local time of each hand-off, HH:MM (24 h)
//!     handoffDay: monday             # weekly only: the weekday of `start`
//!     start: 2026-01-05              # local date of the first hand-off
//!     participants: [alice, bob, carol]
//!     overrides:                     # someone else covers [start, end)
//!       - operator: dave
//!         start: 2026-11-26T09:00:00+01:00
//!         end: 2026-11-26T18:00:00+01:00
//! ```
//!
//! Top level: `apiVersion` (must be `palisade.dev/v1`), `kind` (must be `Rota`) and
//! `schedules` (1 to 256). Each schedule:
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `name` | yes | unique in the file; 1–64 chars `[a-z0-9._-]` |
//! | `timeZone` | yes | IANA name (`Europe/Berlin`, `UTC`) |
//! | `rotation` | yes | `daily`, `weekly` or `always` |
//! | `handoff` | daily, weekly (optional for `always`, default `00:00`) | local `HH:MM` |
//! | `handoffDay` | weekly only | `monday` … `sunday`; must be the weekday of `start` |
//! | `start` | daily, weekly (optional for `always`) | local date `YYYY-MM-DD` of the first hand-off |
//! | `participants` | yes | 1–1000 operator names, in rotation order (`always`: exactly one) |
//! | `overrides` | no | 0–1000 `{operator, start, end}`; RFC 3339 instants with an offset |
//!
//! Rules:
//! - Hand-off `k` (from 0) happens on `start + k` days (daily) or `start + 7k` days
//!   (weekly) at `handoff` local time; participant `k mod n` is on call until hand-off
//!   `k + 1`. Across a DST change the shift is therefore 23 or 25 hours long. A hand-off
//!   time that does not exist that day (inside a spring-forward gap) moves forward by
//!   the gap; one that exists twice (fall-back) is the earlier instant.
//! - Before the first hand-off nobody is on call from the rotation.
//! - An override puts its operator on call for `[start, end)` and takes the rotation's
//!   participant *off* call for that time: the regular shift is split around it.
//!   Overrides of one schedule may not overlap. They apply even before `start`.
//! - `rotation: always` keeps its single participant on call permanently (from the
//!   first hand-off if `start` is given). It exists for demos (`palisade up` puts the
//!   current user on call with it) and for very small teams; overrides still apply.
//! - Unknown fields, duplicated keys, duplicated schedule names, YAML anchors, aliases
//!   and tags are errors. Errors read `line:column: field: problem`, for example
//!   `7:14: schedules[0].handoff: "25:00" is not HH:MM`.
//!
//! # iCalendar feeds
//!
//! One feed is one schedule, named by the caller. From each `VEVENT`:
//! - `DTSTART` / `DTEND` in UTC (`…Z`) or with `TZID=<IANA name>`; floating times and
//!   all-day dates are refused (whose midnight would they be?). `DURATION` may replace
//!   `DTEND`.
//! - The operator is each `ATTENDEE:mailto:<e-mail>` (lower-cased; one shift per
//!   attendee, `PARTSTAT=DECLINED` skipped). Without an attendee, `SUMMARY` names the
//!   operator in one of these forms (matched case-insensitively):
//!   `On Call - <name> - <anything>` (PagerDuty's shape), `On call: <name>` (the form
//!   to use when writing a feed by hand), or just `<name>` (Grafana OnCall writes the
//!   username as the summary). The name is lower-cased and must be a valid operator
//!   name, else the feed is refused.
//! - `STATUS:CANCELLED` events are ignored. `RRULE` is expanded for `FREQ=DAILY` and
//!   `FREQ=WEEKLY` (with `INTERVAL`, `BYDAY` and `WKST`) bounded by `COUNT` or
//!   `UNTIL`, at most 10,000 occurrences within 2 years; anything else is refused.
//!   `EXDATE` removes occurrences and a `RECURRENCE-ID` event replaces one.
//! - At most 8 MiB of text and 50,000 events. Errors name the line.
//!
//! See [`ical`] for the details.

#![forbid(unsafe_code)]

pub mod ical;
mod operator;
pub mod rota;
mod rotation;
mod rrule;
mod schedules;
mod yaml;

pub use ical::{parse_ical, IcalError, IcalProblem};
pub use operator::{validate_operator, InvalidOperator};
pub use rota::{parse_rota, Override, Rota, RotaError, RotaProblem, RotaSchedule, Rotation};
pub use schedules::{ScheduleError, Schedules};

/// One operator on call for one schedule during `[start, end)`.
///
/// `end` is exclusive: at `end` the operator is no longer on call. A shift that never
/// ends (`rotation: always`) has `end == jiff::Timestamp::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shift {
    pub schedule: String,
    pub operator: String,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
}

impl Shift {
    /// Whether the shift covers `at` (`start <= at < end`).
    pub fn covers(&self, at: jiff::Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}
