//! The backup freeze as holds: each `quiesce` adds one, each `unquiesce` removes one, and a
//! hold may carry a lease after which it lapses on its own, so a backup job that dies cannot
//! freeze the keystore forever.

use std::time::{Duration, Instant};

use super::KmsError;
use crate::keystore::Timestamp;

pub use super::error::MAX_LEASE;

#[derive(Debug, Clone)]
struct Hold {
    lease: Option<(Instant, Timestamp)>,
}

#[derive(Debug, Default)]
pub struct Freeze {
    holds: Vec<Hold>,
    since: Option<Timestamp>,
}

/// The freeze as `.quiesce` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuiesceView {
    pub quiesced: bool,
    pub holds: usize,
    pub since: Option<Timestamp>,
    /// When each leased hold lapses, in the order the holds were taken (`examples/backup.sh`
    /// finds its own lease as the last one right after its `quiesce`).
    pub leases: Vec<Timestamp>,
}

impl Freeze {
    pub fn is_frozen(&self) -> bool {
        !self.holds.is_empty()
    }

    pub fn holds(&self) -> usize {
        self.holds.len()
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

    pub fn view(&self) -> QuiesceView {
        let leases = self
            .holds
            .iter()
            .filter_map(|h| h.lease.map(|(_, t)| t))
            .collect();
        QuiesceView {
            quiesced: self.is_frozen(),
            holds: self.holds.len(),
            since: self.since,
            leases,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_nest_and_unleased_goes_first() {
        let mut f = Freeze::default();
        let t0 = Instant::now();
        // Leases are listed in the order the holds were taken, not by expiry.
        f.add(Some(Duration::from_secs(20)), t0, Timestamp(0));
        f.add(Some(Duration::from_secs(5)), t0, Timestamp(0));
        assert_eq!(
            f.view().leases,
            [Timestamp(20_000_000_000), Timestamp(5_000_000_000)]
        );
        let mut f = Freeze::default();
        f.add(Some(Duration::from_secs(10)), t0, Timestamp(0));
        f.add(None, t0, Timestamp(0));
        assert_eq!(f.view().holds, 2);
        assert_eq!(f.view().since, Some(Timestamp(0)));
        f.release().unwrap();
        // The leased hold remains: the release took the unleased one.
        assert_eq!(f.view().leases, [Timestamp(10_000_000_000)]);
        assert!(f.is_frozen());
        assert_eq!(f.expire(t0 + Duration::from_secs(5)), 0);
        assert_eq!(f.expire(t0 + Duration::from_secs(11)), 1);
        assert!(!f.is_frozen());
        assert_eq!(f.view().since, None);
        assert!(matches!(f.release(), Err(KmsError::NotQuiesced)));
    }
}
