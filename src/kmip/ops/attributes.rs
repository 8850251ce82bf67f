//! Get Attributes, Get Attribute List, and Add/Modify/Delete Attribute for the two attributes
//! a client may change: Name (the record's name; a record has exactly one, so Modify renames
//! and Add and Delete are refused) and Description (`x-description`; Delete empties it).

use super::{uid_item, Context};
use crate::keystore::{KeyTag, Name};
use crate::kmip::attributes::{self as attrs, Attr};
use crate::kmip::error::Failure;
use crate::kmip::fields::{self, text_item};
use crate::kmip::policy::Right;
use crate::kmip::tags::{self, reason};
use crate::kmip::ttlv::{Ttlv, Value};

/// `(name, value)` of every attribute in `names` that the record has.
fn values(ctx: &Context<'_>, tag: &KeyTag, names: &[&str]) -> Result<Vec<(String, Ttlv)>, Failure> {
    let ks = ctx.kms.read();
    let r = ks
        .record(tag)
        .ok_or_else(|| Failure::not_found(tag.as_str()))?;
    let g = ks
        .group(&r.group)
        .ok_or_else(|| Failure::not_found(tag.as_str()))?;
    Ok(names
        .iter()
        .filter_map(|n| attrs::value_of(n, g, r).map(|v| (n.to_string(), v)))
        .collect())
}

fn all_names(ctx: &Context<'_>, tag: &KeyTag) -> Result<Vec<&'static str>, Failure> {
    let ks = ctx.kms.read();
    let r = ks
        .record(tag)
        .ok_or_else(|| Failure::not_found(tag.as_str()))?;
    Ok(attrs::names_of(r))
}

pub fn get_attributes(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    ctx.require("kmip get attributes", Right::Read, &group)?;
    let asked = fields::texts(payload, tags::ATTRIBUTE_NAME)?;
    let names: Vec<&str> = if asked.is_empty() {
        all_names(ctx, &tag)?
    } else {
        asked
    };
    let mut out = vec![uid_item(&tag)];
    out.extend(
        values(ctx, &tag, &names)?
            .into_iter()
            .map(|(n, v)| attrs::attribute(&n, v)),
    );
    Ok(out)
}

pub fn get_attribute_list(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    ctx.require("kmip get attribute list", Right::Read, &group)?;
    let mut out = vec![uid_item(&tag)];
    out.extend(
        all_names(ctx, &tag)?
            .into_iter()
            .map(|n| text_item(tags::ATTRIBUTE_NAME, n)),
    );
    Ok(out)
}

/// What a client may change: a record's name and its description.
enum Changeable {
    Name(String),
    Description(String),
}

/// The one attribute of an Add or Modify Attribute, of a kind a client may change.
fn changeable(payload: &Ttlv) -> Result<Changeable, Failure> {
    let a = fields::structure(payload, tags::ATTRIBUTE)?
        .ok_or_else(|| Failure::missing("Attribute"))?;
    let name = fields::text(a, tags::ATTRIBUTE_NAME)?.unwrap_or_default();
    match attrs::parse(a)? {
        Attr::Name(n) => Ok(Changeable::Name(n)),
        Attr::Description(d) => Ok(Changeable::Description(d)),
        _ => Err(read_only(&format!("attribute {name:?}"))),
    }
}

fn read_only(what: &str) -> Failure {
    Failure::new(
        reason::PERMISSION_DENIED,
        format!("{what}: only Name and Description can be changed over KMIP"),
    )
}

fn current_description(ctx: &Context<'_>, tag: &KeyTag) -> String {
    ctx.kms
        .read()
        .record(tag)
        .map(|r| r.description.clone())
        .unwrap_or_default()
}

/// The attribute as a reply echoes it.
fn echo(a: &Changeable) -> Ttlv {
    match a {
        Changeable::Name(n) => attrs::attribute(attrs::NAME, attrs::name_value(n)),
        Changeable::Description(d) => attrs::attribute(
            attrs::X_DESCRIPTION,
            Ttlv::new(tags::ATTRIBUTE_VALUE, Value::TextString(d.clone())),
        ),
    }
}

fn name_of(n: &str) -> Result<Name, Failure> {
    Name::parse(n).map_err(|e| Failure::invalid(e.to_string()))
}

pub fn add(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    let a = changeable(payload)?;
    ctx.require("kmip add attribute", Right::Change, &group)?;
    match &a {
        Changeable::Name(_) => {
            return Err(Failure::new(
                reason::ILLEGAL_OPERATION,
                "a kmsfs key has exactly one Name: Modify Attribute renames it",
            ))
        }
        Changeable::Description(d) => {
            if !current_description(ctx, &tag).is_empty() {
                return Err(Failure::new(
                    reason::ILLEGAL_OPERATION,
                    "the key already has a Description: Modify Attribute replaces it",
                ));
            }
            ctx.kms.describe_record(&tag, d)?;
        }
    }
    Ok(vec![uid_item(&tag), echo(&a)])
}

pub fn modify(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, group_tag, group) = ctx.target(payload)?;
    let a = changeable(payload)?;
    ctx.require("kmip modify attribute", Right::Change, &group)?;
    match &a {
        Changeable::Name(n) => ctx.kms.rename_record(&tag, &group_tag, name_of(n)?)?,
        Changeable::Description(d) => ctx.kms.describe_record(&tag, d)?,
    }
    Ok(vec![uid_item(&tag), echo(&a)])
}

pub fn delete(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, _, group) = ctx.target(payload)?;
    let name = fields::text(payload, tags::ATTRIBUTE_NAME)?
        .ok_or_else(|| Failure::missing("Attribute Name"))?;
    if let Some(i) = fields::integer(payload, tags::ATTRIBUTE_INDEX)? {
        if i != 0 {
            return Err(Failure::new(
                reason::INDEX_OUT_OF_BOUNDS,
                format!("attribute {name:?} has one value (index 0); index {i} does not exist"),
            ));
        }
    }
    match name {
        attrs::DESCRIPTION | attrs::X_DESCRIPTION => {}
        attrs::NAME => {
            return Err(Failure::new(
                reason::ILLEGAL_OPERATION,
                "a kmsfs key always has a Name: Modify Attribute renames it",
            ))
        }
        other => return Err(read_only(&format!("attribute {other:?}"))),
    }
    ctx.require("kmip delete attribute", Right::Change, &group)?;
    let old = current_description(ctx, &tag);
    if old.is_empty() {
        return Err(Failure::new(
            reason::ITEM_NOT_FOUND,
            "the key has no Description to delete",
        ));
    }
    ctx.kms.describe_record(&tag, "")?;
    Ok(vec![uid_item(&tag), echo(&Changeable::Description(old))])
}
