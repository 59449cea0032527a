//! The KVM paravirtualization ABI between an x86 guest and its host, as
//! plain `no_std` Rust: CPUID leaves and feature bits, MSR numbers,
//! hypercall numbers and error codes, the layouts and arithmetic of the
//! memory areas the host shares with the guest (pvclock, steal time, async
//! page fault data), and the virtio ABI of the pvrs devices (virtqueues,
//! virtio-mmio, block, network and balloon devices).
//!
//! This crate is the single source of truth for both sides of pvrs: the host
//! VMM depends on it as a normal crate, and the guest kernel modules compile
//! the very same files as a module with
//! `#[path = "../abi/src/modules.rs"] pub mod abi;`.  That is why this file
//! holds nothing but crate attributes and an `include!`: everything else
//! lives in `modules.rs` and its children, which must build both here and
//! inside the kernel (no `std`, no `alloc`, no `unsafe`, no dependencies
//! except behind the optional `zerocopy` feature).
//!
//! Every constant keeps its Linux name and value, and every shared struct
//! its Linux layout; the integration test `tests/kernel_headers.rs`
//! compiles a C program against the Linux headers to prove it.

#![no_std]
#![forbid(unsafe_code)]

include!("modules.rs");
