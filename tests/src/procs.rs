//! Child processes owned by the test (or demo) process: the workspace binaries are located next
//! to the running executable, every child gets `PR_SET_PDEATHSIG` (it dies with the thread that
//! spawned it, even if we are killed) and is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUILD_HINT: &str = "run `cargo xtask test` (or `cargo build --workspace --bins`) first";

/// `target/<profile>` as seen from the running executable: integration tests live in
/// `target/<profile>/deps/`, binaries such as `nanogate-demo` in `target/<profile>/`.
fn exe_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("NANOGATE_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(up) = dir.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
    }
    dirs.push(crate::workspace_root().join("target/debug"));
    dirs
}

/// A workspace binary (`nanogate-sidecar`, `nanogate-pay`, …): `$NANOGATE_BIN_DIR/<name>`, else
/// next to the running executable. Panics (failing the test) with instructions when missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dirs = exe_dirs();
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found (looked in {}): {BUILD_HINT}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Makes the child receive SIGKILL when the spawning thread ends (Linux).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// A running child process whose stdout and stderr go to a log file; killed on drop.
pub struct ChildProcess {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd` with output to `log` (created or truncated).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> std::io::Result<ChildProcess> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        die_with_parent(cmd);
        let child = cmd.spawn()?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Asks it to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        #[cfg(unix)]
        {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let _ = grace;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
