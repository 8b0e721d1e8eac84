//! cairn-init library.
