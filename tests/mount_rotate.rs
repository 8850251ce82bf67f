//! `examples/rotate.sh`: a key rotation with shell commands only, against a real mount.

mod support;

use support::mount::Mounted;

#[test]
fn rotate_example_script() {
    let m = Mounted::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rotate.sh");
    m.bash_ok("mkdir pool && echo '{\"name\": \"k1\", \"state\": \"active\"}' > pool/.create");
    let old_key = std::fs::read(m.p("pool/k1/key")).unwrap();

    let out = m.bash_ok(&format!("{script} \"$M\" pool"));
    let new = std::fs::read_link(m.p("pool/.active"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_ne!(new, "k1");
    assert!(out.contains(&format!("pool/.active -> {new}")), "{out}");
    assert!(out.contains("pool/k1 is now inactive"), "{out}");
    assert_eq!(m.state("pool/k1"), "inactive");
    assert_eq!(m.state(&format!("pool/{new}")), "active");
    let new_key = std::fs::read(m.p(&format!("pool/{new}/key"))).unwrap();
    assert_eq!(new_key.len(), 32);
    assert_ne!(new_key, old_key);
    // The old key still decrypts: readable while inactive.
    assert_eq!(std::fs::read(m.p("pool/k1/key")).unwrap(), old_key);

    // Twice in a row (same second): a second fresh name, the first rotated key steps down.
    let out = m.bash_ok(&format!("{script} \"$M\" pool"));
    assert!(
        out.contains(&format!("pool/{new} is now inactive")),
        "{out}"
    );
    assert_eq!(m.json("pool/.group.json")["records"], 3);

    // An unknown group is an error with a clear message.
    let err = m.bash_err(&format!("{script} \"$M\" nope"));
    assert!(err.contains("no group \"nope\""), "{err}");
}
