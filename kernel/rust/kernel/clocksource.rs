// SPDX-License-Identifier: GPL-2.0

//! Clocksources: counters that timekeeping reads.
//!
//! C header: [`include/linux/clocksource.h`](srctree/include/linux/clocksource.h)
//!
//! A [`Registration`] registers a 64-bit continuous clocksource whose
//! `read` is [`Clocksource::read`]. Timekeeping then picks the registered
//! clocksource with the highest rating (or the one named on the command line
//! or in sysfs) as the current one.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Result},
    pr_err,
    str::CStr,
    types::Opaque,
    ThisModule,
};
use core::pin::Pin;

/// A counter that timekeeping can read.
pub trait Clocksource: Send + Sync {
    /// The current counter value. It runs in any context, NMI included, and
    /// must not sleep or take locks.
    fn read(&self) -> u64;
}

struct Inner<T> {
    cs: Opaque<bindings::clocksource>,
    data: T,
}

/// A registered clocksource. Dropping it unregisters it (timekeeping first
/// switches to another clocksource if this one is current).
pub struct Registration<T: Clocksource> {
    inner: Option<Pin<KBox<Inner<T>>>>,
}

// SAFETY: The C structure is written only before registration and read by
// the clocksource core under its own locking; `T` is `Send + Sync`.
unsafe impl<T: Clocksource> Send for Registration<T> {}
// SAFETY: `&Registration` only gives access to `&T`, and `T` is `Sync`.
unsafe impl<T: Clocksource> Sync for Registration<T> {}

impl<T: Clocksource> Registration<T> {
    /// Registers `data` as the clocksource `name`, counting at `hz`, with
    /// `rating` (see the rating scale in `include/linux/clocksource.h`:
    /// 300-399 fast and accurate, 400-499 ideal).
    ///
    /// While it is the current clocksource, timekeeping holds a reference
    /// on `module`, so the module cannot be unloaded.
    pub fn register(
        name: &'static CStr,
        rating: i32,
        hz: u32,
        module: &'static ThisModule,
        data: T,
    ) -> Result<Self> {
        let inner = KBox::pin(
            Inner {
                cs: Opaque::uninit(),
                data,
            },
            GFP_KERNEL,
        )?;
        let cs = inner.cs.get();
        // SAFETY: `cs` points to the pinned, not yet registered structure;
        // all-zero is a valid starting point (no callbacks, no flags).
        unsafe {
            cs.write_bytes(0, 1);
            (*cs).name = name.as_char_ptr();
            (*cs).rating = rating;
            (*cs).read = Some(Self::read_callback);
            (*cs).mask = u64::MAX;
            (*cs).flags = bindings::CLOCK_SOURCE_IS_CONTINUOUS as _;
            (*cs).owner = module.as_ptr();
        }
        // SAFETY: `cs` is fully set up and stays pinned until it is
        // unregistered in `drop`.
        to_result(unsafe { bindings::clocksource_register_hz(cs, hz) })?;
        Ok(Self { inner: Some(inner) })
    }

    /// The data given to [`Self::register`].
    pub fn data(&self) -> Option<&T> {
        self.inner.as_ref().map(|inner| &inner.data)
    }

    /// # Safety
    ///
    /// Called by timekeeping with a clocksource registered by `register`.
    unsafe extern "C" fn read_callback(cs: *mut bindings::clocksource) -> u64 {
        // SAFETY: `cs` is the `cs` field of a live, pinned `Inner<T>`;
        // `Opaque` has the layout of its content.
        let inner = unsafe { &*crate::container_of!(cs, Inner<T>, cs) };
        inner.data.read()
    }
}

impl<T: Clocksource> Drop for Registration<T> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        // SAFETY: The clocksource was registered in `register`.
        let ret = unsafe { bindings::clocksource_unregister(inner.cs.get()) };
        if ret != 0 {
            // Timekeeping found no other clocksource to switch to and still
            // uses this one: its memory must stay.
            pr_err!("clocksource: unregister failed ({}), leaking it\n", ret);
            core::mem::forget(inner);
        }
    }
}
