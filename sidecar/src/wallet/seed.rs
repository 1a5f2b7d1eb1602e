//! The payee wallet seed: read once at start from a file or the `NANOGATE_WALLET_SEED`
//! environment variable (never from the configuration file, never a flag, never logged),
//! checked, and kept in memory that is wiped when the sidecar stops.

use nanogate_protocol::nano::PrivateKey;
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

/// The environment variable that may hold the seed (64 hex digits).
pub const SEED_ENV: &str = "NANOGATE_WALLET_SEED";

/// A wallet seed. No `Debug`, no `Clone`: it is never printed or copied around.
pub struct Seed(Zeroizing<[u8; 32]>);

#[derive(Debug, Error)]
pub enum SeedError {
    #[error("wallet: set the seed in wallet.seed_file or {SEED_ENV}, not both")]
    Both,
    #[error("wallet: cannot read the seed file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("wallet: the seed in {from} must be 64 hex digits (a Nano wallet seed)")]
    Malformed { from: String },
}

impl Seed {
    /// The private key of the seed's account `index`.
    pub fn key(&self, index: u32) -> PrivateKey {
        PrivateKey::from_seed(&self.0, index)
    }

    fn parse(text: &str, from: &str) -> Result<Seed, SeedError> {
        let malformed = || SeedError::Malformed {
            from: from.to_owned(),
        };
        let trimmed = text.trim();
        let bytes = Zeroizing::new(
            nanogate_protocol::hex::decode_array::<32>(trimmed).map_err(|_| malformed())?,
        );
        Ok(Seed(bytes))
    }
}

/// The seed from `file` or from `env` (the value of [`SEED_ENV`], if set); `None` when
/// neither is configured: the sidecar then signs nothing.
pub fn load(
    file: Option<&Path>,
    env: Option<Zeroizing<String>>,
) -> Result<Option<Seed>, SeedError> {
    let env = env.filter(|v| !v.trim().is_empty());
    match (file, env) {
        (Some(_), Some(_)) => Err(SeedError::Both),
        (None, None) => Ok(None),
        (None, Some(v)) => Seed::parse(&v, SEED_ENV).map(Some),
        (Some(path), None) => {
            let shown = path.display().to_string();
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| SeedError::Read {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?);
            warn_if_readable_by_others(path);
            Seed::parse(&text, &shown).map(Some)
        }
    }
}

/// The seed from the configuration and the process environment.
pub fn from_environment(file: Option<&Path>) -> Result<Option<Seed>, SeedError> {
    load(file, std::env::var(SEED_ENV).ok().map(Zeroizing::new))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the wallet seed file is readable by other users: chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEED: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";

    #[test]
    fn a_seed_comes_from_one_place_and_bad_ones_are_refused_without_echo() {
        assert!(load(None, None).unwrap().is_none());
        let s = load(None, Some(Zeroizing::new(format!(" {SEED}\n"))))
            .unwrap()
            .unwrap();
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        assert_eq!(
            s.key(0).public_key(),
            PrivateKey::from_seed(&bytes, 0).public_key()
        );
        let dir = std::env::temp_dir().join(format!("nanogate-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("seed");
        std::fs::write(&f, "not-a-seed-but-secret").unwrap();
        let e = load(Some(&f), None).err().unwrap().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(!e.contains("not-a-seed-but-secret"), "{e}");
        std::fs::write(&f, SEED).unwrap();
        assert!(load(Some(&f), None).unwrap().is_some());
        assert!(matches!(
            load(Some(&f), Some(Zeroizing::new(SEED.into()))),
            Err(SeedError::Both)
        ));
        let missing = load(Some(&dir.join("absent")), None)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("cannot read the seed file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
