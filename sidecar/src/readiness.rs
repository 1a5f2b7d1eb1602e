//! `/readyz` from a cached probe: the store and a node are asked at most once per
//! `server.ready_cache_secs`, however often the (unauthenticated) endpoint is hit. Concurrent
//! callers share one probe.

use crate::engine::Engine;
use crate::metrics::Metrics;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What the last probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub store: bool,
    pub ledger: bool,
}

impl Probe {
    pub fn ready(self) -> bool {
        self.store && self.ledger
    }
}

/// Bound on each half of a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Readiness {
    every: Duration,
    last: Mutex<Option<(Instant, Probe)>>,
}

impl Readiness {
    pub fn new(every: Duration) -> Self {
        Readiness {
            every,
            last: Mutex::new(None),
        }
    }

    /// The last probe if it is recent enough, else a new one.
    pub async fn get(&self, engine: &Engine, metrics: &Metrics) -> Probe {
        let mut last = self.last.lock().await;
        if let Some((at, p)) = *last {
            if at.elapsed() < self.every {
                return p;
            }
        }
        let p = probe(engine, metrics).await;
        *last = Some((Instant::now(), p));
        p
    }
}

async fn probe(engine: &Engine, metrics: &Metrics) -> Probe {
    metrics.readiness_probes.inc();
    let t = Instant::now();
    let store = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, engine.store().ping()).await,
        Ok(Ok(()))
    );
    metrics.store_op("ping", t.elapsed());
    let want = engine.config().node_network.rpc_name();
    let ledger = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, engine.ledger().network()).await,
        Ok(Ok(ref n)) if n == want
    );
    Probe { store, ledger }
}
