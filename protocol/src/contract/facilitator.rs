//! `POST /v1/challenge`: a resource server asks the sidecar for MAC-bound requirements (the
//! facilitator's way to issue challenges; the filter issues its own).

use serde::{Deserialize, Serialize};

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
