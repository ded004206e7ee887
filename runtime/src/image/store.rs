//! The image store on disk (layout in the module docs of [`super`]).
//!
//! Every change (import, rmi, a container taking or giving back layers, gc)
//! happens under one exclusive flock on `<root>/lock`, so two commands never
//! see a half-made image or remove a layer another is about to mount. Layers
//! are unpacked into a temporary directory and renamed into place only once
//! their digest is verified: a layer directory that exists is complete.

use super::layer::{self, Options};
use super::source::{self, ImageSource};
use super::{digest_hex, normalize_name, ImageError, ImageRecord, RunConfig};
use crate::sys::{SysContext, SysError};
use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

mod containers;
pub use containers::ContainerUse;

/// The store at a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    root: PathBuf,
}

/// Held while the store changes; the flock goes with the file.
pub struct StoreLock(#[allow(dead_code)] fs::File);

/// A layer and the images that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Its diff_id.
    pub digest: String,
    /// Bytes of its tar.
    pub size: u64,
    /// Tags (or short IDs) of the images that list it.
    pub images: Vec<String>,
    /// Containers whose root stacks it.
    pub containers: Vec<String>,
}

/// What rmi did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Tags taken off.
    pub untagged: Vec<String>,
    /// The image ID, when the image itself went.
    pub deleted: Option<String>,
    /// Layers no image or container used any more, removed.
    pub layers: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootfsSection,
}

#[derive(serde::Deserialize)]
struct RootfsSection {
    diff_ids: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LayerMeta {
    size: u64,
}

impl Store {
    /// `$KCELL_ROOT`, else `/var/lib/kcell` for root, else
    /// `$XDG_DATA_HOME/kcell` (or `~/.local/share/kcell`).
    pub fn default_location() -> Self {
        if let Some(root) = std::env::var_os("KCELL_ROOT").filter(|r| !r.is_empty()) {
            return Store::at(root);
        }
        if nix::unistd::geteuid().is_root() {
            return Store::at("/var/lib/kcell");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        Store::at(data.join("kcell"))
    }

    /// The store at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    /// Its root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store's lock, making the layout on first use.
    pub fn lock(&self) -> Result<StoreLock, ImageError> {
        for sub in ["layers", "images", "containers", "tmp"] {
            let dir = self.root.join(sub);
            fs::create_dir_all(&dir).sys("mkdir -p", dir.display())?;
        }
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .sys("open", path.display())?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        nix::errno::Errno::result(rc).sys("flock", path.display())?;
        Ok(StoreLock(file))
    }

    fn image_path(&self, id: &str) -> Option<PathBuf> {
        Some(
            self.root
                .join("images")
                .join(format!("{}.json", digest_hex(id)?)),
        )
    }

    /// The directory of layer `diff_id`.
    pub fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        Some(self.root.join("layers").join(digest_hex(diff_id)?))
    }

    /// Every image, by first tag.
    pub fn images(&self) -> Vec<ImageRecord> {
        let mut out: Vec<ImageRecord> = fs::read_dir(self.root.join("images"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.tags.first(), &a.id).cmp(&(b.tags.first(), &b.id)));
        out
    }

    fn write_image(&self, image: &ImageRecord) -> Result<(), ImageError> {
        let path = self
            .image_path(&image.id)
            .ok_or_else(|| ImageError::NotFound(image.id.clone()))?;
        let tmp = path.with_extension("json.partial");
        let json = serde_json::to_vec_pretty(image)
            .map_err(|e| ImageError::NotAnImage(image.id.clone(), e.to_string()))?;
        fs::write(&tmp, json).sys("write", tmp.display())?;
        fs::rename(&tmp, &path).sys("rename", path.display())?;
        Ok(())
    }

    /// The image a reference names: NAME[:TAG], or an ID (full, or at least
    /// 4 leading hex digits, with or without `sha256:`).
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let images = self.images();
        // NAME@sha256:<hex>: the image a pull of that digest stored.
        if let Some((name, digest)) = reference.split_once('@') {
            let name = normalize_name(name)?;
            let repo = name.rsplit_once(':').map_or(name.as_str(), |(r, _)| r);
            let wanted = format!("{repo}@{digest}");
            return images
                .into_iter()
                .find(|i| i.digests.contains(&wanted))
                .ok_or_else(|| ImageError::NotFound(reference.to_string()));
        }
        if let Ok(name) = normalize_name(reference) {
            if let Some(img) = images.iter().find(|i| i.tags.contains(&name)) {
                return Ok(img.clone());
            }
        }
        let hex = reference.trim_start_matches("sha256:");
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            match hits.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                many => return Err(ImageError::Ambiguous(reference.to_string(), many.len())),
            }
        }
        Err(ImageError::NotFound(reference.to_string()))
    }

    /// Imports a `docker save` tarball, an OCI layout tarball or an OCI
    /// layout directory; returns the images it held.
    pub fn import(&self, input: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let meta = fs::metadata(input).sys("stat", input.display())?;
        let default_repo = default_repo(input);
        let unpacked = TempDir::new(&self.root.join("tmp"), "import")?;
        let dir = if meta.is_dir() {
            input.to_path_buf()
        } else {
            let file = fs::File::open(input).sys("open", input.display())?;
            let opts = Options {
                whiteouts: false,
                privileged: false,
            };
            layer::unpack(file, &input.display().to_string(), &unpacked.0, opts)?;
            unpacked.0.clone()
        };
        let sources = source::read_layout(&dir, &default_repo)?;
        if sources.is_empty() {
            return Err(ImageError::NotAnImage(
                input.display().to_string(),
                "it lists no image".into(),
            ));
        }
        sources.iter().map(|s| self.import_one(s)).collect()
    }

    /// Stores the image `src` describes (as an import does: layers the
    /// store has are not unpacked again) and records `digest`
    /// (`NAME@sha256:...`, what a registry named it by) on it.
    pub fn import_source(
        &self,
        src: &ImageSource,
        digest: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let mut image = self.import_one(src)?;
        if let Some(d) = digest {
            let repo = d.split_once('@').map_or(d, |(r, _)| r);
            image
                .digests
                .retain(|old| old.split_once('@').map_or(old.as_str(), |(r, _)| r) != repo);
            image.digests.push(d.to_string());
            self.write_image(&image)?;
        }
        Ok(image)
    }

    fn import_one(&self, src: &ImageSource) -> Result<ImageRecord, ImageError> {
        if let Some(d) = &src.config_digest {
            source::verify(&src.config, d, "image config")?;
        }
        let config_bytes = fs::read(&src.config).sys("read", src.config.display())?;
        let id = super::sha256_digest(&config_bytes);
        let config: ConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::NotAnImage(src.config.display().to_string(), e.to_string()))?;
        let diff_ids = config.rootfs.diff_ids;
        if diff_ids.len() != src.layers.len() {
            return Err(ImageError::NotAnImage(
                src.config.display().to_string(),
                format!(
                    "the config lists {} layers (rootfs.diff_ids), the manifest {}",
                    diff_ids.len(),
                    src.layers.len()
                ),
            ));
        }
        let mut size = 0;
        for (layer_src, diff_id) in src.layers.iter().zip(&diff_ids) {
            size += self.import_layer(layer_src, diff_id)?;
        }
        let mut image = ImageRecord {
            id: id.clone(),
            tags: Vec::new(),
            layers: diff_ids,
            config: config.config.unwrap_or_default(),
            created: config.created.unwrap_or_default(),
            size,
            digests: Vec::new(),
        };
        if let Ok(old) = self.resolve(&id) {
            image.tags = old.tags;
            image.digests = old.digests;
        }
        // A tag names one image: it moves to the one imported last.
        for tag in &src.tags {
            for mut other in self.images().into_iter().filter(|o| o.id != id) {
                if other.tags.contains(tag) {
                    other.tags.retain(|t| t != tag);
                    self.write_image(&other)?;
                }
            }
            if !image.tags.contains(tag) {
                image.tags.push(tag.clone());
            }
        }
        self.write_image(&image)?;
        Ok(image)
    }

    /// Unpacks one layer unless the store has it; returns its size.
    fn import_layer(&self, src: &source::LayerSource, diff_id: &str) -> Result<u64, ImageError> {
        let dir = self.layer_dir(diff_id).ok_or_else(|| {
            ImageError::NotAnImage(
                src.path.display().to_string(),
                format!("diff_id '{diff_id}' is not sha256:<64 hex digits>"),
            )
        })?;
        let meta_path = dir.with_extension("json");
        if dir.is_dir() {
            return Ok(read_layer_size(&meta_path));
        }
        if let Some(d) = &src.blob_digest {
            source::verify(&src.path, d, &format!("layer {}", src.path.display()))?;
        }
        let tmp = TempDir::new(&self.root.join("tmp"), "layer")?;
        let file = fs::File::open(&src.path).sys("open", src.path.display())?;
        let opts = Options {
            whiteouts: true,
            privileged: nix::unistd::geteuid().is_root(),
        };
        let got = layer::unpack(file, &src.path.display().to_string(), &tmp.0, opts)?;
        if got.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {}", src.path.display()),
                expected: diff_id.to_string(),
                actual: got.diff_id,
            });
        }
        let json = serde_json::to_vec(&LayerMeta {
            size: got.tar_bytes,
        })
        .unwrap_or_default();
        fs::write(&meta_path, json).sys("write", meta_path.display())?;
        fs::rename(&tmp.0, &dir).sys("rename", dir.display())?;
        tmp.forget();
        Ok(got.tar_bytes)
    }

    /// Every layer with its users.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let images = self.images();
        let containers = self.containers();
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.root.join("layers")) else {
            return out;
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for hex in names {
            let digest = format!("sha256:{hex}");
            out.push(LayerInfo {
                size: read_layer_size(&self.root.join("layers").join(format!("{hex}.json"))),
                images: images
                    .iter()
                    .filter(|i| i.layers.contains(&digest))
                    .map(|i| {
                        i.tags
                            .first()
                            .cloned()
                            .unwrap_or_else(|| i.short_id().to_string())
                    })
                    .collect(),
                containers: containers
                    .iter()
                    .filter(|c| c.layers.contains(&digest))
                    .map(|c| c.id.clone())
                    .collect(),
                digest,
            });
        }
        out
    }

    /// Removes a tag, or the image with its unused layers. A container using
    /// it blocks this unless `force` (its layers then stay until it ends).
    pub fn remove(&self, reference: &str, force: bool) -> Result<Removed, ImageError> {
        let lock = self.lock()?;
        let mut image = self.resolve(reference)?;
        let mut removed = Removed {
            untagged: Vec::new(),
            deleted: None,
            layers: Vec::new(),
        };
        // A tag of an image with several tags: only the tag goes.
        if let Ok(name) = normalize_name(reference) {
            if image.tags.contains(&name) && image.tags.len() > 1 {
                image.tags.retain(|t| t != &name);
                self.write_image(&image)?;
                removed.untagged.push(name);
                return Ok(removed);
            }
        }
        let users: Vec<String> = self
            .containers()
            .into_iter()
            .filter(|c| c.image == image.id)
            .map(|c| c.id)
            .collect();
        if !users.is_empty() && !force {
            return Err(ImageError::InUse(reference.to_string(), users.join(", ")));
        }
        if let Some(path) = self.image_path(&image.id) {
            fs::remove_file(&path).sys("unlink", path.display())?;
        }
        removed.untagged = image.tags;
        removed.deleted = Some(image.id);
        removed.layers = self.prune(&lock);
        Ok(removed)
    }

    /// Removes layers that no image lists and no container stacks.
    pub fn prune(&self, _lock: &StoreLock) -> Vec<String> {
        let mut used: BTreeSet<String> = BTreeSet::new();
        for i in self.images() {
            used.extend(i.layers);
        }
        for c in self.containers() {
            used.extend(c.layers);
        }
        let mut removed = Vec::new();
        for layer in self.layers() {
            if used.contains(&layer.digest) {
                continue;
            }
            if let Some(dir) = self.layer_dir(&layer.digest) {
                if fs::remove_dir_all(&dir).is_ok() {
                    let _ = fs::remove_file(dir.with_extension("json"));
                    removed.push(layer.digest);
                }
            }
        }
        removed
    }

    /// The layer directories of `image` in overlay's lowerdir order (top first).
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .filter_map(|l| self.layer_dir(l))
            .collect()
    }
}

fn read_layer_size(path: &Path) -> u64 {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
        .map_or(0, |m| m.size)
}

/// The repository an OCI layout's bare ref.name tag belongs to: the file's
/// stem (`busybox.tar` -> `busybox`), lower-cased.
fn default_repo(input: &Path) -> String {
    let stem = input
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = stem
        .trim_end_matches(".gz")
        .trim_end_matches(".tgz")
        .trim_end_matches(".tar")
        .to_ascii_lowercase();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches(['.', '-']).to_string();
    if clean.is_empty() {
        "image".into()
    } else {
        clean
    }
}

/// A directory under the store's tmp/ named `<what>-<n>-<pid>`, removed on
/// drop (and by gc when its owner was killed).
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, what: &str) -> Result<Self, SysError> {
        fs::create_dir_all(parent).sys("mkdir -p", parent.display())?;
        for n in 0..1000 {
            let path = parent.join(format!("{what}-{n}-{}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SysError::from_io("mkdir", path.display(), e)),
            }
        }
        Err(SysError::from_io(
            "mkdir",
            parent.display(),
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    /// Keeps the directory (it was renamed into place). Taking the path
    /// leaves Drop nothing to remove; `mem::forget` would leak the PathBuf
    /// (found by the image_import fuzz target's leak sanitizer).
    fn forget(mut self) {
        std::mem::take(&mut self.0);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_dir(root: &Path, files: &[(&str, &str)]) -> PathBuf {
        let dir = root.join(format!("src-{}", files.len()));
        for (path, data) in files {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, data).expect("write");
        }
        dir
    }

    fn config(env: &str) -> RunConfig {
        RunConfig {
            env: vec![env.into()],
            cmd: vec!["sh".into()],
            ..RunConfig::default()
        }
    }

    #[test]
    fn import_shares_layers_and_rmi_removes_only_unused_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = image_dir(tmp.path(), &[("bin/sh", "base")]);
        let extra = image_dir(tmp.path(), &[("a", "1"), ("b", "2")]);
        let a_tar = tmp.path().join("a.tar");
        let b_tar = tmp.path().join("b.tar");
        let a =
            super::super::pack::pack(std::slice::from_ref(&base), "a:1", &config("A=1"), &a_tar)
                .expect("pack");
        let b =
            super::super::pack::pack(&[base, extra], "b", &config("B=1"), &b_tar).expect("pack");
        assert_eq!(
            a.layers[0], b.layers[0],
            "same directory, same layer digest"
        );

        let store = Store::at(tmp.path().join("store"));
        let got = store.import(&a_tar).expect("import a");
        assert_eq!(got[0].id, a.image_id);
        assert_eq!(got[0].tags, ["a:1"]);
        assert_eq!(got[0].config.env, ["A=1"]);
        store.import(&b_tar).expect("import b");
        assert_eq!(store.layers().len(), 2, "the base layer is stored once");
        let shared = store.layer_dir(&a.layers[0]).expect("dir");
        assert_eq!(
            fs::read_to_string(shared.join("bin/sh")).expect("read"),
            "base"
        );

        let gone = store.remove("a:1", false).expect("rmi a");
        assert_eq!(gone.deleted.as_deref(), Some(a.image_id.as_str()));
        assert!(gone.layers.is_empty(), "b still uses the base layer");
        assert!(shared.is_dir());
        let gone = store
            .remove(&b.image_id[7..19], false)
            .expect("rmi b by short ID");
        assert_eq!(gone.layers.len(), 2);
        assert!(!shared.exists());
        assert!(store.images().is_empty());
        assert_eq!(
            fs::read_dir(store.root().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn a_container_blocks_rmi_unless_forced_and_keeps_its_layers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = image_dir(tmp.path(), &[("f", "x")]);
        let tar = tmp.path().join("i.tar");
        super::super::pack::pack(&[base], "i", &config("I=1"), &tar).expect("pack");
        let store = Store::at(tmp.path().join("store"));
        let image = store.import(&tar).expect("import").remove(0);
        let lower = store.prepare_container("c1", &image).expect("prepare");
        assert_eq!(lower.len(), 1);
        assert!(store.container_dir("c1").join("upper").is_dir());
        assert!(matches!(store.remove("i", false), Err(ImageError::InUse(_, c)) if c == "c1"));
        store.remove("i", true).expect("forced");
        assert!(lower[0].is_dir(), "the container still stacks it");
        // This process (the "runtime") is alive, so gc keeps the directory ...
        assert!(store.gc(&|_| false).is_empty());
        store.remove_container("c1").expect("rm");
        // ... and once it is gone, the layer nobody uses goes too.
        store.gc(&|_| false);
        assert!(!lower[0].exists());
    }

    #[test]
    fn a_corrupt_layer_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = image_dir(tmp.path(), &[("f", "x")]);
        let tar = tmp.path().join("i.tar");
        let packed = super::super::pack::pack(&[base], "i", &config("I=1"), &tar).expect("pack");
        // Unpack the layout, flip the layer blob, import the directory.
        let layout = tmp.path().join("layout");
        fs::create_dir(&layout).expect("mkdir");
        let opts = Options {
            whiteouts: false,
            privileged: false,
        };
        layer::unpack(fs::File::open(&tar).expect("open"), "t", &layout, opts).expect("unpack");
        let blob = layout.join("blobs/sha256").join(&packed.layers[0][7..]);
        let mut bytes = fs::read(&blob).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&blob, bytes).expect("write");
        let store = Store::at(tmp.path().join("store"));
        let err = store.import(&layout).expect_err("corrupt");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(store.images().is_empty() && store.layers().is_empty());
        assert_eq!(
            fs::read_dir(store.root().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn docker_save_tarballs_import_with_their_repo_tags() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = image_dir(tmp.path(), &[("etc/motd", "hi")]);
        let layer = super::super::pack::layer_tar(&rootfs).expect("tar");
        let diff_id = layer::sha256_of(&layer[..]).expect("hash");
        // The layout `docker save` writes: manifest.json, <id>.json, <id>/layer.tar.
        let save = tmp.path().join("save");
        fs::create_dir_all(save.join("0123")).expect("mkdir");
        fs::write(save.join("0123/layer.tar"), &layer).expect("write");
        let config = format!(
            r#"{{"created":"2024-01-01T00:00:00Z","config":{{"Env":["X=1"],"Cmd":null}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        fs::write(save.join("cfg.json"), &config).expect("write");
        fs::write(
            save.join("manifest.json"),
            r#"[{"Config":"cfg.json","RepoTags":["docker.io/library/app:1"],"Layers":["0123/layer.tar"]}]"#,
        )
        .expect("write");
        let tarball = tmp.path().join("app.tar");
        fs::write(&tarball, super::super::pack::layer_tar(&save).expect("tar")).expect("write");

        let store = Store::at(tmp.path().join("store"));
        let image = store.import(&tarball).expect("import").remove(0);
        assert_eq!(image.tags, ["app:1"]);
        assert_eq!(image.config.env, ["X=1"]);
        assert!(image.config.cmd.is_empty());
        assert_eq!(store.resolve("app:1").expect("by tag").id, image.id);
        let dir = store.layer_dir(&diff_id).expect("dir");
        assert_eq!(
            fs::read_to_string(dir.join("etc/motd")).expect("read"),
            "hi"
        );
    }

    #[test]
    fn not_an_image_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::at(tmp.path().join("store"));
        let err = store.import(tmp.path()).expect_err("empty dir");
        assert!(err.to_string().contains("neither manifest.json"), "{err}");
    }
}
