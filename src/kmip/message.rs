//! Request and response messages of KMIP 1.0-1.4: a header (protocol version, batch count,
//! options) and batch items (an operation and its payload; the result and its payload).

use super::error::Failure;
use super::fields;
use super::tags::{self, reason, status};
use super::ttlv::{Ttlv, Value};

/// The versions served, newest first (Discover Versions answers in this order).
pub const VERSIONS: [(i32, i32); 5] = [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: i32,
    pub minor: i32,
}

impl Version {
    /// What answers a request whose version is unknown or not served.
    pub const FALLBACK: Version = Version { major: 1, minor: 0 };

    pub fn served(self) -> bool {
        VERSIONS.contains(&(self.major, self.minor))
    }

    pub fn at_least(self, minor: i32) -> bool {
        self.major > 1 || (self.major == 1 && self.minor >= minor)
    }

    pub fn to_ttlv(self) -> Ttlv {
        Ttlv::structure(
            tags::PROTOCOL_VERSION,
            vec![
                Ttlv::new(tags::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Ttlv::new(tags::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ],
        )
    }

    pub fn from_ttlv(item: &Ttlv) -> Result<Version, Failure> {
        Ok(Version {
            major: fields::integer(item, tags::PROTOCOL_VERSION_MAJOR)?
                .ok_or_else(|| Failure::missing("Protocol Version Major"))?,
            minor: fields::integer(item, tags::PROTOCOL_VERSION_MINOR)?
                .ok_or_else(|| Failure::missing("Protocol Version Minor"))?,
        })
    }
}

#[derive(Debug)]
pub struct Request {
    pub version: Version,
    /// Batch Error Continuation Option Continue; otherwise the first failure stops the batch.
    pub continue_on_error: bool,
    pub items: Vec<BatchItem>,
}

#[derive(Debug)]
pub struct BatchItem {
    pub operation: u32,
    pub id: Option<Vec<u8>>,
    pub payload: Ttlv,
}

/// The answer to one batch item.
#[derive(Debug)]
pub struct Reply {
    pub operation: Option<u32>,
    pub id: Option<Vec<u8>>,
    pub result: Result<Vec<Ttlv>, Failure>,
}

/// The version a request asks for, as far as it can be read: for answering even a request
/// that `parse_request` refuses in the version its client speaks.
pub fn version_of(msg: &Ttlv) -> Option<Version> {
    let v = msg
        .child(tags::REQUEST_HEADER)?
        .child(tags::PROTOCOL_VERSION)?;
    Version::from_ttlv(v).ok()
}

pub fn parse_request(msg: &Ttlv) -> Result<Request, Failure> {
    let invalid = |m: &str| Failure::new(reason::INVALID_MESSAGE, m);
    if msg.tag != tags::REQUEST_MESSAGE {
        return Err(invalid("not a Request Message"));
    }
    let header = msg
        .child(tags::REQUEST_HEADER)
        .ok_or_else(|| invalid("the request has no Request Header"))?;
    let version = Version::from_ttlv(
        header
            .child(tags::PROTOCOL_VERSION)
            .ok_or_else(|| invalid("the request header has no Protocol Version"))?,
    )?;
    if !version.served() {
        return Err(Failure::new(
            reason::INVALID_MESSAGE,
            format!(
                "KMIP {}.{} is not served; kmsfs speaks KMIP 1.0 to 1.4",
                version.major, version.minor
            ),
        ));
    }
    let option = fields::enumeration(header, tags::BATCH_ERROR_CONTINUATION_OPTION)?;
    if option == Some(tags::BATCH_UNDO) {
        return Err(Failure::unsupported(
            "Batch Error Continuation Option Undo: completed operations are durable",
        ));
    }
    let count = fields::integer(header, tags::BATCH_COUNT)?
        .ok_or_else(|| invalid("the request header has no Batch Count"))?;
    let items = msg
        .children(tags::BATCH_ITEM)
        .map(parse_item)
        .collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() || usize::try_from(count).ok() != Some(items.len()) {
        return Err(invalid(&format!(
            "Batch Count {count} but {} batch item(s)",
            items.len()
        )));
    }
    Ok(Request {
        version,
        continue_on_error: option == Some(tags::BATCH_CONTINUE),
        items,
    })
}

fn parse_item(item: &Ttlv) -> Result<BatchItem, Failure> {
    let operation = fields::enumeration(item, tags::OPERATION)?
        .ok_or_else(|| Failure::new(reason::INVALID_MESSAGE, "a batch item has no Operation"))?;
    let id = fields::bytes(item, tags::UNIQUE_BATCH_ITEM_ID)?.map(<[u8]>::to_vec);
    let payload = match item.child(tags::REQUEST_PAYLOAD) {
        None => Ttlv::structure(tags::REQUEST_PAYLOAD, Vec::new()),
        Some(
            p @ Ttlv {
                value: Value::Structure(_),
                ..
            },
        ) => p.clone(),
        Some(_) => return Err(Failure::invalid("Request Payload is not a structure")),
    };
    Ok(BatchItem {
        operation,
        id,
        payload,
    })
}

/// The whole response message.
pub fn response(version: Version, replies: Vec<Reply>) -> Ttlv {
    let header = Ttlv::structure(
        tags::RESPONSE_HEADER,
        vec![
            version.to_ttlv(),
            Ttlv::new(tags::TIME_STAMP, Value::DateTime(now())),
            Ttlv::new(tags::BATCH_COUNT, Value::Integer(replies.len() as i32)),
        ],
    );
    let mut items = vec![header];
    items.extend(replies.into_iter().map(reply_item));
    Ttlv::structure(tags::RESPONSE_MESSAGE, items)
}

fn reply_item(r: Reply) -> Ttlv {
    let mut items = Vec::new();
    if let Some(op) = r.operation {
        items.push(Ttlv::new(tags::OPERATION, Value::Enumeration(op)));
    }
    if let Some(id) = r.id {
        items.push(Ttlv::new(tags::UNIQUE_BATCH_ITEM_ID, Value::ByteString(id)));
    }
    match r.result {
        Ok(payload) => {
            items.push(Ttlv::new(
                tags::RESULT_STATUS,
                Value::Enumeration(status::SUCCESS),
            ));
            items.push(Ttlv::structure(tags::RESPONSE_PAYLOAD, payload));
        }
        Err(f) => {
            items.push(Ttlv::new(
                tags::RESULT_STATUS,
                Value::Enumeration(status::OPERATION_FAILED),
            ));
            items.push(Ttlv::new(tags::RESULT_REASON, Value::Enumeration(f.reason)));
            items.push(Ttlv::new(
                tags::RESULT_MESSAGE,
                Value::TextString(f.message),
            ));
        }
    }
    Ttlv::structure(tags::BATCH_ITEM, items)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
