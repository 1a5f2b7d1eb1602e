//! The per-request decision: what a request on a free, unpaid or paid route gets, driven
//! through the [`Host`] trait so it runs natively in tests and under Envoy alike.
//!
//! Every path that returns [`Next::Pause`] has a sidecar call in flight, and every sidecar
//! answer ends in `resume_request` or `send_response` (gotcha 11 in `docs/envoy.md`).

use crate::challenge;
use crate::config::{Config, FailureMode, Price, RouteKind};
use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::routes;
use crate::sidecar::{self, Answer, Call, Verdict};
use nanogate_protocol::x402::{
    decode_payment, encode_bytes, headers, ErrorReason, PaymentRequired, MAX_HEADER_BYTES,
};
use std::rc::Rc;

/// Log levels the core uses (per-request messages are debug only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the filter can ask of its host (Envoy through proxy-wasm, or a test mock).
pub trait Host {
    /// Unix time in seconds.
    fn now_unix(&self) -> u64;
    /// A request header's raw value (`:method`, `:path`, … included).
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn remove_request_header(&mut self, name: &str);
    /// Sets (replaces) a header of the request forwarded upstream.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Adds a header to the upstream's response (from the response-headers callback).
    fn add_response_header(&mut self, name: &str, value: &str);
    /// The challenge keys held by this VM, if any.
    fn key_ring(&mut self) -> Option<KeyRing>;
    /// 16 random bytes, or `None` when no randomness is available.
    fn random_nonce(&mut self) -> Option<[u8; 16]>;
    /// Takes one pre-issued tagged session from the pool at `pool_key` (shared data) that is
    /// valid for at least `min_left` more seconds and signed with a key `ring` holds. Hosts
    /// without a pool have none.
    fn pop_session(
        &mut self,
        _pool_key: &str,
        _now: u64,
        _min_left: u64,
        _ring: &KeyRing,
    ) -> Option<crate::tagged::Session> {
        None
    }
    /// The client's address as Envoy sees it (`source.address`, `ip:port`), if known.
    fn source_address(&self) -> Option<String> {
        None
    }
    /// Dispatches a call whose answer comes back to this request; returns its token.
    fn dispatch(&mut self, call: &Call) -> Result<u32, String>;
    /// Dispatches a call that must outlive this request (its answer is only counted).
    fn dispatch_detached(&mut self, call: &Call) -> Result<(), String>;
    /// A local reply; the request is not forwarded.
    fn send_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Continues a paused request.
    fn resume_request(&mut self);
    fn count(&mut self, metric: Metric);
    fn log_enabled(&self, level: Level) -> bool;
    fn log(&self, level: Level, message: &str);
}

/// What to tell Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Pause,
}

/// Payment headers we strip before the upstream.
const PAYMENT_HEADERS: [&str; 2] = ["payment-signature", "x-payment"];
/// Names the block that paid for an admitted request, for the upstream (and the tests that
/// check one payment buys one response). Only the filter sets it on paid routes.
pub const TRANSACTION_HEADER: &str = "x-nanogate-transaction";
/// Headers a browser client may read on our responses.
pub(crate) const EXPOSE: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";

macro_rules! debug {
    ($host:expr, $($arg:tt)*) => {
        if $host.log_enabled(Level::Debug) {
            $host.log(Level::Debug, &format!($($arg)*));
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the request headers, or nothing more to do.
    Idle,
    /// A `/v1/pay` call is in flight.
    Awaiting {
        token: u32,
        route: usize,
        resource: String,
        v1_header: bool,
    },
    /// Admitted: the receipt is added to the response and the outcome reported.
    Admitted {
        receipt: String,
        /// Returned with the outcome only (it never leaves the proxy otherwise).
        admission_token: Option<String>,
        payment_response: Option<String>,
        v1_header: bool,
        reported: bool,
    },
}

/// One request's progress through the filter.
pub struct Flow {
    cfg: Rc<Config>,
    state: State,
    /// The time read at the start of the current callback (one hostcall per callback).
    now: u64,
}

struct Req {
    method: String,
    scheme: String,
    authority: String,
    path: String,
}

fn header_string<H: Host + ?Sized>(host: &H, name: &str) -> Option<String> {
    host.request_header(name)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

impl Flow {
    pub fn new(cfg: Rc<Config>) -> Flow {
        Flow {
            cfg,
            state: State::Idle,
            now: 0,
        }
    }

    /// Request headers arrived: decide, and maybe call the sidecar.
    pub fn on_request_headers<H: Host + ?Sized>(&mut self, host: &mut H) -> Next {
        let Some(path) = header_string(host, ":path") else {
            return Next::Continue;
        };
        let req = Req {
            method: header_string(host, ":method").unwrap_or_default(),
            scheme: header_string(host, ":scheme").unwrap_or_else(|| "http".into()),
            authority: header_string(host, ":authority")
                .or_else(|| header_string(host, "host"))
                .unwrap_or_default(),
            path,
        };
        let cfg = Rc::clone(&self.cfg);
        let Some((index, route)) =
            routes::find(&cfg.routes, &req.method, &req.authority, &req.path)
        else {
            return Next::Continue;
        };
        let RouteKind::Paid(price) = &route.kind else {
            debug!(host, "nanogate: free route {}", route.name);
            return Next::Continue;
        };
        // Whatever reaches the upstream of a paid route, its transaction header is ours (the
        // headers are already cached: no extra hostcall unless the client sent one).
        if host.request_header(TRANSACTION_HEADER).is_some() {
            host.remove_request_header(TRANSACTION_HEADER);
        }
        let resource = challenge::resource_url(&req.scheme, &req.authority, &req.path);
        let now = host.now_unix();
        self.now = now;
        let Some(ring) = host.key_ring().filter(|r| r.issuing(now).is_some()) else {
            host.count(Metric::KeyUnavailable);
            debug!(
                host,
                "nanogate: no challenge key yet for route {}", route.name
            );
            return self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None);
        };

        // PAYMENT-SIGNATURE (v2) wins over X-PAYMENT (v1); feeless402 sends both.
        let (raw, v1_header) = match host.request_header("payment-signature") {
            Some(v) => (v, false),
            None => match host.request_header("x-payment") {
                Some(v) => (v, true),
                None => {
                    debug!(host, "nanogate: challenge for {resource}");
                    return self.challenge(
                        host,
                        price,
                        &resource,
                        &ring,
                        Some(ErrorReason::PaymentRequired),
                        402,
                    );
                }
            },
        };
        // Cap before anything else touches the value.
        if raw.len() > MAX_HEADER_BYTES {
            return self.refuse(
                host,
                price,
                &resource,
                &ring,
                ErrorReason::InvalidPayload,
                400,
            );
        }
        let Ok(text) = std::str::from_utf8(&raw) else {
            return self.refuse(
                host,
                price,
                &resource,
                &ring,
                ErrorReason::InvalidPayload,
                400,
            );
        };
        let payment = match decode_payment(text, MAX_HEADER_BYTES) {
            Ok(p) => p,
            Err(e) => {
                debug!(host, "nanogate: malformed payment ({})", e.category());
                return self.refuse(host, price, &resource, &ring, e.reason(), 400);
            }
        };
        // A tagged-session payment (mechanism 2) is bound to the route scope, not the URL.
        let (requirements, bound) =
            match crate::tagged::presented(&cfg, price, &payment, &ring, now) {
                Some(Ok(found)) => found,
                Some(Err(reason)) => {
                    debug!(host, "nanogate: tagged payment refused locally: {reason}");
                    return self.refuse(host, price, &resource, &ring, reason, 402);
                }
                None => {
                    let extra = match challenge::check_presented(
                        &cfg, price, &resource, &payment, &ring, now,
                    ) {
                        Ok(extra) => extra,
                        Err(reason) => {
                            debug!(host, "nanogate: payment refused locally: {reason}");
                            return self.refuse(host, price, &resource, &ring, reason, 402);
                        }
                    };
                    (
                        challenge::requirements(&cfg, price, extra),
                        resource.clone(),
                    )
                }
            };
        let source = host.source_address();
        let call = sidecar::pay_call(
            &cfg.sidecar,
            &bound,
            &requirements,
            &payment,
            price.upstream_timeout_ms,
            source.as_deref(),
        );
        match host.dispatch(&call) {
            Ok(token) => {
                self.state = State::Awaiting {
                    token,
                    route: index,
                    resource,
                    v1_header,
                };
                Next::Pause
            }
            Err(e) => {
                host.count(Metric::SidecarErrors);
                debug!(host, "nanogate: sidecar call failed: {e}");
                self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None)
            }
        }
    }

    /// The sidecar answered (or Envoy answered for it). Always ends the pause.
    pub fn on_sidecar_answer<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        token: u32,
        status: Option<u32>,
        verdict_header: Option<&[u8]>,
        body: Option<&[u8]>,
    ) {
        // Only the answer to this request's own `/v1/pay` call counts; anything else (a stray
        // token, an outcome report's answer) leaves the state alone.
        if !matches!(self.state, State::Awaiting { token: t, .. } if t == token) {
            return;
        }
        let State::Awaiting {
            route,
            resource,
            v1_header,
            ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        let cfg = Rc::clone(&self.cfg);
        let Some(RouteKind::Paid(price)) = cfg.routes.get(route).map(|r| &r.kind) else {
            // Unreachable: the route index came from this configuration. Fail closed.
            host.send_response(503, &[("retry-after", "1")], b"");
            return;
        };
        match sidecar::interpret(status, verdict_header, body) {
            Answer::Verdict(Verdict::Admit {
                receipt,
                payment_response,
                transaction,
                admission_token,
            }) => {
                host.count(Metric::PaymentsAdmitted);
                debug!(host, "nanogate: admitted {resource}");
                for h in PAYMENT_HEADERS {
                    host.remove_request_header(h);
                }
                if let Some(tx) = transaction.as_deref() {
                    host.set_request_header(TRANSACTION_HEADER, tx);
                }
                self.state = State::Admitted {
                    receipt,
                    admission_token,
                    payment_response,
                    v1_header,
                    reported: false,
                };
                host.resume_request();
            }
            Answer::Verdict(Verdict::Reject { reason, status }) => {
                match reason.parse::<ErrorReason>() {
                    Ok(r) => host.count(Metric::Rejected(r)),
                    Err(_) => host.count(Metric::RejectedOther),
                }
                debug!(host, "nanogate: sidecar refused {resource}: {reason}");
                let now = host.now_unix();
                self.now = now;
                match host.key_ring().filter(|r| r.issuing(now).is_some()) {
                    Some(ring) => {
                        let next = self.challenge_with(
                            host,
                            price,
                            &resource,
                            &ring,
                            Some(&reason),
                            status,
                        );
                        if next == Next::Continue {
                            host.resume_request();
                        }
                    }
                    None => {
                        // No key to issue a fresh challenge with: still say why, with no offer.
                        let pr = PaymentRequired {
                            error: Some(reason),
                            ..PaymentRequired::new(None, resource_info(price, &resource), vec![])
                        };
                        send_payment_required(host, &pr, status);
                    }
                }
            }
            Answer::Verdict(Verdict::Unavailable {
                reason,
                retry_after,
            }) => {
                host.count(Metric::SidecarUnavailable);
                debug!(host, "nanogate: sidecar unavailable: {reason}");
                let reason = reason
                    .parse::<ErrorReason>()
                    .unwrap_or(ErrorReason::UnexpectedVerifyError);
                if self.unavailable(host, price, reason, retry_after) == Next::Continue {
                    host.resume_request();
                }
            }
            Answer::Verdict(Verdict::Limited { retry_after }) => {
                host.count(Metric::Rejected(ErrorReason::RateLimited));
                debug!(host, "nanogate: rate limited for {resource}");
                send_limited(host, retry_after);
            }
            Answer::Timeout => {
                host.count(Metric::SidecarTimeouts);
                debug!(host, "nanogate: sidecar timed out");
                if self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None)
                    == Next::Continue
                {
                    host.resume_request();
                }
            }
            Answer::Error(why) => {
                host.count(Metric::SidecarErrors);
                debug!(host, "nanogate: sidecar error: {why}");
                if self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None)
                    == Next::Continue
                {
                    host.resume_request();
                }
            }
        }
    }

    /// The upstream's response headers: add the receipt and report the outcome.
    pub fn on_response_headers<H: Host + ?Sized>(&mut self, host: &mut H, status: Option<u32>) {
        if let State::Admitted {
            receipt,
            admission_token,
            payment_response,
            v1_header,
            reported,
        } = &mut self.state
        {
            if *reported {
                return;
            }
            if let Some(pr) = payment_response.as_deref() {
                host.add_response_header(headers::PAYMENT_RESPONSE, pr);
                if *v1_header {
                    host.add_response_header(headers::X_PAYMENT_RESPONSE, pr);
                }
                host.add_response_header("access-control-expose-headers", EXPOSE);
            }
            *reported = true;
            let call = sidecar::outcome_call(
                &self.cfg.sidecar,
                receipt,
                status.unwrap_or(0),
                admission_token.as_deref(),
            );
            report(host, &call);
        }
    }

    /// The stream is over. An admitted request that never saw response headers (reset,
    /// timeout) reports status 0 so the payer can redeem the payment again.
    pub fn on_done<H: Host + ?Sized>(&mut self, host: &mut H) {
        if let State::Admitted {
            receipt,
            admission_token,
            reported: false,
            ..
        } = &self.state
        {
            let call =
                sidecar::outcome_call(&self.cfg.sidecar, receipt, 0, admission_token.as_deref());
            report(host, &call);
        }
        self.state = State::Idle;
    }

    /// Sends a 402 (or 400) with a fresh challenge.
    fn challenge<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        resource: &str,
        ring: &KeyRing,
        reason: Option<ErrorReason>,
        status: u32,
    ) -> Next {
        let reason = reason.map(|r| r.as_str().to_owned());
        self.challenge_with(host, price, resource, ring, reason.as_deref(), status)
    }

    fn challenge_with<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        resource: &str,
        ring: &KeyRing,
        reason: Option<&str>,
        status: u32,
    ) -> Next {
        let now = self.now;
        let (Some(key), Some(nonce)) = (ring.issuing(now), host.random_nonce()) else {
            host.count(Metric::KeyUnavailable);
            return self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None);
        };
        let body = challenge::render_challenge(&self.cfg, price, resource, key, now, nonce, reason);
        host.count(Metric::ChallengesIssued);
        crate::tagged::send_challenge(host, &self.cfg, price, resource, body, status, now, ring);
        self.state = State::Idle;
        Next::Pause
    }

    /// A payment refused locally: counted, then a fresh challenge saying why.
    fn refuse<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        resource: &str,
        ring: &KeyRing,
        reason: ErrorReason,
        status: u32,
    ) -> Next {
        host.count(Metric::Rejected(reason));
        self.challenge(host, price, resource, ring, Some(reason), status)
    }

    /// Payments cannot be decided now: 503 + Retry-After, or a counted pass on a fail-open
    /// route (payment headers stripped either way). Returns what the caller should do next;
    /// from a sidecar callback, `Continue` means "resume".
    fn unavailable<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        reason: ErrorReason,
        retry_after: Option<u32>,
    ) -> Next {
        self.state = State::Idle;
        if price.failure_mode == FailureMode::Open {
            host.count(Metric::FailOpenPasses);
            debug!(host, "nanogate: fail-open pass");
            for h in PAYMENT_HEADERS {
                host.remove_request_header(h);
            }
            return Next::Continue;
        }
        let retry = retry_after.unwrap_or(self.cfg.retry_after_secs).to_string();
        let body = serde_json::json!({
            "error": reason.as_str(),
            "message": "payment verification is temporarily unavailable; retry later",
        })
        .to_string();
        host.send_response(
            503,
            &[
                ("retry-after", &retry),
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            body.as_bytes(),
        );
        Next::Pause
    }
}

fn resource_info(price: &Price, resource: &str) -> nanogate_protocol::x402::ResourceInfo {
    nanogate_protocol::x402::ResourceInfo {
        url: resource.to_owned(),
        description: price.description.clone(),
        mime_type: price.mime_type.clone(),
    }
}

/// 429 + `Retry-After`: too many presentations; no fresh challenge (it would only feed the
/// flood).
fn send_limited<H: Host + ?Sized>(host: &mut H, retry_after: u32) {
    let retry = retry_after.to_string();
    host.send_response(
        429,
        &[
            ("retry-after", &retry),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        br#"{"error":"rate_limited","message":"too many payment attempts; retry after Retry-After seconds"}"#,
    );
}

fn send_payment_required<H: Host + ?Sized>(host: &mut H, pr: &PaymentRequired, status: u32) {
    let body = serde_json::to_vec(pr).unwrap_or_default();
    send_payment_required_json(host, &body, status);
}

/// The 402/400 for a serialized `PaymentRequired`: the header is the base64 of exactly the
/// body's bytes.
pub(crate) fn send_payment_required_json<H: Host + ?Sized>(host: &mut H, body: &[u8], status: u32) {
    let header = encode_bytes(body);
    host.send_response(
        status,
        &[
            ("payment-required", &header),
            ("content-type", "application/json"),
            ("access-control-expose-headers", EXPOSE),
            ("cache-control", "no-store"),
        ],
        body,
    );
}

fn report<H: Host + ?Sized>(host: &mut H, call: &Call) {
    match host.dispatch_detached(call) {
        Ok(()) => {}
        Err(e) => {
            host.count(Metric::OutcomeErrors);
            debug!(host, "nanogate: outcome report failed: {e}");
        }
    }
}
