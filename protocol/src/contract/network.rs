//! Which x402 network ids nanogate accepts: `nano:<reference>`, the reference being a CAIP-2
//! reference (`[-_a-zA-Z0-9]{1,32}`), e.g. `nano:mainnet` or `nano:devnet`.
//!
//! Why only `nano:`: every offer says asset `XNO` and a `nano_` payee, and the sidecar settles
//! on a Nano node only. An offer under another namespace (`eip155:8453`, …) would advertise a
//! chain nanogate cannot settle on: a client matching offers by network could try to pay there,
//! and the sidecar would refuse every payment. Refusing such ids when the configuration is read
//! (filter and sidecar alike) turns that into a clear start-up error. The reference is checked
//! too because the filter writes the id into pre-rendered JSON and headers without escaping.

use crate::nano::network::{X402_DEVNET, X402_MAINNET};
use std::fmt;

/// The CAIP-2 namespace of every network nanogate accepts.
pub const NAMESPACE: &str = "nano";
/// `nano:mainnet` (OpenRai ORIS-006).
pub const MAINNET: &str = X402_MAINNET;
/// `nano:devnet`, this project's id for a local dev ledger.
pub const DEVNET: &str = X402_DEVNET;

/// Why a network id is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError(String);

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a nano: CAIP-2 network id such as {MAINNET} or {DEVNET}",
            self.0
        )
    }
}

impl std::error::Error for NetworkError {}

/// `Ok` when `id` is `nano:` followed by a CAIP-2 reference.
pub fn check_network(id: &str) -> Result<(), NetworkError> {
    let ok = id.split_once(':').is_some_and(|(ns, reference)| {
        ns == NAMESPACE
            && (1..=32).contains(&reference.len())
            && reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if ok {
        Ok(())
    } else {
        // Quote at most a bounded prefix: configuration errors end up in logs.
        let shown: String = id.chars().take(64).collect();
        Err(NetworkError(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nano_ids_with_a_caip2_reference_pass() {
        for ok in [MAINNET, DEVNET, "nano:beta", "nano:a", "nano:A-b_9"] {
            assert_eq!(check_network(ok), Ok(()), "{ok}");
        }
        let long = format!("nano:{}", "a".repeat(33));
        for bad in [
            "",
            "nano",
            "nano:",
            "devnet",
            "NANO:devnet",
            "eip155:8453",
            "nano:dev net",
            "nano:dev\"net",
            "nano:a:b",
            long.as_str(),
        ] {
            assert!(check_network(bad).is_err(), "{bad}");
        }
        let e = check_network("eip155:1").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("`eip155:1` is not a nano: CAIP-2 network id such as nano:mainnet or nano:devnet")
        );
    }
}
