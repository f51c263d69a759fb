//! When each on-call feed fetched from a URL was last fetched and parsed
//! successfully, and whether that is too long ago to grant anything
//! ([`crate::oncall`]).

use palisade_core::time::Timestamp;
use std::collections::HashMap;
use std::sync::RwLock;

/// The last good fetch of every URL feed, by schedule name.
pub struct FeedAges {
    last_good: RwLock<HashMap<String, Option<Timestamp>>>,
    max_age_secs: u64,
}

/// One feed's state for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedAge {
    pub schedule: String,
    /// Seconds since the last good fetch; `None` before the first.
    pub age_secs: Option<i64>,
    pub stale: bool,
}

impl FeedAges {
    pub fn new(url_feeds: impl IntoIterator<Item = String>, max_age_secs: u64) -> Self {
        Self {
            last_good: RwLock::new(url_feeds.into_iter().map(|s| (s, None)).collect()),
            max_age_secs,
        }
    }

    /// Records a successful fetch and parse of `schedule`'s feed.
    pub fn fetched(&self, schedule: &str, at: Timestamp) {
        if let Ok(mut m) = self.last_good.write() {
            if let Some(slot) = m.get_mut(schedule) {
                *slot = Some(slot.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// Whether `schedule` is a URL feed whose last good fetch is older than the bound
    /// at `now`, or that was never fetched. A schedule that is no URL feed (a rota, an
    /// iCalendar file) is never stale. A poisoned lock counts as stale: fail closed.
    pub fn is_stale(&self, schedule: &str, now: Timestamp) -> bool {
        let Ok(m) = self.last_good.read() else {
            return true;
        };
        match m.get(schedule) {
            None => false,
            Some(None) => true,
            Some(Some(t)) => self.too_old(*t, now),
        }
    }

    fn too_old(&self, fetched: Timestamp, now: Timestamp) -> bool {
        let age = now.unix_seconds().saturating_sub(fetched.unix_seconds());
        u64::try_from(age).is_ok_and(|a| a > self.max_age_secs)
    }

    /// Every URL feed's age and staleness at `now`.
    pub fn at(&self, now: Timestamp) -> Vec<FeedAge> {
        let Ok(m) = self.last_good.read() else {
            return Vec::new();
        };
        let mut out: Vec<FeedAge> = m
            .iter()
            .map(|(schedule, last)| FeedAge {
                schedule: schedule.clone(),
                age_secs: last.map(|t| now.unix_seconds().saturating_sub(t.unix_seconds())),
                stale: last.is_none_or(|t| self.too_old(t, now)),
            })
            .collect();
        out.sort_by(|a, b| a.schedule.cmp(&b.schedule));
        out
    }
}
