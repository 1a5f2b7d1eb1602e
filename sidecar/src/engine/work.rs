//! Seller-side proof of work: a route (`attachWork` from the filter) or the facilitator API
//! (`facilitator.attach_work`) may accept a send whose work is below the threshold and attach
//! work itself. The work field is not covered by the block's signature (nor its hash), so
//! replacing it changes nothing the payer signed: the payment keeps its hash, and the payer
//! saves minutes of proof of work on a laptop (mainnet send work is expensive).
//!
//! Work is only generated for a block that passed every other check (the engine calls
//! [`WorkAttacher::attach`] after the account checks), and it is bounded twice:
//!
//! - **per payer** (the block's account, proved by its signature): `per_payer_per_min` blocks a
//!   minute, so one account cannot keep the work source busy;
//! - **overall**: at most `max_concurrent` generations at once; a payment that finds every slot
//!   taken is refused `rate_limited` at once (work takes seconds: queueing would only hold
//!   the request), and the payer may retry or attach its own work.
//!
//! The work comes from the nodes' `work_generate`, or from a configured work server (the same
//! RPC action, e.g. nano-work-server).

use crate::node::NodeClient;
use governor::{DefaultKeyedRateLimiter, Quota};
use nanogate_protocol::nano::PublicKey;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Whether a payment must carry its own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkPolicy {
    /// The block's work must reach the send threshold (the default).
    #[default]
    Required,
    /// Work below the threshold is replaced by the seller's own (advertised as
    /// `extra.work: "optional"`).
    Attach,
}

/// The bounds on seller-side work (`[work]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkSettings {
    /// Blocks a minute one payer may have work attached for.
    pub per_payer_per_min: u32,
    /// Work generations at once, over every payer.
    pub max_concurrent: usize,
}

impl Default for WorkSettings {
    fn default() -> Self {
        WorkSettings {
            per_payer_per_min: 6,
            max_concurrent: 2,
        }
    }
}

pub type WorkFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;

/// Where work comes from: `work_generate` for a root at a difficulty.
pub trait WorkSource: Send + Sync {
    fn generate<'a>(&'a self, root: &'a [u8; 32], difficulty: u64) -> WorkFuture<'a>;
}

/// The nodes' (or a work server's) `work_generate`; the client checks the answer locally.
impl WorkSource for NodeClient {
    fn generate<'a>(&'a self, root: &'a [u8; 32], difficulty: u64) -> WorkFuture<'a> {
        Box::pin(async move {
            self.work_generate(root, difficulty)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Work computed on this machine (tests and benchmarks of the engine alone).
pub struct LocalWork;

impl WorkSource for LocalWork {
    fn generate<'a>(&'a self, root: &'a [u8; 32], difficulty: u64) -> WorkFuture<'a> {
        let root = *root;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                nanogate_protocol::nano::work::generate(&root, difficulty)
            })
            .await
            .map_err(|e| format!("local work generation failed: {e}"))
        })
    }
}

/// Why no work was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkRefusal {
    /// The payer's or the overall bound is reached: retry after this many seconds.
    Busy { retry_after: u64, why: &'static str },
    /// The work source failed.
    Unavailable(String),
}

/// Attaches work within the bounds (see the module docs).
pub struct WorkAttacher {
    source: Arc<dyn WorkSource>,
    payers: Option<DefaultKeyedRateLimiter<PublicKey>>,
    slots: Semaphore,
}

impl std::fmt::Debug for WorkAttacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkAttacher").finish_non_exhaustive()
    }
}

impl WorkAttacher {
    pub fn new(source: Arc<dyn WorkSource>, s: WorkSettings) -> Self {
        let payers = NonZeroU32::new(s.per_payer_per_min)
            .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)));
        WorkAttacher {
            source,
            payers,
            slots: Semaphore::new(s.max_concurrent.max(1)),
        }
    }

    /// Work reaching `threshold` on `root` for `payer`'s block, within the bounds.
    pub async fn attach(
        &self,
        payer: &PublicKey,
        root: &[u8; 32],
        threshold: u64,
    ) -> Result<u64, WorkRefusal> {
        // The overall bound first: a refusal for a full house must not use up the payer's
        // allowance.
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(WorkRefusal::Busy {
                retry_after: 1,
                why: "the seller's work generation is busy; retry or attach work",
            });
        };
        if let Some(limiter) = &self.payers {
            if limiter.check_key(payer).is_err() {
                return Err(WorkRefusal::Busy {
                    retry_after: 60,
                    why: "this payer had work attached too often; attach work or retry later",
                });
            }
        }
        self.source
            .generate(root, threshold)
            .await
            .map_err(WorkRefusal::Unavailable)
    }

    /// Forgets idle payers (called with the other limits' pruning).
    pub fn prune(&self) {
        if let Some(l) = &self.payers {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nanogate_protocol::nano::work::{difficulty, WorkThresholds};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls; answers after `release` is notified (to hold a slot).
    struct Gated {
        calls: AtomicUsize,
        release: tokio::sync::Notify,
    }

    impl WorkSource for Gated {
        fn generate<'a>(&'a self, root: &'a [u8; 32], d: u64) -> WorkFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                self.release.notified().await;
                LocalWork.generate(root, d).await
            })
        }
    }

    #[tokio::test]
    async fn attached_work_reaches_the_threshold() {
        let a = WorkAttacher::new(Arc::new(LocalWork), WorkSettings::default());
        let t = WorkThresholds::DEV.send();
        let root = [7; 32];
        let w = a.attach(&PublicKey([1; 32]), &root, t).await.unwrap();
        assert!(difficulty(&root, w) >= t);
    }

    #[tokio::test]
    async fn a_payer_is_bounded_per_minute() {
        let s = WorkSettings {
            per_payer_per_min: 2,
            max_concurrent: 4,
        };
        let a = WorkAttacher::new(Arc::new(LocalWork), s);
        let t = WorkThresholds::DEV.send();
        let payer = PublicKey([1; 32]);
        for i in 0..2u8 {
            assert!(a.attach(&payer, &[i; 32], t).await.is_ok());
        }
        let refused = a.attach(&payer, &[9; 32], t).await;
        assert!(
            matches!(refused, Err(WorkRefusal::Busy { .. })),
            "{refused:?}"
        );
        // Another payer is not affected.
        assert!(a.attach(&PublicKey([2; 32]), &[9; 32], t).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_house_is_refused_at_once_without_costing_the_payer() {
        let source = Arc::new(Gated {
            calls: AtomicUsize::new(0),
            release: tokio::sync::Notify::new(),
        });
        let s = WorkSettings {
            per_payer_per_min: 1,
            max_concurrent: 1,
        };
        let a = Arc::new(WorkAttacher::new(source.clone(), s));
        let t = WorkThresholds::DEV.send();
        let busy = {
            let a = a.clone();
            tokio::spawn(async move { a.attach(&PublicKey([1; 32]), &[1; 32], t).await })
        };
        while source.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let payer = PublicKey([2; 32]);
        let refused = a.attach(&payer, &[2; 32], t).await;
        assert!(
            matches!(refused, Err(WorkRefusal::Busy { .. })),
            "{refused:?}"
        );
        source.release.notify_one();
        assert!(busy.await.unwrap().is_ok());
        // The refusal did not use up payer 2's single allowance.
        let done = {
            let a = a.clone();
            tokio::spawn(async move { a.attach(&payer, &[2; 32], t).await })
        };
        while source.calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        source.release.notify_one();
        assert!(done.await.unwrap().is_ok());
    }
}
