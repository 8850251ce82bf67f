//! `TpmError`, and the words for what the TSS returned.

use tss_esapi::constants::response_code::{Tss2ResponseCode, Tss2ResponseCodeKind};

/// Why sealing or unsealing failed. Each variant means one thing; the messages are for an
/// administrator.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TPM cannot be reached through `tcti` (no device, nothing listening, not a TCTI).
    #[error("cannot use the TPM at {tcti}: {reason}")]
    Unavailable { tcti: String, reason: String },
    /// The TPM refused to unseal because a PCR of the policy has changed since sealing.
    #[error(
        "the TPM refused to unseal: PCR values differ from when the key was sealed (PCRs {})",
        pcr_list(.pcrs)
    )]
    PolicyMismatch { pcrs: Vec<u8> },
    /// The blob's checksum is right but this TPM cannot load it: another TPM sealed it, or
    /// this TPM's owner hierarchy was cleared since (which changes its primary keys), or the
    /// blob was altered on purpose (with its checksum recomputed).
    #[error(
        "this TPM cannot load the sealed key: another TPM sealed it, or this TPM's owner \
         hierarchy was cleared since, or the blob was altered ({detail})"
    )]
    WrongTpm { detail: String },
    /// Damaged, truncated, or not a kmsfs TPM blob at all.
    #[error("the TPM-sealed key is unusable: {0}")]
    BadBlob(String),
    /// A `PcrPolicy` that cannot be sealed to (no PCR, or an index past 23).
    #[error("invalid PCR policy: {0}")]
    InvalidPolicy(String),
    /// Any other failure of the TPM or the TSS.
    #[error("TPM failure: {0}")]
    Tpm(String),
}

/// "7" or "0, 7, 14".
pub(super) fn pcr_list(pcrs: &[u8]) -> String {
    let names: Vec<String> = pcrs.iter().map(u8::to_string).collect();
    names.join(", ")
}

/// The raw TSS2_RC (tss-esapi shows it only as "Response code value: 0x...").
fn raw_code(rc: &Tss2ResponseCode) -> Option<u32> {
    let text = match rc {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(c) => c.to_string(),
        Tss2ResponseCode::FormatOne(c) => c.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// What the TPM itself answered (not a TCTI, ESAPI or marshalling error), if it did.
pub(super) fn tpm_kind(e: &tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        // Layer 0 is the TPM; tss-esapi's `kind` ignores the layer, so check it here.
        tss_esapi::Error::Tss2Error(rc) if raw_code(rc).is_some_and(|c| c >> 16 == 0) => rc.kind(),
        _ => None,
    }
}

/// A one-line description of a TSS error, with its return code for a search engine.
pub(super) fn detail(e: &tss_esapi::Error) -> String {
    let rc = match e {
        tss_esapi::Error::WrapperError(kind) => return format!("tss-esapi: {kind}"),
        tss_esapi::Error::Tss2Error(rc) => rc,
    };
    let Some(code) = raw_code(rc) else {
        return rc.to_string();
    };
    let layer = match code >> 16 {
        0 => return format!("{rc} (TPM return code {code:#x})"),
        6 => "FAPI",
        7 => "ESAPI",
        8 => "SAPI",
        9 => "marshalling",
        10 => "TCTI",
        11 | 12 => "resource manager",
        _ => "TSS",
    };
    let what = match code & 0xffff {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        5 => "bad reference",
        6 => "insufficient buffer",
        8 => "no connection",
        9 => "try again",
        10 => "I/O error",
        11 => "bad value",
        12 => "not permitted",
        17 => "malformed response",
        19 => "insufficient response",
        23 => "out of memory",
        27 => "the response's authorization failed",
        _ => "error",
    };
    format!("{layer} {what} (TSS return code {code:#x})")
}

/// Any TSS failure while `doing` something, as `TpmError::Tpm`.
pub(super) fn failed(doing: &str) -> impl Fn(tss_esapi::Error) -> TpmError + '_ {
    move |e| TpmError::Tpm(format!("{doing}: {}", detail(&e)))
}
