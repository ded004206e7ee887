//! The kcell conformance harness: declarative cases (`cases/*.toml`) run
//! with any OCI runtime against targets (the host kernel, QEMU guests),
//! each producing a verdict from what the kernel actually did.
//!
//! Layers point one way: [`case`] (the model) -> [`runner`] (fixtures,
//! requirements, runs) -> [`driver`] (the runtime under test) ->
//! [`observe`] (the harness's own readings) -> [`expect`] checks ->
//! [`verdict`] -> [`report`]. [`vm`] is transport only (kernels,
//! initramfs, QEMU, frames) and imports nothing above it; the agent binary
//! wires a guest's init to the runner.
#![deny(missing_docs)]

pub mod case;
pub mod command;
pub mod data;
pub mod differences;
pub mod driver;
pub mod expect;
pub mod export;
pub mod fixture;
pub mod frames;
pub mod gate;
pub mod guestinfo;
pub mod host;
pub mod html;
pub mod killmatrix;
pub mod matrix;
pub mod mutant;
pub mod netlink;
pub mod observation;
pub mod observe;
pub mod publish;
pub mod repeat;
pub mod report;
pub mod requires;
pub mod runner;
pub mod shard;
pub mod suite;
pub mod text;
pub mod timing;
pub mod verdict;
pub mod vm;
