//! Counters the filter keeps as Envoy stats. Envoy shows a wasm counter named `x` as
//! `wasmcustom.x` in `/stats`.

use nanogate_protocol::contract::pass::PassRefusal;
use nanogate_protocol::x402::ErrorReason;

/// Every counter. Rejections are counted per x402 reason (`nanogate_rejected_<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// 402s carrying a fresh challenge.
    ChallengesIssued,
    /// Paid requests the sidecar admitted and that were forwarded.
    PaymentsAdmitted,
    /// A request refused, locally or by the sidecar, by reason.
    Rejected(ErrorReason),
    /// A sidecar reject whose reason string is not one we know.
    RejectedOther,
    /// The sidecar could not be called, or answered without a verdict (not a timeout).
    SidecarErrors,
    /// The sidecar call timed out (Envoy's synthesized 504).
    SidecarTimeouts,
    /// The sidecar answered `unavailable` (e.g. no Nano node reachable).
    SidecarUnavailable,
    /// A paid route was hit while no usable challenge key was held.
    KeyUnavailable,
    /// Paid-route requests passed to the upstream unpaid because the route is fail-open.
    FailOpenPasses,
    /// Outcomes sent to the sidecar.
    OutcomesReported,
    /// Outcomes that could not be sent or were not acknowledged.
    OutcomeErrors,
    /// Challenge-key fetches that failed.
    KeyFetchErrors,
    /// 402s on a tagged route sent without a tagged offer because its session pool was empty.
    SessionPoolEmpty,
    /// Requests served on a pass, with no sidecar call.
    PassServed,
    /// Passes bought (admitted payments that answered a pass).
    PassesSold,
    /// Pass tokens refused, by reason.
    PassRefused(PassRefusal),
    /// Usage reports that failed (their counts are sent again).
    PassReportErrors,
}

const PREFIX: &str = "nanogate_";

impl Metric {
    /// Every metric, in a fixed order (the index is the slot in [`Metric::index`]).
    pub fn all() -> Vec<Metric> {
        let mut v = vec![
            Metric::ChallengesIssued,
            Metric::PaymentsAdmitted,
            Metric::RejectedOther,
            Metric::SidecarErrors,
            Metric::SidecarTimeouts,
            Metric::SidecarUnavailable,
            Metric::KeyUnavailable,
            Metric::FailOpenPasses,
            Metric::OutcomesReported,
            Metric::OutcomeErrors,
            Metric::KeyFetchErrors,
        ];
        v.extend(ErrorReason::ALL.iter().map(|&r| Metric::Rejected(r)));
        v.push(Metric::SessionPoolEmpty);
        v.push(Metric::PassServed);
        v.push(Metric::PassesSold);
        v.push(Metric::PassReportErrors);
        v.extend(PassRefusal::ALL.iter().map(|&r| Metric::PassRefused(r)));
        v
    }

    /// A dense index into [`Metric::all`].
    pub fn index(self) -> usize {
        match self {
            Metric::ChallengesIssued => 0,
            Metric::PaymentsAdmitted => 1,
            Metric::RejectedOther => 2,
            Metric::SidecarErrors => 3,
            Metric::SidecarTimeouts => 4,
            Metric::SidecarUnavailable => 5,
            Metric::KeyUnavailable => 6,
            Metric::FailOpenPasses => 7,
            Metric::OutcomesReported => 8,
            Metric::OutcomeErrors => 9,
            Metric::KeyFetchErrors => 10,
            Metric::Rejected(r) => 11 + ErrorReason::ALL.iter().position(|&x| x == r).unwrap_or(0),
            Metric::SessionPoolEmpty => 11 + ErrorReason::ALL.len(),
            Metric::PassServed => 12 + ErrorReason::ALL.len(),
            Metric::PassesSold => 13 + ErrorReason::ALL.len(),
            Metric::PassReportErrors => 14 + ErrorReason::ALL.len(),
            Metric::PassRefused(r) => {
                15 + ErrorReason::ALL.len()
                    + PassRefusal::ALL.iter().position(|&x| x == r).unwrap_or(0)
            }
        }
    }

    /// The stat name.
    pub fn name(self) -> String {
        let base = match self {
            Metric::ChallengesIssued => "challenges_issued",
            Metric::PaymentsAdmitted => "payments_admitted",
            Metric::RejectedOther => "rejected_other",
            Metric::SessionPoolEmpty => "session_pool_empty",
            Metric::SidecarErrors => "sidecar_errors",
            Metric::SidecarTimeouts => "sidecar_timeouts",
            Metric::SidecarUnavailable => "sidecar_unavailable",
            Metric::KeyUnavailable => "key_unavailable",
            Metric::FailOpenPasses => "fail_open_passes",
            Metric::OutcomesReported => "outcomes_reported",
            Metric::OutcomeErrors => "outcome_errors",
            Metric::KeyFetchErrors => "key_fetch_errors",
            Metric::PassServed => "pass_served",
            Metric::PassesSold => "passes_sold",
            Metric::PassReportErrors => "pass_report_errors",
            Metric::Rejected(r) => return format!("{PREFIX}rejected_{}", r.as_str()),
            Metric::PassRefused(r) => return format!("{PREFIX}pass_refused_{}", r.as_str()),
        };
        format!("{PREFIX}{base}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn indices_are_dense_and_names_unique() {
        let all = Metric::all();
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?}");
        }
        let names: BTreeSet<String> = all.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.contains("nanogate_fail_open_passes"));
        assert!(names.contains("nanogate_rejected_invalid_challenge"));
    }
}
