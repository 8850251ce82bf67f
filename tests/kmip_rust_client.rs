//! A second, independent KMIP implementation against `kmsfs mount --kmip-listen`: NLnet Labs'
//! `kmip-protocol` (its serde TTLV encoder and decoder, its request and response types) runs
//! the same lifecycle as PyKMIP in tests/kmip.rs, over a rustls connection with a client
//! certificate; each change is checked through the mount, and mount changes are seen over KMIP.

mod support;

use std::fs;
use std::io::{Read, Write};

use kmip_protocol::types::common::{
    AttributeName, AttributeValue, CryptographicAlgorithm, CryptographicUsageMask, KeyMaterial,
    ObjectType, RevocationMessage, RevocationReasonCode, State, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, RequestPayload, RevocationReason, TemplateAttribute,
};
use kmip_protocol::types::response::{
    ManagedObject, ResponseMessage, ResponsePayload, ResultStatus,
};
use support::daemon::Daemon;
use support::kmip::{connect, free_port, Pki, TlsStream};
use support::scratch::Scratch;

/// One request; the response's payload, or its result message.
fn request(tls: &mut TlsStream, payload: RequestPayload) -> Result<ResponsePayload, String> {
    let bytes = kmip_protocol::request::to_vec(payload, None).unwrap();
    tls.write_all(&bytes).unwrap();
    tls.flush().unwrap();
    let mut header = [0u8; 8];
    tls.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut msg = header.to_vec();
    msg.resize(8 + len, 0);
    tls.read_exact(&mut msg[8..]).unwrap();
    let mut res: ResponseMessage = kmip_protocol::response::from_slice(&msg)
        .unwrap_or_else(|e| panic!("kmip-protocol cannot read the response: {e}"));
    assert_eq!(res.batch_items.len(), 1);
    let item = res.batch_items.remove(0);
    match item.result_status {
        ResultStatus::Success => Ok(item.payload.expect("a payload")),
        _ => Err(item.result_message.unwrap_or_default()),
    }
}

fn uid(u: &str) -> Option<UniqueIdentifier> {
    Some(UniqueIdentifier(u.to_string()))
}

fn state_over_kmip(tls: &mut TlsStream, u: &str) -> State {
    let r = request(
        tls,
        RequestPayload::GetAttributes(uid(u), Some(vec![AttributeName("State".into())])),
    )
    .unwrap();
    let ResponsePayload::GetAttributes(p) = r else {
        panic!("{r:?}")
    };
    let attrs = p.attributes.expect("attributes");
    match &attrs[0].value {
        AttributeValue::State(s) => *s,
        other => panic!("{other:?}"),
    }
}

fn state(d: &Daemon, record: &str) -> String {
    d.read(&format!("{record}/state")).trim().to_string()
}

fn revoke(u: &str, code: RevocationReasonCode) -> RequestPayload {
    RequestPayload::Revoke(
        uid(u),
        RevocationReason(code, Option::<RevocationMessage>::None),
        None,
    )
}

#[test]
fn kmip_protocol_runs_the_lifecycle_and_the_mount_shows_each_change() {
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let mut args: Vec<String> = vec!["--init".into()];
    args.extend(pki.mount_args(port));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&s.path("data"), &s.path("mnt"), &args);
    let mut tls = connect(&pki, port, "client").unwrap();

    let created = request(
        &mut tls,
        RequestPayload::Create(
            ObjectType::SymmetricKey,
            TemplateAttribute::unnamed(vec![
                Attribute::CryptographicAlgorithm(CryptographicAlgorithm::AES),
                Attribute::CryptographicLength(256),
                Attribute::Name("rust-1".into()),
                Attribute::CryptographicUsageMask(CryptographicUsageMask::Encrypt),
            ]),
        ),
    )
    .unwrap();
    let ResponsePayload::Create(created) = created else {
        panic!("{created:?}")
    };
    let u = created.unique_identifier.0.clone();
    assert_eq!(d.json("kmip/rust-1/record.json")["tag"], u.as_str());
    assert_eq!(state(&d, "kmip/rust-1"), "prelive");
    assert_eq!(state_over_kmip(&mut tls, &u), State::PreActive);

    request(&mut tls, RequestPayload::Activate(uid(&u))).unwrap();
    assert_eq!(state(&d, "kmip/rust-1"), "active");

    let got = request(&mut tls, RequestPayload::Get(uid(&u), None, None, None)).unwrap();
    let ResponsePayload::Get(got) = got else {
        panic!("{got:?}")
    };
    let ManagedObject::SymmetricKey(key) = got.cryptographic_object else {
        panic!("not a symmetric key")
    };
    let KeyMaterial::Bytes(bytes) = key.key_block.key_value.key_material else {
        panic!("not raw key bytes")
    };
    assert_eq!(bytes, fs::read(d.p("kmip/rust-1/key")).unwrap());

    request(
        &mut tls,
        RequestPayload::ModifyAttribute(uid(&u), Attribute::Name("rust-2".into())),
    )
    .unwrap();
    assert_eq!(d.json("kmip/rust-2/record.json")["tag"], u.as_str());
    let found = request(
        &mut tls,
        RequestPayload::Locate(vec![Attribute::Name("rust-2".into())]),
    )
    .unwrap();
    let ResponsePayload::Locate(found) = found else {
        panic!("{found:?}")
    };
    assert_eq!(found.unique_identifiers, vec![UniqueIdentifier(u.clone())]);

    request(
        &mut tls,
        revoke(&u, RevocationReasonCode::CessationOfOperation),
    )
    .unwrap();
    assert_eq!(state(&d, "kmip/rust-2"), "inactive");
    // A change through the mount, seen over KMIP.
    fs::write(d.p("kmip/rust-2/state"), "active\n").unwrap();
    assert_eq!(state_over_kmip(&mut tls, &u), State::Active);
    let e = request(&mut tls, RequestPayload::Destroy(uid(&u))).unwrap_err();
    assert!(e.contains("Revoke it first"), "{e}");
    request(&mut tls, revoke(&u, RevocationReasonCode::KeyCompromise)).unwrap();
    assert_eq!(state(&d, "kmip/rust-2"), "deprecated");
    assert_eq!(state_over_kmip(&mut tls, &u), State::Compromised);
    request(&mut tls, RequestPayload::Destroy(uid(&u))).unwrap();
    assert_eq!(state(&d, "kmip/rust-2"), "terminated");
    assert_eq!(state_over_kmip(&mut tls, &u), State::Destroyed);
    request(&mut tls, RequestPayload::Destroy(uid(&u))).unwrap();
    let e = request(&mut tls, RequestPayload::Get(uid(&u), None, None, None)).unwrap_err();
    assert!(e.contains("no key with identifier"), "{e}");
    drop(tls);
    d.stop();
}
