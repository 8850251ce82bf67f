//! Sealing a 32-byte master key to a TPM 2.0, and unsealing it (tpm2-tss through `tss-esapi`).
//!
//! `Tpm::seal` creates, under a primary key in the owner hierarchy, a sealed data object that
//! holds the key and whose only authorization is a policy on the current values of chosen
//! PCRs (`PcrPolicy`). The primary key is recreated each time from a fixed template (an ECC
//! P-256 storage key, the TCG's usual SRK template), so the same TPM always gives the same
//! primary key and nothing is stored in the TPM's NV memory. The sealed object leaves the TPM
//! encrypted and integrity-protected by that primary key, in the blob that `seal` returns
//! (`blob` describes its bytes): only the same TPM, with its owner hierarchy not cleared
//! since, can load it, and it unseals only while the PCRs hold the values they had at sealing.
//!
//! The key crosses the bus to and from the TPM encrypted (sessions salted with the primary key,
//! AES-128-CFB parameter encryption), so a probe on the TPM's bus does not see it.
//!
//! The owner hierarchy must have an empty authorization value, as it has unless someone set
//! one (`tpm2_changeauth -c owner`).

mod blob;
mod error;
mod policy;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::{PropertyTag, SessionType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, Private, Public, PublicBuffer, SensitiveData, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf, WrapperErrorKind};
use zeroize::Zeroizing;

use crate::crypto::SecretKey32;
use blob::Blob;
pub use error::TpmError;
use error::{detail, failed, pcr_list, tpm_kind};
pub use policy::PcrPolicy;
use policy::{primary_template, sealed_template, selection};

/// The TCTI of the kernel's resource manager, `/dev/tpmrm0`: the usual way to reach a TPM.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// A description of a sealed blob, read without a TPM: "TPM 2.0, sealed to SHA-256 PCRs 7".
pub fn describe(blob: &[u8]) -> Result<String, TpmError> {
    let b = Blob::decode(blob)?;
    Ok(format!(
        "TPM 2.0, sealed to SHA-256 PCRs {}",
        pcr_list(&b.pcrs)
    ))
}

/// The PCR policy a blob was sealed with: a new key (a key change) is sealed the same way.
pub fn policy_of(blob: &[u8]) -> Result<PcrPolicy, TpmError> {
    Ok(PcrPolicy {
        pcrs: Blob::decode(blob)?.pcrs,
    })
}

/// A connection to a TPM: a TCTI string as tss-esapi understands it, e.g. `DEFAULT_TCTI` or
/// "swtpm:host=127.0.0.1,port=2321". Hold one only while sealing or unsealing: a simulator
/// (and a TPM reached without a resource manager) serves one connection at a time.
pub struct Tpm {
    ctx: Context,
    tcti: String,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

/// How many times an unseal is tried while PCRs change under it (`TPM_RC_PCR_CHANGED`).
const PCR_CHANGED_TRIES: usize = 3;

/// An unseal's outcome; an error comes with what the TPM answered, if it did.
type Attempt = Result<SensitiveData, (Option<Tss2ResponseCodeKind>, TpmError)>;

impl Tpm {
    /// Connects to the TPM at `tcti` and checks that it answers.
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        let unavailable = |reason: String| TpmError::Unavailable {
            tcti: tcti.to_owned(),
            reason,
        };
        let conf = TctiNameConf::from_str(tcti).map_err(|_| {
            unavailable(
                "not a TCTI kmsfs understands (device:PATH, swtpm:host=HOST,port=PORT, \
                 mssim:host=HOST,port=PORT or tabrmd:bus_name=NAME)"
                    .into(),
            )
        })?;
        if let TctiNameConf::Device(_) = &conf {
            // tss-esapi keeps the path to itself; "device" alone means /dev/tpm0.
            let path = tcti.strip_prefix("device:").unwrap_or("/dev/tpm0");
            std::fs::metadata(path).map_err(|e| {
                unavailable(format!(
                    "{path}: {e} (is a TPM 2.0 enabled in the firmware, and its driver loaded?)"
                ))
            })?;
        }
        let mut ctx = Context::new(conf)
            .map_err(|e| unavailable(format!("cannot connect: {}", detail(&e))))?;
        ctx.get_tpm_property(PropertyTag::FamilyIndicator)
            .map_err(|e| unavailable(format!("it does not answer: {}", detail(&e))))?;
        Ok(Tpm {
            ctx,
            tcti: tcti.to_owned(),
        })
    }

    /// Seals `key` under a primary key in the owner hierarchy (recreated deterministically from
    /// a fixed template, so nothing is stored in the TPM's NV), bound by a policy on the
    /// current values of the chosen PCRs. Returns a self-describing blob (see `blob`).
    pub fn seal(&mut self, key: &SecretKey32, policy: &PcrPolicy) -> Result<Vec<u8>, TpmError> {
        let pcrs = policy.normalized()?;
        let primary = self.create_primary()?;
        let sealed = self.seal_under(primary, key, &pcrs);
        self.flush(primary.into());
        sealed
    }

    /// Unseals with a policy session on the blob's PCRs. A changed PCR gives
    /// `TpmError::PolicyMismatch`.
    pub fn unseal(&mut self, blob: &[u8]) -> Result<SecretKey32, TpmError> {
        let b = Blob::decode(blob)?;
        let unusable = |what: &str| {
            let what = what.to_owned();
            move |e| TpmError::BadBlob(format!("{what}: {}", detail(&e)))
        };
        let public = PublicBuffer::unmarshall(&b.public)
            .and_then(Public::try_from)
            .map_err(unusable("its TPM2B_PUBLIC does not unmarshal"))?;
        // Blob::decode checked the TPM2B's size field: the rest is the buffer.
        let private = Private::try_from(&b.private[2..])
            .map_err(unusable("its TPM2B_PRIVATE is too large"))?;
        let primary = self.create_primary()?;
        let unsealed = self.unseal_under(primary, &b.pcrs, public, private);
        self.flush(primary.into());
        unsealed
    }

    fn seal_under(
        &mut self,
        primary: KeyHandle,
        key: &SecretKey32,
        pcrs: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let policy = self.pcr_policy_digest(pcrs)?;
        let template =
            sealed_template(policy).map_err(failed("building the sealed object's template"))?;
        // SensitiveData keeps its bytes in a Zeroizing buffer.
        let data = SensitiveData::try_from(key.expose().to_vec()).map_err(failed("sealing"))?;
        let session = self.session(Some(primary), SessionType::Hmac, true)?;
        let created = self.ctx.execute_with_session(Some(session), |ctx| {
            ctx.create(primary, template, None, Some(data), None, None)
        });
        self.flush(SessionHandle::from(session).into());
        let created = created.map_err(failed("creating the sealed object"))?;
        let public = PublicBuffer::try_from(created.out_public)
            .and_then(|p| p.marshall())
            .map_err(failed("marshalling the sealed object"))?;
        let secret = created.out_private.value();
        let len = u16::try_from(secret.len())
            .map_err(|_| TpmError::Tpm("the TPM returned an oversized TPM2B_PRIVATE".into()))?;
        let mut private = len.to_be_bytes().to_vec();
        private.extend_from_slice(secret);
        Blob {
            pcrs: pcrs.to_vec(),
            public,
            private,
        }
        .encode()
    }

    fn unseal_under(
        &mut self,
        primary: KeyHandle,
        pcrs: &[u8],
        public: Public,
        private: Private,
    ) -> Result<SecretKey32, TpmError> {
        let sealed = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(primary, private, public))
            .map_err(|e| match tpm_kind(&e) {
                Some(Tss2ResponseCodeKind::Integrity) => TpmError::WrongTpm { detail: detail(&e) },
                _ => failed("loading the sealed object")(e),
            })?;
        let mut tries = 1;
        let outcome = loop {
            let outcome = self.unseal_loaded(primary, sealed, pcrs);
            let changed = matches!(&outcome, Err((Some(Tss2ResponseCodeKind::PcrChanged), _)));
            if !changed || tries == PCR_CHANGED_TRIES {
                break outcome;
            }
            tries += 1;
        };
        self.flush(sealed.into());
        let data = outcome.map_err(|(kind, e)| match kind {
            Some(Tss2ResponseCodeKind::PolicyFail) => TpmError::PolicyMismatch {
                pcrs: pcrs.to_vec(),
            },
            _ => e,
        })?;
        let bytes = data.value();
        if bytes.len() != 32 {
            return Err(TpmError::BadBlob(format!(
                "the sealed object holds {} bytes, not a 32-byte key",
                bytes.len()
            )));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        Ok(SecretKey32::from_slice(&key))
    }

    /// One try at unsealing the loaded object `sealed`.
    fn unseal_loaded(&mut self, primary: KeyHandle, sealed: KeyHandle, pcrs: &[u8]) -> Attempt {
        let session = self
            .session(Some(primary), SessionType::Policy, false)
            .map_err(|e| (None, e))?;
        let selection = selection(pcrs).map_err(|e| (None, e))?;
        let unsealed = PolicySession::try_from(session)
            // An empty digest: the TPM takes the PCRs' current values.
            .and_then(|ps| self.ctx.policy_pcr(ps, Digest::default(), selection))
            .and_then(|()| {
                self.ctx
                    .execute_with_session(Some(session), |ctx| ctx.unseal(sealed.into()))
            });
        self.flush(SessionHandle::from(session).into());
        unsealed.map_err(|e| (tpm_kind(&e), failed("unsealing")(e)))
    }

    /// The policy digest of "PCRs `pcrs` hold their current values", computed by the TPM in a
    /// trial session from the values read now.
    fn pcr_policy_digest(&mut self, pcrs: &[u8]) -> Result<Digest, TpmError> {
        let mut hash = Sha256::new();
        for &p in pcrs {
            let (_, read, values) = self
                .ctx
                .pcr_read(selection(&[p])?)
                .map_err(failed("reading the PCRs"))?;
            let value = values.value().first().filter(|_| !read.is_empty());
            match value {
                Some(v) if v.len() == 32 && read.get_selections().len() == 1 => {
                    hash.update(v.value())
                }
                _ => {
                    return Err(TpmError::Tpm(format!(
                        "the TPM has no SHA-256 value for PCR {p} (is its SHA-256 bank active?)"
                    )))
                }
            }
        }
        let pcr_digest = Digest::try_from(hash.finalize().to_vec()).map_err(failed("hashing"))?;
        let selection = selection(pcrs)?;
        let trial = self.session(None, SessionType::Trial, false)?;
        let digest = PolicySession::try_from(trial)
            .and_then(|ps| {
                self.ctx.policy_pcr(ps, pcr_digest, selection)?;
                self.ctx.policy_get_digest(ps)
            })
            .map_err(failed("computing the PCR policy"));
        self.flush(SessionHandle::from(trial).into());
        digest
    }

    /// The primary storage key of the owner hierarchy, from the fixed template.
    fn create_primary(&mut self) -> Result<KeyHandle, TpmError> {
        let template = primary_template().map_err(failed("building the primary key's template"))?;
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map(|r| r.key_handle)
            .map_err(failed("creating the primary key in the owner hierarchy"))
    }

    /// A session: salted with `salt_key` (so that its parameter encryption uses a secret only
    /// the TPM knows), with AES-128-CFB on the command's first parameter if `decrypt` and on
    /// the response's always (trial sessions excepted).
    fn session(
        &mut self,
        salt_key: Option<KeyHandle>,
        kind: SessionType,
        decrypt: bool,
    ) -> Result<AuthSession, TpmError> {
        let (symmetric, encrypt) = match kind {
            SessionType::Trial => (SymmetricDefinition::Null, false),
            _ => (SymmetricDefinition::AES_128_CFB, true),
        };
        let session = self
            .ctx
            .start_auth_session(
                salt_key,
                None,
                None,
                kind,
                symmetric,
                HashingAlgorithm::Sha256,
            )
            .and_then(|s| {
                s.ok_or(tss_esapi::Error::WrapperError(
                    WrapperErrorKind::WrongValueFromTpm,
                ))
            })
            .map_err(failed("starting a session"))?;
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(decrypt)
            .with_encrypt(encrypt)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attributes, mask) {
            self.flush(SessionHandle::from(session).into());
            return Err(failed("setting the session's attributes")(e));
        }
        Ok(session)
    }

    /// Frees a transient object or session in the TPM, which has room for only a few. A
    /// failure only costs room until the connection closes (the context flushes what is left).
    fn flush(&mut self, handle: ObjectHandle) {
        if let Err(e) = self.ctx.flush_context(handle) {
            log::warn!("TPM: could not free a handle: {}", detail(&e));
        }
    }
}
