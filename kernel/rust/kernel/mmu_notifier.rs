// SPDX-License-Identifier: GPL-2.0

//! MMU notifiers: being told before the kernel changes or removes the
//! mappings of a process's address space.
//!
//! A driver that maps a process's pages somewhere the kernel's own page
//! tables do not cover (a device's IOMMU, a hypervisor's nested page
//! tables) must drop those secondary mappings whenever the process's own
//! change: otherwise, after `munmap`, `madvise(MADV_DONTNEED)`, migration
//! or a copy-on-write break, the device and the process see different
//! pages. KVM registers one per VM on the VMM's address space
//! (`virt/kvm/kvm_main.c`); so does any hypervisor that maps the VMM's
//! memory into its guests.
//!
//! Upstream Rust-for-Linux has no MMU notifier abstraction yet.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Result},
    types::Opaque,
};
use core::{pin::Pin, ptr::NonNull};

/// A range of user addresses about to be invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidatedRange {
    /// The first address.
    pub start: usize,
    /// The address after the last one.
    pub end: usize,
    /// Whether the callback may sleep (take a mutex, wait for other CPUs).
    /// Only the OOM reaper invalidates without: a handler that would have
    /// to sleep then answers `EAGAIN`, and the reaper leaves this address
    /// space alone.
    pub blockable: bool,
}

/// What an [`MmuNotifier`] calls.
pub trait MmuNotifierHandler: Send + Sync {
    /// The mappings of `range` are about to change: every secondary
    /// mapping of a page in it must be gone when this returns, and none
    /// may be created until the matching [`invalidate_range_end`] call.
    ///
    /// [`invalidate_range_end`]: MmuNotifierHandler::invalidate_range_end
    fn invalidate_range_start(&self, range: &InvalidatedRange) -> Result;

    /// The change announced by `invalidate_range_start` of the same range
    /// is done (also called when that start returned an error).
    fn invalidate_range_end(&self, range: &InvalidatedRange);

    /// The address space is being torn down (the process exits): every
    /// secondary mapping must go. Called at most once, maybe before the
    /// registration is dropped.
    fn release(&self);
}

struct Inner<T: MmuNotifierHandler> {
    subscription: Opaque<bindings::mmu_notifier>,
    ops: bindings::mmu_notifier_ops,
    /// The address space, with a reference on its `mm_struct` (`mmgrab`).
    mm: NonNull<bindings::mm_struct>,
    handler: T,
}

/// A registered MMU notifier on the address space of the process that
/// registered it, calling `T` until dropped.
pub struct MmuNotifier<T: MmuNotifierHandler> {
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: The registration only hands out `&T` (`Sync`); dropping it
// unregisters, which any thread may do.
unsafe impl<T: MmuNotifierHandler> Send for MmuNotifier<T> {}
// SAFETY: As above.
unsafe impl<T: MmuNotifierHandler> Sync for MmuNotifier<T> {}

impl<T: MmuNotifierHandler> MmuNotifier<T> {
    /// Registers `handler` on the current process's address space.
    /// `EINVAL` for a kernel thread (no address space).
    pub fn register_current(handler: T) -> Result<Self> {
        // SAFETY: `get_current` returns the running task, valid here; its
        // `mm` is stable while it runs (only the task itself changes it).
        let mm = unsafe { (*bindings::get_current()).mm };
        let mm = NonNull::new(mm).ok_or(crate::error::code::EINVAL)?;
        let ops = bindings::mmu_notifier_ops {
            release: Some(Self::release),
            invalidate_range_start: Some(Self::invalidate_range_start),
            invalidate_range_end: Some(Self::invalidate_range_end),
            ..Default::default()
        };
        let inner = KBox::pin(
            Inner {
                subscription: Opaque::new(bindings::mmu_notifier::default()),
                ops,
                mm,
                handler,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: The box is pinned, so the subscription and the ops it
        // points to keep their addresses until `drop` unregisters.
        unsafe {
            let subscription = inner.subscription.get();
            (*subscription).ops = &inner.ops;
            // Keeps the `mm_struct` (not the address space) until drop.
            bindings::mmgrab(mm.as_ptr());
            let registered = to_result(bindings::mmu_notifier_register(subscription, mm.as_ptr()));
            if let Err(e) = registered {
                bindings::mmdrop(mm.as_ptr());
                return Err(e);
            }
        }
        Ok(Self { inner })
    }

    /// The handler.
    pub fn handler(&self) -> &T {
        &self.inner.handler
    }

    /// # Safety
    ///
    /// `subscription` is the `subscription` field of a live `Inner<T>`.
    unsafe fn handler_of<'a>(subscription: *mut bindings::mmu_notifier) -> &'a T {
        // SAFETY: As the caller promises.
        let inner = unsafe {
            &*crate::container_of!(
                subscription.cast::<Opaque<bindings::mmu_notifier>>(),
                Inner<T>,
                subscription
            )
        };
        &inner.handler
    }

    /// # Safety
    ///
    /// `range` is a valid range passed by the MMU notifier core.
    unsafe fn range_of(range: *const bindings::mmu_notifier_range) -> InvalidatedRange {
        // SAFETY: As the caller promises.
        unsafe {
            InvalidatedRange {
                start: (*range).start,
                end: (*range).end,
                blockable: bindings::mmu_notifier_range_blockable(range),
            }
        }
    }

    /// # Safety
    ///
    /// Called by the MMU notifier core for a registered subscription.
    unsafe extern "C" fn invalidate_range_start(
        subscription: *mut bindings::mmu_notifier,
        range: *const bindings::mmu_notifier_range,
    ) -> core::ffi::c_int {
        // SAFETY: The subscription is registered, hence part of a live
        // `Inner` (drop unregisters, which waits for running callbacks);
        // the range is the core's.
        let (handler, range) = unsafe { (Self::handler_of(subscription), Self::range_of(range)) };
        match handler.invalidate_range_start(&range) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// As `invalidate_range_start`.
    unsafe extern "C" fn invalidate_range_end(
        subscription: *mut bindings::mmu_notifier,
        range: *const bindings::mmu_notifier_range,
    ) {
        // SAFETY: As in `invalidate_range_start`.
        let (handler, range) = unsafe { (Self::handler_of(subscription), Self::range_of(range)) };
        handler.invalidate_range_end(&range);
    }

    /// # Safety
    ///
    /// As `invalidate_range_start`.
    unsafe extern "C" fn release(
        subscription: *mut bindings::mmu_notifier,
        _mm: *mut bindings::mm_struct,
    ) {
        // SAFETY: As in `invalidate_range_start`.
        unsafe { Self::handler_of(subscription) }.release();
    }
}

impl<T: MmuNotifierHandler> Drop for MmuNotifier<T> {
    fn drop(&mut self) {
        let mm = self.inner.mm.as_ptr();
        // SAFETY: The subscription was registered on `mm`, whose
        // `mm_struct` our `mmgrab` keeps; unregistering calls `release` if
        // the address space still exists and waits until no callback runs,
        // after which the box may go.
        unsafe {
            bindings::mmu_notifier_unregister(self.inner.subscription.get(), mm);
            bindings::mmdrop(mm);
        }
    }
}
