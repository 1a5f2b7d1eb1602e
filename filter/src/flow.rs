//! The per-request decision: what a request on a free, unpaid or paid route gets, driven
//! through the [`Host`] trait so it runs natively in tests and under Envoy alike.
//!
//! A paid request goes through named steps: read the payment header (`read_payment`), check
//! the offer it presents ([`crate::presented`]), ask the sidecar (`Flow::ask_sidecar`), act on
//! its verdict. Every path that returns [`Next::Pause`] either has a sidecar call in flight or
//! has already replied, and every sidecar answer ends in `resume_request` or `send_response`:
//! a request left paused would hang until Envoy's stream timeout.

use crate::challenge;
use crate::config::{Config, FailureMode, Price, RouteKind};
use crate::host::{Host, Level};
use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::presented::{self, Presented};
use crate::respond::{self, Challenge, EXPOSE};
use crate::router;
use crate::routes::PathForms;
use crate::sidecar;
use nanogate_protocol::contract::pass::{self, PassRefusal};
use nanogate_protocol::contract::{self, PayAnswer, Verdict};
use nanogate_protocol::x402::{
    decode_payment_echo, headers, ErrorReason, PaymentEcho, MAX_HEADER_BYTES,
};
use std::rc::Rc;

/// What to tell Envoy after the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Pause,
}

/// Payment headers we strip before the upstream.
const PAYMENT_HEADERS: [&str; 2] = [headers::PAYMENT_SIGNATURE, headers::X_PAYMENT];
/// Names the block that paid for an admitted request, for the upstream (and the tests that
/// check one payment buys one response). Only the filter sets it on paid routes.
const TRANSACTION_HEADER: &str = contract::headers::TRANSACTION;

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
    Awaiting { token: u32, pending: Pending },
    /// Admitted: the receipt is added to the response and the outcome reported.
    Admitted {
        receipt: String,
        /// Returned with the outcome only (it never leaves the proxy otherwise).
        admission_token: Option<String>,
        payment_response: Option<String>,
        v1_header: bool,
        reported: bool,
        /// The bought pass's `Set-Cookie`, if the payment bought one.
        set_cookie: Option<String>,
    },
}

/// What a request awaiting its verdict remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    /// Index of the paid route in the configuration.
    route: usize,
    resource: String,
    /// The payment came in `X-PAYMENT` (v1).
    v1_header: bool,
    /// When the payment buys a pass: its cookie's group, path and whether it is `Secure`.
    pass_cookie: Option<(String, String, bool)>,
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

impl Req {
    /// The request line; `None` without a `:path` (nothing to match).
    fn read<H: Host + ?Sized>(host: &H) -> Option<Req> {
        Some(Req {
            path: header_string(host, ":path")?,
            method: header_string(host, ":method").unwrap_or_default(),
            scheme: header_string(host, ":scheme").unwrap_or_else(|| "http".into()),
            authority: header_string(host, ":authority")
                .or_else(|| header_string(host, "host"))
                .unwrap_or_default(),
        })
    }
}

fn header_string<H: Host + ?Sized>(host: &H, name: &str) -> Option<String> {
    // Valid UTF-8 (the usual case) is taken as is, without the copy `from_utf8_lossy` makes.
    host.request_header(name).map(|v| {
        String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}

/// A payment as the request carries it.
struct Carried {
    /// Read as far as its echoed offer: the sidecar decodes and verifies the whole payment.
    echo: PaymentEcho,
    /// The header value exactly as received: what the sidecar is sent (it decodes it itself).
    raw: String,
    /// It came in `X-PAYMENT` (v1): the receipt then goes out in both response headers.
    v1_header: bool,
}

/// The payment a request carries: `Ok(None)` without one; `Err` is why it is malformed (400).
/// `PAYMENT-SIGNATURE` (v2) wins over `X-PAYMENT` (v1); feeless402 sends both.
fn read_payment<H: Host + ?Sized>(host: &H) -> Result<Option<Carried>, ErrorReason> {
    let (raw, v1_header) = match host.request_header(headers::PAYMENT_SIGNATURE) {
        Some(v) => (v, false),
        None => match host.request_header(headers::X_PAYMENT) {
            Some(v) => (v, true),
            None => return Ok(None),
        },
    };
    // Cap before anything else touches the value.
    if raw.len() > MAX_HEADER_BYTES {
        return Err(ErrorReason::InvalidPayload);
    }
    let raw = String::from_utf8(raw).map_err(|_| ErrorReason::InvalidPayload)?;
    match decode_payment_echo(&raw, MAX_HEADER_BYTES) {
        Ok(echo) => Ok(Some(Carried {
            echo,
            raw,
            v1_header,
        })),
        Err(e) => {
            debug!(host, "nanogate: malformed payment ({})", e.category());
            Err(e.reason())
        }
    }
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
        let Some(req) = Req::read(host) else {
            return Next::Continue;
        };
        let cfg = Rc::clone(&self.cfg);
        let forms = PathForms::of(&req.path);
        if cfg.well_known
            && forms.canonical == contract::discovery::WELL_KNOWN
            && matches!(req.method.as_str(), "GET" | "HEAD")
        {
            // Public by design: the same prices every 402 shows, for agents to find them.
            let body = crate::well_known::document(&cfg, &req.scheme, &req.authority);
            host.send_response(
                200,
                &[
                    ("content-type", "application/json"),
                    ("cache-control", "public, max-age=60"),
                    ("access-control-allow-origin", "*"),
                ],
                &body,
            );
            return Next::Pause;
        }
        let Some((index, route)) =
            router::find_in(&cfg.routes, &req.method, &req.authority, &forms)
        else {
            return Next::Continue;
        };
        // Pass credentials never reach an upstream of ours, whatever the route.
        let presented_pass = take_pass_credentials(host, &route.kind);
        let RouteKind::Paid(price) = &route.kind else {
            debug!(host, "nanogate: free route {}", route.name);
            return Next::Continue;
        };
        // Whatever reaches the upstream of a paid route, its transaction header is ours (the
        // headers are already cached: no extra hostcall unless the client sent one).
        if host.request_header(TRANSACTION_HEADER).is_some() {
            host.remove_request_header(TRANSACTION_HEADER);
        }
        let resource =
            challenge::resource_url_of_canonical(&req.scheme, &req.authority, &forms.canonical);
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
        let payment = match read_payment(host) {
            Ok(Some(found)) => found,
            Ok(None) => {
                if let (Some(text), Some(passes)) = (presented_pass, &price.passes) {
                    return match self.use_pass(host, &ring, &passes.group, &text) {
                        Ok(()) => Next::Continue,
                        Err(r) => {
                            self.challenge_with(host, price, &resource, &ring, Some(r.error()), 402)
                        }
                    };
                }
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
            Err(reason) => return self.refuse(host, price, &resource, &ring, reason, 400),
        };
        let offer = match presented::check(&cfg, price, &resource, &payment.echo, &ring, now) {
            Ok(offer) => offer,
            Err(reason) => {
                debug!(host, "nanogate: payment refused locally: {reason}");
                return self.refuse(host, price, &resource, &ring, reason, 402);
            }
        };
        let pass_cookie = match (&offer.pass, &price.passes) {
            (Some(_), Some(passes)) => Some((
                passes.group.clone(),
                passes.cookie_path.clone(),
                crate::passbook::cookie_secure(&req.scheme, &req.authority),
            )),
            _ => None,
        };
        let pending = Pending {
            route: index,
            resource,
            v1_header: payment.v1_header,
            pass_cookie,
        };
        self.ask_sidecar(host, price, pending, &offer, payment.raw)
    }

    /// `POST /v1/pay` for a presented offer we issued; pauses until the answer.
    fn ask_sidecar<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        pending: Pending,
        offer: &Presented,
        payment_header: String,
    ) -> Next {
        let source = host.source_address();
        let call = sidecar::pay_call(
            &self.cfg.sidecar,
            price,
            offer,
            payment_header,
            source.as_deref(),
        );
        match host.dispatch(&call) {
            Ok(token) => {
                self.state = State::Awaiting { token, pending };
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
        let State::Awaiting { pending, .. } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        let cfg = Rc::clone(&self.cfg);
        let Some(RouteKind::Paid(price)) = cfg.routes.get(pending.route).map(|r| &r.kind) else {
            // Unreachable: the route index came from this configuration. Fail closed.
            host.send_response(503, &[("retry-after", "1")], b"");
            return;
        };
        let resource = &pending.resource;
        let next = match contract::read_pay_answer(status, verdict_header, body) {
            PayAnswer::Verdict(Verdict::Admit {
                receipt,
                payment_response,
                transaction,
                admission_token,
                pass,
            }) => {
                host.count(Metric::PaymentsAdmitted);
                debug!(host, "nanogate: admitted {resource}");
                let set_cookie = match (pass, &pending.pass_cookie) {
                    (Some(p), Some((group, path, secure))) if p.group == *group => {
                        host.count(Metric::PassesSold);
                        let max_age = p.expires_at.saturating_sub(host.now_unix());
                        Some(pass::set_cookie(group, &p.token, path, max_age, *secure))
                    }
                    _ => None,
                };
                self.admit(
                    host,
                    receipt,
                    admission_token,
                    payment_response,
                    transaction,
                    pending.v1_header,
                );
                if let State::Admitted { set_cookie: c, .. } = &mut self.state {
                    *c = set_cookie;
                }
                Next::Continue
            }
            PayAnswer::Verdict(Verdict::Reject { reason, status }) => {
                self.rejected(host, price, resource, reason, status)
            }
            PayAnswer::Verdict(Verdict::Unavailable {
                reason,
                retry_after,
            }) => {
                host.count(Metric::SidecarUnavailable);
                debug!(host, "nanogate: sidecar unavailable: {reason}");
                let reason = reason
                    .parse::<ErrorReason>()
                    .unwrap_or(ErrorReason::UnexpectedVerifyError);
                self.unavailable(host, price, reason, retry_after)
            }
            PayAnswer::Verdict(Verdict::Limited { retry_after }) => {
                host.count(Metric::Rejected(ErrorReason::RateLimited));
                debug!(host, "nanogate: rate limited for {resource}");
                respond::send_limited(host, retry_after);
                Next::Pause
            }
            PayAnswer::Timeout => {
                host.count(Metric::SidecarTimeouts);
                debug!(host, "nanogate: sidecar timed out");
                self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None)
            }
            PayAnswer::Error(why) => {
                host.count(Metric::SidecarErrors);
                debug!(host, "nanogate: sidecar error: {why}");
                self.unavailable(host, price, ErrorReason::UnexpectedVerifyError, None)
            }
        };
        // From a callback, `Continue` means "resume"; `Pause` means a reply was sent.
        if next == Next::Continue {
            host.resume_request();
        }
    }

    /// Admitted: strip the payment, name the paying block for the upstream, and remember the
    /// receipt for the response.
    fn admit<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        receipt: String,
        admission_token: Option<String>,
        payment_response: Option<String>,
        transaction: Option<String>,
        v1_header: bool,
    ) {
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
            set_cookie: None,
        };
    }

    /// The sidecar refused the payment: a fresh challenge that says why.
    fn rejected<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        resource: &str,
        reason: String,
        status: u32,
    ) -> Next {
        match reason.parse::<ErrorReason>() {
            Ok(r) => host.count(Metric::Rejected(r)),
            Err(_) => host.count(Metric::RejectedOther),
        }
        debug!(host, "nanogate: sidecar refused {resource}: {reason}");
        let now = host.now_unix();
        self.now = now;
        match host.key_ring().filter(|r| r.issuing(now).is_some()) {
            Some(ring) => self.challenge_with(host, price, resource, &ring, Some(&reason), status),
            None => {
                // No key to issue a fresh challenge with: still say why, with no offer.
                respond::send_reason_only(host, price, resource, reason, status);
                Next::Pause
            }
        }
    }

    /// Whether [`Flow::on_response_headers`] has anything to do: only an admitted request
    /// not yet reported needs the upstream's status (the host skips reading it otherwise,
    /// which on the 402 path is a hostcall saved per request).
    pub fn wants_response_status(&self) -> bool {
        matches!(
            self.state,
            State::Admitted {
                reported: false,
                ..
            }
        )
    }

    /// The upstream's response headers: add the receipt and report the outcome.
    pub fn on_response_headers<H: Host + ?Sized>(&mut self, host: &mut H, status: Option<u32>) {
        if let State::Admitted {
            receipt,
            admission_token,
            payment_response,
            v1_header,
            reported,
            set_cookie,
        } = &mut self.state
        {
            if *reported {
                return;
            }
            if let Some(c) = set_cookie.take() {
                host.add_response_header("set-cookie", &c);
            }
            if let Some(pr) = payment_response.as_deref() {
                host.add_response_header(headers::PAYMENT_RESPONSE, pr);
                if *v1_header {
                    host.add_response_header(headers::X_PAYMENT_RESPONSE, pr);
                }
                host.add_response_header("access-control-expose-headers", EXPOSE);
            }
            *reported = true;
            crate::outcomes::report(
                host,
                &self.cfg.sidecar,
                receipt,
                status.unwrap_or(0),
                admission_token.as_deref(),
            );
        }
    }

    /// The stream is over. An admitted request that never saw response headers (the client
    /// reset first) reports status 0: served, as the upstream may have run it.
    pub fn on_done<H: Host + ?Sized>(&mut self, host: &mut H) {
        if let State::Admitted {
            receipt,
            admission_token,
            reported: false,
            ..
        } = &self.state
        {
            crate::outcomes::report(
                host,
                &self.cfg.sidecar,
                receipt,
                0,
                admission_token.as_deref(),
            );
        }
        self.state = State::Idle;
    }

    /// A request presenting a pass token and no payment: admitted by the filter alone when the
    /// token is good for the route's group (counted in this VM's book), else refused.
    fn use_pass<H: Host + ?Sized>(
        &mut self,
        host: &mut H,
        ring: &KeyRing,
        group: &str,
        text: &str,
    ) -> Result<(), PassRefusal> {
        let now = self.now;
        let verdict = match host.pass_book() {
            Some(book) => crate::passbook::admit(text, ring, group, now, &mut book.borrow_mut()),
            None => crate::passbook::admit(text, ring, group, now, &mut Default::default()),
        };
        match verdict {
            Ok(_) => {
                host.count(Metric::PassServed);
                // Token and cookie are already stripped, and there is no payment header to
                // strip: a pass is only read when the request carries no payment.
                Ok(())
            }
            Err(r) => {
                host.count(Metric::PassRefused(r));
                debug!(host, "nanogate: pass refused: {}", r.as_str());
                Err(r)
            }
        }
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
        let challenge = Challenge {
            price,
            resource,
            body,
            status,
            now,
            ring,
        };
        respond::send_challenge(host, &self.cfg.network, challenge);
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
        let retry = retry_after.unwrap_or(self.cfg.retry_after_secs);
        respond::send_unavailable(host, reason, retry);
        Next::Pause
    }
}

/// Removes the pass header and every pass cookie from the request (they never reach the
/// upstream) and returns the token a route offering passes should check: the header's, else
/// its group's cookie.
fn take_pass_credentials<H: Host + ?Sized>(host: &mut H, kind: &RouteKind) -> Option<String> {
    let header = host.request_header(pass::HEADER);
    let cookie = host.request_header(contract::headers::COOKIE);
    if header.is_none() && cookie.is_none() {
        return None;
    }
    let had_header = header.is_some();
    // Most requests' cookies are someone else's: only one naming a pass cookie is read (and
    // rewritten without it).
    let prefix = pass::COOKIE_PREFIX.as_bytes();
    let cookie = cookie
        .filter(|c| c.windows(prefix.len()).any(|w| w == prefix))
        .map(|c| {
            String::from_utf8(c)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        });
    let group = match kind {
        RouteKind::Paid(p) => p.passes.as_ref().map(|p| p.group.as_str()),
        RouteKind::Free => None,
    };
    let from_cookie = match (&cookie, group) {
        (Some(c), Some(g)) => {
            crate::passbook::cookie_value(c, &pass::cookie_name(g)).map(str::to_owned)
        }
        _ => None,
    };
    let token = header
        .map(|h| String::from_utf8_lossy(&h).trim().to_owned())
        .or(from_cookie);
    if had_header {
        host.remove_request_header(pass::HEADER);
    }
    if let Some(rest) = cookie
        .as_deref()
        .and_then(crate::passbook::without_pass_cookies)
    {
        if rest.is_empty() {
            host.remove_request_header(contract::headers::COOKIE);
        } else {
            host.set_request_header(contract::headers::COOKIE, &rest);
        }
    }
    token
}
