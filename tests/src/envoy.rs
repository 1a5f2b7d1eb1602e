//! Spawning real Envoy from the test process (so it dies with the test: the PyPI build sets
//! PR_SET_PDEATHSIG), with `--disable-hot-restart` and `--concurrency 1`, waiting for the
//! admin endpoint's `/ready`, and killing it on drop. Also: rendering the `${VAR}` bootstrap
//! templates in `envoy/`, and `envoy --mode validate`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const RUN_XTASK: &str =
    "run `cargo xtask test` (it installs Envoy into .venv and builds the filter)";

/// The environment variable of Envoy that the shipped bootstraps pass into the wasm VM and the
/// filter reads its sidecar secret from (`sidecar.secretEnv`).
pub const FILTER_SECRET_ENV: &str = "NANOGATE_FILTER_SECRET";

/// The Envoy binary: `$NANOGATE_ENVOY`, else `<workspace>/.venv/bin/envoy`. Panics (failing the
/// test) with instructions when missing.
pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("NANOGATE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {} (set NANOGATE_ENVOY or {RUN_XTASK})",
        path.display()
    );
    path
}

/// The filter module: `$NANOGATE_FILTER_WASM`, else the `wasm` profile build output. Panics
/// (failing the test) with instructions when missing.
pub fn filter_wasm() -> PathBuf {
    let path = std::env::var_os("NANOGATE_FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::workspace_root().join("target/wasm32-wasip1/wasm/nanogate_filter.wasm")
        });
    assert!(
        path.exists(),
        "filter module not found at {} (set NANOGATE_FILTER_WASM or {RUN_XTASK})",
        path.display()
    );
    path
}

/// A bootstrap template from `envoy/` (e.g. `"envoy.yaml"`).
pub fn template(name: &str) -> String {
    let path = crate::workspace_root().join("envoy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Replaces every `${NAME}` in `template` with its value. A placeholder without a value is an
/// error (so a template and its callers cannot drift apart silently).
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder near `{}`", &rest[start..]))?;
        let name = &after[..end];
        let value = vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no value for placeholder ${{{name}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Rewrites the plugin configuration of a rendered bootstrap: the JSON block scalar after the
/// first `value: |` (as in `envoy/envoy.yaml`), parsed, handed to `edit`, written back in place.
pub fn edit_plugin_config(
    yaml: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<String, String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end().ends_with("value: |"))
        .ok_or("no `value: |` block in the bootstrap")?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let outer = indent(lines[start]);
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.trim().is_empty() && indent(l) <= outer)
        .map_or(lines.len(), |n| start + 1 + n);
    let body = lines[start + 1..end].join("\n");
    let mut config: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("plugin configuration: {e}"))?;
    edit(&mut config);
    let pad = " ".repeat(outer + 2);
    let mut out: Vec<String> = lines[..=start].iter().map(|l| l.to_string()).collect();
    out.push(format!("{pad}{config}"));
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    Ok(out.join("\n") + "\n")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory for one Envoy (removed on drop of [`Envoy`]).
fn scratch_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nanogate-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A filter secret for `envoy --mode validate` only: validation runs the plugin's
/// `on_configure` (which reads the secret's variable) but never calls the sidecar.
pub const VALIDATE_FILTER_SECRET: &str = "validate-only-filter-secret-0123";

/// Runs `envoy --mode validate` on a rendered bootstrap (with [`FILTER_SECRET_ENV`] set to
/// [`VALIDATE_FILTER_SECRET`]). `Err` carries Envoy's output.
pub fn validate(config_yaml: &str) -> Result<String, String> {
    let dir = scratch_dir("validate");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, config_yaml).map_err(|e| format!("write {}: {e}", path.display()))?;
    let out = Command::new(envoy_binary())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .env(FILTER_SECRET_ENV, VALIDATE_FILTER_SECRET)
        .output()
        .map_err(|e| format!("cannot run envoy: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    admin_port: u16,
    dir: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config_yaml` (whose admin listener is on `admin_port`) and waits until
    /// `/ready` says LIVE.
    pub async fn start(config_yaml: &str, admin_port: u16) -> Envoy {
        Envoy::start_with_env(config_yaml, admin_port, &[]).await
    }

    /// [`Envoy::start`] with extra environment variables for Envoy (the filter secret the
    /// shipped bootstraps pass into the wasm VM: [`FILTER_SECRET_ENV`]).
    pub async fn start_with_env(config_yaml: &str, admin_port: u16, env: &[(&str, &str)]) -> Envoy {
        let dir = scratch_dir("envoy");
        let path = dir.join("envoy.yaml");
        std::fs::write(&path, config_yaml).unwrap_or_else(|e| panic!("write config: {e}"));
        let log = std::fs::File::create(dir.join("envoy.log")).expect("create envoy.log");
        let log2 = log.try_clone().expect("clone log handle");
        let level = std::env::var("NANOGATE_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        let mut cmd = Command::new(envoy_binary());
        // Dies with the thread that started it, even when the test process is killed.
        crate::procs::die_with_parent(&mut cmd);
        cmd.envs(env.iter().copied());
        let child = cmd
            .arg("-c")
            .arg(&path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                &level,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start envoy: {e}"));
        let mut envoy = Envoy {
            child,
            admin_port,
            dir,
        };
        envoy.wait_ready(Duration::from_secs(20)).await;
        envoy
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "envoy exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = client.get(self.admin_url("/ready")).send().await {
                if r.status().is_success() && r.text().await.unwrap_or_default().contains("LIVE") {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("envoy not ready after {timeout:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills Envoy now, freeing its ports (drop does the same, and also removes its directory).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The Envoy process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The admin `/config_dump` (everything Envoy would show an operator of its config).
    pub async fn config_dump(&self) -> String {
        reqwest::get(self.admin_url("/config_dump?include_eds"))
            .await
            .expect("admin /config_dump")
            .text()
            .await
            .expect("config dump body")
    }

    /// The admin `/stats` text (optionally filtered by a regex, as Envoy's `filter=`).
    pub async fn stats(&self, filter: &str) -> String {
        let url = self.admin_url(&format!("/stats?filter={filter}"));
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// A counter's value from `/stats` (0 when absent). Wasm counters are named
    /// `wasmcustom.<name>`.
    pub async fn counter(&self, name: &str) -> u64 {
        let text = self.stats(name).await;
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("NANOGATE_KEEP_ENVOY_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder_and_refuses_missing_ones() {
        let t = "a ${X} b ${Y}${X}";
        assert_eq!(
            render(t, &[("X", "1".into()), ("Y", "2".into())]).as_deref(),
            Ok("a 1 b 21")
        );
        assert!(render(t, &[("X", "1".into())])
            .unwrap_err()
            .contains("${Y}"));
        assert!(render("${X", &[]).is_err());
        assert_eq!(render("no vars", &[]).as_deref(), Ok("no vars"));
    }

    #[test]
    fn edit_plugin_config_rewrites_only_the_json_block() {
        let yaml = "a:\n  value: |\n    {\"routes\": [1],\n     \"x\": 2}\n  next: 3\n";
        let out = edit_plugin_config(yaml, |c| c["routes"] = serde_json::json!([1, 2])).unwrap();
        assert_eq!(
            out,
            "a:\n  value: |\n    {\"routes\":[1,2],\"x\":2}\n  next: 3\n"
        );
        assert!(edit_plugin_config("a: 1", |_| {}).is_err());
    }
}
