//! Step 2's data: who is on call now (YAML rotas and iCalendar feeds, through
//! `palisade-oncall`), and which roles on which clusters each schedule grants.
//!
//! A grant lasts exactly as long as the shift that carries it: `ends_at` is the
//! shift's end, and a request one second later finds no shift and is refused.

use crate::config::{GatewayConfig, Grant};
use crate::pipeline::ActiveGrant;
use palisade_core::time::Timestamp;
use palisade_core::ClusterId;
use palisade_oncall::Schedules;
use std::sync::RwLock;

pub struct OnCall {
    schedules: RwLock<Schedules>,
    grants: Vec<Grant>,
}

fn jiff_at(t: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.unix_seconds()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn ours(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_unix_seconds(t.as_second())
}

impl OnCall {
    /// Loads every rota file and iCalendar file of the configuration (URL feeds are
    /// fetched by [`OnCall::refresh_feeds`]).
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
        })
    }

    /// Replaces one feed's shifts (after fetching its URL).
    pub fn set_feed(&self, schedule: &str, ical: &str) -> Result<usize, String> {
        let shifts = palisade_oncall::parse_ical(ical, schedule).map_err(|e| e.to_string())?;
        let n = shifts.len();
        let mut s = self
            .schedules
            .write()
            .map_err(|_| "the schedules lock is poisoned".to_string())?;
        s.add_shifts(schedule, shifts).map_err(|e| e.to_string())?;
        Ok(n)
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
