// SPDX-License-Identifier: GPL-2.0

//! pvrs_kvm: pvrs-kvm, a KVM-compatible hypervisor for AMD SVM, as a Rust
//! host module.
//!
//! It registers `/dev/pvrs`, which speaks the KVM API of
//! `Documentation/virt/kvm/api.rst` with KVM's ioctl numbers and structs:
//! the system file (`/dev/pvrs` itself), VM files (`KVM_CREATE_VM`) and
//! vCPU files (`KVM_CREATE_VCPU`, with the `kvm_run` page mapped by mmap).
//! A VMM written for `/dev/kvm` drives it unchanged.
//!
//! The module is a thin wrapper: every decision about guest state, exits,
//! memslots and ioctl arguments is made by hv-core (`host-backend/hv-core`,
//! compiled into this crate from the same files the host tests and fuzzes);
//! this crate owns the hardware (`svm_hw.rs`, `svm_vmrun.S`), the files and
//! the kernel objects.
//!
//! SVM is turned on on every CPU while the module is loaded (through a CPU
//! hotplug state, so CPUs coming online later get it too), like KVM with
//! `enable_virt_at_load`; loading fails with EBUSY if another hypervisor
//! already has SVM on.

// `pin_init!` expands recursively per field, and the VM's initializer has
// more fields than the default limit of 128 allows.
#![recursion_limit = "256"]

use kernel::{
    c_str,
    cpu::{self, HotplugCallbacks, HotplugRegistration},
    file_ops::FileOpsTable,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
};

// hv-core's modules (paging, x86, svm, kvm_api, ...), compiled from the
// same files the host builds, tests and fuzzes, as top-level modules of this
// crate: hv-core refers to its own modules as `crate::...`.
include!("../hv-core/src/modules.rs");

/// The guest/host PV ABI (abi/), which hv-core names `crate::pvrs_abi`,
/// compiled from the same files as the guest modules and the host crate.
#[path = "../../abi/src/modules.rs"]
pub mod pvrs_abi;

mod irqfd;
mod kmem;
mod svm_hw;
mod system;
mod user_copy;
mod vcpu_file;
mod vm_file;

module! {
    type: PvrsKvm,
    name: "pvrs_kvm",
    author: "pvrs",
    description: "pvrs-kvm: a KVM-compatible hypervisor for AMD SVM (/dev/pvrs)",
    license: "GPL",
}

/// SVM on every online CPU, for as long as the registration lives.
struct SvmOnEveryCpu {
    pages: Arc<svm_hw::HostCpuPages>,
}

impl HotplugCallbacks for SvmOnEveryCpu {
    fn online(&self, cpu: u32) -> Result {
        svm_hw::enable_on_this_cpu(&self.pages, cpu)
    }

    fn offline(&self, _cpu: u32) -> Result {
        svm_hw::disable_on_this_cpu();
        Ok(())
    }
}

/// What every file of the module shares.
pub(crate) struct Host {
    /// The per-CPU SVM pages (host save areas).
    pub(crate) cpu_pages: Arc<svm_hw::HostCpuPages>,
    /// Each CPU's ASID allocator (hv-core `asid`), by CPU id; only taken
    /// with preemption off, by the vCPU entering the guest on that CPU.
    pub(crate) cpu_asids: KVec<Pin<KBox<SpinLock<asid::CpuAsids>>>>,
    /// The operations of VM files.
    pub(crate) vm_fops: FileOpsTable<vm_file::VmFile>,
    /// The operations of vCPU files.
    pub(crate) vcpu_fops: FileOpsTable<vcpu_file::VcpuFile>,
    /// CR4 bits no guest may set on this host: those whose feature the
    /// supported CPUID leaves out (KVM's `cr4_reserved_bits`).
    pub(crate) cr4_reserved: u64,
}

struct PvrsKvm {
    // Fields are dropped in declaration order: the device goes first (no
    // new VM can appear; open files hold a reference on the module, so
    // none is left), then SVM is turned off on every CPU, then the
    // emergency hook goes.
    _device: Pin<KBox<MiscDeviceRegistration<system::SystemFile>>>,
    _svm: HotplugRegistration<SvmOnEveryCpu>,
    _emergency: svm_hw::EmergencyHook,
}

impl kernel::Module for PvrsKvm {
    fn init(module: &'static ThisModule) -> Result<Self> {
        if !svm_hw::cpu_has_svm() {
            pr_err!("this CPU has no AMD SVM\n");
            return Err(ENODEV);
        }
        // The guest's XCR0 is switched with XGETBV/XSETBV around VMRUN
        // (TCG never intercepts XSETBV), which needs OSXSAVE.
        if !kernel::x86::boot_cpu_has(kernel::bindings::X86_FEATURE_OSXSAVE) {
            pr_err!("this CPU has no XSAVE enabled (OSXSAVE), which pvrs-kvm needs\n");
            return Err(ENODEV);
        }
        // The emergency hook has one slot, which an active kvm_amd holds:
        // find out before registering ours (the per-CPU check below
        // repeats this on each CPU).
        if svm_hw::enabled_on_this_cpu() {
            pr_err!("SVM is already enabled (is kvm_amd loaded?)\n");
            return Err(EBUSY);
        }
        let cpu_pages = Arc::new(svm_hw::HostCpuPages::new()?, GFP_KERNEL)?;
        let emergency = svm_hw::EmergencyHook::register();
        let svm = HotplugRegistration::register(
            c_str!("pvrs_kvm:online"),
            SvmOnEveryCpu {
                pages: cpu_pages.clone(),
            },
        )?;
        let mut cpu_asids = KVec::new();
        for _ in 0..cpu::nr_cpu_ids() {
            let asids = asid::CpuAsids::new(svm_hw::asid_count()).map_err(|_| ENODEV)?;
            cpu_asids.push(
                KBox::pin_init(new_spinlock!(asids), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let host = Arc::new(
            Host {
                cpu_pages,
                cpu_asids,
                vm_fops: FileOpsTable::new(module, None)?,
                vcpu_fops: FileOpsTable::new(module, None)?,
                cr4_reserved: system::host_cr4_reserved()?,
            },
            GFP_KERNEL,
        )?;
        let device = KBox::pin_init(
            MiscDeviceRegistration::register(
                MiscDeviceOptions {
                    name: c_str!("pvrs"),
                },
                module,
                host,
            ),
            GFP_KERNEL,
        )?;
        pr_info!(
            "SVM on in {} CPUs; /dev/pvrs speaks KVM API {}\n",
            cpu::num_online_cpus(),
            system::KVM_API_VERSION
        );
        Ok(Self {
            _device: device,
            _svm: svm,
            _emergency: emergency,
        })
    }
}
