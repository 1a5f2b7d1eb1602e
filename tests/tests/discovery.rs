//! x402 discovery in real Envoy with the filter (filter/README.md, "Discovery"): a route's
//! `discovery` setting travels in its 402 as the v2 bazaar extension, `GET /.well-known/x402`
//! lists the host's paid routes and prices from the configuration (envoy/envoy.yaml), and both
//! validate against the x402 schema written from the spec text
//! (tests/schemas/x402-discovery.schema.json, sources in its `$comment`) with Python
//! `jsonschema` from `.venv`; each bazaar `info` also validates against its own `schema`, as a
//! facilitator must check before cataloguing. The schema is shown to refuse broken documents.

mod istio_support;

use istio_support::run_python;
use nanogate_protocol::nano::parse_xno;
use nanogate_tests::stack::{Stack, StackConfig, HOST};
use nanogate_tests::workspace_root;
use serde_json::{json, Value};

const WEATHER: &str = "/discover/weather";

/// Validates each `[schema, document]` pair: `schema` is a `$defs` name of the x402 schema, or
/// a JSON Schema itself (a bazaar extension's own).
const VALIDATE: &str = r#"
import json, sys, jsonschema
root = json.load(open(sys.argv[1], encoding='utf-8'))
jsonschema.Draft202012Validator.check_schema(root)
cases = json.load(open(sys.argv[2], encoding='utf-8'))
out = []
for schema, doc in cases:
    if isinstance(schema, str):
        schema = dict(root, **{'$ref': '#/$defs/' + schema})
    else:
        jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    out.append([e.message for e in v.iter_errors(doc)])
print(json.dumps(out))
"#;

/// One error list per `(schema, document)` case.
fn errors(cases: &[(Value, Value)]) -> Vec<Vec<String>> {
    let dir = std::env::temp_dir().join(format!(
        "nanogate-discovery-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let input = dir.join("cases.json");
    let pairs: Vec<Value> = cases.iter().map(|(s, d)| json!([s, d])).collect();
    std::fs::write(&input, serde_json::to_vec(&pairs).expect("json")).expect("write");
    let schema = workspace_root().join("tests/schemas/x402-discovery.schema.json");
    let out = run_python(
        VALIDATE,
        &[&schema.display().to_string(), &input.display().to_string()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&out).expect("validator output")
}

#[tokio::test]
async fn bazaar_metadata_and_the_well_known_listing_validate_against_the_x402_schema() {
    let s = Stack::start(StackConfig::default()).await;

    // The 402 of a route with discovery metadata carries the bazaar extension.
    let r = s.get(WEATHER, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text());
    let required = r.payment_required_json();
    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body, required, "the body and PAYMENT-REQUIRED say the same");
    let bazaar = required["extensions"]["bazaar"].clone();
    assert_eq!(bazaar["info"]["input"]["method"], "GET");
    assert_eq!(bazaar["info"]["input"]["queryParams"]["city"], "Lisbon");
    assert_eq!(bazaar["info"]["output"]["example"]["celsius"], 21);
    // A route without it carries none.
    let plain = s.get("/paid/plain", &[]).await.payment_required_json();
    assert!(plain.get("extensions").is_none(), "{plain}");

    // The listing: every paid route of the configuration, priced as its 402s are.
    let w = s.get("/.well-known/x402", &[]).await;
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(
        w.header("content-type").as_deref(),
        Some("application/json")
    );
    let listing: Value = serde_json::from_slice(&w.body).expect("JSON listing");
    assert_eq!(
        s.upstream_hits("/.well-known/x402"),
        0,
        "answered by the filter"
    );
    let items = listing["items"].as_array().expect("items");
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "paid",
            "slow",
            "tagged",
            "tagged-short",
            "preview",
            "weather",
            "passes-too",
            "passes",
            "other-passes",
            "tagged-passes"
        ],
        "paid routes only, in configuration order"
    );
    let weather = items
        .iter()
        .find(|i| i["metadata"]["name"] == "weather")
        .expect("weather listed");
    assert_eq!(weather["resource"], format!("http://{HOST}{WEATHER}"));
    assert_eq!(weather["resource"], required["resource"]["url"]);
    assert_eq!(
        weather["accepts"][0]["amount"],
        required["accepts"][0]["amount"]
    );
    assert_eq!(
        weather["accepts"][0]["amount"],
        json!(parse_xno("0.002").expect("price").to_string())
    );
    assert_eq!(weather["accepts"][0]["payTo"], json!(s.payee.to_address()));
    assert_eq!(weather["metadata"]["bazaar"], bazaar);

    // Everything validates; every bazaar info matches its own schema.
    let mut cases = vec![
        (json!("paymentRequired"), required.clone()),
        (json!("paymentRequired"), plain.clone()),
        (json!("discoveryList"), listing.clone()),
        (bazaar["schema"].clone(), bazaar["info"].clone()),
    ];
    for i in items {
        if let Some(b) = i["metadata"].get("bazaar") {
            cases.push((b["schema"].clone(), b["info"].clone()));
        }
    }
    let valid = cases.len();
    // And the schemas refuse what breaks them.
    let mut broken = required.clone();
    broken["extensions"]["bazaar"]["info"]["input"]["type"] = json!("ftp");
    cases.push((json!("paymentRequired"), broken));
    let mut broken = required.clone();
    broken["extensions"]["bazaar"]["info"]["input"]["bodyType"] = json!("json");
    cases.push((json!("paymentRequired"), broken));
    let mut broken = listing.clone();
    broken["items"][0]["accepts"][0]["amount"] = json!(5);
    cases.push((json!("discoveryList"), broken));
    let mut info = bazaar["info"].clone();
    info["input"]["queryParams"] = json!({});
    cases.push((bazaar["schema"].clone(), info));
    let found = errors(&cases);
    for (i, e) in found.iter().enumerate() {
        if i < valid {
            assert!(
                e.is_empty(),
                "case {i} should validate: {e:?}\n{}",
                cases[i].1
            );
        } else {
            assert!(!e.is_empty(), "case {i} should be refused: {}", cases[i].1);
        }
    }

    // The extension changes nothing in paying: the route sells as any other.
    let wallet = s.wallet();
    let (header, _) = s.pay_header(0, WEATHER, &wallet).await;
    let paid = s.get(WEATHER, &[("payment-signature", &header)]).await;
    assert_eq!(paid.status, 200, "{}\n{}", paid.text(), s.diagnostics());
    assert_eq!(s.upstream_hits(WEATHER), 1);
}
