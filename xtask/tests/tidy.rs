//! The tidy test: the docs, the references in code and the wire strings checked against the
//! source tree (see `xtask/src/tidy.rs` for what each check looks for). A failure lists every
//! offender as `path:line: what`.

use nanogate_xtask::tidy::{check_references, check_wire_literals, report, Tree, WireStrings};
use std::path::Path;

fn tree() -> Tree {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root");
    Tree::from_disk(root).expect("the source tree is readable")
}

#[test]
fn references_point_at_docs_sections_and_invariants_that_exist() {
    let offences = check_references(&tree());
    assert!(
        offences.is_empty(),
        "{} reference(s) to something not in the repository:\n{}",
        offences.len(),
        report(&offences)
    );
}

/// The wire strings that `protocol` defines and nobody else may spell.
fn wire_strings() -> WireStrings {
    WireStrings {
        exact: [
            "PAYMENT-REQUIRED",
            "PAYMENT-SIGNATURE",
            "PAYMENT-RESPONSE",
            "X-PAYMENT",
            "X-PAYMENT-RESPONSE",
        ]
        .map(String::from)
        .into(),
        prefixes: vec!["/v1/".into(), "x-nanogate-".into()],
        words: ["exact", "XNO", "block", "tagged"].map(String::from).into(),
    }
}

#[test]
fn wire_strings_are_spelt_only_in_protocol() {
    let offences = check_wire_literals(&tree(), &wire_strings());
    assert!(
        offences.is_empty(),
        "{} wire string(s) spelt outside protocol/ (use its constants):\n{}",
        offences.len(),
        report(&offences)
    );
}
