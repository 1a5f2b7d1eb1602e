//! The tagged-session mechanism: session-bound tagged amounts (x402.Nano rev 5–7, without their
//! weaknesses; docs/design.md, "Wire choices"). By job:
//!
//! * **Issuing** ([`issue`]): a session has an unguessable id (128 random bits, also the
//!   challenge nonce), a payee drawn deterministically from the route's pool (the id's first 8
//!   bytes mod n), and `amount = price + tag` with a random tag in `1..=tag_space` (the lowest
//!   raw digits). The store claims `(payTo, amount)` atomically, so no two open sessions of one
//!   account share an amount, across replicas. Each session comes with a MAC over its terms
//!   (`Mechanism::TaggedSession`, resource = the route scope, or a pass scope when the session
//!   sells a pass), so the filter can check a presented session without asking us.
//! * **Watching** ([`watch`]): confirmations of sends to pool accounts arrive by WebSocket; a
//!   send of exactly an open session's amount, first seen after the session was issued, marks
//!   the session paid at once. Anything else sent to a pool account that buys nothing is a
//!   *stray payment* ([`stray`]): recorded `owed` in the payment ledger, counted, listed. A send
//!   the fork set (or the ledger) knows as a signed-block payment is never matched to a
//!   session: we claim the frontier before we broadcast, so the watcher always sees the claim
//!   first, and a signed-block price that happens to equal a session's amount on a shared
//!   payee can never be consumed by that session. Signed-block payee accounts are followed the
//!   same way ([`Engine::watch_payee`]): a send to one that is not a signed-block payment of
//!   ours is recorded `owed` (`unmatched`, under `signed_block`) after the settle window.
//! * **Admitting** ([`presented`], then [`pay`]): the client presents the session (MAC-bound)
//!   and, optionally, the block hash. We admit only a confirmed send to the session's account
//!   of exactly its amount, first seen (node `local_timestamp`, fail closed when 0) no earlier
//!   than the session's issue, within its validity, never consumed before. Consumption marks
//!   the session used and records `network:HASH` in the one payment ledger shared with signed
//!   blocks (`admitted`, with the request's lease), in one transaction.
//! * **Settings and state** ([`state`]): limits of the mechanism and the accounts followed.

pub mod issue;
pub mod pay;
pub mod presented;
pub mod state;
pub mod stray;
pub mod watch;

pub use issue::{pool_index, session_valid_before, IssueError, IssuedSession, SessionRequest};
pub use state::{TaggedSettings, TaggedState};
pub use watch::{handle_confirmed_send, spawn_watcher};

use super::Engine;

impl Engine {
    pub fn tagged(&self) -> &TaggedState {
        &self.tagged
    }
}
