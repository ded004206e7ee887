//! The harness's own readings of what the kernel did: cgroup counters and
//! states from cgroupfs, process facts from /proc, measurements over time.
//! None of it goes through the code of the runtime under test, and no
//! reading comes from a file that runtime wrote.

pub mod cgroupfs;
pub mod measure;
/// Link flags and MTU by ioctl: the probe crate's, which reads them inside containers too.
pub use kcell_probe::netdev;
pub mod nftables;
