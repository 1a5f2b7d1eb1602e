//! Running wrk (bounded in time, killed if it overstays) and parsing its `--latency` output.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: u64,
    /// Responses that were not 2xx/3xx (expected for the 402 case).
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout) summed.
    pub errors: u64,
}

pub fn version() -> String {
    // `wrk -v` prints its version and exits with status 1.
    Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .split(" [")
                .next()
                .unwrap_or("")
                .trim()
                .replace("debian/", "")
        })
        .unwrap_or_else(|_| "not found".into())
}

/// `wrk -t1 -c<connections> -d<secs>s --latency` against `url`.
pub fn run(url: &str, connections: u32, secs: u64) -> Result<WrkResult> {
    run_with(url, connections, secs, None)
}

/// [`run`] with one request header (`name: value`) on every request.
pub fn run_with(url: &str, connections: u32, secs: u64, header: Option<&str>) -> Result<WrkResult> {
    let mut child = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            "--latency",
        ])
        .args(header.map(|h| ["-H", h]).into_iter().flatten())
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk (is it installed? `cargo xtask bench` installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(secs + 15);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("wrk overstayed its {secs} s run against {url}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("parsing wrk output:\n{text}"))
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

pub fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have_rps = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().context("Requests/sec")?;
            have_rps = true;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50 = parse_duration(v).context("50%")?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99 = parse_duration(v).context("99%")?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if t.contains(" requests in ") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    if !have_rps {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.20ms  300.00us   \
            9.00ms   90.00%\n  Latency Distribution\n     50%  651.00us\n     75%    1.30ms\n     \
            90%    1.50ms\n     99%    2.09ms\n  259710 requests in 10.00s, 30.00MB read\n  \
            Non-2xx or 3xx responses: 259710\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Requests/sec:  25971.00\nTransfer/sec:      3.00MB\n";
        let r = parse(text).unwrap_or_default();
        assert_eq!(r.requests, 259_710);
        assert_eq!(r.non_2xx, 259_710);
        assert_eq!(r.errors, 3);
        assert!((r.rps - 25_971.0).abs() < 0.1);
        assert_eq!(r.p50, Duration::from_micros(651));
        assert_eq!(r.p99, Duration::from_micros(2090));
    }
}
