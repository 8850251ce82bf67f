//! What the files of the tree show, rendered from one consistent view of the service: the
//! keystore, the freeze and the status under one read guard, and the `.errors` ring. Each file
//! is rendered from its own object (and, for `.group.json`, the name of its active record),
//! never from the whole keystore, so reading one costs the same with ten records or ten
//! thousand.

use serde::Serialize;

use super::inode::Of;
use super::ring::ErrorRing;
use crate::keystore::{KeyGroup, KeyRecord, Keystore, Period, Timestamp};
use crate::service::{Kms, Pending, PendingTarget, ReadGuard};

/// One consistent look at everything a file may show. Holding it holds the service's read
/// lock: keep it short, and never call the service while holding it.
pub struct View<'a> {
    pub ks: &'a ReadGuard<'a>,
    pub errors: &'a ErrorRing,
    /// For what lives outside the keystore's lock (the audit log).
    pub kms: &'a Kms,
}

impl View<'_> {
    pub fn keystore(&self) -> &Keystore {
        self.ks
    }

    pub fn group(&self, of: &Of) -> Option<&KeyGroup> {
        match of {
            Of::Group(g) => self.ks.group(g),
            _ => None,
        }
    }

    pub fn record(&self, of: &Of) -> Option<&KeyRecord> {
        match of {
            Of::Record(k) => self.ks.record(k),
            _ => None,
        }
    }
}

/// JSON files end with a newline, as text files do; keys keep the struct's field order.
fn json_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these structs of strings and numbers cannot fail.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// One word and a newline, as `cat state` and `cat .cipher` show it.
fn word_line(word: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 1);
    out.extend_from_slice(word.as_bytes());
    out.push(b'\n');
    out
}

#[derive(Serialize)]
struct StatusJson<'a> {
    version: &'a str,
    format_version: u16,
    data_dir: String,
    groups: usize,
    records: usize,
    hmk_id: &'a str,
    kpk_id: &'a str,
    /// Each master key: id, whether derived from a passphrase, where it is kept, last change.
    hmk: MasterKeyJson,
    kpk: MasterKeyJson,
    quiesced: bool,
    /// The daemon's own protection of the keys it holds.
    hardening: HardeningJson,
    /// The audit log, and whether it can be written (key reads and changes wait while not).
    audit: Option<AuditJson>,
    /// Destructive moves waiting for a second administrator, everywhere.
    pending: Vec<PendingJson<'a>>,
}

#[derive(Serialize)]
struct MasterKeyJson {
    id: String,
    derived: bool,
    kept: &'static str,
    changed: String,
}

impl From<crate::service::MasterKeyStatus> for MasterKeyJson {
    fn from(m: crate::service::MasterKeyStatus) -> Self {
        MasterKeyJson {
            id: m.id,
            derived: m.derived,
            kept: m.keeping.as_str(),
            changed: m.changed.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct AuditJson {
    log: String,
    writable: bool,
    reason: Option<String>,
}

#[derive(Serialize)]
struct HardeningJson {
    dumpable: bool,
    core_limit: u64,
    /// Whether the daemon's memory is locked (never swapped): `kmsfs mount` locks it.
    memory_locked: bool,
    /// Whether the pages holding keys are kept out of core dumps (MADV_DONTDUMP). (Not how
    /// many there are: that moves with every key handed out, and `.status` reads the same for
    /// everyone until the keystore changes.)
    secrets_out_of_dumps: bool,
}

pub fn status(v: &View<'_>, _: &Of) -> Option<Vec<u8>> {
    let s = v.ks.status();
    let [hmk, kpk] = v.ks.master_keys();
    Some(json_line(&StatusJson {
        version: s.version,
        format_version: s.format_version,
        data_dir: s.data_dir.display().to_string(),
        groups: s.groups,
        records: s.records,
        hmk_id: &s.hmk_id,
        kpk_id: &s.kpk_id,
        hmk: hmk.into(),
        kpk: kpk.into(),
        quiesced: s.quiesced,
        hardening: {
            let h = crate::harden::current();
            HardeningJson {
                dumpable: h.dumpable,
                core_limit: h.core_limit,
                memory_locked: h.locked_bytes > 0,
                secrets_out_of_dumps: crate::crypto::dump_exclusion().0,
            }
        },
        pending: v
            .ks
            .pending()
            .iter()
            .map(|p| {
                let of = match &p.target {
                    PendingTarget::Group(g) => v.ks.group(g).map(|g| g.name.to_string()),
                    PendingTarget::Record(k) => v.ks.record(k).and_then(|r| {
                        v.ks.group(&r.group)
                            .map(|g| format!("{}/{}", g.name, r.name))
                    }),
                    PendingTarget::Keystore => Some("/".to_string()),
                };
                pending_json(p, of)
            })
            .collect(),
        audit: v.kms.audit_health().map(|(path, health)| AuditJson {
            log: path.display().to_string(),
            writable: health.is_ok(),
            reason: health.err(),
        }),
    }))
}

/// `.audit`: the latest lines of the audit log (up to 64 KiB of whole lines), for the owner.
pub fn audit(v: &View<'_>, _: &Of) -> Option<Vec<u8>> {
    Some(v.kms.audit_tail(64 * 1024).unwrap_or_default())
}

#[derive(Serialize)]
struct QuiesceJson {
    quiesced: bool,
    holds: usize,
    since: Option<String>,
    leases: Vec<String>,
}

pub fn quiesce(v: &View<'_>, _: &Of) -> Option<Vec<u8>> {
    let q = v.ks.quiesce_view();
    Some(json_line(&QuiesceJson {
        quiesced: q.quiesced,
        holds: q.holds,
        since: q.since.map(Timestamp::to_rfc3339),
        leases: q.leases.into_iter().map(Timestamp::to_rfc3339).collect(),
    }))
}

pub fn errors(v: &View<'_>, _: &Of) -> Option<Vec<u8>> {
    Some(v.errors.contents())
}

/// A destructive move waiting for a second administrator (`--two-person`).
#[derive(Serialize)]
struct PendingJson<'a> {
    /// The group or record's path in the mount (in `.status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    of: Option<String>,
    action: &'a str,
    by_uid: u32,
    until: String,
}

fn pending_json<'a>(p: &'a Pending, of: Option<String>) -> PendingJson<'a> {
    PendingJson {
        of,
        action: &p.action,
        by_uid: p.by_uid,
        until: p.until.to_rfc3339(),
    }
}

fn pending_of<'a>(v: &'a View<'_>, target: &PendingTarget) -> Vec<PendingJson<'a>> {
    v.ks.pending()
        .iter()
        .filter(|p| &p.target == target)
        .map(|p| pending_json(p, None))
        .collect()
}

/// `.group.json`: keys in the contract's order.
#[derive(Serialize)]
struct GroupJson<'a> {
    name: &'a str,
    tag: &'a str,
    cipher: &'a str,
    description: &'a str,
    created: String,
    modified: String,
    records: usize,
    active: Option<&'a str>,
    /// The rotation period (`90d`) or `off`.
    rotation: String,
    /// When the active record is due to be replaced; null when rotation is off or no record
    /// is active.
    next_rotation: Option<String>,
    /// After how long inactive records become deprecated, or `off`.
    retire_after: String,
    /// Destructive moves of the group waiting for a second administrator.
    pending: Vec<PendingJson<'a>>,
}

/// A period in the largest unit that divides it exactly: `90d`, `12h`, `30m`, `45s`.
pub fn period_text(p: Option<Period>) -> String {
    let Some(p) = p else {
        return "off".into();
    };
    let s = p.secs();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

pub fn group_json(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    let g = v.group(of)?;
    let active = g
        .active()
        .and_then(|t| v.ks.record(t))
        .map(|r| r.name.as_str());
    Some(json_line(&GroupJson {
        name: g.name.as_str(),
        tag: g.tag.as_str(),
        cipher: g.cipher.as_str(),
        description: &g.description,
        created: g.created.to_rfc3339(),
        modified: g.modified.to_rfc3339(),
        records: g.record_count(),
        active,
        rotation: period_text(g.rotation.period),
        next_rotation: v.ks.next_rotation(g).map(Timestamp::to_rfc3339),
        retire_after: period_text(g.rotation.retire_after),
        pending: pending_of(v, &PendingTarget::Group(g.tag.clone())),
    }))
}

/// `.rotation`: the period, when the next rotation is due (`-` when none is), and the
/// retirement period, one `word value` pair per line.
pub fn rotation(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    let g = v.group(of)?;
    let next =
        v.ks.next_rotation(g)
            .map_or_else(|| "-".to_string(), Timestamp::to_rfc3339);
    Some(
        format!(
            "period {}\nnext {next}\nretire {}\n",
            period_text(g.rotation.period),
            period_text(g.rotation.retire_after)
        )
        .into_bytes(),
    )
}

pub fn group_description(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    Some(v.group(of)?.description.clone().into_bytes())
}

pub fn cipher(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    Some(word_line(v.group(of)?.cipher.as_str()))
}

/// `.create` reads back empty, even for root.
pub fn nothing(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    match of {
        Of::Root => Some(Vec::new()),
        _ => v.group(of).map(|_| Vec::new()),
    }
}

/// The target of `.active`: the record's name, relative to the group directory; absent while
/// no record is active.
pub fn active_target(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    let r = v.ks.record(v.group(of)?.active()?)?;
    Some(r.name.as_str().as_bytes().to_vec())
}

/// `record.json`: never the key; the salt only when the key came from a passphrase.
#[derive(Serialize)]
struct RecordJson<'a> {
    name: &'a str,
    tag: &'a str,
    group: &'a str,
    group_tag: &'a str,
    state: &'a str,
    cipher: &'a str,
    description: &'a str,
    created: String,
    modified: String,
    /// When the record entered its current state.
    state_since: String,
    passphrase_derived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    /// Destructive moves of the record waiting for a second administrator.
    pending: Vec<PendingJson<'a>>,
}

pub fn record_json(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    let r = v.record(of)?;
    let group = v.ks.group(&r.group);
    Some(json_line(&RecordJson {
        name: r.name.as_str(),
        tag: r.tag.as_str(),
        group: group.map(|g| g.name.as_str()).unwrap_or(""),
        group_tag: r.group.as_str(),
        state: r.state.as_str(),
        cipher: group.map(|g| g.cipher.as_str()).unwrap_or(""),
        description: &r.description,
        created: r.created.to_rfc3339(),
        modified: r.modified.to_rfc3339(),
        state_since: r.in_state_since().to_rfc3339(),
        passphrase_derived: r.derivation.is_some(),
        salt: r.derivation.as_ref().map(|d| hex::encode(&d.salt)),
        pending: pending_of(v, &PendingTarget::Record(r.tag.clone())),
    }))
}

pub fn state(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    Some(word_line(v.record(of)?.state.as_str()))
}

pub fn record_description(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    Some(v.record(of)?.description.clone().into_bytes())
}

/// The length of a record's key (its group's cipher's) while its state lets it be read, 0
/// otherwise: `ls -l` shows what `cat` would give.
pub fn key_len(v: &View<'_>, of: &Of) -> Option<u64> {
    let r = v.record(of)?;
    let len = v.ks.group(&r.group)?.cipher.key_len() as u64;
    Some(if r.state.allows_key_use() { len } else { 0 })
}

/// The target of `.by-tag/TAG`: `../GROUP/RECORD`.
pub fn tag_target(v: &View<'_>, of: &Of) -> Option<Vec<u8>> {
    let r = v.record(of)?;
    let g = v.ks.group(&r.group)?;
    Some(format!("../{}/{}", g.name, r.name).into_bytes())
}
