//! The kcell conformance harness: declarative cases (`cases/*.toml`) run
//! against targets (the host kernel, QEMU guests), each producing a verdict
//! from what the kernel actually did.
//!
//! Data flows one way: case file -> [`case::Case`] -> [`runner`] (fixtures,
//! container runs, [`probe`] measurements) -> [`observation::Observations`]
//! -> [`expect`] checks -> [`verdict::Verdict`] -> reports.
#![deny(missing_docs)]

pub mod blockdev;
pub mod case;
pub mod expect;
pub mod fixture;
pub mod host;
pub mod inside;
pub mod observation;
pub mod probe;
pub mod report;
pub mod requires;
pub mod runner;
pub mod verdict;
pub mod vm;
