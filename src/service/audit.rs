//! The audit trail of the one service path: every key read and every change is written to the
//! audit log before it is answered (changes: before they are made), every refusal too, and
//! when the log cannot be written, key reads and changes are refused (`KmsError::Audit`,
//! EIO) while metadata reads and unquiesce go on. Service resumes by itself once the log is
//! writable again: every attempt tries the log anew.
//!
//! Who asks is said by the front end for the duration of a request (`acting_as`), so that the
//! service's methods keep their signatures; work the daemon does on its own (rotation, a
//! lease lapsing) is logged as the daemon's.

use std::cell::RefCell;

use super::{Kms, KmsError};
use crate::audit::{Caller, Event, Verdict};
use crate::keystore::{Change, KeyTag, Keystore};

thread_local! {
    /// (uid, gid, pid) of the request this thread is answering, if a front end said so.
    static ACTOR: RefCell<Option<(u32, u32, u32)>> = const { RefCell::new(None) };
}

/// Says who is asking until dropped. Nests: the previous actor comes back.
#[must_use]
#[derive(Debug)]
pub struct Acting(Option<(u32, u32, u32)>);

pub fn acting_as(uid: u32, gid: u32, pid: u32) -> Acting {
    Acting(ACTOR.with(|a| a.replace(Some((uid, gid, pid)))))
}

impl Drop for Acting {
    fn drop(&mut self) {
        ACTOR.with(|a| *a.borrow_mut() = self.0.take());
    }
}

thread_local! {
    /// The certificate subject of the KMIP client this thread is answering, if any.
    static CLIENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Says that a network client (KMIP), named by its certificate's subject, is asking until
/// dropped. Its lines carry the subject (`client`) and the daemon's own ids; it has no uid, so
/// the two-person rule never counts it as an administrator.
#[must_use]
#[derive(Debug)]
pub struct ActingClient(Option<String>);

pub fn acting_as_client(subject: &str) -> ActingClient {
    ActingClient(CLIENT.with(|c| c.replace(Some(subject.to_string()))))
}

impl Drop for ActingClient {
    fn drop(&mut self) {
        CLIENT.with(|c| *c.borrow_mut() = self.0.take());
    }
}

/// The uid the front end says is asking, if any.
pub(super) fn actor_uid() -> Option<u32> {
    ACTOR.with(|a| a.borrow().map(|(uid, _, _)| uid))
}

/// The caller, with its process name and executable looked up only when a line is written.
pub(super) fn actor() -> Caller {
    if let Some(subject) = CLIENT.with(|c| c.borrow().clone()) {
        return Caller::client(&subject);
    }
    match ACTOR.with(|a| *a.borrow()) {
        Some((uid, gid, pid)) => Caller::lookup(uid, gid, pid),
        None => Caller::daemon(),
    }
}

/// What a change is about, in the keystore as it is before the change.
struct About {
    op: &'static str,
    group: Option<String>,
    record: Option<String>,
    tag: Option<KeyTag>,
    new_name: Option<String>,
}

fn about(ks: &Keystore, change: &Change) -> About {
    let group_name = |t| ks.group(t).map(|g| g.name.to_string());
    let record = |t: &KeyTag| {
        let r = ks.record(t);
        (
            r.and_then(|r| group_name(&r.group)),
            r.map(|r| r.name.to_string()),
        )
    };
    let g = |op, tag| About {
        op,
        group: group_name(tag),
        record: None,
        tag: None,
        new_name: None,
    };
    let r = |op, tag: &KeyTag| {
        let (group, record) = record(tag);
        About {
            op,
            group,
            record,
            tag: Some(tag.clone()),
            new_name: None,
        }
    };
    match change {
        Change::CreateGroup { name, .. } => About {
            op: "create group",
            group: Some(name.to_string()),
            record: None,
            tag: None,
            new_name: None,
        },
        Change::RenameGroup { tag, name, .. } => About {
            new_name: Some(name.to_string()),
            ..g("rename group", tag)
        },
        Change::DescribeGroup { tag, .. } => g("describe group", tag),
        Change::SetGroupCipher { tag, .. } => g("set cipher", tag),
        Change::SetRotation { tag, .. } => g("set rotation", tag),
        Change::DeleteGroup { tag } => g("delete group", tag),
        Change::CreateRecord {
            tag, group, name, ..
        }
        | Change::ImportRecord {
            tag, group, name, ..
        } => About {
            op: if matches!(change, Change::CreateRecord { .. }) {
                "create record"
            } else {
                "import record"
            },
            group: group_name(group),
            record: Some(name.to_string()),
            tag: Some(tag.clone()),
            new_name: None,
        },
        Change::RenameRecord { tag, name, .. } => About {
            new_name: Some(name.to_string()),
            ..r("rename record", tag)
        },
        Change::DescribeRecord { tag, .. } => r("describe record", tag),
        Change::SetState { tag, state, .. } => r(state_op(*state), tag),
        Change::DeleteRecord { tag } => r("delete record", tag),
    }
}

fn state_op(state: crate::keystore::State) -> &'static str {
    use crate::keystore::State::*;
    match state {
        Prelive => "set state prelive",
        Active => "set state active",
        Inactive => "set state inactive",
        Deprecated => "set state deprecated",
        Terminated => "set state terminated",
    }
}

fn event<'a>(caller: &'a Caller, a: &'a About, verdict: Verdict<'a>) -> Event<'a> {
    let tag = a.tag.as_ref().map(|t| t.as_str());
    match (&a.group, &a.record, &a.new_name) {
        (Some(g), Some(r), Some(to)) => Event::rename_record(caller, g, r, to, tag, verdict),
        (Some(g), None, Some(to)) => Event::rename_group(caller, g, to, verdict),
        (Some(g), Some(r), None) => Event::record(caller, a.op, g, r, tag, verdict),
        (Some(g), None, None) => Event::group(caller, a.op, g, verdict),
        _ => Event::keystore(caller, a.op, verdict),
    }
}

impl Kms {
    /// Writes the line that allows `change`, before it is made; the change's frame makes it
    /// durable (`audit_unsaved`). Without an audit log, nothing to do.
    pub(super) fn audit_change(&self, ks: &Keystore, change: &Change) -> Result<(), KmsError> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let a = about(ks, change);
        let caller = actor();
        log.append(&event(&caller, &a, Verdict::Allowed))
            .map_err(|e| KmsError::Audit(e.to_string()))
    }

    /// The lines the next KMS_DATA frame carries, and the seq of the last of them.
    pub(super) fn audit_unsaved(&self) -> (Vec<String>, u64) {
        self.audit
            .as_ref()
            .map_or_else(|| (Vec::new(), 0), |log| log.unsaved())
    }

    /// The frame carrying the lines up to `seq` is synced.
    pub(super) fn audit_saved_through(&self, seq: u64) {
        if let Some(log) = &self.audit {
            log.saved_through(seq);
        }
    }

    /// Compaction drops the frames, and with them the copies of lines they carry: the log
    /// itself must hold them durably first.
    pub(super) fn sync_audit_before_compaction(&self) -> Result<(), KmsError> {
        match &self.audit {
            Some(log) => log.sync().map_err(|e| KmsError::Audit(e.to_string())),
            None => Ok(()),
        }
    }

    /// A refused or failed change: logged if the log can take it (the refusal stands anyway).
    pub(super) fn audit_change_refused(&self, ks: &Keystore, change: &Change, e: &KmsError) {
        if let Some(log) = &self.audit {
            let a = about(ks, change);
            let caller = actor();
            let reason = e.to_string();
            let verdict = match e {
                KmsError::Store(_) | KmsError::Crypto(_) | KmsError::Audit(_) => {
                    Verdict::Failed(&reason)
                }
                _ => Verdict::Refused(&reason),
            };
            let _ = log.append(&event(&caller, &a, verdict));
        }
    }

    /// A key about to be handed out (`Ok`), or refused: the line is written first (a change's
    /// line is also synced first; a read's is not, see below).
    pub(super) fn audit_key(
        &self,
        tag: &KeyTag,
        refusal: Option<&KmsError>,
    ) -> Result<(), KmsError> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let a = self.key_about(tag);
        let caller = actor();
        match refusal {
            // Written before the key is handed out, so a crash of the daemon cannot lose it;
            // not synced: a read changes nothing on disk, and a backup job reading many keys
            // should not pay an fdatasync per key. The next change's sync (or the kernel's
            // writeback) makes it durable.
            None => log
                .append(&event(&caller, &a, Verdict::Allowed))
                .map_err(|e| KmsError::Audit(e.to_string())),
            Some(e) => {
                let reason = e.to_string();
                let _ = log.append(&event(&caller, &a, Verdict::Refused(&reason)));
                Ok(())
            }
        }
    }

    /// A key refused by the front end's own rule (`--key-policy`): logged as an `open key`
    /// refusal, best effort.
    pub fn audit_key_refusal(&self, tag: &KeyTag, reason: &str) {
        if let Some(log) = &self.audit {
            let a = self.key_about(tag);
            let caller = actor();
            let _ = log.append(&event(&caller, &a, Verdict::Refused(reason)));
        }
    }

    /// An `open key` event about the record `tag`, named as the keystore names it now.
    fn key_about(&self, tag: &KeyTag) -> About {
        let ks = self.read();
        let r = ks.record(tag);
        About {
            op: "open key",
            group: r
                .and_then(|r| ks.group(&r.group))
                .map(|g| g.name.to_string()),
            record: r.map(|r| r.name.to_string()),
            tag: Some(tag.clone()),
            new_name: None,
        }
    }

    /// A keystore-wide operation (quiesce, unquiesce, a lapsed lease). `required`: refuse the
    /// operation if its line cannot be written (quiesce); otherwise best effort (unquiesce must
    /// work whatever the log's state, or a freeze could never end).
    pub(super) fn audit_keystore(
        &self,
        op: &'static str,
        verdict: Result<(), &KmsError>,
        required: bool,
    ) -> Result<(), KmsError> {
        let Some(log) = &self.audit else {
            return Ok(());
        };
        let caller = actor();
        let reason = verdict.err().map(|e| e.to_string());
        let v = match &reason {
            None => Verdict::Allowed,
            Some(r) => Verdict::Refused(r),
        };
        let written = log
            .append(&Event::keystore(&caller, op, v))
            .and_then(|()| log.sync());
        match written {
            Err(e) if required => Err(KmsError::Audit(e.to_string())),
            _ => Ok(()),
        }
    }

    /// A refusal decided before the service was asked (a read-only file, a bad command): the
    /// front end reports it here so that every refusal is in the log. Best effort.
    pub fn audit_refusal(&self, op: &'static str, path: &str, reason: &str) {
        if let Some(log) = &self.audit {
            let caller = actor();
            let reason = format!("{path}: {reason}");
            let _ = log.append(&Event::keystore(&caller, op, Verdict::Refused(&reason)));
        }
    }

    /// Whether the audit log can be written, for `.status` (None: no audit log).
    pub fn audit_health(&self) -> Option<(std::path::PathBuf, Result<(), String>)> {
        self.audit
            .as_ref()
            .map(|l| (l.path().to_path_buf(), l.health()))
    }

    /// After logrotate moved the file (SIGHUP): the chain continues in a new file.
    pub fn reopen_audit(&self) {
        let Some(log) = &self.audit else {
            log::info!("SIGHUP: no audit log to reopen; still serving");
            return;
        };
        {
            match log.reopen() {
                Ok(()) => log::info!("SIGHUP: reopened the audit log {}", log.path().display()),
                Err(e) => log::error!("SIGHUP: cannot reopen the audit log: {e}"),
            }
        }
    }

    /// The end of the audit log (at most `max` bytes, whole lines), for `.audit`.
    pub fn audit_tail(&self, max: u64) -> Option<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let log = self.audit.as_ref()?;
        let mut f = std::fs::File::open(log.path()).ok()?;
        let len = f.metadata().ok()?.len();
        let start = len.saturating_sub(max);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        if start > 0 {
            let cut = bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
        Some(bytes)
    }
}
