//! Machine facts and tool versions for the report, criterion estimates, and UTC timestamps.

use std::path::Path;
use std::process::Command;

pub struct Facts {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    /// 1/5/15-minute load averages when the run started (other work on the machine shows).
    pub loadavg: String,
    pub kernel: String,
    pub rustc: String,
    pub envoy: String,
    pub wrk: String,
    pub git: String,
    pub wasm_bytes: u64,
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn collect(envoy: &Path, wasm: &Path, root: &Path) -> Facts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let envoy_version = first_line(Command::new(envoy).arg("--version"));
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy_version = envoy_version
        .rsplit_once("version:")
        .and_then(|(_, v)| v.trim().split('/').nth(1))
        .map(|v| format!("Envoy {v}"))
        .unwrap_or(envoy_version);
    let dirty = Command::new("git")
        .current_dir(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let git =
        first_line(
            Command::new("git")
                .current_dir(root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    Facts {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        memory,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        rustc: first_line(Command::new("rustc").arg("--version")),
        envoy: envoy_version,
        wrk: crate::wrk::version(),
        git: if dirty {
            format!("{git} (+ local changes)")
        } else {
            git
        },
        wasm_bytes: std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0),
    }
}

/// Criterion's median estimate for benchmark `name`, in nanoseconds.
pub fn criterion_median_ns(dir: &Path, name: &str) -> Option<f64> {
    let path = dir.join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// `(YYYY-MM-DD, HH:MM:SS)` in UTC for a Unix time.
pub fn utc(unix: u64) -> (String, String) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0).0, "1970-01-01");
        assert_eq!(
            utc(1_795_000_000),
            ("2026-11-18".to_string(), "11:06:40".to_string())
        );
        assert_eq!(utc(951_782_400).0, "2000-02-29");
    }
}
