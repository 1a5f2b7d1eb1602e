//! `cargo xtask oci`: packages the filter module as an OCI image layout that Istio's Wasm image
//! fetcher (`pkg/wasm/imagefetcher.go`, used for `WasmPlugin.url: oci://…`) accepts.
//!
//! Format: the Wasm image specification's *oci* variant (solo-io/wasm `spec/spec.md`), which is
//! what Istio reads when the layers carry the custom Wasm media types:
//!
//! - manifest `config`: the runtime config, `application/vnd.module.wasm.config.v1+json`;
//! - `layers`: exactly two, because Istio's fetcher refuses any other count for this variant
//!   ("number of layers must be 2"): the same runtime config as a layer, and the module itself,
//!   uncompressed, as the one `application/vnd.module.wasm.content.layer.v1+wasm` layer.
//!
//! The layout (`oci-layout`, `index.json`, `blobs/sha256/…`) is written without timestamps, so
//! the same module always gives the same manifest digest. For `oci://` URLs Istio compares
//! `WasmPlugin.sha256` with the **manifest** digest (the image digest); for `http(s)://` and
//! `file://` URLs with the sha256 of the module itself. Both are reported.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Media type of the one layer that holds the Wasm module.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Media type of the runtime config (manifest config and its companion layer).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Annotation naming a layer's file (oras uses it as the file name on pull).
pub const TITLE: &str = "org.opencontainers.image.title";
/// Annotation naming the tag of a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Envoy `root_id` (Istio `pluginName`) the filter registers.
pub const ROOT_ID: &str = "nanogate";
/// The proxy-wasm ABI the module exports (proxy-wasm Rust SDK 0.2.x).
pub const ABI_VERSION: &str = "proxy_abi_version_0_2_1";

/// What was written, for printing and for tests.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
    /// `sha256:<hex>` of the manifest: the image digest (WasmPlugin `sha256` for `oci://`).
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// `sha256:<hex>` of the module (WasmPlugin `sha256` for `http(s)://` and `file://`).
    pub wasm_digest: String,
    pub wasm_size: u64,
}

impl Layout {
    /// The manifest digest without the `sha256:` prefix, as `WasmPlugin.sha256` wants it.
    pub fn manifest_sha256_hex(&self) -> &str {
        self.manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.manifest_digest)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let sum = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in sum {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn descriptor(media_type: &str, bytes: &[u8], title: Option<&str>) -> Value {
    let mut d = json!({
        "mediaType": media_type,
        "digest": digest(bytes),
        "size": bytes.len(),
    });
    if let Some(t) = title {
        d["annotations"] = json!({ TITLE: t });
    }
    d
}

/// The runtime config of the Wasm image spec for an Envoy filter.
pub fn runtime_config() -> Vec<u8> {
    let v = json!({
        "type": "envoy_proxy",
        "abiVersions": [ABI_VERSION],
        "config": { "root_ids": [ROOT_ID] },
    });
    v.to_string().into_bytes()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(), String> {
    let d = digest(bytes);
    let hex = d.trim_start_matches("sha256:");
    write(&dir.join("blobs/sha256").join(hex), bytes)
}

/// Writes an OCI image layout for `wasm` into `dir` (replacing whatever was there), tagged
/// `tag`, and returns its digests.
pub fn write_layout(wasm: &[u8], dir: &Path, tag: &str, version: &str) -> Result<Layout, String> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err("the module does not start with the Wasm magic number".into());
    }
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!("`{tag}` is not a valid OCI tag"));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;

    let config = runtime_config();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(WASM_CONFIG_MEDIA_TYPE, &config, None),
        "layers": [
            descriptor(WASM_CONFIG_MEDIA_TYPE, &config, Some("runtime-config.json")),
            descriptor(WASM_LAYER_MEDIA_TYPE, wasm, Some("plugin.wasm")),
        ],
        "annotations": {
            "org.opencontainers.image.title": "nanogate-filter",
            "org.opencontainers.image.description":
                "nanogate x402/Nano payment filter for Envoy (proxy-wasm, root_id nanogate)",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let mut manifest_desc = descriptor(MANIFEST_MEDIA_TYPE, &manifest_bytes, None);
    manifest_desc["annotations"] = json!({ REF_NAME: tag });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_desc],
    });

    write_blob(dir, &config)?;
    write_blob(dir, wasm)?;
    write_blob(dir, &manifest_bytes)?;
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index_bytes = serde_json::to_vec_pretty(&index).map_err(|e| e.to_string())?;
    write(&dir.join("index.json"), &index_bytes)?;

    Ok(Layout {
        dir: dir.to_path_buf(),
        tag: tag.to_owned(),
        manifest_digest: digest(&manifest_bytes),
        manifest_size: manifest_bytes.len() as u64,
        wasm_digest: digest(wasm),
        wasm_size: wasm.len() as u64,
    })
}
