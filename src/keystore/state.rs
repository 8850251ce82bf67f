//! The lifecycle of a key record: five states and the moves allowed between them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Created, never used.
    Prelive,
    /// Encrypts and decrypts; at most one per group.
    Active,
    /// Decrypts only.
    Inactive,
    /// Neither: a hold for a suspect key.
    Deprecated,
    /// Neither; may be deleted.
    Terminated,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Prelive,
        State::Active,
        State::Inactive,
        State::Deprecated,
        State::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Prelive => "prelive",
            State::Active => "active",
            State::Inactive => "inactive",
            State::Deprecated => "deprecated",
            State::Terminated => "terminated",
        }
    }

    /// The contract's transition table. Staying in the same state is not a move;
    /// callers treat it as a successful no-op before asking.
    pub fn may_move_to(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Prelive, Active)
                | (Active, Inactive)
                | (Inactive, Active)
                | (Inactive, Deprecated)
                | (Deprecated, Inactive)
                | (Deprecated, Terminated)
                | (Terminated, Deprecated)
        )
    }

    pub fn may_be_deleted(self) -> bool {
        matches!(self, State::Prelive | State::Terminated)
    }

    pub fn may_be_created_in(self) -> bool {
        matches!(self, State::Prelive | State::Active)
    }

    /// Whether the key material may be handed out (encrypt or decrypt).
    pub fn allows_key_use(self) -> bool {
        matches!(self, State::Active | State::Inactive)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?} (expected prelive, active, inactive, deprecated or terminated)")]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    /// Surrounding blanks are ignored and case is not significant, so that
    /// `echo Active > state` and `printf active` both work.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(word))
            .ok_or_else(|| UnknownState(word.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loosely() {
        assert_eq!(" Active\n".parse::<State>().unwrap(), State::Active);
        assert_eq!("TERMINATED".parse::<State>().unwrap(), State::Terminated);
        assert!("activ".parse::<State>().is_err());
        assert!("".parse::<State>().is_err());
    }

    #[test]
    fn table_has_exactly_seven_moves() {
        let n = State::ALL
            .iter()
            .flat_map(|a| State::ALL.iter().map(move |b| a.may_move_to(*b)))
            .filter(|x| *x)
            .count();
        assert_eq!(n, 7);
    }
}
