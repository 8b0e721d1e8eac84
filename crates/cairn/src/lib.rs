//! The `cairn` command's logic: build, run, inspect. `main.rs` only parses
//! arguments and calls into here.

pub mod build;
pub mod inspect;
pub mod keys;
pub mod run;
pub mod sign;
