//! hv-core: every piece of the pvrs-kvm hypervisor that can run outside a
//! kernel.
//!
//! The kernel module `pvrs_kvm` (`host-backend/kmod/`) is a thin wrapper:
//! it owns the hardware (SVM enable, the world switch, pinned pages, timers,
//! notifiers) and calls into this crate for every decision about what a
//! guest did and what to do about it.  Keeping that logic here lets it be
//! unit-tested and fuzzed with `cargo test` / `cargo fuzz` on the host,
//! where a bug is a failed assertion instead of an oops in the nested L1.
//!
//! As with `pvrs-abi`, this file holds only crate attributes and an
//! `include!`: the module compiles the same tree with
//! `#[path = "../hv-core/src/modules.rs"] mod hv_core;`, so everything under
//! `modules.rs` must build inside the kernel too: no `std`, no `alloc`, no
//! `unsafe`, no dependencies.  Guest memory is reached only through small
//! traits that the module implements over pinned pages and the tests over a
//! byte vector.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

/// The PV ABI, re-exported so that hv-core names it `crate::pvrs_abi` in
/// both builds: here it is the `pvrs-abi` crate, in the kernel module a
/// module the module declares itself (modules.rs cannot say which).
pub use pvrs_abi;

include!("modules.rs");
