//! The verified patch engine behind `sandport patch`.
//!
//! A TOML manifest (see `MANIFEST.md`) lists numbered patches for an upstream
//! tree. [`engine::plan`] evaluates all of them in memory, deciding per patch
//! whether it is applied, already in place (its post-condition holds), not
//! applicable (target absent) or failed; [`engine::Plan::commit`] then writes
//! every changed file atomically. [`cli`] is the `sandport patch` command.

pub mod cli;
mod content;
pub mod engine;
pub mod manifest;
pub mod report;
mod verify;

pub use engine::{plan, Outcome, PatchResult, Plan};
pub use manifest::Manifest;
