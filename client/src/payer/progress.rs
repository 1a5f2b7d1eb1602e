//! What the payer is doing, for a progress display (the CLI prints these on stderr).

use nanogate_protocol::nano::format_xno;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Something the payer is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A 402 arrived and this offer was chosen.
    Challenge {
        amount: u128,
        pay_to: String,
        url: String,
    },
    /// A journalled payment for this request is being presented again.
    RePresenting { hash: String, amount: u128 },
    /// About to sign a send.
    Signing { account: String, frontier: String },
    /// Work came from the node.
    WorkFromNode { threshold: u64 },
    /// The node would not generate work; computing it here.
    WorkLocal { threshold: u64, why: String },
    /// Local work finished.
    WorkDone { elapsed: Duration },
    /// Sending the paid retry.
    Paying { hash: String },
    /// The server answered 2xx with a receipt naming our block.
    Confirmed { hash: String },
    /// Presenting a held pass (`--pass`); `id` is its fingerprint, never the token.
    OnPass { name: String, id: String },
    /// A bought pass is kept in the journal; `id` is its fingerprint, never the token.
    PassKept {
        name: String,
        group: String,
        id: String,
        expires_in: Option<u64>,
        requests: Option<u64>,
    },
    /// Anything else worth telling the user.
    Note(String),
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Challenge {
                amount,
                pay_to,
                url,
            } => write!(f, "402: {} XNO to {pay_to} for {url}", format_xno(*amount)),
            Progress::RePresenting { hash, amount } => write!(
                f,
                "re-presenting journalled payment {hash} ({} XNO) instead of paying again",
                format_xno(*amount)
            ),
            Progress::Signing { account, frontier } => {
                write!(f, "signing send from {account} (frontier {frontier})")
            }
            Progress::WorkFromNode { threshold } => {
                write!(f, "work from the node (threshold {threshold:016x})")
            }
            Progress::WorkLocal { threshold, why } => write!(
                f,
                "work: the node would not generate it ({why}); computing locally \
                 (threshold {threshold:016x})…"
            ),
            Progress::WorkDone { elapsed } => {
                write!(f, "work done in {:.1} s", elapsed.as_secs_f64())
            }
            Progress::Paying { hash } => write!(f, "paying… (block {hash})"),
            Progress::Confirmed { hash } => write!(f, "confirmed {hash}"),
            Progress::OnPass { name, id } => {
                write!(f, "presenting pass `{name}` (id {id})")
            }
            Progress::PassKept {
                name,
                group,
                id,
                expires_in,
                requests,
            } => {
                write!(f, "bought pass `{name}` for group {group} (id {id}")?;
                if let Some(r) = requests {
                    write!(f, ", {r} requests")?;
                }
                if let Some(s) = expires_in {
                    write!(f, ", expires in {s} s")?;
                }
                f.write_str("); kept in the journal")
            }
            Progress::Note(s) => f.write_str(s),
        }
    }
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use nanogate_protocol::nano::RAW_PER_XNO;

    #[test]
    fn progress_lines_read_as_documented() {
        let p = Progress::Challenge {
            amount: RAW_PER_XNO / 1000,
            pay_to: "nano_x".into(),
            url: "http://h/p".into(),
        };
        assert_eq!(p.to_string(), "402: 0.001 XNO to nano_x for http://h/p");
        let s = Progress::Signing {
            account: "nano_a".into(),
            frontier: "AB".into(),
        };
        assert_eq!(s.to_string(), "signing send from nano_a (frontier AB)");
        assert_eq!(
            Progress::Confirmed { hash: "CD".into() }.to_string(),
            "confirmed CD"
        );
    }
}
