//! Exit codes scripts can trust (documented in `--help` and docs/operate.md).

use std::fmt;
use std::process::ExitCode;

/// `clap` exits with 2 on a usage error; the CLI uses 2 for its own usage errors too.
pub const USAGE: u8 = 2;
/// The sidecar refused the token (401 or 403).
pub const AUTH: u8 = 3;
/// The sidecar could not be reached (connection refused, DNS, timeout).
pub const UNREACHABLE: u8 = 4;
/// The sidecar answered with an error or something that is not the expected JSON.
pub const SIDECAR: u8 = 5;
/// The sidecar refused what was asked of an existing thing, or found no such thing (404, 409,
/// 422): e.g. revoking an unknown pass.
pub const REFUSED: u8 = 6;
/// A command that acts on many things (refunds, pocketing, sweeping) did some of them only;
/// the rest are listed with why.
pub const INCOMPLETE: u8 = 7;

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// Prints the message on stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("nanogate-admin: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;
