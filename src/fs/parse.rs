//! Control-file text into the service's types. Every refusal is an `InputError` or a keystore
//! rule's error, and none echoes more than a short command: what was written may be a
//! mis-pasted secret, and the reason reaches the log and `.errors`.

use std::time::Duration;

use super::error::{FsError, InputError};
use crate::crypto::Passphrase;
use crate::keystore::{Cipher, KeyTag, Name, Period, State};
use crate::service::{KeySource, NewRecord};

/// The longest command a command file takes: `quiesce 604800` with room to spare. Anything
/// longer is refused without being parsed or echoed.
pub const MAX_COMMAND_BYTES: usize = 64;

/// The most one command write may hold, blanks included. The kernel cuts a larger `write()`
/// into pieces (of at most max_write bytes or the pages one request holds: 1 MiB with fuser's
/// defaults) and sends each as a write of its own. Trimmed first, the first piece of `active`
/// and a megabyte of blanks was applied and the next one refused, so the caller's `write()`
/// failed (`echo` said "Invalid argument") after the change was made, or a `quiesce` took a
/// hold that nobody would release. Refusing on the raw length refuses that first piece: a
/// split write changes nothing. The kernel never sets max_write below 4096, so a write of at
/// most this many bytes always arrives whole.
pub const MAX_COMMAND_WRITE: usize = 4096;

/// The text of one command write, blanks around it ignored.
pub fn command_text(data: &[u8]) -> Result<&str, InputError> {
    if data.len() > MAX_COMMAND_WRITE {
        return Err(InputError::CommandTooLong {
            max: MAX_COMMAND_BYTES,
        });
    }
    let text = std::str::from_utf8(data).map_err(|_| InputError::NotUtf8 {
        what: "the command",
    })?;
    let text = text.trim();
    if text.len() > MAX_COMMAND_BYTES {
        return Err(InputError::CommandTooLong {
            max: MAX_COMMAND_BYTES,
        });
    }
    Ok(text)
}

/// A state name, any case.
pub fn state(text: &str) -> Result<State, InputError> {
    text.parse()
        .map_err(|e: crate::keystore::UnknownState| InputError::UnknownState(echo(&e.0)))
}

pub fn cipher(text: &str) -> Result<Cipher, FsError> {
    text.parse().map_err(|_: crate::keystore::KeystoreError| {
        crate::keystore::KeystoreError::UnknownCipher(echo(text)).into()
    })
}

#[derive(Debug, PartialEq, Eq)]
pub enum QuiesceCommand {
    Quiesce { lease: Option<Duration> },
    Unquiesce,
}

/// `quiesce` or `1`, `quiesce SECONDS`, `unquiesce` or `0`; case ignored.
pub fn quiesce(text: &str) -> Result<QuiesceCommand, InputError> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["quiesce"] | ["1"] => Ok(QuiesceCommand::Quiesce { lease: None }),
        ["unquiesce"] | ["0"] => Ok(QuiesceCommand::Unquiesce),
        ["quiesce", secs] => {
            let n: u64 = secs.parse().map_err(|_| InputError::BadLease(echo(secs)))?;
            Ok(QuiesceCommand::Quiesce {
                lease: Some(Duration::from_secs(n)),
            })
        }
        _ => Err(InputError::UnknownQuiesce(echo(text))),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RotationCommand {
    /// A new period, or `off`.
    Every(Option<Period>),
    /// `rotate`: now.
    RotateNow,
    /// `retire PERIOD` or `retire off`.
    RetireAfter(Option<Period>),
}

/// A period: a whole number and a unit, `s`, `m`, `h` or `d` (`90d`, `12h`, `30m`, `2s`).
pub fn period(word: &str) -> Option<Result<Period, FsError>> {
    let unit = match word.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: u64 = word[..word.len() - 1].parse().ok()?;
    Some(Period::from_secs(n.saturating_mul(unit)).map_err(FsError::from))
}

/// `.rotation`: `90d` (any period), `off`, `rotate`, `retire 30d`, `retire off`; any case.
pub fn rotation(text: &str) -> Result<RotationCommand, FsError> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let unknown = || InputError::UnknownRotation(echo(text)).into();
    let period_or_off = |w: &str| -> Result<Option<Period>, FsError> {
        match w {
            "off" => Ok(None),
            w => period(w).ok_or_else(unknown)?.map(Some),
        }
    };
    match words.as_slice() {
        ["rotate"] => Ok(RotationCommand::RotateNow),
        ["retire", w] => Ok(RotationCommand::RetireAfter(period_or_off(w)?)),
        [w] => Ok(RotationCommand::Every(period_or_off(w)?)),
        _ => Err(unknown()),
    }
}

/// The fields `.create` takes.
const CREATE_FIELDS: [&str; 6] = ["name", "state", "description", "passphrase", "salt", "tag"];

fn create_error(reason: impl Into<String>) -> FsError {
    InputError::Create(reason.into()).into()
}

/// The object written to `.create`, as a request. Refusals name the field at fault but never
/// echo a value: the object may carry a passphrase.
pub fn new_record(bytes: &[u8]) -> Result<NewRecord, FsError> {
    // Syntax errors from serde_json say where, never what: safe to pass on.
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => create_error("expected one JSON object"),
            _ => create_error(format!("bad JSON: {e}")),
        })?;
    if object.keys().any(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(create_error(format!(
            "an unknown field (expected only {})",
            CREATE_FIELDS.join(", ")
        )));
    }
    // Moved out, not copied: the passphrase leaves no second copy behind.
    let mut text = |field: &'static str| -> Result<Option<String>, FsError> {
        match object.remove(field) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(create_error(format!("field {field:?} must be a string"))),
        }
    };
    let name = text("name")?.ok_or_else(|| create_error("missing field \"name\""))?;
    let state_word = text("state")?;
    let description = text("description")?.unwrap_or_default();
    let passphrase = text("passphrase")?.map(Passphrase::new);
    let salt = text("salt")?;
    let tag = text("tag")?;
    let name = Name::parse(&name)?;
    let state = match state_word.as_deref() {
        None => State::Prelive,
        Some(word) => match word.parse::<State>() {
            Ok(s) if s.may_be_created_in() => s,
            _ => return Err(create_error("\"state\" must be \"prelive\" or \"active\"")),
        },
    };
    let key = match passphrase {
        None if salt.is_some() || tag.is_some() => {
            return Err(create_error(
                "\"salt\" and \"tag\" recover a passphrase-derived key: give \"passphrase\" too",
            ))
        }
        None => KeySource::Random,
        Some(p) if p.expose().is_empty() => return Err(create_error("the passphrase is empty")),
        Some(passphrase) => {
            if tag.is_some() && salt.is_none() {
                return Err(create_error(
                    "re-creating a record by \"tag\" needs its \"salt\" too",
                ));
            }
            let salt = match salt {
                None => None,
                Some(h) => Some(hex::decode(&h).map_err(|_| create_error("\"salt\" is not hex"))?),
            };
            KeySource::Passphrase { passphrase, salt }
        }
    };
    let tag = tag.map(|t| KeyTag::parse(&t)).transpose()?;
    Ok(NewRecord {
        name,
        state,
        description,
        key,
        tag,
    })
}

/// What a refusal may show of a command that meant nothing: its first 8 characters, letters,
/// digits and `_`/`-` only (anything else as `?`), with `...` if there was more. Enough to
/// recognise a typo (`activ`), too little to carry a mis-pasted secret into the log,
/// `.errors` (which the readers group sees) and the audit log.
fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(8)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > 8 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(state(" Active").unwrap(), State::Active);
        assert!(matches!(state("activ"), Err(InputError::UnknownState(_))));
        assert_eq!(command_text(b" active\n").unwrap(), "active");
        assert!(matches!(
            command_text(&[b'a'; 4096]),
            Err(InputError::CommandTooLong { .. })
        ));
        // Blanks around a command do not matter, up to the length of one write that the
        // kernel never splits.
        let mut padded = b"active".to_vec();
        padded.resize(MAX_COMMAND_WRITE, b' ');
        assert_eq!(command_text(&padded).unwrap(), "active");
        padded.push(b' ');
        assert!(matches!(
            command_text(&padded),
            Err(InputError::CommandTooLong { .. })
        ));
        assert!(matches!(
            command_text(b"bad\xff"),
            Err(InputError::NotUtf8 { .. })
        ));
        assert_eq!(cipher("aes_128").unwrap(), Cipher::Aes128);
        assert!(cipher("AES_512").is_err());
    }

    #[test]
    fn rotation_commands() {
        let p = |s| Some(Period::from_secs(s).unwrap());
        assert_eq!(
            rotation("90d").unwrap(),
            RotationCommand::Every(p(90 * 86_400))
        );
        assert_eq!(
            rotation(" 12H ").unwrap(),
            RotationCommand::Every(p(12 * 3600))
        );
        assert_eq!(rotation("30m").unwrap(), RotationCommand::Every(p(1800)));
        assert_eq!(rotation("2s").unwrap(), RotationCommand::Every(p(2)));
        assert_eq!(rotation("off").unwrap(), RotationCommand::Every(None));
        assert_eq!(rotation("Rotate").unwrap(), RotationCommand::RotateNow);
        assert_eq!(
            rotation("retire 30d").unwrap(),
            RotationCommand::RetireAfter(p(30 * 86_400))
        );
        assert_eq!(
            rotation("retire off").unwrap(),
            RotationCommand::RetireAfter(None)
        );
        for bad in [
            "",
            "90",
            "d",
            "90x",
            "-1d",
            "0d",
            "1.5d",
            "rotate now",
            "retire",
            "99999999999d",
        ] {
            let e = rotation(bad).unwrap_err();
            assert_eq!(super::super::errno::errno_of(&e), libc::EINVAL, "{bad:?}");
        }
    }

    #[test]
    fn quiesce_commands() {
        assert_eq!(
            quiesce("Quiesce").unwrap(),
            QuiesceCommand::Quiesce { lease: None }
        );
        assert_eq!(
            quiesce("1").unwrap(),
            QuiesceCommand::Quiesce { lease: None }
        );
        assert_eq!(quiesce("0").unwrap(), QuiesceCommand::Unquiesce);
        assert_eq!(
            quiesce("quiesce 600").unwrap(),
            QuiesceCommand::Quiesce {
                lease: Some(Duration::from_secs(600))
            }
        );
        for bad in ["", "freeze", "quiesce x", "quiesce -5", "quiesce 1 2"] {
            assert!(quiesce(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_never_echo_a_value() {
        for bad in [
            &br#"{"name":"k","passphrase":123456}"#[..],
            br#"{"name":"k","passphrase":["123456"]}"#,
            br#"{"name":"k","passphrase":{"p":"123456"}}"#,
            br#"{"name":123456}"#,
        ] {
            let e = new_record(bad).unwrap_err();
            assert!(!e.to_string().contains("123456"), "{e}");
            assert!(matches!(e, FsError::Input(InputError::Create(_))), "{e}");
        }
        // Nothing of an unknown field or a bad state is echoed either.
        for bad in [
            r#"{"PASS-zebra-canary":"x"}"#,
            r#"{"name":"k","state":"PASS-zebra-canary"}"#,
        ] {
            let e = new_record(bad.as_bytes()).unwrap_err().to_string();
            assert!(!e.contains("zebra") && !e.contains("PASS"), "{e}");
        }
        // A command echoes at most 8 plain characters.
        for e in [
            state("PASS-zebra-canary-7731").unwrap_err().to_string(),
            quiesce("PASS-zebra canary").unwrap_err().to_string(),
            rotation("PASS-zebra-canary").unwrap_err().to_string(),
            cipher("PASS-zebra-canary").unwrap_err().to_string(),
        ] {
            assert!(!e.contains("zebra"), "{e}");
            assert!(e.contains("PASS-zeb"), "a typo is still recognisable: {e}");
        }
        assert_eq!(echo("activ"), "activ");
        assert_eq!(echo("a\u{202e}b\nc"), "a?b?c");
    }

    #[test]
    fn parses_and_refuses() {
        let r = new_record(br#"{"name":"k1","state":"Active"}"#).unwrap();
        assert_eq!(r.state, State::Active);
        assert!(matches!(r.key, KeySource::Random));
        let r = new_record(br#"{"name":"k1","passphrase":"p","salt":"0011","tag":"ab"}"#).unwrap();
        assert_eq!(r.tag.unwrap().as_str(), "ab");
        assert!(
            matches!(r.key, KeySource::Passphrase { salt: Some(ref s), .. } if s == &[0, 0x11])
        );
        for bad in [
            &br#"{"state":"active"}"#[..],
            br#"{"name":"k","state":"inactive"}"#,
            br#"{"name":"k","colour":"red"}"#,
            br#"{"name":"k","salt":"00"}"#,
            br#"{"name":"k","passphrase":"p","tag":"00"}"#,
            br#"{"name":"k","passphrase":"p","salt":"xyz"}"#,
            br#"{"name":"k","passphrase":""}"#,
            br#"{"name":".k"}"#,
            br#"{"name":"k""#,
            b"[]",
        ] {
            let e = new_record(bad).unwrap_err();
            assert_eq!(
                super::super::errno::errno_of(&e),
                libc::EINVAL,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

/// A request written to `.change-key`: which master key, and the passphrase of the new one if
/// it is to be derived from one (else it is random).
#[derive(Debug)]
pub struct ChangeKeyRequest {
    pub kind: crate::crypto::KeyFileKind,
    pub passphrase: Option<Passphrase>,
}

fn change_key_error(reason: impl Into<String>) -> FsError {
    InputError::ChangeKey(reason.into()).into()
}

fn key_kind(word: &str) -> Result<crate::crypto::KeyFileKind, FsError> {
    match word.to_ascii_lowercase().as_str() {
        "hmk" => Ok(crate::crypto::KeyFileKind::Hmk),
        "kpk" => Ok(crate::crypto::KeyFileKind::Kpk),
        // Not echoed, not even a prefix: this file takes passphrases.
        _ => Err(change_key_error(
            "unknown key (expected hmk or kpk, or a JSON object)",
        )),
    }
}

/// `hmk` or `kpk` (a new random key), or `{"key": "hmk"|"kpk", "passphrase": "..."}` (a new
/// key derived from the passphrase, with a fresh salt). Refusals never echo the passphrase.
pub fn change_key(bytes: &[u8]) -> Result<ChangeKeyRequest, FsError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let text = command_text(bytes)?;
        return Ok(ChangeKeyRequest {
            kind: key_kind(text)?,
            passphrase: None,
        });
    }
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => change_key_error("expected one JSON object"),
            _ => change_key_error(format!("bad JSON: {e}")),
        })?;
    if object.keys().any(|k| k != "key" && k != "passphrase") {
        return Err(change_key_error(
            "an unknown field (expected only key, passphrase)",
        ));
    }
    let kind = match object.remove("key") {
        Some(serde_json::Value::String(s)) => key_kind(&s)?,
        Some(_) => return Err(change_key_error("field \"key\" must be a string")),
        None => return Err(change_key_error("missing field \"key\"")),
    };
    // Moved out, not copied: the passphrase leaves no second copy behind.
    let passphrase = match object.remove("passphrase") {
        None => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => {
            return Err(change_key_error("\"passphrase\" is empty"))
        }
        Some(serde_json::Value::String(s)) => Some(Passphrase::new(s)),
        Some(_) => return Err(change_key_error("field \"passphrase\" must be a string")),
    };
    Ok(ChangeKeyRequest { kind, passphrase })
}

#[cfg(test)]
mod change_key_tests {
    use super::*;
    use crate::crypto::KeyFileKind;

    #[test]
    fn a_word_or_an_object_and_nothing_echoed() {
        let r = change_key(b"hmk\n").unwrap();
        assert_eq!(r.kind, KeyFileKind::Hmk);
        assert!(r.passphrase.is_none());
        assert_eq!(change_key(b"  KPK ").unwrap().kind, KeyFileKind::Kpk);
        let r = change_key(br#"{"key":"kpk","passphrase":"long enough words"}"#).unwrap();
        assert_eq!(r.kind, KeyFileKind::Kpk);
        assert_eq!(r.passphrase.unwrap().expose(), "long enough words");
        for bad in [
            &b"both"[..],
            b"hmk kpk",
            br#"{"key":"hmk","passphrase":""}"#,
            br#"{"key":"hmk","passphrase":1}"#,
            br#"{"passphrase":"sekrit-sekrit"}"#,
            br#"{"key":"hmk","pass":"sekrit-sekrit"}"#,
            br#"{"key":"sekrit-sekrit"}"#,
            b"sekrit-sekrit",
            br#"{"key":"hmk","passphrase":"sekrit-sekrit""#,
        ] {
            let e = change_key(bad).unwrap_err().to_string();
            assert!(!e.contains("sekrit"), "{e}");
        }
    }
}
