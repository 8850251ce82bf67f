//! The body of an export: every group of a keystore, or the named ones, in creation order.

use super::{ExportBody, ExportedGroup, ExportedRecord, TransferError};
use crate::crypto::Kpk;
use crate::keystore::{KeyGroup, Keystore};

/// Collects `only` (every group when empty), unwrapping each record's key with the KPK.
/// An unknown name is an error, so that a typo never yields a container missing a group.
pub fn collect(ks: &Keystore, kpk: &Kpk, only: &[String]) -> Result<ExportBody, TransferError> {
    for name in only {
        if ks.group_by_name(name).is_none() {
            return Err(TransferError::UnknownGroup(name.clone()));
        }
    }
    let wanted = |g: &KeyGroup| only.is_empty() || only.iter().any(|n| n == g.name.as_str());
    let groups = ks
        .groups()
        .filter(|g| wanted(g))
        .map(|g| export_group(ks, kpk, g))
        .collect::<Result<_, _>>()?;
    Ok(ExportBody { groups })
}

fn export_group(ks: &Keystore, kpk: &Kpk, g: &KeyGroup) -> Result<ExportedGroup, TransferError> {
    let records = ks
        .records_of(&g.tag, 0)
        .map(|r| {
            let key = kpk.unwrap(&r.wrapped_key.0, r.tag.as_str()).map_err(|_| {
                TransferError::KeyUnreadable {
                    name: r.name.to_string(),
                    tag: r.tag.to_string(),
                }
            })?;
            Ok(ExportedRecord {
                name: r.name.clone(),
                tag: r.tag.clone(),
                state: r.state,
                description: r.description.clone(),
                created: r.created,
                modified: r.modified,
                derivation: r.derivation.clone(),
                key,
            })
        })
        .collect::<Result<_, TransferError>>()?;
    Ok(ExportedGroup {
        name: g.name.clone(),
        tag: g.tag.clone(),
        cipher: g.cipher,
        description: g.description.clone(),
        created: g.created,
        modified: g.modified,
        records,
    })
}
