//! Names of groups and records, tags, ciphers and timestamps: the small value types of the domain.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::KeystoreError;

pub const MAX_NAME_BYTES: usize = 255;

/// A validated name of a group or record.
///
/// Rules (the contract's, plus ours): 1 to 255 bytes of UTF-8, no `/`, no NUL, not starting
/// with `.` (dot names are the mount's control files), and no control characters, because a
/// newline in a name breaks every shell script that lists the keystore. New names also may
/// not hold invisible characters that make one name look like another in a listing (see
/// `is_invisible`); names stored before that rule still load.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Characters that show as nothing, or as something else, in `ls`: Unicode format
/// characters (general category Cf: bidirectional overrides such as U+202E, zero-width
/// spaces and joiners, the byte order mark, the soft hyphen, ...), whitespace other than the
/// ASCII space (no-break and typographic spaces), and the blank fillers of Hangul and
/// Braille. `ls` would show `evil\u{202e}gpj.key` as `evilyek.jpg`.
pub fn is_invisible(c: char) -> bool {
    let cf = matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F);
    let blank = matches!(c as u32, 0x115F | 0x1160 | 0x3164 | 0xFFA0 | 0x2800);
    cf || blank || (c.is_whitespace() && c != ' ')
}

impl Name {
    /// A new name, as an administrator gives it: every rule applies.
    pub fn parse(raw: &str) -> Result<Name, KeystoreError> {
        let name = Name::parse_stored(raw)?;
        if let Some(c) = raw.chars().find(|c| is_invisible(*c)) {
            return Err(KeystoreError::InvalidName {
                name: raw.escape_unicode_invisible(),
                reason: match c as u32 {
                    0x202A..=0x202E | 0x2066..=0x2069 => {
                        "a name cannot contain bidirectional override characters"
                    }
                    _ => "a name cannot contain invisible characters (format characters, zero-width or non-ASCII spaces)",
                },
            });
        }
        Ok(name)
    }

    /// A name as stored in a keystore or an export: the rules names have always had, so that
    /// nothing stored before a rule was added stops loading.
    fn parse_stored(raw: &str) -> Result<Name, KeystoreError> {
        if raw.len() > MAX_NAME_BYTES {
            return Err(KeystoreError::NameTooLong { len: raw.len() });
        }
        let reason = if raw.is_empty() {
            Some("a name cannot be empty")
        } else if raw.starts_with('.') {
            Some("a name cannot start with '.'")
        } else if raw.contains('/') {
            Some("a name cannot contain '/'")
        } else if raw.chars().any(|c| c.is_control()) {
            Some("a name cannot contain control characters (NUL, newline, tab, ...)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(KeystoreError::InvalidName {
                name: raw.escape_debug().to_string(),
                reason,
            }),
            None => Ok(Name(raw.to_string())),
        }
    }

    /// A name as the kernel hands it over (bytes): the length rule first, so that a long name
    /// is ENAMETOOLONG whatever its bytes, then UTF-8.
    pub fn parse_bytes(raw: &[u8]) -> Result<Name, KeystoreError> {
        if raw.len() > MAX_NAME_BYTES {
            return Err(KeystoreError::NameTooLong { len: raw.len() });
        }
        let text = std::str::from_utf8(raw).map_err(|_| KeystoreError::InvalidName {
            name: String::from_utf8_lossy(raw).escape_debug().to_string(),
            reason: "names must be UTF-8",
        })?;
        Name::parse(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = KeystoreError;
    /// Deserialization: stored names, under the rules they were made with.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::parse_stored(&s)
    }
}

/// Shows invisible characters as `\u{...}`, so a refusal names what was refused.
trait EscapeInvisible {
    fn escape_unicode_invisible(&self) -> String;
}

impl EscapeInvisible for str {
    fn escape_unicode_invisible(&self) -> String {
        self.chars()
            .map(|c| {
                if is_invisible(c) || c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

macro_rules! hex_tag {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// 128 random bits: collisions are not a practical concern, and the keystore
            /// refuses a duplicate anyway.
            pub fn random() -> Self {
                $ty(hex::encode(rand::random::<[u8; 16]>()))
            }

            pub fn parse(raw: &str) -> Result<Self, KeystoreError> {
                let ok = !raw.is_empty()
                    && raw.len() <= 64
                    && raw.len() % 2 == 0
                    && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if ok {
                    Ok($ty(raw.to_string()))
                } else {
                    Err(KeystoreError::InvalidTag(raw.escape_debug().to_string()))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = KeystoreError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $ty::parse(&s)
            }
        }

        impl From<$ty> for String {
            fn from(t: $ty) -> String {
                t.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex_tag!(
    /// The immutable identity of a key group (lowercase hex).
    GroupTag
);
hex_tag!(
    /// The immutable identity of a key record (lowercase hex); the key's wrapping is bound to it.
    KeyTag
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Cipher {
    #[serde(rename = "AES_128")]
    Aes128,
    #[serde(rename = "AES_192")]
    Aes192,
    #[default]
    #[serde(rename = "AES_256")]
    Aes256,
}

impl Cipher {
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes128 => "AES_128",
            Cipher::Aes192 => "AES_192",
            Cipher::Aes256 => "AES_256",
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 => 24,
            Cipher::Aes256 => 32,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cipher {
    type Err = KeystoreError;
    /// Blanks around the word are ignored and case is not significant, like state names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        [Cipher::Aes128, Cipher::Aes192, Cipher::Aes256]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(word))
            .ok_or_else(|| KeystoreError::UnknownCipher(word.escape_debug().to_string()))
    }
}

/// A point in time, nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_nanos().min(i64::MAX as u128) as i64)
    }

    pub fn from_system_time(t: std::time::SystemTime) -> Timestamp {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(d.as_nanos().min(i64::MAX as u128) as i64)
    }

    pub fn to_system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(self.0.max(0) as u64)
    }

    /// `YYYYmmddTHHMMSSZ` (UTC), for names that sort in time order.
    pub fn to_compact_utc(self) -> String {
        let secs = self.0.div_euclid(1_000_000_000);
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| t.format(&fmt).ok())
            .unwrap_or_else(|| secs.to_string())
    }

    /// RFC 3339 in UTC with second precision, e.g. `2026-11-22T20:14:25Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000_000);
        match time::OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| secs.to_string()),
            Err(_) => secs.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("pool-1").is_ok());
        assert!(Name::parse("with space").is_ok());
        assert!(matches!(
            Name::parse(""),
            Err(KeystoreError::InvalidName { .. })
        ));
        assert!(matches!(
            Name::parse(".hidden"),
            Err(KeystoreError::InvalidName { .. })
        ));
        assert!(matches!(
            Name::parse("a/b"),
            Err(KeystoreError::InvalidName { .. })
        ));
        assert!(matches!(
            Name::parse("a\nb"),
            Err(KeystoreError::InvalidName { .. })
        ));
        assert!(Name::parse(&"x".repeat(255)).is_ok());
        assert!(matches!(
            Name::parse(&"x".repeat(256)),
            Err(KeystoreError::NameTooLong { len: 256 })
        ));
        // Too long is decided before UTF-8, so the kernel's 256-byte names get ENAMETOOLONG.
        assert!(matches!(
            Name::parse_bytes(&[0xff; 256]),
            Err(KeystoreError::NameTooLong { len: 256 })
        ));
        assert!(matches!(
            Name::parse_bytes(b"bad\xff"),
            Err(KeystoreError::InvalidName { .. })
        ));
        assert_eq!(Name::parse_bytes(b"k1").unwrap().as_str(), "k1");
    }

    #[test]
    fn names_that_spoof_listings_are_refused() {
        for bad in [
            "evil\u{202e}gpj.key",
            "a\u{200b}b",
            "\u{feff}pool",
            "soft\u{ad}hyphen",
            "no\u{a0}break",
            "ideographic\u{3000}space",
            "\u{3164}",
            "lr\u{2066}i",
            "tag\u{e0041}",
        ] {
            let e = Name::parse(bad).unwrap_err();
            assert!(matches!(e, KeystoreError::InvalidName { .. }), "{bad:?}");
            // The refusal shows the character, not an invisible nothing.
            assert!(e.to_string().contains("\\u{"), "{e}");
        }
        for good in [
            "pool 1",
            "cl\u{e9}-\u{e9}t\u{e9}",
            "\u{43a}\u{43b}\u{44e}\u{447}",
            "\u{9375}",
            "k_1.v2",
            "emoji-\u{1f511}",
        ] {
            assert!(Name::parse(good).is_ok(), "{good:?}");
        }
        // A name stored before the rule still loads.
        let stored: Name = serde_json::from_str("\"old\\u200bname\"").unwrap();
        assert_eq!(stored.as_str(), "old\u{200b}name");
    }

    #[test]
    fn tags_are_lowercase_hex() {
        let t = KeyTag::random();
        assert_eq!(t.as_str().len(), 32);
        assert!(KeyTag::parse(t.as_str()).is_ok());
        assert!(KeyTag::parse("ABCD").is_err());
        assert!(KeyTag::parse("xyz0").is_err());
        assert!(KeyTag::parse("").is_err());
    }

    #[test]
    fn ciphers() {
        assert_eq!(" aes_128\n".parse::<Cipher>().unwrap(), Cipher::Aes128);
        assert_eq!(Cipher::default().key_len(), 32);
        assert_eq!(Cipher::Aes192.key_len(), 24);
        assert!("AES_512".parse::<Cipher>().is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(
            Timestamp(1_700_000_000_123_000_000).to_rfc3339(),
            "2023-11-14T22:13:20Z"
        );
    }
}
