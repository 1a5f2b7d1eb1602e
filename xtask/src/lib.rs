//! Library half of the xtask package: the parts of `cargo xtask` that tests call directly.

pub mod oci;
pub mod tidy;
