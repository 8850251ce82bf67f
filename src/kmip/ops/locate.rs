//! Locate: the keys of the groups the client may read that match every attribute given
//! (Name, Object Group, State, Cryptographic Algorithm and Length, Object Type), in creation
//! order. An attribute kmsfs cannot match is refused rather than ignored: a filter left out
//! would hand the client keys it did not ask for.

use super::{uid_item, Context};
use crate::keystore::{KeyGroup, KeyRecord, KeyTag};
use crate::kmip::attributes::{self as attrs, Attr};
use crate::kmip::error::Failure;
use crate::kmip::fields::{self, int_item};
use crate::kmip::policy::Right;
use crate::kmip::tags;
use crate::kmip::ttlv::Ttlv;

fn matches(a: &Attr, g: &KeyGroup, r: &KeyRecord) -> Result<bool, Failure> {
    Ok(match a {
        Attr::Name(n) => r.name.as_str() == n,
        Attr::ObjectGroup(n) => g.name.as_str() == n,
        Attr::State(s) => attrs::kmip_state(r.state) == *s,
        Attr::Algorithm(a) => *a == tags::ALGORITHM_AES,
        Attr::Length(bits) => g.cipher.key_len() as i64 * 8 == i64::from(*bits),
        Attr::ObjectType(t) => *t == tags::OBJECT_TYPE_SYMMETRIC_KEY,
        Attr::Description(d) => &r.description == d,
        Attr::UsageMask(_) | Attr::OperationPolicyName(_) => {
            return Err(Failure::unsupported(
                "Locate by Cryptographic Usage Mask or Operation Policy Name is not supported",
            ))
        }
    })
}

pub fn locate(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    ctx.require_entry("kmip locate")?;
    let wanted = payload
        .children(tags::ATTRIBUTE)
        .map(attrs::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let max = fields::integer(payload, tags::MAXIMUM_ITEMS)?;
    let offset = fields::integer(payload, tags::OFFSET_ITEMS)?.unwrap_or(0);
    if max.is_some_and(|m| m < 0) || offset < 0 {
        return Err(Failure::invalid(
            "Maximum Items and Offset Items cannot be negative",
        ));
    }
    // Every kmsfs key is on line (bit 1); a mask for archived keys alone finds none.
    let online = fields::integer(payload, tags::STORAGE_STATUS_MASK)?.is_none_or(|m| m & 1 != 0);
    let rights = ctx.rights;
    let mut found: Vec<KeyTag> = Vec::new();
    {
        let ks = ctx.kms.read();
        for g in ks.groups() {
            if !rights.is_some_and(|r| r.allows(Right::Read, g.name.as_str())) {
                continue;
            }
            for r in ks.records_of(&g.tag, 0).filter(|_| online) {
                let mut all = true;
                for a in &wanted {
                    all &= matches(a, g, r)?;
                }
                if all {
                    found.push(r.tag.clone());
                }
            }
        }
    }
    let located = found.len();
    let page: Vec<KeyTag> = found
        .into_iter()
        .skip(offset as usize)
        .take(max.map_or(usize::MAX, |m| m as usize))
        .collect();
    ctx.set_placeholder(page.first().cloned());
    let mut out = Vec::new();
    if ctx.version.at_least(3) {
        out.push(int_item(
            tags::LOCATED_ITEMS,
            located.min(i32::MAX as usize) as i32,
        ));
    }
    out.extend(page.iter().map(uid_item));
    Ok(out)
}
