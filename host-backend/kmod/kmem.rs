// SPDX-License-Identifier: GPL-2.0

//! Kernel memory the hardware reads, in the shapes hv-core works with:
//! the pages of the nested page tables, the per-vCPU SVM block (VMCB,
//! MSR permission map, GPRs: `svm::SvmVcpu`), the per-VM I/O permission
//! map, and guest memory as the VMM mapped it (reached with
//! `copy_from_user`, since the vCPU runs in the VMM's process).
//!
//! With `svm_hw.rs`, this is where the module's `unsafe` lives.

use crate::{npt, paging, svm, vcpu, vm_file::GuestMemoryState};
use kernel::{
    alloc::{flags, KBox},
    bindings,
    mm::page_phys_addr,
    page::Page,
    prelude::*,
    rbtree::RBTree,
    sync::Mutex,
    uaccess::UserSlice,
    x86::{cmpxchg_user_u32, cmpxchg_user_u64},
};

/// The physical address of kernel memory in the direct map (kmalloc'd).
fn virt_to_phys<T>(ptr: *const T) -> u64 {
    // SAFETY: `virt_to_phys` only computes: it is given addresses of the
    // direct map (the callers pass kmalloc'd objects).
    unsafe { bindings::virt_to_phys(ptr.cast_mut().cast()) }
}

/// The pages of one VM's nested page tables, by physical address.
pub(crate) struct NptPages {
    pages: RBTree<u64, Page>,
}

impl NptPages {
    pub(crate) fn new() -> Self {
        Self {
            pages: RBTree::new(),
        }
    }

    /// How many table pages there are (debugfs).
    pub(crate) fn count(&self) -> usize {
        self.pages.iter().count()
    }

    /// Frees a table page that the page table no longer points at.
    pub(crate) fn free(&mut self, table: u64) {
        self.pages.remove(&table);
    }
}

impl npt::PageTableMemory for NptPages {
    fn allocate_table(&mut self) -> Option<u64> {
        let page = Page::alloc_page(flags::GFP_KERNEL | flags::__GFP_ZERO).ok()?;
        let pa = page_phys_addr(&page);
        self.pages
            .try_create_and_insert(pa, page, flags::GFP_KERNEL)
            .ok()?;
        Some(pa)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        let (Some(page), true) = (self.pages.get(&table), index < 512) else {
            // hv-core only passes tables it allocated and indices below
            // 512; anything else reads as a non-present entry.
            return 0;
        };
        let mut bytes = [0u8; 8];
        // SAFETY: `bytes` is valid for 8 bytes of writes and the range is
        // inside the page. The hardware reads these pages concurrently but
        // never writes them (NPT A/D bits are not enabled).
        match unsafe { page.read_raw(bytes.as_mut_ptr(), index * 8, 8) } {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => 0,
        }
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        let (Some(page), true) = (self.pages.get(&table), index < 512) else {
            return;
        };
        let bytes = value.to_le_bytes();
        // SAFETY: As in `read_entry`; a table entry is written as one
        // aligned 8-byte copy, which the page walker sees whole or not at
        // all (the copy is a single aligned store for 8 bytes).
        let _ = unsafe { page.write_raw(bytes.as_ptr(), index * 8, 8) };
    }
}

/// A vCPU's SVM block: VMCB, MSR permission map and GPRs, in one
/// physically contiguous, page-aligned allocation.
pub(crate) struct SvmVcpuBox {
    vcpu: KBox<svm::SvmVcpu>,
}

impl SvmVcpuBox {
    /// Allocates the block zeroed and resets it in place (it is 16 KiB,
    /// too big for the kernel stack).
    pub(crate) fn new(features: svm::SvmFeatures, iopm_pa: u64, nested_cr3: u64) -> Result<Self> {
        let uninit = KBox::<svm::SvmVcpu>::new_uninit(flags::GFP_KERNEL | flags::__GFP_ZERO)?;
        // SAFETY: The allocation is zeroed, and all-zeroes is a valid
        // `SvmVcpu`: it holds only integers, arrays of them and booleans
        // (false), with no references, enums or niches.
        let mut vcpu = unsafe { uninit.assume_init() };
        let msrpm_pa = virt_to_phys(&vcpu.msrpm);
        vcpu.reset(
            features,
            svm::VmcbAddresses {
                iopm_base_pa: iopm_pa,
                msrpm_base_pa: msrpm_pa,
                nested_cr3,
            },
        );
        Ok(Self { vcpu })
    }

    /// The VMCB's physical address, for VMRUN.
    pub(crate) fn vmcb_pa(&self) -> u64 {
        virt_to_phys(&self.vcpu.vmcb)
    }
}

impl core::ops::Deref for SvmVcpuBox {
    type Target = svm::SvmVcpu;
    fn deref(&self) -> &svm::SvmVcpu {
        &self.vcpu
    }
}

impl core::ops::DerefMut for SvmVcpuBox {
    fn deref_mut(&mut self) -> &mut svm::SvmVcpu {
        &mut self.vcpu
    }
}

/// A VM's I/O permission map: 12 KiB, physically contiguous, page-aligned.
pub(crate) struct IopmBox {
    iopm: KBox<svm::iopm::IoPermissionMap>,
}

impl IopmBox {
    /// A map that intercepts every port.
    pub(crate) fn new() -> Result<Self> {
        // Built in place: 12 KiB is too big for the kernel stack.
        let uninit =
            KBox::<svm::iopm::IoPermissionMap>::new_uninit(flags::GFP_KERNEL | flags::__GFP_ZERO)?;
        // SAFETY: The allocation is zeroed, and the map is a byte array.
        let mut iopm = unsafe { uninit.assume_init() };
        iopm.0.fill(0xff);
        Ok(Self { iopm })
    }

    pub(crate) fn pa(&self) -> u64 {
        virt_to_phys(&*self.iopm)
    }
}

/// Guest memory as the VMM mapped it: guest-physical addresses go through
/// the memslots to user addresses of the current process (the VMM, whose
/// thread runs the vCPU), read with `copy_from_user` and written with
/// `copy_to_user` or a user-space CMPXCHG (page-table A/D bits).
///
/// The memory lock is held only to translate an address, never across a
/// copy: a copy may fault and take the VMM's `mmap_lock`, under which the
/// MMU notifier takes the memory lock. A memslot that changes meanwhile
/// only makes the copy reach what the VMM maps at the old address now, or
/// fail (as KVM's guest accesses, which also copy from user addresses).
pub(crate) struct UserGuestMemory<'a> {
    /// The VM's memslots.
    pub(crate) mem: &'a Mutex<GuestMemoryState>,
}

impl UserGuestMemory<'_> {
    /// The user address of `gpa` now.
    fn hva(&self, gpa: u64, write: bool) -> core::result::Result<u64, paging::MemoryError> {
        self.mem
            .lock()
            .hva(gpa, write)
            .ok_or(paging::MemoryError::Unmapped)
    }

    fn read<const N: usize>(&self, gpa: u64) -> core::result::Result<[u8; N], paging::MemoryError> {
        let hva = self.hva(gpa, false)?;
        let mut bytes = [0u8; N];
        UserSlice::new(hva as usize, N)
            .reader()
            .read_slice(&mut bytes)
            .map_err(|_| paging::MemoryError::Unavailable)?;
        Ok(bytes)
    }
}

impl paging::GuestMemory for UserGuestMemory<'_> {
    fn read_u32(&mut self, gpa: u64) -> core::result::Result<u32, paging::MemoryError> {
        Ok(u32::from_le_bytes(self.read::<4>(gpa)?))
    }

    fn read_u64(&mut self, gpa: u64) -> core::result::Result<u64, paging::MemoryError> {
        Ok(u64::from_le_bytes(self.read::<8>(gpa)?))
    }

    fn read_bytes(
        &mut self,
        gpa: u64,
        buffer: &mut [u8],
    ) -> core::result::Result<(), paging::MemoryError> {
        let hva = self.hva(gpa, false)?;
        UserSlice::new(hva as usize, buffer.len())
            .reader()
            .read_slice(buffer)
            .map_err(|_| paging::MemoryError::Unavailable)
    }
}

impl paging::PageTableWrite for UserGuestMemory<'_> {
    fn set_entry_bits(
        &mut self,
        update: &paging::AccessedDirtyUpdate,
    ) -> core::result::Result<bool, paging::MemoryError> {
        let hva = self.hva(update.entry_gpa, true)?;
        let new = update.old_value | update.set_bits;
        match update.width {
            paging::EntryWidth::Bits32 => {
                cmpxchg_user_u32(hva as usize, update.old_value as u32, new as u32)
            }
            paging::EntryWidth::Bits64 => cmpxchg_user_u64(hva as usize, update.old_value, new),
        }
        .map_err(|_| paging::MemoryError::Unavailable)
    }
}

impl vcpu::GuestRam for UserGuestMemory<'_> {
    fn write_bytes(
        &mut self,
        gpa: u64,
        bytes: &[u8],
    ) -> core::result::Result<(), paging::MemoryError> {
        let hva = self.hva(gpa, true)?;
        UserSlice::new(hva as usize, bytes.len())
            .writer()
            .write_slice(bytes)
            .map_err(|_| paging::MemoryError::Unavailable)
    }
}

/// hv-core state that is plain data (no heap, no references, no `Drop`)
/// and built at compile time by a `const fn`, which may be copied bitwise
/// out of a `static` into a fresh allocation: the way to get such state on
/// the heap without building it on the kernel stack first.
///
/// # Safety
///
/// Implementors must be plain data as described: a bitwise copy of a
/// valid value is a valid, independent value.
pub(crate) unsafe trait PlainState: Sized + 'static {
    /// The value to copy.
    fn initial() -> &'static Self;

    /// A copy of [`PlainState::initial`] on the heap.
    fn boxed() -> Result<KBox<Self>> {
        let mut uninit = KBox::<Self>::new_uninit(flags::GFP_KERNEL)?;
        // SAFETY: The source is a valid value and the destination a fresh
        // allocation of the same type; per the trait's contract a bitwise
        // copy is a valid, independent value.
        unsafe { core::ptr::copy_nonoverlapping(Self::initial(), uninit.as_mut_ptr(), 1) };
        // SAFETY: Initialized just above.
        Ok(unsafe { uninit.assume_init() })
    }
}

/// The initial hv-core vCPU state (about 12 KiB).
static INITIAL_VCPU_STATE: vcpu::VcpuState = vcpu::VcpuState::new();

// SAFETY: `VcpuState` holds arrays, integers and `Option`s of them only.
unsafe impl PlainState for vcpu::VcpuState {
    fn initial() -> &'static Self {
        &INITIAL_VCPU_STATE
    }
}

/// The in-kernel irqchip of a VM (hv-core `irqchip::vm`).
pub(crate) type Irqchip = crate::irqchip::vm::VmIrqchip<{ crate::vm_file::MAX_VCPUS }>;

/// The initial irqchip (about 30 KiB): no vCPUs, no PIT, empty routing.
static INITIAL_IRQCHIP: Irqchip = Irqchip::new();

// SAFETY: `VmIrqchip` holds the device models, the routing table and
// queues: arrays, integers and `Option`s of them only.
unsafe impl PlainState for Irqchip {
    fn initial() -> &'static Self {
        &INITIAL_IRQCHIP
    }
}

/// A fresh hv-core vCPU state on the heap.
pub(crate) fn new_vcpu_state() -> Result<KBox<vcpu::VcpuState>> {
    vcpu::VcpuState::boxed()
}
