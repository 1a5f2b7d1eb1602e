//! Building signed dev-network blocks with dev-threshold work (milliseconds to generate).

use crate::ledger::{genesis_account, THRESHOLDS};
use nanogate_protocol::nano::network::DEV_GENESIS_PRIVATE_KEY;
use nanogate_protocol::nano::work::generate;
use nanogate_protocol::nano::{BlockHash, PrivateKey, PublicKey, Signature, StateBlock};

/// The dev genesis private key (public knowledge; dev network only).
pub fn genesis_key() -> PrivateKey {
    // The constant is 64 valid hex characters; fall back to a zero key only if it were not.
    PrivateKey::from_hex(DEV_GENESIS_PRIVATE_KEY)
        .unwrap_or_else(|_| PrivateKey::from_bytes([0; 32]))
}

/// Work on `root` reaching the dev network's highest threshold (the epoch-2 send threshold,
/// `ffc0000000000000`): more than a fresh dev ledger needs (epoch_1, `fe00…`), but what the
/// sidecar demands of a payment, so a block built here is accepted everywhere. Still
/// milliseconds.
pub fn dev_work(root: &[u8; 32]) -> u64 {
    generate(root, THRESHOLDS.send())
}

/// A state block signed by `key` (whose public key is the account) with dev work.
pub fn state_block(
    key: &PrivateKey,
    previous: BlockHash,
    representative: PublicKey,
    balance: u128,
    link: [u8; 32],
) -> StateBlock {
    let mut b = StateBlock {
        account: key.public_key(),
        previous,
        representative,
        balance,
        link,
        signature: Signature([0; 64]),
        work: 0,
    };
    b.work = dev_work(&b.root());
    b.sign(key);
    b
}

/// A send of `amount` from an account whose frontier is `previous` with `balance` before the
/// send. Representative: the dev genesis (keeps the only voter's weight, nano.md §3.1).
/// Saturates at zero if `amount > balance` (the ledger then sees a receive or change).
pub fn send(
    key: &PrivateKey,
    previous: BlockHash,
    balance: u128,
    destination: PublicKey,
    amount: u128,
) -> StateBlock {
    state_block(
        key,
        previous,
        genesis_account(),
        balance.saturating_sub(amount),
        destination.0,
    )
}

/// A receive of `amount` from send `source` on top of `previous` (zero for an open) with
/// `balance` before the receive.
pub fn receive(
    key: &PrivateKey,
    previous: BlockHash,
    balance: u128,
    source: BlockHash,
    amount: u128,
) -> StateBlock {
    state_block(
        key,
        previous,
        genesis_account(),
        balance.saturating_add(amount),
        source.0,
    )
}

/// An account's first block, receiving `amount` from send `source`.
pub fn open(key: &PrivateKey, source: BlockHash, amount: u128) -> StateBlock {
    receive(key, BlockHash::ZERO, 0, source, amount)
}

/// A representative change on top of `previous` keeping `balance`.
pub fn change(
    key: &PrivateKey,
    previous: BlockHash,
    balance: u128,
    representative: PublicKey,
) -> StateBlock {
    state_block(key, previous, representative, balance, [0; 32])
}
