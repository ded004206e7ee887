//! A push: the stored image's layers tarred again, the blobs the registry
//! lacks uploaded, then the manifest under the tag.

use super::client::Client;
use super::reference::Reference;
use super::{human, media, short, Options, RegistryError};
use crate::image::store::Store;
use crate::image::ImageError;
use serde_json::json;

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: String,
    /// Blobs uploaded, and those the registry had.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
}

/// Pushes the stored image `source` (a reference of the store; `to` if
/// none) to `to`: its layers tarred again (uncompressed OCI layers), the
/// config with their diff_ids, then the manifest under the tag.
pub fn push(
    store: &Store,
    to: &str,
    source: Option<&str>,
    options: &Options,
) -> Result<Pushed, ImageError> {
    let reference = Reference::parse(to)?;
    if reference.digest.is_some() {
        return Err(RegistryError::BadReference {
            reference: to.to_string(),
            part: reference.digest.clone().unwrap_or_default(),
            why: "a push names a tag; the digest is the registry's answer".into(),
        }
        .into());
    }
    let image = store.resolve(source.unwrap_or(to))?;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for diff_id in &image.layers {
        let dir = store
            .layer_dir(diff_id)
            .ok_or_else(|| ImageError::NotFound(diff_id.clone()))?;
        let tar = crate::image::pack::layer_tar(&dir)?;
        let d = crate::image::sha256_digest(&tar);
        layers.push(json!({"mediaType": media::OCI_LAYER, "digest": d, "size": tar.len()}));
        diff_ids.push(d.clone());
        blobs.push((d, tar));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": crate::image::oci_arch(),
        "os": "linux",
        "created": if image.created.is_empty() { "1970-01-01T00:00:00Z" } else { &image.created },
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| ImageError::NotAnImage(image.id.clone(), e.to_string()))?;
    let config_digest = crate::image::sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .map_err(|e| ImageError::NotAnImage(image.id.clone(), e.to_string()))?;
    blobs.push((config_digest, config));
    let client = Client::connect(
        &reference.registry,
        reference.api_host(),
        &reference.repository,
        "pull,push",
        options,
    )?;
    let (mut uploaded, mut skipped) = (0, 0);
    for (d, data) in &blobs {
        if client.has_blob(d)? {
            skipped += 1;
            eprintln!("  blob {}: the registry has it", short(d));
        } else {
            client.upload_blob(d, data)?;
            uploaded += 1;
            eprintln!("  blob {}: {} pushed", short(d), human(data.len() as u64));
        }
    }
    client.put_manifest(reference.target(), media::OCI_MANIFEST, &manifest)?;
    Ok(Pushed {
        digest: crate::image::sha256_digest(&manifest),
        uploaded,
        skipped,
    })
}
