//! Plugin configuration: the JSON in the Envoy `configuration` field, validated into a
//! [`Config`] once per VM at `on_configure`.
//!
//! Parsing walks the JSON by hand rather than through `#[derive(Deserialize)]`, so every error
//! names the exact setting (`routes[2].price: …`, `sidecar.timeoutMs: …`) and unknown settings are
//! refused by name. Any error stops the plugin from starting with one log line; nothing here
//! panics. The full schema, with an example, is in `filter/README.md`.

use crate::routes::{HostMatch, PathMatch, Spelling};
use crate::template::{ChallengeTemplate, WorkTerms};
use nanogate_protocol::contract;
use nanogate_protocol::contract::pass::{self, PassTerms};
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, parse_xno, PublicKey};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// Default time allowed for `POST /v1/pay`: settlement waits for ledger confirmation.
pub const DEFAULT_PAY_TIMEOUT_MS: u64 = 10_000;
/// Default time allowed for the challenge-key fetch and the outcome report.
pub const DEFAULT_CONTROL_TIMEOUT_MS: u64 = 2_000;
/// Default `Retry-After` on a 503.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 2;
/// Default `maxTimeoutSeconds` of a paid route (also the challenge's lifetime).
pub const DEFAULT_MAX_TIMEOUT_SECS: u64 = 120;
/// Upper bound on `maxTimeoutSeconds`: a challenge should not outlive a key rotation or two.
pub const MAX_MAX_TIMEOUT_SECS: u64 = 3_600;
/// Default `upstreamTimeoutMs`: Envoy's default route timeout (15 s).
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 15_000;
/// Largest `upstreamTimeoutMs` (one hour).
pub const MAX_UPSTREAM_TIMEOUT_MS: u64 = 3_600_000;
/// Shortest accepted shared secret (bytes).
pub const MIN_SECRET_LEN: usize = 16;
/// Most routes one plugin may declare (matching is linear).
pub const MAX_ROUTES: usize = 512;

/// An invalid setting: the path of the setting and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.setting.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.setting, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// How to reach the sidecar.
#[derive(Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Envoy cluster name for `dispatch_http_call`.
    pub cluster: String,
    /// `:authority` of every call (the Host the sidecar sees).
    pub authority: String,
    /// Timeout of `POST /v1/pay`.
    pub pay_timeout: Duration,
    /// Timeout of the key fetch and the outcome report.
    pub control_timeout: Duration,
    /// Shared secret sent as `x-nanogate-secret`. Never logged.
    pub secret: String,
    /// The wasm VM environment variable the secret came from (`secretEnv`); `None` when it
    /// was written into the plugin configuration itself (`secret`, local use only).
    pub secret_env: Option<String>,
}

impl fmt::Debug for SidecarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SidecarConfig")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("pay_timeout", &self.pay_timeout)
            .field("control_timeout", &self.control_timeout)
            .field("secret", &"<redacted>")
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// A payee: the key (what the MAC binds) and its canonical `nano_` spelling (what we emit).
pub use nanogate_protocol::contract::Payee;

/// What the sidecar is unable to decide should do to a paid route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// 503 + `Retry-After` (the default; invariant 6 in `docs/design.md`).
    Closed,
    /// Pass to the upstream, counted.
    Open,
}

/// The terms of a paid route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount_raw: u128,
    pub pay_to: Payee,
    pub description: Option<String>,
    pub mime_type: Option<String>,
    pub max_timeout_secs: u64,
    /// How long Envoy waits for the upstream on this route (`upstreamTimeoutMs`): sent to the
    /// sidecar with each payment, so it knows how long an admitted request may be in flight.
    pub upstream_timeout_ms: u64,
    pub failure_mode: FailureMode,
    /// This route's challenge JSON, pre-rendered (see [`ChallengeTemplate`]).
    pub template: ChallengeTemplate,
    /// Tagged-amount sessions offered too (`"tagged": true`, see [`TaggedTerms`]).
    pub tagged: Option<Box<TaggedTerms>>,
    /// What the offer says about proof of work: the threshold (`workThreshold`), and whether
    /// the sidecar attaches work a paying block lacks (`"attachWork": true`: the offer says
    /// `extra.work: "optional"` and the payment goes to `/v1/pay` with `attachWork`).
    pub work: WorkTerms,
    /// The x402 bazaar extension of its 402 (`discovery`, see [`crate::discovery`]).
    pub discovery: Option<Box<crate::discovery::Discovery>>,
    /// Prepaid passes offered besides the single request (`"passes"`, docs/passes.md).
    pub passes: Option<Box<Passes>>,
}

/// The send work threshold of `nano:mainnet` offers when `workThreshold` is not configured
/// (other networks name none unless configured: nanogate cannot know their nodes).
fn default_work_threshold(network: &str) -> Option<u64> {
    (network == nanogate_protocol::contract::network::MAINNET)
        .then(|| nanogate_protocol::nano::work::WorkThresholds::LIVE.send())
}

/// `workThreshold`: 16 hex digits, as offers carry it.
fn parse_work_threshold(s: &str) -> Result<u64, &'static str> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 16 hex digits (the send work threshold of the nodes' network, e.g. ffc0000000000000 for a dev network)");
    }
    u64::from_str_radix(s, 16).map_err(|_| "must be 16 hex digits")
}

/// A route's pass offers and the group they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passes {
    /// `passGroup` (default: the route's name): a pass bought on any route of the group is
    /// good on all of them.
    pub group: String,
    /// `passCookiePath` (default `/`): the pass cookie's `Path`.
    pub cookie_path: String,
    pub offers: Vec<PassOffer>,
}

/// One pass offer: its terms (what `extra.pass` says and the MAC binds through its scope) and
/// its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassOffer {
    pub terms: PassTerms,
    /// Raw.
    pub amount_raw: u128,
    /// [`PassTerms::scope`], the MAC's resource.
    pub scope: String,
    /// On a tagged route, its own pool of sessions for the pass price, bound to its scope.
    pub tagged: Option<Box<TaggedTerms>>,
}

impl Passes {
    /// The offer named `name`.
    pub fn offer(&self, name: &str) -> Option<&PassOffer> {
        self.offers.iter().find(|o| o.terms.name == name)
    }
}

/// Default `passReportSecs`: how often each VM reports pass usage (the overspend bound's
/// interval, docs/passes.md).
pub const DEFAULT_PASS_REPORT_SECS: u64 = 1;
/// Largest `passReportSecs`.
pub const MAX_PASS_REPORT_SECS: u64 = 60;
/// Most passes one route may offer.
pub const MAX_PASSES_PER_ROUTE: usize = 8;

/// Shared-data namespace of the tagged routes' session pools.
pub const POOL_KEY_PREFIX: &str = "nanogate.sessions.v2.";
/// Sessions asked for per refill (so also the smallest `sessionBudget`).
pub const SESSION_BATCH: usize = 16;
/// Default `sessionBudget`: sessions a route may request per window of `maxTimeoutSeconds`.
/// Without demand a pool needs about `2 × SESSION_BATCH` per window (its sessions are handed
/// out only during the first half of their validity); the rest serves honest tagged payers.
pub const DEFAULT_BUDGET: u64 = 128;
/// Largest `sessionBudget`.
pub const MAX_BUDGET: u64 = 65_536;

/// A route's tagged-amount settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedTerms {
    /// Payees the sidecar spreads sessions over.
    pub pool: Vec<Payee>,
    /// The MAC's resource: `nanogate-route:<route name>` (sessions are pre-issued, so they
    /// cannot know the request URL; the price and payees are per route anyway), or a pass's
    /// scope for the pool of a tagged route's pass.
    pub scope: String,
    /// What the sessions cost before their tag (raw): the route's price, or the pass's.
    pub amount_raw: u128,
    /// Shared-data key of the route's session pool.
    pub key: String,
    /// Shared-data key of its refill lease.
    pub lease: String,
    /// Shared-data key of its refill budget: `<window> <sessions requested in it>`.
    pub budget_key: String,
    /// Most sessions requested per window of `maxTimeoutSeconds` (`sessionBudget`).
    pub budget: u64,
}

impl TaggedTerms {
    /// The terms of sessions for `scope` at `amount_raw` (a route's or one of its passes').
    /// Its pool lives under a key derived from everything a session is bound to (sidecar
    /// cluster, network, scope, price, validity, payees): two plugin configurations in one VM
    /// id share shared data, and must only share a pool when each would accept the other's
    /// sessions.
    pub fn new(
        scope: String,
        amount_raw: u128,
        pool: Vec<Payee>,
        cluster: &str,
        network: &str,
        price: &Price,
        budget: u64,
    ) -> Self {
        let key = pool_key(cluster, network, &scope, amount_raw, price, &pool);
        TaggedTerms {
            pool,
            scope,
            amount_raw,
            lease: [&key, ".lease"].concat(),
            budget_key: [&key, ".budget"].concat(),
            key,
            budget,
        }
    }
}

impl Price {
    /// Every session pool of a tagged route: its own, then one per pass it offers.
    pub fn pools(&self) -> impl Iterator<Item = &TaggedTerms> {
        let passes = self.passes.iter().flat_map(|p| p.offers.iter());
        self.tagged
            .as_deref()
            .into_iter()
            .chain(passes.filter_map(|o| o.tagged.as_deref()))
    }
}

/// `nanogate.sessions.v2.<16 hex>`: the namespace of a pool in shared data.
fn pool_key(
    cluster: &str,
    network: &str,
    scope: &str,
    amount_raw: u128,
    price: &Price,
    pool: &[Payee],
) -> String {
    let mut terms = Vec::with_capacity(128 + pool.len() * 32);
    for field in [cluster, network, scope] {
        terms.extend_from_slice(&(field.len() as u64).to_be_bytes());
        terms.extend_from_slice(field.as_bytes());
    }
    terms.extend_from_slice(&amount_raw.to_be_bytes());
    terms.extend_from_slice(&price.max_timeout_secs.to_be_bytes());
    for p in pool {
        terms.extend_from_slice(&p.key.0);
    }
    let digest = nanogate_protocol::nano::blake2b_256(&[&terms]);
    let mut key = String::with_capacity(POOL_KEY_PREFIX.len() + 16);
    key.push_str(POOL_KEY_PREFIX);
    key.push_str(&hex::encode_lower(&digest[..8]));
    key
}

/// What a matching route does.
// Built once per configuration, read on every request: boxing `Price` would only add an
// indirection on the request path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// Passes untouched (an exemption inside a paid prefix, for example).
    Free,
    Paid(Price),
}

/// One route: matched on host, path and method, first match wins.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Upper-case method names; `None` matches any method.
    pub methods: Option<Vec<String>>,
    /// Case and `;` parameters (`caseSensitive`, `pathParams`).
    pub spelling: Spelling,
    pub kind: RouteKind,
}

/// The validated plugin configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sidecar: SidecarConfig,
    /// x402 network id (CAIP-2 style), e.g. `nano:mainnet` or `nano:devnet`.
    pub network: String,
    /// Default payee for paid routes that do not name their own.
    pub pay_to: Option<Payee>,
    pub retry_after_secs: u32,
    pub routes: Vec<Route>,
    /// Answer `GET /.well-known/x402` with the paid routes (`wellKnown`, default true).
    pub well_known: bool,
    /// `passReportSecs`: seconds between two usage reports of a VM.
    pub pass_report_secs: u64,
}

impl Config {
    /// Whether any route offers passes (only then does a VM report usage).
    pub fn sells_passes(&self) -> bool {
        self.routes
            .iter()
            .any(|r| matches!(&r.kind, RouteKind::Paid(p) if p.passes.is_some()))
    }
}

/// A JSON object being read: remembers which keys were consumed so leftovers can be refused.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(path: String, value: &'a Value) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Obj {
                path,
                map,
                seen: Vec::new(),
            }),
            _ => Err(err(path, "must be a JSON object")),
        }
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn opt_str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(err(self.at(key), "must be a string")),
        }
    }

    fn str(&mut self, key: &'static str) -> Result<&'a str, ConfigError> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(err(self.at(key), "must not be empty")),
            None => Err(err(self.at(key), "is required")),
        }
    }

    fn opt_u64(
        &mut self,
        key: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(err(
                    self.at(key),
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
        }
    }

    fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(err(self.at(key), "must be true or false")),
        }
    }

    fn opt_obj(&mut self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        let path = self.at(key);
        self.get(key).map(|v| Obj::new(path, v)).transpose()
    }

    /// Refuses every key that was not read.
    fn finish(self) -> Result<(), ConfigError> {
        // Deterministic: report the first unknown key in sorted order.
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.seen.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(k) => Err(err(self.at(k), "unknown setting")),
            None => Ok(()),
        }
    }
}

/// Parses and validates the plugin configuration bytes; `secretEnv` is read from the wasm VM's
/// environment (WASI `environ`, which Envoy fills from `vm_config.environment_variables`).
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_with_env(bytes, &|name| std::env::var(name).ok())
}

/// [`parse`] with the environment given as a lookup (tests).
pub fn parse_with_env(
    bytes: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(err(
            "",
            "plugin configuration is empty (expected a JSON object)",
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| err("", format!("plugin configuration is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(err("", "plugin configuration must be a JSON object"));
    }
    let mut root = Obj::new(String::new(), &value)?;

    let sidecar = match root.opt_obj("sidecar")? {
        Some(s) => parse_sidecar(s, env)?,
        None => return Err(err("sidecar", "is required")),
    };
    let network = parse_network(root.str("network")?).map_err(|p| err("network", p))?;
    let pay_to = root
        .opt_str("payTo")?
        .map(|s| parse_payee(s).map_err(|p| err("payTo", p)))
        .transpose()?;
    let retry_after_secs = root
        .opt_u64("retryAfterSeconds", 1, 3_600)?
        .map_or(DEFAULT_RETRY_AFTER_SECS, |n| n as u32);
    let work_threshold = match root.opt_str("workThreshold")? {
        Some(t) => Some(parse_work_threshold(t).map_err(|p| err("workThreshold", p))?),
        None => default_work_threshold(&network),
    };
    let well_known = root.opt_bool("wellKnown")?.unwrap_or(true);

    let routes_value = match root.get("routes") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("routes", "must be an array of routes")),
        None => return Err(err("routes", "is required")),
    };
    if routes_value.len() > MAX_ROUTES {
        return Err(err("routes", format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes = Vec::with_capacity(routes_value.len());
    for (i, r) in routes_value.iter().enumerate() {
        routes.push(parse_route(
            format!("routes[{i}]"),
            i,
            r,
            pay_to.as_ref(),
            &network,
            work_threshold,
            &sidecar.cluster,
        )?);
    }
    let pass_report_secs = root
        .opt_u64("passReportSecs", 1, MAX_PASS_REPORT_SECS)?
        .unwrap_or(DEFAULT_PASS_REPORT_SECS);
    check_pass_groups(&routes)?;
    root.finish()?;

    Ok(Config {
        sidecar,
        network,
        pay_to,
        retry_after_secs,
        routes,
        well_known,
        pass_report_secs,
    })
}

fn parse_sidecar(
    mut o: Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SidecarConfig, ConfigError> {
    let cluster = o.str("cluster")?.to_owned();
    let authority = o.str("authority")?.to_owned();
    if authority
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(err(o.at("authority"), "must not contain white space"));
    }
    let pay_timeout_ms = o
        .opt_u64("timeoutMs", 1, 600_000)?
        .unwrap_or(DEFAULT_PAY_TIMEOUT_MS);
    let control_timeout_ms = o
        .opt_u64("controlTimeoutMs", 1, 60_000)?
        .unwrap_or(DEFAULT_CONTROL_TIMEOUT_MS);
    let (secret, secret_env, setting) = parse_secret(&mut o, env)?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(err(
            setting,
            format!("must be at least {MIN_SECRET_LEN} bytes"),
        ));
    }
    if secret.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(err(
            setting,
            "must be printable ASCII without spaces (it travels in a header)",
        ));
    }
    o.finish()?;
    Ok(SidecarConfig {
        cluster,
        authority,
        pay_timeout: Duration::from_millis(pay_timeout_ms),
        control_timeout: Duration::from_millis(control_timeout_ms),
        secret,
        secret_env,
    })
}

/// The filter secret: from the VM environment variable named by `secretEnv` (what shipped
/// configurations do, so no config dump or reader of the plugin configuration sees it), or,
/// for local use, literally from `secret`. Returns the secret, the variable's name and the
/// setting to blame when the value is unfit; no error ever contains the value.
fn parse_secret(
    o: &mut Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Option<String>, String), ConfigError> {
    let from_env = o.opt_str("secretEnv")?;
    let literal = o.opt_str("secret")?;
    match (from_env, literal) {
        (Some(_), Some(_)) => Err(err(
            o.at("secret"),
            "set secretEnv or secret, not both (secretEnv keeps it out of the configuration)",
        )),
        (Some(name), None) => {
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name {
                return Err(err(
                    o.at("secretEnv"),
                    "must name an environment variable ([A-Za-z0-9_]+)",
                ));
            }
            match env(name) {
                Some(v) if !v.is_empty() => Ok((
                    v,
                    Some(name.to_owned()),
                    format!("{} ({name})", o.at("secretEnv")),
                )),
                Some(_) => Err(err(
                    o.at("secretEnv"),
                    format!("environment variable {name} of the wasm VM is empty"),
                )),
                None => Err(err(
                    o.at("secretEnv"),
                    format!(
                        "environment variable {name} is not set in the wasm VM (Envoy: \
                         vm_config.environment_variables.host_env_keys; Istio: vmConfig.env)"
                    ),
                )),
            }
        }
        (None, Some(s)) if s.trim().is_empty() => Err(err(o.at("secret"), "must not be empty")),
        (None, Some(s)) => Ok((s.to_owned(), None, o.at("secret"))),
        (None, None) => Err(err(
            o.at("secretEnv"),
            "is required: the wasm VM environment variable that holds the filter secret",
        )),
    }
}

/// `nano:` and a CAIP-2 reference ([`contract::check_network`]): the id is written unescaped
/// into the pre-rendered challenge, and only Nano networks can be settled.
fn parse_network(s: &str) -> Result<String, String> {
    contract::check_network(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_payee(s: &str) -> Result<Payee, String> {
    let key = PublicKey::from_address(s).map_err(|e| format!("not a Nano address: {e}"))?;
    if key.is_zero() {
        return Err("is the burn address".into());
    }
    Ok(Payee {
        address: key.to_address(),
        key,
    })
}

fn parse_route(
    path: String,
    index: usize,
    value: &Value,
    default_pay_to: Option<&Payee>,
    network: &str,
    work_threshold: Option<u64>,
    cluster: &str,
) -> Result<Route, ConfigError> {
    let mut o = Obj::new(path, value)?;
    let name = o
        .opt_str("name")?
        .map_or_else(|| format!("route{index}"), str::to_owned);

    let host = o
        .opt_str("host")?
        .map(|h| HostMatch::parse(h).map_err(|p| err(o.at("host"), p)))
        .transpose()?;

    let mut path_match = match o.opt_obj("path")? {
        Some(p) => parse_path(p)?,
        None => {
            return Err(err(
                o.at("path"),
                "is required ({\"exact\"|\"prefix\"|\"regex\": …})",
            ))
        }
    };

    let methods = match o.get("methods") {
        None => None,
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, m) in a.iter().enumerate() {
                let at = format!("{}[{i}]", o.at("methods"));
                let m = m
                    .as_str()
                    .ok_or_else(|| err(at.clone(), "must be a string"))?;
                if m.is_empty() || !m.bytes().all(is_token_char) {
                    return Err(err(at, format!("`{m}` is not an HTTP method")));
                }
                out.push(m.to_ascii_uppercase());
            }
            if out.is_empty() {
                return Err(err(
                    o.at("methods"),
                    "must not be empty (omit it to match any method)",
                ));
            }
            Some(out)
        }
        Some(_) => return Err(err(o.at("methods"), "must be an array of method names")),
    };

    let free = o.opt_bool("free")?.unwrap_or(false);
    let price_xno = o.opt_str("price")?;
    let price_raw = o.opt_str("priceRaw")?;
    let route_pay_to = o.opt_str("payTo")?;
    let tagged = o.opt_bool("tagged")?.unwrap_or(false);
    let attach_work = o.opt_bool("attachWork")?.unwrap_or(false);
    let pay_to_pool = match o.get("payToPool") {
        None => None,
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 64 => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                let at = format!("{}[{i}]", o.at("payToPool"));
                let s = v
                    .as_str()
                    .ok_or_else(|| err(at.clone(), "must be a string"))?;
                out.push(parse_payee(s).map_err(|e| err(at, e))?);
            }
            Some(out)
        }
        Some(_) => {
            return Err(err(
                o.at("payToPool"),
                "must be an array of 1 to 64 nano_ addresses",
            ))
        }
    };
    let session_budget = o.opt_u64("sessionBudget", SESSION_BATCH as u64, MAX_BUDGET)?;
    let passes_value = o.get("passes");
    let pass_group = o.opt_str("passGroup")?;
    let pass_cookie_path = o.opt_str("passCookiePath")?;
    let upstream_timeout_ms = o.opt_u64("upstreamTimeoutMs", 1, MAX_UPSTREAM_TIMEOUT_MS)?;
    let description = o.opt_str("description")?.map(str::to_owned);
    let mime_type = o.opt_str("mimeType")?.map(str::to_owned);
    let discovery_at = o.at("discovery");
    let discovery_value = o.get("discovery");
    let max_timeout = o.opt_u64("maxTimeoutSeconds", 1, MAX_MAX_TIMEOUT_SECS)?;
    let failure_mode = match o.opt_str("failureMode")? {
        None | Some("closed") => FailureMode::Closed,
        Some("open") => FailureMode::Open,
        Some(other) => {
            return Err(err(
                o.at("failureMode"),
                format!("`{other}` is not \"closed\" or \"open\""),
            ))
        }
    };

    let kind = match (free, price_xno, price_raw) {
        (true, None, None) => {
            // Paid-only settings on a free route are a mistake worth reporting.
            let stray = [
                ("payTo", route_pay_to.is_some()),
                ("description", description.is_some()),
                ("mimeType", mime_type.is_some()),
                ("discovery", discovery_value.is_some()),
                ("maxTimeoutSeconds", max_timeout.is_some()),
                ("tagged", tagged),
                ("payToPool", pay_to_pool.is_some()),
                ("sessionBudget", session_budget.is_some()),
                ("upstreamTimeoutMs", upstream_timeout_ms.is_some()),
                ("attachWork", attach_work),
                ("passes", passes_value.is_some()),
                ("passGroup", pass_group.is_some()),
                ("passCookiePath", pass_cookie_path.is_some()),
            ];
            if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(err(
                    o.at(k),
                    "only applies to paid routes (this one is free)",
                ));
            }
            RouteKind::Free
        }
        (true, _, _) => {
            return Err(err(o.at("free"), "a free route cannot also have a price"));
        }
        (false, Some(_), Some(_)) => {
            return Err(err(
                o.at("priceRaw"),
                "set either price (XNO) or priceRaw, not both",
            ));
        }
        (false, None, None) => {
            return Err(err(
                o.at("price"),
                "is required (XNO as a decimal string, or priceRaw in raw; or \"free\": true)",
            ));
        }
        (false, xno, raw) => {
            let amount_raw = match (xno, raw) {
                (Some(x), _) => {
                    parse_xno(x).map_err(|e| err(o.at("price"), format!("`{x}`: {e}")))?
                }
                (_, Some(r)) => {
                    parse_raw(r).map_err(|e| err(o.at("priceRaw"), format!("`{r}`: {e}")))?
                }
                (None, None) => 0,
            };
            if amount_raw == 0 {
                let k = if xno.is_some() { "price" } else { "priceRaw" };
                return Err(err(
                    o.at(k),
                    "must be above zero (use \"free\": true for a free route)",
                ));
            }
            let pay_to = match route_pay_to {
                Some(p) => parse_payee(p).map_err(|e| err(o.at("payTo"), e))?,
                None => default_pay_to.cloned().ok_or_else(|| {
                    err(
                        o.at("payTo"),
                        "is required when there is no top-level payTo",
                    )
                })?,
            };
            let mut price = Price {
                amount_raw,
                pay_to,
                description,
                mime_type,
                max_timeout_secs: max_timeout.unwrap_or(DEFAULT_MAX_TIMEOUT_SECS),
                upstream_timeout_ms: upstream_timeout_ms.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS),
                failure_mode,
                template: ChallengeTemplate::default(),
                tagged: None,
                work: WorkTerms {
                    threshold: work_threshold,
                    attached: attach_work,
                },
                discovery: None,
                passes: None,
            };
            price.passes = match passes_value {
                Some(v) => Some(Box::new(parse_passes(
                    &o.path,
                    v,
                    pass_group.map_or_else(|| name.clone(), str::to_owned),
                    pass_cookie_path.unwrap_or("/"),
                )?)),
                None => {
                    for (k, set) in [
                        ("passGroup", pass_group.is_some()),
                        ("passCookiePath", pass_cookie_path.is_some()),
                    ] {
                        if set {
                            return Err(err(o.at(k), "only applies with \"passes\""));
                        }
                    }
                    None
                }
            };
            if let Some(v) = discovery_value {
                let d = crate::discovery::parse(v, &discovery_at, methods.as_deref())
                    .map_err(|(at, problem)| err(at, problem))?;
                price.discovery = Some(Box::new(d));
            }
            if pay_to_pool.is_some() && !tagged {
                return Err(err(o.at("payToPool"), "only applies with \"tagged\": true"));
            }
            if session_budget.is_some() && !tagged {
                return Err(err(
                    o.at("sessionBudget"),
                    "only applies with \"tagged\": true",
                ));
            }
            if tagged {
                let pool = pay_to_pool.unwrap_or_else(|| vec![price.pay_to.clone()]);
                let budget = session_budget.unwrap_or(DEFAULT_BUDGET);
                // Each pass is sold by tagged session too, from a pool of its own.
                let mut passes = price.passes.take();
                for offer in passes.iter_mut().flat_map(|p| p.offers.iter_mut()) {
                    offer.tagged = Some(Box::new(TaggedTerms::new(
                        offer.scope.clone(),
                        offer.amount_raw,
                        pool.clone(),
                        cluster,
                        network,
                        &price,
                        budget,
                    )));
                }
                price.passes = passes;
                price.tagged = Some(Box::new(TaggedTerms::new(
                    contract::route_scope(&name),
                    price.amount_raw,
                    pool,
                    cluster,
                    network,
                    &price,
                    budget,
                )));
            }
            price.template = ChallengeTemplate::new(network, &price);
            RouteKind::Paid(price)
        }
    };
    let spelling = parse_spelling(&mut o, matches!(kind, RouteKind::Free))?;
    if !spelling.case_sensitive {
        if let PathMatch::Regex(re) = path_match {
            path_match = PathMatch::Regex(re.case_folded());
        }
    }
    o.finish()?;
    Ok(Route {
        name,
        host,
        path: path_match,
        methods,
        spelling,
        kind,
    })
}

/// A route's `passes` (with its `passGroup` and `passCookiePath`), each a name, a price and
/// what it grants.
fn parse_passes(
    route: &str,
    value: &Value,
    group: String,
    cookie_path: &str,
) -> Result<Passes, ConfigError> {
    let at = &[route, ".passes"].concat();
    if !pass::valid_name(&group) {
        return Err(err(
            [route, ".passGroup"].concat(),
            format!("`{group}` is not a pass group name ([a-z0-9_-]{{1,32}}; the default is the route's name)"),
        ));
    }
    if !cookie_path.starts_with('/')
        || !cookie_path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return Err(err(
            [route, ".passCookiePath"].concat(),
            "must be a path starting with / without spaces, `;` or `,`",
        ));
    }
    let items = match value {
        Value::Array(a) if !a.is_empty() && a.len() <= MAX_PASSES_PER_ROUTE => a,
        _ => {
            return Err(err(
                at,
                format!("must be an array of 1 to {MAX_PASSES_PER_ROUTE} passes"),
            ))
        }
    };
    let mut offers: Vec<PassOffer> = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let mut o = Obj::new(format!("{at}[{i}]"), v)?;
        let name = o.str("name")?;
        if !pass::valid_name(name) {
            return Err(err(
                o.at("name"),
                format!("`{name}` is not [a-z0-9_-]{{1,32}}"),
            ));
        }
        if offers.iter().any(|p| p.terms.name == name) {
            return Err(err(o.at("name"), format!("`{name}` is offered twice")));
        }
        let amount_raw = match (o.opt_str("price")?, o.opt_str("priceRaw")?) {
            (Some(x), None) => {
                parse_xno(x).map_err(|e| err(o.at("price"), format!("`{x}`: {e}")))?
            }
            (None, Some(r)) => {
                parse_raw(r).map_err(|e| err(o.at("priceRaw"), format!("`{r}`: {e}")))?
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    o.at("priceRaw"),
                    "set either price (XNO) or priceRaw, not both",
                ))
            }
            (None, None) => {
                return Err(err(
                    o.at("price"),
                    "is required (XNO as a decimal string, or priceRaw)",
                ))
            }
        };
        if amount_raw == 0 {
            return Err(err(o.at("price"), "must be above zero"));
        }
        let seconds = o.opt_u64("seconds", 1, pass::MAX_PASS_SECONDS)?;
        let requests = o
            .opt_u64("requests", 1, u64::from(pass::MAX_PASS_REQUESTS))?
            .and_then(|n| u32::try_from(n).ok());
        if seconds.is_none() && requests.is_none() {
            return Err(err(
                o.path.clone(),
                "needs seconds (a time pass) or requests (a counted pass), or both",
            ));
        }
        o.finish()?;
        let terms = PassTerms {
            name: name.to_owned(),
            group: group.clone(),
            seconds: seconds.unwrap_or(pass::DEFAULT_REQUEST_PASS_SECONDS),
            requests,
        };
        offers.push(PassOffer {
            scope: terms.scope(),
            terms,
            amount_raw,
            tagged: None,
        });
    }
    Ok(Passes {
        group,
        cookie_path: cookie_path.to_owned(),
        offers,
    })
}

/// Every route of a pass group offers the same passes under the same cookie path: a pass is
/// bought for the group, so its routes must agree on what it is.
fn check_pass_groups(routes: &[Route]) -> Result<(), ConfigError> {
    for (i, r) in routes.iter().enumerate() {
        let RouteKind::Paid(Price {
            passes: Some(p), ..
        }) = &r.kind
        else {
            continue;
        };
        let first = routes[..i]
            .iter()
            .enumerate()
            .find_map(|(j, other)| match &other.kind {
                RouteKind::Paid(Price {
                    passes: Some(q), ..
                }) if q.group == p.group => Some((j, q)),
                _ => None,
            });
        if let Some((j, q)) = first {
            let same = q.cookie_path == p.cookie_path
                && q.offers.len() == p.offers.len()
                && q.offers.iter().zip(&p.offers).all(|(a, b)| {
                    // Terms and price; whether a route also sells by tagged session is its own.
                    (&a.terms, a.amount_raw) == (&b.terms, b.amount_raw)
                });
            if !same {
                return Err(err(
                    format!("routes[{i}].passes"),
                    format!(
                        "differ from routes[{j}].passes of the same passGroup `{}` (a group's \
                         routes offer the same passes and passCookiePath)",
                        p.group
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `caseSensitive` and `pathParams`, with the defaults of [`Spelling::default_for`].
fn parse_spelling(o: &mut Obj<'_>, free: bool) -> Result<Spelling, ConfigError> {
    let mut spelling = Spelling::default_for(free);
    if let Some(b) = o.opt_bool("caseSensitive")? {
        spelling.case_sensitive = b;
    }
    match o.opt_str("pathParams")? {
        None => {}
        Some("strip") => spelling.strip_params = true,
        Some("keep") => spelling.strip_params = false,
        Some(other) => {
            return Err(err(
                o.at("pathParams"),
                format!("`{other}` is not \"strip\" or \"keep\""),
            ))
        }
    }
    Ok(spelling)
}

fn parse_path(mut p: Obj<'_>) -> Result<PathMatch, ConfigError> {
    let exact = p.opt_str("exact")?;
    let prefix = p.opt_str("prefix")?;
    let regex = p.opt_str("regex")?;
    let m = match (exact, prefix, regex) {
        (Some(e), None, None) => {
            if !e.starts_with('/') {
                return Err(err(p.at("exact"), "must start with /"));
            }
            PathMatch::Exact(e.to_owned())
        }
        (None, Some(x), None) => {
            if !x.starts_with('/') {
                return Err(err(p.at("prefix"), "must start with /"));
            }
            PathMatch::Prefix(x.to_owned())
        }
        (None, None, Some(r)) => {
            let re = crate::pathre::PathRegex::new(r)
                .map_err(|e| err(p.at("regex"), format!("invalid regex: {e}")))?;
            PathMatch::Regex(re)
        }
        (None, None, None) => {
            return Err(err(p.path.clone(), "needs one of exact, prefix or regex"));
        }
        _ => {
            return Err(err(
                p.path.clone(),
                "set only one of exact, prefix or regex",
            ))
        }
    };
    p.finish()?;
    Ok(m)
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub const PAY_TO: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";

    fn base() -> Value {
        json!({
            "sidecar": {"cluster": "nanogate_sidecar", "authority": "sidecar", "secret": "0123456789abcdef-secret"},
            "network": "nano:devnet",
            "payTo": PAY_TO,
            "routes": [
                {"name": "report", "host": "api.example.com", "path": {"exact": "/paid/report"},
                 "methods": ["get"], "price": "0.001", "description": "d", "mimeType": "application/json",
                 "maxTimeoutSeconds": 60},
                {"path": {"prefix": "/paid/free"}, "free": true},
                {"path": {"regex": "/items/[0-9]+"}, "priceRaw": "1000", "failureMode": "open"}
            ]
        })
    }

    fn parse_value(v: &Value) -> Result<Config, ConfigError> {
        parse(v.to_string().as_bytes())
    }

    fn with(mut v: Value, pointer: &str, new: Value) -> Value {
        if let Some(slot) = v.pointer_mut(pointer) {
            *slot = new;
        } else {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            v.pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .unwrap()
                .insert(key.to_owned(), new);
        }
        v
    }

    fn without(mut v: Value, pointer: &str) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap()
            .remove(key);
        v
    }

    fn setting_of(v: &Value) -> String {
        parse_value(v).unwrap_err().setting
    }

    #[test]
    fn tagged_settings_are_validated() {
        let cfg = crate::tests_support::tagged_config();
        let t = crate::tests_support::paid(&cfg, 0)
            .tagged
            .as_ref()
            .expect("tagged");
        assert_eq!(t.pool.len(), 2);
        assert!(t.key.starts_with("nanogate.sessions.v2."), "{}", t.key);
        assert_eq!(t.key.len(), POOL_KEY_PREFIX.len() + 16);
        assert!(crate::tests_support::paid(&cfg, 1).tagged.is_none());
        let bad = |route: Value| {
            let v = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet", "payTo": crate::tests_support::POOL_A, "routes": [route]
            });
            parse(v.to_string().as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = bad(
            json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "payToPool": [crate::tests_support::POOL_A]}),
        );
        assert!(e.contains("payToPool"), "{e}");
        let e = bad(json!({"path": {"prefix": "/x/"}, "free": true, "tagged": true}));
        assert!(e.contains("tagged"), "{e}");
        let e = bad(
            json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "tagged": true, "payToPool": []}),
        );
        assert!(e.contains("payToPool"), "{e}");
        let e = bad(
            json!({"path": {"prefix": "/x/"}, "priceRaw": "1", "tagged": true, "payToPool": ["nano_x"]}),
        );
        assert!(e.contains("payToPool[0]"), "{e}");
    }

    #[test]
    fn the_session_budget_is_validated() {
        let ok = crate::tests_support::config_with(
            json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true,
            "sessionBudget": 1024}),
        );
        assert_eq!(
            crate::tests_support::paid(&ok, 0)
                .tagged
                .as_ref()
                .map(|t| t.budget),
            Some(1024)
        );
        for (route, what) in [
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true, "sessionBudget": 15}),
                "sessionBudget",
            ),
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "tagged": true, "sessionBudget": 65_537}),
                "sessionBudget",
            ),
            (
                json!({"path": {"prefix": "/t/"}, "priceRaw": "1", "sessionBudget": 64}),
                "sessionBudget",
            ),
        ] {
            let v = json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet", "payTo": crate::tests_support::POOL_A, "routes": [route]
            });
            let e = parse(v.to_string().as_bytes()).expect_err("refused");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn full_example_parses_with_defaults() {
        let c = parse_value(&base()).unwrap();
        assert_eq!(c.network, "nano:devnet");
        assert_eq!(
            c.sidecar.pay_timeout,
            Duration::from_millis(DEFAULT_PAY_TIMEOUT_MS)
        );
        assert_eq!(c.retry_after_secs, DEFAULT_RETRY_AFTER_SECS);
        assert_eq!(c.routes.len(), 3);
        let RouteKind::Paid(p) = &c.routes[0].kind else {
            panic!("paid")
        };
        assert_eq!(p.amount_raw, 1_000_000_000_000_000_000_000_000_000);
        assert_eq!(p.pay_to.address, PAY_TO);
        assert_eq!(p.max_timeout_secs, 60);
        assert_eq!(p.failure_mode, FailureMode::Closed);
        assert_eq!(
            c.routes[0].methods.as_deref(),
            Some(&["GET".to_owned()][..])
        );
        assert_eq!(c.routes[1].kind, RouteKind::Free);
        assert_eq!(c.routes[1].name, "route1");
        let RouteKind::Paid(p) = &c.routes[2].kind else {
            panic!("paid")
        };
        assert_eq!(p.amount_raw, 1000);
        assert_eq!(p.failure_mode, FailureMode::Open);
        assert_eq!(p.max_timeout_secs, DEFAULT_MAX_TIMEOUT_SECS);
    }

    #[test]
    fn route_spelling_defaults_widen_paid_routes_only() {
        let c = parse_value(&base()).unwrap();
        let paid = Spelling {
            case_sensitive: false,
            strip_params: true,
        };
        assert_eq!(c.routes[0].spelling, paid);
        assert_eq!(c.routes[2].spelling, paid);
        assert_eq!(
            c.routes[1].spelling,
            Spelling {
                case_sensitive: true,
                strip_params: true,
            }
        );
        let v = with(base(), "/routes/0/caseSensitive", json!(true));
        let v = with(v, "/routes/0/pathParams", json!("keep"));
        let v = with(v, "/routes/1/caseSensitive", json!(false));
        let v = with(v, "/routes/2/pathParams", json!("strip"));
        let c = parse_value(&v).unwrap();
        assert_eq!(
            c.routes[0].spelling,
            Spelling {
                case_sensitive: true,
                strip_params: false,
            }
        );
        assert!(!c.routes[1].spelling.case_sensitive);
        assert!(c.routes[2].spelling.strip_params);
        let e = parse_value(&with(base(), "/routes/0/pathParams", json!("drop"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[0].pathParams: `drop` is not \"strip\" or \"keep\""
        );
    }

    #[test]
    fn secret_is_redacted_in_debug_output() {
        let c = parse_value(&base()).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("0123456789abcdef-secret"));
        assert!(s.contains("<redacted>"));
    }

    #[test]
    fn unknown_settings_are_named() {
        assert_eq!(setting_of(&with(base(), "/colour", json!(1))), "colour");
        assert_eq!(
            setting_of(&with(base(), "/sidecar/clustr", json!("x"))),
            "sidecar.clustr"
        );
        assert_eq!(
            setting_of(&with(base(), "/routes/1/pricee", json!("1"))),
            "routes[1].pricee"
        );
        assert_eq!(
            setting_of(&with(base(), "/routes/0/path/suffix", json!("x"))),
            "routes[0].path.suffix"
        );
    }

    #[test]
    fn work_terms_default_per_network_and_are_validated() {
        let paid = |v: &Value| {
            let cfg = parse_value(v).unwrap();
            let RouteKind::Paid(p) = &cfg.routes[0].kind else {
                panic!("paid")
            };
            p.work
        };
        // No threshold for a network nanogate cannot know the nodes of.
        assert_eq!(paid(&base()), WorkTerms::default());
        let mainnet = with(base(), "/network", json!("nano:mainnet"));
        assert_eq!(paid(&mainnet).threshold, Some(0xfffffff800000000));
        let dev = with(base(), "/workThreshold", json!("ffc0000000000000"));
        assert_eq!(paid(&dev).threshold, Some(0xffc0000000000000));
        let attached = with(dev, "/routes/0/attachWork", json!(true));
        assert_eq!(
            paid(&attached),
            WorkTerms {
                threshold: Some(0xffc0000000000000),
                attached: true
            }
        );
        for bad in [
            json!("ffc"),
            json!("0xffc00000000000"),
            json!(7),
            json!("ffc000000000000g"),
        ] {
            assert_eq!(
                setting_of(&with(base(), "/workThreshold", bad)),
                "workThreshold"
            );
        }
        assert_eq!(
            setting_of(&with(base(), "/routes/0/attachWork", json!("yes"))),
            "routes[0].attachWork"
        );
        // Paid-only: a free route with attachWork is a mistake worth reporting.
        assert_eq!(
            setting_of(&with(base(), "/routes/1/attachWork", json!(true))),
            "routes[1].attachWork"
        );
    }

    #[test]
    fn missing_required_settings_are_named() {
        assert_eq!(setting_of(&without(base(), "/sidecar")), "sidecar");
        assert_eq!(
            setting_of(&without(base(), "/sidecar/cluster")),
            "sidecar.cluster"
        );
        assert_eq!(
            setting_of(&without(base(), "/sidecar/authority")),
            "sidecar.authority"
        );
        assert_eq!(
            setting_of(&without(base(), "/sidecar/secret")),
            "sidecar.secretEnv"
        );
        assert_eq!(setting_of(&without(base(), "/network")), "network");
        assert_eq!(setting_of(&without(base(), "/routes")), "routes");
        assert_eq!(
            setting_of(&without(base(), "/routes/0/path")),
            "routes[0].path"
        );
        assert_eq!(
            setting_of(&without(base(), "/routes/0/price")),
            "routes[0].price"
        );
        // No default payTo: the paid routes must name one.
        assert_eq!(setting_of(&without(base(), "/payTo")), "routes[0].payTo");
    }

    /// Pass settings: every mistake stops the plugin with a line naming the setting.
    #[test]
    fn pass_settings_are_validated_by_name() {
        let hour = json!({"name": "hour", "price": "0.01", "seconds": 3600});
        let ten = json!({"name": "ten", "priceRaw": "5000", "requests": 10});
        let ok = with(
            with(base(), "/routes/0/passes", json!([hour, ten])),
            "/routes/0/passGroup",
            json!("api"),
        );
        let c = parse_value(&ok).unwrap();
        let RouteKind::Paid(p) = &c.routes[0].kind else {
            panic!("paid")
        };
        let passes = p.passes.as_ref().unwrap();
        assert_eq!(
            (passes.group.as_str(), passes.cookie_path.as_str()),
            ("api", "/")
        );
        assert_eq!(
            passes.offers[1].terms.seconds,
            pass::DEFAULT_REQUEST_PASS_SECONDS
        );
        assert_eq!(passes.offers[1].scope, "nanogate-pass:api:ten:2592000:10");
        assert_eq!(c.pass_report_secs, DEFAULT_PASS_REPORT_SECS);
        assert!(c.sells_passes());
        let cases: &[(&str, Value, &str)] = &[
            (
                "/routes/0/passes",
                json!([]),
                "routes[0].passes: must be an array of 1 to 8",
            ),
            (
                "/routes/0/passes/0/name",
                json!("Hour"),
                "routes[0].passes[0].name: `Hour`",
            ),
            (
                "/routes/0/passes/1/name",
                json!("hour"),
                "routes[0].passes[1].name: `hour` is offered twice",
            ),
            (
                "/routes/0/passes/0/seconds",
                json!(0),
                "routes[0].passes[0].seconds: must be a whole number from 1 to 2678400",
            ),
            (
                "/routes/0/passes/0/seconds",
                json!(2_678_401),
                "routes[0].passes[0].seconds",
            ),
            (
                "/routes/0/passes/1/requests",
                json!(0),
                "routes[0].passes[1].requests",
            ),
            (
                "/routes/0/passes/0/price",
                json!("0"),
                "routes[0].passes[0].price: must be above zero",
            ),
            (
                "/routes/0/passes/0/secs",
                json!(5),
                "routes[0].passes[0].secs: unknown setting",
            ),
            (
                "/routes/0/passGroup",
                json!("API group"),
                "routes[0].passGroup: `API group` is not a pass group name",
            ),
            (
                "/routes/0/passCookiePath",
                json!("api"),
                "routes[0].passCookiePath: must be a path",
            ),
            (
                "/routes/0/passCookiePath",
                json!("/a;b"),
                "routes[0].passCookiePath",
            ),
            (
                "/passReportSecs",
                json!(0),
                "passReportSecs: must be a whole number from 1 to 60",
            ),
            (
                "/routes/2/passGroup",
                json!("api"),
                "routes[2].passGroup: only applies with \"passes\"",
            ),
            (
                "/routes/1/passes",
                json!([hour]),
                "routes[1].passes: only applies to paid routes",
            ),
        ];
        for (pointer, value, want) in cases {
            let e = parse_value(&with(ok.clone(), pointer, value.clone()))
                .err()
                .unwrap_or_else(|| panic!("{pointer} = {value} was accepted"));
            assert!(e.to_string().starts_with(want), "{pointer}: {e}");
        }
        let mut no_grant = ok.clone();
        no_grant["routes"][0]["passes"][0]
            .as_object_mut()
            .unwrap()
            .remove("seconds");
        let e = parse_value(&no_grant).err().unwrap().to_string();
        assert!(e.starts_with("routes[0].passes[0]: needs seconds"), "{e}");
        // Routes of one group must agree on what a pass is.
        let other = with(
            with(ok.clone(), "/routes/2/passes", json!([hour])),
            "/routes/2/passGroup",
            json!("api"),
        );
        let e = parse_value(&other).err().unwrap().to_string();
        assert!(
            e.starts_with(
                "routes[2].passes: differ from routes[0].passes of the same passGroup `api`"
            ),
            "{e}"
        );
        let same = with(
            with(ok.clone(), "/routes/2/passes", json!([hour, ten])),
            "/routes/2/passGroup",
            json!("api"),
        );
        assert!(parse_value(&same).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&str, Value, &str)] = &[
            ("/sidecar/timeoutMs", json!(0), "sidecar.timeoutMs"),
            ("/sidecar/timeoutMs", json!("100"), "sidecar.timeoutMs"),
            (
                "/sidecar/controlTimeoutMs",
                json!(-5),
                "sidecar.controlTimeoutMs",
            ),
            ("/sidecar/secret", json!("short"), "sidecar.secret"),
            (
                "/sidecar/secret",
                json!("has a space in the secret"),
                "sidecar.secret",
            ),
            ("/sidecar/cluster", json!(""), "sidecar.cluster"),
            ("/sidecar/authority", json!("a b"), "sidecar.authority"),
            ("/sidecar", json!([]), "sidecar"),
            ("/network", json!("devnet"), "network"),
            ("/network", json!("NANO:devnet"), "network"),
            // Only Nano networks: nanogate cannot settle anywhere else.
            ("/network", json!("eip155:8453"), "network"),
            ("/network", json!(7), "network"),
            ("/payTo", json!("nano_1111"), "payTo"),
            ("/retryAfterSeconds", json!(0), "retryAfterSeconds"),
            ("/routes", json!({}), "routes"),
            ("/routes/0", json!("x"), "routes[0]"),
            ("/routes/0/price", json!("0.0"), "routes[0].price"),
            ("/routes/0/price", json!("1e3"), "routes[0].price"),
            ("/routes/0/price", json!("-1"), "routes[0].price"),
            ("/routes/0/price", json!(0.5), "routes[0].price"),
            (
                "/routes/0/price",
                json!("0.0000000000000000000000000000001"),
                "routes[0].price",
            ),
            ("/routes/2/priceRaw", json!("1.5"), "routes[2].priceRaw"),
            (
                "/routes/2/priceRaw",
                json!("340282366920938463463374607431768211456"),
                "routes[2].priceRaw",
            ),
            ("/routes/0/priceRaw", json!("5"), "routes[0].priceRaw"),
            (
                "/routes/0/maxTimeoutSeconds",
                json!(0),
                "routes[0].maxTimeoutSeconds",
            ),
            (
                "/routes/0/maxTimeoutSeconds",
                json!(3601),
                "routes[0].maxTimeoutSeconds",
            ),
            (
                "/routes/0/failureMode",
                json!("ajar"),
                "routes[0].failureMode",
            ),
            ("/routes/0/methods", json!([]), "routes[0].methods"),
            ("/routes/0/methods", json!("GET"), "routes[0].methods"),
            ("/routes/0/methods", json!(["G T"]), "routes[0].methods[0]"),
            ("/routes/0/host", json!("a b"), "routes[0].host"),
            ("/routes/0/host", json!(""), "routes[0].host"),
            (
                "/routes/0/path",
                json!({"exact": "no-slash"}),
                "routes[0].path.exact",
            ),
            (
                "/routes/0/path",
                json!({"prefix": "x"}),
                "routes[0].path.prefix",
            ),
            (
                "/routes/0/path",
                json!({"regex": "(unclosed"}),
                "routes[0].path.regex",
            ),
            ("/routes/0/path", json!({}), "routes[0].path"),
            (
                "/routes/0/path",
                json!({"exact": "/a", "prefix": "/a"}),
                "routes[0].path",
            ),
            ("/routes/0/payTo", json!("xrb_nope"), "routes[0].payTo"),
            ("/routes/1/free", json!("yes"), "routes[1].free"),
            ("/routes/1/price", json!("1"), "routes[1].free"),
            ("/routes/1/description", json!("d"), "routes[1].description"),
            (
                "/routes/0/caseSensitive",
                json!("yes"),
                "routes[0].caseSensitive",
            ),
            (
                "/routes/1/caseSensitive",
                json!(0),
                "routes[1].caseSensitive",
            ),
            (
                "/routes/0/pathParams",
                json!("drop"),
                "routes[0].pathParams",
            ),
            ("/routes/2/pathParams", json!(true), "routes[2].pathParams"),
            (
                "/routes/2/pathParams",
                json!("Strip"),
                "routes[2].pathParams",
            ),
            ("/routes/0/host", json!("."), "routes[0].host"),
        ];
        for (ptr, v, want) in cases {
            let cfg = with(base(), ptr, v.clone());
            let e = parse_value(&cfg).err();
            assert_eq!(
                e.as_ref().map(|e| e.setting.as_str()),
                Some(*want),
                "{ptr} = {v}: {e:?}"
            );
            assert!(!e.map(|e| e.problem).unwrap_or_default().is_empty());
        }
    }

    #[test]
    fn not_json_or_not_an_object_is_a_clear_error() {
        for bad in [&b""[..], b"  ", b"{", b"[]", b"\"x\"", b"null", b"\xff\xfe"] {
            let e = parse(bad).unwrap_err();
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn error_line_names_the_setting_and_never_the_secret() {
        let e = parse_value(&with(base(), "/routes/0/price", json!("abc"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "routes[0].price: `abc`: amount is not a plain decimal number"
        );
        let e = parse_value(&with(base(), "/sidecar/secret", json!("tiny secret"))).unwrap_err();
        assert!(!e.to_string().contains("tiny"));
    }

    fn parse_env(v: &Value, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_with_env(v.to_string().as_bytes(), &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn from_env(name: &str) -> Value {
        with(
            without(base(), "/sidecar/secret"),
            "/sidecar/secretEnv",
            json!(name),
        )
    }

    #[test]
    fn secret_comes_from_the_named_environment_variable() {
        let c = parse_env(
            &from_env("NANOGATE_FILTER_SECRET"),
            &[("NANOGATE_FILTER_SECRET", "from-the-environment-0123")],
        )
        .unwrap();
        assert_eq!(c.sidecar.secret, "from-the-environment-0123");
        assert_eq!(
            c.sidecar.secret_env.as_deref(),
            Some("NANOGATE_FILTER_SECRET")
        );
        // A literal secret still works (local use), and says so.
        let c = parse_value(&base()).unwrap();
        assert_eq!(c.sidecar.secret_env, None);
    }

    #[test]
    fn missing_empty_or_unfit_environment_secret_stops_the_plugin() {
        let cfg = from_env("NANOGATE_FILTER_SECRET");
        let e = parse_env(&cfg, &[]).unwrap_err();
        assert_eq!(e.setting, "sidecar.secretEnv");
        assert!(
            e.problem.contains("NANOGATE_FILTER_SECRET is not set"),
            "{e}"
        );
        let e = parse_env(&cfg, &[("NANOGATE_FILTER_SECRET", "")]).unwrap_err();
        assert!(e.problem.contains("is empty"), "{e}");
        let e = parse_env(&cfg, &[("NANOGATE_FILTER_SECRET", "short")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sidecar.secretEnv (NANOGATE_FILTER_SECRET): must be at least"),
            "{e}"
        );
        assert!(!e.to_string().contains("short"), "{e}");
        let spaced = "a secret with spaces in it";
        let e = parse_env(&cfg, &[("NANOGATE_FILTER_SECRET", spaced)]).unwrap_err();
        assert!(!e.to_string().contains(spaced), "{e}");
        for bad in [json!(""), json!("BAD-NAME"), json!(7)] {
            let e = parse_env(&with(cfg.clone(), "/sidecar/secretEnv", bad), &[]).unwrap_err();
            assert_eq!(e.setting, "sidecar.secretEnv", "{e}");
        }
        // Both at once is ambiguous.
        let both = with(
            base(),
            "/sidecar/secretEnv",
            json!("NANOGATE_FILTER_SECRET"),
        );
        let e = parse_env(
            &both,
            &[("NANOGATE_FILTER_SECRET", "from-the-environment-0123")],
        )
        .unwrap_err();
        assert_eq!(e.setting, "sidecar.secret");
    }

    #[test]
    fn canonicalizes_xrb_addresses_to_nano() {
        let xrb = PAY_TO.replacen("nano_", "xrb_", 1);
        let c = parse_value(&with(base(), "/payTo", json!(xrb))).unwrap();
        assert_eq!(c.pay_to.map(|p| p.address).as_deref(), Some(PAY_TO));
    }

    /// The README's full example is a valid configuration, and its sample error lines are
    /// what the parser really says.
    #[test]
    fn readme_example_parses_and_its_error_lines_are_real() {
        let readme = include_str!("../README.md");
        let start = readme.find("### Full example").unwrap();
        let block = &readme[start..];
        let json_start = block.find("```json").unwrap() + "```json".len();
        let json_end = json_start + block[json_start..].find("```").unwrap();
        let example = &block[json_start..json_end];
        let env = [("NANOGATE_FILTER_SECRET", "readme-example-filter-secret")];
        let c = parse_env(&serde_json::from_str(example).unwrap(), &env).unwrap();
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.network, "nano:mainnet");
        let v: Value = serde_json::from_str(example).unwrap();
        let bad = with(v.clone(), "/routes/1/price", json!("0.001 XNO"));
        assert!(readme.contains(&format!(
            "invalid plugin configuration: {}",
            parse_env(&bad, &env).unwrap_err()
        )));
        let bad = with(v.clone(), "/sidecar/timeoutMs", json!(0));
        assert!(readme.contains(&format!(
            "invalid plugin configuration: {}",
            parse_env(&bad, &env).unwrap_err()
        )));
        let bad = with(v, "/routes/0/pricee", json!("1"));
        assert!(readme.contains(&format!(
            "invalid plugin configuration: {}",
            parse_env(&bad, &env).unwrap_err()
        )));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_json_values_in_any_setting_never_panic(
            key in "[a-zA-Z]{1,12}",
            n in proptest::num::i64::ANY,
            s in ".{0,40}",
        ) {
            for v in [json!(n), json!(s), json!([s]), json!({key.clone(): s}), Value::Null, json!(true)] {
                for ptr in ["/sidecar", "/network", "/payTo", "/routes", "/routes/0", "/routes/0/path",
                            "/routes/0/price", "/routes/0/methods", "/routes/0/host", "/sidecar/timeoutMs",
                            "/routes/0/caseSensitive", "/routes/0/pathParams"] {
                    let _ = parse_value(&with(base(), ptr, v.clone()));
                }
                let _ = parse_value(&with(base(), &format!("/routes/0/{key}"), v.clone()));
            }
        }
    }
}
