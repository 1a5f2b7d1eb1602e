//! What this binary is: its version, the git commit it was built from (when `build.rs` could
//! tell) and its profile, logged at start so an operator can match logs to a release.

/// The crate version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The short git commit, if known at build time.
pub const COMMIT: Option<&str> = option_env!("NANOGATE_GIT_COMMIT");
/// `debug` or `release` (debug assertions on or off).
pub const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};
