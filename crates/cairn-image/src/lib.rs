//! Image assembly for cairn.
