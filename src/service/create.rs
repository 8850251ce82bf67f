//! A request for a new record, in the domain's types: what `mkdir` and `.create` ask for
//! (parsed from their text in `fs/`), and what `kmsfs` commands may ask for.

use crate::crypto::Passphrase;
use crate::keystore::{KeyTag, Name, State};

/// Where a new record's key comes from.
#[derive(Debug)]
pub enum KeySource {
    /// Fresh random bytes of the group's cipher's length.
    Random,
    /// Derived from a passphrase and a salt (fresh unless given). With the salt and the tag
    /// of a deleted record, the record comes back with the same key.
    Passphrase {
        passphrase: Passphrase,
        salt: Option<Vec<u8>>,
    },
}

#[derive(Debug)]
pub struct NewRecord {
    pub name: Name,
    pub state: State,
    pub description: String,
    pub key: KeySource,
    /// A fresh random tag unless given (recovery of a passphrase-derived record).
    pub tag: Option<KeyTag>,
}

impl NewRecord {
    /// A prelive record with a fresh random key, as `mkdir` makes.
    pub fn prelive(name: Name) -> NewRecord {
        NewRecord {
            name,
            state: State::Prelive,
            description: String::new(),
            key: KeySource::Random,
            tag: None,
        }
    }
}
