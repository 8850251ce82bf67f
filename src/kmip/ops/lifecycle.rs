//! Activate, Revoke and Destroy, in kmsfs's lifecycle (docs/kmip.md has the table):
//!
//! - Activate: to active (from prelive, or inactive as `echo active > state` allows); the
//!   group's active key becomes inactive in the same change.
//! - Revoke: to inactive (Deactivated); with reason Key Compromise, on to deprecated
//!   (Compromised), through inactive when the key was active.
//! - Destroy: a prelive or terminated record is deleted; an inactive or deprecated one is
//!   terminated (KMIP's Destroyed: no key can be had, the metadata stays, as KMIP allows),
//!   through deprecated; an active one is refused (KMIP forbids destroying an Active key).
//!
//! A move of two steps is two changes, each checked and durable; if the second is refused
//! (a quiesce in between), the key stays where the first left it and the reply says why.

use super::{uid_item, Context};
use crate::keystore::{KeyTag, State};
use crate::kmip::error::Failure;
use crate::kmip::fields;
use crate::kmip::policy::Right;
use crate::kmip::tags::{self, reason};
use crate::kmip::ttlv::Ttlv;

fn state_of(ctx: &Context<'_>, tag: &KeyTag) -> Result<State, Failure> {
    ctx.kms
        .read()
        .record(tag)
        .map(|r| r.state)
        .ok_or_else(|| Failure::not_found(tag.as_str()))
}

/// Moves through `steps` in order.
fn walk(ctx: &Context<'_>, tag: &KeyTag, steps: &[State]) -> Result<(), Failure> {
    for step in steps {
        ctx.kms.set_state(tag, *step)?;
    }
    Ok(())
}

pub fn activate(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    ctx.require("kmip activate", Right::Change, &group)?;
    ctx.kms.set_state(&tag, State::Active)?;
    Ok(vec![uid_item(&tag)])
}

pub fn revoke(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    let why = fields::structure(payload, tags::REVOCATION_REASON)?
        .ok_or_else(|| Failure::missing("Revocation Reason"))?;
    let code = fields::enumeration(why, tags::REVOCATION_REASON_CODE)?
        .ok_or_else(|| Failure::missing("Revocation Reason Code"))?;
    ctx.require("kmip revoke", Right::Change, &group)?;
    let compromised = code == tags::REVOCATION_KEY_COMPROMISE;
    use State::*;
    let steps: &[State] = match (state_of(ctx, &tag)?, compromised) {
        (Active, false) | (Inactive, false) => &[Inactive],
        (Active, true) => &[Inactive, Deprecated],
        (Inactive, true) | (Deprecated, true) => &[Deprecated],
        // Already revoked, for a graver reason: nothing to do.
        (Deprecated, false) => &[],
        (s, _) => {
            return Err(Failure::new(
                reason::ILLEGAL_OPERATION,
                format!(
                    "a {s} key cannot be revoked{}",
                    if s == Prelive {
                        " (it was never active: Destroy deletes it)"
                    } else {
                        ""
                    }
                ),
            ))
        }
    };
    walk(ctx, &tag, steps)?;
    Ok(vec![uid_item(&tag)])
}

pub fn destroy(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    ctx.require("kmip destroy", Right::Change, &group)?;
    match state_of(ctx, &tag)? {
        State::Prelive | State::Terminated => ctx.kms.delete_record(&tag)?,
        State::Inactive => walk(ctx, &tag, &[State::Deprecated, State::Terminated])?,
        State::Deprecated => walk(ctx, &tag, &[State::Terminated])?,
        State::Active => {
            return Err(Failure::new(
                reason::ILLEGAL_OPERATION,
                "an Active key cannot be destroyed: Revoke it first",
            ))
        }
    }
    Ok(vec![uid_item(&tag)])
}
