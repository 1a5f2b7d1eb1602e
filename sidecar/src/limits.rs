//! Limits on payment presentations (`/v1/pay`), so that unpaid traffic cannot buy unbounded work:
//!
//! - **per source** (the client IP the filter forwards): presentations the sidecar *refused* are
//!   counted; once a source has used up its refusal budget, its presentations are answered
//!   `rate_limited` until the budget refills. Admitted payments cost nothing, so a busy honest
//!   client is never throttled, while a source sending junk gets `rate` refusals per second
//!   after a burst. IPv6 sources are keyed by their /64 (one host's usual allocation).
//! - **per payer frontier** (the block's account and the `previous` it builds on, both under
//!   the block's signature): every presentation that passed the local checks counts. An honest
//!   payer presents each block once (plus a few redemptions) and every payment builds on a new
//!   frontier; one block replayed under fresh challenges is cut off. Keying on the frontier
//!   too means that replaying a victim's *published* blocks cannot lock the victim out: its
//!   next payment builds on a frontier nobody else can sign for.
//!
//! Both are GCRA token buckets from `governor`; idle keys are dropped by [`Limits::prune`].

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use nanogate_protocol::nano::{BlockHash, PublicKey};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate and a burst; `rate == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_sec = NonZeroU32::new(self.per_sec)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_sec);
        Some(Quota::per_second(per_sec).allow_burst(burst))
    }
}

/// The limits a sidecar applies (from `[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Refused presentations per source IP.
    pub source_refusals: Rate,
    /// Presentations per payer frontier (account + previous).
    pub payer_presentations: Rate,
}

/// How long to wait before presenting again (whole seconds, at least 1: `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    fn from_wait(d: Duration) -> Self {
        RetryAfter((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }
}

/// The per-source key: the address, IPv6 cut to its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A refusal budget per key: refusals drain it; a key whose budget is spent is blocked until
/// its next refusal would be allowed.
struct RefusalBox<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq + Clone> RefusalBox<K> {
    fn new(quota: Quota) -> Self {
        RefusalBox {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, key: &K) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let mut blocked = self.blocked();
        match blocked.get(key) {
            Some(until) if *until > now => Err(RetryAfter::from_wait(*until - now)),
            Some(_) => {
                blocked.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn refused(&self, key: &K) {
        if let Err(not_until) = self.limiter.check_key(key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.blocked().insert(key.clone(), Instant::now() + wait);
        }
    }

    fn prune(&self) {
        let now = Instant::now();
        self.blocked().retain(|_, until| *until > now);
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Presentation limits; see the module docs.
pub struct Limits {
    sources: Option<RefusalBox<IpAddr>>,
    payers: Option<DefaultKeyedRateLimiter<(PublicKey, BlockHash)>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("sources", &self.sources.is_some())
            .field("payers", &self.payers.is_some())
            .finish()
    }
}

impl Default for Limits {
    /// No limits (unit tests, benchmarks of the engine alone).
    fn default() -> Self {
        Limits {
            sources: None,
            payers: None,
            clock: DefaultClock::default(),
        }
    }
}

impl Limits {
    pub fn new(s: LimitSettings) -> Self {
        Limits {
            sources: s.source_refusals.quota().map(RefusalBox::new),
            payers: s
                .payer_presentations
                .quota()
                .map(DefaultKeyedRateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// May this source present a payment now?
    pub fn source_allowed(&self, source: Option<IpAddr>) -> Result<(), RetryAfter> {
        match (&self.sources, source) {
            (Some(b), Some(ip)) => b.check(&source_key(ip)),
            _ => Ok(()),
        }
    }

    /// The sidecar refused a presentation from this source.
    pub fn source_refused(&self, source: Option<IpAddr>) {
        if let (Some(b), Some(ip)) = (&self.sources, source) {
            b.refused(&source_key(ip));
        }
    }

    /// Counts one presentation of a block (signature verified) by `payer` on `previous`.
    pub fn payer_presented(
        &self,
        payer: &PublicKey,
        previous: &BlockHash,
    ) -> Result<(), RetryAfter> {
        match &self.payers {
            Some(l) => l
                .check_key(&(*payer, *previous))
                .map_err(|nu| RetryAfter::from_wait(nu.wait_time_from(self.clock.now()))),
            None => Ok(()),
        }
    }

    /// Forgets idle keys (call periodically).
    pub fn prune(&self) {
        if let Some(b) = &self.sources {
            b.prune();
        }
        if let Some(l) = &self.payers {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Reads the `source` the filter forwards: an IP address, or `ip:port` (Envoy's
/// `source.address`). Anything else is ignored (no per-source limit for that presentation).
pub fn parse_source(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(source: (u32, u32), payer: (u32, u32)) -> Limits {
        Limits::new(LimitSettings {
            source_refusals: Rate {
                per_sec: source.0,
                burst: source.1,
            },
            payer_presentations: Rate {
                per_sec: payer.0,
                burst: payer.1,
            },
        })
    }

    #[test]
    fn a_source_is_blocked_after_its_refusal_burst_and_others_are_not() {
        let l = limits((1, 3), (0, 0));
        let a = parse_source("203.0.113.7:5555");
        let b = parse_source("203.0.113.8");
        for _ in 0..3 {
            assert!(l.source_allowed(a).is_ok());
            l.source_refused(a);
        }
        assert!(l.source_allowed(a).is_ok(), "the burst itself is allowed");
        l.source_refused(a);
        let wait = l.source_allowed(a).expect_err("blocked after the burst");
        assert!(wait.0 >= 1);
        assert!(
            l.source_allowed(b).is_ok(),
            "another source is not affected"
        );
        assert!(
            l.source_allowed(None).is_ok(),
            "no source, no per-source limit"
        );
    }

    #[test]
    fn admitted_presentations_do_not_spend_a_source_budget() {
        let l = limits((1, 2), (0, 0));
        let a = parse_source("192.0.2.1");
        for _ in 0..1000 {
            assert!(l.source_allowed(a).is_ok());
        }
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let l = limits((1, 1), (0, 0));
        l.source_refused(parse_source("[2001:db8:1:2::1]:80"));
        l.source_refused(parse_source("2001:db8:1:2:ffff::9"));
        assert!(l.source_allowed(parse_source("2001:db8:1:2::77")).is_err());
        assert!(l.source_allowed(parse_source("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn one_frontier_is_limited_but_the_payers_next_frontier_is_not() {
        let l = limits((0, 0), (1, 2));
        let payer = PublicKey([7; 32]);
        let old = BlockHash([1; 32]);
        assert!(l.payer_presented(&payer, &old).is_ok());
        assert!(l.payer_presented(&payer, &old).is_ok());
        let wait = l
            .payer_presented(&payer, &old)
            .expect_err("a replayed block is cut off");
        assert!(wait.0 >= 1);
        assert!(l.payer_presented(&payer, &BlockHash([2; 32])).is_ok());
    }

    #[test]
    fn zero_rates_turn_the_limits_off() {
        let l = limits((0, 0), (0, 0));
        let a = parse_source("192.0.2.1");
        for _ in 0..100 {
            l.source_refused(a);
            assert!(l
                .payer_presented(&PublicKey([1; 32]), &BlockHash([1; 32]))
                .is_ok());
        }
        assert!(l.source_allowed(a).is_ok());
        l.prune();
    }

    #[test]
    fn sources_parse_from_envoy_and_header_forms() {
        assert_eq!(
            parse_source("203.0.113.7:41234"),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(parse_source(" 203.0.113.7 "), "203.0.113.7".parse().ok());
        assert_eq!(parse_source("[::1]:8080"), "::1".parse().ok());
        assert_eq!(parse_source("nope"), None);
    }
}
