//! Turning a [`RotaSchedule`] into shifts.
//!
//! Regular shift `k` runs from hand-off `k` to hand-off `k + 1`; each hand-off is a
//! local wall-clock time in the schedule's zone, so shifts spanning a DST change are 23
//! or 25 hours long. Overrides are cut out of the regular shifts and added as shifts of
//! their own; what remains of a regular shift belongs to its participant.

use jiff::civil::DateTime;
use jiff::{SignedDuration, Span, Timestamp};

use crate::rota::{RotaSchedule, Rotation};
use crate::Shift;

/// A query never walks more regular shifts than this (two years of daily hand-offs
/// fit many times over); longer windows are cut short rather than looping.
const MAX_REGULAR_PER_QUERY: usize = 10_000;

/// How far ahead `next_shift` looks past the last thing the schedule defines.
const NEXT_SHIFT_HORIZON: SignedDuration = SignedDuration::from_hours(24 * 366 * 2);

impl RotaSchedule {
    /// The local first hand-off and the days between hand-offs, for rotations that
    /// hand off; `None` for `always`.
    fn cadence(&self) -> Option<(DateTime, i64)> {
        match self.rotation {
            Rotation::Always { .. } => None,
            Rotation::Daily { first_handoff } => Some((first_handoff, 1)),
            Rotation::Weekly { first_handoff } => Some((first_handoff, 7)),
        }
    }

    /// The instant of hand-off `k` (`k >= 0`), or `None` past the calendar's end.
    fn handoff(&self, first: DateTime, period: i64, k: i64) -> Option<Timestamp> {
        let days = Span::new().try_days(k.checked_mul(period)?).ok()?;
        let local = first.checked_add(days).ok()?;
        // `to_zoned` resolves a gap forwards and a fold to the earlier instant.
        Some(local.to_zoned(self.time_zone.clone()).ok()?.timestamp())
    }

    /// The index of the regular shift covering `at`, or `None` before the first
    /// hand-off.
    fn index_at(&self, first: DateTime, period: i64, at: Timestamp) -> Option<i64> {
        let local = at.to_zoned(self.time_zone.clone()).date();
        let days = first.date().until(local).ok()?.get_days();
        let mut k = i64::from(days).div_euclid(period);
        // The estimate is off by at most one around the hand-off time of day.
        for _ in 0..3 {
            if k > 0 && self.handoff(first, period, k)? > at {
                k -= 1;
            } else if self
                .handoff(first, period, k + 1)
                .is_some_and(|next| next <= at)
            {
                k += 1;
            } else {
                break;
            }
        }
        (k >= 0 && self.handoff(first, period, k)? <= at).then_some(k)
    }

    /// Regular shifts (before overrides) that overlap `[from, until)`.
    fn regular_shifts(
        &self,
        from: Timestamp,
        until: Timestamp,
    ) -> Vec<(String, Timestamp, Timestamp)> {
        let Some(who) = self.participants.first() else {
            return Vec::new();
        };
        let Some((first, period)) = self.cadence() else {
            let start = match self.rotation {
                Rotation::Always {
                    first_handoff: Some(dt),
                } => match dt.to_zoned(self.time_zone.clone()) {
                    Ok(z) => z.timestamp(),
                    Err(_) => return Vec::new(),
                },
                _ => Timestamp::MIN,
            };
            return if start < until {
                vec![(who.clone(), start, Timestamp::MAX)]
            } else {
                Vec::new()
            };
        };
        let mut k = self.index_at(first, period, from).unwrap_or(0);
        let mut out = Vec::new();
        let n = self.participants.len() as i64;
        while out.len() < MAX_REGULAR_PER_QUERY {
            let (Some(start), Some(end)) = (
                self.handoff(first, period, k),
                self.handoff(first, period, k + 1),
            ) else {
                break;
            };
            if start >= until {
                break;
            }
            let who = usize::try_from(k.rem_euclid(n))
                .ok()
                .and_then(|i| self.participants.get(i));
            if let Some(who) = who {
                if end > from {
                    out.push((who.clone(), start, end));
                }
            }
            k += 1;
        }
        out
    }

    /// Every shift of this schedule that overlaps `[from, until)`, with overrides
    /// applied: regular shifts split around overrides, plus the overrides themselves.
    pub(crate) fn shifts_between(&self, from: Timestamp, until: Timestamp) -> Vec<Shift> {
        let mut out = Vec::new();
        let mut push = |operator: &str, start: Timestamp, end: Timestamp| {
            if start < end && start < until && end > from {
                out.push(Shift {
                    schedule: self.name.clone(),
                    operator: operator.to_owned(),
                    start,
                    end,
                });
            }
        };
        for (who, start, end) in self.regular_shifts(from, until) {
            // Walk the (sorted, disjoint) overrides inside the shift; the gaps
            // between them stay with the participant.
            let mut cursor = start;
            for o in self
                .overrides
                .iter()
                .filter(|o| o.start < end && o.end > start)
            {
                push(&who, cursor, o.start);
                cursor = cursor.max(o.end);
            }
            push(&who, cursor, end);
        }
        for o in &self.overrides {
            push(&o.operator, o.start, o.end);
        }
        out.sort_by(|a, b| (a.start, &a.operator).cmp(&(b.start, &b.operator)));
        out
    }

    /// Whether `operator` is a participant or has an override: nobody else is ever
    /// on call in this schedule.
    fn names(&self, operator: &str) -> bool {
        self.participants.iter().any(|p| p == operator)
            || self.overrides.iter().any(|o| o.operator == operator)
    }

    /// The shift of `operator` covering `at`, if any.
    pub(crate) fn on_call(&self, operator: &str, at: Timestamp) -> Option<Shift> {
        if !self.names(operator) {
            return None;
        }
        let until = at
            .checked_add(SignedDuration::from_nanos(1))
            .unwrap_or(Timestamp::MAX);
        self.shifts_between(at, until)
            .into_iter()
            .find(|s| s.operator == operator && s.covers(at))
    }

    /// The first shift of `operator` starting after `after`.
    pub(crate) fn next_shift(&self, operator: &str, after: Timestamp) -> Option<Shift> {
        if !self.names(operator) {
            return None;
        }
        // Search windows that double in length, up to a horizon past the later of
        // `after`, the first hand-off and the last override.
        let mut anchor = after;
        if let Some(last) = self.overrides.last() {
            anchor = anchor.max(last.end);
        }
        if let Some((first, _)) = self.cadence() {
            if let Ok(z) = first.to_zoned(self.time_zone.clone()) {
                anchor = anchor.max(z.timestamp());
            }
        }
        let horizon = anchor
            .checked_add(NEXT_SHIFT_HORIZON)
            .unwrap_or(Timestamp::MAX);
        let mut window = SignedDuration::from_hours(24 * 8);
        loop {
            let until = after
                .checked_add(window)
                .unwrap_or(Timestamp::MAX)
                .min(horizon);
            let found = self
                .shifts_between(after, until)
                .into_iter()
                .find(|s| s.operator == operator && s.start > after);
            if found.is_some() || until >= horizon {
                return found;
            }
            window = window.checked_mul(2).unwrap_or(NEXT_SHIFT_HORIZON);
        }
    }
}
