//! `nanogate-demo` (what `cargo xtask demo` runs), on free ports: it starts everything, pays for
//! one request with `nanogate-pay` printing each step, prints what to try next, keeps serving,
//! and Ctrl-C (SIGINT) stops every process it started.

use nanogate_tests::ports::free_port;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

fn pid_after(line: &str) -> Option<u32> {
    let rest = line.split("pid ").nth(1)?;
    rest.trim_end_matches(')')
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; read its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn demo_pays_one_request_step_by_step_and_ctrl_c_stops_everything() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let listener = ports[0];
    let dir = std::env::temp_dir().join(format!("nanogate-demo-test-{}", std::process::id()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nanogate-demo"));
    cmd.env(
        "NANOGATE_DEMO_PORTS",
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
    .env("NANOGATE_DEMO_DIR", &dir)
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    nanogate_tests::procs::die_with_parent(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("nanogate-demo starts");
    let pid = child.id().expect("pid");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut transcript = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(180), async {
        while let Ok(Some(line)) = lines.next_line().await {
            transcript.push_str(&line);
            transcript.push('\n');
            if line.contains("Press Ctrl-C") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ready {
        let _ = child.kill().await;
        let out = child.wait_with_output().await.expect("output");
        panic!(
            "the demo did not reach its prompt:\n{transcript}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "demo ready and paid in {:?}:\n{transcript}",
        started.elapsed()
    );
    for expected in [
        "step 1",
        "HTTP 402",
        "PAYMENT-REQUIRED:",
        "price        0.001 XNO",
        "step 2",
        "nanogate-pay │ 402: 0.001 XNO",
        "nanogate-pay │ confirmed",
        "step 3",
        "(CONFIRMED): send of 0.001 XNO",
        "step 4",
        "HTTP 200",
        "paid 0.001 XNO",
        "without any payment header",
        "curl -i http://127.0.0.1:",
        "NANOGATE_SEED=",
        "nanogate-admin revenue --by route",
        "/dashboard#token=",
    ] {
        assert!(
            transcript.contains(expected),
            "`{expected}` missing from:\n{transcript}"
        );
    }
    let sidecar_pid = transcript
        .lines()
        .find(|l| l.trim_start().starts_with("sidecar "))
        .and_then(pid_after)
        .expect("sidecar pid printed");
    let envoy_pid = transcript
        .lines()
        .find(|l| l.trim_start().starts_with("Envoy "))
        .and_then(pid_after)
        .expect("envoy pid printed");
    assert!(alive(sidecar_pid) && alive(envoy_pid));
    // Still serving.
    let r = reqwest::get(format!("http://127.0.0.1:{listener}/paid/report"))
        .await
        .expect("demo serves");
    assert_eq!(r.status(), 402);

    // Ctrl-C.
    let pid = i32::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    })
    .await
    .expect("the demo stops after Ctrl-C");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the demo exits")
        .expect("status");
    assert!(status.success(), "exit status {status}: {rest}");
    assert!(rest.contains("stopped:"), "{rest}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (alive(sidecar_pid) || alive(envoy_pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(sidecar_pid), "the sidecar was stopped");
    assert!(!alive(envoy_pid), "Envoy was stopped");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", listener)).is_ok(),
        "the listener port is free again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
