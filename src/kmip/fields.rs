//! Typed reads of a structure's items: absent is `None`, present with the wrong type is an
//! Invalid Field failure naming the tag, so that a client learns exactly what it sent wrong.

use super::error::Failure;
use super::ttlv::{Ttlv, Value};

fn wrong(tag: u32, want: &str) -> Failure {
    Failure::invalid(format!("item 0x{tag:06X} is not a {want}"))
}

pub fn integer(s: &Ttlv, tag: u32) -> Result<Option<i32>, Failure> {
    match s.child(tag).map(|i| &i.value) {
        None => Ok(None),
        Some(Value::Integer(v)) => Ok(Some(*v)),
        Some(_) => Err(wrong(tag, "Integer")),
    }
}

pub fn enumeration(s: &Ttlv, tag: u32) -> Result<Option<u32>, Failure> {
    match s.child(tag).map(|i| &i.value) {
        None => Ok(None),
        Some(Value::Enumeration(v)) => Ok(Some(*v)),
        Some(_) => Err(wrong(tag, "Enumeration")),
    }
}

pub fn text(s: &Ttlv, tag: u32) -> Result<Option<&str>, Failure> {
    match s.child(tag).map(|i| &i.value) {
        None => Ok(None),
        Some(Value::TextString(v)) => Ok(Some(v)),
        Some(_) => Err(wrong(tag, "Text String")),
    }
}

pub fn bytes(s: &Ttlv, tag: u32) -> Result<Option<&[u8]>, Failure> {
    match s.child(tag).map(|i| &i.value) {
        None => Ok(None),
        Some(Value::ByteString(v)) => Ok(Some(v)),
        Some(_) => Err(wrong(tag, "Byte String")),
    }
}

pub fn structure(s: &Ttlv, tag: u32) -> Result<Option<&Ttlv>, Failure> {
    match s.child(tag) {
        None => Ok(None),
        Some(
            i @ Ttlv {
                value: Value::Structure(_),
                ..
            },
        ) => Ok(Some(i)),
        Some(_) => Err(wrong(tag, "Structure")),
    }
}

/// Every text string with `tag`, in order.
pub fn texts(s: &Ttlv, tag: u32) -> Result<Vec<&str>, Failure> {
    s.children(tag)
        .map(|i| match &i.value {
            Value::TextString(v) => Ok(v.as_str()),
            _ => Err(wrong(tag, "Text String")),
        })
        .collect()
}

pub fn text_item(tag: u32, v: &str) -> Ttlv {
    Ttlv::new(tag, Value::TextString(v.to_string()))
}

pub fn enum_item(tag: u32, v: u32) -> Ttlv {
    Ttlv::new(tag, Value::Enumeration(v))
}

pub fn int_item(tag: u32, v: i32) -> Ttlv {
    Ttlv::new(tag, Value::Integer(v))
}
