//! Outcome reports (docs/filter-sidecar.md, `/v1/outcome` and `/v1/outcomes`): what the
//! upstream answered an admitted request, with the admission's token.
//!
//! A report of a failure (status ≥ 500: the payment becomes redeemable) goes at once, so a
//! payer retrying right after a 5xx finds its payment redeemable. Every other outcome (served:
//! 1..=499, or 0 for the client's own reset) waits in its VM's queue and goes on the root's
//! next tick (1 s), in `/v1/outcomes` calls of at most [`MAX_OUTCOME_BATCH`]: a callout fewer
//! per paid request, which is most of what a paid request costs Envoy beyond a free one. Until
//! its batch lands the payment stays `admitted` under its lease. A batch the sidecar did not
//! take (an error, a timeout) waits for the next tick again, and a VM being shut down sends
//! its queue before it goes: only a VM killed outright loses its queue, and the lease then makes
//! those payments redeemable, as for any lost report (docs/payments.md).

use crate::config::SidecarConfig;
use crate::host::{Host, Level, RootHost};
use crate::metrics::Metric;
use crate::sidecar;
use nanogate_protocol::contract::{OutcomeBatch, OutcomeRequest, MAX_OUTCOME_BATCH};
use std::cell::RefCell;

/// A VM's served outcomes waiting for the next tick.
pub type Queue = RefCell<Vec<OutcomeRequest>>;

/// The most outcomes a VM keeps waiting (while the sidecar is unreachable): beyond it the
/// oldest batch's worth is dropped, and their leases decide. A batch at a time, so a full
/// queue shifts its outcomes once per [`MAX_OUTCOME_BATCH`] reports, not on every one (a
/// `VecDeque` would cost the module 1.6 KB).
const MAX_WAITING: usize = 64 * MAX_OUTCOME_BATCH;

/// A batch sent and not yet answered: the call's token and its outcomes.
pub type Sent = (u32, Vec<OutcomeRequest>);

/// Reports one admitted request's outcome: at once when it failed upstream or the host keeps no
/// queue, else queued for the next tick.
pub fn report<H: Host + ?Sized>(
    host: &mut H,
    sidecar: &SidecarConfig,
    receipt: &str,
    status: u32,
    admission_token: Option<&str>,
) {
    let outcome = OutcomeRequest {
        receipt: receipt.to_owned(),
        status: u16::try_from(status).unwrap_or(0),
        admission_token: admission_token.map(str::to_owned),
    };
    host.count(Metric::OutcomesReported);
    if let Some(queue) = host.outcome_queue().filter(|_| outcome.status < 500) {
        wait(&mut queue.borrow_mut(), outcome);
        return;
    }
    if let Err(e) = host.dispatch_detached(&sidecar::outcome_call(sidecar, &outcome)) {
        host.count(Metric::OutcomeErrors);
        if host.log_enabled(Level::Debug) {
            host.log(Level::Debug, &failed(&e));
        }
    }
}

fn wait(queue: &mut Vec<OutcomeRequest>, outcome: OutcomeRequest) {
    if queue.len() >= MAX_WAITING {
        queue.drain(..MAX_OUTCOME_BATCH);
    }
    queue.push(outcome);
}

/// Sends whatever the queue holds (the root context, on its tick and when the VM is shut
/// down), in batches of at most [`MAX_OUTCOME_BATCH`]; returns the batches sent.
pub fn flush<H: RootHost + ?Sized>(
    queue: &Queue,
    sidecar: &SidecarConfig,
    host: &mut H,
) -> Vec<Sent> {
    let waiting = std::mem::take(&mut *queue.borrow_mut());
    let mut sent = Vec::new();
    for chunk in waiting.chunks(MAX_OUTCOME_BATCH) {
        let batch = OutcomeBatch {
            outcomes: chunk.to_vec(),
        };
        match host.dispatch(&sidecar::outcomes_call(sidecar, &batch)) {
            Ok(token) => sent.push((token, batch.outcomes)),
            Err(e) => {
                // The call could not even start (no such cluster): these leases decide.
                host.count(Metric::OutcomeErrors);
                host.log(Level::Debug, &failed(&e));
            }
        }
    }
    sent
}

/// The sidecar's answer to a batch: unless it took it (200), its outcomes wait for the next
/// tick again, ahead of the newer ones.
pub fn answered<H: RootHost + ?Sized>(
    queue: &Queue,
    batch: Vec<OutcomeRequest>,
    ok: bool,
    host: &mut H,
) {
    if ok {
        return;
    }
    host.count(Metric::OutcomeErrors);
    let mut q = queue.borrow_mut();
    let newer = std::mem::replace(&mut *q, batch);
    for o in newer {
        wait(&mut q, o);
    }
}

fn failed(e: &str) -> String {
    format!("nanogate: outcome report failed: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the sidecar is unreachable a VM keeps at most `MAX_WAITING` outcomes: the oldest
    /// batch's worth goes when a report finds the queue full.
    #[test]
    fn at_the_cap_the_oldest_outcomes_go() {
        let outcome = |n: usize| OutcomeRequest {
            receipt: format!("r{n}"),
            status: 200,
            admission_token: None,
        };
        let mut queue = Vec::new();
        for n in 0..MAX_WAITING {
            wait(&mut queue, outcome(n));
        }
        assert_eq!(queue.len(), MAX_WAITING);
        wait(&mut queue, outcome(MAX_WAITING));
        assert_eq!(queue.len(), MAX_WAITING - MAX_OUTCOME_BATCH + 1);
        let first = format!("r{MAX_OUTCOME_BATCH}");
        assert_eq!(
            queue.first().map(|o| o.receipt.as_str()),
            Some(first.as_str())
        );
        let last = format!("r{MAX_WAITING}");
        assert_eq!(
            queue.last().map(|o| o.receipt.as_str()),
            Some(last.as_str())
        );
        for n in 0..MAX_WAITING * 3 {
            wait(&mut queue, outcome(n));
            assert!(queue.len() <= MAX_WAITING);
        }
    }
}
