//! Containers' claims on images: the overlay directories under
//! `containers/<id>/` with the claim (`use.json`) that keeps their layers,
//! and the collection of what dead containers and killed imports left.

use super::Store;
use crate::image::{ImageError, ImageRecord};
use crate::sys::{SysContext, SysError};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// A container's claim on an image: written to `containers/<id>/use.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerUse {
    /// The container.
    pub id: String,
    /// The image ID.
    pub image: String,
    /// The layers its overlay root stacks (diff_ids).
    pub layers: Vec<String>,
    /// The runtime that made it, and that process's start time (against PID reuse).
    pub runtime_pid: i32,
    /// See `runtime_pid`.
    pub runtime_start: Option<u64>,
}

impl Store {
    /// The directory of container `id`'s overlay root.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Claims `image` for container `id` under the lock: makes its
    /// directory (exclusively: two containers never share one) with upper/,
    /// work/ and merged/; returns the lower directories, top layer first.
    pub fn prepare_container(
        &self,
        id: &str,
        image: &ImageRecord,
    ) -> Result<Vec<PathBuf>, ImageError> {
        crate::spec::validate_id(id).map_err(|_| ImageError::NotFound(id.to_string()))?;
        let _lock = self.lock()?;
        // The image may have gone between resolve and here.
        let image = self.resolve(&image.id)?;
        let lower = self.lower_dirs(&image);
        if let Some(missing) = lower.iter().find(|l| !l.is_dir()) {
            return Err(SysError::from_io(
                "stat layer",
                missing.display(),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
            .into());
        }
        let dir = self.container_dir(id);
        fs::create_dir(&dir).sys("mkdir", dir.display())?;
        let made = (|| -> Result<(), ImageError> {
            for sub in ["upper", "work", "merged"] {
                fs::create_dir(dir.join(sub)).sys("mkdir", dir.join(sub).display())?;
            }
            let pid = std::process::id() as i32;
            let claim = ContainerUse {
                id: id.to_string(),
                image: image.id.clone(),
                layers: image.layers.clone(),
                runtime_pid: pid,
                runtime_start: crate::state::start_time(pid),
            };
            let json = serde_json::to_vec(&claim).unwrap_or_default();
            fs::write(dir.join("use.json"), json).sys("write", dir.join("use.json").display())?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(lower)
    }

    /// The claims of every container directory.
    pub fn containers(&self) -> Vec<ContainerUse> {
        fs::read_dir(self.root.join("containers"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        serde_json::from_slice(&fs::read(e.path().join("use.json")).ok()?).ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes container `id`'s directory (its upper layer goes with it).
    pub fn remove_container(&self, id: &str) -> Result<(), ImageError> {
        if crate::spec::validate_id(id).is_err() {
            return Ok(());
        }
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SysError::from_io("rm -r", dir.display(), e).into()),
        }
    }

    /// Removes the directories of containers that `is_live` says are gone
    /// and whose runtime is gone too, then unused layers and stale
    /// temporary directories; returns the container IDs.
    pub fn gc(&self, is_live: &dyn Fn(&str) -> bool) -> Vec<String> {
        if !self.root.join("lock").exists() {
            return Vec::new(); // never used: nothing to collect, nothing to make
        }
        let Ok(lock) = self.lock() else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        let mut dirs: BTreeMap<String, Option<ContainerUse>> = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(self.root.join("containers")) {
            for e in rd.filter_map(Result::ok) {
                let id = e.file_name().to_string_lossy().to_string();
                let claim = fs::read(e.path().join("use.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                dirs.insert(id, claim);
            }
        }
        for (id, claim) in dirs {
            let runtime_alive = claim.as_ref().is_some_and(|c| {
                c.runtime_start.is_some()
                    && crate::state::start_time(c.runtime_pid) == c.runtime_start
            });
            if !is_live(&id) && !runtime_alive && self.remove_container(&id).is_ok() {
                removed.push(id);
            }
        }
        self.prune(&lock);
        // Imports that were killed half way.
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for e in rd.filter_map(Result::ok) {
                let owner = e
                    .file_name()
                    .to_string_lossy()
                    .rsplit('-')
                    .next()
                    .and_then(|p| p.parse::<i32>().ok());
                if owner.is_none_or(|p| crate::state::start_time(p).is_none()) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        removed
    }
}
