//! Proof of work: difficulty = little-endian u64 of BLAKE2b-64(work as 8 LE bytes ‖ root), valid
//! when it reaches the threshold for the block's kind and the account's epoch.

use super::blake2b_64;

/// The difficulty a work value reaches on `root` (`previous`, or the account key for an open).
pub fn difficulty(root: &[u8; 32], work: u64) -> u64 {
    u64::from_le_bytes(blake2b_64(&[&work.to_le_bytes(), root]))
}

/// What a block does, for choosing its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Send,
    Change,
    Receive,
    Open,
    Epoch,
}

/// One network's thresholds (nano-node `work_thresholds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkThresholds {
    /// Every block of an account that has no epoch v2 block.
    pub epoch_1: u64,
    /// Send and change blocks of epoch v2 accounts.
    pub epoch_2: u64,
    /// Receive, open and epoch blocks of epoch v2 accounts.
    pub epoch_2_receive: u64,
}

impl WorkThresholds {
    pub const LIVE: Self = Self {
        epoch_1: 0xffffffc000000000,
        epoch_2: 0xfffffff800000000,
        epoch_2_receive: 0xfffffe0000000000,
    };
    pub const BETA: Self = Self {
        epoch_1: 0xfffff00000000000,
        epoch_2: 0xfffff00000000000,
        epoch_2_receive: 0xffffe00000000000,
    };
    pub const DEV: Self = Self {
        epoch_1: 0xfe00000000000000,
        epoch_2: 0xffc0000000000000,
        epoch_2_receive: 0xf000000000000000,
    };

    /// The cheapest any block may be (RPC `process` entry check).
    pub fn entry(&self) -> u64 {
        self.epoch_1.min(self.epoch_2).min(self.epoch_2_receive)
    }

    /// The threshold for a block of `kind` on an account that is (or is not) at epoch v2.
    pub fn for_kind(&self, kind: BlockKind, epoch_2_account: bool) -> u64 {
        if !epoch_2_account {
            return self.epoch_1;
        }
        match kind {
            BlockKind::Send | BlockKind::Change => self.epoch_2,
            BlockKind::Receive | BlockKind::Open | BlockKind::Epoch => self.epoch_2_receive,
        }
    }

    /// What a payer's send must reach to be accepted anywhere on the network: the highest
    /// send threshold, whatever the payer's epoch.
    pub fn send(&self) -> u64 {
        self.epoch_2.max(self.epoch_1)
    }
}

/// Searches for work reaching `threshold` on `root`, on every core. Native only.
#[cfg(feature = "pow")]
pub fn generate(root: &[u8; 32], threshold: u64) -> u64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let found = AtomicBool::new(false);
    let result = AtomicU64::new(0);
    // Start each thread at a different point derived from the root so that two callers on the
    // same root do not race through the same sequence in lockstep.
    let seed = u64::from_le_bytes(blake2b_64(&[b"nanogate-pow", root]));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (found, result) = (&found, &result);
            s.spawn(move || {
                let mut w = seed.wrapping_add(t.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while !found.load(Ordering::Relaxed) {
                    for _ in 0..4096 {
                        if difficulty(root, w) >= threshold {
                            if !found.swap(true, Ordering::AcqRel) {
                                result.store(w, Ordering::Release);
                            }
                            return;
                        }
                        w = w.wrapping_add(1);
                    }
                }
            });
        }
    });
    result.load(Ordering::Acquire)
}

/// Formats work as nano-node prints it: 16 lower-case hex digits of the big-endian u64.
pub fn work_to_hex(work: u64) -> String {
    format!("{work:016x}")
}

/// Parses 16 hex digits (either case) as a big-endian u64.
pub fn work_from_hex(s: &str) -> Result<u64, crate::hex::HexError> {
    crate::hex::decode_array::<8>(s).map(u64::from_be_bytes)
}

#[cfg(all(test, feature = "pow"))]
mod tests {
    use super::*;

    #[test]
    fn generated_work_meets_threshold() {
        let root = [7u8; 32];
        let w = generate(&root, WorkThresholds::DEV.epoch_1);
        assert!(difficulty(&root, w) >= WorkThresholds::DEV.epoch_1);
    }
}
