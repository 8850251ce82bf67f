//! Automatic rotation: once a group's active record has been active for the group's period,
//! a fresh record replaces it (the old one becomes inactive in the same step, as every
//! activation does); optionally, records inactive for a retirement period become deprecated
//! (never further: terminating and deleting stay an administrator's decisions).
//!
//! The core only says what is due at a given time (`Keystore::due`); the service makes each
//! due change through the one commit path, and the clock is always passed in, so tests drive
//! time without waiting.

use serde::{Deserialize, Serialize};

use super::{
    GroupTag, KeyGroup, KeyRecord, KeyTag, Keystore, KeystoreError, Name, State, Timestamp,
};

/// A whole number of seconds, at least one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Period(u64);

impl Period {
    /// A hundred years: anything longer is a typo.
    pub const MAX_SECS: u64 = 100 * 365 * 86_400;

    pub fn from_secs(secs: u64) -> Result<Period, KeystoreError> {
        if secs == 0 || secs > Self::MAX_SECS {
            return Err(KeystoreError::PeriodOutOfRange {
                secs,
                max: Self::MAX_SECS,
            });
        }
        Ok(Period(secs))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    fn nanos(self) -> i64 {
        (self.0 as i64).saturating_mul(1_000_000_000)
    }
}

/// A group's rotation settings; both off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Replace the active record once it has been active this long.
    pub period: Option<Period>,
    /// Deprecate inactive records once they have been inactive this long.
    pub retire_after: Option<Period>,
}

/// A change that rotation asks for at some moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// The group's active record (`replaces`) has served its period.
    Rotate { group: GroupTag, replaces: KeyTag },
    /// The record has been inactive for its group's retirement period.
    Retire { record: KeyTag },
}

impl KeyRecord {
    /// When the record entered its current state (its last change for records written before
    /// kmsfs kept this).
    pub fn in_state_since(&self) -> Timestamp {
        self.state_since.unwrap_or(self.modified)
    }
}

fn after(t: Timestamp, p: Period) -> Timestamp {
    Timestamp(t.0.saturating_add(p.nanos()))
}

impl Keystore {
    /// When the group's active record is due to be replaced; None when rotation is off or no
    /// record is active.
    pub fn next_rotation(&self, g: &KeyGroup) -> Option<Timestamp> {
        let period = g.rotation.period?;
        let active = self.record(g.active()?)?;
        Some(after(active.in_state_since(), period))
    }

    /// Everything rotation and retirement ask for at `now`. Each due rotation happens once,
    /// however long ago it fell due: the new record's period starts when it is made, so a
    /// daemon that was down for three periods catches up with one rotation, not three.
    pub fn due(&self, now: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        for g in self.groups() {
            if let (Some(next), Some(active)) = (self.next_rotation(g), g.active()) {
                if next <= now {
                    due.push(Due::Rotate {
                        group: g.tag.clone(),
                        replaces: active.clone(),
                    });
                }
            }
            if let Some(retire) = g.rotation.retire_after {
                for r in self.records_of(&g.tag, 0) {
                    if r.state == State::Inactive && after(r.in_state_since(), retire) <= now {
                        due.push(Due::Retire {
                            record: r.tag.clone(),
                        });
                    }
                }
            }
        }
        due
    }

    /// The name of a record made by rotation at `now`: `rot-YYYYmmddTHHMMSSZ`, which sorts
    /// in time order, with `-2`, `-3`... if that name is taken.
    pub fn rotation_name(&self, group: &GroupTag, now: Timestamp) -> Name {
        let base = format!("rot-{}", now.to_compact_utc());
        let taken = |n: &str| self.record_in(group, n).is_some();
        let mut name = base.clone();
        let mut i = 2;
        while taken(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        Name::parse(&name).expect("rotation names are valid names")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{Change, Cipher, WrappedKey};

    const S: i64 = 1_000_000_000;

    fn group(ks: &mut Keystore, name: &str) -> GroupTag {
        let tag = GroupTag::random();
        ks.apply(&Change::CreateGroup {
            tag: tag.clone(),
            name: Name::parse(name).unwrap(),
            cipher: Cipher::Aes256,
            description: String::new(),
            at: Timestamp(0),
        })
        .unwrap();
        tag
    }

    fn record(ks: &mut Keystore, g: &GroupTag, name: &str, state: State, at: i64) -> KeyTag {
        let tag = KeyTag::random();
        ks.apply(&Change::CreateRecord {
            tag: tag.clone(),
            group: g.clone(),
            name: Name::parse(name).unwrap(),
            state,
            description: String::new(),
            wrapped_key: WrappedKey(vec![0; 60]),
            key_len: 32,
            derivation: None,
            at: Timestamp(at),
        })
        .unwrap();
        tag
    }

    fn set(ks: &mut Keystore, g: &GroupTag, period: Option<u64>, retire: Option<u64>) {
        let rotation = Rotation {
            period: period.map(|s| Period::from_secs(s).unwrap()),
            retire_after: retire.map(|s| Period::from_secs(s).unwrap()),
        };
        ks.apply(&Change::SetRotation {
            tag: g.clone(),
            rotation,
            at: Timestamp(0),
        })
        .unwrap();
    }

    #[test]
    fn periods_are_bounded() {
        assert!(Period::from_secs(0).is_err());
        assert!(Period::from_secs(Period::MAX_SECS + 1).is_err());
        assert_eq!(Period::from_secs(90 * 86_400).unwrap().secs(), 7_776_000);
    }

    #[test]
    fn rotation_falls_due_once_after_its_period() {
        let mut ks = Keystore::new();
        let g = group(&mut ks, "pool");
        let k1 = record(&mut ks, &g, "k1", State::Active, 10 * S);
        assert!(ks.due(Timestamp(1000 * S)).is_empty(), "off by default");
        set(&mut ks, &g, Some(60), None);
        let gr = ks.group(&g).unwrap();
        assert_eq!(ks.next_rotation(gr), Some(Timestamp(70 * S)));
        assert!(ks.due(Timestamp(69 * S)).is_empty());
        let want = vec![Due::Rotate {
            group: g.clone(),
            replaces: k1.clone(),
        }];
        assert_eq!(ks.due(Timestamp(70 * S)), want);
        // Long after (a daemon that was down): still one rotation.
        assert_eq!(ks.due(Timestamp(100_000 * S)), want);
        // The rotation itself: a fresh active record, made at that time, demotes k1.
        let name = ks.rotation_name(&g, Timestamp(100_000 * S));
        assert_eq!(name.as_str(), "rot-19700102T034640Z");
        record(&mut ks, &g, name.as_str(), State::Active, 100_000 * S);
        assert_eq!(ks.record(&k1).unwrap().state, State::Inactive);
        assert!(ks.due(Timestamp(100_059 * S)).is_empty());
        assert_eq!(ks.due(Timestamp(100_060 * S)).len(), 1);
        // Names stay unique within one second.
        let again = ks.rotation_name(&g, Timestamp(100_000 * S));
        assert_eq!(again.as_str(), "rot-19700102T034640Z-2");
        // No active record: nothing to rotate.
        let empty = group(&mut ks, "empty");
        set(&mut ks, &empty, Some(1), None);
        assert!(ks.due(Timestamp(100_059 * S)).is_empty());
    }

    #[test]
    fn retirement_deprecates_inactive_records_only() {
        let mut ks = Keystore::new();
        let g = group(&mut ks, "pool");
        let old = record(&mut ks, &g, "old", State::Active, 0);
        let _pre = record(&mut ks, &g, "pre", State::Prelive, 0);
        let cur = record(&mut ks, &g, "cur", State::Active, 100 * S);
        assert_eq!(
            ks.record(&old).unwrap().in_state_since(),
            Timestamp(100 * S)
        );
        set(&mut ks, &g, None, Some(30));
        assert!(ks.due(Timestamp(129 * S)).is_empty());
        assert_eq!(
            ks.due(Timestamp(130 * S)),
            vec![Due::Retire {
                record: old.clone()
            }]
        );
        assert!(ks.record(&cur).is_some());
        // Setting the same rotation again changes nothing.
        let same = Change::SetRotation {
            tag: g.clone(),
            rotation: ks.group(&g).unwrap().rotation,
            at: Timestamp(5),
        };
        assert_eq!(
            ks.check(&same).unwrap(),
            crate::keystore::Outcome::Unchanged
        );
    }
}
