//! `GET /.well-known/x402`: every paid route the request's host serves, with its price and its
//! discovery metadata ([`crate::discovery`]), as an x402 discovery listing, generated from the
//! configuration (filter/README.md, "Discovery"). Rare traffic: rendered per request.

use crate::config::{Config, Price, Route, RouteKind};
use crate::jsontext::{push_json_str, push_num, push_offer_terms};
use crate::routes::{normalize_host, PathMatch};

/// One paid route as a discovery item (x402's discovery listing shape), appended to `out`.
/// Written as text with [`crate::jsontext`]: building `serde_json` values costs the module
/// more code than this.
fn push_item(out: &mut String, cfg: &Config, base: &str, route: &Route, price: &Price) {
    let (kind, path) = match &route.path {
        PathMatch::Exact(p) => ("exact", p.as_str()),
        PathMatch::Prefix(p) => ("prefix", p.as_str()),
        PathMatch::Regex(re) => ("regex", re.as_str()),
    };
    out.push_str("{\"resource\":");
    let mut resource = base.to_owned();
    if kind != "regex" {
        resource.push_str(path);
    }
    push_json_str(out, &resource);
    out.push_str(",\"type\":\"http\",\"x402Version\":2,\"accepts\":[{");
    push_offer_terms(
        out,
        &cfg.network,
        price.amount_raw,
        &price.pay_to.address,
        price.max_timeout_secs,
    );
    out.push_str(",\"extra\":{}}],\"metadata\":{\"name\":");
    push_json_str(out, &route.name);
    out.push_str(",\"path\":{");
    push_json_str(out, kind);
    out.push(':');
    push_json_str(out, path);
    out.push('}');
    if price.tagged.is_some() {
        // Also payable by a plain send of a per-request amount (its 402 offers a session).
        out.push_str(",\"tagged\":true");
    }
    if let Some(ms) = &route.methods {
        out.push_str(",\"methods\":[");
        for (i, m) in ms.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(out, m);
        }
        out.push(']');
    }
    for (key, value) in [
        ("description", &price.description),
        ("mimeType", &price.mime_type),
    ] {
        if let Some(v) = value {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            push_json_str(out, v);
        }
    }
    // The route's extensions object (`{"bazaar":…}`), its members merged into `metadata`.
    if let Some(members) = price
        .discovery
        .as_ref()
        .and_then(|d| d.text.strip_prefix('{'))
        .and_then(|t| t.strip_suffix('}'))
        .filter(|m| !m.is_empty())
    {
        out.push(',');
        out.push_str(members);
    }
    out.push_str("}}");
}

/// The `GET /.well-known/x402` document for a request to `scheme://authority`: every paid
/// route this host serves.
pub fn document(cfg: &Config, scheme: &str, authority: &str) -> Vec<u8> {
    let host = normalize_host(authority);
    let base = crate::challenge::resource_url_of_canonical(scheme, authority, "");
    let mut out = String::with_capacity(512);
    out.push_str("{\"x402Version\":2,\"items\":[");
    let mut n = 0u128;
    for r in &cfg.routes {
        let RouteKind::Paid(p) = &r.kind else {
            continue;
        };
        if r.host.as_ref().is_some_and(|h| !h.matches(&host, true)) {
            continue;
        }
        if n > 0 {
            out.push(',');
        }
        push_item(&mut out, cfg, &base, r, p);
        n += 1;
    }
    out.push_str("],\"pagination\":{\"limit\":");
    push_num(&mut out, n);
    out.push_str(",\"offset\":0,\"total\":");
    push_num(&mut out, n);
    out.push_str("}}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::{json, Value};

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
        let cfg = config(json!({"description": "Search", "methods": ["get", "head"],
            "discovery": {"input": {"method": "GET"}}}));
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
        assert_eq!(items[0]["metadata"]["methods"], json!(["GET", "HEAD"]));
        assert_eq!(items[0]["metadata"]["path"], json!({"exact": "/search"}));
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
