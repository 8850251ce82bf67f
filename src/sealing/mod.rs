//! Keeping a master key (the HMK or the KPK) off the disk with hardware that never gives up a
//! key of its own: the key file then holds only what that hardware needs to give the master
//! key back (`crypto::keyfile`'s sealed form; `store::unseal` chooses which).
//!
//! - `tpm`: seals a 32-byte key to a TPM 2.0, bound to PCR values (`tss-esapi`, tpm2-tss).
//! - `pkcs11`: an AES-256 key inside a PKCS#11 token (an HSM, a smart card, SoftHSM2)
//!   encrypts the master key; the blob it returns names the token and the key.

pub mod pkcs11;
pub mod tpm;
