//! KMIP 1.x attributes (`Attribute {Attribute Name, Attribute Index?, Attribute Value}`): the
//! ones a kmsfs record has, rendered from it, and the ones a client may send, parsed.

use super::error::Failure;
use super::fields::{enum_item, text_item};
use super::tags::{self, state as kstate};
use super::ttlv::{Ttlv, Value};
use crate::keystore::{KeyGroup, KeyRecord, State};

pub const UNIQUE_IDENTIFIER: &str = "Unique Identifier";
pub const OBJECT_TYPE: &str = "Object Type";
pub const ALGORITHM: &str = "Cryptographic Algorithm";
pub const LENGTH: &str = "Cryptographic Length";
pub const USAGE_MASK: &str = "Cryptographic Usage Mask";
pub const NAME: &str = "Name";
pub const OBJECT_GROUP: &str = "Object Group";
pub const STATE: &str = "State";
pub const INITIAL_DATE: &str = "Initial Date";
pub const LAST_CHANGE_DATE: &str = "Last Change Date";
pub const OPERATION_POLICY_NAME: &str = "Operation Policy Name";
/// KMIP 1.4's Description attribute.
pub const DESCRIPTION: &str = "Description";
/// The same text as a custom attribute, which clients older than KMIP 1.4 (PyKMIP among
/// them) can read back; Get Attributes without names returns this one.
pub const X_DESCRIPTION: &str = "x-description";

/// A record's KMIP state (the table in docs/kmip.md). Destroyed is a terminated record: its
/// key can no longer be had, its metadata stays until a second Destroy deletes it.
pub fn kmip_state(s: State) -> u32 {
    match s {
        State::Prelive => kstate::PRE_ACTIVE,
        State::Active => kstate::ACTIVE,
        State::Inactive => kstate::DEACTIVATED,
        State::Deprecated => kstate::COMPROMISED,
        State::Terminated => kstate::DESTROYED,
    }
}

fn secs(t: crate::keystore::Timestamp) -> i64 {
    t.0.div_euclid(1_000_000_000)
}

/// A Name attribute's value: the record's name, as uninterpreted text.
pub fn name_value(name: &str) -> Ttlv {
    Ttlv::structure(
        tags::ATTRIBUTE_VALUE,
        vec![
            text_item(tags::NAME_VALUE, name),
            enum_item(tags::NAME_TYPE, tags::NAME_TYPE_UNINTERPRETED_TEXT),
        ],
    )
}

/// The value of attribute `name` of `record` (in `group`), if it has one.
pub fn value_of(name: &str, group: &KeyGroup, record: &KeyRecord) -> Option<Ttlv> {
    let v = |value| Some(Ttlv::new(tags::ATTRIBUTE_VALUE, value));
    match name {
        UNIQUE_IDENTIFIER => v(Value::TextString(record.tag.to_string())),
        OBJECT_TYPE => v(Value::Enumeration(tags::OBJECT_TYPE_SYMMETRIC_KEY)),
        ALGORITHM => v(Value::Enumeration(tags::ALGORITHM_AES)),
        LENGTH => v(Value::Integer(group.cipher.key_len() as i32 * 8)),
        USAGE_MASK => v(Value::Integer(tags::USAGE_ENCRYPT_DECRYPT)),
        NAME => Some(name_value(record.name.as_str())),
        OBJECT_GROUP => v(Value::TextString(group.name.to_string())),
        STATE => v(Value::Enumeration(kmip_state(record.state))),
        INITIAL_DATE => v(Value::DateTime(secs(record.created))),
        LAST_CHANGE_DATE => v(Value::DateTime(secs(record.modified))),
        DESCRIPTION | X_DESCRIPTION if !record.description.is_empty() => {
            v(Value::TextString(record.description.clone()))
        }
        _ => None,
    }
}

/// The attributes a record has, in the order Get Attributes returns them. `Description` is
/// left out (only `x-description`): a client before KMIP 1.4 could not read the reply.
pub fn names_of(record: &KeyRecord) -> Vec<&'static str> {
    let mut names = vec![
        UNIQUE_IDENTIFIER,
        OBJECT_TYPE,
        ALGORITHM,
        LENGTH,
        USAGE_MASK,
        NAME,
        OBJECT_GROUP,
        STATE,
        INITIAL_DATE,
        LAST_CHANGE_DATE,
    ];
    if !record.description.is_empty() {
        names.push(X_DESCRIPTION);
    }
    names
}

pub fn attribute(name: &str, value: Ttlv) -> Ttlv {
    Ttlv::structure(
        tags::ATTRIBUTE,
        vec![text_item(tags::ATTRIBUTE_NAME, name), value],
    )
}

/// An attribute as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Name(String),
    ObjectGroup(String),
    State(u32),
    Algorithm(u32),
    Length(i32),
    ObjectType(u32),
    UsageMask(i32),
    Description(String),
    OperationPolicyName(String),
}

/// One `Attribute` structure; its index, when given, must be 0 (kmsfs attributes have one
/// value each).
pub fn parse(a: &Ttlv) -> Result<Attr, Failure> {
    if !matches!(a.value, Value::Structure(_)) {
        return Err(Failure::invalid("Attribute is not a structure"));
    }
    let name = super::fields::text(a, tags::ATTRIBUTE_NAME)?
        .ok_or_else(|| Failure::missing("Attribute Name"))?;
    if let Some(i) = super::fields::integer(a, tags::ATTRIBUTE_INDEX)? {
        if i != 0 {
            return Err(Failure::new(
                tags::reason::INDEX_OUT_OF_BOUNDS,
                format!("attribute {name:?} has one value (index 0); index {i} does not exist"),
            ));
        }
    }
    let value = a
        .child(tags::ATTRIBUTE_VALUE)
        .ok_or_else(|| Failure::missing("Attribute Value"))?;
    let bad = || Failure::invalid(format!("attribute {name:?} has a value of the wrong type"));
    let text = || match &value.value {
        Value::TextString(s) => Ok(s.clone()),
        _ => Err(bad()),
    };
    let enumeration = || match &value.value {
        Value::Enumeration(v) => Ok(*v),
        _ => Err(bad()),
    };
    let integer = || match &value.value {
        Value::Integer(v) => Ok(*v),
        _ => Err(bad()),
    };
    Ok(match name {
        NAME => {
            let v = super::fields::text(value, tags::NAME_VALUE)?
                .ok_or_else(|| Failure::missing("Name Value"))?;
            match super::fields::enumeration(value, tags::NAME_TYPE)? {
                None | Some(tags::NAME_TYPE_UNINTERPRETED_TEXT) => {}
                Some(t) => {
                    return Err(Failure::unsupported(format!(
                        "Name Type {t}: kmsfs names are uninterpreted text"
                    )))
                }
            }
            Attr::Name(v.to_string())
        }
        OBJECT_GROUP => Attr::ObjectGroup(text()?),
        STATE => Attr::State(enumeration()?),
        ALGORITHM => Attr::Algorithm(enumeration()?),
        LENGTH => Attr::Length(integer()?),
        OBJECT_TYPE => Attr::ObjectType(enumeration()?),
        USAGE_MASK => Attr::UsageMask(integer()?),
        DESCRIPTION | X_DESCRIPTION => Attr::Description(text()?),
        OPERATION_POLICY_NAME => Attr::OperationPolicyName(text()?),
        other => {
            return Err(Failure::unsupported(format!(
                "attribute {other:?} is not supported by kmsfs (see docs/kmip.md)"
            )))
        }
    })
}

/// The attributes of a Template-Attribute (its named templates are refused).
pub fn template(payload: &Ttlv) -> Result<Vec<Attr>, Failure> {
    let Some(t) = super::fields::structure(payload, tags::TEMPLATE_ATTRIBUTE)? else {
        return Ok(Vec::new());
    };
    if t.child(tags::NAME).is_some() {
        return Err(Failure::unsupported("templates are not supported"));
    }
    t.children(tags::ATTRIBUTE).map(parse).collect()
}

/// A usage mask without a bit kmsfs keys cannot serve (encrypt and decrypt, or none).
pub fn check_usage_mask(mask: i32) -> Result<(), Failure> {
    if mask & !tags::USAGE_ENCRYPT_DECRYPT != 0 {
        return Err(Failure::unsupported(format!(
            "Cryptographic Usage Mask 0x{mask:X}: kmsfs keys encrypt and decrypt only (0xC)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state table of docs/kmip.md is the mapping the code uses, row for row.
    #[test]
    fn docs_state_table_is_the_mapping() {
        let doc = include_str!("../../docs/kmip.md");
        let section = doc
            .split("\n## States\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/kmip.md has a States section");
        let kmip_number = |name: &str| match name {
            "Pre-Active" => Some(kstate::PRE_ACTIVE),
            "Active" => Some(kstate::ACTIVE),
            "Deactivated" => Some(kstate::DEACTIVATED),
            "Compromised" => Some(kstate::COMPROMISED),
            "Destroyed" => Some(kstate::DESTROYED),
            _ => None,
        };
        let mut seen = Vec::new();
        for line in section.lines().filter(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(number), Ok(state)) = (kmip_number(cells[1]), cells[2].parse::<State>())
            else {
                continue;
            };
            assert_eq!(kmip_state(state), number, "docs/kmip.md: {line}");
            seen.push(state);
        }
        seen.sort();
        assert_eq!(seen, State::ALL.to_vec(), "every state has its row");
    }
}
