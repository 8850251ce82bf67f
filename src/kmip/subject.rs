//! The subject of a client certificate, read from its DER: the policy is keyed by its CN and
//! the audit log names the client by the whole subject. The certificate has already been
//! verified against the client CA (by rustls) when this runs; the reader is still strict and
//! bounded, returning None on anything it does not expect rather than guessing.

/// One DER item: (tag byte, contents, the rest after it).
fn item(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject Name (its DER contents) of a certificate.
fn subject_name(cert: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, cert, _) = item(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = item(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version, if present; then serial, signature algorithm, issuer, validity, subject.
    if rest.first() == Some(&0xA0) {
        rest = item(rest)?.2;
    }
    for _ in 0..4 {
        rest = item(rest)?.2;
    }
    let (SEQUENCE, subject, _) = item(rest)? else {
        return None;
    };
    Some(subject)
}

fn short_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0A] => "O",
        [0x55, 0x04, 0x0B] => "OU",
        _ => return None,
    })
}

/// The subject's attributes in order, as (short name or OID in hex, text value).
fn attributes(cert: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rdns = subject_name(cert)?;
    while !rdns.is_empty() {
        let (SET, mut set, rest) = item(rdns)? else {
            return None;
        };
        rdns = rest;
        while !set.is_empty() {
            let (SEQUENCE, atv, rest) = item(set)? else {
                return None;
            };
            set = rest;
            let (OID, oid, value) = item(atv)? else {
                return None;
            };
            let (_, value, _) = item(value)?;
            let key =
                short_name(oid).map_or_else(|| format!("OID.{}", hex::encode(oid)), String::from);
            out.push((key, String::from_utf8_lossy(value).into_owned()));
        }
    }
    Some(out)
}

/// `CN=backup01,O=Example` (None if the certificate cannot be read), and the CN.
pub fn of_certificate(cert: &[u8]) -> (Option<String>, Option<String>) {
    let Some(attrs) = attributes(cert) else {
        return (None, None);
    };
    let cn = attrs
        .iter()
        .find(|(k, _)| k == "CN")
        .map(|(_, v)| v.clone());
    let subject = attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    (Some(subject), cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert_eq!(of_certificate(&[]), (None, None));
        assert_eq!(
            of_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            (None, None)
        );
        assert_eq!(of_certificate(&[0x30, 0x02, 0x30, 0x00]), (None, None));
    }
}
