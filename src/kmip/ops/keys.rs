//! Create, Register and Get: symmetric AES keys in and out.
//!
//! A key goes into the group its Object Group names, or the client's default group (the
//! policy's `default_group`, else `kmip`), which is created if missing when the client may
//! create there. A group takes the cipher of the first key KMIP puts in it when KMIP made it;
//! otherwise the group's cipher decides and a key of another length is refused.

use super::{uid_item, Context};
use crate::crypto::KeyMaterial;
use crate::keystore::{Cipher, GroupTag, KeyTag, Name, State};
use crate::kmip::attributes::{self as attrs, Attr};
use crate::kmip::error::Failure;
use crate::kmip::fields::{self, enum_item, int_item};
use crate::kmip::policy::Right;
use crate::kmip::tags::{self, reason};
use crate::kmip::ttlv::{Ttlv, Value};
use crate::service::{KeySource, NewRecord};

/// What a Create or Register asks for, from its attributes.
#[derive(Debug, Default)]
struct Wanted {
    name: Option<String>,
    group: Option<String>,
    algorithm: Option<u32>,
    length: Option<i32>,
    description: Option<String>,
}

fn wanted(attributes: Vec<Attr>) -> Result<Wanted, Failure> {
    let mut w = Wanted::default();
    fn once<T>(slot: &mut Option<T>, v: T, what: &str) -> Result<(), Failure> {
        if slot.replace(v).is_some() {
            return Err(Failure::invalid(format!(
                "{what} is given twice; a kmsfs key has one"
            )));
        }
        Ok(())
    }
    for a in attributes {
        match a {
            Attr::Name(n) => once(&mut w.name, n, "Name")?,
            Attr::ObjectGroup(g) => once(&mut w.group, g, "Object Group")?,
            Attr::Algorithm(v) => once(&mut w.algorithm, v, "Cryptographic Algorithm")?,
            Attr::Length(v) => once(&mut w.length, v, "Cryptographic Length")?,
            Attr::Description(d) => once(&mut w.description, d, "Description")?,
            Attr::UsageMask(m) => attrs::check_usage_mask(m)?,
            Attr::ObjectType(t) => check_object_type(Some(t))?,
            // Policies are kmsfs's own (--kmip-policy); a client's policy name changes nothing.
            Attr::OperationPolicyName(_) => {}
            Attr::State(_) => {
                return Err(Failure::invalid(
                    "State cannot be set: a new key is Pre-Active; Activate makes it Active",
                ))
            }
        }
    }
    Ok(w)
}

fn check_object_type(t: Option<u32>) -> Result<(), Failure> {
    match t {
        Some(tags::OBJECT_TYPE_SYMMETRIC_KEY) => Ok(()),
        None => Err(Failure::missing("Object Type")),
        Some(t) => Err(Failure::unsupported(format!(
            "Object Type {t}: kmsfs holds symmetric keys (2) only"
        ))),
    }
}

fn cipher_of(algorithm: Option<u32>, bits: Option<i32>) -> Result<Cipher, Failure> {
    match algorithm {
        Some(tags::ALGORITHM_AES) => {}
        None => return Err(Failure::missing("Cryptographic Algorithm")),
        Some(a) => {
            return Err(Failure::unsupported(format!(
                "Cryptographic Algorithm {a}: kmsfs keys are AES (3)"
            )))
        }
    }
    match bits {
        Some(128) => Ok(Cipher::Aes128),
        Some(192) => Ok(Cipher::Aes192),
        Some(256) => Ok(Cipher::Aes256),
        None => Err(Failure::missing("Cryptographic Length")),
        Some(b) => Err(Failure::invalid(format!(
            "Cryptographic Length {b}: AES keys have 128, 192 or 256 bits"
        ))),
    }
}

fn name_of(n: &str) -> Result<Name, Failure> {
    Name::parse(n).map_err(|e| Failure::invalid(e.to_string()))
}

/// The group a new key goes to, created (with `cipher`) if missing and allowed; checked
/// against `cipher` otherwise.
fn target_group(
    ctx: &Context<'_>,
    what: &'static str,
    group: Option<&str>,
    cipher: Cipher,
) -> Result<GroupTag, Failure> {
    let name = match group {
        Some(g) => g.to_string(),
        None => ctx
            .rights
            .map_or(crate::kmip::policy::DEFAULT_GROUP, |r| r.default_group())
            .to_string(),
    };
    ctx.require(what, Right::Create, &name)?;
    let existing = ctx
        .kms
        .read()
        .group_by_name(&name)
        .map(|g| (g.tag.clone(), g.cipher));
    match existing {
        Some((tag, c)) if c == cipher => Ok(tag),
        Some((_, c)) => Err(Failure::invalid(format!(
            "group {name:?} holds {c} keys; this key is {cipher}"
        ))),
        None => {
            let tag = ctx.kms.create_group(name_of(&name)?)?;
            if cipher != Cipher::default() {
                ctx.kms.set_group_cipher(&tag, cipher)?;
            }
            log::info!("KMIP client {:?} created group {name:?}", ctx.client);
            Ok(tag)
        }
    }
}

/// A name for a key that a client did not name: records always have one.
fn fresh_name(tag: &KeyTag) -> String {
    format!("kmip-{}", &tag.as_str()[..12])
}

pub fn create(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    check_object_type(fields::enumeration(payload, tags::OBJECT_TYPE)?)?;
    let w = wanted(attrs::template(payload)?)?;
    let cipher = cipher_of(w.algorithm, w.length)?;
    let tag = KeyTag::random();
    let name = name_of(w.name.as_deref().unwrap_or(&fresh_name(&tag)))?;
    let group = target_group(ctx, "kmip create", w.group.as_deref(), cipher)?;
    let req = NewRecord {
        name,
        state: State::Prelive,
        description: w.description.unwrap_or_default(),
        key: KeySource::Random,
        tag: Some(tag),
    };
    let tag = ctx.kms.create_record(&group, req)?;
    ctx.set_placeholder(Some(tag.clone()));
    Ok(vec![
        enum_item(tags::OBJECT_TYPE, tags::OBJECT_TYPE_SYMMETRIC_KEY),
        uid_item(&tag),
    ])
}

/// The key bytes of a Register's Symmetric Key (Raw, or Transparent Symmetric Key), with the
/// algorithm and length its key block states.
fn key_block(payload: &Ttlv) -> Result<(KeyMaterial, Option<u32>, Option<i32>), Failure> {
    let key = fields::structure(payload, tags::SYMMETRIC_KEY)?
        .ok_or_else(|| Failure::missing("Symmetric Key"))?;
    let block =
        fields::structure(key, tags::KEY_BLOCK)?.ok_or_else(|| Failure::missing("Key Block"))?;
    if block.child(tags::KEY_WRAPPING_DATA).is_some() {
        return Err(Failure::unsupported("wrapped keys cannot be registered"));
    }
    if block.child(tags::KEY_COMPRESSION_TYPE).is_some() {
        return Err(Failure::new(
            reason::FEATURE_NOT_SUPPORTED,
            "Key Compression Type is for elliptic curve keys",
        ));
    }
    let format = fields::enumeration(block, tags::KEY_FORMAT_TYPE)?
        .ok_or_else(|| Failure::missing("Key Format Type"))?;
    let value = fields::structure(block, tags::KEY_VALUE)?
        .ok_or_else(|| Failure::missing("Key Value (a structure)"))?;
    let bytes = match format {
        tags::KEY_FORMAT_RAW => fields::bytes(value, tags::KEY_MATERIAL)?,
        tags::KEY_FORMAT_TRANSPARENT_SYMMETRIC => {
            let m = fields::structure(value, tags::KEY_MATERIAL)?
                .ok_or_else(|| Failure::missing("Key Material"))?;
            fields::bytes(m, tags::KEY)?
        }
        other => {
            return Err(Failure::new(
                reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                format!(
                    "Key Format Type {other}: kmsfs takes Raw (1) or Transparent Symmetric Key (7)"
                ),
            ))
        }
    }
    .ok_or_else(|| Failure::missing("Key Material"))?;
    Ok((
        KeyMaterial::from_vec(bytes.to_vec()),
        fields::enumeration(block, tags::CRYPTOGRAPHIC_ALGORITHM)?,
        fields::integer(block, tags::CRYPTOGRAPHIC_LENGTH)?,
    ))
}

pub fn register(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    check_object_type(fields::enumeration(payload, tags::OBJECT_TYPE)?)?;
    let w = wanted(attrs::template(payload)?)?;
    let (key, algorithm, length) = key_block(payload)?;
    // The key block and the template may both state them; they must agree.
    if algorithm.is_some() && w.algorithm.is_some() && algorithm != w.algorithm {
        return Err(Failure::invalid(
            "Cryptographic Algorithm differs between the key block and the template",
        ));
    }
    if length.is_some() && w.length.is_some() && length != w.length {
        return Err(Failure::invalid(
            "Cryptographic Length differs between the key block and the template",
        ));
    }
    let bits = length.or(w.length).or(Some(key.len() as i32 * 8));
    let cipher = cipher_of(algorithm.or(w.algorithm), bits)?;
    if key.len() != cipher.key_len() {
        return Err(Failure::invalid(format!(
            "the key has {} bytes; an {cipher} key has {}",
            key.len(),
            cipher.key_len()
        )));
    }
    let tag = KeyTag::random();
    let name = name_of(w.name.as_deref().unwrap_or(&fresh_name(&tag)))?;
    let group = target_group(ctx, "kmip register", w.group.as_deref(), cipher)?;
    let tag = ctx.kms.insert_record(
        &group,
        tag,
        name,
        State::Prelive,
        w.description.unwrap_or_default(),
        &key,
        None,
    )?;
    ctx.set_placeholder(Some(tag.clone()));
    Ok(vec![uid_item(&tag)])
}

pub fn get(ctx: &mut Context<'_>, payload: &Ttlv) -> Result<Vec<Ttlv>, Failure> {
    let (tag, group, group_name) = ctx.target(payload)?;
    ctx.require("kmip get", Right::Read, &group_name)?;
    if payload.child(tags::KEY_WRAPPING_SPECIFICATION).is_some() {
        return Err(Failure::unsupported(
            "kmsfs does not wrap keys it hands out",
        ));
    }
    if payload.child(tags::KEY_COMPRESSION_TYPE).is_some() {
        return Err(Failure::unsupported(
            "Key Compression Type is for elliptic curve keys",
        ));
    }
    let format =
        fields::enumeration(payload, tags::KEY_FORMAT_TYPE)?.unwrap_or(tags::KEY_FORMAT_RAW);
    if !matches!(
        format,
        tags::KEY_FORMAT_RAW | tags::KEY_FORMAT_TRANSPARENT_SYMMETRIC
    ) {
        return Err(Failure::new(
            reason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
            format!(
                "Key Format Type {format}: kmsfs gives Raw (1) or Transparent Symmetric Key (7)"
            ),
        ));
    }
    let bits = ctx
        .kms
        .read()
        .group(&group)
        .map_or(0, |g| g.cipher.key_len() as i32 * 8);
    // Audited and refused unless the record's state allows its key to be used.
    let key = ctx.kms.read_key(&tag)?;
    let bytes = Ttlv::new(tags::KEY_MATERIAL, Value::ByteString(key.expose().to_vec()));
    let material = if format == tags::KEY_FORMAT_RAW {
        bytes
    } else {
        Ttlv::structure(tags::KEY_MATERIAL, vec![Ttlv::new(tags::KEY, bytes.value)])
    };
    let block = Ttlv::structure(
        tags::KEY_BLOCK,
        vec![
            enum_item(tags::KEY_FORMAT_TYPE, format),
            Ttlv::structure(tags::KEY_VALUE, vec![material]),
            enum_item(tags::CRYPTOGRAPHIC_ALGORITHM, tags::ALGORITHM_AES),
            int_item(tags::CRYPTOGRAPHIC_LENGTH, bits),
        ],
    );
    Ok(vec![
        enum_item(tags::OBJECT_TYPE, tags::OBJECT_TYPE_SYMMETRIC_KEY),
        uid_item(&tag),
        Ttlv::structure(tags::SYMMETRIC_KEY, vec![block]),
    ])
}
