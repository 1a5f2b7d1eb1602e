//! The OCI image layout of `cargo xtask oci`, checked the way a registry client and Istio's Wasm
//! image fetcher read it: every digest recomputed from the blob files, every size from their
//! lengths, and the manifest shaped as Istio's *oci* variant (two layers, exactly one of them
//! the Wasm module with `application/vnd.module.wasm.content.layer.v1+wasm`).

use nanogate_xtask::oci::{self, write_layout};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nanogate-oci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A small but well-formed Wasm module header plus payload (the layout does not care what the
/// module does).
fn module(payload: &[u8]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(payload);
    m
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the blob a descriptor names and checks its digest and size against the file itself.
fn blob(dir: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("digest {digest} is not sha256:<hex>"));
    assert_eq!(hex.len(), 64, "{digest}");
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("blob {}: {e}", path.display()));
    assert_eq!(hex_sha256(&bytes), hex, "digest of {}", path.display());
    let len = std::fs::metadata(&path).expect("blob metadata").len();
    assert_eq!(
        desc["size"].as_u64(),
        Some(len),
        "size of {}",
        path.display()
    );
    bytes
}

#[test]
fn layout_digests_and_sizes_match_the_blob_files_and_istio_finds_one_wasm_layer() {
    let dir = scratch("layout");
    let wasm = module(b"nanogate filter stand-in");
    let layout = write_layout(&wasm, &dir, "0.1.0", "0.1.0").expect("layout written");

    // oci-layout marker.
    assert_eq!(
        read_json(&dir.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );

    // index.json → one manifest, tagged.
    let index = read_json(&dir.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], oci::INDEX_MEDIA_TYPE);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    let mdesc = &manifests[0];
    assert_eq!(mdesc["mediaType"], oci::MANIFEST_MEDIA_TYPE);
    assert_eq!(mdesc["annotations"][oci::REF_NAME], "0.1.0");
    let manifest_bytes = blob(&dir, mdesc);
    assert_eq!(mdesc["digest"], layout.manifest_digest.as_str());
    assert_eq!(
        layout.manifest_sha256_hex(),
        hex_sha256(&manifest_bytes),
        "the printed WasmPlugin sha256 is the image (manifest) digest"
    );
    assert_eq!(layout.manifest_size, manifest_bytes.len() as u64);

    // The manifest.
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], oci::MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest["config"]["mediaType"], oci::WASM_CONFIG_MEDIA_TYPE);
    let config: Value = serde_json::from_slice(&blob(&dir, &manifest["config"])).expect("config");
    assert_eq!(config["type"], "envoy_proxy");
    assert_eq!(config["config"]["root_ids"][0], oci::ROOT_ID);

    let layers = manifest["layers"].as_array().expect("layers");
    // Istio's fetcher takes the custom-media-type ("oci") variant only with exactly two layers.
    assert_eq!(layers.len(), 2, "{layers:?}");
    let wasm_layers: Vec<&Value> = layers
        .iter()
        .filter(|l| l["mediaType"] == oci::WASM_LAYER_MEDIA_TYPE)
        .collect();
    assert_eq!(wasm_layers.len(), 1, "exactly one layer carries the module");
    let module_blob = blob(&dir, wasm_layers[0]);
    assert_eq!(
        module_blob, wasm,
        "the layer is the module itself, uncompressed"
    );
    assert_eq!(wasm_layers[0]["annotations"][oci::TITLE], "plugin.wasm");
    assert_eq!(layout.wasm_digest, format!("sha256:{}", hex_sha256(&wasm)));
    assert_eq!(layout.wasm_size, wasm.len() as u64);
    let other: Vec<&Value> = layers
        .iter()
        .filter(|l| l["mediaType"] != oci::WASM_LAYER_MEDIA_TYPE)
        .collect();
    assert_eq!(other[0]["mediaType"], oci::WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(blob(&dir, other[0]), oci::runtime_config());

    // Nothing else lies in blobs/: config, module, manifest.
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .expect("blobs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![
        hex_sha256(&oci::runtime_config()),
        hex_sha256(&wasm),
        hex_sha256(&manifest_bytes),
    ];
    want.sort();
    assert_eq!(names, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn same_module_same_digest_and_old_blobs_are_cleared() {
    let dir = scratch("repeat");
    let a = write_layout(&module(b"one"), &dir, "0.1.0", "0.1.0").expect("first");
    let b = write_layout(&module(b"one"), &dir, "0.1.0", "0.1.0").expect("again");
    assert_eq!(a.manifest_digest, b.manifest_digest, "no timestamps");
    let c = write_layout(&module(b"two"), &dir, "0.1.0", "0.1.0").expect("changed");
    assert_ne!(a.manifest_digest, c.manifest_digest);
    assert_eq!(
        std::fs::read_dir(dir.join("blobs/sha256"))
            .expect("blobs")
            .count(),
        3,
        "the previous module's blobs are gone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_what_is_not_a_module_or_not_a_tag() {
    let dir = scratch("refuse");
    assert!(write_layout(b"not wasm at all", &dir, "0.1.0", "0.1.0").is_err());
    assert!(write_layout(&module(b"x"), &dir, "bad tag", "0.1.0").is_err());
    assert!(write_layout(&module(b"x"), &dir, "", "0.1.0").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn digest_is_the_sha256_of_the_bytes() {
    // FIPS 180-2 test vector.
    assert_eq!(
        oci::digest(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
