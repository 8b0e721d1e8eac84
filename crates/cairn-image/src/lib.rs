//! Image assembly for cairn.
pub mod authenticode;
pub mod compress;
pub mod cpio;
pub mod disk;
pub mod elfdeps;
pub mod erofs;
pub mod iso;
pub mod kbuild;
pub mod kernel;
pub mod kmod;
pub mod oci;
pub mod output;
pub mod packages;
pub mod pe;
pub mod uki;
pub mod vhd;
