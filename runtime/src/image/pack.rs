//! Writing directories as an OCI image layout tarball (`kcell image pack`):
//! one layer per directory, bottom first, with a run configuration. The
//! output is reproducible (sorted entries, owner 0, mtime 0), so packing the
//! same directory twice gives the same layer digest, and images built on the
//! same base share it in the store.

use super::{normalize_name, oci_arch, sha256_digest as digest, ImageError, RunConfig};
use crate::sys::{SysContext, SysError};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The image ID (`sha256:` of the config), as `kcell images` will show it.
    pub image_id: String,
    /// Each layer's diff_id, bottom first.
    pub layers: Vec<String>,
}

/// Every path under `dir`, sorted, parents before children.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), SysError> {
    let mut names: Vec<_> = fs::read_dir(dir.join(rel))
        .sys("readdir", dir.join(rel).display())?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let child = rel.join(&name);
        out.push(child.clone());
        let meta =
            fs::symlink_metadata(dir.join(&child)).sys("lstat", dir.join(&child).display())?;
        if meta.is_dir() {
            walk(dir, &child, out)?;
        }
    }
    Ok(())
}

/// The tar of `dir`'s contents.
pub fn layer_tar(dir: &Path) -> Result<Vec<u8>, ImageError> {
    let mut paths = Vec::new();
    walk(dir, Path::new(""), &mut paths)?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for rel in paths {
        let path = dir.join(&rel);
        builder
            .append_path_with_name(&path, &rel)
            .sys("tar", path.display())?;
    }
    Ok(builder.into_inner().sys("tar", dir.display())?)
}

/// Packs `layers` (directories, bottom first) as image `name` with `config`
/// into the OCI layout tarball `out`.
pub fn pack(
    layers: &[PathBuf],
    name: &str,
    config: &RunConfig,
    out: &Path,
) -> Result<Packed, ImageError> {
    let name = normalize_name(name)?;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for dir in layers {
        let tar = layer_tar(dir)?;
        let d = digest(&tar);
        layer_descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": tar.len(),
        }));
        diff_ids.push(d.clone());
        blobs.push((d, tar));
    }
    let config_json = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| ImageError::NotAnImage(name.clone(), e.to_string()))?;
    let config_digest = digest(&config_json);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config_json.len(),
        },
        "layers": layer_descriptors,
    }))
    .map_err(|e| ImageError::NotAnImage(name.clone(), e.to_string()))?;
    let manifest_digest = digest(&manifest);
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": name,
            },
        }],
    }))
    .map_err(|e| ImageError::NotAnImage(name.clone(), e.to_string()))?;
    blobs.push((config_digest.clone(), config_json));
    blobs.push((manifest_digest, manifest));

    let mut outer = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        outer.append_data(&mut h, path, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).sys("tar", out.display())?;
    add("index.json", &index).sys("tar", out.display())?;
    let mut written = std::collections::BTreeSet::new();
    for (d, data) in &blobs {
        let hex = d.trim_start_matches("sha256:");
        if written.insert(hex.to_string()) {
            add(&format!("blobs/sha256/{hex}"), data).sys("tar", out.display())?;
        }
    }
    let bytes = outer.into_inner().sys("tar", out.display())?;
    let tmp = out.with_extension("kcell-partial");
    fs::write(&tmp, bytes).sys("write", tmp.display())?;
    fs::rename(&tmp, out).sys("rename", out.display())?;
    Ok(Packed {
        image_id: config_digest,
        layers: diff_ids,
    })
}
