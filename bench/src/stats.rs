//! Latency summaries.

use std::time::Duration;

/// A closed-loop run measured by our own client.
#[derive(Debug, Clone, Default)]
pub struct LatencyRun {
    pub ok: u64,
    pub failures: u64,
    pub first_failure: Option<String>,
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Nearest-rank percentile of a sorted slice (zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
