//! The shipped Istio/Kubernetes kit (`envoy/istio/`) validates and hangs together:
//! - core Kubernetes objects pass `kubernetes-validate --strict` (offline, bundled schemas) for
//!   the oldest and newest Kubernetes versions we claim, and the validator does catch mistakes;
//! - both WasmPlugins pass our JSON schema (`wasmplugin.schema.json`: the Istio API plus the
//!   filter's plugin configuration) with Python `jsonschema`, and the schema catches mistakes;
//! - the objects agree with each other (cluster name ↔ Service, ports, labels, Secret keys,
//!   ConfigMap ↔ mount), the kustomization lists every manifest, and the sidecar accepts the
//!   ConfigMap's TOML.
//!
//! Tools come from `.venv` (`cargo xtask test` installs them); a missing tool fails the test.

mod istio_support;

use istio_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The proxy environment variable the WasmPlugins read the filter secret from.
const FILTER_SECRET_ENV: &str = "NANOGATE_FILTER_SECRET";

/// Kubernetes versions the core objects are validated against (oldest we claim, newest bundled).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn kustomization() -> Value {
    manifest("kustomization.yaml")
}

/// The kustomization's resources, as listed.
fn resources() -> Vec<String> {
    kustomization()["resources"]
        .as_array()
        .expect("kustomization resources")
        .iter()
        .map(|r| r.as_str().expect("resource is a file name").to_owned())
        .collect()
}

/// The Istio security objects (validated with `security.schema.json`).
const SECURITY: [&str; 2] = [
    "sidecar-peerauthentication.yaml",
    "sidecar-authorizationpolicy.yaml",
];

/// Files holding core Kubernetes objects: the kustomization's, minus the WasmPlugins and the
/// Istio security objects, plus the Secret examples.
fn core_object_files() -> Vec<String> {
    let mut files: Vec<String> = resources()
        .into_iter()
        .filter(|f| !WASMPLUGINS.contains(&f.as_str()) && !SECURITY.contains(&f.as_str()))
        .collect();
    files.push("secret.example.yaml".into());
    files.push("proxy-secret.example.yaml".into());
    files
}

/// `kubernetes-validate --strict -k <version> <files>`: (success, output).
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubernetes-validate: {e} ({RUN_XTASK})"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nanogate-istio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn core_objects_pass_kubernetes_validate_strict() {
    let files = core_object_files();
    assert!(files.len() >= 7, "{files:?}");
    let paths: Vec<PathBuf> = files.iter().map(|f| istio_dir().join(f)).collect();
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = kubernetes_validate(version, &paths);
        assert!(
            ok,
            "kubernetes-validate {version} refused the manifests:\n{out}"
        );
        // Every file validated for real: a kind without a schema is only a WARN.
        assert!(
            !out.contains("WARN") && !out.contains("ERROR"),
            "kubernetes-validate {version}:\n{out}"
        );
        for f in &files {
            assert!(
                out.lines()
                    .any(|l| l.contains(f.as_str()) && l.contains("passed")),
                "{f} not reported as passed for {version}:\n{out}"
            );
        }
    }
}

#[test]
fn kubernetes_validate_catches_a_misspelt_field_and_a_wrong_type() {
    let dir = scratch("kv");
    let text = std::fs::read_to_string(istio_dir().join("sidecar-deployment.yaml"))
        .expect("deployment manifest");
    let typo = text.replacen("  replicas: 2", "  replica: 2", 1);
    let wrong_type = text.replacen("containerPort: 8402", "containerPort: eighty", 1);
    assert_ne!(typo, text);
    assert_ne!(wrong_type, text);
    for (name, body) in [("typo.yaml", typo), ("type.yaml", wrong_type)] {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        let (ok, out) = kubernetes_validate(KUBERNETES_VERSIONS[1], &[p]);
        assert!(!ok, "{name} should fail validation:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const VALIDATE_WITH_SCHEMA: &str = "import json, sys, jsonschema\n\
schema = json.load(open(sys.argv[1], encoding='utf-8'))\n\
jsonschema.Draft202012Validator.check_schema(schema)\n\
v = jsonschema.Draft202012Validator(schema)\n\
docs = json.load(open(sys.argv[2], encoding='utf-8'))\n\
print(json.dumps([[e.message for e in v.iter_errors(d)] for d in docs]))\n";

/// Validates `docs` with `envoy/istio/wasmplugin.schema.json`; one error list per document.
fn schema_errors(docs: &[Value]) -> Vec<Vec<String>> {
    errors_against("wasmplugin.schema.json", docs)
}

/// Validates `docs` with `envoy/istio/<schema>`; one error list per document.
fn errors_against(schema: &str, docs: &[Value]) -> Vec<Vec<String>> {
    let dir = scratch("schema");
    let input = dir.join("docs.json");
    std::fs::write(&input, serde_json::to_vec(docs).expect("json")).expect("write");
    let schema = istio_dir().join(schema);
    let out = run_python(
        VALIDATE_WITH_SCHEMA,
        &[&schema.display().to_string(), &input.display().to_string()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&out).expect("validator output")
}

#[test]
fn wasmplugins_pass_our_schema_and_the_schema_catches_mistakes() {
    let plugins: Vec<Value> = WASMPLUGINS.iter().map(|f| manifest(f)).collect();
    for (f, errors) in WASMPLUGINS.iter().zip(schema_errors(&plugins)) {
        assert!(errors.is_empty(), "{f}: {errors:?}");
    }

    // Each mutation of the gateway plugin must be refused.
    let base = plugins[0].clone();
    let mutate = |ptr: &str, v: Option<Value>| {
        let mut d = base.clone();
        let (parent, key) = ptr.rsplit_once('/').expect("pointer");
        let obj = d
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{parent}"));
        match v {
            Some(v) => obj.insert(key.to_owned(), v),
            None => obj.remove(key),
        };
        d
    };
    let cases = [
        ("no url", mutate("/spec/url", None)),
        (
            "Envoy's spelling",
            mutate("/spec/failStrategy", Some(json!("FAIL_CLOSED"))),
        ),
        (
            "unknown phase",
            mutate("/spec/phase", Some(json!("AUTHORIZATION"))),
        ),
        (
            "short sha256",
            mutate("/spec/sha256", Some(json!("abc123"))),
        ),
        (
            "misspelt field",
            mutate("/spec/pluginname", Some(json!("nanogate"))),
        ),
        (
            "selector and targetRefs",
            mutate(
                "/spec/targetRefs",
                Some(
                    json!([{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]),
                ),
            ),
        ),
        ("no sidecar", mutate("/spec/pluginConfig/sidecar", None)),
        (
            "filter setting misspelt",
            mutate("/spec/pluginConfig/sidecar/timeout", Some(json!(5))),
        ),
        (
            "short secret",
            mutate("/spec/pluginConfig/sidecar/secret", Some(json!("short"))),
        ),
        (
            "secret and secretEnv",
            mutate(
                "/spec/pluginConfig/sidecar/secret",
                Some(json!("a-literal-secret-0123456789")),
            ),
        ),
        (
            "no secret at all",
            mutate("/spec/pluginConfig/sidecar/secretEnv", None),
        ),
        (
            "secretEnv not a variable name",
            mutate(
                "/spec/pluginConfig/sidecar/secretEnv",
                Some(json!("NOT A NAME")),
            ),
        ),
        (
            "price and priceRaw",
            mutate("/spec/pluginConfig/routes/1/priceRaw", Some(json!("5"))),
        ),
        (
            "paid route without a price",
            mutate("/spec/pluginConfig/routes/1/price", None),
        ),
        (
            "price as a number",
            mutate("/spec/pluginConfig/routes/1/price", Some(json!(0.001))),
        ),
        (
            "caseSensitive not a boolean",
            mutate(
                "/spec/pluginConfig/routes/1/caseSensitive",
                Some(json!("yes")),
            ),
        ),
        (
            "pathParams misspelt",
            mutate(
                "/spec/pluginConfig/routes/1/pathParams",
                Some(json!("drop")),
            ),
        ),
        (
            "discovery without input",
            mutate("/spec/pluginConfig/routes/1/discovery/input", None),
        ),
        (
            "discovery method unknown",
            mutate(
                "/spec/pluginConfig/routes/1/discovery/input/method",
                Some(json!("TRACE")),
            ),
        ),
        (
            "wellKnown not a boolean",
            mutate("/spec/pluginConfig/wellKnown", Some(json!("yes"))),
        ),
        (
            "network not CAIP-2",
            mutate("/spec/pluginConfig/network", Some(json!("mainnet"))),
        ),
        (
            "HOST env with a value",
            mutate(
                "/spec/vmConfig",
                Some(json!({"env": [{"name": "X", "valueFrom": "HOST", "value": "y"}]})),
            ),
        ),
    ];
    let docs: Vec<Value> = cases.iter().map(|(_, d)| d.clone()).collect();
    for ((name, _), errors) in cases.iter().zip(schema_errors(&docs)) {
        assert!(!errors.is_empty(), "the schema accepted: {name}");
    }
}

#[test]
fn wasmplugins_are_fail_closed_authz_payment_gates_on_one_image() {
    let plugins: Vec<Value> = WASMPLUGINS.iter().map(|f| manifest(f)).collect();
    let version = env!("CARGO_PKG_VERSION");
    for (f, p) in WASMPLUGINS.iter().zip(&plugins) {
        let s = &p["spec"];
        assert_eq!(p["apiVersion"], "extensions.istio.io/v1alpha1", "{f}");
        assert_eq!(p["metadata"]["namespace"], "istio-system", "{f}");
        assert_eq!(s["phase"], "AUTHZ", "{f}");
        assert_eq!(s["failStrategy"], "FAIL_CLOSE", "{f}");
        assert_eq!(s["type"], "HTTP", "{f}");
        // Envoy root_id: the filter registers its root context as "nanogate" (envoy/envoy.yaml
        // uses the same; the OCI runtime config of `cargo xtask oci` names it too).
        assert_eq!(s["pluginName"], "nanogate", "{f}");
        let url = s["url"].as_str().expect("url");
        assert!(
            url.starts_with("oci://") && url.ends_with(&format!("/nanogate-filter:{version}")),
            "{f}: {url}"
        );
        let sha = s["sha256"].as_str().expect("sha256");
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{f}: {sha}"
        );
        assert_eq!(sha, SHA256_PLACEHOLDER, "{f}: documented placeholder");
        let c = &s["pluginConfig"];
        assert_eq!(c["payTo"], PAY_TO_PLACEHOLDER, "{f}");
        // The filter secret comes from the proxy's environment, never from the WasmPlugin.
        assert!(
            c["sidecar"].get("secret").is_none(),
            "{f}: a literal secret"
        );
        assert_eq!(c["sidecar"]["secretEnv"], FILTER_SECRET_ENV, "{f}");
        assert_eq!(
            s["vmConfig"]["env"],
            json!([{"name": FILTER_SECRET_ENV, "valueFrom": "HOST"}]),
            "{f}"
        );
    }
    // The proxies' Secret example names the same variable and key.
    let proxy_secret = manifest("proxy-secret.example.yaml");
    assert_eq!(proxy_secret["kind"], "Secret");
    assert_eq!(proxy_secret["metadata"]["namespace"], "istio-system");
    assert_eq!(
        proxy_secret["stringData"]["filter-secret"],
        SECRET_PLACEHOLDER
    );
    let text = std::fs::read_to_string(istio_dir().join("proxy-secret.example.yaml"))
        .expect("proxy secret example");
    assert!(
        text.contains(&format!("name: {FILTER_SECRET_ENV}")),
        "{text}"
    );
    let (gw, wl) = (&plugins[0]["spec"], &plugins[1]["spec"]);
    assert_eq!(gw["url"], wl["url"], "one image for both");
    assert_eq!(gw["sha256"], wl["sha256"], "one image for both");
    assert_eq!(
        gw["pluginConfig"]["sidecar"], wl["pluginConfig"]["sidecar"],
        "one sidecar for both"
    );
    assert_eq!(gw["pluginConfig"]["network"], wl["pluginConfig"]["network"]);
    assert_eq!(
        gw["selector"]["matchLabels"],
        json!({"istio": "ingressgateway"})
    );
    assert_eq!(
        wl["selector"]["matchLabels"],
        json!({"nanogate.io/paywall": "enabled"})
    );
    // In workload sidecars only inbound requests are gated (never the pod's own calls out).
    assert_eq!(wl["match"], json!([{"mode": "SERVER"}]));
    assert!(gw.get("match").is_none(), "a gateway has no inbound side");
}

#[test]
fn sidecar_cluster_follows_istio_naming_of_the_shipped_service() {
    let svc = manifest("sidecar-service.yaml");
    let (name, ns) = (
        svc["metadata"]["name"].as_str().expect("name"),
        svc["metadata"]["namespace"].as_str().expect("namespace"),
    );
    let ports = svc["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1);
    let port = ports[0]["port"].as_u64().expect("port");
    let want = istio_cluster_name(port, name, ns);
    assert_eq!(
        want,
        "outbound|8402||nanogate-sidecar.nanogate.svc.cluster.local"
    );
    for f in WASMPLUGINS {
        let sidecar = &manifest(f)["spec"]["pluginConfig"]["sidecar"];
        assert_eq!(sidecar["cluster"], want.as_str(), "{f}");
        assert_eq!(
            sidecar["authority"],
            format!("{name}.{ns}.svc.cluster.local"),
            "{f}"
        );
    }
    // Istio must treat the port as HTTP.
    assert_eq!(ports[0]["appProtocol"], "http");
}

#[test]
fn kustomization_ties_every_manifest_together() {
    let k = kustomization();
    assert_eq!(k["kind"], "Kustomization");
    assert!(
        k.get("namespace").is_none(),
        "objects keep their own namespaces (nanogate, istio-system)"
    );
    let listed = resources();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no resource listed twice");
    let mut on_disk: Vec<String> = std::fs::read_dir(istio_dir())
        .expect("envoy/istio")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .filter(|n| n != "kustomization.yaml" && !n.ends_with(".example.yaml"))
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "every manifest (except the Secret examples) is listed"
    );
    // Namespaces: the sidecar's objects in the Namespace we ship, the plugins in Istio's root.
    let ns = manifest("namespace.yaml");
    let sidecar_ns = ns["metadata"]["name"].as_str().expect("namespace name");
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    for f in &listed {
        let obj = manifest(f);
        let kind = obj["kind"].as_str().expect("kind");
        match kind {
            "Namespace" => {}
            "WasmPlugin" => assert_eq!(obj["metadata"]["namespace"], "istio-system", "{f}"),
            _ => assert_eq!(obj["metadata"]["namespace"], sidecar_ns, "{f}"),
        }
    }
}

#[test]
fn security_objects_pass_our_schema_and_the_schema_catches_mistakes() {
    let objects: Vec<Value> = SECURITY.iter().map(|f| manifest(f)).collect();
    for (f, errors) in SECURITY
        .iter()
        .zip(errors_against("security.schema.json", &objects))
    {
        assert!(errors.is_empty(), "{f}: {errors:?}");
    }
    let (pa, ap) = (objects[0].clone(), objects[1].clone());
    let set = |mut d: Value, ptr: &str, v: Value| {
        *d.pointer_mut(ptr).unwrap_or_else(|| panic!("{ptr}")) = v;
        d
    };
    let cases = [
        (
            "unknown mTLS mode",
            set(pa.clone(), "/spec/mtls/mode", json!("STRICTER")),
        ),
        (
            "misspelt field",
            set(pa.clone(), "/spec/mtls", json!({"mod": "STRICT"})),
        ),
        (
            "wrong kind",
            set(pa.clone(), "/kind", json!("PeerAuthorization")),
        ),
        (
            "unknown action",
            set(ap.clone(), "/spec/action", json!("PERMIT")),
        ),
        (
            "principals not a list",
            set(
                ap.clone(),
                "/spec/rules/0/from/0/source/principals",
                json!("x"),
            ),
        ),
        (
            "misspelt operation field",
            set(
                ap.clone(),
                "/spec/rules/0/to/0/operation",
                json!({"path": ["/v1/pay"]}),
            ),
        ),
        (
            "PeerAuthentication spec on an AuthorizationPolicy",
            set(ap.clone(), "/spec", pa["spec"].clone()),
        ),
    ];
    let docs: Vec<Value> = cases.iter().map(|(_, d)| d.clone()).collect();
    for ((name, _), errors) in cases
        .iter()
        .zip(errors_against("security.schema.json", &docs))
    {
        assert!(!errors.is_empty(), "the schema accepted: {name}");
    }
}

/// Only mTLS reaches the sidecar; the filter API only from the filter's proxies; the
/// facilitator and admin APIs only with a bearer token.
#[test]
fn only_the_filters_proxies_reach_the_filter_api_and_only_over_mtls() {
    let deploy = manifest("sidecar-deployment.yaml");
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let pa = manifest("sidecar-peerauthentication.yaml");
    assert_eq!(pa["spec"]["mtls"]["mode"], "STRICT");
    assert!(pa["spec"].get("portLevelMtls").is_none(), "no port exempt");
    let ap = manifest("sidecar-authorizationpolicy.yaml");
    assert_eq!(ap["spec"]["action"], "ALLOW");
    for obj in [&pa, &ap] {
        assert_eq!(obj["metadata"]["namespace"], "nanogate");
        let sel = obj["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("selects the sidecar's pods");
        assert!(!sel.is_empty());
        for (k, v) in sel {
            assert_eq!(&pod_labels[k], v, "selector {k} matches the sidecar's pods");
        }
    }
    let rules = ap["spec"]["rules"].as_array().expect("rules");
    // Every path the filter calls, from the contract: a new one the policy forgets would be
    // refused by the mesh (as pass usage reports once were).
    let filter_paths = json!(nanogate_protocol::contract::paths::FILTER);
    let filter_rule = rules
        .iter()
        .find(|r| r["to"][0]["operation"]["paths"] == filter_paths)
        .expect("a rule for the filter API");
    let principals = filter_rule["from"][0]["source"]["principals"]
        .as_array()
        .expect("principals");
    assert!(principals.contains(&json!(
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    )));
    assert!(principals.iter().all(|p| p
        .as_str()
        .is_some_and(|p| p.starts_with("cluster.local/ns/") && p.contains("/sa/"))));
    assert_eq!(filter_rule["from"].as_array().map(Vec::len), Some(1));
    // Every other rule needs a bearer token and never opens the filter API.
    for r in rules.iter().filter(|r| *r != filter_rule) {
        assert_eq!(
            r["when"],
            json!([{"key": "request.headers[authorization]", "values": ["Bearer *"]}]),
            "{r}"
        );
        for p in r["to"][0]["operation"]["paths"].as_array().expect("paths") {
            assert!(!filter_paths.as_array().expect("list").contains(p), "{r}");
            assert_ne!(p, "/metrics", "{r}");
        }
    }
}

fn env_of(container: &Value, name: &str) -> Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn sidecar_objects_agree_on_labels_ports_config_and_secret_keys() {
    let dep = manifest("sidecar-deployment.yaml");
    let svc = manifest("sidecar-service.yaml");
    let cm = manifest("sidecar-configmap.yaml");
    let pdb = manifest("sidecar-pdb.yaml");
    let sa = manifest("sidecar-serviceaccount.yaml");
    let secret = manifest("secret.example.yaml");

    let tpl_labels = dep["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("template labels");
    let selects = |sel: &Value, what: &str| {
        for (k, v) in sel.as_object().unwrap_or_else(|| panic!("{what} selector")) {
            assert_eq!(tpl_labels.get(k), Some(v), "{what} selects {k}={v}");
        }
    };
    selects(&dep["spec"]["selector"]["matchLabels"], "Deployment");
    selects(&svc["spec"]["selector"], "Service");
    selects(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );

    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Service targetPort → the container port the sidecar listens on.
    let target = svc["spec"]["ports"][0]["targetPort"]
        .as_str()
        .expect("named");
    let cport = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == target)
        .unwrap_or_else(|| panic!("no container port named {target}"));
    let toml_text = cm["data"]["sidecar.toml"].as_str().expect("sidecar.toml");
    let cfg = nanogate_sidecar::config::Config::from_toml(toml_text).expect("TOML parses");
    assert_eq!(
        cport["containerPort"].as_u64(),
        Some(u64::from(cfg.listen.port()))
    );
    assert!(
        cfg.listen.ip().is_unspecified(),
        "reachable through the Service"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], target, "{probe}");
    }

    // ConfigMap mounted where NANOGATE_CONFIG points.
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("and it is mounted");
    assert_eq!(
        env_of(c, "NANOGATE_CONFIG")["value"],
        format!(
            "{}/sidecar.toml",
            mount["mountPath"].as_str().expect("path")
        )
    );

    // Secret references: the example Secret has every key; only the facilitator token is optional.
    let keys = secret["stringData"].as_object().expect("stringData");
    for (var, key, optional) in [
        ("NANOGATE_FILTER_SECRET", "filter-secret", false),
        ("NANOGATE_CHALLENGE_SECRET", "challenge-secret", false),
        ("NANOGATE_DATABASE_URL", "database-url", false),
        ("NANOGATE_FACILITATOR_TOKEN", "facilitator-token", true),
    ] {
        let r = &env_of(c, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], secret["metadata"]["name"], "{var}");
        assert_eq!(r["key"], key, "{var}");
        assert_eq!(r["optional"].as_bool().unwrap_or(false), optional, "{var}");
        assert!(optional || keys.contains_key(key), "{key} in the example");
    }
    // No secret value in the ConfigMap.
    assert!(cfg.filter_secret.is_none() && cfg.challenge_secret.is_none());
    assert!(
        !toml_text
            .lines()
            .any(|l| l.trim_start().starts_with("database_url")),
        "the database URL holds a password: it comes from the Secret"
    );
}

#[test]
fn configmap_toml_is_accepted_by_the_sidecar_with_the_secrets_from_the_environment() {
    let cm = manifest("sidecar-configmap.yaml");
    let text = cm["data"]["sidecar.toml"].as_str().expect("sidecar.toml");
    let mut cfg = nanogate_sidecar::config::Config::from_toml(text).expect("TOML parses");
    // What the Deployment's env adds (NANOGATE_FILTER_SECRET, …), as the sidecar's loader does.
    cfg.filter_secret = Some("a-filter-secret-of-32-characters".into());
    cfg.challenge_secret = Some("a-challenge-secret-of-32-chars!!".into());
    cfg.store.database_url =
        "postgres://nanogate:pw@postgres.db.svc.cluster.local:5432/nanogate".into();
    cfg.validate()
        .expect("the sidecar accepts the shipped configuration");
    // Agrees with the plugins.
    for f in WASMPLUGINS {
        let c = &manifest(f)["spec"]["pluginConfig"];
        assert_eq!(c["network"], cfg.network.as_str(), "{f}");
        for r in c["routes"].as_array().expect("routes") {
            let t = r["maxTimeoutSeconds"].as_u64().unwrap_or(120);
            assert!(
                t <= cfg.key_rotation_secs,
                "{f}: a challenge must not outlive two key periods"
            );
        }
    }
    assert!(cfg.store.postgres_schema.is_some());
    // The API listens on the pod network; /metrics stays on loopback, off the Service port.
    assert!(!cfg.listen.ip().is_loopback());
    assert!(
        cfg.metrics_listener().is_some_and(|a| a.ip().is_loopback()),
        "/metrics must not be served on the Service port"
    );
}
