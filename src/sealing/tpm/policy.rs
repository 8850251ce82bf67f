//! What a sealed key is bound to: the PCR policy, and the fixed templates of the primary key
//! and of the sealed object.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{
    Digest, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters,
    SymmetricDefinitionObject,
};

use super::blob;
use super::error::{failed, TpmError};

/// The PCRs, in the SHA-256 bank, whose values a sealed key is bound to.
///
/// The default is PCR 7 alone: the Secure Boot state (whether it is on, the PK, KEK, db and
/// dbx, and the certificates that verified what booted). It stays the same across kernel and
/// initrd updates, so the key survives routine upgrades; it changes when Secure Boot is turned
/// on or off or its keys or its revocation list (dbx) are updated, and then the key must be
/// unlocked another way (the passphrase) and sealed again.
///
/// Its limits: any boot chain signed by a key in db (another distribution's shim, a live USB)
/// passes the policy too, and root on the running system can always unseal. PCR 7 keeps the
/// key from a disk taken to another machine (another TPM) and from this machine booted with
/// Secure Boot off or with other keys; on a machine without Secure Boot it binds to this TPM
/// alone. Add PCRs (4: the boot loader; 9 and 11, depending on the boot loader: what it
/// loaded) for a tighter binding that then breaks on every such update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrPolicy {
    pub pcrs: Vec<u8>,
}

impl Default for PcrPolicy {
    fn default() -> Self {
        PcrPolicy { pcrs: vec![7] }
    }
}

impl PcrPolicy {
    /// The PCRs sorted and without repeats, checked to be 1 to 24 indexes in 0..=23.
    pub(super) fn normalized(&self) -> Result<Vec<u8>, TpmError> {
        let mut pcrs = self.pcrs.clone();
        pcrs.sort_unstable();
        pcrs.dedup();
        if !blob::valid_pcrs(&pcrs) {
            return Err(TpmError::InvalidPolicy(format!(
                "PCRs {:?}: name at least one PCR, each 0 to {}",
                self.pcrs,
                blob::PCR_COUNT - 1
            )));
        }
        Ok(pcrs)
    }
}

/// `pcrs` in the SHA-256 bank, as the TPM takes a selection.
pub(super) fn selection(pcrs: &[u8]) -> Result<PcrSelectionList, TpmError> {
    let slots = pcrs
        .iter()
        .map(|&p| PcrSlot::try_from(1u32 << p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed("selecting PCRs"))?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(failed("selecting PCRs"))
}

/// The primary key: an ECC P-256 restricted decryption (storage) key with AES-128-CFB for its
/// children, empty unique field and no policy, as in the TCG's SRK template. Fixed: another
/// template would be another key, and no blob sealed under this one would load.
pub(super) fn primary_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(Default::default())
        .build()
}

/// The sealed data object: a keyed-hash object that cannot leave this TPM or its parent,
/// usable only through `policy` (no password: `userWithAuth` clear), and exempt from the
/// dictionary-attack lockout, which guards passwords it does not have.
pub(super) fn sealed_template(policy: Digest) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_admin_with_policy(true)
        .with_user_with_auth(false)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
}
