// SPDX-License-Identifier: GPL-2.0

//! Memory management: user mappings of driver pages, and user pages pinned
//! for a device (or a hypervisor) to use.
//!
//! [`virt`] follows the shape upstream Rust-for-Linux gave `mm::virt` in
//! Linux 6.16 (`VmaNew` for `f_ops->mmap`, `VmaMixedMap::vm_insert_page`);
//! [`PinnedUserPage`] wraps `pin_user_pages_fast`, for which upstream has no
//! abstraction yet.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h)

pub mod virt;

use crate::{
    bindings,
    error::{Error, Result},
    page::Page,
    prelude::*,
};
use core::ptr::NonNull;

/// The highest user address any task can have, plus one (`TASK_SIZE_MAX`;
/// it depends on the paging mode, 4- or 5-level, chosen at boot).
pub fn task_size_max() -> usize {
    // SAFETY: Reads boot-time constants; always safe.
    unsafe { bindings::task_size_max() }
}

/// The physical address of a page the kernel allocated.
pub fn page_phys_addr(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` while `page` lives.
    unsafe { bindings::page_to_phys(page.as_ptr()) }
}

/// One page of a user address space, pinned (`FOLL_PIN`) so that its
/// physical address stays valid for DMA or for a guest's nested page
/// tables until the pin is dropped.
///
/// # Invariants
///
/// `page` holds one pin taken by `pin_user_pages_fast`.
pub struct PinnedUserPage {
    page: NonNull<bindings::page>,
    writable: bool,
}

// SAFETY: A pin may be released from any thread.
unsafe impl Send for PinnedUserPage {}
// SAFETY: `&PinnedUserPage` only reads the page's address.
unsafe impl Sync for PinnedUserPage {}

impl PinnedUserPage {
    /// Pins the page at user address `address` of the current process,
    /// faulting it in (and breaking copy-on-write when `writable`).
    /// `address` must be page-aligned.
    pub fn pin(address: usize, writable: bool) -> Result<Self> {
        if address % bindings::PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let flags = if writable { bindings::FOLL_WRITE } else { 0 };
        let mut page: *mut bindings::page = core::ptr::null_mut();
        // SAFETY: `page` is a valid array of one entry for the result; the
        // address is checked by the function against the caller's mm.
        let pinned =
            unsafe { bindings::pin_user_pages_fast(address as _, 1, flags as _, &mut page) };
        if pinned < 0 {
            return Err(Error::from_errno(pinned));
        }
        match NonNull::new(page) {
            Some(page) if pinned == 1 => Ok(Self { page, writable }),
            _ => Err(EFAULT),
        }
    }

    /// The page's physical address.
    pub fn phys_addr(&self) -> u64 {
        // SAFETY: By the type invariant the page is pinned, hence valid.
        unsafe { bindings::page_to_phys(self.page.as_ptr()) }
    }

    /// The page frame number.
    pub fn pfn(&self) -> u64 {
        self.phys_addr() >> bindings::PAGE_SHIFT
    }
}

impl Drop for PinnedUserPage {
    fn drop(&mut self) {
        let mut page = self.page.as_ptr();
        // SAFETY: By the type invariant we hold one pin on the page. A page
        // that was writable may have been written through the pin (by a
        // guest), so it is marked dirty for the page cache and swap.
        unsafe { bindings::unpin_user_pages_dirty_lock(&mut page, 1, self.writable) };
    }
}
