//! Shared code of the programs that pvrs tests run inside guests.
//!
//! They are built as static executables (`tests/build-guest-tools`) and
//! copied into every workload initramfs under `/pvrs/tools`.

pub mod cpuid;
