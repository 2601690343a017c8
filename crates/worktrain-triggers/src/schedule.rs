//! Cron schedules with time zones, and the pure decision of what is due at a given
//! moment (the clock is a parameter, so DST transitions, overlap and misfires are tested
//! without waiting).
//!
//! * 5 fields (`m h dom mon dow`) or 6 with seconds first. Day-of-week numbers follow
//!   standard cron in both forms — `0` or `7` is Sunday, `1` Monday … `6` Saturday —
//!   (the `cron` crate counts 1 = Sunday; numbers are translated), names `MON`… work too.
//! * A local time that does not exist on a spring-forward day is skipped. A local time
//!   that occurs twice on a fall-back day fires once — unless the hour field is a
//!   wildcard (`*`, `*/n`), when it fires as real time passes.
//! * Firings more than [`MISFIRE_GRACE`] late (the daemon was down or busy) are missed:
//!   recorded, not run — or, with `misfire: catch_up`, the latest `max_catch_up` run.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::config::{Misfire, Schedule};

/// How late a firing may be and still count as on time.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// Most due times examined in one call (a per-second schedule after a week offline).
pub const MAX_SCAN: usize = 10_000;

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    tz: chrono_tz::Tz,
    hour_wildcard: bool,
}

/// Translate standard day-of-week numbers (0/7 = Sunday) to the `cron` crate's (1 = Sunday).
fn translate_dow(field: &str) -> Result<String, String> {
    let num = |s: &str| -> Result<Option<u32>, String> {
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            let n: u32 = s.parse().map_err(|_| format!("bad day of week `{s}`"))?;
            if n > 7 {
                return Err(format!(
                    "day of week `{n}` is out of range (0–7, 0 and 7 are Sunday)"
                ));
            }
            Ok(Some(n))
        } else {
            Ok(None)
        }
    };
    let map = |n: u32| if n == 7 { 1 } else { n + 1 };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let translated = match range.split_once('-') {
            Some((a, b)) => match (num(a)?, num(b)?) {
                (Some(a), Some(7)) if a > 0 && step.is_none() => {
                    // `5-7` (Fri–Sun) becomes `6-7,1`.
                    out.push("1".to_owned());
                    format!("{}-7", map(a))
                }
                (Some(a), Some(b)) => format!("{}-{}", map(a), map(b)),
                _ => range.to_owned(),
            },
            None => match num(range)? {
                Some(n) => map(n).to_string(),
                None => range.to_owned(),
            },
        };
        out.push(match step {
            Some(s) => format!("{translated}/{s}"),
            None => translated,
        });
    }
    Ok(out.join(","))
}

impl CronSchedule {
    /// Parse a 5- or 6-field expression and an IANA zone.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, String> {
        let tz = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            format!(
                "unknown time zone `{timezone}` (an IANA name such as `Europe/Berlin` or `UTC`)"
            )
        })?;
        let mut fields: Vec<String> = expr.split_whitespace().map(str::to_owned).collect();
        match fields.len() {
            5 => fields.insert(0, "0".into()),
            6 => {}
            n => {
                return Err(format!(
                    "cron `{expr}` has {n} fields; expected 5 (`m h dom mon dow`) or 6 (seconds first)"
                ));
            }
        }
        let hour_wildcard = fields[2] == "*" || fields[2].starts_with("*/");
        fields[5] = translate_dow(&fields[5]).map_err(|m| format!("invalid cron `{expr}`: {m}"))?;
        let schedule = cron::Schedule::from_str(&fields.join(" "))
            .map_err(|e| format!("invalid cron `{expr}`: {e}"))?;
        Ok(Self {
            schedule,
            tz,
            hour_wildcard,
        })
    }

    /// Due times strictly after `after`, in UTC, in order.
    pub fn after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let local = after.with_timezone(&self.tz);
        let mut prev_local: Option<chrono::NaiveDateTime> = None;
        self.schedule.after(&local).filter_map(move |t| {
            let naive = t.naive_local();
            // The second occurrence of a repeated local time (fall-back day).
            let repeat = prev_local == Some(naive) && !self.hour_wildcard;
            prev_local = Some(naive);
            (!repeat).then(|| t.with_timezone(&Utc))
        })
    }

    /// The next due time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.after(after).next()
    }

    /// The IANA time zone the cron expression is evaluated in.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }
}

/// What to do about one due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// Start a session for it.
    Fire {
        /// The due time.
        scheduled_at: DateTime<Utc>,
    },
    /// Record it as missed.
    Missed {
        /// The due time.
        scheduled_at: DateTime<Utc>,
    },
}

/// The firings due in `(last, now]` under `policy`, and the new `last` to store. With no
/// `last` (a schedule seen for the first time) nothing is due and `now` is stored: a new
/// schedule does not replay the past.
pub fn due(
    cron: &CronSchedule,
    policy: &Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Vec<Firing>, DateTime<Utc>) {
    let Some(last) = last else {
        return (Vec::new(), now);
    };
    let times: Vec<DateTime<Utc>> = cron
        .after(last)
        .take_while(|t| *t <= now)
        .take(MAX_SCAN)
        .collect();
    let Some(&newest) = times.last() else {
        return (Vec::new(), last.max(now.min(last)));
    };
    let grace = chrono::Duration::from_std(MISFIRE_GRACE).unwrap_or_default();
    let late = |t: &DateTime<Utc>| now - *t > grace;
    let mut firings = Vec::with_capacity(times.len());
    let catch_up = usize::try_from(policy.max_catch_up).unwrap_or(usize::MAX);
    let late_count = times.iter().filter(|t| late(t)).count();
    let mut late_seen = 0;
    for t in times {
        if !late(&t) {
            firings.push(Firing::Fire { scheduled_at: t });
            continue;
        }
        late_seen += 1;
        let run_it = match policy.misfire {
            Misfire::Skip => false,
            // The latest `max_catch_up` of the missed ones run.
            Misfire::CatchUp => late_count - late_seen < catch_up,
        };
        firings.push(if run_it {
            Firing::Fire { scheduled_at: t }
        } else {
            Firing::Missed { scheduled_at: t }
        });
    }
    (firings, newest)
}

/// Parse an RFC 3339 time (tests and the store).
pub fn utc(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds since the epoch as a UTC time.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overlap;

    fn policy(misfire: Misfire, max_catch_up: u32) -> Schedule {
        Schedule {
            cron: String::new(),
            timezone: "UTC".into(),
            overlap: Overlap::Skip,
            misfire,
            max_catch_up,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        utc(s).unwrap()
    }

    #[test]
    fn standard_day_of_week_numbers() {
        // 1-5 is Monday to Friday, as in every crontab.
        let c = CronSchedule::parse("0 9 * * 1-5", "UTC").unwrap();
        // 2024-03-01 is a Friday; next after it: Monday 2024-03-04 09:00.
        assert_eq!(
            c.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-04T09:00:00Z"))
        );
        let sun = CronSchedule::parse("0 9 * * 0", "UTC").unwrap();
        assert_eq!(
            sun.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-03T09:00:00Z"))
        );
        let sun7 = CronSchedule::parse("0 9 * * 7", "UTC").unwrap();
        assert_eq!(
            sun7.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-03T09:00:00Z"))
        );
        let weekend = CronSchedule::parse("0 9 * * 6-7", "UTC").unwrap();
        assert_eq!(
            weekend.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-02T09:00:00Z"))
        );
        assert_eq!(
            weekend.next_after(t("2024-03-02T10:00:00Z")),
            Some(t("2024-03-03T09:00:00Z"))
        );
        assert_eq!(
            weekend.next_after(t("2024-03-03T10:00:00Z")),
            Some(t("2024-03-09T09:00:00Z"))
        );
        let named = CronSchedule::parse("0 9 * * MON", "UTC").unwrap();
        assert_eq!(
            named.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-04T09:00:00Z"))
        );
        let secs = CronSchedule::parse("30 0 9 * * 1", "UTC").unwrap();
        assert_eq!(
            secs.next_after(t("2024-03-01T10:00:00Z")),
            Some(t("2024-03-04T09:00:30Z"))
        );
    }

    #[test]
    fn bad_expressions_are_explained() {
        assert!(
            CronSchedule::parse("* * *", "UTC")
                .unwrap_err()
                .contains("3 fields")
        );
        assert!(
            CronSchedule::parse("0 9 * * 8", "UTC")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(CronSchedule::parse("61 9 * * *", "UTC").is_err());
        assert!(
            CronSchedule::parse("0 9 * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("time zone")
        );
    }

    #[test]
    fn dst_spring_forward_skips_the_missing_local_time() {
        // Europe/Berlin: 2024-03-31 02:00 → 03:00. 02:30 does not exist that day.
        let c = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let times: Vec<_> = c.after(t("2024-03-30T00:00:00Z")).take(2).collect();
        assert_eq!(
            times,
            vec![t("2024-03-30T01:30:00Z"), t("2024-04-01T00:30:00Z")]
        );
    }

    #[test]
    fn dst_fall_back_fires_a_fixed_time_once_and_wildcards_as_time_passes() {
        // Europe/Berlin: 2024-10-27 03:00 CEST → 02:00 CET; 02:30 happens twice.
        let c = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let times: Vec<_> = c.after(t("2024-10-26T12:00:00Z")).take(2).collect();
        assert_eq!(
            times,
            vec![t("2024-10-27T00:30:00Z"), t("2024-10-28T01:30:00Z")]
        );
        let every = CronSchedule::parse("30 * * * *", "Europe/Berlin").unwrap();
        let times: Vec<_> = every.after(t("2024-10-26T23:45:00Z")).take(3).collect();
        assert_eq!(
            times,
            vec![
                t("2024-10-27T00:30:00Z"),
                t("2024-10-27T01:30:00Z"),
                t("2024-10-27T02:30:00Z")
            ]
        );
    }

    #[test]
    fn first_sight_does_not_replay_the_past() {
        let c = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let now = t("2024-01-01T12:00:30Z");
        let (f, last) = due(&c, &policy(Misfire::Skip, 1), None, now);
        assert!(f.is_empty());
        assert_eq!(last, now);
    }

    #[test]
    fn on_time_firings_fire_and_late_ones_are_missed() {
        let c = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        // Down from 09:10 to 12:00:20: 10:00 and 11:00 are late, 12:00 is on time.
        let (f, last) = due(
            &c,
            &policy(Misfire::Skip, 1),
            Some(t("2024-01-01T09:10:00Z")),
            t("2024-01-01T12:00:20Z"),
        );
        assert_eq!(
            f,
            vec![
                Firing::Missed {
                    scheduled_at: t("2024-01-01T10:00:00Z")
                },
                Firing::Missed {
                    scheduled_at: t("2024-01-01T11:00:00Z")
                },
                Firing::Fire {
                    scheduled_at: t("2024-01-01T12:00:00Z")
                },
            ]
        );
        assert_eq!(last, t("2024-01-01T12:00:00Z"));
        // Nothing is due twice.
        let (again, _) = due(
            &c,
            &policy(Misfire::Skip, 1),
            Some(last),
            t("2024-01-01T12:00:50Z"),
        );
        assert!(again.is_empty());
    }

    #[test]
    fn catch_up_runs_the_latest_missed_ones() {
        let c = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let (f, _) = due(
            &c,
            &policy(Misfire::CatchUp, 2),
            Some(t("2024-01-01T06:30:00Z")),
            t("2024-01-01T10:30:00Z"),
        );
        assert_eq!(
            f,
            vec![
                Firing::Missed {
                    scheduled_at: t("2024-01-01T07:00:00Z")
                },
                Firing::Missed {
                    scheduled_at: t("2024-01-01T08:00:00Z")
                },
                Firing::Fire {
                    scheduled_at: t("2024-01-01T09:00:00Z")
                },
                Firing::Fire {
                    scheduled_at: t("2024-01-01T10:00:00Z")
                },
            ]
        );
    }
}
