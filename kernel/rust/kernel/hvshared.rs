// SPDX-License-Identifier: GPL-2.0

//! Memory that the hypervisor reads and writes.
//!
//! Paravirtual interfaces hand the hypervisor the guest-physical address of
//! a small structure that it then updates on its own (the kvmclock
//! `pvclock_vcpu_time_info` areas, the steal-time area, ...). Such memory
//! changes under the guest's feet, so Rust code must never hold references
//! into it: [`SharedSlots`] only offers volatile reads and writes of
//! naturally aligned integers at offsets within a slot.
//!
//! Handing a slot to the hypervisor goes through this type as well
//! ([`SharedSlots::hand_over_via_msr`]): it records which CPU handed it over,
//! and the memory is not freed while any slot is still handed over (a slot is
//! taken back with [`SharedSlots::take_back_via_msr`] on the same CPU).
//!
//! A [`SharedSlots`] is `count` slots of `SLOT` bytes each (a power of two,
//! at most a page), zeroed, in one physically contiguous allocation whose
//! alignment is its power-of-two size, so that no slot crosses a page
//! boundary (hypervisors require that of these structures).

use crate::{
    alloc::{allocator::Kmalloc, flags::GFP_KERNEL, Allocator, KVec},
    bindings,
    cpu::PreemptGuard,
    error::{code::*, Result},
    pr_err, x86,
};
use core::{
    alloc::Layout,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// `holder` value of a slot that the hypervisor does not have.
const NOT_HANDED_OVER: u32 = u32::MAX;

/// An integer that can be read from or written to hypervisor-shared memory.
pub trait SharedWord: Copy + private::Sealed {}
impl SharedWord for u8 {}
impl SharedWord for u16 {}
impl SharedWord for u32 {}
impl SharedWord for u64 {}
impl SharedWord for i8 {}

mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
    impl Sealed for i8 {}
}

/// `count` zeroed slots of `SLOT` bytes shared with the hypervisor.
pub struct SharedSlots<const SLOT: usize> {
    base: NonNull<u8>,
    count: usize,
    layout: Layout,
    /// Per slot: the CPU that handed it to the hypervisor, or
    /// [`NOT_HANDED_OVER`].
    holder: KVec<AtomicU32>,
}

// SAFETY: The memory is only accessed through volatile reads and writes of
// integers, which any thread may do (concurrent access is part of the
// protocols this memory serves, and each protocol orders it with versions).
unsafe impl<const SLOT: usize> Send for SharedSlots<SLOT> {}
// SAFETY: As above.
unsafe impl<const SLOT: usize> Sync for SharedSlots<SLOT> {}

impl<const SLOT: usize> SharedSlots<SLOT> {
    const SLOT_OK: () = assert!(
        SLOT.is_power_of_two() && SLOT >= 8 && SLOT <= crate::page::PAGE_SIZE,
        "the slot size must be a power of two between 8 bytes and a page"
    );

    /// Allocates `count` zeroed slots.
    pub fn new(count: usize) -> Result<Self> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SLOT_OK;
        if count == 0 {
            return Err(EINVAL);
        }
        // kmalloc aligns power-of-two sizes to their size, so every slot
        // (aligned to SLOT within the allocation) stays within one page.
        let size = count
            .checked_mul(SLOT)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(ENOMEM)?;
        let layout = Layout::from_size_align(size, SLOT.min(size)).map_err(|_| EINVAL)?;
        let mut holder = KVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            holder.push(AtomicU32::new(NOT_HANDED_OVER), GFP_KERNEL)?;
        }
        let base = Kmalloc::alloc(layout, GFP_KERNEL | crate::alloc::flags::__GFP_ZERO)?;
        Ok(Self {
            base: base.cast(),
            count,
            layout,
            holder,
        })
    }

    /// The number of slots.
    pub fn count(&self) -> usize {
        self.count
    }

    /// A pointer to the `T` at `offset` of slot `index`, if it lies within
    /// the slot and is naturally aligned.
    fn word<T: SharedWord>(&self, index: usize, offset: usize) -> Result<*mut T> {
        let size = core::mem::size_of::<T>();
        if index >= self.count || offset % size != 0 || offset + size > SLOT {
            return Err(EINVAL);
        }
        // SAFETY: `index * SLOT + offset + size <= count * SLOT`, within the
        // allocation.
        Ok(unsafe { self.base.as_ptr().add(index * SLOT + offset) }.cast())
    }

    /// Reads the integer at `offset` of slot `index` (volatile).
    #[inline]
    pub fn read<T: SharedWord>(&self, index: usize, offset: usize) -> Result<T> {
        let word = self.word::<T>(index, offset)?;
        // SAFETY: `word` is in bounds and aligned; every bit pattern is a
        // valid integer.
        Ok(unsafe { word.read_volatile() })
    }

    /// Writes the integer at `offset` of slot `index` (volatile).
    #[inline]
    pub fn write<T: SharedWord>(&self, index: usize, offset: usize, value: T) -> Result {
        let word = self.word::<T>(index, offset)?;
        // SAFETY: `word` is in bounds and aligned; no reference to this
        // memory exists.
        unsafe { word.write_volatile(value) };
        Ok(())
    }

    /// The guest-physical address of slot `index`.
    pub fn phys_addr(&self, index: usize) -> Result<u64> {
        let slot = self.word::<u8>(index, 0)?;
        // SAFETY: `slot` is a kmalloc address, in the kernel's direct map.
        Ok(unsafe { bindings::virt_to_phys(slot.cast()) })
    }

    /// Hands slot `index` to the hypervisor by writing its physical address
    /// ORed with `low_bits` (e.g. an enable bit) to `msr` on this CPU, for
    /// MSRs through which the hypervisor keeps updating the slot until the
    /// MSR is written again (like `MSR_KVM_SYSTEM_TIME_NEW`).
    pub fn hand_over_via_msr(
        &self,
        guard: &PreemptGuard,
        index: usize,
        msr: u32,
        low_bits: u64,
    ) -> Result {
        let phys = self.phys_addr(index)?;
        if low_bits >= SLOT as u64 {
            // The bits would change the address.
            return Err(EINVAL);
        }
        self.holder[index]
            .compare_exchange(
                NOT_HANDED_OVER,
                guard.cpu(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map_err(|_| EBUSY)?;
        // SAFETY: The slot stays allocated while it is handed over: `drop`
        // keeps the memory when a holder is recorded.
        let ret = unsafe { x86::write_msr(msr, phys | low_bits) };
        if ret.is_err() {
            self.holder[index].store(NOT_HANDED_OVER, Ordering::Release);
        }
        ret
    }

    /// Takes slot `index` back from the hypervisor by writing 0 to `msr` on
    /// this CPU, which must be the CPU that handed it over.
    pub fn take_back_via_msr(&self, guard: &PreemptGuard, index: usize, msr: u32) -> Result {
        let holder = self.holder.get(index).ok_or(EINVAL)?;
        if holder.load(Ordering::Acquire) != guard.cpu() {
            return Err(EINVAL);
        }
        // SAFETY: Writing 0 disables the area: the hypervisor no longer
        // writes to the slot.
        unsafe { x86::write_msr(msr, 0) }?;
        holder.store(NOT_HANDED_OVER, Ordering::Release);
        Ok(())
    }

    /// Whether slot `index` is currently handed over to the hypervisor.
    pub fn is_handed_over(&self, index: usize) -> bool {
        self.holder
            .get(index)
            .is_some_and(|h| h.load(Ordering::Acquire) != NOT_HANDED_OVER)
    }

    /// Lets the hypervisor fill slot `index` once: writes its physical
    /// address to `msr`, for MSRs whose write makes the hypervisor store a
    /// structure there during the write and not afterwards (like
    /// `MSR_KVM_WALL_CLOCK_NEW`).
    pub fn fill_via_msr(&self, index: usize, msr: u32) -> Result {
        let phys = self.phys_addr(index)?;
        if self.is_handed_over(index) {
            return Err(EBUSY);
        }
        // SAFETY: The slot is allocated for the duration of the write, which
        // is when the hypervisor writes it.
        unsafe { x86::write_msr(msr, phys) }
    }
}

impl<const SLOT: usize> Drop for SharedSlots<SLOT> {
    fn drop(&mut self) {
        if let Some(index) = (0..self.count).find(|&i| self.is_handed_over(i)) {
            // The hypervisor may still write here: freeing it could corrupt
            // whatever reuses the memory.
            pr_err!(
                "hvshared: slot {} still handed over; leaking the memory\n",
                index
            );
            return;
        }
        // SAFETY: `base` was allocated by `Kmalloc` with `layout`, and no
        // slot is handed over to the hypervisor.
        unsafe { Kmalloc::free(self.base.cast(), self.layout) };
    }
}
