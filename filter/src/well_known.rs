//! `GET /.well-known/x402`: every paid route the request's host serves, with its price and its
//! discovery metadata ([`crate::discovery`]), as an x402 discovery listing, generated from the
//! configuration (filter/README.md, "Discovery"). Rare traffic: rendered per request.

use crate::config::{Config, Price, Route, RouteKind};
use crate::routes::{normalize_host, PathMatch};
use nanogate_protocol::contract::{ASSET_XNO, SCHEME_EXACT};
use serde_json::{json, Map, Value};

/// One paid route as a discovery item (x402's discovery listing shape).
fn item(cfg: &Config, base: &str, route: &Route, price: &Price) -> Value {
    let (resource, path) = match &route.path {
        PathMatch::Exact(p) => (format!("{base}{p}"), json!({"exact": p})),
        PathMatch::Prefix(p) => (format!("{base}{p}"), json!({"prefix": p})),
        PathMatch::Regex(re) => (base.to_owned(), json!({"regex": re.as_str()})),
    };
    let accepts = vec![json!({
        "scheme": SCHEME_EXACT, "network": cfg.network, "amount": price.amount_raw.to_string(),
        "asset": ASSET_XNO, "payTo": price.pay_to.address,
        "maxTimeoutSeconds": price.max_timeout_secs, "extra": {}
    })];
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(route.name));
    metadata.insert("path".into(), path);
    if price.tagged.is_some() {
        // Also payable by a plain send of a per-request amount (its 402 offers a session).
        metadata.insert("tagged".into(), json!(true));
    }
    if let Some(ms) = &route.methods {
        metadata.insert("methods".into(), json!(ms));
    }
    if let Some(d) = &price.description {
        metadata.insert("description".into(), json!(d));
    }
    if let Some(m) = &price.mime_type {
        metadata.insert("mimeType".into(), json!(m));
    }
    if let Some(d) = &price.discovery {
        for (k, v) in &d.extensions {
            metadata.insert(k.clone(), v.clone());
        }
    }
    json!({"resource": resource, "type": "http", "x402Version": 2, "accepts": accepts,
           "metadata": metadata})
}

/// The `GET /.well-known/x402` document for a request to `scheme://authority`: every paid
/// route this host serves.
pub fn document(cfg: &Config, scheme: &str, authority: &str) -> Vec<u8> {
    let host = normalize_host(authority);
    let base = crate::challenge::resource_url_of_canonical(scheme, authority, "");
    let items: Vec<Value> = cfg
        .routes
        .iter()
        .filter(|r| r.host.as_ref().is_none_or(|h| h.matches(&host, true)))
        .filter_map(|r| match &r.kind {
            RouteKind::Paid(p) => Some(item(cfg, &base, r, p)),
            RouteKind::Free => None,
        })
        .collect();
    let n = items.len();
    json!({"x402Version": 2, "items": items,
           "pagination": {"limit": n, "offset": 0, "total": n}})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(route: Value) -> Config {
        let mut r = json!({"name": "r", "path": {"exact": "/search"}, "price": "0.002"});
        if let (Value::Object(r), Value::Object(extra)) = (&mut r, route) {
            r.extend(extra);
        }
        let cfg = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet",
            "payTo": crate::tests_support::POOL_A,
            "routes": [r, {"name": "free", "path": {"prefix": "/"}, "free": true}]
        });
        parse(cfg.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_well_known_document_lists_the_hosts_paid_routes() {
        let cfg =
            config(json!({"description": "Search", "discovery": {"input": {"method": "GET"}}}));
        let doc: Value =
            serde_json::from_slice(&document(&cfg, "https", "API.example:8443")).unwrap();
        assert_eq!(doc["x402Version"], 2);
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "the free route is not listed");
        assert_eq!(items[0]["resource"], "https://api.example:8443/search");
        assert_eq!(
            items[0]["accepts"][0]["amount"],
            "2000000000000000000000000000"
        );
        assert_eq!(
            items[0]["accepts"][0]["payTo"],
            crate::tests_support::POOL_A
        );
        assert_eq!(items[0]["metadata"]["description"], "Search");
        assert_eq!(
            items[0]["metadata"]["bazaar"]["info"]["input"]["method"],
            "GET"
        );
        assert_eq!(doc["pagination"]["total"], 1);
        // Off when the operator says so.
        let mut off = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet", "payTo": crate::tests_support::POOL_A, "wellKnown": false,
            "routes": [{"path": {"exact": "/a"}, "price": "1"}]
        });
        assert!(!parse(off.to_string().as_bytes()).unwrap().well_known);
        off["wellKnown"] = json!("no");
        assert!(parse(off.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .contains("wellKnown"));
    }
}
