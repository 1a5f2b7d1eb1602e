//! Refilling the session pools of tagged routes (the route's own, and one per pass it sells):
//! on each tick the root context's [`PoolKeeper`] finds pools holding fewer than
//! [`LOW_WATER`] usable sessions and, within each pool's budget of `sessionBudget` sessions per
//! window of `maxTimeoutSeconds` and under a short lease (one VM refills at a time), asks the sidecar for a batch
//! (`POST /v1/sessions`), which it merges into the pool ([`crate::pool::push`]).

use crate::config::{Config, Price, RouteKind, TaggedTerms, SESSION_BATCH};
use crate::host::{Level, RootHost};
use crate::jsontext::push_num;
use crate::metrics::Metric;
use crate::pool::{decode_pool, min_left, push, SharedData};
use crate::sidecar;
use std::rc::Rc;

/// Refill below this many usable sessions.
pub const LOW_WATER: usize = 8;
/// A refill lease older than this is taken over (the holder's call timed out or its VM died).
const LEASE_SECS: u64 = 5;

/// A root host's shared data as [`SharedData`].
struct RootShared<'a, H: RootHost + ?Sized>(&'a mut H);

impl<H: RootHost + ?Sized> SharedData for RootShared<'_, H> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.0.shared_get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.0.shared_set(key, value, cas)
    }
}

/// Sessions already requested in `window`, from the budget value `<window> <count>`.
fn budget_used(value: Option<&[u8]>, window: u64) -> u64 {
    let text = value
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("");
    let mut it = text.split(' ');
    match (
        it.next().and_then(|w| w.parse::<u64>().ok()),
        it.next().and_then(|c| c.parse::<u64>().ok()),
    ) {
        (Some(w), Some(c)) if w == window => c,
        _ => 0,
    }
}

/// The root context's pool keeper: refills the pools of tagged routes, within each route's
/// budget of `sessionBudget` sessions per window of `maxTimeoutSeconds`.
pub struct PoolKeeper {
    cfg: Rc<Config>,
    /// In-flight refills: (call token, route index, pool index in [`Price::pools`]).
    pending: Vec<(u32, usize, usize)>,
}

impl PoolKeeper {
    pub fn new(cfg: Rc<Config>) -> PoolKeeper {
        PoolKeeper {
            cfg,
            pending: Vec::new(),
        }
    }

    pub fn owns(&self, token: u32) -> bool {
        self.pending.iter().any(|p| p.0 == token)
    }

    /// Starts a refill for every pool of a tagged route (its own and its passes') that runs
    /// low (one VM at a time).
    pub fn tick<H: RootHost + ?Sized>(&mut self, host: &mut H) {
        let now = host.now_unix();
        let cfg = Rc::clone(&self.cfg);
        for (i, route) in cfg.routes.iter().enumerate() {
            let RouteKind::Paid(price) = &route.kind else {
                continue;
            };
            for (k, t) in price.pools().enumerate() {
                if !self.pending.iter().any(|p| (p.1, p.2) == (i, k)) {
                    self.refill(host, price, t, now, (i, k));
                }
            }
        }
    }

    fn refill<H: RootHost + ?Sized>(
        &mut self,
        host: &mut H,
        price: &Price,
        t: &TaggedTerms,
        now: u64,
        (route, pool): (usize, usize),
    ) {
        let (bytes, _) = host.shared_get(&t.key);
        let have = decode_pool(bytes.as_deref().unwrap_or_default(), now, min_left(price));
        if have.len() >= LOW_WATER {
            return;
        }
        // The budget: a flood of 402s drains the pool, never the store. Checked before the
        // lease so an exhausted pool costs one shared-data read per tick.
        let window = now / price.max_timeout_secs.max(1);
        let (budget, budget_cas) = host.shared_get(&t.budget_key);
        let used = budget_used(budget.as_deref(), window);
        if used.saturating_add(SESSION_BATCH as u64) > t.budget {
            return;
        }
        // The lease: one VM refills at a time.
        let lease_key = &t.lease;
        let (lease, cas) = host.shared_get(lease_key);
        let held_since = lease
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if held_since.saturating_add(LEASE_SECS) > now {
            return;
        }
        let mut stamp = String::new();
        push_num(&mut stamp, u128::from(now));
        if !host.shared_set(lease_key, stamp.as_bytes(), cas) {
            return;
        }
        let mut spent = String::new();
        push_num(&mut spent, u128::from(window));
        spent.push(' ');
        push_num(
            &mut spent,
            u128::from(used.saturating_add(SESSION_BATCH as u64)),
        );
        if !host.shared_set(&t.budget_key, spent.as_bytes(), budget_cas) {
            let _ = host.shared_set(lease_key, b"0", None);
            return;
        }
        match host.dispatch(&sidecar::sessions_call(&self.cfg, price, t)) {
            Ok(token) => self.pending.push((token, route, pool)),
            Err(_) => {
                host.count(Metric::SidecarErrors);
                host.log(
                    Level::Debug,
                    "nanogate: session refill could not be dispatched",
                );
                let _ = host.shared_set(lease_key, b"0", None);
            }
        }
    }

    /// A `/v1/sessions` answer: merge it into its pool and release the lease.
    pub fn on_answer<H: RootHost + ?Sized>(
        &mut self,
        host: &mut H,
        token: u32,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        let Some(pos) = self.pending.iter().position(|p| p.0 == token) else {
            return;
        };
        let (_, route, pool) = self.pending.swap_remove(pos);
        let cfg = Rc::clone(&self.cfg);
        let Some(RouteKind::Paid(price)) = cfg.routes.get(route).map(|r| &r.kind) else {
            return;
        };
        let Some(t) = price.pools().nth(pool) else {
            return;
        };
        let now = host.now_unix();
        if sidecar::is_ok(status) {
            let sessions = sidecar::parse_sessions(body.unwrap_or_default());
            push(
                &mut RootShared(host),
                &t.key,
                &sessions,
                now,
                min_left(price),
            );
        } else {
            host.count(Metric::SidecarErrors);
            host.log(
                Level::Debug,
                "nanogate: the sidecar did not issue sessions (status not 200)",
            );
        }
        let _ = host.shared_set(&t.lease, b"0", None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_BUDGET;
    use crate::pool::pop;
    use crate::sidecar::Call;
    use crate::tests_support::{config_with, paid, MemShared, POOL_A, POOL_B};
    use serde_json::{json, Value};

    /// A root host over shared data that records the refill calls.
    #[derive(Default)]
    struct Root {
        now: u64,
        shared: MemShared,
        calls: Vec<Call>,
    }

    impl RootHost for Root {
        fn now_unix(&self) -> u64 {
            self.now
        }
        fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            self.shared.get(key)
        }
        fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.shared.set(key, value, cas)
        }
        fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
            self.calls.push(call.clone());
            Ok(self.calls.len() as u32)
        }
        fn count(&mut self, _metric: Metric) {}
        fn log(&self, _level: Level, _message: &str) {}
    }

    /// The sidecar's answer to refill call `token`: `count` fresh sessions to `pay_to`.
    fn answer(token: u32, count: u32, pay_to: &str, valid_before: u64) -> Vec<u8> {
        let sessions: Vec<Value> = (0..count)
            .map(|i| {
                json!({"id": format!("{:016x}{:016x}", token, i), "payTo": pay_to,
                       "amount": "1001", "validBefore": valid_before, "keyId": 7,
                       "mac": "ab".repeat(32)})
            })
            .collect();
        json!({ "sessions": sessions }).to_string().into_bytes()
    }

    /// Scenario: two plugin configurations in one `vm_id` (one shared-data space) each have a
    /// tagged route at index 0, with different prices. Neither may offer the other's
    /// sessions: the payer would pay, and the filter that checks the presentation would refuse.
    #[test]
    fn two_configurations_on_one_vm_never_offer_each_others_sessions() {
        let a = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}),
        ));
        let b = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "2000", "tagged": true, "payToPool": [POOL_B], "maxTimeoutSeconds": 600}),
        ));
        let ring = crate::tests_support::ring(7, 10_000);
        let mut h = Root {
            now: 1_000,
            ..Root::default()
        };
        let mut ka = PoolKeeper::new(Rc::clone(&a));
        ka.tick(&mut h);
        assert_eq!(h.calls.len(), 1);
        ka.on_answer(
            &mut h,
            1,
            Some(200),
            Some(&answer(1, SESSION_BATCH as u32, POOL_A, 1_600)),
        );
        let (pa, pb) = (paid(&a, 0), paid(&b, 0));
        let (ta, tb) = (
            pa.tagged.as_ref().expect("tagged"),
            pb.tagged.as_ref().expect("tagged"),
        );
        assert_ne!(ta.key, tb.key, "pools are namespaced per configuration");
        // B's pool is its own: empty until B's own refill, which B therefore starts.
        assert_eq!(
            pop(&mut h.shared, &tb.key, 1_000, min_left(pb), &ring),
            None
        );
        let mut kb = PoolKeeper::new(Rc::clone(&b));
        kb.tick(&mut h);
        assert_eq!(h.calls.len(), 2, "B refills its own pool");
        let body: Value =
            serde_json::from_slice(h.calls[1].body.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(body["price"], "2000");
        kb.on_answer(&mut h, 2, Some(200), Some(&answer(2, 3, POOL_B, 1_600)));
        let got = pop(&mut h.shared, &tb.key, 1_000, min_left(pb), &ring).expect("B's session");
        assert_eq!(got.pay_to, POOL_B);
        // A's pool still holds all of A's sessions.
        let (bytes, _) = h.shared.get(&ta.key);
        assert_eq!(
            decode_pool(&bytes.unwrap_or_default(), 1_000, 0).len(),
            SESSION_BATCH
        );
        // Identical session terms may share a pool (each accepts the other's sessions).
        let a2 = config_with(json!({"name": "tagged", "path": {"prefix": "/other/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}));
        assert_eq!(paid(&a2, 0).tagged.as_ref().map(|t| &t.key), Some(&ta.key));
    }

    /// Scenario (#13): a flood of unpaid requests on a tagged route. Each 402 pops a session;
    /// refills must stay within the route's budget per validity window, so the flood drains
    /// the pool, never the store.
    #[test]
    fn a_flood_of_402s_triggers_at_most_the_budgeted_refills() {
        let cfg = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"},
            "priceRaw": "1000", "tagged": true, "maxTimeoutSeconds": 600}),
        ));
        let p = paid(&cfg, 0);
        let t = p.tagged.as_ref().expect("tagged");
        assert_eq!(t.budget, DEFAULT_BUDGET);
        let ring = crate::tests_support::ring(7, 10_000);
        let start = 6_000; // a window boundary (600 s windows)
        let mut h = Root {
            now: start,
            ..Root::default()
        };
        let mut k = PoolKeeper::new(Rc::clone(&cfg));
        let (mut offered, mut requests) = (0u64, 0u64);
        // Two windows, one tick a second, 20 unpaid requests between ticks: 24 000 402s.
        for second in 0..1_200u64 {
            h.now = start + second;
            let before = h.calls.len();
            k.tick(&mut h);
            if h.calls.len() > before {
                let token = h.calls.len() as u32;
                let vb = h.now + 600;
                k.on_answer(
                    &mut h,
                    token,
                    Some(200),
                    Some(&answer(token, SESSION_BATCH as u32, POOL_A, vb)),
                );
            }
            for _ in 0..20 {
                requests += 1;
                if pop(&mut h.shared, &t.key, h.now, min_left(p), &ring).is_some() {
                    offered += 1;
                }
            }
        }
        let asked: u64 = h
            .calls
            .iter()
            .map(|c| {
                let v: Value = serde_json::from_slice(c.body.as_deref().unwrap_or_default())
                    .unwrap_or_default();
                v["count"].as_u64().unwrap_or(0)
            })
            .sum();
        assert_eq!(requests, 24_000);
        assert!(
            asked <= 2 * DEFAULT_BUDGET,
            "{asked} sessions requested in two windows (budget {DEFAULT_BUDGET} per window)"
        );
        assert!(h.calls.len() as u64 <= 2 * DEFAULT_BUDGET / SESSION_BATCH as u64);
        // The budget was used, not starved: the pool was refilled in each window.
        assert!(offered >= DEFAULT_BUDGET, "{offered} tagged offers");
    }

    /// Scenario (#16): a tagged route that sells passes keeps one pool per pass beside its
    /// own, each refilled with sessions at the pass price for the pass scope, so every 402 can
    /// offer each pass by tagged session.
    #[test]
    fn each_pass_of_a_tagged_route_gets_its_own_pool_at_its_price_and_scope() {
        let cfg = Rc::new(config_with(
            json!({"name": "tagged", "path": {"prefix": "/t/"}, "priceRaw": "1000",
            "tagged": true, "maxTimeoutSeconds": 600,
            "passes": [{"name": "hour", "priceRaw": "5000", "seconds": 3600},
                       {"name": "ten", "priceRaw": "9000", "requests": 10}]}),
        ));
        let p = paid(&cfg, 0);
        let offers = &p.passes.as_ref().expect("passes").offers;
        let ring = crate::tests_support::ring(7, 10_000);
        let mut h = Root {
            now: 1_000,
            ..Root::default()
        };
        let mut k = PoolKeeper::new(Rc::clone(&cfg));
        k.tick(&mut h);
        let asked: Vec<(String, String)> = h
            .calls
            .iter()
            .map(|c| {
                let v: Value = serde_json::from_slice(c.body.as_deref().unwrap_or_default())
                    .unwrap_or_default();
                (v["price"].to_string(), v["scope"].to_string())
            })
            .collect();
        let want = |price: &str, scope: &str| (json!(price).to_string(), json!(scope).to_string());
        assert_eq!(
            asked,
            [
                want("1000", "nanogate-route:tagged"),
                want("5000", "nanogate-pass:tagged:hour:3600:0"),
                want("9000", "nanogate-pass:tagged:ten:2592000:10"),
            ]
        );
        // No second refill while these are in flight.
        k.tick(&mut h);
        assert_eq!(h.calls.len(), 3);
        // The answer to the `hour` pool's call fills that pool, and only it.
        k.on_answer(&mut h, 2, Some(200), Some(&answer(2, 3, POOL_A, 1_600)));
        let hour = offers[0].tagged.as_ref().expect("hour pool");
        let tagged = p.tagged.as_ref().expect("route pool");
        assert_ne!(hour.key, tagged.key);
        assert_eq!(
            pop(&mut h.shared, &tagged.key, 1_000, min_left(p), &ring),
            None
        );
        assert!(pop(&mut h.shared, &hour.key, 1_000, min_left(p), &ring).is_some());
        // A route that does not sell by tagged session has no pools at all.
        let plain = config_with(
            json!({"name": "p", "path": {"prefix": "/p/"}, "priceRaw": "1000",
            "passes": [{"name": "hour", "priceRaw": "5000", "seconds": 3600}]}),
        );
        assert_eq!(paid(&plain, 0).pools().count(), 0);
    }
}
