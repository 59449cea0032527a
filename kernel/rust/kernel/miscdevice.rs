// SPDX-License-Identifier: GPL-2.0

//! Misc devices: a character device with a dynamic minor under `/dev`,
//! whose file operations come from a Rust trait.
//!
//! The shape is the one upstream Rust-for-Linux gave this abstraction in
//! Linux 6.13 (`MiscDevice`, `MiscDeviceOptions`,
//! `MiscDeviceRegistration::register` returning a pin-initializer), with
//! two additions upstream made later or not at all: `open` receives data
//! kept by the registration (`RegistrationData`), and the operations name
//! the calling module as their owner, so that open files keep it loaded.
//! Files opened on the device share the plumbing of [`crate::file_ops`].
//!
//! C headers: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

use crate::{
    bindings,
    error::{to_result, Error, Result},
    file_ops::{self, FileOps, FileOpsTable},
    init,
    prelude::*,
    str::CStr,
    types::Opaque,
    ThisModule,
};
use core::ffi::c_int;

/// What a misc device is called and how it is created.
#[derive(Copy, Clone)]
pub struct MiscDeviceOptions {
    /// The device's name: `/dev/<name>`.
    pub name: &'static CStr,
}

/// A misc device: `open` makes the per-file data, the rest of the file
/// operations are those of [`FileOps`].
pub trait MiscDevice: FileOps {
    /// Data the registration keeps for `open` (a driver's shared state).
    type RegistrationData: Send + Sync;

    /// Called for each `open(2)` of the device; the result lives as the
    /// file's private data until the last reference to the file is gone.
    fn open(data: &Self::RegistrationData) -> Result<Self::Ptr>;
}

/// A registered misc device; dropping it removes the device.
///
/// # Invariants
///
/// `inner` is a `struct miscdevice` registered with `misc_register`, whose
/// operations are `fops`, from the end of `register`'s initializer until
/// `drop`.
#[pin_data(PinnedDrop)]
pub struct MiscDeviceRegistration<T: MiscDevice> {
    data: T::RegistrationData,
    fops: FileOpsTable<T>,
    #[pin]
    inner: Opaque<bindings::miscdevice>,
}

// SAFETY: The registration is only touched by `misc_register` and
// `misc_deregister`, which lock internally; it can be dropped from any
// thread.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> {}
// SAFETY: `&MiscDeviceRegistration` allows no access to the device.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers the device described by `opts`; `module` (the caller's
    /// `THIS_MODULE`) stays loaded while a file of the device is open, and
    /// `data` is what each `open` is given.
    pub fn register(
        opts: MiscDeviceOptions,
        module: &'static ThisModule,
        data: T::RegistrationData,
    ) -> impl PinInit<Self, Error> {
        let fops = FileOpsTable::<T>::new(module, Some(Self::open_trampoline));
        // The table is boxed: its address stays the same when `fops` moves
        // into the registration below.
        let raw_fops = fops.as_ref().map_or(core::ptr::null(), |f| f.as_raw());
        let init_misc = move |slot: *mut Opaque<bindings::miscdevice>| -> Result {
            let misc = Opaque::raw_get(slot);
            // SAFETY: `misc` is valid for writes (the slot being
            // initialized); all-zeroes is a valid `miscdevice`; the name is
            // static and the table lives as long as the registration.
            unsafe {
                misc.write(core::mem::zeroed());
                (*misc).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                (*misc).name = opts.name.as_char_ptr();
                (*misc).fops = raw_fops;
            }
            // SAFETY: The device is set up and pinned (this is a
            // pin-initializer); `drop` deregisters it.
            to_result(unsafe { bindings::misc_register(misc) })
        };
        try_pin_init!(Self {
            data,
            fops: fops?,
            // SAFETY: `init_misc` initializes the slot completely, or fails
            // without registering anything.
            inner <- unsafe { init::pin_init_from_closure(init_misc) },
        }? Error)
    }

    /// `open` of the file operations: replaces the private data that
    /// `misc_open` set (the `struct miscdevice`) with `T::open`'s result.
    ///
    /// # Safety
    ///
    /// Called by the VFS with a valid inode and a file being opened.
    unsafe extern "C" fn open_trampoline(
        _inode: *mut bindings::inode,
        file: *mut bindings::file,
    ) -> c_int {
        // SAFETY: `misc_open` set the private data to the `miscdevice` of
        // the registration being opened, which stays registered (so alive)
        // during the call: deregistration takes the lock `misc_open` holds.
        let registration = unsafe {
            let misc = (*file).private_data.cast::<Opaque<bindings::miscdevice>>();
            &*crate::container_of!(misc, Self, inner)
        };
        match T::open(&registration.data) {
            Ok(data) => {
                // SAFETY: The file is being opened and not yet shared, and
                // its operations are `fops`, whose `release` takes the data
                // back.
                unsafe { file_ops::set_private::<T>(file, data) };
                0
            }
            Err(e) => e.to_errno(),
        }
    }
}

#[pinned_drop]
impl<T: MiscDevice> PinnedDrop for MiscDeviceRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the device is registered.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}
