//! The `.create` request: one JSON object that makes a record in one step.

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

    /// Parses the object written to `.create`. Refusals name the field at fault but never
    /// echo a value: the object may carry a passphrase, and the reason reaches the log and
    /// `.errors`.
    pub fn parse_create_json(bytes: &[u8]) -> Result<NewRecord, KmsError> {
        const FIELDS: [&str; 6] = ["name", "state", "description", "passphrase", "salt", "tag"];
        // Syntax errors from serde_json say where, never what: safe to pass on.
        let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    KmsError::Invalid("bad .create JSON: expected one JSON object".into())
                }
                _ => KmsError::Invalid(format!("bad .create JSON: {e}")),
            })?;
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(KmsError::Invalid(format!(
                "unknown field {unknown:?} in .create (expected {})",
                FIELDS.join(", ")
            )));
        }
        // Moved out, not copied: the passphrase leaves no second copy behind.
        let mut text = |field: &str| -> Result<Option<String>, KmsError> {
            match object.remove(field) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(KmsError::Invalid(format!(
                    "field {field:?} of .create must be a string"
                ))),
            }
        };
        let name = text("name")?
            .ok_or_else(|| KmsError::Invalid("missing field \"name\" in .create".into()))?;
        let state = text("state")?;
        let description = text("description")?;
        let passphrase = text("passphrase")?.map(Passphrase::new);
        let salt = text("salt")?;
        let tag = text("tag")?;
        let state = match state.as_deref() {
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
        if passphrase.as_ref().is_some_and(|p| p.expose().is_empty()) {
            return Err(KmsError::Invalid("the passphrase is empty".into()));
        }
        if passphrase.is_none() && (salt.is_some() || tag.is_some()) {
            return Err(KmsError::Invalid(
                "\"salt\" and \"tag\" recover a passphrase-derived key: give \"passphrase\" too"
                    .into(),
            ));
        }
        if tag.is_some() && salt.is_none() {
            return Err(KmsError::Invalid(
                "re-creating a record by \"tag\" needs its \"salt\" too".into(),
            ));
        }
        Ok(NewRecord {
            name,
            state,
            description: description.unwrap_or_default(),
            passphrase,
            salt_hex: salt,
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_never_echo_a_value() {
        for bad in [
            &br#"{"name":"k","passphrase":123456}"#[..],
            br#"{"name":"k","passphrase":["123456"]}"#,
            br#"{"name":"k","passphrase":{"p":"123456"}}"#,
            br#"{"name":123456}"#,
            br#"{"123456":"x"}"#,
        ] {
            let e = NewRecord::parse_create_json(bad).unwrap_err().to_string();
            // The unknown-field case names the field, which is not a value.
            if !e.contains("unknown field") {
                assert!(!e.contains("123456"), "{e}");
            }
            assert!(matches!(
                NewRecord::parse_create_json(bad),
                Err(KmsError::Invalid(_))
            ));
        }
    }

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
