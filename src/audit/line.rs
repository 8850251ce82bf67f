//! One line, byte for byte: the fields serialized in a fixed order without `mac`, then
//! `,"mac":"HEX"` inserted before the final `}`. Verification strips that suffix textually, so
//! the MAC covers exactly the bytes that were written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{Event, Verdict};
use super::key::AuditKey;

/// No line is longer (the fields are capped well below it); anything longer is not a line
/// kmsfs wrote.
pub const MAX_LINE: usize = 64 * 1024;
/// Caps on what a caller passes, in bytes (a cut string ends in `...`). Names are at most
/// 255 bytes anyway; a path can be 4096.
const MAX_FIELD: usize = 1024;
const MAX_EXE: usize = 4096;
const MAX_REASON: usize = 512;

const MAC_PREFIX: &[u8] = b",\"mac\":\"";
/// `,"mac":"` + 64 hex digits + `"}`.
const MAC_SUFFIX_LEN: usize = MAC_PREFIX.len() + 64 + 2;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Outcome {
    Allowed,
    Refused,
    Failed,
}

/// The fields in the order they are written. `S` is `&str` to write, `String` to read back.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Line<S> {
    pub seq: u64,
    pub time: S,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub process: Option<S>,
    pub exe: Option<S>,
    /// Only in lines of network clients (KMIP), so that every other line is as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<S>,
    pub operation: S,
    pub group: Option<S>,
    pub record: Option<S>,
    pub key_tag: Option<S>,
    pub new_name: Option<S>,
    pub result: Outcome,
    pub reason: Option<S>,
    pub prev: S,
}

/// What a verified line says about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Link {
    pub seq: u64,
    pub prev: [u8; 32],
}

pub(super) fn hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Now, as RFC 3339 UTC with microseconds: `2026-01-02T03:04:05.123456Z`.
pub(super) fn now() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}

/// `s`, cut to at most `max` bytes (at a character boundary, ending in `...`).
fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut cut = max - 3;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut]).into()
}

/// The line for `event` (without its newline).
pub(super) fn build(
    key: &AuditKey,
    seq: u64,
    time: &str,
    prev: &[u8; 32],
    event: &Event<'_>,
) -> Vec<u8> {
    let (result, reason) = match event.verdict {
        Verdict::Allowed => (Outcome::Allowed, None),
        Verdict::Refused(r) => (Outcome::Refused, Some(r)),
        Verdict::Failed(r) => (Outcome::Failed, Some(r)),
    };
    let c = event.caller;
    fn field(s: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
        s.map(|s| cap(s, MAX_FIELD))
    }
    let process = field(c.process.as_deref());
    let exe = c.exe.as_deref().map(|s| cap(s, MAX_EXE));
    let client = field(c.client.as_deref());
    let operation = cap(event.operation, MAX_FIELD);
    let (group, record) = (field(event.group), field(event.record));
    let (key_tag, new_name) = (field(event.key_tag), field(event.new_name));
    let reason = reason.map(|s| cap(s, MAX_REASON));
    let prev = hex::encode(prev);
    let line = Line::<&str> {
        seq,
        time,
        uid: c.uid,
        gid: c.gid,
        pid: c.pid,
        process: process.as_deref(),
        exe: exe.as_deref(),
        client: client.as_deref(),
        operation: &operation,
        group: group.as_deref(),
        record: record.as_deref(),
        key_tag: key_tag.as_deref(),
        new_name: new_name.as_deref(),
        result,
        reason: reason.as_deref(),
        prev: &prev,
    };
    let body = serde_json::to_vec(&line).expect("a struct of strings and numbers serializes");
    let line = with_mac(&body, &key.mac(&body));
    debug_assert!(line.len() <= MAX_LINE, "the caps keep a line short");
    line
}

/// `body` (a JSON object) with `,"mac":"HEX"` before its final `}`.
fn with_mac(body: &[u8], mac: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + MAC_SUFFIX_LEN);
    out.extend_from_slice(&body[..body.len() - 1]);
    out.extend_from_slice(MAC_PREFIX);
    out.extend_from_slice(hex::encode(mac).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// The body the MAC covers and the MAC, taken apart textually.
fn split_mac(line: &[u8]) -> Result<(Vec<u8>, [u8; 32]), String> {
    let n = line.len();
    if n < MAC_SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err("not an audit line (it does not end with a \"mac\" field)".into());
    }
    let at = n - MAC_SUFFIX_LEN;
    if &line[at..at + MAC_PREFIX.len()] != MAC_PREFIX {
        return Err("not an audit line (it does not end with a \"mac\" field)".into());
    }
    let hex_mac = &line[at + MAC_PREFIX.len()..n - 2];
    let mut mac = [0u8; 32];
    if !hex_mac
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(hex_mac, &mut mac).is_err()
    {
        return Err("the \"mac\" field is not 64 lowercase hex digits".into());
    }
    let mut body = line[..at].to_vec();
    body.push(b'}');
    Ok((body, mac))
}

/// Checks a line's form (the exact bytes kmsfs writes, every field of the right type) and,
/// with a key, its MAC. The reason says what is wrong, for `FILE:LINE: reason`.
pub(super) fn parse(line: &[u8], key: Option<&AuditKey>) -> Result<Link, String> {
    let (body, mac) = split_mac(line)?;
    let fields: Line<String> =
        serde_json::from_slice(&body).map_err(|e| format!("not a valid audit line: {e}"))?;
    // Re-serialized, the fields must give the very same bytes: no extra spaces, no reordered
    // or duplicated fields, no other escaping. (The MAC needs no such check; without the key
    // it is what catches a hand-edited line that still parses.)
    let again = serde_json::to_vec(&fields).map_err(|e| e.to_string())?;
    if again != body {
        return Err("not in the exact form kmsfs writes (edited by hand?)".into());
    }
    if let Some(key) = key {
        if !key.check(&body, &mac) {
            return Err("the MAC does not match: the line was altered, or it was not written with this keystore's key".into());
        }
    }
    let mut prev = [0u8; 32];
    if fields.prev.len() != 64
        || !fields
            .prev
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(&fields.prev, &mut prev).is_err()
    {
        return Err("the \"prev\" field is not 64 lowercase hex digits".into());
    }
    if fields.seq == 0 {
        return Err("seq 0 (sequence numbers start at 1)".into());
    }
    time::OffsetDateTime::parse(&fields.time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("the time {:?} is not RFC 3339", fields.time))?;
    let reason_ok = match fields.result {
        Outcome::Allowed => fields.reason.is_none(),
        Outcome::Refused | Outcome::Failed => fields.reason.is_some(),
    };
    if !reason_ok {
        return Err("\"reason\" must be given for refused and failed events only".into());
    }
    Ok(Link {
        seq: fields.seq,
        prev,
    })
}

#[cfg(test)]
pub(super) fn test_with_mac(body: &[u8], mac: &[u8; 32]) -> Vec<u8> {
    with_mac(body, mac)
}

#[cfg(test)]
pub(super) fn test_split_mac(line: &[u8]) -> Result<(Vec<u8>, [u8; 32]), String> {
    split_mac(line)
}
