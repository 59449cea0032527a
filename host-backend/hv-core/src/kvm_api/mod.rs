//! The KVM userspace API as `/dev/pvrs` sees it: the structs, numbers and
//! ioctl numbers of KVM's uapi headers, the classification of an ioctl
//! command, validated decoding of each argument, and the writer and reader
//! of the shared `struct kvm_run` page.
//!
//! The kernel module copies what userspace passed into a buffer of its own
//! and calls in here; nothing here touches user memory or the hardware.
//! Userspace is untrusted: every decoder checks lengths, counts and flags
//! the way KVM does and returns an [`Error`] whose [`Error::errno`] is what
//! KVM returns for the same input.  Nothing here panics on any input.
//!
//! The ABI is KVM's, as documented in `Documentation/virt/kvm/api.rst` of
//! Linux 6.12 (section 2: the three kinds of file; section 4: the ioctls;
//! section 5: `struct kvm_run`) and defined in `include/uapi/linux/kvm.h`
//! and `arch/x86/include/uapi/asm/kvm.h`.  `tests/kvm_uapi_header.rs`
//! checks every number and layout against those headers with a C
//! compiler, and `tests/kvm_rust_vmm.rs` against the `kvm-bindings` and
//! `kvm-ioctls` crates pvrs-vmm is built on.
//!
//! A typical ioctl in the module:
//!
//! 1. [`classify`] the command for the file it arrived on; on error return
//!    `-errno`.
//! 2. Copy the argument as [`Request::argument`] says ([`Argument`]).
//! 3. Decode it with the matching function of [`decode`], act, and encode
//!    any output with [`wire::Wire::to_bytes`].
//! 4. For KVM_RUN, read what userspace left in the run page with
//!    [`run::read_run_request`], and describe the exit with the writers of
//!    [`run`].

#![allow(non_camel_case_types)]

#[macro_use]
mod macros;

pub mod constants;
pub mod decode;
pub mod errno;
pub mod ioctl;
pub mod layout;
pub mod run;
pub mod wire;

pub use errno::{Errno, Error};
pub use ioctl::{classify, Argument, FdKind, Ioctl, Request};
