//! All schedules the gateway knows, from rotas and feeds, and the two questions asked
//! of them: who is on call now, and when is someone's next shift.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use crate::operator::{validate_operator, InvalidOperator};
use crate::rota::{validate_schedule_name, Rota, RotaProblem, RotaSchedule, MAX_SCHEDULES};
use crate::Shift;

/// Shifts one feed may hold (what [`crate::parse_ical`] can produce).
pub const MAX_FEED_SHIFTS: usize = crate::ical::MAX_SHIFTS;

/// Why schedules could not be added. Nothing is changed when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule name: {0}")]
    InvalidName(RotaProblem),
    #[error("schedule {0:?} comes from a rota; a feed may not use the same name")]
    NameTakenByRota(String),
    #[error("schedule {0:?} comes from a feed; a rota may not use the same name")]
    NameTakenByFeed(String),
    #[error("more than {MAX_SCHEDULES} schedules")]
    TooManySchedules,
    #[error("{len} shifts for schedule {schedule:?}; at most {MAX_FEED_SHIFTS} are accepted")]
    TooManyShifts { schedule: String, len: usize },
    #[error("a shift of schedule {schedule:?}: {problem}")]
    InvalidOperator {
        schedule: String,
        problem: InvalidOperator,
    },
    #[error(
        "a shift of {operator:?} in schedule {schedule:?} ends ({end}) before it starts ({start})"
    )]
    EmptyShift {
        schedule: String,
        operator: String,
        start: Timestamp,
        end: Timestamp,
    },
}

#[derive(Debug, Clone)]
enum Source {
    Rota(RotaSchedule),
    /// A feed's shifts by operator, each list sorted by start.
    Feed(HashMap<String, Vec<Shift>>),
}

/// The schedules an authorization decision is made against.
///
/// To reload a rota, build a new `Schedules` (it is cheap); [`Schedules::add_shifts`]
/// replaces one feed's shifts in place, for periodic refreshes.
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    by_name: BTreeMap<String, Source>,
}

impl Schedules {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) every schedule of `rota`. A name already used by a feed is
    /// refused rather than merged, so a schedule always has exactly one source.
    pub fn add_rota(&mut self, rota: &Rota) -> Result<(), ScheduleError> {
        let mut added = 0usize;
        for s in rota.schedules() {
            match self.by_name.get(s.name()) {
                Some(Source::Feed(_)) => {
                    return Err(ScheduleError::NameTakenByFeed(s.name().into()))
                }
                Some(Source::Rota(_)) => {}
                None => added += 1,
            }
        }
        if self.by_name.len() + added > MAX_SCHEDULES {
            return Err(ScheduleError::TooManySchedules);
        }
        for s in rota.schedules() {
            self.by_name
                .insert(s.name().to_owned(), Source::Rota(s.clone()));
        }
        Ok(())
    }

    /// Sets the shifts of the feed-backed schedule `schedule`, replacing what an
    /// earlier call gave. Each shift's `schedule` field is set to `schedule`.
    pub fn add_shifts(&mut self, schedule: &str, shifts: Vec<Shift>) -> Result<(), ScheduleError> {
        validate_schedule_name(schedule).map_err(ScheduleError::InvalidName)?;
        match self.by_name.get(schedule) {
            Some(Source::Rota(_)) => return Err(ScheduleError::NameTakenByRota(schedule.into())),
            Some(Source::Feed(_)) => {}
            None if self.by_name.len() >= MAX_SCHEDULES => {
                return Err(ScheduleError::TooManySchedules)
            }
            None => {}
        }
        if shifts.len() > MAX_FEED_SHIFTS {
            return Err(ScheduleError::TooManyShifts {
                schedule: schedule.into(),
                len: shifts.len(),
            });
        }
        let mut by_operator: HashMap<String, Vec<Shift>> = HashMap::new();
        for mut shift in shifts {
            validate_operator(&shift.operator).map_err(|problem| {
                ScheduleError::InvalidOperator {
                    schedule: schedule.into(),
                    problem,
                }
            })?;
            if shift.end <= shift.start {
                return Err(ScheduleError::EmptyShift {
                    schedule: schedule.into(),
                    operator: shift.operator,
                    start: shift.start,
                    end: shift.end,
                });
            }
            schedule.clone_into(&mut shift.schedule);
            by_operator
                .entry(shift.operator.clone())
                .or_default()
                .push(shift);
        }
        for list in by_operator.values_mut() {
            list.sort_by_key(|s| (s.start, s.end));
        }
        self.by_name
            .insert(schedule.to_owned(), Source::Feed(by_operator));
        Ok(())
    }

    /// Every shift of `operator` covering `at` (`start <= at < end`), at most one per
    /// schedule, in schedule-name order. Where a feed has overlapping shifts for the
    /// same operator, the one ending first is returned: the grant is never longer
    /// than a shift, and asking again at its end finds the next one.
    pub fn on_call(&self, operator: &str, at: Timestamp) -> Vec<Shift> {
        let mut out = Vec::new();
        for source in self.by_name.values() {
            let found = match source {
                Source::Rota(s) => s.on_call(operator, at),
                Source::Feed(by_operator) => by_operator.get(operator).and_then(|list| {
                    let started = list.partition_point(|s| s.start <= at);
                    list.get(..started)?
                        .iter()
                        .filter(|s| s.covers(at))
                        .min_by_key(|s| s.end)
                        .cloned()
                }),
            };
            out.extend(found);
        }
        out
    }

    /// The earliest shift of `operator`, in any schedule, that starts after `after`
    /// (ties go to the first schedule by name).
    pub fn next_shift(&self, operator: &str, after: Timestamp) -> Option<Shift> {
        let mut best: Option<Shift> = None;
        for source in self.by_name.values() {
            let found = match source {
                Source::Rota(s) => s.next_shift(operator, after),
                Source::Feed(by_operator) => by_operator.get(operator).and_then(|list| {
                    let i = list.partition_point(|s| s.start <= after);
                    list.get(i).cloned()
                }),
            };
            if let Some(f) = found {
                if best.as_ref().is_none_or(|b| f.start < b.start) {
                    best = Some(f);
                }
            }
        }
        best
    }

    /// The names of all schedules, sorted.
    pub fn schedule_names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// Every shift of every schedule overlapping `[from, until)`, sorted by start: for
    /// showing a schedule, not for authorizing.
    pub fn shifts_between(&self, from: Timestamp, until: Timestamp) -> Vec<Shift> {
        let mut out = Vec::new();
        for source in self.by_name.values() {
            match source {
                Source::Rota(s) => out.extend(s.shifts_between(from, until)),
                Source::Feed(by_operator) => out.extend(
                    by_operator
                        .values()
                        .flatten()
                        .filter(|s| s.start < until && s.end > from)
                        .cloned(),
                ),
            }
        }
        out.sort_by(|a, b| {
            (a.start, &a.schedule, &a.operator).cmp(&(b.start, &b.schedule, &b.operator))
        });
        out
    }
}
