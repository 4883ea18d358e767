//! Reboot windows as locksmith reads them: `REBOOT_WINDOW_START` is `[Day ]HH:MM` (a weekly
//! window with a day, a daily one without), `REBOOT_WINDOW_LENGTH` a Go duration (`1h30m`).
//! Times are UTC, the machines' clock.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    #[error(
        "reboot window start {0:?} is not [Day ]HH:MM (for example \"Thu 04:00\" or \"04:00\")"
    )]
    Start(String),
    #[error("reboot window length {0:?} is not a duration like 1h30m, 90m or 2h")]
    Length(String),
    #[error("a reboot window needs both a start and a length")]
    Half,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// 0 = Sunday ... 6 = Saturday; None = every day.
    pub day: Option<u8>,
    /// Seconds after midnight.
    pub start: u64,
    pub length: u64,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FULL: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Parses a Go duration made of `h`, `m`, `s` parts.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(mult)?)?;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

impl Window {
    /// Both set, both unset (no window), or an error.
    pub fn parse(start: Option<&str>, length: Option<&str>) -> Result<Option<Window>, WindowError> {
        let (start, length) = match (
            start.filter(|s| !s.trim().is_empty()),
            length.filter(|s| !s.trim().is_empty()),
        ) {
            (None, None) => return Ok(None),
            (Some(s), Some(l)) => (s, l),
            _ => return Err(WindowError::Half),
        };
        let err = || WindowError::Start(start.to_string());
        let words: Vec<&str> = start.split_whitespace().collect();
        let (day, hm) = match words.as_slice() {
            [hm] => (None, *hm),
            [d, hm] => {
                let d = d.to_ascii_lowercase();
                let i = DAYS
                    .iter()
                    .position(|x| *x == d)
                    .or_else(|| FULL.iter().position(|x| *x == d))
                    .ok_or_else(err)?;
                (Some(i as u8), *hm)
            }
            _ => return Err(err()),
        };
        let (h, m) = hm.split_once(':').ok_or_else(err)?;
        let (h, m): (u64, u64) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
        if h > 23 || m > 59 {
            return Err(err());
        }
        let length = parse_go_duration(length)
            .filter(|&l| l > 0)
            .ok_or_else(|| WindowError::Length(length.to_string()))?;
        Ok(Some(Window {
            day,
            start: h * 3600 + m * 60,
            length,
        }))
    }

    fn period(&self) -> u64 {
        if self.day.is_some() {
            7 * 86400
        } else {
            86400
        }
    }

    /// Unix time of the latest window start at or before `now`.
    fn last_start(&self, now: u64) -> u64 {
        let period = self.period();
        // 1970-01-01 was a Thursday (day 4); the first Sunday is 1970-01-04.
        let anchor = match self.day {
            None => self.start,
            Some(d) => (3 + u64::from(d)) * 86400 + self.start,
        };
        if now < anchor {
            return anchor.saturating_sub(period);
        }
        anchor + (now - anchor) / period * period
    }

    pub fn contains(&self, now: u64) -> bool {
        now < self.last_start(now) + self.length
    }

    /// Seconds until the window is open (0 when it is).
    pub fn wait(&self, now: u64) -> u64 {
        if self.contains(now) {
            0
        } else {
            self.last_start(now) + self.period() - now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2027-01-07 is a Thursday.
    const THU_0000: u64 = 1_799_280_000;

    #[test]
    fn weekly_and_daily_windows() {
        assert_eq!(
            crust_channels::tuf::format_time(THU_0000),
            "2027-01-07T00:00:00Z"
        );
        let w = Window::parse(Some("Thu 04:00"), Some("1h30m"))
            .unwrap()
            .unwrap();
        assert_eq!((w.day, w.start, w.length), (Some(4), 4 * 3600, 5400));
        assert!(!w.contains(THU_0000 + 4 * 3600 - 1));
        assert_eq!(w.wait(THU_0000 + 4 * 3600 - 1), 1);
        assert!(w.contains(THU_0000 + 4 * 3600));
        assert!(w.contains(THU_0000 + 5 * 3600 + 1799));
        assert!(!w.contains(THU_0000 + 5 * 3600 + 1800));
        assert_eq!(w.wait(THU_0000 + 5 * 3600 + 1800), 7 * 86400 - 5400);
        assert!(
            w.contains(THU_0000 + 7 * 86400 + 4 * 3600 + 10),
            "next week"
        );
        let d = Window::parse(Some("23:30"), Some("1h")).unwrap().unwrap();
        assert!(d.contains(THU_0000 + 86400 + 23 * 3600 + 1800));
        assert!(d.contains(THU_0000 + 2 * 86400 + 1799), "spans midnight");
        assert!(!d.contains(THU_0000 + 2 * 86400 + 1800));
        let s = Window::parse(Some("sunday 00:00"), Some("24h"))
            .unwrap()
            .unwrap();
        assert!(s.contains(THU_0000 + 3 * 86400 + 5));
        assert!(!s.contains(THU_0000 + 2 * 86400 + 5));
    }

    #[test]
    fn bad_windows() {
        assert_eq!(Window::parse(None, None), Ok(None));
        assert_eq!(Window::parse(Some("04:00"), None), Err(WindowError::Half));
        for s in ["Thu", "Thx 04:00", "25:00", "04:60", "Thu 04:00 x"] {
            assert!(
                matches!(
                    Window::parse(Some(s), Some("1h")),
                    Err(WindowError::Start(_))
                ),
                "{s}"
            );
        }
        for l in ["1d", "h", "0s", "1h30"] {
            assert!(
                matches!(
                    Window::parse(Some("04:00"), Some(l)),
                    Err(WindowError::Length(_))
                ),
                "{l}"
            );
        }
        assert_eq!(parse_go_duration("1h30m15s"), Some(5415));
    }
}
