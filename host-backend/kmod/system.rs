// SPDX-License-Identifier: GPL-2.0

//! The system file (`/dev/pvrs`) and VM files: the first two levels of the
//! KVM API (`Documentation/virt/kvm/api.rst` 4.1-4.4: KVM_GET_API_VERSION,
//! KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE).

use crate::{vm_file::Vm, Host};
use kernel::{
    anon_inode, bindings, c_str,
    file_ops::FileOps,
    ioctl::_IO,
    miscdevice::MiscDevice,
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// What KVM_GET_API_VERSION returns; the only version there has ever been.
pub(crate) const KVM_API_VERSION: isize = 12;

const KVMIO: u32 = 0xae;
const KVM_GET_API_VERSION: u32 = _IO(KVMIO, 0x00);
const KVM_CREATE_VM: u32 = _IO(KVMIO, 0x01);
const KVM_CHECK_EXTENSION: u32 = _IO(KVMIO, 0x03);
const KVM_GET_VCPU_MMAP_SIZE: u32 = _IO(KVMIO, 0x04);

/// The capabilities this backend has, for KVM_CHECK_EXTENSION: none yet
/// beyond the base API, so every query answers 0 and a VMM takes its
/// fallbacks (api.rst 4.4: "0 if unsupported").
pub(crate) fn check_extension(_cap: usize) -> isize {
    0
}

/// An open `/dev/pvrs`.
pub(crate) struct SystemFile;

#[vtable]
impl FileOps for SystemFile {
    type Ptr = Arc<Host>;

    fn ioctl(host: ArcBorrow<'_, Host>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            KVM_GET_API_VERSION => Ok(KVM_API_VERSION),
            KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
            // The kvm_run page and the port-I/O data page that follows it.
            KVM_GET_VCPU_MMAP_SIZE => Ok(2 * bindings::PAGE_SIZE as isize),
            KVM_CREATE_VM => {
                // Machine type 0 is the default (and only) x86 VM type.
                if arg != 0 {
                    return Err(EINVAL);
                }
                let vm = Vm::new(host.into())?;
                let fd = anon_inode::new_fd(c_str!("kvm-vm"), &host.vm_fops, vm)?;
                Ok(fd as isize)
            }
            _ => Err(ENOTTY),
        }
    }
}

impl MiscDevice for SystemFile {
    type RegistrationData = Arc<Host>;

    fn open(host: &Arc<Host>) -> Result<Arc<Host>> {
        Ok(host.clone())
    }
}
