//! The backup freeze as holds: each `quiesce` adds one, each `unquiesce` removes one, and a
//! hold may carry a lease after which it lapses on its own, so a backup job that dies cannot
//! freeze the keystore forever.

use serde::Serialize;
use std::time::{Duration, Instant};

use super::KmsError;
use crate::keystore::Timestamp;

/// Longer leases are almost certainly a typo (seconds taken for minutes, say).
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Quiesce { lease: Option<Duration> },
    Unquiesce,
}

impl Command {
    /// `quiesce` or `1`, `quiesce SECONDS`, `unquiesce` or `0`; blanks around and case ignored.
    pub fn parse(text: &str) -> Result<Command, KmsError> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["quiesce"] | ["1"] => Ok(Command::Quiesce { lease: None }),
            ["unquiesce"] | ["0"] => Ok(Command::Unquiesce),
            ["quiesce", secs] => {
                let n: u64 = secs.parse().map_err(|_| {
                    KmsError::Invalid(format!("lease \"{secs}\" is not a whole number of seconds"))
                })?;
                let lease = Duration::from_secs(n);
                if n == 0 || lease > MAX_LEASE {
                    return Err(KmsError::Invalid(format!(
                        "lease of {n} s is out of range (1 to {} s)",
                        MAX_LEASE.as_secs()
                    )));
                }
                Ok(Command::Quiesce { lease: Some(lease) })
            }
            _ => Err(KmsError::Invalid(format!(
                "unknown command {:?} (expected quiesce, quiesce SECONDS or unquiesce)",
                text.trim()
            ))),
        }
    }
}

#[derive(Debug, Clone)]
struct Hold {
    lease: Option<(Instant, Timestamp)>,
}

#[derive(Debug, Default)]
pub struct Freeze {
    holds: Vec<Hold>,
    since: Option<Timestamp>,
}

#[derive(Serialize)]
pub struct FreezeStatus {
    pub quiesced: bool,
    pub holds: usize,
    pub since: Option<String>,
    pub leases: Vec<String>,
}

impl Freeze {
    pub fn is_frozen(&self) -> bool {
        !self.holds.is_empty()
    }

    pub fn add(&mut self, lease: Option<Duration>, now: Instant, wall: Timestamp) {
        if self.holds.is_empty() {
            self.since = Some(wall);
        }
        let lease = lease.map(|d| (now + d, Timestamp(wall.0 + d.as_nanos() as i64)));
        self.holds.push(Hold { lease });
    }

    /// Removes an unleased hold first, so that one job cannot release another job's lease
    /// and leave a hold nobody owns; otherwise the lease that would lapse soonest.
    pub fn release(&mut self) -> Result<(), KmsError> {
        let idx = self
            .holds
            .iter()
            .position(|h| h.lease.is_none())
            .or_else(|| {
                self.holds
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, h)| h.lease.map(|l| l.0))
                    .map(|(i, _)| i)
            })
            .ok_or(KmsError::NotQuiesced)?;
        self.holds.remove(idx);
        if self.holds.is_empty() {
            self.since = None;
        }
        Ok(())
    }

    /// Drops the leases that have lapsed by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.holds.len();
        self.holds
            .retain(|h| h.lease.is_none_or(|(until, _)| until > now));
        if self.holds.is_empty() {
            self.since = None;
        }
        before - self.holds.len()
    }

    pub fn leased(&self) -> usize {
        self.holds.iter().filter(|h| h.lease.is_some()).count()
    }

    pub fn status(&self) -> FreezeStatus {
        FreezeStatus {
            quiesced: self.is_frozen(),
            holds: self.holds.len(),
            since: self.since.map(Timestamp::to_rfc3339),
            leases: self
                .holds
                .iter()
                .filter_map(|h| h.lease.map(|(_, t)| t.to_rfc3339()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            Command::parse(" Quiesce\n").unwrap(),
            Command::Quiesce { lease: None }
        );
        assert_eq!(
            Command::parse("1").unwrap(),
            Command::Quiesce { lease: None }
        );
        assert_eq!(Command::parse("0\n").unwrap(), Command::Unquiesce);
        assert_eq!(
            Command::parse("quiesce 600").unwrap(),
            Command::Quiesce {
                lease: Some(Duration::from_secs(600))
            }
        );
        for bad in [
            "",
            "freeze",
            "quiesce x",
            "quiesce 0",
            "quiesce -5",
            "quiesce 1 2",
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn holds_nest_and_unleased_goes_first() {
        let mut f = Freeze::default();
        let t0 = Instant::now();
        f.add(Some(Duration::from_secs(10)), t0, Timestamp(0));
        f.add(None, t0, Timestamp(0));
        assert_eq!(f.status().holds, 2);
        f.release().unwrap();
        // The leased hold remains: the release took the unleased one.
        assert_eq!(f.status().leases.len(), 1);
        assert!(f.is_frozen());
        assert_eq!(f.expire(t0 + Duration::from_secs(5)), 0);
        assert_eq!(f.expire(t0 + Duration::from_secs(11)), 1);
        assert!(!f.is_frozen());
        assert!(matches!(f.release(), Err(KmsError::NotQuiesced)));
    }
}
