//! The two-person rule (`kmsfs mount --two-person`, off by default): a destructive move —
//! terminating a record, deleting a record or a group, changing a group's cipher, changing a
//! master key — is held
//! pending when one administrator asks for it, and made only when a second, different uid
//! asks for the same move within the window. The same uid asking again is refused; a pending
//! move that nobody confirms lapses, and both are audited.
//!
//! The uid is the one the front end says is asking (`acting_as`); work the daemon does on its
//! own never makes a destructive move.

use std::time::{Duration, Instant};

use super::{Kms, KmsError};
use crate::audit::{Caller, Event, Verdict};
use crate::keystore::{Change, GroupTag, KeyTag, Timestamp};

/// What a pending move is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Record(KeyTag),
    Group(GroupTag),
    /// The keystore itself: a change of a master key.
    Keystore,
}

/// A destructive move waiting for its second administrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub target: Target,
    /// `terminate`, `delete`, or `set cipher AES_128`.
    pub action: String,
    pub by_uid: u32,
    pub until: Timestamp,
    until_instant: Instant,
}

/// The rule's state, under the service's write lock.
#[derive(Debug, Default)]
pub(super) struct TwoPerson {
    window: Option<Duration>,
    pending: Vec<Pending>,
}

/// The destructive part of a change, if it has one.
fn destructive(change: &Change) -> Option<(Target, String)> {
    match change {
        Change::SetState { tag, state, .. } if *state == crate::keystore::State::Terminated => {
            Some((Target::Record(tag.clone()), "terminate".into()))
        }
        Change::DeleteRecord { tag } => Some((Target::Record(tag.clone()), "delete".into())),
        Change::DeleteGroup { tag } => Some((Target::Group(tag.clone()), "delete".into())),
        Change::SetGroupCipher { tag, cipher, .. } => {
            Some((Target::Group(tag.clone()), format!("set cipher {cipher}")))
        }
        _ => None,
    }
}

impl TwoPerson {
    pub(super) fn enable(&mut self, window: Duration) {
        self.window = Some(window);
    }

    pub(super) fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Whether `change`, asked by `uid`, may be made now. A first request is recorded and
    /// refused with `Pending`; the same move from another uid within the window goes ahead.
    pub(super) fn gate(&mut self, change: &Change, uid: Option<u32>) -> Result<Gate, KmsError> {
        match destructive(change) {
            Some((target, action)) => self.gate_action(target, action, uid),
            None => Ok(Gate::Free),
        }
    }

    /// `gate` for a destructive move that is not a `Change` (a master key change).
    pub(super) fn gate_action(
        &mut self,
        target: Target,
        action: String,
        uid: Option<u32>,
    ) -> Result<Gate, KmsError> {
        let Some(window) = self.window else {
            return Ok(Gate::Free);
        };
        let Some(uid) = uid else {
            return Err(KmsError::NeedsAnAdministrator);
        };
        let now = Instant::now();
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.target == target && p.action == action && p.until_instant > now)
        {
            let p = &self.pending[i];
            if p.by_uid == uid {
                return Err(KmsError::SelfConfirmation {
                    until: p.until.to_rfc3339(),
                });
            }
            let first = self.pending.remove(i);
            return Ok(Gate::Confirmed(first));
        }
        self.pending
            .retain(|p| p.target != target || p.action != action);
        let until = Timestamp(Timestamp::now().0 + window.as_nanos() as i64);
        self.pending.push(Pending {
            target,
            action: action.clone(),
            by_uid: uid,
            until,
            until_instant: now + window,
        });
        Err(KmsError::HeldForConfirmation {
            action,
            until: until.to_rfc3339(),
        })
    }

    /// Drops the moves nobody confirmed in time; returns them.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Pending> {
        let (lapsed, kept) = self.pending.drain(..).partition(|p| p.until_instant <= now);
        self.pending = kept;
        lapsed
    }
}

/// What the gate decided.
pub(super) enum Gate {
    /// Not a destructive move, or the rule is off.
    Free,
    /// The second administrator confirmed the first one's request.
    Confirmed(Pending),
}

impl Kms {
    /// Turns the two-person rule on with this confirmation window.
    pub fn require_two_persons(&self, window: Duration) {
        self.write().two_person.enable(window);
    }

    /// Lets pending moves that nobody confirmed lapse (the timer calls this), audited.
    pub(super) fn expire_pending(&self) {
        let (lapsed, touched) = {
            let mut guard = self.write();
            let inner = &mut *guard;
            let before = inner.two_person.pending().to_vec();
            let lapsed = inner.two_person.expire(Instant::now());
            let touched =
                super::observe::pending_touched(&inner.ks, &before, inner.two_person.pending());
            (lapsed, touched)
        };
        self.tell_published(&touched);
        self.pending.store(
            self.read().0.two_person.pending().len(),
            std::sync::atomic::Ordering::Release,
        );
        for p in lapsed {
            log::warn!(
                "a pending {} asked by uid {} lapsed unconfirmed at {}",
                p.action,
                p.by_uid,
                p.until.to_rfc3339()
            );
            if let Some(log) = &self.audit {
                let caller = Caller::daemon();
                let reason = format!(
                    "{} asked by uid {} was not confirmed in time",
                    p.action, p.by_uid
                );
                let _ = log.append(&Event::keystore(
                    &caller,
                    "two-person lapsed",
                    Verdict::Refused(&reason),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::State;
    use crate::service::acting_as;

    #[test]
    fn a_destructive_move_needs_a_second_uid_within_the_window() {
        let (_dir, kms, _g, k) = super::super::test_keystore();
        kms.set_state(&k, State::Inactive).unwrap();
        kms.set_state(&k, State::Deprecated).unwrap();
        kms.require_two_persons(Duration::from_secs(60));
        {
            let _alice = acting_as(1001, 1001, 1);
            assert!(matches!(
                kms.set_state(&k, State::Terminated),
                Err(KmsError::HeldForConfirmation { .. })
            ));
            assert_eq!(kms.read().record(&k).unwrap().state, State::Deprecated);
            // Asking again herself is refused, and changes nothing.
            assert!(matches!(
                kms.set_state(&k, State::Terminated),
                Err(KmsError::SelfConfirmation { .. })
            ));
            // Non-destructive moves are not held.
            kms.describe_record(&k, "fine").unwrap();
        }
        assert_eq!(kms.read().pending().len(), 1);
        {
            let _bob = acting_as(1002, 1002, 2);
            kms.set_state(&k, State::Terminated).unwrap();
        }
        assert_eq!(kms.read().record(&k).unwrap().state, State::Terminated);
        assert!(kms.read().pending().is_empty());
        // Deletion too; and an unconfirmed request lapses.
        kms.write().two_person.enable(Duration::from_millis(1));
        {
            let _alice = acting_as(1001, 1001, 1);
            assert!(kms.delete_record(&k).is_err());
        }
        std::thread::sleep(Duration::from_millis(5));
        kms.expire_pending();
        assert!(kms.read().pending().is_empty());
        {
            let _bob = acting_as(1002, 1002, 2);
            assert!(
                matches!(
                    kms.delete_record(&k),
                    Err(KmsError::HeldForConfirmation { .. })
                ),
                "the lapsed request confirms nothing: bob's is a new first request"
            );
        }
        // Without anyone named as asking (the daemon itself), destructive moves are refused.
        assert!(matches!(
            kms.delete_record(&k),
            Err(KmsError::NeedsAnAdministrator)
        ));
    }
}
