//! The `cairn` command's logic: build, run, inspect. `main.rs` only parses
//! arguments and calls into here.

pub mod build;
pub mod diff;
pub mod disk;
pub mod inspect;
pub mod kernel_build;
pub mod keys;
pub mod netboot;
pub mod new;
pub mod password;
pub mod progress;
pub mod publish;
pub mod report;
pub mod run;
pub mod sbom;
pub mod sign;
pub mod write;
