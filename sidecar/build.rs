//! Records the git commit the sidecar is built from (`NANOGATE_GIT_COMMIT`), for its start-up
//! log. Best effort and dependency-free: a build outside a git checkout (or without `git`)
//! records nothing, unless `NANOGATE_GIT_COMMIT` is set in the build environment (e.g. by an
//! image build that has no `.git`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=NANOGATE_GIT_COMMIT");
    let commit = std::env::var("NANOGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    // Rebuild when HEAD moves: the HEAD file (a branch switch) and the branch's ref (a commit).
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(c) = commit {
        println!("cargo:rustc-env=NANOGATE_GIT_COMMIT={c}");
    }
}
