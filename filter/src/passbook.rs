//! Passes at the edge (docs/passes.md): checking a presented pass token with no sidecar call,
//! counting the requests of counted passes in this VM, and the usage reports that keep the
//! sidecar's authoritative count and bring back the passes to refuse.
//!
//! Each VM (one per Envoy worker) keeps its own [`PassBook`]: a count is a plain add on the
//! request path, with no shared-data round trip. A VM refuses a counted pass once its own count
//! (raised to the sidecar's total at each report) reaches the grant, and any pass the sidecar
//! lists as exhausted or revoked. The overspend this allows is bounded by the report interval
//! (`passReportSecs`) times the pass's request rate over every VM of every proxy.
//!
//! A VM reports its running total per pass under its own random id, never a difference: a
//! report whose answer is lost (a timeout after the sidecar applied it) is sent again and
//! applied once, so a payer is never charged twice for the same requests.

use crate::config::Config;
use crate::host::{Level, RootHost};
use crate::keys::KeyRing;
use crate::metrics::Metric;
use crate::sidecar;
use nanogate_protocol::contract::pass::{
    PassRefusal, PassSeen, PassToken, PassUsageAnswer, PassUsageRequest, COOKIE_PREFIX,
    MAX_USAGE_ENTRIES,
};
use nanogate_protocol::hex;
use std::cell::RefCell;

/// One counted pass as this VM knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    /// Requests served on it: this VM's own, raised to the sidecar's total at each report.
    used: u64,
    /// This VM's own requests on it since the VM started.
    seen: u64,
    /// The highest `seen` the sidecar acknowledged.
    acked: u64,
    expires_at: u64,
}

/// A VM's passes: counts, the refused ids, and the report in flight.
#[derive(Debug, Default)]
pub struct PassBook {
    /// This VM's id in its reports (16 hex digits, drawn when the VM starts).
    pub vm: String,
    /// Sorted by id (a sorted vector, not a map: less code in the module, which has a size
    /// budget).
    counts: Vec<([u8; 16], Count)>,
    /// Exhausted or revoked, as the last report's answer listed them (sorted by id).
    refused: Vec<([u8; 16], PassRefusal)>,
    /// The totals sent in the report in flight: acknowledged when it is answered.
    in_flight: Vec<([u8; 16], u64)>,
    /// The report in flight (the call's token).
    pub pending: Option<u32>,
    /// When the next report is due (unix seconds).
    pub next_report: u64,
}

/// Checks a presented token for a route of `group` at `now` and, when it is good, counts the
/// request: the MAC under a pass key the VM holds, expiry, group, the refused list, and this
/// VM's count of a counted pass.
pub fn admit(
    text: &str,
    ring: &KeyRing,
    group: &str,
    now: u64,
    book: &mut PassBook,
) -> Result<PassToken, PassRefusal> {
    let token = PassToken::open(text, |id| ring.pass_key(id))?;
    if token.expires_at <= now {
        return Err(PassRefusal::Expired);
    }
    if token.group != group {
        return Err(PassRefusal::WrongGroup);
    }
    book.count(&token)?;
    Ok(token)
}

/// The value of the cookie `name` in a `cookie` header, if present.
pub fn cookie_value<'a>(cookie: &'a str, name: &str) -> Option<&'a str> {
    cookie.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n.trim() == name).then(|| v.trim())
    })
}

/// A `cookie` header without any pass cookie (`nanogate-pass-*`): `None` when it has none
/// (nothing to change), `Some("")` when only pass cookies were in it.
pub fn without_pass_cookies(cookie: &str) -> Option<String> {
    let is_pass = |pair: &str| pair.trim_start().starts_with(COOKIE_PREFIX);
    if !cookie.split(';').any(is_pass) {
        return None;
    }
    let mut kept = String::with_capacity(cookie.len());
    for pair in cookie.split(';').filter(|p| !is_pass(p)).map(str::trim) {
        if pair.is_empty() {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    Some(kept)
}

/// Whether a bought pass's cookie may go without `Secure`: plain HTTP to a loopback host only
/// (a browser on `http://localhost` would drop a `Secure` cookie).
pub fn cookie_secure(scheme: &str, authority: &str) -> bool {
    if !scheme.eq_ignore_ascii_case("http") {
        return true;
    }
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    // 127.0.0.0/8 by hand (no address parser in the module for this alone).
    let ipv4_loopback = host.strip_prefix("127.").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let loopback = host.eq_ignore_ascii_case("localhost") || host == "::1" || ipv4_loopback;
    !loopback
}

impl PassBook {
    /// The book of the VM reporting as `vm`.
    pub fn new(vm: String) -> PassBook {
        PassBook {
            vm,
            ..PassBook::default()
        }
    }

    fn count_of(&mut self, id: &[u8; 16]) -> Option<&mut Count> {
        let at = self.counts.binary_search_by(|(k, _)| k.cmp(id)).ok()?;
        Some(&mut self.counts[at].1)
    }

    /// Counts one request on `token` (a time pass is not counted), unless it is refused.
    fn count(&mut self, token: &PassToken) -> Result<(), PassRefusal> {
        if let Ok(i) = self.refused.binary_search_by(|(id, _)| id.cmp(&token.id)) {
            return Err(self.refused[i].1);
        }
        if token.requests == 0 {
            return Ok(());
        }
        let at = match self.counts.binary_search_by(|(id, _)| id.cmp(&token.id)) {
            Ok(at) => at,
            Err(at) => {
                let fresh = Count {
                    used: 0,
                    seen: 0,
                    acked: 0,
                    expires_at: token.expires_at,
                };
                self.counts.insert(at, (token.id, fresh));
                at
            }
        };
        let c = &mut self.counts[at].1;
        if c.used >= u64::from(token.requests) {
            return Err(PassRefusal::Exhausted);
        }
        c.used += 1;
        c.seen += 1;
        Ok(())
    }

    /// The report due at `now`, if any: the total of every pass with requests not yet
    /// acknowledged (at most [`MAX_USAGE_ENTRIES`]), now in flight. Also sent with no counts, to
    /// learn refusals. Forgets passes that have expired.
    pub fn take_report(&mut self, now: u64, every_secs: u64) -> Option<PassUsageRequest> {
        if self.pending.is_some() || now < self.next_report {
            return None;
        }
        self.next_report = now.saturating_add(every_secs.max(1));
        self.counts
            .retain(|(_, c)| c.expires_at > now || c.seen > c.acked);
        self.in_flight.clear();
        let mut counts = Vec::new();
        for (id, c) in &self.counts {
            if c.seen == c.acked {
                continue;
            }
            if counts.len() == MAX_USAGE_ENTRIES {
                break;
            }
            counts.push(PassSeen {
                id: hex::encode_lower(id),
                seen: c.seen,
            });
            self.in_flight.push((*id, c.seen));
        }
        Some(PassUsageRequest {
            vm: self.vm.clone(),
            counts,
        })
    }

    /// The report's answer (`None`: it failed, and the next report sends the totals again).
    pub fn on_answer(&mut self, answer: Option<PassUsageAnswer>) {
        self.pending = None;
        let Some(a) = answer else {
            return;
        };
        for (id, seen) in std::mem::take(&mut self.in_flight) {
            if let Some(c) = self.count_of(&id) {
                c.acked = c.acked.max(seen);
            }
        }
        for t in &a.totals {
            if let Some(c) = hex::decode_array::<16>(&t.id)
                .ok()
                .and_then(|id| self.count_of(&id))
            {
                c.used = c.used.max(t.used);
            }
        }
        self.refused.clear();
        for (ids, why) in [
            (&a.exhausted, PassRefusal::Exhausted),
            (&a.revoked, PassRefusal::Revoked),
        ] {
            for id in ids {
                if let Ok(id) = hex::decode_array::<16>(id) {
                    // Kept sorted by insertion (no sort routine in the module for this).
                    if let Err(at) = self.refused.binary_search_by(|(r, _)| r.cmp(&id)) {
                        self.refused.insert(at, (id, why));
                    }
                }
            }
        }
    }
}

/// Sends this VM's usage report when one is due (the root context, on its tick): only when a
/// route sells passes.
pub fn report_tick<H: RootHost + ?Sized>(book: &RefCell<PassBook>, cfg: &Config, host: &mut H) {
    if !cfg.sells_passes() {
        return;
    }
    let now = host.now_unix();
    let Some(report) = book.borrow_mut().take_report(now, cfg.pass_report_secs) else {
        return;
    };
    match host.dispatch(&sidecar::usage_call(&cfg.sidecar, &report)) {
        Ok(token) => book.borrow_mut().pending = Some(token),
        Err(e) => {
            host.count(Metric::PassReportErrors);
            host.log(Level::Debug, &format!("nanogate: pass usage report: {e}"));
            book.borrow_mut().on_answer(None);
        }
    }
}

/// The answer to this VM's usage report.
pub fn report_answer<H: RootHost + ?Sized>(
    book: &RefCell<PassBook>,
    host: &mut H,
    status: Option<u32>,
    body: Option<&[u8]>,
) {
    if sidecar::is_ok(status) {
        let answer = PassUsageAnswer::parse(body.unwrap_or_default());
        book.borrow_mut().on_answer(Some(answer));
    } else {
        host.count(Metric::PassReportErrors);
        host.log(
            Level::Debug,
            &format!("nanogate: pass usage report answered {status:?}"),
        );
        book.borrow_mut().on_answer(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::ring;
    use nanogate_protocol::contract::pass::{PassKey, PassKeyEntry};

    fn ring_with_pass_key() -> (KeyRing, PassKey) {
        let key = PassKey([9; 32]);
        let mut r = ring(7, 10_000);
        r.pass_keys = vec![PassKeyEntry {
            key_id: 3,
            key: key.clone(),
        }];
        (r, key)
    }

    fn token(requests: u32, group: &str) -> PassToken {
        PassToken {
            key_id: 3,
            id: [1; 16],
            expires_at: 1_000,
            requests,
            group: group.into(),
        }
    }

    #[test]
    fn a_counted_pass_is_refused_after_its_grant_and_reports_its_use() {
        let (ring, key) = ring_with_pass_key();
        let text = token(3, "api").mint(&key);
        let mut book = PassBook::new("00000000000000aa".into());
        for _ in 0..3 {
            assert!(admit(&text, &ring, "api", 10, &mut book).is_ok());
        }
        assert_eq!(
            admit(&text, &ring, "api", 10, &mut book),
            Err(PassRefusal::Exhausted)
        );
        let report = book.take_report(10, 1).unwrap();
        assert_eq!(report.vm, "00000000000000aa");
        assert_eq!(report.counts.len(), 1);
        assert_eq!(report.counts[0].seen, 3);
        book.pending = Some(1);
        assert!(book.take_report(20, 1).is_none(), "one report at a time");
        // A failed report (its answer lost, perhaps after the sidecar applied it) is sent
        // again with the same total, never with the requests added twice.
        book.on_answer(None);
        assert_eq!(book.take_report(20, 1).unwrap().counts[0].seen, 3);
        book.on_answer(None);
        assert_eq!(book.take_report(21, 1).unwrap().counts[0].seen, 3);
        book.on_answer(Some(PassUsageAnswer::default()));
        assert!(book.take_report(30, 1).unwrap().counts.is_empty());
    }

    #[test]
    fn totals_from_other_vms_and_refusals_apply() {
        let (ring, key) = ring_with_pass_key();
        let text = token(10, "api").mint(&key);
        let mut book = PassBook::default();
        assert!(admit(&text, &ring, "api", 10, &mut book).is_ok());
        let id = hex::encode_lower(&[1u8; 16]);
        book.take_report(10, 1);
        book.on_answer(Some(PassUsageAnswer {
            totals: vec![nanogate_protocol::contract::pass::PassCount {
                id: id.clone(),
                used: 10,
            }],
            ..Default::default()
        }));
        assert_eq!(
            admit(&text, &ring, "api", 10, &mut book),
            Err(PassRefusal::Exhausted)
        );
        let time_pass = token(0, "api").mint(&key);
        assert!(admit(&time_pass, &ring, "api", 10, &mut book).is_ok());
        book.take_report(11, 1);
        book.on_answer(Some(PassUsageAnswer {
            revoked: vec![id],
            ..Default::default()
        }));
        assert_eq!(
            admit(&time_pass, &ring, "api", 12, &mut book),
            Err(PassRefusal::Revoked)
        );
    }

    #[test]
    fn cookies_and_the_secure_attribute() {
        let c = "a=1; nanogate-pass-api=tok; b=2;nanogate-pass-x=y";
        assert_eq!(cookie_value(c, "nanogate-pass-api"), Some("tok"));
        assert_eq!(cookie_value(c, "nanogate-pass-zz"), None);
        assert_eq!(without_pass_cookies(c).as_deref(), Some("a=1; b=2"));
        assert_eq!(without_pass_cookies("a=1"), None);
        assert_eq!(
            without_pass_cookies("nanogate-pass-api=t").as_deref(),
            Some("")
        );
        assert!(!cookie_secure("http", "127.0.0.1:8080"));
        assert!(!cookie_secure("http", "localhost"));
        assert!(!cookie_secure("http", "[::1]:80"));
        assert!(cookie_secure("https", "127.0.0.1:8080"));
        assert!(cookie_secure("http", "example.com"));
        assert!(cookie_secure("http", "10.0.0.1:80"));
    }

    #[test]
    fn expiry_group_and_keys() {
        let (ring, key) = ring_with_pass_key();
        let mut book = PassBook::default();
        let text = token(0, "api").mint(&key);
        assert_eq!(
            admit(&text, &ring, "api", 1_000, &mut book),
            Err(PassRefusal::Expired)
        );
        assert_eq!(
            admit(&text, &ring, "other", 10, &mut book),
            Err(PassRefusal::WrongGroup)
        );
        let foreign = token(0, "api").mint(&PassKey([8; 32]));
        assert_eq!(
            admit(&foreign, &ring, "api", 10, &mut book),
            Err(PassRefusal::Forged)
        );
        let unknown = PassToken {
            key_id: 4,
            ..token(0, "api")
        }
        .mint(&key);
        assert_eq!(
            admit(&unknown, &ring, "api", 10, &mut book),
            Err(PassRefusal::UnknownKey)
        );
    }
}
