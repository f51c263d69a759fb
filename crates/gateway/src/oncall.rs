//! Step 2's data: who is on call now (YAML rotas and iCalendar feeds, through
//! `palisade-oncall`), and which roles on which clusters each schedule grants.
//!
//! A grant lasts exactly as long as the shift that carries it: `ends_at` is the
//! shift's end, and a request one second later finds no shift and is refused.
//!
//! A schedule fetched from a URL is only as good as its last successful fetch: once
//! that is older than `oncall_feed_max_age_secs` (or before the first one), its shifts
//! grant nothing, and a refusal for want of a grant says `oncall-feed-stale` — an
//! unreachable or broken feed fails closed instead of freezing yesterday's rota in
//! place. Rotas and iCalendar files are local configuration, loaded at start.

use crate::config::{GatewayConfig, Grant};
use crate::pipeline::ActiveGrant;
use palisade_core::time::Timestamp;
use palisade_core::ClusterId;
use palisade_oncall::Schedules;
use std::sync::RwLock;

pub struct OnCall {
    schedules: RwLock<Schedules>,
    grants: Vec<Grant>,
    /// The URL feeds' last successful fetches.
    feeds: crate::feed_age::FeedAges,
}

/// The reason of a refusal for want of a grant while a feed that grants on the
/// cluster is stale: a fixed code, naming no schedule.
pub const FEED_STALE: &str = "oncall-feed-stale: an on-call schedule that grants roles on \
     this cluster could not be refreshed recently enough; its grants are refused until \
     it is";

fn jiff_at(t: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.unix_seconds()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn ours(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_unix_seconds(t.as_second())
}

impl OnCall {
    /// Loads every rota file and iCalendar file of the configuration (URL feeds are
    /// fetched by the gateway and installed with [`OnCall::set_feed`]).
    pub fn load(cfg: &GatewayConfig) -> Result<Self, String> {
        let mut schedules = Schedules::new();
        for path in &cfg.rotas {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("rota {}: {e}", path.display()))?;
            let rota = palisade_oncall::parse_rota(&text)
                .map_err(|e| format!("rota {}: {e}", path.display()))?;
            schedules
                .add_rota(&rota)
                .map_err(|e| format!("rota {}: {e}", path.display()))?;
        }
        for feed in &cfg.icals {
            if let Some(path) = &feed.file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("iCalendar feed {}: {e}", path.display()))?;
                let shifts = palisade_oncall::parse_ical(&text, &feed.schedule)
                    .map_err(|e| format!("iCalendar feed {}: {e}", path.display()))?;
                schedules
                    .add_shifts(&feed.schedule, shifts)
                    .map_err(|e| format!("iCalendar feed {}: {e}", path.display()))?;
            }
        }
        let known = schedules.schedule_names();
        for (i, g) in cfg.grants.iter().enumerate() {
            let from_url = cfg.icals.iter().any(|f| f.schedule == g.schedule);
            if !known.contains(&g.schedule) && !from_url {
                return Err(format!(
                    "grant[{i}] names schedule {:?}, which no rota or feed defines",
                    g.schedule
                ));
            }
        }
        Ok(Self {
            schedules: RwLock::new(schedules),
            grants: cfg.grants.clone(),
            feeds: crate::feed_age::FeedAges::new(
                cfg.icals
                    .iter()
                    .filter(|f| f.url.is_some())
                    .map(|f| f.schedule.clone()),
                cfg.oncall_feed_max_age_secs,
            ),
        })
    }

    /// Replaces one feed's shifts (after fetching its URL at `fetched_at`).
    pub fn set_feed(
        &self,
        schedule: &str,
        ical: &str,
        fetched_at: Timestamp,
    ) -> Result<usize, String> {
        let shifts = palisade_oncall::parse_ical(ical, schedule).map_err(|e| e.to_string())?;
        let n = shifts.len();
        let mut s = self
            .schedules
            .write()
            .map_err(|_| "the schedules lock is poisoned".to_string())?;
        s.add_shifts(schedule, shifts).map_err(|e| e.to_string())?;
        self.feeds.fetched(schedule, fetched_at);
        Ok(n)
    }

    /// The URL feeds' ages and staleness at `now`, for the metrics.
    pub fn feed_ages(&self) -> &crate::feed_age::FeedAges {
        &self.feeds
    }

    /// Whether a stale feed's schedule grants anything on `cluster` at `now`.
    pub fn stale_feed_grants_on(&self, cluster: &ClusterId, now: Timestamp) -> bool {
        self.grants
            .iter()
            .any(|g| g.covers(cluster) && self.feeds.is_stale(&g.schedule, now))
    }

    /// The grants `operator` holds at `now`, on `cluster` if given.
    pub fn grants(
        &self,
        operator: &str,
        cluster: Option<&ClusterId>,
        now: Timestamp,
    ) -> Vec<ActiveGrant> {
        let Ok(schedules) = self.schedules.read() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for shift in schedules.on_call(operator, jiff_at(now)) {
            if self.feeds.is_stale(&shift.schedule, now) {
                continue;
            }
            for g in self.grants.iter().filter(|g| g.schedule == shift.schedule) {
                if cluster.is_some_and(|c| !g.covers(c)) {
                    continue;
                }
                out.push(ActiveGrant {
                    schedule: g.schedule.clone(),
                    roles: g.roles.clone(),
                    clusters: g.clusters.clone(),
                    ends_at: ours(shift.end),
                });
            }
        }
        out
    }

    /// The next shift of `operator` that grants anything: (schedule, start).
    pub fn next_shift(&self, operator: &str, now: Timestamp) -> Option<(String, Timestamp)> {
        let schedules = self.schedules.read().ok()?;
        let shift = schedules.next_shift(operator, jiff_at(now))?;
        Some((shift.schedule.clone(), ours(shift.start)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FEED: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\n\
        DTSTART:20260101T000000Z\r\nDTEND:20270101T000000Z\r\nSUMMARY:On call: alice\r\n\
        END:VEVENT\r\nEND:VCALENDAR\r\n";

    fn oncall(max_age_secs: u64) -> OnCall {
        OnCall {
            schedules: RwLock::new(Schedules::new()),
            grants: vec![Grant {
                schedule: "primary".into(),
                roles: vec!["sre".into()],
                clusters: vec!["*".into()],
            }],
            feeds: crate::feed_age::FeedAges::new(["primary".to_string()], max_age_secs),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(s)
    }

    #[test]
    fn a_feed_grants_nothing_once_its_last_good_fetch_is_too_old() {
        let c = ClusterId::parse("demo").unwrap();
        let on = oncall(900);
        let t0 = 1_780_000_000; // 2026-05-28, inside the shift.
                                // Before the first fetch nothing is known: nothing is granted.
        assert!(on.grants("alice", Some(&c), at(t0)).is_empty());
        assert!(on.stale_feed_grants_on(&c, at(t0)));
        on.set_feed("primary", FEED, at(t0)).unwrap();
        assert_eq!(on.grants("alice", Some(&c), at(t0 + 900)).len(), 1);
        assert!(!on.stale_feed_grants_on(&c, at(t0 + 900)));
        // The feed then fails to refresh: 15 minutes later its shifts grant nothing.
        assert!(on.grants("alice", Some(&c), at(t0 + 901)).is_empty());
        assert!(on.stale_feed_grants_on(&c, at(t0 + 901)));
        let ages = on.feed_ages().at(at(t0 + 901));
        assert_eq!(ages.len(), 1);
        assert_eq!((ages[0].age_secs, ages[0].stale), (Some(901), true));
        // A good fetch restores them.
        on.set_feed("primary", FEED, at(t0 + 1000)).unwrap();
        assert_eq!(on.grants("alice", Some(&c), at(t0 + 1000)).len(), 1);
        // An unparsable fetch is no good fetch.
        assert!(on.set_feed("primary", "garbage", at(t0 + 1800)).is_err());
        assert!(on.grants("alice", Some(&c), at(t0 + 1901)).is_empty());
    }
}
