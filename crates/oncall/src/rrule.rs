//! The part of RFC 5545 §3.3.10 (recurrence rules) an on-call feed needs: `FREQ=DAILY`
//! or `FREQ=WEEKLY`, `INTERVAL`, `BYDAY` (plain weekdays), `WKST`, and an end by
//! `COUNT` or `UNTIL`. Anything else is refused, not approximated: a rule read wrongly
//! puts the wrong person on call.

use jiff::civil::{Date, Weekday};
use jiff::{Span, Timestamp, ToSpan, Zoned};

pub const MAX_OCCURRENCES: u32 = 10_000;
/// A rule must end within this many years of its first occurrence.
pub const MAX_YEARS: i16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freq {
    Daily,
    Weekly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Count(u32),
    Until(Timestamp),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RRule {
    freq: Freq,
    interval: i32,
    end: End,
    by_day: Vec<Weekday>,
    week_start: Weekday,
}

/// Parses an `RRULE` value. The error says what is not supported or malformed.
pub fn parse(value: &str) -> Result<RRule, String> {
    let mut freq = None;
    let mut interval = 1;
    let mut count = None;
    let mut until = None;
    let mut by_day = Vec::new();
    let mut week_start = Weekday::Monday;
    let mut seen: Vec<String> = Vec::new();
    for part in value.split(';').filter(|p| !p.is_empty()) {
        let (name, v) = part
            .split_once('=')
            .ok_or_else(|| format!("RRULE part {part:?} is not NAME=VALUE"))?;
        let name = name.to_ascii_uppercase();
        if seen.contains(&name) {
            return Err(format!("RRULE repeats {name}"));
        }
        seen.push(name.clone());
        match name.as_str() {
            "FREQ" => {
                freq = Some(match v.to_ascii_uppercase().as_str() {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    other => {
                        return Err(format!(
                            "FREQ={other} is not supported; only DAILY and WEEKLY are expanded"
                        ))
                    }
                })
            }
            "INTERVAL" => {
                interval = v
                    .parse::<i32>()
                    .ok()
                    .filter(|i| (1..=1000).contains(i))
                    .ok_or_else(|| format!("INTERVAL={v} is not a number from 1 to 1000"))?
            }
            "COUNT" => {
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("COUNT={v} is not a positive number"))?;
                if n > MAX_OCCURRENCES {
                    return Err(format!(
                        "COUNT={n} exceeds the limit of {MAX_OCCURRENCES} occurrences"
                    ));
                }
                count = Some(n);
            }
            "UNTIL" => {
                until = Some(parse_utc(v).ok_or_else(|| {
                    format!("UNTIL={v} is not a UTC date-time like 20261231T235959Z")
                })?)
            }
            "BYDAY" => {
                for day in v.split(',') {
                    let wd = weekday(day).ok_or_else(|| {
                        format!(
                            "BYDAY={v}: only plain weekdays (MO,TU,…) are supported, not {day:?}"
                        )
                    })?;
                    if !by_day.contains(&wd) {
                        by_day.push(wd);
                    }
                }
            }
            "WKST" => {
                week_start = weekday(v).ok_or_else(|| format!("WKST={v} is not a weekday"))?
            }
            other => return Err(format!("RRULE part {other} is not supported")),
        }
    }
    let freq = freq.ok_or("RRULE has no FREQ")?;
    let end = match (count, until) {
        (Some(n), None) => End::Count(n),
        (None, Some(t)) => End::Until(t),
        (Some(_), Some(_)) => return Err("RRULE has both COUNT and UNTIL".into()),
        (None, None) => {
            return Err(
                "RRULE has neither COUNT nor UNTIL; unbounded rules are not expanded".into(),
            )
        }
    };
    Ok(RRule {
        freq,
        interval,
        end,
        by_day,
        week_start,
    })
}

/// The occurrences of `rule` starting at `first` (which is always the first one), in
/// order. Each keeps `first`'s local wall-clock time in its zone.
pub fn expand(rule: &RRule, first: &Zoned) -> Result<Vec<Zoned>, String> {
    let horizon = first
        .checked_add(i64::from(MAX_YEARS).years())
        .map_err(|e| format!("cannot compute the two-year horizon: {e}"))?
        .timestamp();
    if let End::Until(until) = rule.end {
        if until > horizon {
            return Err(format!(
                "UNTIL {until} is more than {MAX_YEARS} years after DTSTART {}",
                first.timestamp()
            ));
        }
    }
    let limit = match rule.end {
        End::Count(n) => n,
        End::Until(_) => MAX_OCCURRENCES,
    };
    let within = |z: &Zoned| match rule.end {
        End::Until(until) => z.timestamp() <= until,
        End::Count(_) => true,
    };

    let mut out = vec![first.clone()];
    let mut candidates = Candidates::new(rule, first.date());
    while let Some(date) = candidates.next() {
        if out.len() as u32 >= limit {
            break;
        }
        let zoned = date
            .to_datetime(first.time())
            .to_zoned(first.time_zone().clone())
            .map_err(|e| format!("occurrence on {date} cannot be placed: {e}"))?;
        if zoned.timestamp() <= first.timestamp() {
            continue;
        }
        if zoned.timestamp() > horizon {
            if matches!(rule.end, End::Count(_)) {
                return Err(format!(
                    "COUNT runs past {MAX_YEARS} years after DTSTART {}",
                    first.timestamp()
                ));
            }
            break;
        }
        if !within(&zoned) {
            break;
        }
        out.push(zoned);
    }
    if matches!(rule.end, End::Until(_)) && out.len() as u32 >= MAX_OCCURRENCES {
        return Err(format!(
            "the rule has more than {MAX_OCCURRENCES} occurrences"
        ));
    }
    Ok(out)
}

/// Candidate dates in order: every `interval` days (filtered by `BYDAY`), or the
/// `BYDAY` days of every `interval`-th week (counted from `WKST`).
struct Candidates {
    freq: Freq,
    interval: i32,
    by_day: Vec<Weekday>,
    step: i32,
    anchor: Date,
    /// Days since the week start for each `BYDAY` day, sorted.
    offsets: Vec<i8>,
    in_week: usize,
    /// Stop after this many steps (the two-year horizon in days is far below it).
    steps_left: u32,
}

impl Candidates {
    fn new(rule: &RRule, first: Date) -> Self {
        let since_wkst = |d: Weekday| d.since(rule.week_start);
        // For WEEKLY without BYDAY, the weekday of DTSTART.
        let mut offsets: Vec<i8> = if rule.by_day.is_empty() {
            vec![since_wkst(first.weekday())]
        } else {
            rule.by_day.iter().map(|d| since_wkst(*d)).collect()
        };
        offsets.sort_unstable();
        let week_start = first
            .checked_sub(i64::from(since_wkst(first.weekday())).days())
            .unwrap_or(first);
        Candidates {
            freq: rule.freq,
            interval: rule.interval,
            anchor: match rule.freq {
                Freq::Daily => first,
                Freq::Weekly => week_start,
            },
            by_day: rule.by_day.clone(),
            step: 0,
            offsets,
            in_week: 0,
            steps_left: 800 * 7,
        }
    }

    fn next(&mut self) -> Option<Date> {
        loop {
            self.steps_left = self.steps_left.checked_sub(1)?;
            match self.freq {
                Freq::Daily => {
                    let n = self.step.checked_mul(self.interval)?;
                    self.step += 1;
                    let date = self
                        .anchor
                        .checked_add(Span::new().try_days(n).ok()?)
                        .ok()?;
                    // For DAILY, BYDAY only filters (RFC 5545 §3.3.10, "limit").
                    if self.by_day.is_empty() || self.by_day.contains(&date.weekday()) {
                        return Some(date);
                    }
                }
                Freq::Weekly => {
                    let Some(offset) = self.offsets.get(self.in_week).copied() else {
                        self.in_week = 0;
                        self.step += 1;
                        continue;
                    };
                    self.in_week += 1;
                    let n = self.step.checked_mul(self.interval)?.checked_mul(7)?;
                    let date = self
                        .anchor
                        .checked_add(Span::new().try_days(n + i32::from(offset)).ok()?)
                        .ok()?;
                    return Some(date);
                }
            }
        }
    }
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code.to_ascii_uppercase().as_str() {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn parse_utc(value: &str) -> Option<Timestamp> {
    let civil = value.strip_suffix('Z')?;
    let dt = crate::ical::parse_basic_datetime(civil)?;
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(y: i16, m: i8, d: i8, h: i8) -> Zoned {
        jiff::civil::date(y, m, d)
            .at(h, 0, 0, 0)
            .in_tz("Europe/Berlin")
            .expect("valid")
    }

    fn dates(rule: &str, first: &Zoned) -> Vec<String> {
        let rule = parse(rule).expect("valid rule");
        expand(&rule, first)
            .expect("expands")
            .iter()
            .map(|z| z.date().to_string())
            .collect()
    }

    #[test]
    fn daily_with_count() {
        let first = berlin(2026, 3, 27, 9);
        assert_eq!(
            dates("FREQ=DAILY;COUNT=3", &first),
            ["2026-03-27", "2026-03-28", "2026-03-29"]
        );
        let rule = parse("FREQ=DAILY;COUNT=3").expect("valid");
        let all = expand(&rule, &first).expect("expands");
        // The wall-clock time is kept across the DST change on 2026-03-29.
        assert!(all
            .iter()
            .all(|z| z.time() == jiff::civil::time(9, 0, 0, 0)));
        assert_eq!(all[2].offset().seconds(), 7200);
    }

    #[test]
    fn weekly_with_byday_interval_and_until() {
        let first = berlin(2026, 1, 5, 9); // a Monday
        assert_eq!(
            dates(
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;UNTIL=20260201T000000Z",
                &first
            ),
            ["2026-01-05", "2026-01-08", "2026-01-19", "2026-01-22"]
        );
    }

    #[test]
    fn until_is_inclusive() {
        let first = berlin(2026, 1, 5, 9);
        assert_eq!(
            dates("FREQ=DAILY;UNTIL=20260106T080000Z", &first),
            ["2026-01-05", "2026-01-06"]
        );
    }

    #[test]
    fn refuses_what_it_does_not_expand() {
        for (rule, needle) in [
            ("FREQ=MONTHLY;COUNT=3", "FREQ=MONTHLY is not supported"),
            ("FREQ=DAILY", "neither COUNT nor UNTIL"),
            (
                "FREQ=DAILY;COUNT=2;UNTIL=20260101T000000Z",
                "both COUNT and UNTIL",
            ),
            ("FREQ=WEEKLY;BYDAY=1MO;COUNT=2", "plain weekdays"),
            ("FREQ=DAILY;BYHOUR=9;COUNT=2", "BYHOUR is not supported"),
            ("FREQ=DAILY;COUNT=10001", "limit of 10000"),
            ("FREQ=DAILY;UNTIL=20260101", "UTC date-time"),
            ("COUNT=2", "no FREQ"),
        ] {
            let e = parse(rule).expect_err(rule);
            assert!(e.contains(needle), "{rule}: {e}");
        }
    }

    #[test]
    fn refuses_rules_longer_than_two_years() {
        let first = berlin(2026, 1, 5, 9);
        let until = parse("FREQ=WEEKLY;UNTIL=20290101T000000Z").expect("parses");
        assert!(expand(&until, &first)
            .expect_err("too long")
            .contains("2 years"));
        let count = parse("FREQ=WEEKLY;COUNT=200").expect("parses");
        assert!(expand(&count, &first)
            .expect_err("too long")
            .contains("2 years"));
        let ok = parse("FREQ=DAILY;COUNT=700").expect("parses");
        assert_eq!(expand(&ok, &first).expect("fits").len(), 700);
    }
}
