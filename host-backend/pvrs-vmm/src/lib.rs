//! `pvrs-vmm`: the pvrs host VMM. It boots a Linux guest on `/dev/kvm`
//! (or another device with the KVM ioctl API, such as pvrs-kvm's
//! `/dev/pvrs`: `--kvm-dev`) with the plain KVM API and serves its
//! virtio-mmio devices, built on the
//! rust-vmm crates (`kvm-ioctls`, `kvm-bindings`, `vm-memory`,
//! `linux-loader`, `vm-superio`, `virtio-queue`, `vmm-sys-util`,
//! `event-manager`, `acpi_tables`) and on `pvrs-abi` for the KVM
//! paravirtual CPUID leaves.
//!
//! * [`config`]: the command line;
//! * [`capabilities`]: the KVM device, its optional features
//!   (`KVM_CHECK_EXTENSION`) and what the VMM does without each;
//! * [`layout`]: guest physical memory and interrupt lines;
//! * [`boot`]: kernel, initrd, command line, `boot_params`/PVH, ACPI;
//! * [`cpu`]: CPUID, boot registers, vCPU run loop;
//! * [`devices`]: serial console, i8042 reset, ACPI power management;
//! * [`virtio`]: the `VirtioDevice` trait, the virtio-mmio transport,
//!   chain validation, and the blk, net and balloon devices;
//! * [`vmm`]: assembly and the run loop;
//! * [`exit`]: how a VM ends and the exit status;
//! * [`fuzzing`]: entry points of the fuzz targets and corpus replay.

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod boot;
pub mod capabilities;
pub mod config;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod fuzzing;
pub mod layout;
pub mod logger;
pub mod virtio;
pub mod vmm;
