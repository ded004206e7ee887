//! kcell: a small container runtime. Namespaces with pipe-synchronised id
//! maps, a pivot_root'ed root with the special filesystems and runc's masked
//! paths, and cgroup v1 / v2 limits through one resource model.
//!
//! The CLI (`src/main.rs`) is a thin layer over [`cli::main`], so the harness
//! can run the very same code as a multi-call binary.
#![deny(missing_docs)]

pub mod caps;
pub mod cgroup;
pub mod cli;
pub mod fault;
pub mod idmap;
pub mod image;
pub mod lifecycle;
pub mod namespace;
pub mod net;
pub mod netdev;
pub mod oci;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
