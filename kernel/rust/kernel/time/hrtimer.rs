// SPDX-License-Identifier: GPL-2.0

//! Intrusive high-resolution timers.
//!
//! C header: [`include/linux/hrtimer.h`](srctree/include/linux/hrtimer.h).
//!
//! A [`HrTimer<T>`] is a field of a `T` that lives in an [`Arc`]; `T`
//! names the field with [`impl_has_hr_timer!`] and says what expiry does
//! by implementing [`HrTimerCallback`]. Starting the timer
//! ([`HrTimerPointer::start`] on an `Arc<T>`) moves one reference into the
//! returned [`ArcHrTimerHandle`]: the object stays alive while the timer is
//! armed, and dropping the handle cancels the timer (waiting for a running
//! callback) before it gives the reference up.
//!
//! This follows the shape upstream Rust-for-Linux gave the abstraction in
//! Linux 6.15 (`kernel::time::hrtimer`: `HrTimer`, `HrTimerCallback`,
//! `HrTimerPointer`, `HasHrTimer`, `impl_has_hr_timer!`), reduced to what
//! 6.12 callers need: `Arc` pointers, the monotonic clock and absolute
//! expiry times.
//!
//! # Examples
//!
//! ```ignore
//! #[pin_data]
//! struct Deadline {
//!     #[pin]
//!     timer: HrTimer<Deadline>,
//!     fired: AtomicBool,
//! }
//! impl_has_hr_timer! { impl HasHrTimer<Self> for Deadline { self.timer } }
//! impl HrTimerCallback for Deadline {
//!     fn run(this: ArcBorrow<'_, Self>) -> HrTimerRestart {
//!         this.fired.store(true, Ordering::Release);
//!         HrTimerRestart::NoRestart
//!     }
//! }
//! let deadline = Arc::pin_init(pin_init!(Deadline {
//!     timer <- HrTimer::new(HrTimerMode::Absolute),
//!     fired: AtomicBool::new(false),
//! }), GFP_KERNEL)?;
//! let handle = deadline.clone().start(Ktime::from_raw(Ktime::ktime_get().to_ns() + 1_000_000));
//! drop(handle); // cancels it again
//! ```

use crate::{
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::Ktime,
    types::Opaque,
};
use core::marker::PhantomData;

/// What the timer does after its callback returned. Only `NoRestart` for
/// now: a periodic user re-arms with [`HrTimerPointer::start`] (6.15's
/// `Restart` needs the expiry-forwarding calls, which nothing here uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HrTimerRestart {
    /// The timer is not restarted.
    NoRestart,
}

impl HrTimerRestart {
    fn into_c(self) -> bindings::hrtimer_restart {
        match self {
            Self::NoRestart => bindings::hrtimer_restart_HRTIMER_NORESTART,
        }
    }
}

/// How the expiry time is read and where the callback runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HrTimerMode {
    /// An absolute `CLOCK_MONOTONIC` time; the callback runs in hard
    /// interrupt context (also on PREEMPT_RT).
    Absolute,
    /// As [`HrTimerMode::Absolute`], on the CPU that started the timer.
    AbsolutePinned,
}

impl HrTimerMode {
    fn into_c(self) -> bindings::hrtimer_mode {
        match self {
            Self::Absolute => bindings::hrtimer_mode_HRTIMER_MODE_ABS_HARD,
            Self::AbsolutePinned => bindings::hrtimer_mode_HRTIMER_MODE_ABS_PINNED_HARD,
        }
    }
}

/// A `struct hrtimer` embedded in a `T`.
///
/// # Invariants
///
/// `timer` was initialised by `hrtimer_init` with the callback
/// [`run_arc::<T>`] and the mode in `mode`.
#[pin_data]
#[repr(C)]
pub struct HrTimer<T> {
    #[pin]
    timer: Opaque<bindings::hrtimer>,
    mode: HrTimerMode,
    _t: PhantomData<T>,
}

// SAFETY: The timer is only touched through the hrtimer API, which
// serialises with its own base lock; `T` decides its own thread safety.
unsafe impl<T> Send for HrTimer<T> {}
// SAFETY: As above.
unsafe impl<T> Sync for HrTimer<T> {}

impl<T> HrTimer<T> {
    /// An initialiser of a stopped timer whose expiry runs `T`'s
    /// [`HrTimerCallback::run`].
    pub fn new(mode: HrTimerMode) -> impl PinInit<Self>
    where
        T: HrTimerCallback + HasHrTimer<T>,
    {
        pin_init!(Self {
            // SAFETY: `place` is valid, pinned memory for a `struct hrtimer`;
            // `hrtimer_init` initialises all of it.
            timer <- Opaque::ffi_init(move |place: *mut bindings::hrtimer| unsafe {
                bindings::hrtimer_init(place, bindings::CLOCK_MONOTONIC as _, mode.into_c());
                (*place).function = Some(run_arc::<T>);
            }),
            mode,
            _t: PhantomData,
        })
    }

    /// Cancels the timer, waiting for its callback if it is running;
    /// returns whether it was armed.
    ///
    /// # Safety
    ///
    /// `this` points to a live, initialised `HrTimer<T>`, and the caller
    /// is not that timer's callback.
    unsafe fn raw_cancel(this: *const Self) -> bool {
        // SAFETY: Per the requirements, the timer is initialised and alive.
        unsafe {
            bindings::hrtimer_cancel(Opaque::raw_get(core::ptr::addr_of!((*this).timer))) != 0
        }
    }
}

/// What a timer's expiry does.
pub trait HrTimerCallback: Sized {
    /// Runs when the timer expires, in hard interrupt context: it must not
    /// sleep, and must not drop the handle of its own timer.
    fn run(this: ArcBorrow<'_, Self>) -> HrTimerRestart;
}

/// Implemented by types with an [`HrTimer<T>`] field; use
/// [`impl_has_hr_timer!`].
///
/// # Safety
///
/// `OFFSET` is the byte offset of a field of type `HrTimer<T>` in `Self`.
pub unsafe trait HasHrTimer<T>: Sized {
    /// The offset of the `HrTimer<T>` field.
    const OFFSET: usize;

    /// The timer field of `*this`.
    ///
    /// # Safety
    ///
    /// `this` points into a live `Self`.
    unsafe fn raw_get_timer(this: *const Self) -> *const HrTimer<T> {
        // SAFETY: Per the trait's contract the field is at `OFFSET` within
        // the object `this` points into.
        unsafe { this.cast::<u8>().add(Self::OFFSET).cast() }
    }

    /// The `Self` whose timer field `timer` is.
    ///
    /// # Safety
    ///
    /// `timer` points to the `HrTimer<T>` field of a live `Self`.
    unsafe fn timer_container_of(timer: *const HrTimer<T>) -> *const Self {
        // SAFETY: Per the trait's contract the field is `OFFSET` bytes into
        // the containing object.
        unsafe { timer.cast::<u8>().sub(Self::OFFSET).cast() }
    }
}

/// Implements [`HasHrTimer`] for a type from the name of its timer field.
#[macro_export]
macro_rules! impl_has_hr_timer {
    (impl HasHrTimer<$timer_type:ty> for $self:ty { self.$field:ident }) => {
        // SAFETY: `offset_of!` gives the offset of the named field, whose
        // type the compiler checks to be `HrTimer<$timer_type>` below.
        unsafe impl $crate::time::hrtimer::HasHrTimer<$timer_type> for $self {
            const OFFSET: usize = {
                #[allow(dead_code)]
                fn check(this: &$self) -> &$crate::time::hrtimer::HrTimer<$timer_type> {
                    &this.$field
                }
                ::core::mem::offset_of!(Self, $field)
            };
        }
    };
}

/// A pointer type that can own an armed timer.
pub trait HrTimerPointer: Sized {
    /// What keeps the timer's object alive while it is armed and cancels
    /// the timer when dropped.
    type TimerHandle;

    /// Arms the timer to expire at `expires` (replacing an earlier
    /// expiry time if it was armed).
    fn start(self, expires: Ktime) -> Self::TimerHandle;
}

/// An armed (or expired) timer of an `Arc<T>`: holds a reference, and
/// cancels the timer when dropped.
pub struct ArcHrTimerHandle<T: HasHrTimer<T>> {
    inner: Arc<T>,
}

impl<T: HasHrTimer<T>> ArcHrTimerHandle<T> {
    /// Cancels the timer; returns whether it was armed.
    pub fn cancel(&mut self) -> bool {
        let this: *const T = &*self.inner;
        // SAFETY: `this` points into the live `T` the handle keeps alive,
        // whose timer was initialised by `HrTimer::new`.
        unsafe { HrTimer::<T>::raw_cancel(T::raw_get_timer(this)) }
    }
}

impl<T: HasHrTimer<T>> Drop for ArcHrTimerHandle<T> {
    fn drop(&mut self) {
        // The callback may use the object until it returns: cancel (and
        // wait) before the reference goes.
        self.cancel();
    }
}

impl<T: HasHrTimer<T> + HrTimerCallback> HrTimerPointer for Arc<T> {
    type TimerHandle = ArcHrTimerHandle<T>;

    fn start(self, expires: Ktime) -> ArcHrTimerHandle<T> {
        let this: *const T = &*self;
        // SAFETY: `this` points into the live `T` that `self` keeps alive.
        let timer = unsafe { T::raw_get_timer(this) };
        // SAFETY: The timer was initialised by `HrTimer::new` (the type
        // invariant) and stays alive while the handle holds `self`; the
        // handle cancels it before giving the reference up.
        unsafe {
            bindings::hrtimer_start_range_ns(
                Opaque::raw_get(core::ptr::addr_of!((*timer).timer)),
                expires.to_ns(),
                0,
                (*timer).mode.into_c(),
            )
        };
        ArcHrTimerHandle { inner: self }
    }
}

/// The C callback of every `HrTimer<T>`.
///
/// # Safety
///
/// `ptr` is the `struct hrtimer` of an `HrTimer<T>` field of a `T` that an
/// [`ArcHrTimerHandle`] keeps alive (it cancels the timer before letting
/// the reference go).
unsafe extern "C" fn run_arc<T: HasHrTimer<T> + HrTimerCallback>(
    ptr: *mut bindings::hrtimer,
) -> bindings::hrtimer_restart {
    // `Opaque<hrtimer>` is the first field of the `repr(C)` `HrTimer<T>`.
    let timer = ptr.cast::<HrTimer<T>>().cast_const();
    // SAFETY: Per the function's requirements, `timer` is the timer field
    // of a live `T`.
    let this = unsafe { T::timer_container_of(timer) };
    // SAFETY: The `T` is alive and owned by an `Arc` (the handle's) for
    // the whole callback, which does not outlive it.
    let borrow = unsafe { ArcBorrow::from_raw(this) };
    T::run(borrow).into_c()
}
