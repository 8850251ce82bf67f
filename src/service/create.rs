//! The `.create` request: one JSON object that makes a record in one step.

use serde::Deserialize;

use super::KmsError;
use crate::crypto::Passphrase;
use crate::keystore::State;

/// A request for a new record. With `passphrase` the key is derived from it and a salt (fresh
/// unless `salt_hex` is given); with `passphrase`, salt and `tag` of a deleted record, the
/// record comes back with the same key.
#[derive(Debug)]
pub struct NewRecord {
    pub name: String,
    pub state: State,
    pub description: String,
    pub passphrase: Option<Passphrase>,
    pub salt_hex: Option<String>,
    pub tag: Option<String>,
}

impl NewRecord {
    /// A prelive record with a fresh random key, as `mkdir` makes.
    pub fn prelive(name: &str) -> NewRecord {
        NewRecord {
            name: name.to_string(),
            state: State::Prelive,
            description: String::new(),
            passphrase: None,
            salt_hex: None,
            tag: None,
        }
    }

    pub fn parse_create_json(bytes: &[u8]) -> Result<NewRecord, KmsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Request {
            name: String,
            state: Option<String>,
            description: Option<String>,
            passphrase: Option<String>,
            salt: Option<String>,
            tag: Option<String>,
        }
        let req: Request = serde_json::from_slice(bytes)
            .map_err(|e| KmsError::Invalid(format!("bad .create JSON: {e}")))?;
        let state = match req.state.as_deref() {
            None => State::Prelive,
            Some(word) => match word.parse::<State>() {
                Ok(s) if s.may_be_created_in() => s,
                _ => {
                    return Err(KmsError::Invalid(format!(
                        "a record is created \"prelive\" or \"active\", not {word:?}"
                    )))
                }
            },
        };
        if req.passphrase.as_deref() == Some("") {
            return Err(KmsError::Invalid("the passphrase is empty".into()));
        }
        if req.passphrase.is_none() && (req.salt.is_some() || req.tag.is_some()) {
            return Err(KmsError::Invalid(
                "\"salt\" and \"tag\" recover a passphrase-derived key: give \"passphrase\" too"
                    .into(),
            ));
        }
        if req.tag.is_some() && req.salt.is_none() {
            return Err(KmsError::Invalid(
                "re-creating a record by \"tag\" needs its \"salt\" too".into(),
            ));
        }
        Ok(NewRecord {
            name: req.name,
            state,
            description: req.description.unwrap_or_default(),
            passphrase: req.passphrase.map(Passphrase::new),
            salt_hex: req.salt,
            tag: req.tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let r = NewRecord::parse_create_json(br#"{"name":"k1","state":"Active"}"#).unwrap();
        assert_eq!(r.state, State::Active);
        assert!(NewRecord::parse_create_json(br#"{"name":"k1"}"#).is_ok());
        for bad in [
            &br#"{"state":"active"}"#[..],
            br#"{"name":"k","state":"inactive"}"#,
            br#"{"name":"k","colour":"red"}"#,
            br#"{"name":"k","salt":"00"}"#,
            br#"{"name":"k","passphrase":"p","tag":"00"}"#,
            br#"{"name":"k","passphrase":""}"#,
            br#"{"name":"k""#,
            b"[]",
        ] {
            assert!(
                matches!(NewRecord::parse_create_json(bad), Err(KmsError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
