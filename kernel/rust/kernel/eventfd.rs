// SPDX-License-Identifier: GPL-2.0

//! eventfd, seen from the kernel: taking a reference to the eventfd behind
//! a user's file descriptor, signalling it, and being called back when
//! user space signals it.
//!
//! This is what KVM's irqfd (`KVM_IRQFD`, `Documentation/virt/kvm/api.rst`
//! 4.75) and ioeventfd (4.59) are made of: a VMM hands the hypervisor an
//! eventfd, and a write to it raises a guest interrupt without a system
//! call into the VM (irqfd), or the hypervisor signals it when the guest
//! writes a doorbell (ioeventfd).
//!
//! The callback hooks into the eventfd's wait queue the way `virt/kvm/eventfd.c`
//! does: the file's `poll` is called with a poll table whose queueing
//! function adds our own wait-queue entry, whose wake function then runs
//! for every signal, in the signaller's context with the wait queue's lock
//! held.
//!
//! Upstream Rust-for-Linux has no eventfd abstraction yet.
//!
//! C headers: [`include/linux/eventfd.h`](srctree/include/linux/eventfd.h),
//! [`include/linux/poll.h`](srctree/include/linux/poll.h),
//! [`include/linux/wait.h`](srctree/include/linux/wait.h).

use crate::{
    bindings,
    error::{code::*, from_err_ptr, Error, Result},
    init::{self, PinInit},
    types::Opaque,
};
use core::{
    ffi::{c_int, c_uint, c_void},
    mem::MaybeUninit,
    ptr::{self, addr_of_mut, NonNull},
};

/// `EPOLLIN`: the counter is not zero (a signal).
const EPOLLIN: u32 = 0x0001;
/// `EPOLLHUP`: the eventfd's last file reference is being dropped.
const EPOLLHUP: u32 = 0x0010;

/// A reference to an open file, dropped with `fput`.
struct FileRef(NonNull<bindings::file>);

impl FileRef {
    /// The file of descriptor `fd` of the calling process.
    fn get(fd: u32) -> Result<Self> {
        // SAFETY: `fget` checks the descriptor and returns a counted
        // reference, or null.
        let file = unsafe { bindings::fget(fd) };
        NonNull::new(file).map(Self).ok_or(EBADF)
    }
}

impl Drop for FileRef {
    fn drop(&mut self) {
        // SAFETY: The reference was taken by `fget` and is dropped once.
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}

/// A counted reference to an eventfd's context (`struct eventfd_ctx`): it
/// outlives the file descriptor it came from, so the eventfd can still be
/// signalled, or its wait queue left, after user space closed it.
pub struct EventFdCtx(NonNull<bindings::eventfd_ctx>);

// SAFETY: An eventfd context is reference counted and locks its counter
// and wait queue itself; any thread may signal it or drop a reference.
unsafe impl Send for EventFdCtx {}
// SAFETY: As above; `&EventFdCtx` only allows signalling.
unsafe impl Sync for EventFdCtx {}

impl EventFdCtx {
    /// The eventfd of descriptor `fd` of the calling process: `EBADF` if
    /// it is not open, `EINVAL` if it is not an eventfd.
    pub fn from_fd(fd: u32) -> Result<Self> {
        Self::from_file(&FileRef::get(fd)?)
    }

    fn from_file(file: &FileRef) -> Result<Self> {
        // SAFETY: The file is valid while `file` holds its reference;
        // `eventfd_ctx_fileget` checks that it is an eventfd and takes a
        // reference on its context.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fileget(file.0.as_ptr()) })?;
        NonNull::new(ctx).map(Self).ok_or(EINVAL)
    }

    /// Adds 1 to the counter and wakes the eventfd's readers and pollers.
    /// May be called from any context, but not from a wake function of
    /// the same eventfd.
    pub fn signal(&self) {
        // SAFETY: The context is valid while we hold our reference.
        unsafe { bindings::eventfd_signal_mask(self.0.as_ptr(), 0) };
    }
}

impl PartialEq for EventFdCtx {
    /// Whether both refer to the same eventfd.
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for EventFdCtx {}

impl Drop for EventFdCtx {
    fn drop(&mut self) {
        // SAFETY: Our reference, dropped once.
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) };
    }
}

/// What an [`EventFdWatch`] calls.
///
/// Both methods run in the context of whoever signals or closes the
/// eventfd, with the eventfd's wait-queue lock held and interrupts off:
/// they must not sleep, and must not signal or read the same eventfd.
pub trait EventFdHandler: Send + Sync {
    /// The eventfd was signalled. Its counter, `count`, has been read and
    /// reset. `count` is 0 for a signal that was already pending when the
    /// watch began (the counter is then left as it was).
    fn signalled(&self, count: u64);

    /// The eventfd's file is being released (user space closed its last
    /// descriptor). The watch stays registered, and silent, until dropped.
    fn hung_up(&self) {}
}

/// A callback on an eventfd, for as long as this lives.
///
/// Created pinned ([`EventFdWatch::new`]), since the eventfd's wait queue
/// links to it; dropping it leaves the wait queue, after which the handler
/// is not called any more.
pub struct EventFdWatch<T: EventFdHandler> {
    wait: Opaque<bindings::wait_queue_entry>,
    ctx: EventFdCtx,
    handler: T,
}

// SAFETY: The wait-queue entry is only touched by the eventfd's wait
// queue under its own lock, and by `drop`; the context and the handler
// are `Send`.
unsafe impl<T: EventFdHandler> Send for EventFdWatch<T> {}
// SAFETY: `&EventFdWatch` gives access to the handler (`Sync`) and the
// context (`Sync`) only.
unsafe impl<T: EventFdHandler> Sync for EventFdWatch<T> {}

/// The poll table handed to the eventfd's `poll`, and what its queueing
/// function needs: `table` first, so that the table's address is the
/// struct's.
#[repr(C)]
struct Queuer {
    table: MaybeUninit<bindings::poll_table_struct>,
    wait: *mut bindings::wait_queue_entry,
    queued: bool,
}

impl<T: EventFdHandler> EventFdWatch<T> {
    /// Watches the eventfd of descriptor `fd` of the calling process:
    /// `handler` is called for every signal from now on, and once right
    /// away if one is pending. `EBADF` or `EINVAL` if `fd` is not an open
    /// eventfd.
    pub fn new(fd: u32, handler: T) -> impl PinInit<Self, Error> {
        let init = move |slot: *mut Self| -> Result {
            let file = FileRef::get(fd)?;
            let ctx = EventFdCtx::from_file(&file)?;
            // SAFETY: `slot` is valid for writes and pinned (the contract
            // of `pin_init_from_closure`); every field is written below
            // before the entry is reachable by a wake-up.
            let wait = unsafe {
                let wait = Opaque::raw_get(addr_of_mut!((*slot).wait));
                bindings::init_waitqueue_func_entry(wait, Some(Self::wake));
                addr_of_mut!((*slot).ctx).write(ctx);
                addr_of_mut!((*slot).handler).write(handler);
                wait
            };
            let mut queuer = Queuer {
                table: MaybeUninit::zeroed(),
                wait,
                queued: false,
            };
            // SAFETY: The table is ours and `queue` matches its type;
            // `vfs_poll` calls the file's `poll` with it (the file is an
            // eventfd, kept open by `file`), which calls `queue` once with
            // the eventfd's wait queue.
            let events = unsafe {
                bindings::init_poll_funcptr(queuer.table.as_mut_ptr(), Some(Self::queue));
                bindings::vfs_poll(file.0.as_ptr(), queuer.table.as_mut_ptr())
            };
            if !queuer.queued {
                // No wait queue was offered (not an eventfd after all):
                // undo the writes; the slot stays uninitialised.
                // SAFETY: Both fields were written above and nothing else
                // refers to them.
                unsafe {
                    ptr::drop_in_place(addr_of_mut!((*slot).ctx));
                    ptr::drop_in_place(addr_of_mut!((*slot).handler));
                }
                return Err(EINVAL);
            }
            if events & EPOLLIN != 0 {
                // SAFETY: The handler was written above and lives as long
                // as the slot.
                unsafe { (*slot).handler.signalled(0) };
            }
            Ok(())
        };
        // SAFETY: On `Ok` every field of the slot is initialised and the
        // wait entry, which the wait queue now links to, is never moved
        // (the slot is pinned); on `Err` nothing was left initialised and
        // nothing links to the slot.
        unsafe { init::pin_init_from_closure(init) }
    }

    /// The handler.
    pub fn handler(&self) -> &T {
        &self.handler
    }

    /// The eventfd watched.
    pub fn ctx(&self) -> &EventFdCtx {
        &self.ctx
    }

    /// The poll table's queueing function: adds the watch's entry to the
    /// eventfd's wait queue.
    ///
    /// # Safety
    ///
    /// Only called by the eventfd's `poll`, with the table of a live
    /// `Queuer` and the eventfd's wait queue.
    unsafe extern "C" fn queue(
        _file: *mut bindings::file,
        head: *mut bindings::wait_queue_head,
        table: *mut bindings::poll_table_struct,
    ) {
        // SAFETY: `table` is the first field of the `Queuer` that `new`
        // passed to `vfs_poll`, alive for the call; `head` is the
        // eventfd's wait queue, which lives as long as its context, to
        // which the watch holds a reference; the entry was initialised by
        // `new`.
        unsafe {
            let queuer = table.cast::<Queuer>();
            bindings::add_wait_queue(head, (*queuer).wait);
            (*queuer).queued = true;
        }
    }

    /// The wake function of the watch's wait-queue entry.
    ///
    /// # Safety
    ///
    /// Only called by the wait queue, with the entry of a live watch and
    /// the queue's lock held.
    unsafe extern "C" fn wake(
        wait: *mut bindings::wait_queue_entry,
        _mode: c_uint,
        _sync: c_int,
        key: *mut c_void,
    ) -> c_int {
        // SAFETY: The entry is the `wait` field of a live `EventFdWatch`:
        // it is only in the wait queue between `new` and `drop`, and
        // `drop` removes it under the queue's lock, which the caller
        // holds.
        let this = unsafe {
            &*crate::container_of!(
                wait.cast::<Opaque<bindings::wait_queue_entry>>(),
                Self,
                wait
            )
        };
        // For eventfd the key is the poll mask of the event.
        let events = key as usize as u32;
        if events & EPOLLIN != 0 {
            let mut count = 0u64;
            // SAFETY: The caller holds the eventfd's wait-queue lock, as
            // `eventfd_ctx_do_read` requires.
            unsafe { bindings::eventfd_ctx_do_read(this.ctx.0.as_ptr(), &mut count) };
            this.handler.signalled(count);
        }
        if events & EPOLLHUP != 0 {
            this.handler.hung_up();
        }
        0
    }
}

impl<T: EventFdHandler> Drop for EventFdWatch<T> {
    fn drop(&mut self) {
        let mut count = 0u64;
        // SAFETY: The entry was added to this eventfd's wait queue by
        // `new` and is removed only here. The removal takes the queue's
        // lock, so a wake function running on another CPU has finished
        // when it returns, and none starts afterwards. (It also clears a
        // pending count, as KVM's irqfd shutdown does.)
        unsafe {
            bindings::eventfd_ctx_remove_wait_queue(
                self.ctx.0.as_ptr(),
                self.wait.get(),
                &mut count,
            )
        };
    }
}
