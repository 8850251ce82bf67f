//! Valid requests, mutated at random (bytes flipped, cut, an enumeration or integer changed):
//! the server never panics, an undecodable message is Invalid Message, and a request whose
//! every batch item failed has changed nothing at all.

use proptest::prelude::*;

use super::tests::{
    attribute, call, client, create_payload, fingerprint, fixture, message, name_attr, outcomes,
    revoke_payload, uid, uid_of,
};
use crate::kmip::answer;
use crate::kmip::attributes as attrs;
use crate::kmip::tags::{self, op, reason};
use crate::kmip::ttlv::{Ttlv, Value};

/// The requests mutated: one per operation that changes something, and a few reads, about
/// `tag` (an active key of group `kmip`) where they need a key.
fn requests(tag: &crate::keystore::KeyTag) -> Vec<Vec<u8>> {
    let with = |extra: Ttlv| {
        let mut p = uid(tag);
        p.push(extra);
        p
    };
    let key_block = Ttlv::structure(
        tags::SYMMETRIC_KEY,
        vec![Ttlv::structure(
            tags::KEY_BLOCK,
            vec![
                Ttlv::new(tags::KEY_FORMAT_TYPE, Value::Enumeration(1)),
                Ttlv::structure(
                    tags::KEY_VALUE,
                    vec![Ttlv::new(
                        tags::KEY_MATERIAL,
                        Value::ByteString(vec![9; 32]),
                    )],
                ),
                Ttlv::new(tags::CRYPTOGRAPHIC_ALGORITHM, Value::Enumeration(3)),
                Ttlv::new(tags::CRYPTOGRAPHIC_LENGTH, Value::Integer(256)),
            ],
        )],
    );
    let mut register = create_payload(256, Some("reg"), None);
    register.push(key_block);
    let items: Vec<(u32, Vec<Ttlv>)> = vec![
        (op::CREATE, create_payload(256, Some("new"), Some("other"))),
        (op::REGISTER, register),
        (op::ACTIVATE, uid(tag)),
        (
            op::REVOKE,
            revoke_payload(tag, tags::REVOCATION_KEY_COMPROMISE),
        ),
        (op::DESTROY, uid(tag)),
        (op::MODIFY_ATTRIBUTE, with(name_attr("renamed"))),
        (
            op::ADD_ATTRIBUTE,
            with(attribute(attrs::DESCRIPTION, Value::TextString("d".into()))),
        ),
        (op::LOCATE, vec![name_attr("k")]),
        (op::GET, uid(tag)),
    ];
    items
        .into_iter()
        .map(|(o, p)| message(2, vec![(o, p)]))
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Cut { at: usize },
    Set { at: usize, byte: u8 },
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if bytes.is_empty() {
            break;
        }
        match *m {
            Mutation::Flip { at, bit } => {
                let i = at % bytes.len();
                bytes[i] ^= 1 << (bit % 8)
            }
            Mutation::Cut { at } => bytes.truncate(at % bytes.len()),
            Mutation::Set { at, byte } => {
                let i = at % bytes.len();
                bytes[i] = byte
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|at| Mutation::Cut { at }),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_mutated_request_that_fails_changes_nothing(
        which in 0usize..9,
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let f = fixture(None);
        let tag = uid_of(&call(&f, op::CREATE, create_payload(256, Some("k"), None)).unwrap());
        call(&f, op::ACTIVATE, uid(&tag)).unwrap();
        let bytes = mutate(requests(&tag).swap_remove(which), &ms);
        let before = fingerprint(&f);
        let me = client("admin");
        let a = answer(&f.kms, &f.policy, &me, &bytes);
        let outcomes = outcomes(&a.bytes);
        prop_assert!(!outcomes.is_empty());
        if a.close {
            prop_assert_eq!(outcomes.len(), 1);
            prop_assert!(matches!(
                &outcomes[0],
                Err((r, _)) if *r == reason::INVALID_MESSAGE || *r == reason::FEATURE_NOT_SUPPORTED
                    || *r == reason::MISSING_DATA || *r == reason::INVALID_FIELD
            ), "{:?}", outcomes);
        }
        if outcomes.iter().all(|o| o.is_err()) {
            prop_assert_eq!(fingerprint(&f), before, "{:?}", outcomes);
        }
    }
}
