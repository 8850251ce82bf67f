//! The operations: each reads its request payload, checks the client's rights, calls the
//! service (never the store or the mount: the service checks, persists, audits and publishes
//! every change), and returns its response payload or a `Failure`.

mod attributes;
mod keys;
mod lifecycle;
mod locate;
mod server;

use super::error::Failure;
use super::fields;
use super::message::Version;
use super::policy::{Entry, Right};
use super::tags::{self, op, reason};
use super::ttlv::Ttlv;
use crate::keystore::{GroupTag, KeyTag};
use crate::service::Kms;

/// What one request message is served with.
#[derive(Debug)]
pub struct Context<'a> {
    pub kms: &'a Kms,
    /// The client's policy entry; None: it has none and may do nothing.
    pub rights: Option<&'a Entry>,
    /// The certificate subject, for the log.
    pub client: &'a str,
    pub version: Version,
    /// KMIP's ID Placeholder: the key the last Create, Register or Locate of this batch
    /// returned, used by a later item that names none (Create then Activate in one batch).
    placeholder: Option<KeyTag>,
}

impl<'a> Context<'a> {
    pub fn new(
        kms: &'a Kms,
        rights: Option<&'a Entry>,
        client: &'a str,
        version: Version,
    ) -> Context<'a> {
        Context {
            kms,
            rights,
            client,
            version,
            placeholder: None,
        }
    }

    /// Refuses, and logs the refusal in the audit log, unless the client has `right` in
    /// the group named `group`.
    fn require(&self, what: &'static str, right: Right, group: &str) -> Result<(), Failure> {
        let allowed = self.rights.is_some_and(|r| r.allows(right, group));
        if allowed {
            return Ok(());
        }
        let why = match self.rights {
            None => format!(
                "KMIP client {:?} has no entry in the KMIP policy",
                self.client
            ),
            Some(_) => format!(
                "KMIP client {:?} may not {} in group {group:?}",
                self.client,
                right.as_str()
            ),
        };
        self.kms.audit_refusal(what, group, &why);
        log::warn!("KMIP {what}: {why}");
        Err(Failure::denied(why))
    }

    /// Refuses a client without a policy entry, for operations about no group.
    fn require_entry(&self, what: &'static str) -> Result<(), Failure> {
        if self.rights.is_some() {
            return Ok(());
        }
        let why = format!(
            "KMIP client {:?} has no entry in the KMIP policy",
            self.client
        );
        self.kms.audit_refusal(what, "-", &why);
        log::warn!("KMIP {what}: {why}");
        Err(Failure::denied(why))
    }

    /// The record a payload names (its Unique Identifier, or the ID Placeholder), with its
    /// group's tag and name. An identifier that is not a key tag names no key.
    fn target(&self, payload: &Ttlv) -> Result<(KeyTag, GroupTag, String), Failure> {
        let tag = match fields::text(payload, tags::UNIQUE_IDENTIFIER)? {
            Some(uid) => KeyTag::parse(uid).map_err(|_| Failure::not_found(uid))?,
            None => self
                .placeholder
                .clone()
                .ok_or_else(|| Failure::missing("Unique Identifier"))?,
        };
        let ks = self.kms.read();
        let record = ks
            .record(&tag)
            .ok_or_else(|| Failure::not_found(tag.as_str()))?;
        let group = ks
            .group(&record.group)
            .ok_or_else(|| Failure::not_found(tag.as_str()))?;
        Ok((tag.clone(), group.tag.clone(), group.name.to_string()))
    }

    fn set_placeholder(&mut self, tag: Option<KeyTag>) {
        self.placeholder = tag;
    }
}

/// Runs one batch item's operation.
pub fn run(ctx: &mut Context<'_>, operation: u32, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    match operation {
        op::DISCOVER_VERSIONS => server::discover_versions(ctx, payload),
        op::QUERY => server::query(ctx, payload),
        op::CREATE => keys::create(ctx, payload),
        op::REGISTER => keys::register(ctx, payload),
        op::GET => keys::get(ctx, payload),
        op::GET_ATTRIBUTES => attributes::get_attributes(ctx, payload),
        op::GET_ATTRIBUTE_LIST => attributes::get_attribute_list(ctx, payload),
        op::ADD_ATTRIBUTE => attributes::add(ctx, payload),
        op::MODIFY_ATTRIBUTE => attributes::modify(ctx, payload),
        op::DELETE_ATTRIBUTE => attributes::delete(ctx, payload),
        op::LOCATE => locate::locate(ctx, payload),
        op::ACTIVATE => lifecycle::activate(ctx, payload),
        op::REVOKE => lifecycle::revoke(ctx, payload),
        op::DESTROY => lifecycle::destroy(ctx, payload),
        other => Err(Failure::new(
            reason::OPERATION_NOT_SUPPORTED,
            format!("operation 0x{other:X} is not supported by kmsfs"),
        )),
    }
}

/// The operations `run` serves, for Query.
pub const SUPPORTED: [u32; 14] = [
    op::CREATE,
    op::REGISTER,
    op::LOCATE,
    op::GET,
    op::GET_ATTRIBUTES,
    op::GET_ATTRIBUTE_LIST,
    op::ADD_ATTRIBUTE,
    op::MODIFY_ATTRIBUTE,
    op::DELETE_ATTRIBUTE,
    op::ACTIVATE,
    op::REVOKE,
    op::DESTROY,
    op::QUERY,
    op::DISCOVER_VERSIONS,
];

fn uid_item(tag: &KeyTag) -> Ttlv {
    fields::text_item(tags::UNIQUE_IDENTIFIER, tag.as_str())
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
