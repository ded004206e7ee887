//! A real block device for the I/O throttling cases: the VM's dedicated
//! virtio disk (/dev/vdb), else a loop device over a file on the host.

use std::path::{Path, PathBuf};

/// Where a throttling case can do its O_DIRECT I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An existing disk set aside for tests (in the VM guests).
    Disk(PathBuf),
    /// A loop device to be attached over a scratch file.
    Loop,
}

/// The VM guests' test disk (their only disk: the root is a tmpfs).
pub const GUEST_DISK: &str = "/dev/vda";

/// Names a disk set aside for the I/O cases (the guest init sets it; a host
/// never gets its own /dev/vda used by accident).
pub const DISK_ENV: &str = "KCELL_TEST_DISK";

/// What this system offers, if anything.
pub fn find() -> Option<Source> {
    if let Some(disk) = std::env::var_os(DISK_ENV).filter(|d| Path::new(d).exists()) {
        Some(Source::Disk(disk.into()))
    } else if Path::new("/dev/loop-control").exists() {
        Some(Source::Loop)
    } else {
        None
    }
}

/// MAJOR:MINOR of a block device node.
pub fn dev_numbers(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path).ok()?.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
}

/// The block device fixture: `{block_device.path}` (the node to bind into a
/// container) and `{block_device.majmin}` (for --device-read-bps).
pub struct BlockDevice {
    path: PathBuf,
    numbers: (u32, u32),
    /// The loop device's backing file, when a loop device was attached.
    backing: Option<PathBuf>,
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
/// Size of the loop device's backing file (sparse).
const LOOP_BYTES: u64 = 64 << 20;

impl BlockDevice {
    /// Uses the guest disk, else attaches a loop device over a sparse file.
    pub fn new(suffix: &str) -> Result<Self, String> {
        match find() {
            Some(Source::Disk(path)) => {
                let numbers =
                    dev_numbers(&path).ok_or_else(|| format!("stat {}", path.display()))?;
                Ok(BlockDevice {
                    path,
                    numbers,
                    backing: None,
                })
            }
            Some(Source::Loop) => Self::attach_loop(suffix),
            None => Err("no block device: neither /dev/vdb nor /dev/loop-control".into()),
        }
    }

    fn attach_loop(suffix: &str) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        let backing = std::env::temp_dir().join(format!("kcell-blk-{suffix}.img"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&backing)
            .map_err(|e| format!("create {}: {e}", backing.display()))?;
        let cleanup = |msg: String| {
            let _ = std::fs::remove_file(&backing);
            msg
        };
        file.set_len(LOOP_BYTES)
            .map_err(|e| cleanup(format!("truncate {}: {e}", backing.display())))?;
        let ctl = std::fs::File::open("/dev/loop-control")
            .map_err(|e| cleanup(format!("open /dev/loop-control: {e}")))?;
        for _ in 0..8 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(cleanup(format!(
                    "ioctl LOOP_CTL_GET_FREE: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| cleanup(format!("open {}: {e}", path.display())))?;
            // SAFETY: LOOP_SET_FD takes the backing file's descriptor.
            let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, file.as_raw_fd()) };
            if rc == 0 {
                let numbers = dev_numbers(&path)
                    .ok_or_else(|| cleanup(format!("stat {}", path.display())))?;
                return Ok(BlockDevice {
                    path,
                    numbers,
                    backing: Some(backing),
                });
            }
            // EBUSY: another process took it between GET_FREE and SET_FD; try again.
        }
        Err(cleanup("no free loop device after 8 attempts".into()))
    }
}

impl crate::fixture::Fixture for BlockDevice {
    fn name(&self) -> &'static str {
        "block_device"
    }
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("path", self.path.display().to_string()),
            ("majmin", format!("{}:{}", self.numbers.0, self.numbers.1)),
        ]
    }
}

impl Drop for BlockDevice {
    fn drop(&mut self) {
        if let Some(backing) = &self.backing {
            if let Ok(dev) = std::fs::File::open(&self.path) {
                use std::os::fd::AsRawFd;
                // SAFETY: LOOP_CLR_FD takes no argument.
                unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
            }
            let _ = std::fs::remove_file(backing);
        }
    }
}
