//! The real `nanogate-sidecar` binary as a child process: configuration written as TOML, start,
//! wait for `/readyz`, stop (SIGTERM or SIGKILL), restart on the same port and store.

use crate::procs::{workspace_bin, ChildProcess};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What one sidecar is told (everything else keeps the sidecar's defaults).
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    pub listen_port: u16,
    pub network: String,
    pub node_network: String,
    pub filter_secret: String,
    pub challenge_secret: String,
    pub rpc: Vec<String>,
    pub ws: Vec<String>,
    pub database_url: String,
    pub postgres_schema: Option<String>,
    /// Upper bound on the wait for confirmation.
    pub max_wait_secs: u64,
    pub rpc_timeout_ms: u64,
    pub rpc_retries: u32,
    pub log: String,
}

fn q(s: &str) -> String {
    // A JSON string is a valid TOML basic string for everything serde_json emits.
    serde_json::Value::from(s).to_string()
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

impl SidecarSettings {
    /// The TOML file the sidecar reads with `--config`. An empty secret is left out (a
    /// facilitator-only sidecar has none).
    pub fn to_toml(&self) -> String {
        let secret = |name: &str, value: &str| {
            if value.is_empty() {
                String::new()
            } else {
                format!("{name} = {}\n", q(value))
            }
        };
        let mut t = format!(
            "listen = {}\nnetwork = {}\nnode_network = {}\n{}{}\
             shutdown_grace_secs = 2\nlog = {}\n\n\
             [nodes]\nrpc = {}\nws = {}\ncall_timeout_ms = {}\nretries = {}\n\n\
             [store]\ndatabase_url = {}\nmax_connections = 8\n",
            q(&format!("127.0.0.1:{}", self.listen_port)),
            q(&self.network),
            q(&self.node_network),
            secret("filter_secret", &self.filter_secret),
            secret("challenge_secret", &self.challenge_secret),
            q(&self.log),
            list(&self.rpc),
            list(&self.ws),
            self.rpc_timeout_ms,
            self.rpc_retries,
            q(&self.database_url),
        );
        if let Some(schema) = &self.postgres_schema {
            t.push_str(&format!("postgres_schema = {}\n", q(schema)));
        }
        t.push_str(&format!(
            "\n[settlement]\nmax_wait_secs = {}\n",
            self.max_wait_secs
        ));
        t
    }
}

/// A running `nanogate-sidecar`.
pub struct SidecarProcess {
    pub settings: SidecarSettings,
    pub config_path: PathBuf,
    /// Extra `NANOGATE_*` environment for the process (e.g. `NANOGATE_KEY_ROTATION_SECS`).
    env: Vec<(String, String)>,
    dir: PathBuf,
    process: Option<ChildProcess>,
    restarts: u32,
}

impl SidecarProcess {
    /// Writes `dir/sidecar.toml`, starts the binary and waits until `/readyz` answers 200.
    pub async fn start(settings: SidecarSettings, dir: &Path) -> anyhow::Result<SidecarProcess> {
        Self::start_with_env(settings, dir, Vec::new()).await
    }

    /// As [`start`](Self::start), with extra environment variables (settings not in
    /// [`SidecarSettings`], e.g. `NANOGATE_KEY_ROTATION_SECS`).
    pub async fn start_with_env(
        settings: SidecarSettings,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<SidecarProcess> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join(format!("sidecar-{}.toml", settings.listen_port));
        std::fs::write(&config_path, settings.to_toml())?;
        let mut s = SidecarProcess {
            settings,
            config_path,
            env,
            dir: dir.to_path_buf(),
            process: None,
            restarts: 0,
        };
        s.spawn_and_wait().await?;
        Ok(s)
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let bin = workspace_bin("nanogate-sidecar");
        let log = self.dir.join(format!(
            "sidecar-{}-{}.log",
            self.settings.listen_port, self.restarts
        ));
        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(&self.config_path);
        // The sidecar reads NANOGATE_* from the environment; ours must not leak into it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("NANOGATE_") {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let process = ChildProcess::spawn("nanogate-sidecar", &mut cmd, &log)
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        self.process = Some(process);
        self.wait_ready(Duration::from_secs(60)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.base_url());
        loop {
            let Some(p) = self.process.as_mut() else {
                anyhow::bail!("sidecar not running");
            };
            if !p.running() {
                anyhow::bail!("nanogate-sidecar exited during start:\n{}", p.log());
            }
            let last = match client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                anyhow::bail!(
                    "nanogate-sidecar not ready after {timeout:?} (last: {last}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.settings.listen_port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.settings.listen_port)
    }

    /// Everything the current (or last) process logged.
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(ChildProcess::log)
            .unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ChildProcess::running)
    }

    /// Takes the sidecar down hard (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill();
        }
    }

    /// Graceful stop (SIGTERM, then SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(p) = self.process.as_mut() {
            p.terminate(grace);
        }
    }

    /// Starts it again on the same port, configuration and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.restarts += 1;
        self.spawn_and_wait().await
    }

    /// The sidecar's Prometheus text.
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.base_url())).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildProcess::id)
    }
}
