//! The shipped Grafana dashboard (deploy/grafana/nanogate.json) references only metric names
//! that exist: the sidecar's, as its `/metrics` serves them, and the filter's, as Envoy's
//! `/stats/prometheus` serves the stat names the filter defines in code (the two share the
//! `nanogate_` namespace; the dashboard tells them apart by their Prometheus job)
//! (`nanogate_filter::metrics::Metric`). Both endpoints are read from a real stack (Envoy with
//! the filter, the sidecar, the devnet), after one paid request so labelled series exist.

use nanogate_filter::metrics::Metric;
use nanogate_tests::stack::{Stack, StackConfig};
use nanogate_tests::workspace_root;
use serde_json::Value;
use std::collections::BTreeSet;

/// Envoy's Prometheus name for a wasm counter `x` (its stat `wasmcustom.x` in `/stats`): Envoy
/// drops the `wasmcustom` namespace and adds no `envoy_` prefix there, and a counter keeps its
/// name (no `_total`).
fn envoy_name(stat: &str) -> String {
    stat.to_owned()
}

/// Every metric name in a Prometheus text (Envoy) or an OpenMetrics one (the sidecar): sample
/// names, and for OpenMetrics the series names each `# TYPE` line implies (counters `_total`,
/// histograms `_bucket`, `_sum`, `_count`), so a family with no sample yet still counts.
fn exposed(text: &str, openmetrics: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                _ if !openmetrics => &[],
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            for s in suffixes {
                if !name.ends_with(s) {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The metric names a PromQL expression uses: identifiers that start like ours or Envoy's,
/// outside label matchers' quoted values.
fn referenced(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("nanogate_") || word.starts_with("envoy_") {
            out.push(word.clone());
        }
        word.clear();
    }
    out
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_expression_scanner_sees_names_and_skips_label_values() {
    assert_eq!(
        referenced(
            r#"sum by (state) (rate(nanogate_x_total{state="nanogate_not_a_metric"}[5m])) / envoy_y"#
        ),
        vec!["nanogate_x_total".to_owned(), "envoy_y".to_owned()]
    );
    let text = "# TYPE nanogate_a counter\n# TYPE nanogate_h histogram\nenvoy_c{x=\"1\"} 3\n";
    assert!(!exposed(text, false).contains("nanogate_a_total"));
    let names = exposed(text, true);
    for n in [
        "nanogate_a",
        "nanogate_a_total",
        "nanogate_h_bucket",
        "nanogate_h_count",
        "envoy_c",
    ] {
        assert!(names.contains(n), "{n}");
    }
}

#[tokio::test]
async fn the_grafana_dashboard_references_only_metrics_that_exist() {
    let path = workspace_root().join("deploy/grafana/nanogate.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/nanogate.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");

    let s = Stack::start(StackConfig::default()).await;
    // One paid request: labelled series (rejections by reason, store latency by op) appear.
    let w = s.wallet();
    let (header, _) = s.pay_header(0, "/paid/grafana", &w).await;
    let r = s
        .get("/paid/grafana", &[("payment-signature", &header)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let sidecar = reqwest::get(format!("{}/metrics", s.gate(0).sidecar.base_url()))
        .await
        .expect("sidecar /metrics")
        .text()
        .await
        .expect("text");
    let envoy = reqwest::get(s.gate(0).envoy.admin_url("/stats/prometheus"))
        .await
        .expect("envoy /stats/prometheus")
        .text()
        .await
        .expect("text");
    let envoy_names = exposed(&envoy, false);
    // Every stat the filter defines in code is in Envoy's Prometheus output under the name the
    // dashboard uses for it.
    for m in Metric::all() {
        let name = envoy_name(&m.name());
        assert!(
            envoy_names.contains(&name),
            "{name} missing from Envoy's /stats/prometheus; its nanogate names: {:?}",
            envoy_names
                .iter()
                .filter(|n| n.contains("nanogate"))
                .collect::<Vec<_>>()
        );
    }
    let sidecar_names = exposed(&sidecar, true);
    let filter_names: BTreeSet<String> = Metric::all()
        .iter()
        .map(|m| envoy_name(&m.name()))
        .collect();

    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(
        all.len() >= 20,
        "the dashboard has its queries: {}",
        all.len()
    );
    let mut used = BTreeSet::new();
    for e in &all {
        // Sidecar and filter share the `nanogate_` namespace: each query names its job, and its
        // metrics must be that job's.
        let (known, source) = match (e.contains("$sidecar_job"), e.contains("$envoy_job")) {
            (true, false) => (&sidecar_names, "the sidecar's /metrics"),
            (false, true) => (&filter_names, "the filter's stats"),
            _ => panic!("a query must select exactly one of $sidecar_job, $envoy_job: {e}"),
        };
        let names = referenced(e);
        assert!(!names.is_empty(), "a query without a nanogate metric: {e}");
        for n in names {
            assert!(known.contains(&n), "{n} (in `{e}`) is not in {source}");
            used.insert(n);
        }
    }
    // Both sources are on the board.
    assert!(used.iter().any(|n| n.starts_with("nanogate_payments_raw")));
    assert!(used.iter().any(|n| filter_names.contains(n)));
}
