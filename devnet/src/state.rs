//! The state file: the blocks in the order they were added, with their confirmation flags.
//! Loading replays them through the ledger (signature checks skipped: they passed once).

use crate::ledger::Ledger;
use anyhow::Context;
use nanogate_protocol::nano::StateBlock;
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT: &str = "nanogate-devnet-ledger/1";

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    blocks: Vec<Stored>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    block: StateBlock,
    processed_ms: u64,
    confirmed: bool,
}

pub(crate) fn snapshot(ledger: &Ledger) -> Vec<u8> {
    let blocks = ledger
        .order()
        .iter()
        .filter_map(|h| {
            let e = ledger.block(h)?;
            Some(Stored {
                block: e.state()?.clone(),
                processed_ms: e.processed_ms,
                confirmed: ledger.is_confirmed(h),
            })
        })
        .collect();
    let file = StateFile {
        format: FORMAT.into(),
        blocks,
    };
    serde_json::to_vec_pretty(&file).unwrap_or_default()
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn load(path: &Path) -> anyhow::Result<Ledger> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: StateFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing state file {}", path.display()))?;
    anyhow::ensure!(
        file.format == FORMAT,
        "state file {} has format {:?}, expected {FORMAT:?}",
        path.display(),
        file.format
    );
    let mut ledger = Ledger::new();
    for s in &file.blocks {
        ledger
            .process_with(&s.block, s.processed_ms, true)
            .map_err(|e| anyhow::anyhow!("replaying block {}: {e}", s.block.hash()))?;
    }
    for s in file.blocks.iter().filter(|s| s.confirmed) {
        ledger.confirm(s.block.hash());
    }
    Ok(ledger)
}
