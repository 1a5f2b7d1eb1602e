//! x402 discovery metadata: a paid route's `discovery` setting becomes the v2 **bazaar**
//! extension of its 402 (`extensions.bazaar = {info, schema}`: how to call the route and what
//! it answers, and the JSON Schema of that `info`); [`crate::well_known`] lists it too
//! (filter/README.md, "Discovery").
//!
//! Built once per configuration; the 402 path only appends the pre-rendered extension text.

use nanogate_protocol::contract::discovery;
use nanogate_protocol::x402::JsonObject;
use serde_json::{json, Map, Value};

/// JSON Schema dialect the bazaar extension requires for `schema`.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// Methods whose input travels in the query string, and those with a body (the spec's split).
const QUERY_METHODS: [&str; 3] = ["GET", "HEAD", "DELETE"];
const BODY_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];
const BODY_TYPES: [&str; 3] = ["json", "form-data", "text"];

/// A route's bazaar extension: the `extensions` object of its 402 (for the serde reference)
/// and the same as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub extensions: JsonObject,
    pub text: String,
}

/// A bad `discovery` setting: (setting path, problem).
pub type Problem = (String, String);

fn bad(at: String, problem: impl Into<String>) -> Problem {
    (at, problem.into())
}

/// Takes the object at `at`, refusing keys other than `allowed`.
fn object<'a>(v: &'a Value, at: &str, allowed: &[&str]) -> Result<&'a Map<String, Value>, Problem> {
    let Value::Object(m) = v else {
        return Err(bad(at.to_owned(), "must be a JSON object"));
    };
    let mut keys: Vec<&String> = m
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    keys.sort();
    match keys.first() {
        Some(k) => Err(bad(format!("{at}.{k}"), "unknown setting")),
        None => Ok(m),
    }
}

fn opt_string(m: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, Problem> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{at}.{key}"), "must be a non-empty string")),
    }
}

/// An object of string values (query parameters, headers).
fn string_map(m: &Map<String, Value>, key: &str, at: &str) -> Result<Option<Value>, Problem> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Object(o)) if o.values().all(Value::is_string) => {
            Ok(Some(Value::Object(o.clone())))
        }
        Some(_) => Err(bad(
            format!("{at}.{key}"),
            "must be an object of string values",
        )),
    }
}

/// A JSON Schema given by the operator: an object (its content is the operator's).
fn schema(m: &Map<String, Value>, key: &str, at: &str) -> Result<Option<Value>, Problem> {
    match m.get(key) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(bad(
            format!("{at}.{key}"),
            "must be a JSON Schema (an object)",
        )),
    }
}

/// Parses a paid route's `discovery` setting (at `at`). `methods`: the route's methods, if it
/// limits them (the advertised method must be one of them).
pub fn parse(v: &Value, at: &str, methods: Option<&[String]>) -> Result<Discovery, Problem> {
    let d = object(v, at, &["input", "inputSchema", "output", "outputSchema"])?;
    let in_at = format!("{at}.input");
    let input = object(
        d.get("input")
            .ok_or_else(|| bad(in_at.clone(), "is required"))?,
        &in_at,
        &["method", "queryParams", "headers", "bodyType", "body"],
    )?;
    let method = opt_string(input, "method", &in_at)?
        .ok_or_else(|| bad(format!("{in_at}.method"), "is required"))?
        .to_ascii_uppercase();
    let body_method = if BODY_METHODS.contains(&method.as_str()) {
        true
    } else if QUERY_METHODS.contains(&method.as_str()) {
        false
    } else {
        return Err(bad(
            format!("{in_at}.method"),
            format!("`{method}` is not one of GET, HEAD, DELETE, POST, PUT, PATCH"),
        ));
    };
    if methods.is_some_and(|ms| !ms.iter().any(|m| m == &method)) {
        return Err(bad(
            format!("{in_at}.method"),
            format!("`{method}` is not one of the route's methods"),
        ));
    }
    let mut info_in = Map::new();
    info_in.insert("type".into(), json!("http"));
    info_in.insert("method".into(), json!(method));
    if let Some(q) = string_map(input, "queryParams", &in_at)? {
        info_in.insert("queryParams".into(), q);
    }
    if let Some(h) = string_map(input, "headers", &in_at)? {
        info_in.insert("headers".into(), h);
    }
    let body_type = opt_string(input, "bodyType", &in_at)?;
    let body = input.get("body").filter(|b| !b.is_null());
    match (body_method, body_type, body) {
        (true, Some(t), Some(b)) => {
            if !BODY_TYPES.contains(&t.as_str()) {
                return Err(bad(
                    format!("{in_at}.bodyType"),
                    format!("`{t}` is not one of json, form-data, text"),
                ));
            }
            if !(b.is_object() || b.is_string()) {
                return Err(bad(
                    format!("{in_at}.body"),
                    "must be an example body: an object or a string",
                ));
            }
            info_in.insert("bodyType".into(), json!(t));
            info_in.insert("body".into(), b.clone());
        }
        (true, None, _) => {
            return Err(bad(format!("{in_at}.bodyType"), "is required for {method}"))
        }
        (true, _, None) => return Err(bad(format!("{in_at}.body"), "is required for {method}")),
        (false, Some(_), _) => {
            return Err(bad(
                format!("{in_at}.bodyType"),
                "only applies to POST, PUT, PATCH",
            ))
        }
        (false, None, Some(_)) => {
            return Err(bad(
                format!("{in_at}.body"),
                "only applies to POST, PUT, PATCH",
            ))
        }
        (false, None, None) => {}
    }
    let input_schema = schema(d, "inputSchema", at)?;

    let mut info = Map::new();
    info.insert("input".into(), Value::Object(info_in));
    let output_schema = schema(d, "outputSchema", at)?;
    let has_output = match d.get("output") {
        None | Some(Value::Null) => {
            if output_schema.is_some() {
                return Err(bad(format!("{at}.outputSchema"), "needs an output"));
            }
            false
        }
        Some(o) => {
            let out_at = format!("{at}.output");
            let out = object(o, &out_at, &["type", "format", "example"])?;
            let mut info_out = Map::new();
            let ty = opt_string(out, "type", &out_at)?
                .ok_or_else(|| bad(format!("{out_at}.type"), "is required (e.g. \"json\")"))?;
            info_out.insert("type".into(), json!(ty));
            if let Some(f) = opt_string(out, "format", &out_at)? {
                info_out.insert("format".into(), json!(f));
            }
            if let Some(e) = out.get("example").filter(|e| !e.is_null()) {
                info_out.insert("example".into(), e.clone());
            }
            info.insert("output".into(), Value::Object(info_out));
            true
        }
    };
    let schema = info_schema(
        body_method,
        input_schema,
        has_output.then_some(output_schema),
    );
    let mut extensions = JsonObject::new();
    extensions.insert(
        discovery::BAZAAR.into(),
        json!({"info": Value::Object(info), "schema": schema}),
    );
    let text = Value::Object(extensions.clone()).to_string();
    Ok(Discovery { extensions, text })
}

/// The JSON Schema (draft 2020-12) of `info`, as the bazaar spec lays it out for query and
/// body methods; the operator's `inputSchema` describes the query parameters or the body, their
/// `outputSchema` the example output.
fn info_schema(body_method: bool, input: Option<Value>, output: Option<Option<Value>>) -> Value {
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let mut props = Map::new();
    props.insert("type".into(), json!({"type": "string", "const": "http"}));
    let methods: &[&str] = if body_method {
        &BODY_METHODS
    } else {
        &QUERY_METHODS
    };
    props.insert("method".into(), json!({"type": "string", "enum": methods}));
    props.insert("headers".into(), strings.clone());
    let mut required = vec!["type", "method"];
    if body_method {
        props.insert("queryParams".into(), strings);
        props.insert(
            "bodyType".into(),
            json!({"type": "string", "enum": BODY_TYPES}),
        );
        props.insert(
            "body".into(),
            input.unwrap_or_else(|| json!({"type": ["object", "string"]})),
        );
        required.extend(["bodyType", "body"]);
    } else {
        props.insert("queryParams".into(), input.unwrap_or(strings));
    }
    let mut properties = Map::new();
    properties.insert(
        "input".into(),
        json!({"type": "object", "properties": props, "required": required,
               "additionalProperties": false}),
    );
    if let Some(example) = output {
        properties.insert(
            "output".into(),
            json!({"type": "object", "properties": {
                       "type": {"type": "string"}, "format": {"type": "string"},
                       "example": example.unwrap_or_else(|| json!({}))},
                   "required": ["type"]}),
        );
    }
    json!({"$schema": DRAFT_2020_12, "type": "object", "properties": properties,
           "required": ["input"]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Config, RouteKind};

    fn config(route: Value) -> Result<Config, crate::config::ConfigError> {
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
        parse(cfg.to_string().as_bytes())
    }

    fn problem(route: Value) -> String {
        match config(route) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bazaar_info_and_schema_follow_the_method() {
        let cfg = config(json!({"methods": ["POST"], "discovery": {
            "input": {"method": "post", "bodyType": "json", "body": {"q": "nano"}},
            "inputSchema": {"type": "object", "required": ["q"]},
            "output": {"type": "json", "example": {"hits": 1}},
        }}))
        .unwrap();
        let RouteKind::Paid(p) = &cfg.routes[0].kind else {
            panic!("paid")
        };
        let d = p.discovery.as_ref().unwrap();
        let b = &d.extensions["bazaar"];
        assert_eq!(b["info"]["input"]["method"], "POST");
        assert_eq!(b["info"]["input"]["type"], "http");
        assert_eq!(
            b["schema"]["properties"]["input"]["properties"]["body"]["required"],
            json!(["q"])
        );
        assert_eq!(
            b["schema"]["properties"]["input"]["required"],
            json!(["type", "method", "bodyType", "body"])
        );
        assert_eq!(
            serde_json::from_str::<Value>(&d.text).unwrap(),
            Value::Object(d.extensions.clone())
        );
        assert!(p.template.closing().contains("\"extensions\":{\"bazaar\""));
    }

    #[test]
    fn bad_discovery_settings_are_refused_with_their_path() {
        for (route, want) in [
            (
                json!({"discovery": {}}),
                "routes[0].discovery.input: is required",
            ),
            (
                json!({"discovery": {"input": {"method": "TRACE"}}}),
                "routes[0].discovery.input.method",
            ),
            (
                json!({"discovery": {"input": {"method": "GET", "body": {}}}}),
                "only applies to POST",
            ),
            (
                json!({"discovery": {"input": {"method": "POST", "body": {}}}}),
                "bodyType: is required",
            ),
            (
                json!({"discovery": {"input": {"method": "POST", "bodyType": "xml", "body": {}}}}),
                "is not one of json",
            ),
            (
                json!({"discovery": {"input": {"method": "GET", "headers": {"a": 1}}}}),
                "string values",
            ),
            (
                json!({"discovery": {"input": {"method": "GET", "x": 1}}}),
                "routes[0].discovery.input.x: unknown setting",
            ),
            (
                json!({"discovery": {"input": {"method": "GET"}, "output": {}}}),
                "output.type: is required",
            ),
            (
                json!({"discovery": {"input": {"method": "GET"}, "outputSchema": {}}}),
                "needs an output",
            ),
            (
                json!({"discovery": {"input": {"method": "GET"}, "inputSchema": true}}),
                "must be a JSON Schema",
            ),
            (
                json!({"methods": ["POST"], "discovery": {"input": {"method": "GET"}}}),
                "not one of the route's methods",
            ),
            (
                json!({"price": null, "free": true, "discovery": {"input": {"method": "GET"}}}),
                "only applies to paid routes",
            ),
        ] {
            let got = problem(route.clone());
            assert!(got.contains(want), "{route}: {got}");
        }
    }
}
