//! The operations without TLS: request messages encoded as a client would, answered by
//! `kmip::answer` against an in-process keystore, the responses decoded and checked.

use std::sync::Arc;

use crate::keystore::{KeyTag, State};
use crate::kmip::fields::{enum_item, int_item, text_item};
use crate::kmip::policy::Policy;
use crate::kmip::tags::{self, op, reason};
use crate::kmip::ttlv::{self, Ttlv, Value};
use crate::kmip::{answer, attributes as attrs, Client};
use crate::service::Kms;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) kms: Arc<Kms>,
    pub(super) policy: Policy,
}

pub(super) fn fixture(policy: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::store::init(&data, Default::default()).unwrap();
    let kms = Kms::open(&data).unwrap();
    let policy = policy.map_or_else(Policy::open_to_all, |p| Policy::parse(p, "p").unwrap());
    Fixture {
        _dir: dir,
        kms,
        policy,
    }
}

pub(super) fn client(cn: &str) -> Client {
    Client {
        subject: format!("CN={cn}"),
        cn: Some(cn.into()),
    }
}

pub(super) fn message(minor: i32, items: Vec<(u32, Vec<Ttlv>)>) -> Vec<u8> {
    let version = crate::kmip::message::Version { major: 1, minor };
    let mut body = vec![Ttlv::structure(
        tags::REQUEST_HEADER,
        vec![
            version.to_ttlv(),
            int_item(tags::BATCH_COUNT, items.len() as i32),
        ],
    )];
    for (operation, payload) in items {
        body.push(Ttlv::structure(
            tags::BATCH_ITEM,
            vec![
                enum_item(tags::OPERATION, operation),
                Ttlv::structure(tags::REQUEST_PAYLOAD, payload),
            ],
        ));
    }
    Ttlv::structure(tags::REQUEST_MESSAGE, body).encode()
}

pub(super) type Outcome = Result<Ttlv, (u32, String)>;

/// The outcome of every batch item of the response to `bytes`.
pub(super) fn send(f: &Fixture, who: &Client, bytes: &[u8]) -> Vec<Outcome> {
    outcomes(&answer(&f.kms, &f.policy, who, bytes).bytes)
}

/// The outcome of every batch item of an encoded response.
pub(super) fn outcomes(response: &[u8]) -> Vec<Outcome> {
    let msg = ttlv::decode(response).unwrap();
    assert_eq!(msg.tag, tags::RESPONSE_MESSAGE);
    msg.children(tags::BATCH_ITEM)
        .map(|item| {
            let status = item.child(tags::RESULT_STATUS).unwrap();
            if status.value == Value::Enumeration(tags::status::SUCCESS) {
                Ok(item.child(tags::RESPONSE_PAYLOAD).unwrap().clone())
            } else {
                let Value::Enumeration(r) = item.child(tags::RESULT_REASON).unwrap().value else {
                    panic!()
                };
                let Value::TextString(m) = &item.child(tags::RESULT_MESSAGE).unwrap().value else {
                    panic!()
                };
                Err((r, m.clone()))
            }
        })
        .collect()
}

fn call_as(f: &Fixture, who: &str, operation: u32, payload: Vec<Ttlv>) -> Outcome {
    send(f, &client(who), &message(2, vec![(operation, payload)]))
        .pop()
        .unwrap()
}

pub(super) fn call(f: &Fixture, operation: u32, payload: Vec<Ttlv>) -> Outcome {
    call_as(f, "admin", operation, payload)
}

pub(super) fn attribute(name: &str, value: Value) -> Ttlv {
    attrs::attribute(name, Ttlv::new(tags::ATTRIBUTE_VALUE, value))
}

pub(super) fn name_attr(n: &str) -> Ttlv {
    attrs::attribute(attrs::NAME, attrs::name_value(n))
}

pub(super) fn create_payload(bits: i32, name: Option<&str>, group: Option<&str>) -> Vec<Ttlv> {
    let mut a = vec![
        attribute(attrs::ALGORITHM, Value::Enumeration(tags::ALGORITHM_AES)),
        attribute(attrs::LENGTH, Value::Integer(bits)),
        attribute(attrs::USAGE_MASK, Value::Integer(12)),
    ];
    a.extend(name.map(name_attr));
    a.extend(group.map(|g| attribute(attrs::OBJECT_GROUP, Value::TextString(g.into()))));
    vec![
        enum_item(tags::OBJECT_TYPE, tags::OBJECT_TYPE_SYMMETRIC_KEY),
        Ttlv::structure(tags::TEMPLATE_ATTRIBUTE, a),
    ]
}

pub(super) fn uid_of(payload: &Ttlv) -> KeyTag {
    let Value::TextString(u) = &payload.child(tags::UNIQUE_IDENTIFIER).unwrap().value else {
        panic!()
    };
    KeyTag::parse(u).unwrap()
}

pub(super) fn uid(tag: &KeyTag) -> Vec<Ttlv> {
    vec![text_item(tags::UNIQUE_IDENTIFIER, tag.as_str())]
}

pub(super) fn state_of(f: &Fixture, tag: &KeyTag) -> Option<State> {
    f.kms.read().record(tag).map(|r| r.state)
}

/// Everything a change could touch, to show that a refused request touched nothing.
pub(super) fn fingerprint(f: &Fixture) -> Vec<String> {
    let ks = f.kms.read();
    let mut out: Vec<String> = ks
        .groups()
        .map(|g| format!("group {} {} {}", g.tag, g.name, g.cipher))
        .collect();
    let mut records: Vec<String> = ks
        .records()
        .map(|r| {
            format!(
                "{} {} {} {:?} {}",
                r.tag, r.name, r.state, r.description, r.modified.0
            )
        })
        .collect();
    records.sort();
    out.extend(records);
    out
}

pub(super) fn revoke_payload(tag: &KeyTag, code: u32) -> Vec<Ttlv> {
    let mut p = uid(tag);
    p.push(Ttlv::structure(
        tags::REVOCATION_REASON,
        vec![enum_item(tags::REVOCATION_REASON_CODE, code)],
    ));
    p
}

fn key_bytes(payload: &Ttlv) -> Vec<u8> {
    let m = payload
        .child(tags::SYMMETRIC_KEY)
        .and_then(|k| k.child(tags::KEY_BLOCK))
        .and_then(|b| b.child(tags::KEY_VALUE))
        .and_then(|v| v.child(tags::KEY_MATERIAL))
        .unwrap();
    let Value::ByteString(b) = &m.value else {
        panic!()
    };
    b.clone()
}

#[test]
fn the_whole_lifecycle() {
    let f = fixture(None);
    let created = call(&f, op::CREATE, create_payload(256, Some("nbu-1"), None)).unwrap();
    let tag = uid_of(&created);
    let ks_group = f.kms.read().record(&tag).unwrap().group.clone();
    assert_eq!(f.kms.read().group(&ks_group).unwrap().name.as_str(), "kmip");
    assert_eq!(state_of(&f, &tag), Some(State::Prelive));
    // A prelive key cannot be used: Get is refused, as `cat key` is.
    let e = call(&f, op::GET, uid(&tag)).unwrap_err();
    assert_eq!(e.0, reason::ILLEGAL_OPERATION, "{e:?}");
    call(&f, op::ACTIVATE, uid(&tag)).unwrap();
    assert_eq!(state_of(&f, &tag), Some(State::Active));
    let got = call(&f, op::GET, uid(&tag)).unwrap();
    assert_eq!(key_bytes(&got), f.kms.unwrap_key(&tag).unwrap().expose());
    let attrs = call(&f, op::GET_ATTRIBUTES, uid(&tag)).unwrap();
    let names: Vec<_> = attrs
        .children(tags::ATTRIBUTE)
        .map(|a| a.child(tags::ATTRIBUTE_NAME).unwrap().value.clone())
        .collect();
    assert!(
        names.contains(&Value::TextString("Object Group".into())),
        "{names:?}"
    );
    let list = call(&f, op::GET_ATTRIBUTE_LIST, uid(&tag)).unwrap();
    assert_eq!(list.children(tags::ATTRIBUTE_NAME).count(), names.len());
    let found = call(&f, op::LOCATE, vec![name_attr("nbu-1")]).unwrap();
    assert_eq!(uid_of(&found), tag);
    call(&f, op::REVOKE, revoke_payload(&tag, 1)).unwrap();
    assert_eq!(state_of(&f, &tag), Some(State::Inactive));
    call(&f, op::DESTROY, uid(&tag)).unwrap();
    assert_eq!(state_of(&f, &tag), Some(State::Terminated));
    let e = call(&f, op::GET, uid(&tag)).unwrap_err();
    assert_eq!(e.0, reason::KEY_VALUE_NOT_PRESENT, "{e:?}");
    let destroyed = attribute(attrs::STATE, Value::Enumeration(tags::state::DESTROYED));
    assert_eq!(uid_of(&call(&f, op::LOCATE, vec![destroyed]).unwrap()), tag);
    call(&f, op::DESTROY, uid(&tag)).unwrap();
    assert_eq!(state_of(&f, &tag), None);
    assert_eq!(
        call(&f, op::GET, uid(&tag)).unwrap_err().0,
        reason::ITEM_NOT_FOUND
    );
}

#[test]
fn create_makes_the_group_with_the_keys_cipher_and_checks_it_after() {
    let f = fixture(None);
    let t = uid_of(&call(&f, op::CREATE, create_payload(128, None, Some("tape"))).unwrap());
    let ks = f.kms.read();
    let r = ks.record(&t).unwrap();
    assert!(r.name.as_str().starts_with("kmip-"));
    assert_eq!(ks.group(&r.group).unwrap().cipher.key_len(), 16);
    drop(ks);
    let before = fingerprint(&f);
    let e = call(&f, op::CREATE, create_payload(256, None, Some("tape"))).unwrap_err();
    assert_eq!(e.0, reason::INVALID_FIELD, "{e:?}");
    for bad in [
        create_payload(100, None, None),
        create_payload(256, Some("a/b"), None),
    ] {
        let e = call(&f, op::CREATE, bad).unwrap_err();
        assert_eq!(e.0, reason::INVALID_FIELD, "{e:?}");
    }
    let e = call(&f, op::CREATE, vec![enum_item(tags::OBJECT_TYPE, 7)]).unwrap_err();
    assert_eq!(e.0, reason::FEATURE_NOT_SUPPORTED, "{e:?}");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn register_keeps_the_given_key_and_activate_demotes_the_active_one() {
    let f = fixture(None);
    let key = vec![7u8; 24];
    let block = Ttlv::structure(
        tags::KEY_BLOCK,
        vec![
            enum_item(tags::KEY_FORMAT_TYPE, tags::KEY_FORMAT_RAW),
            Ttlv::structure(
                tags::KEY_VALUE,
                vec![Ttlv::new(
                    tags::KEY_MATERIAL,
                    Value::ByteString(key.clone()),
                )],
            ),
            enum_item(tags::CRYPTOGRAPHIC_ALGORITHM, tags::ALGORITHM_AES),
            int_item(tags::CRYPTOGRAPHIC_LENGTH, 192),
        ],
    );
    let payload = |name: &str| {
        let mut p = create_payload(192, Some(name), Some("vm"));
        p.push(Ttlv::structure(tags::SYMMETRIC_KEY, vec![block.clone()]));
        p
    };
    let a = uid_of(&call(&f, op::REGISTER, payload("a")).unwrap());
    let b = uid_of(&call(&f, op::REGISTER, payload("b")).unwrap());
    call(&f, op::ACTIVATE, uid(&a)).unwrap();
    assert_eq!(key_bytes(&call(&f, op::GET, uid(&a)).unwrap()), key);
    call(&f, op::ACTIVATE, uid(&b)).unwrap();
    assert_eq!(state_of(&f, &a), Some(State::Inactive));
    assert_eq!(state_of(&f, &b), Some(State::Active));
    // A key of the wrong length changes nothing.
    let before = fingerprint(&f);
    let mut short = payload("c");
    short.pop();
    short.push(Ttlv::structure(
        tags::SYMMETRIC_KEY,
        vec![Ttlv::structure(
            tags::KEY_BLOCK,
            vec![
                enum_item(tags::KEY_FORMAT_TYPE, tags::KEY_FORMAT_RAW),
                Ttlv::structure(
                    tags::KEY_VALUE,
                    vec![Ttlv::new(tags::KEY_MATERIAL, Value::ByteString(vec![1; 5]))],
                ),
            ],
        )],
    ));
    let e = call(&f, op::REGISTER, short).unwrap_err();
    assert_eq!(e.0, reason::INVALID_FIELD, "{e:?}");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn revoke_for_compromise_and_destroy_walk_the_lifecycle() {
    let f = fixture(None);
    let t = uid_of(&call(&f, op::CREATE, create_payload(256, Some("k"), None)).unwrap());
    let e = call(&f, op::REVOKE, revoke_payload(&t, 1)).unwrap_err();
    assert_eq!(e.0, reason::ILLEGAL_OPERATION, "{e:?}");
    call(&f, op::ACTIVATE, uid(&t)).unwrap();
    let e = call(&f, op::DESTROY, uid(&t)).unwrap_err();
    assert_eq!(e.0, reason::ILLEGAL_OPERATION, "{e:?}");
    call(
        &f,
        op::REVOKE,
        revoke_payload(&t, tags::REVOCATION_KEY_COMPROMISE),
    )
    .unwrap();
    assert_eq!(state_of(&f, &t), Some(State::Deprecated));
    call(&f, op::DESTROY, uid(&t)).unwrap();
    assert_eq!(state_of(&f, &t), Some(State::Terminated));
    // A prelive key is deleted at once.
    let p = uid_of(&call(&f, op::CREATE, create_payload(256, Some("p"), None)).unwrap());
    call(&f, op::DESTROY, uid(&p)).unwrap();
    assert_eq!(state_of(&f, &p), None);
    let e = call(&f, op::REVOKE, uid(&t)).unwrap_err();
    assert_eq!(e.0, reason::MISSING_DATA, "{e:?}");
}

#[test]
fn names_and_descriptions_change_through_attributes() {
    let f = fixture(None);
    let t = uid_of(&call(&f, op::CREATE, create_payload(256, Some("old"), None)).unwrap());
    let with = |a: Ttlv| {
        let mut p = uid(&t);
        p.push(a);
        p
    };
    call(&f, op::MODIFY_ATTRIBUTE, with(name_attr("new"))).unwrap();
    assert_eq!(f.kms.read().record(&t).unwrap().name.as_str(), "new");
    let before = fingerprint(&f);
    let e = call(&f, op::ADD_ATTRIBUTE, with(name_attr("other"))).unwrap_err();
    assert_eq!(e.0, reason::ILLEGAL_OPERATION, "{e:?}");
    let e = call(
        &f,
        op::DELETE_ATTRIBUTE,
        with(text_item(tags::ATTRIBUTE_NAME, attrs::NAME)),
    )
    .unwrap_err();
    assert_eq!(e.0, reason::ILLEGAL_OPERATION, "{e:?}");
    let e = call(
        &f,
        op::MODIFY_ATTRIBUTE,
        with(attribute(attrs::LENGTH, Value::Integer(128))),
    )
    .unwrap_err();
    assert_eq!(e.0, reason::PERMISSION_DENIED, "{e:?}");
    assert_eq!(fingerprint(&f), before);
    let d = |s: &str| attribute(attrs::DESCRIPTION, Value::TextString(s.into()));
    call(&f, op::ADD_ATTRIBUTE, with(d("tape pool 7"))).unwrap();
    assert_eq!(f.kms.read().record(&t).unwrap().description, "tape pool 7");
    assert_eq!(
        call(&f, op::ADD_ATTRIBUTE, with(d("x"))).unwrap_err().0,
        reason::ILLEGAL_OPERATION
    );
    call(&f, op::MODIFY_ATTRIBUTE, with(d("tape pool 8"))).unwrap();
    let got = call(
        &f,
        op::GET_ATTRIBUTES,
        with(text_item(tags::ATTRIBUTE_NAME, attrs::X_DESCRIPTION)),
    )
    .unwrap();
    assert_eq!(got.children(tags::ATTRIBUTE).count(), 1);
    call(
        &f,
        op::DELETE_ATTRIBUTE,
        with(text_item(tags::ATTRIBUTE_NAME, attrs::X_DESCRIPTION)),
    )
    .unwrap();
    assert_eq!(f.kms.read().record(&t).unwrap().description, "");
}

#[test]
fn the_policy_decides_per_client_and_group() {
    let f = fixture(Some(
        r#"{"admin": {"read": ["*"], "create": ["*"], "change": ["*"]},
            "reader": {"read": ["backup"]},
            "maker": {"create": ["backup"], "read": ["backup"], "default_group": "backup"}}"#,
    ));
    let t = uid_of(
        &call(
            &f,
            op::CREATE,
            create_payload(256, Some("k"), Some("backup")),
        )
        .unwrap(),
    );
    call(
        &f,
        op::CREATE,
        create_payload(256, Some("k"), Some("other")),
    )
    .unwrap();
    let before = fingerprint(&f);
    for (who, operation, payload) in [
        ("stranger", op::DISCOVER_VERSIONS, vec![]),
        ("stranger", op::GET_ATTRIBUTES, uid(&t)),
        (
            "reader",
            op::CREATE,
            create_payload(256, None, Some("backup")),
        ),
        ("reader", op::ACTIVATE, uid(&t)),
        ("maker", op::ACTIVATE, uid(&t)),
        ("maker", op::CREATE, create_payload(256, None, Some("new"))),
    ] {
        let e = call_as(&f, who, operation, payload).unwrap_err();
        assert_eq!(e.0, reason::PERMISSION_DENIED, "{who} {operation}: {e:?}");
    }
    assert_eq!(fingerprint(&f), before);
    // Locate shows only the groups a client may read.
    let all = call_as(&f, "admin", op::LOCATE, vec![name_attr("k")]).unwrap();
    assert_eq!(all.children(tags::UNIQUE_IDENTIFIER).count(), 2);
    let mine = call_as(&f, "reader", op::LOCATE, vec![name_attr("k")]).unwrap();
    assert_eq!(uid_of(&mine), t);
    assert_eq!(mine.children(tags::UNIQUE_IDENTIFIER).count(), 1);
    // The default group of the policy entry.
    let m = uid_of(&call_as(&f, "maker", op::CREATE, create_payload(256, None, None)).unwrap());
    let ks = f.kms.read();
    let g = &ks.record(&m).unwrap().group;
    assert_eq!(ks.group(g).unwrap().name.as_str(), "backup");
}

#[test]
fn malformed_requests_get_an_error_and_change_nothing() {
    let f = fixture(None);
    let me = client("admin");
    let before = fingerprint(&f);
    let good = message(2, vec![(op::CREATE, create_payload(256, Some("x"), None))]);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        good[..good.len() - 8].to_vec(),
        Ttlv::structure(tags::REQUEST_MESSAGE, vec![]).encode(),
        message(2, vec![]),
        message(9, vec![(op::CREATE, create_payload(256, None, None))]),
    ];
    let mut wrong_count = good.clone();
    // The Batch Count's value (after message, header and protocol version headers and the
    // version's 32 bytes): 2 items announced, 1 sent.
    let at = 8 + 8 + 8 + 32 + 8 + 3;
    assert_eq!(wrong_count[at], 1);
    wrong_count[at] = 2;
    cases.push(wrong_count);
    for bytes in &cases {
        let a = answer(&f.kms, &f.policy, &me, bytes);
        let out = send(&f, &me, bytes);
        assert_eq!(out.len(), 1, "{bytes:?}");
        assert_eq!(
            out[0].as_ref().unwrap_err().0,
            reason::INVALID_MESSAGE,
            "{out:?}"
        );
        assert!(a.close);
    }
    let e = call(&f, 0x15, vec![]).unwrap_err();
    assert_eq!(e.0, reason::OPERATION_NOT_SUPPORTED, "{e:?}");
    let e = call(&f, op::GET, vec![int_item(tags::UNIQUE_IDENTIFIER, 1)]).unwrap_err();
    assert_eq!(e.0, reason::INVALID_FIELD, "{e:?}");
    let e = call(
        &f,
        op::GET,
        vec![text_item(tags::UNIQUE_IDENTIFIER, "../etc")],
    )
    .unwrap_err();
    assert_eq!(e.0, reason::ITEM_NOT_FOUND, "{e:?}");
    assert_eq!(fingerprint(&f), before);
}

#[test]
fn a_batch_uses_the_id_placeholder_and_stops_at_a_failure() {
    let f = fixture(None);
    let out = send(
        &f,
        &client("admin"),
        &message(
            4,
            vec![
                (op::CREATE, create_payload(256, Some("b"), None)),
                (op::ACTIVATE, vec![]),
                (op::DESTROY, vec![]),
                (op::GET, vec![]),
            ],
        ),
    );
    assert_eq!(out.len(), 3, "{out:?}");
    let t = uid_of(out[0].as_ref().unwrap());
    assert_eq!(state_of(&f, &t), Some(State::Active));
    assert_eq!(out[2].as_ref().unwrap_err().0, reason::ILLEGAL_OPERATION);
}

#[test]
fn quiesced_changes_fail_and_get_works() {
    let f = fixture(None);
    let t = uid_of(&call(&f, op::CREATE, create_payload(256, Some("q"), None)).unwrap());
    call(&f, op::ACTIVATE, uid(&t)).unwrap();
    f.kms.quiesce(None).unwrap();
    let before = fingerprint(&f);
    for (operation, payload) in [
        (op::CREATE, create_payload(256, Some("r"), None)),
        (op::REVOKE, revoke_payload(&t, 1)),
        (op::MODIFY_ATTRIBUTE, {
            let mut p = uid(&t);
            p.push(name_attr("renamed"));
            p
        }),
    ] {
        let e = call(&f, operation, payload).unwrap_err();
        assert_eq!(e.0, reason::GENERAL_FAILURE, "{e:?}");
        assert!(e.1.contains("quiesced"), "{e:?}");
    }
    assert_eq!(fingerprint(&f), before);
    call(&f, op::GET, uid(&t)).unwrap();
    f.kms.unquiesce().unwrap();
    call(&f, op::REVOKE, revoke_payload(&t, 1)).unwrap();
}

#[test]
fn discover_versions_and_query() {
    let f = fixture(None);
    let all = call(&f, op::DISCOVER_VERSIONS, vec![]).unwrap();
    assert_eq!(all.children(tags::PROTOCOL_VERSION).count(), 5);
    let v = |minor| crate::kmip::message::Version { major: 1, minor }.to_ttlv();
    let two = crate::kmip::message::Version { major: 2, minor: 0 }.to_ttlv();
    let some = call(&f, op::DISCOVER_VERSIONS, vec![two, v(2), v(0)]).unwrap();
    assert_eq!(some.items(), &[v(2), v(0)]);
    let q = call(
        &f,
        op::QUERY,
        vec![
            enum_item(tags::QUERY_FUNCTION, 1),
            enum_item(tags::QUERY_FUNCTION, 3),
        ],
    )
    .unwrap();
    assert_eq!(q.children(tags::OPERATION).count(), super::SUPPORTED.len());
    assert!(q.child(tags::VENDOR_IDENTIFICATION).is_some());
}
