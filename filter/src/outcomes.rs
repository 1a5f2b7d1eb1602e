//! Outcome reports (docs/filter-sidecar.md, `/v1/outcome` and `/v1/outcomes`): what the
//! upstream answered an admitted request, with the admission's token.
//!
//! A report of a failure (status ≥ 500: the payment becomes redeemable) goes at once, so a
//! payer retrying right after a 5xx finds its payment redeemable. Every other outcome (served:
//! 1..=499, or 0 for the client's own reset) waits in its VM's queue and goes in one
//! `/v1/outcomes` call when [`MAX_OUTCOME_BATCH`] are waiting, or on the root's next tick (1 s):
//! a callout fewer per paid request, which is most of what a paid request costs Envoy beyond a
//! free one. Until its batch lands the payment stays `admitted` under its lease; a VM that dies
//! first loses its queue, and the lease then makes those payments redeemable, as for any lost
//! report (docs/payments.md).

use crate::config::SidecarConfig;
use crate::host::{Host, Level, RootHost};
use crate::metrics::Metric;
use crate::sidecar;
use nanogate_protocol::contract::{OutcomeBatch, OutcomeRequest, MAX_OUTCOME_BATCH};
use std::cell::RefCell;

/// A VM's served outcomes waiting for their batch.
pub type Queue = RefCell<Vec<OutcomeRequest>>;

/// Reports one admitted request's outcome: at once when it failed upstream or the host keeps no
/// queue, else queued (the queue goes at once when full).
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
    let call = match host.outcome_queue().filter(|_| outcome.status < 500) {
        Some(queue) => {
            let mut q = queue.borrow_mut();
            q.push(outcome);
            if q.len() < MAX_OUTCOME_BATCH {
                return;
            }
            sidecar::outcomes_call(sidecar, &take(&mut q))
        }
        None => sidecar::outcome_call(sidecar, &outcome),
    };
    if let Err(e) = host.dispatch_detached(&call) {
        host.count(Metric::OutcomeErrors);
        if host.log_enabled(Level::Debug) {
            host.log(Level::Debug, &failed(&e));
        }
    }
}

/// Sends whatever the queue holds (the root context, on its tick).
pub fn flush<H: RootHost + ?Sized>(queue: &Queue, sidecar: &SidecarConfig, host: &mut H) {
    let batch = take(&mut queue.borrow_mut());
    if batch.outcomes.is_empty() {
        return;
    }
    if let Err(e) = host.dispatch(&sidecar::outcomes_call(sidecar, &batch)) {
        // Not resent: these payments' leases decide, as for any lost report.
        host.count(Metric::OutcomeErrors);
        host.log(Level::Debug, &failed(&e));
    }
}

fn take(queue: &mut Vec<OutcomeRequest>) -> OutcomeBatch {
    OutcomeBatch {
        outcomes: std::mem::take(queue),
    }
}

fn failed(e: &str) -> String {
    format!("nanogate: outcome report failed: {e}")
}
