//! The tidy test: the docs, the references in code and the wire strings checked against the
//! source tree (see `xtask/src/tidy.rs` for what each check looks for). A failure lists every
//! offender as `path:line: what`.

use nanogate_protocol::contract::{self, Mechanism};
use nanogate_protocol::x402;
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

/// Literals that spell a wire word but mean something else: `(file, value, why)`.
const NOT_WIRE: &[(&str, &str, &str)] = &[
    (
        "filter/src/well_known.rs",
        "exact",
        "the kind of a route's path match (its `path.exact` setting), not the x402 scheme",
    ),
    (
        "sidecar/src/store/sqlite.rs",
        "tagged",
        "the name of a schema migration",
    ),
    (
        "sidecar/src/store/postgres.rs",
        "tagged",
        "the name of a schema migration",
    ),
    (
        "filter/src/config.rs",
        "tagged",
        "the route setting `tagged: true`, not the mechanism",
    ),
];

/// The wire strings protocol defines, read from its constants: nobody else may spell them.
fn wire_strings() -> WireStrings {
    use contract::{headers, paths};
    let exact = [
        // The sidecar's HTTP surface.
        paths::CHALLENGE_KEY,
        paths::PAY,
        paths::OUTCOME,
        paths::OUTCOMES,
        paths::SESSIONS,
        paths::VERIFY,
        paths::SETTLE,
        paths::SUPPORTED,
        paths::CHALLENGE,
        paths::ADMIN_PAYMENTS,
        paths::ADMIN_STRAY,
        // Filter ↔ sidecar headers.
        headers::SECRET,
        headers::VERDICT,
        headers::TRANSACTION,
        // x402 transport headers.
        x402::headers::PAYMENT_REQUIRED,
        x402::headers::PAYMENT_SIGNATURE,
        x402::headers::PAYMENT_RESPONSE,
        x402::headers::X_PAYMENT,
        x402::headers::X_PAYMENT_RESPONSE,
    ];
    let words = [contract::SCHEME_EXACT, contract::ASSET_XNO]
        .into_iter()
        .chain(Mechanism::ALL.map(Mechanism::as_str));
    WireStrings {
        exact: exact.map(String::from).into(),
        // Any other filter API path or nanogate header belongs in protocol too.
        prefixes: vec!["/v1/".into(), "x-nanogate-".into()],
        words: words.map(String::from).collect(),
        not_wire: NOT_WIRE
            .iter()
            .map(|(file, value, _why)| ((*file).to_owned(), (*value).to_owned()))
            .collect(),
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
