//! Discover Versions and Query: what the server speaks and serves.

use super::{Context, SUPPORTED};
use crate::kmip::error::Failure;
use crate::kmip::fields::{enum_item, text_item};
use crate::kmip::message::{Version, VERSIONS};
use crate::kmip::tags::{self, query};
use crate::kmip::ttlv::{Ttlv, Value};

/// The versions both sides speak, in the client's order of preference; all of ours, newest
/// first, when the client lists none.
pub fn discover_versions(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    ctx.require_entry("kmip discover versions")?;
    let asked = payload
        .children(tags::PROTOCOL_VERSION)
        .map(Version::from_ttlv)
        .collect::<Result<Vec<_>, _>>()?;
    let ours = VERSIONS.map(|(major, minor)| Version { major, minor });
    let answer: Vec<Version> = if asked.is_empty() {
        ours.to_vec()
    } else {
        asked.into_iter().filter(|v| v.served()).collect()
    };
    Ok(answer.into_iter().map(Version::to_ttlv).collect())
}

pub fn query(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    ctx.require_entry("kmip query")?;
    let mut functions = Vec::new();
    for f in payload.children(tags::QUERY_FUNCTION) {
        match f.value {
            Value::Enumeration(v) => functions.push(v),
            _ => return Err(Failure::invalid("Query Function is not an Enumeration")),
        }
    }
    let mut out = Vec::new();
    if functions.contains(&query::OPERATIONS) {
        out.extend(SUPPORTED.map(|op| enum_item(tags::OPERATION, op)));
    }
    if functions.contains(&query::OBJECTS) {
        out.push(enum_item(
            tags::OBJECT_TYPE,
            tags::OBJECT_TYPE_SYMMETRIC_KEY,
        ));
    }
    if functions.contains(&query::SERVER_INFORMATION) {
        out.push(text_item(
            tags::VENDOR_IDENTIFICATION,
            concat!("kmsfs ", env!("CARGO_PKG_VERSION")),
        ));
    }
    Ok(out)
}
