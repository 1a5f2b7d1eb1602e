//! The operator's command line (`nanogate-admin`, src/bin/nanogate-admin.rs) over the admin
//! API: one module per subcommand, each with its clap `Args` and a `run`; [`http`] holds the
//! connection and token, [`exit`] the exit codes scripts can rely on. docs/operate.md is the
//! manual.

pub mod exit;
pub mod http;
pub mod output;
pub mod owed;
pub mod passes;
pub mod payments;
pub mod refunds;
pub mod revenue;
