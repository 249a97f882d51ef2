//! Kernel programs live in the `twtrace` binary target (src/main.rs); this empty library only
//! lets the userspace crate name this package as a build dependency, so edits here rebuild it.
#![no_std]
