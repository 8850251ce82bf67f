//! KMIP's binary encoding, TTLV: a 3-byte tag, a 1-byte type, a 4-byte big-endian length, then
//! the value padded with zeros to a multiple of 8 bytes. A structure's value is its items,
//! one after another.
//!
//! The decoder is strict (exact lengths, zero padding, valid UTF-8, booleans 0 or 1), so that
//! every message it accepts encodes back to the same bytes, and bounded (`MAX_MESSAGE`,
//! `MAX_DEPTH`) so that a peer cannot make the server allocate or recurse without limit. It
//! never panics: every length is checked before it is used.

/// The largest message read or written, header included. Real requests are a few hundred
/// bytes; a key of 64 KiB is far beyond any symmetric key.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Structures nest at most this deep (a request message nests 5 or 6 levels).
pub const MAX_DEPTH: usize = 16;
/// Tag, type and length.
pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlvError {
    #[error("message truncated: {needed} bytes needed at offset {at}, {have} left")]
    Truncated {
        at: usize,
        needed: usize,
        have: usize,
    },
    #[error("message of {0} bytes is larger than the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("structures nest deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("unknown item type 0x{ty:02x} at offset {at}")]
    UnknownType { at: usize, ty: u8 },
    #[error(
        "item of type 0x{ty:02x} at offset {at} has length {len}, which that type cannot have"
    )]
    BadLength { at: usize, ty: u8, len: u32 },
    #[error("non-zero padding after the item at offset {0}")]
    BadPadding(usize),
    #[error("boolean at offset {0} is neither 0 nor 1")]
    BadBoolean(usize),
    #[error("text string at offset {0} is not UTF-8")]
    BadText(usize),
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    #[error("a message is a structure; this one has type 0x{0:02x}")]
    NotAStructure(u8),
}

/// One item: its tag (the low 24 bits) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: u32,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Big-endian two's complement, a multiple of 8 bytes, as sent.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Vec<u8>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
}

mod ty {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG_INTEGER: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT_STRING: u8 = 0x07;
    pub const BYTE_STRING: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
}

impl Value {
    fn type_byte(&self) -> u8 {
        match self {
            Value::Structure(_) => ty::STRUCTURE,
            Value::Integer(_) => ty::INTEGER,
            Value::LongInteger(_) => ty::LONG_INTEGER,
            Value::BigInteger(_) => ty::BIG_INTEGER,
            Value::Enumeration(_) => ty::ENUMERATION,
            Value::Boolean(_) => ty::BOOLEAN,
            Value::TextString(_) => ty::TEXT_STRING,
            Value::ByteString(_) => ty::BYTE_STRING,
            Value::DateTime(_) => ty::DATE_TIME,
            Value::Interval(_) => ty::INTERVAL,
        }
    }
}

impl Ttlv {
    pub fn new(tag: u32, value: Value) -> Ttlv {
        Ttlv { tag, value }
    }

    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Ttlv {
        Ttlv::new(tag, Value::Structure(items))
    }

    /// The items of a structure (none for any other type).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first item of a structure with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every item of a structure with `tag`, in order.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    /// The encoded form (header, value, padding).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_byte());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode_into(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::BigInteger(b) | Value::ByteString(b) => out.extend_from_slice(b),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(b) => out.extend_from_slice(&u64::from(*b).to_be_bytes()),
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
        }
        let len = out.len() - start;
        // Lengths beyond u32 cannot occur: messages are built from bounded inputs.
        out[len_at..start].copy_from_slice(&(len as u32).to_be_bytes());
        out.resize(start + len.div_ceil(8) * 8, 0);
    }
}

/// The length of the whole message whose first 8 bytes are `header`, for a reader that must
/// know how much to read before decoding. Refuses what `decode` would refuse for its size.
pub fn message_len(header: &[u8; HEADER_LEN]) -> Result<usize, TtlvError> {
    if header[3] != ty::STRUCTURE {
        return Err(TtlvError::NotAStructure(header[3]));
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let total = HEADER_LEN.saturating_add(len);
    if total > MAX_MESSAGE {
        return Err(TtlvError::TooLarge(total));
    }
    if len % 8 != 0 {
        return Err(TtlvError::BadLength {
            at: 0,
            ty: ty::STRUCTURE,
            len: len as u32,
        });
    }
    Ok(total)
}

/// One whole message: a single structure and nothing after it.
pub fn decode(bytes: &[u8]) -> Result<Ttlv, TtlvError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(TtlvError::TooLarge(bytes.len()));
    }
    if bytes.len() >= HEADER_LEN && bytes[3] != ty::STRUCTURE {
        return Err(TtlvError::NotAStructure(bytes[3]));
    }
    let mut r = Reader { bytes, at: 0 };
    let item = r.item(0)?;
    if r.at != bytes.len() {
        return Err(TtlvError::Trailing(bytes.len() - r.at));
    }
    Ok(item)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TtlvError> {
        let have = self.bytes.len() - self.at;
        if n > have {
            return Err(TtlvError::Truncated {
                at: self.at,
                needed: n,
                have,
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn item(&mut self, depth: usize) -> Result<Ttlv, TtlvError> {
        if depth >= MAX_DEPTH {
            return Err(TtlvError::TooDeep);
        }
        let at = self.at;
        let h = self.take(HEADER_LEN)?;
        let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let ty = h[3];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let fixed = |want: u32| {
            if len == want {
                Ok(())
            } else {
                Err(TtlvError::BadLength { at, ty, len })
            }
        };
        let padded = (len as usize).div_ceil(8) * 8;
        // First the length each type may have; a structure is read whole here.
        match ty {
            ty::STRUCTURE => {
                if len % 8 != 0 {
                    return Err(TtlvError::BadLength { at, ty, len });
                }
                let body = self.take(len as usize)?;
                let mut inner = Reader { bytes: body, at: 0 };
                let mut items = Vec::new();
                while inner.at < body.len() {
                    items.push(
                        inner
                            .item(depth + 1)
                            .map_err(|e| shift(e, self.at - body.len()))?,
                    );
                }
                return Ok(Ttlv::structure(tag, items));
            }
            ty::INTEGER | ty::ENUMERATION | ty::INTERVAL => fixed(4)?,
            ty::LONG_INTEGER | ty::BOOLEAN | ty::DATE_TIME => fixed(8)?,
            ty::BIG_INTEGER if len == 0 || len % 8 != 0 => {
                return Err(TtlvError::BadLength { at, ty, len })
            }
            ty::BIG_INTEGER | ty::TEXT_STRING | ty::BYTE_STRING => {}
            _ => return Err(TtlvError::UnknownType { at, ty }),
        };
        let raw = self.take(padded)?;
        let (v, pad) = raw.split_at(len as usize);
        if pad.iter().any(|b| *b != 0) {
            return Err(TtlvError::BadPadding(at));
        }
        let be4 = || [v[0], v[1], v[2], v[3]];
        let be8 = || [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
        let value = match ty {
            ty::INTEGER => Value::Integer(i32::from_be_bytes(be4())),
            ty::ENUMERATION => Value::Enumeration(u32::from_be_bytes(be4())),
            ty::INTERVAL => Value::Interval(u32::from_be_bytes(be4())),
            ty::LONG_INTEGER => Value::LongInteger(i64::from_be_bytes(be8())),
            ty::DATE_TIME => Value::DateTime(i64::from_be_bytes(be8())),
            ty::BOOLEAN => match u64::from_be_bytes(be8()) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(TtlvError::BadBoolean(at)),
            },
            ty::BIG_INTEGER => Value::BigInteger(v.to_vec()),
            ty::BYTE_STRING => Value::ByteString(v.to_vec()),
            _ => Value::TextString(
                std::str::from_utf8(v)
                    .map_err(|_| TtlvError::BadText(at))?
                    .to_string(),
            ),
        };
        Ok(Ttlv { tag, value })
    }
}

/// Offsets inside a structure's body, made relative to the whole message.
fn shift(e: TtlvError, by: usize) -> TtlvError {
    use TtlvError::*;
    match e {
        Truncated { at, needed, have } => Truncated {
            at: at + by,
            needed,
            have,
        },
        UnknownType { at, ty } => UnknownType { at: at + by, ty },
        BadLength { at, ty, len } => BadLength {
            at: at + by,
            ty,
            len,
        },
        BadPadding(at) => BadPadding(at + by),
        BadBoolean(at) => BadBoolean(at + by),
        BadText(at) => BadText(at + by),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).unwrap()
    }

    /// The examples of the KMIP 1.x specification, section 9.1.2.
    #[test]
    fn spec_examples() {
        let cases = [
            (Value::Integer(8), "420020 02 00000004 00000008 00000000"),
            (
                Value::LongInteger(123456789000000000),
                "420020 03 00000008 01B69B4BA5749200",
            ),
            (
                Value::BigInteger(hex("0000000003FD35EB6BC2DF4618080000")),
                "420020 04 00000010 0000000003FD35EB6BC2DF4618080000",
            ),
            (
                Value::Enumeration(255),
                "420020 05 00000004 000000FF 00000000",
            ),
            (Value::Boolean(true), "420020 06 00000008 0000000000000001"),
            (
                Value::TextString("Hello World".into()),
                "420020 07 0000000B 48656C6C6F20576F726C640000000000",
            ),
            (
                Value::ByteString(vec![1, 2, 3]),
                "420020 08 00000003 0102030000000000",
            ),
            (
                Value::DateTime(0x47DA67F8),
                "420020 09 00000008 0000000047DA67F8",
            ),
            (
                Value::Interval(864000),
                "420020 0A 00000004 000D2F00 00000000",
            ),
        ];
        for (value, bytes) in cases {
            let item = Ttlv::new(0x420020, value);
            assert_eq!(item.encode(), hex(bytes), "{item:?}");
            let wrapped = Ttlv::structure(0x420020, vec![item.clone()]);
            assert_eq!(decode(&wrapped.encode()).unwrap(), wrapped);
        }
        let s = Ttlv::structure(
            0x420020,
            vec![
                Ttlv::new(0x420004, Value::Enumeration(254)),
                Ttlv::new(0x420005, Value::Integer(255)),
            ],
        );
        let bytes = hex("420020 01 00000020 420004 05 00000004 000000FE 00000000 420005 02 00000004 000000FF 00000000");
        assert_eq!(s.encode(), bytes);
        assert_eq!(decode(&bytes).unwrap(), s);
    }

    #[test]
    fn refuses_malformed_messages_exactly() {
        let ok = Ttlv::structure(0x420078, vec![Ttlv::new(0x42000D, Value::Integer(1))]).encode();
        assert!(decode(&ok).is_ok());
        assert!(matches!(
            decode(&ok[..ok.len() - 1]),
            Err(TtlvError::Truncated { .. })
        ));
        let mut trailing = ok.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&trailing), Err(TtlvError::Trailing(8)));
        let mut pad = ok.clone();
        pad[23] = 1;
        assert_eq!(decode(&pad), Err(TtlvError::BadPadding(8)));
        let mut ty = ok.clone();
        ty[11] = 0x0B;
        assert_eq!(decode(&ty), Err(TtlvError::UnknownType { at: 8, ty: 0x0B }));
        let mut len = ok.clone();
        len[15] = 5;
        assert!(matches!(
            decode(&len),
            Err(TtlvError::BadLength { at: 8, .. })
        ));
        let b = Ttlv::structure(0x420078, vec![Ttlv::new(0x42000D, Value::Boolean(true))]);
        let mut b = b.encode();
        b[23] = 2;
        assert_eq!(decode(&b), Err(TtlvError::BadBoolean(8)));
        let t = Ttlv::structure(0x420078, vec![Ttlv::new(1, Value::ByteString(vec![0xff]))]);
        let mut t = t.encode();
        t[11] = 0x07;
        assert_eq!(decode(&t), Err(TtlvError::BadText(8)));
        assert_eq!(
            decode(&Ttlv::new(1, Value::Integer(1)).encode()),
            Err(TtlvError::NotAStructure(2))
        );
        assert!(matches!(decode(&[]), Err(TtlvError::Truncated { .. })));
    }

    #[test]
    fn bounds_size_and_depth() {
        let mut deep = Ttlv::new(1, Value::Integer(0));
        for _ in 0..MAX_DEPTH {
            deep = Ttlv::structure(1, vec![deep]);
        }
        assert_eq!(decode(&deep.encode()), Err(TtlvError::TooDeep));
        let big = Ttlv::structure(
            1,
            vec![Ttlv::new(2, Value::ByteString(vec![0; MAX_MESSAGE]))],
        );
        assert!(matches!(decode(&big.encode()), Err(TtlvError::TooLarge(_))));
        let mut header = [0x42, 0, 0x78, 1, 0, 1, 0, 0];
        assert!(matches!(message_len(&header), Err(TtlvError::TooLarge(_))));
        header[5] = 0;
        header[7] = 16;
        assert_eq!(message_len(&header), Ok(24));
    }
}
