// SPDX-License-Identifier: GPL-2.0

//! The system file (`/dev/pvrs`) and VM files: the first two levels of the
//! KVM API (`Documentation/virt/kvm/api.rst` 4.1-4.4: KVM_GET_API_VERSION,
//! KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE).

use crate::{
    kvm_api::constants::{
        KVM_CAP_DESTROY_MEMORY_REGION_WORKS, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_INTERNAL_ERROR_DATA,
        KVM_CAP_MAX_VCPUS, KVM_CAP_MAX_VCPU_ID, KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS,
        KVM_CAP_READONLY_MEM, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_SET_TSS_ADDR,
        KVM_CAP_USER_MEMORY,
    },
    kvm_api::{self, ioctl::Ioctl},
    vm_file::{classify_ioctl, Vm, MAX_MEMSLOTS, MAX_VCPUS},
    Host,
};
use kernel::{
    anon_inode, bindings, c_str,
    file_ops::FileOps,
    miscdevice::MiscDevice,
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// What KVM_GET_API_VERSION returns; the only version there has ever been.
pub(crate) const KVM_API_VERSION: isize = 12;

/// KVM_CHECK_EXTENSION (api.rst 4.4): what this backend really does,
/// with KVM's meaning of each answer (a limit, or 1 for "supported").
/// Everything else answers 0, so a VMM takes its fallback instead of
/// meeting a missing ioctl later: no in-kernel irqchip, PIT, irqfd or
/// ioeventfd, no CPUID/MSR/FPU/XCR ioctls, no dirty logging yet.
pub(crate) fn check_extension(cap: usize) -> isize {
    let Ok(cap) = u32::try_from(cap) else {
        return 0;
    };
    match cap {
        // The memory API: KVM_SET_USER_MEMORY_REGION with delete and move.
        KVM_CAP_USER_MEMORY | KVM_CAP_DESTROY_MEMORY_REGION_WORKS => 1,
        // Read-only slots: a write is an MMIO exit (api.rst 4.35).
        KVM_CAP_READONLY_MEM => 1,
        // Accepted and ignored, as KVM on AMD does (they are VMX's).
        KVM_CAP_SET_TSS_ADDR | KVM_CAP_SET_IDENTITY_MAP_ADDR => 1,
        // kvm_run.immediate_exit is honoured.
        KVM_CAP_IMMEDIATE_EXIT => 1,
        // Emulation failures carry KVM's data words and instruction bytes.
        KVM_CAP_INTERNAL_ERROR_DATA => 1,
        KVM_CAP_NR_VCPUS | KVM_CAP_MAX_VCPUS | KVM_CAP_MAX_VCPU_ID => MAX_VCPUS as isize,
        KVM_CAP_NR_MEMSLOTS => MAX_MEMSLOTS as isize,
        _ => 0,
    }
}

/// An open `/dev/pvrs`.
pub(crate) struct SystemFile;

#[vtable]
impl FileOps for SystemFile {
    type Ptr = Arc<Host>;

    fn ioctl(host: ArcBorrow<'_, Host>, cmd: u32, arg: usize) -> Result<isize> {
        match classify_ioctl(kvm_api::ioctl::FdKind::System, cmd, arg)? {
            Ioctl::GetApiVersion => Ok(KVM_API_VERSION),
            Ioctl::CheckExtension => Ok(check_extension(arg)),
            // The kvm_run page and the port-I/O data page that follows it
            // (no coalesced-MMIO ring page: that capability answers 0).
            Ioctl::GetVcpuMmapSize => Ok(2 * bindings::PAGE_SIZE as isize),
            Ioctl::CreateVm => {
                // Machine type 0 is the default (and only) x86 VM type here.
                if arg != 0 {
                    return Err(EINVAL);
                }
                let vm = Vm::new(host.into())?;
                let fd = anon_inode::new_fd(c_str!("kvm-vm"), &host.vm_fops, vm)?;
                Ok(fd as isize)
            }
            // Known to the KVM API, not implemented here.
            _ => Err(EINVAL),
        }
    }
}

impl MiscDevice for SystemFile {
    type RegistrationData = Arc<Host>;

    fn open(host: &Arc<Host>) -> Result<Arc<Host>> {
        Ok(host.clone())
    }
}
