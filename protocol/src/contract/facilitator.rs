//! `POST /v1/challenge`: a resource server asks the sidecar for MAC-bound requirements (the
//! facilitator's way to issue challenges; the filter issues its own).

use serde::{Deserialize, Serialize};

/// `extra` keys of a Nano `exact` offer (and of its `/supported` kind) that tell a client how
/// to make the block's proof of work, as the proposed Nano `exact` spec and `x402-nano-exact`
/// name them.
pub mod work {
    /// The lowest work difficulty the send must reach, 16 lower-case hex digits (the send
    /// threshold of the nodes' network: a `nano:devnet` offer carries the dev threshold).
    pub const EXTRA_WORK_THRESHOLD: &str = "workThreshold";
    /// [`REQUIRED`] or [`OPTIONAL`].
    pub const EXTRA_WORK: &str = "work";
    /// The client's block must carry valid work.
    pub const REQUIRED: &str = "required";
    /// The seller attaches work itself (the work field is not signed): a client may send the
    /// block with any work, e.g. zero.
    pub const OPTIONAL: &str = "optional";
    /// `extra.asset` of a `/supported` kind (what `x402-nano-exact` reads the asset from).
    pub const EXTRA_ASSET: &str = "asset";

    /// A threshold as the wire writes it.
    pub fn threshold_hex(threshold: u64) -> String {
        format!("{threshold:016x}")
    }
}

/// `POST /v1/challenge` body. The answer is the `PaymentRequirements` to offer, with the
/// stamp, MAC and `extra.resource` in `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeRequest {
    /// The resource URL the payment will buy.
    pub resource: String,
    /// Raw amount, decimal string.
    pub amount: String,
    pub pay_to: String,
    /// Absent: the sidecar's `facilitator.challenge_max_timeout_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_seconds: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_resource_servers_send() {
        let text = r#"{"resource":"http://h/p","amount":"5","payTo":"nano_x"}"#;
        let r: ChallengeRequest = serde_json::from_str(text).unwrap();
        assert_eq!(r.max_timeout_seconds, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        let r: ChallengeRequest = serde_json::from_str(
            r#"{"resource":"r","amount":"5","payTo":"p","maxTimeoutSeconds":60}"#,
        )
        .unwrap();
        assert_eq!(r.max_timeout_seconds, Some(60));
    }
}
