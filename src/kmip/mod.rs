//! KMIP 1.0-1.4 (binary TTLV over mutually authenticated TLS): the mounted keystore served
//! to backup products, through the same service calls as the mount (docs/kmip.md).
//!
//! - `ttlv`, `tags`: the encoding and its numbers; `message`: request and response messages.
//! - `ops`: the operations, against a `Kms`; `error`: KMIP Result Reasons from `KmsError`.
//! - `policy`: `--kmip-policy`; `server`: TLS, connections, limits; `subject`: the client
//!   certificate's subject.

mod attributes;
pub mod error;
mod fields;
pub mod message;
mod ops;
pub mod policy;
pub mod server;
pub mod subject;
pub mod tags;
pub mod ttlv;

use error::Failure;
use message::{Reply, Version};
use policy::Policy;
use ttlv::Ttlv;

use crate::service::Kms;

/// Who is asking: what the TLS handshake established.
#[derive(Debug, Clone)]
pub struct Client {
    /// The certificate's subject, as the audit log shows it.
    pub subject: String,
    /// Its common name, the key of the policy.
    pub cn: Option<String>,
}

/// Answers one request message (its encoded bytes) with the encoded response. A request that
/// cannot be decoded gets a response with one failed batch item (Invalid Message) and changes
/// nothing; the caller closes the connection after it (`Answer::close`).
pub fn answer(kms: &Kms, policy: &Policy, client: &Client, bytes: &[u8]) -> Answer {
    let _acting = crate::service::acting_as_client(&client.subject);
    let mut msg = match ttlv::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("KMIP client {:?}: undecodable request: {e}", client.subject);
            return Answer::refusal(
                Version::FALLBACK,
                Failure::new(tags::reason::INVALID_MESSAGE, e.to_string()),
            );
        }
    };
    let mut request = match message::parse_request(&msg) {
        Ok(r) => r,
        Err(f) => {
            log::warn!("KMIP client {:?}: invalid request: {f}", client.subject);
            let v = message::version_of(&msg)
                .filter(|v| v.served())
                .unwrap_or(Version::FALLBACK);
            wipe(&mut msg);
            return Answer::refusal(v, f);
        }
    };
    let rights = policy.client(client.cn.as_deref());
    let mut ctx = ops::Context::new(kms, rights, &client.subject, request.version);
    let mut replies = Vec::new();
    for item in &request.items {
        let result = ops::run(&mut ctx, item.operation, &item.payload);
        if let Err(f) = &result {
            log::info!(
                "KMIP client {:?}: operation 0x{:X} refused: {f}",
                client.subject,
                item.operation
            );
        }
        let failed = result.is_err();
        replies.push(Reply {
            operation: Some(item.operation),
            id: item.id.clone(),
            result,
        });
        if failed && !request.continue_on_error {
            break;
        }
    }
    // A Register's request holds a key: wiped, as the response of a Get is.
    wipe(&mut msg);
    request.items.iter_mut().for_each(|i| wipe(&mut i.payload));
    Answer {
        bytes: encode_wiping(message::response(request.version, replies)),
        close: false,
    }
}

/// An encoded response, and whether the connection should close after it.
#[derive(Debug)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub close: bool,
}

impl Answer {
    /// The answer to a message whose header alone is refused (too large, not a structure).
    pub fn unreadable(e: ttlv::TtlvError) -> Answer {
        Answer::refusal(
            Version::FALLBACK,
            Failure::new(tags::reason::INVALID_MESSAGE, e.to_string()),
        )
    }

    fn refusal(version: Version, f: Failure) -> Answer {
        let reply = Reply {
            operation: None,
            id: None,
            result: Err(f),
        };
        Answer {
            bytes: message::response(version, vec![reply]).encode(),
            close: true,
        }
    }
}

impl Drop for Answer {
    /// A Get's response holds a key: wiped once sent.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

/// Encodes, then wipes every byte string of the tree (key material) before it is freed.
fn encode_wiping(mut msg: Ttlv) -> Vec<u8> {
    let bytes = msg.encode();
    wipe(&mut msg);
    bytes
}

fn wipe(t: &mut Ttlv) {
    match &mut t.value {
        ttlv::Value::ByteString(b) => zeroize::Zeroize::zeroize(b),
        ttlv::Value::Structure(items) => items.iter_mut().for_each(wipe),
        _ => {}
    }
}
