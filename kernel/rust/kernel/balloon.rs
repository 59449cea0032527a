// SPDX-License-Identifier: GPL-2.0

//! Memory balloon pages, and the memory statistics a balloon reports.
//!
//! C headers: [`include/linux/balloon_compaction.h`](srctree/include/linux/balloon_compaction.h),
//! [`include/linux/mm.h`](srctree/include/linux/mm.h).
//!
//! A balloon driver takes pages from the page allocator ([`BalloonPage::alloc`])
//! and keeps them in a [`Balloon`], the kernel's `struct balloon_dev_info`
//! list, while the host has them; it takes them out again to give them back
//! ([`Balloon::dequeue`]). The list is the one the kernel's balloon
//! compaction code knows, so ballooned pages are marked offline and, with
//! `CONFIG_BALLOON_COMPACTION`, could be migrated (this abstraction does not
//! offer a migration callback: without `CONFIG_COMPACTION` there is none to
//! offer).

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{code::*, Result},
    types::Opaque,
};
use core::{
    pin::Pin,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};

/// A page taken from the page allocator for a balloon, or taken out of one.
/// Dropping it gives it back to the page allocator.
pub struct BalloonPage {
    page: NonNull<bindings::page>,
}

// SAFETY: A page reference can be released from any thread.
unsafe impl Send for BalloonPage {}

impl BalloonPage {
    /// A page for the balloon: movable, not from emergency reserves, no
    /// retrying or warning when memory is short (the balloon asks again).
    pub fn alloc() -> Option<Self> {
        // SAFETY: Always safe to call.
        let page = unsafe { bindings::balloon_page_alloc() };
        NonNull::new(page).map(|page| Self { page })
    }

    /// The page frame number.
    pub fn pfn(&self) -> u64 {
        // SAFETY: `self.page` is a live page.
        unsafe { bindings::page_to_pfn(self.page.as_ptr()) as u64 }
    }

    /// Changes the kernel's count of managed pages (`MemTotal`) by `delta`
    /// for this page: -1 while the host has it, +1 when it comes back.
    pub fn adjust_managed_count(&self, delta: i64) {
        // SAFETY: `self.page` is a live page; the count is the kernel's.
        unsafe { bindings::adjust_managed_page_count(self.page.as_ptr(), delta as _) };
    }
}

impl Drop for BalloonPage {
    fn drop(&mut self) {
        // SAFETY: This object holds the page's only reference.
        unsafe { bindings::put_page(self.page.as_ptr()) };
    }
}

/// The pages a balloon holds (`struct balloon_dev_info`).
pub struct Balloon {
    info: Pin<KBox<Opaque<bindings::balloon_dev_info>>>,
    /// Pages enqueued and not dequeued. `balloon_page_dequeue()` must not
    /// be called on an empty balloon (it calls `BUG()`, taking an empty list
    /// for lost pages), so this count guards every call.
    pages: AtomicUsize,
}

// SAFETY: The C list is protected by its own spinlock.
unsafe impl Send for Balloon {}
// SAFETY: As above.
unsafe impl Sync for Balloon {}

impl Balloon {
    /// An empty balloon.
    pub fn new() -> Result<Self> {
        let info = KBox::pin(Opaque::<bindings::balloon_dev_info>::uninit(), GFP_KERNEL)?;
        // SAFETY: `info` is pinned and not yet shared; init sets every field.
        unsafe { bindings::balloon_devinfo_init(info.get()) };
        Ok(Self {
            info,
            pages: AtomicUsize::new(0),
        })
    }

    /// The number of pages in the balloon.
    pub fn len(&self) -> usize {
        self.pages.load(Ordering::Relaxed)
    }

    /// Whether the balloon holds no page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `page` into the C list; returns its page frame number. The
    /// caller accounts for it in `pages`.
    fn insert(&self, page: BalloonPage) -> u64 {
        let pfn = page.pfn();
        let raw = page.page.as_ptr();
        core::mem::forget(page);
        // SAFETY: `raw` is a page from `balloon_page_alloc` whose reference
        // moves into the list; the list's lock is taken inside.
        unsafe { bindings::balloon_page_enqueue(self.info.get(), raw) };
        pfn
    }

    /// Puts every page of `slots` into the balloon, leaving the slots
    /// empty, and writes each page's frame number to `pfns` (in order, as
    /// far as `pfns` reaches). Returns how many pages went in. The count is
    /// updated once for the batch.
    pub fn enqueue_batch(&self, slots: &mut [Option<BalloonPage>], pfns: &mut [u64]) -> usize {
        let mut n = 0;
        for (slot, pfn) in slots.iter_mut().zip(pfns.iter_mut()) {
            if let Some(page) = slot.take() {
                *pfn = self.insert(page);
                n += 1;
            }
        }
        self.pages.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Puts `page` into the balloon; returns its page frame number.
    pub fn enqueue(&self, page: BalloonPage) -> u64 {
        let pfn = self.insert(page);
        self.pages.fetch_add(1, Ordering::Relaxed);
        pfn
    }

    /// Takes a page out of the balloon, if it holds one that is not being
    /// migrated.
    pub fn dequeue(&self) -> Option<BalloonPage> {
        // Claim a page first, so that the C function never sees an empty
        // list (see `pages`).
        self.pages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        // SAFETY: The list holds at least the page claimed above; its lock
        // is taken inside; the page's reference moves to the returned object.
        let page = unsafe { bindings::balloon_page_dequeue(self.info.get()) };
        match NonNull::new(page) {
            Some(page) => Some(BalloonPage { page }),
            None => {
                // The page is isolated for migration right now: still ours.
                self.pages.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Drop for Balloon {
    fn drop(&mut self) {
        // Pages still in the balloon go back to the page allocator.
        while let Some(page) = self.dequeue() {
            drop(page);
        }
    }
}

/// Memory statistics, as the virtio balloon reports them (virtio 1.2,
/// 5.5.6.3): counts of pages or events since boot, and sizes in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    /// Pages swapped in.
    pub swap_in: u64,
    /// Pages swapped out.
    pub swap_out: u64,
    /// Major page faults.
    pub major_faults: u64,
    /// Minor page faults.
    pub minor_faults: u64,
    /// Free memory, bytes.
    pub free: u64,
    /// Total memory the kernel manages, bytes.
    pub total: u64,
    /// Memory available for new work without swapping, bytes.
    pub available: u64,
    /// The page cache (disk caches), bytes.
    pub caches: u64,
}

impl MemoryStats {
    /// The statistics now.
    pub fn now() -> Self {
        let (mut swap_in, mut swap_out, mut major, mut faults) = (0, 0, 0, 0);
        // SAFETY: The four outputs are valid locations.
        unsafe { bindings::vm_event_counts(&mut swap_in, &mut swap_out, &mut major, &mut faults) };
        // SAFETY: `sysinfo` is plain data; zero is a valid start.
        let mut info: bindings::sysinfo = unsafe { core::mem::zeroed() };
        // SAFETY: `info` is a valid output location.
        unsafe { bindings::si_meminfo(&mut info) };
        let unit = u64::from(info.mem_unit);
        let page = crate::page::PAGE_SIZE as u64;
        // SAFETY: Always safe to call.
        let available = unsafe { bindings::si_mem_available() } as u64;
        // SAFETY: Always safe to call.
        let caches = unsafe { bindings::file_pages() } as u64;
        Self {
            swap_in,
            swap_out,
            major_faults: major,
            minor_faults: faults.saturating_sub(major),
            free: (info.freeram as u64).saturating_mul(unit),
            total: (info.totalram as u64).saturating_mul(unit),
            available: available.saturating_mul(page),
            caches: caches.saturating_mul(page),
        }
    }
}

/// Something that frees memory when the kernel is about to kill a task
/// for lack of it.
pub trait OomHandler: Send + Sync {
    /// Frees what it can; returns the number of pages freed.
    fn free_pages(&self) -> u64;
}

struct OomInner<T> {
    nb: Opaque<bindings::notifier_block>,
    handler: T,
}

/// A registered OOM notifier (`register_oom_notifier`): the kernel calls
/// the handler before it picks a task to kill; if pages were freed, it
/// retries the allocation instead. Dropping it unregisters it.
pub struct OomNotifier<T: OomHandler> {
    inner: Pin<KBox<OomInner<T>>>,
}

// SAFETY: The notifier block is used by the OOM code under its own lock;
// the handler is `Send + Sync`.
unsafe impl<T: OomHandler> Send for OomNotifier<T> {}
// SAFETY: As above.
unsafe impl<T: OomHandler> Sync for OomNotifier<T> {}

impl<T: OomHandler> OomNotifier<T> {
    /// Registers `handler`.
    pub fn register(handler: T) -> Result<Self> {
        let inner = KBox::pin(
            OomInner {
                nb: Opaque::uninit(),
                handler,
            },
            GFP_KERNEL,
        )?;
        let nb = inner.nb.get();
        // SAFETY: `nb` is pinned and not yet registered; zero is a valid
        // start for a notifier block.
        unsafe {
            nb.write_bytes(0, 1);
            (*nb).notifier_call = Some(Self::callback);
        }
        // SAFETY: `nb` stays pinned until unregistered in `drop`.
        let ret = unsafe { bindings::register_oom_notifier(nb) };
        if ret != 0 {
            return Err(EINVAL);
        }
        Ok(Self { inner })
    }

    /// # Safety
    ///
    /// Called by the OOM notifier chain with a block registered by
    /// `register` and `data` pointing to the count of freed pages.
    unsafe extern "C" fn callback(
        nb: *mut bindings::notifier_block,
        _action: usize,
        data: *mut core::ffi::c_void,
    ) -> core::ffi::c_int {
        // SAFETY: `nb` is the `nb` field of a live `OomInner<T>`.
        let inner = unsafe { &*crate::container_of!(nb, OomInner<T>, nb) };
        let freed = inner.handler.free_pages();
        // SAFETY: The OOM code passes a pointer to its `unsigned long`
        // count of freed pages.
        unsafe { *data.cast::<usize>() += freed as usize };
        bindings::NOTIFY_OK as core::ffi::c_int
    }
}

impl<T: OomHandler> Drop for OomNotifier<T> {
    fn drop(&mut self) {
        // SAFETY: The block was registered in `register`; unregistering waits
        // for callers of the chain (it is a blocking notifier chain).
        unsafe { bindings::unregister_oom_notifier(self.inner.nb.get()) };
    }
}
