//! Working hours in a time zone (`off_hours`): a local time-of-day span on working days.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::config::OffHoursConfig;

/// Working hours, ready to test instants against.
#[derive(Debug, Clone)]
pub(crate) struct WorkingHours {
    zone: TimeZone,
    /// Minutes after local midnight: start inclusive, end exclusive.
    start: u16,
    end: u16,
    /// Working days, Monday first.
    days: [bool; 7],
    /// Holidays (local dates, sorted): not working days.
    holidays: Vec<Date>,
    /// The last answer, for the Unix minute it was for: `minute << 1 | within`. Hours start and
    /// end on a minute and zone offsets are whole minutes, so one answer holds for its minute,
    /// and the time-zone arithmetic runs once a minute instead of once a request.
    last: Arc<AtomicU64>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `HH:MM` as minutes after midnight.
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let ok = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(h) || !ok(m) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn day_index(d: Weekday) -> usize {
    usize::from(d.to_monday_zero_offset().unsigned_abs())
}

impl WorkingHours {
    /// From the config section.
    ///
    /// # Errors
    /// The key (relative to `off_hours`) and what is wrong; never the value.
    pub(crate) fn parse(c: &OffHoursConfig) -> Result<WorkingHours, (&'static str, &'static str)> {
        let zone = TimeZone::get(&c.time_zone)
            .map_err(|_| ("time_zone", "not an IANA time zone name known here (like `America/Chicago`)"))?;
        let start = minutes(&c.start).ok_or(("start", "must be `HH:MM` (00:00 to 23:59)"))?;
        let end = minutes(&c.end).ok_or(("end", "must be `HH:MM` (00:00 to 23:59)"))?;
        if start == end {
            return Err(("end", "must differ from `start`"));
        }
        let mut days = [false; 7];
        for d in &c.days {
            let i = DAYS.iter().position(|x| x == d).ok_or(("days", "each must be one of `mon` … `sun`"))?;
            days[i] = true;
        }
        if !days.contains(&true) {
            return Err(("days", "at least one working day is required"));
        }
        let mut holidays = Vec::with_capacity(c.holidays.len());
        for h in &c.holidays {
            let date = (h.len() == 10).then(|| h.parse::<Date>().ok()).flatten();
            holidays.push(date.ok_or(("holidays", "each must be a date, `YYYY-MM-DD`"))?);
        }
        holidays.sort_unstable();
        Ok(WorkingHours { zone, start, end, days, holidays, last: Arc::new(AtomicU64::new(u64::MAX)) })
    }

    /// Whether `wall` falls within working hours, in the zone's local time.
    pub(crate) fn contains(&self, wall: SystemTime) -> bool {
        let Some(minute) = wall.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs() / 60) else {
            return true;
        };
        // Relaxed: a stale or racing answer is recomputed, never wrong for its own minute.
        let last = self.last.load(Ordering::Relaxed);
        if last >> 1 == minute {
            return last & 1 == 1;
        }
        let within = self.compute(wall);
        self.last.store(minute << 1 | u64::from(within), Ordering::Relaxed);
        within
    }

    fn compute(&self, wall: SystemTime) -> bool {
        let Ok(ts) = Timestamp::try_from(wall) else { return true };
        let local = ts.to_zoned(self.zone.clone());
        let minute =
            u16::try_from(local.hour()).unwrap_or(0) * 60 + u16::try_from(local.minute()).unwrap_or(0);
        let date = local.date();
        let working = |d: Date| self.days[day_index(d.weekday())] && self.holidays.binary_search(&d).is_err();
        if self.start < self.end {
            working(date) && (self.start..self.end).contains(&minute)
        } else {
            // Across midnight: the evening part on a working day, or the morning part after one.
            let after_working_night = date.yesterday().is_ok_and(working);
            (working(date) && minute >= self.start) || (after_working_night && minute < self.end)
        }
    }
}

/// The section's working hours and each listed tenant's (`off_hours.tenants`).
#[derive(Debug, Clone)]
pub(crate) struct Schedules {
    default: WorkingHours,
    /// Sorted by tenant id.
    tenants: Vec<(Box<str>, WorkingHours)>,
}

impl Schedules {
    /// From the config section.
    ///
    /// # Errors
    /// The key (relative to `off_hours`) and what is wrong; never the value.
    pub(crate) fn parse(c: &OffHoursConfig) -> Result<Schedules, (String, &'static str)> {
        let default = WorkingHours::parse(c).map_err(|(key, m)| (key.to_owned(), m))?;
        let mut tenants = Vec::with_capacity(c.tenants.len());
        for (tenant, overrides) in &c.tenants {
            if tenant.is_empty() {
                return Err(("tenants".into(), "tenant ids must not be empty"));
            }
            let hours = WorkingHours::parse(&c.for_tenant(overrides))
                .map_err(|(key, m)| (format!("tenants.{tenant}.{key}"), m))?;
            tenants.push((Box::from(tenant.as_str()), hours));
        }
        // BTreeMap order: already sorted.
        Ok(Schedules { default, tenants })
    }

    /// Whether `wall` falls within the working hours of `tenant` (the section's own when the
    /// tenant has none of its own).
    pub(crate) fn contains(&self, tenant: Option<&str>, wall: SystemTime) -> bool {
        let own = tenant.and_then(|t| self.tenants.binary_search_by(|(k, _)| (**k).cmp(t)).ok());
        own.and_then(|i| self.tenants.get(i)).map_or(&self.default, |(_, h)| h).contains(wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        zone: &str,
        start: &str,
        end: &str,
        days: &[&str],
    ) -> Result<WorkingHours, (&'static str, &'static str)> {
        WorkingHours::parse(&OffHoursConfig {
            time_zone: zone.into(),
            start: start.into(),
            end: end.into(),
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            ..OffHoursConfig::default()
        })
    }

    fn hours(zone: &str, start: &str, end: &str, days: &[&str]) -> WorkingHours {
        parse(zone, start, end, days).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::from(rfc3339.parse::<Timestamp>().unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn local_time_with_daylight_saving_decides() {
        let h = hours("America/Chicago", "07:00", "19:00", &["mon", "tue", "wed", "thu", "fri"]);
        // Monday 2026-12-07: CST (UTC-6).
        assert!(!h.contains(at("2026-12-07T12:59:00Z")), "06:59 local");
        assert!(h.contains(at("2026-12-07T13:00:00Z")), "07:00 local");
        assert!(h.contains(at("2026-12-07T13:00:59Z")), "the same minute, remembered");
        assert!(!h.contains(at("2026-12-07T12:59:59Z")), "another minute, computed again");
        assert!(!h.contains(at("2026-12-08T01:00:00Z")), "19:00 local is past the end");
        // Wednesday 2026-07-01: CDT (UTC-5); a fixed -06:00 would call 07:30 06:30.
        assert!(h.contains(at("2026-07-01T12:30:00Z")), "07:30 CDT");
        // Saturday 2026-12-05, midday.
        assert!(!h.contains(at("2026-12-05T18:00:00Z")));
    }

    #[test]
    fn a_span_across_midnight_belongs_to_the_day_it_starts() {
        let h = hours("UTC", "22:00", "06:00", &["fri"]);
        assert!(h.contains(at("2026-12-04T23:00:00Z")), "Friday 23:00");
        assert!(h.contains(at("2026-12-05T05:59:00Z")), "Saturday 05:59, the Friday night shift");
        assert!(!h.contains(at("2026-12-05T06:00:00Z")));
        assert!(!h.contains(at("2026-12-05T23:00:00Z")), "Saturday night is not worked");
        assert!(!h.contains(at("2026-12-04T05:00:00Z")), "Friday 05:00 belongs to Thursday's night");
    }

    #[test]
    fn a_tenant_keeps_its_own_hours_in_its_own_zone() {
        let mut c = OffHoursConfig {
            time_zone: "America/Chicago".into(),
            days: ["mon", "tue", "wed", "thu", "fri"].map(str::to_owned).to_vec(),
            ..OffHoursConfig::default()
        };
        let berlin = crate::config::TenantHoursConfig {
            time_zone: Some("Europe/Berlin".into()),
            start: Some("08:00".into()),
            ..Default::default()
        };
        c.tenants.insert("tenant-de".into(), berlin);
        let s = Schedules::parse(&c).unwrap_or_else(|e| panic!("{e:?}"));
        // Monday 2026-12-07 13:30 UTC: 14:30 in Berlin (CET), 07:30 in Chicago (CST).
        let t = at("2026-12-07T13:30:00Z");
        assert!(s.contains(Some("tenant-de"), t));
        assert!(s.contains(Some("tenant-us"), t), "a tenant without hours of its own: the section's");
        assert!(s.contains(None, t));
        // 07:30 UTC: 08:30 in Berlin, 01:30 in Chicago.
        let t = at("2026-12-07T07:30:00Z");
        assert!(s.contains(Some("tenant-de"), t));
        assert!(!s.contains(Some("tenant-us"), t));
        // 18:30 UTC: 19:30 in Berlin (past its end, inherited 19:00), 12:30 in Chicago.
        let t = at("2026-12-07T18:30:00Z");
        assert!(!s.contains(Some("tenant-de"), t));
        assert!(s.contains(None, t));

        let bad = crate::config::TenantHoursConfig { start: Some("8am".into()), ..Default::default() };
        c.tenants.insert("tenant-x".into(), bad);
        assert_eq!(Schedules::parse(&c).err().map(|(k, _)| k).as_deref(), Some("tenants.tenant-x.start"));
    }

    #[test]
    fn a_holiday_is_not_worked_but_the_night_before_still_ends_as_usual() {
        let mut c = OffHoursConfig {
            time_zone: "Europe/Berlin".into(),
            holidays: vec!["2026-12-25".into(), "2026-12-24".into()],
            ..OffHoursConfig::default()
        };
        let h = WorkingHours::parse(&c).unwrap_or_else(|e| panic!("{e:?}"));
        // Friday 2026-12-25 10:00 CET (09:00 UTC): a Friday, but a holiday.
        assert!(!h.contains(at("2026-12-25T09:00:00Z")));
        assert!(!h.contains(at("2026-12-24T09:00:00Z")), "Thursday the 24th, listed too");
        assert!(h.contains(at("2026-12-23T09:00:00Z")), "Wednesday the 23rd is worked");
        // A night shift (22:00 to 06:00) starting on the 23rd ends on the morning of the 24th.
        (c.start, c.end) = ("22:00".into(), "06:00".into());
        let night = WorkingHours::parse(&c).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(night.contains(at("2026-12-24T04:00:00Z")), "05:00 on the 24th, Wednesday's night");
        assert!(!night.contains(at("2026-12-24T22:00:00Z")), "23:00 on the 24th, a holiday's night");
        assert!(!night.contains(at("2026-12-25T04:00:00Z")), "05:00 on the 25th, after a holiday's night");
        c.holidays = vec!["24.12.2026".into()];
        assert_eq!(WorkingHours::parse(&c).err().map(|(k, _)| k), Some("holidays"));
        c.holidays = vec!["2026-02-30".into()];
        assert_eq!(WorkingHours::parse(&c).err().map(|(k, _)| k), Some("holidays"));
    }

    #[test]
    fn settings_are_checked() {
        let err = |zone: &str, start: &str, end: &str, days: &[&str]| {
            parse(zone, start, end, days).err().map(|(k, _)| k)
        };
        assert_eq!(err("Mars/Olympus", "07:00", "19:00", &["mon"]), Some("time_zone"));
        assert_eq!(err("UTC", "7:00", "19:00", &["mon"]), Some("start"));
        assert_eq!(err("UTC", "07:00", "24:00", &["mon"]), Some("end"));
        assert_eq!(err("UTC", "07:00", "07:00", &["mon"]), Some("end"));
        assert_eq!(err("UTC", "07:00", "19:00", &["monday"]), Some("days"));
        assert_eq!(err("UTC", "07:00", "19:00", &[]), Some("days"));
        assert_eq!(err("Europe/Berlin", "07:00", "19:00", &["sat", "sun"]), None);
    }
}
