//! What a write to each writable file means: its text parsed (`parse.rs`) and handed to the
//! typed service. The table (`table.rs`) names which function serves which file.

use super::error::FsError;
use super::inode::Of;
use super::parse::{self, QuiesceCommand, RotationCommand};
use crate::crypto::KeyMaterial;
use crate::keystore::{GroupTag, KeyTag, Timestamp};
use crate::service::Kms;

fn group(of: &Of) -> Result<&GroupTag, FsError> {
    match of {
        Of::Group(g) => Ok(g),
        _ => Err(FsError::NotFound),
    }
}

fn record(of: &Of) -> Result<&KeyTag, FsError> {
    match of {
        Of::Record(k) => Ok(k),
        _ => Err(FsError::NotFound),
    }
}

/// `.quiesce`: add or remove a hold.
pub fn quiesce(kms: &Kms, _: &Of, text: &str) -> Result<(), FsError> {
    match parse::quiesce(text)? {
        QuiesceCommand::Quiesce { lease } => kms.quiesce(lease)?,
        QuiesceCommand::Unquiesce => kms.unquiesce()?,
    }
    Ok(())
}

/// `state`: a move through the lifecycle.
pub fn state(kms: &Kms, of: &Of, text: &str) -> Result<(), FsError> {
    Ok(kms.set_state(record(of)?, parse::state(text)?)?)
}

/// `.cipher`: the group's cipher, while it holds no record.
pub fn cipher(kms: &Kms, of: &Of, text: &str) -> Result<(), FsError> {
    Ok(kms.set_group_cipher(group(of)?, parse::cipher(text)?)?)
}

/// `.rotation`: the group's periods, or a rotation now.
pub fn rotation(kms: &Kms, of: &Of, text: &str) -> Result<(), FsError> {
    let g = group(of)?;
    match parse::rotation(text)? {
        RotationCommand::Every(p) => kms.update_rotation(g, |r| r.period = p)?,
        RotationCommand::RetireAfter(p) => kms.update_rotation(g, |r| r.retire_after = p)?,
        RotationCommand::RotateNow => {
            kms.rotate(g, Timestamp::now())?;
        }
    }
    Ok(())
}

/// `.change-key`: a new HMK or KPK, every record's key kept as it is.
pub fn change_key(kms: &Kms, _: &Of, request: &[u8]) -> Result<(), FsError> {
    let req = parse::change_key(request)?;
    let new = crate::store::NewMasterKey {
        passphrase: req.passphrase,
    };
    kms.change_master_key(req.kind, &new)?;
    Ok(())
}

/// `.create`: one record in one step.
pub fn create(kms: &Kms, of: &Of, object: &[u8]) -> Result<(), FsError> {
    let req = parse::new_record(object)?;
    kms.create_record(group(of)?, req)?;
    Ok(())
}

pub fn describe_group(kms: &Kms, of: &Of, text: &str) -> Result<(), FsError> {
    Ok(kms.describe_group(group(of)?, text)?)
}

pub fn describe_record(kms: &Kms, of: &Of, text: &str) -> Result<(), FsError> {
    Ok(kms.describe_record(record(of)?, text)?)
}

/// `key`, at open: only while the record's state allows use of its key.
pub fn read_key(kms: &Kms, of: &Of) -> Result<KeyMaterial, FsError> {
    Ok(kms.read_key(record(of)?)?)
}
