// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).
//! Specification: virtio 1.2, section 2 (device status, feature bits,
//! configuration space, virtqueues) and section 3 (initialization and
//! cleanup).
//!
//! A driver implements [`Driver`] and registers it with a [`Registration`].
//! For each matching device the bus calls [`Driver::probe`], which
//! negotiates nothing by hand (the features in [`Driver::FEATURES`] that the
//! device offers are accepted by the core before `probe`), reads the
//! configuration space and finds its virtqueues, and returns the device's
//! driver data. The abstraction then stores that data, sets `DRIVER_OK`
//! (after which the device may use the queues) and calls [`Driver::ready`].
//!
//! Buffers: a [`Virtqueue`] takes ownership of each buffer it is given
//! ([`Virtqueue::add_out`] and friends) and gives it back when the device
//! has used it ([`Virtqueue::get_buf`]), or, once the device is reset, when
//! the queue is dropped. A buffer therefore lives as long as the device may
//! access it, without any `unsafe` in the driver. Used lengths that do not
//! fit the buffer are counted and logged, and clamped.
//!
//! Teardown ([`Driver::remove`], then reset, then the callbacks are
//! synchronized, then the driver data is dropped, then the queues are
//! deleted) guarantees that no callback runs with freed driver data and
//! that no queue is used after it is deleted.

pub mod blk;
#[cfg(CONFIG_NET)]
pub mod net;

use crate::{
    alloc::{flags::GFP_ATOMIC, flags::GFP_KERNEL, KBox, KVec},
    bindings,
    error::{code::*, to_result, Error, Result},
    pr_err, pr_warn,
    prelude::{pin_data, pin_init, PinInit},
    str::CStr,
    sync::{lock::spinlock::SpinLockIrqBackend, SpinLockIrq},
    types::{AsBytes, FromBytes, Opaque},
    ThisModule,
};
use core::{
    ffi::c_void,
    marker::PhantomData,
    mem::size_of,
    pin::Pin,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// An entry of a driver's device table (`struct virtio_device_id`).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches devices of type `device` (a `VIRTIO_ID_*`) from any vendor.
    pub const fn new(device: u32) -> Self {
        // `VIRTIO_DEV_ANY_ID` in `include/linux/mod_devicetable.h`.
        Self(bindings::virtio_device_id {
            device,
            vendor: u32::MAX,
        })
    }

    /// The all-zero entry that ends a table.
    pub const END: Self = Self(bindings::virtio_device_id {
        device: 0,
        vendor: 0,
    });
}

/// A virtio device, as its driver sees it.
///
/// [`ARef<Device>`] keeps the device structure alive (not its binding to
/// the driver: users in work items must stop before [`Driver::remove`]
/// returns).
#[repr(transparent)]
pub struct Device(Opaque<bindings::virtio_device>);

// SAFETY: The embedded `struct device` is reference counted by
// `get_device`/`put_device`, which keep the virtio device allocated.
unsafe impl crate::types::AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: `self` is a live device.
        unsafe { bindings::get_device(&mut (*self.as_raw()).dev) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference taken by `inc_ref`.
        unsafe { bindings::put_device(&mut (*obj.as_ptr().cast::<bindings::virtio_device>()).dev) };
    }
}

// SAFETY: The device's operations may be called from any thread.
unsafe impl Send for Device {}
// SAFETY: As above; configuration access is serialized by the transport.
unsafe impl Sync for Device {}

/// A value in a device's configuration space: a little-endian integer.
pub trait ConfigValue: Copy {
    /// Its size in bytes.
    const SIZE: usize;
    /// The value of the first [`Self::SIZE`] little-endian bytes of `bytes`.
    fn from_le_prefix(bytes: [u8; 8]) -> Self;
}

macro_rules! config_value {
    ($($t:ty),*) => {$(
        impl ConfigValue for $t {
            const SIZE: usize = size_of::<$t>();
            fn from_le_prefix(bytes: [u8; 8]) -> Self {
                // Truncation keeps the low (first) bytes.
                u64::from_le_bytes(bytes) as $t
            }
        }
    )*};
}
config_value!(u8, u16, u32, u64);

impl Device {
    /// # Safety
    ///
    /// `ptr` must point to a live `struct virtio_device` for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper of the C structure, and
        // the caller guarantees that it is live.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// Whether feature bit `bit` was negotiated.
    pub fn has_feature(&self, bit: u32) -> bool {
        // SAFETY: `self` is a live device.
        unsafe { bindings::virtio_has_feature(self.as_raw(), bit) }
    }

    /// The device's index on the virtio bus (`virtio<index>`).
    pub fn index(&self) -> u32 {
        // SAFETY: `self` is a live device; `index` is set before probe.
        unsafe { (*self.as_raw()).index as u32 }
    }

    /// The generic device (for logging and sysfs).
    pub fn as_dev(&self) -> &crate::device::Device {
        // SAFETY: `dev` is embedded in the live virtio device.
        unsafe { crate::device::Device::as_ref(&mut (*self.as_raw()).dev) }
    }

    fn generation(&self) -> u32 {
        // SAFETY: `self` is a live device.
        unsafe { bindings::virtio_config_generation(self.as_raw()) }
    }

    /// Reads `buf.len()` bytes of the configuration space at `offset`, with
    /// the generation counter read before and after so that a configuration
    /// change in the middle is retried (virtio 1.2, 2.5.1). Multi-byte
    /// fields are little endian (virtio 1.2, 2.5).
    pub fn read_config_bytes(&self, offset: usize, buf: &mut [u8]) -> Result {
        let offset = u32::try_from(offset).map_err(|_| EINVAL)?;
        let len = u32::try_from(buf.len()).map_err(|_| EINVAL)?;
        for _ in 0..1000 {
            let before = self.generation();
            // Transports read 1, 2, 4 or 8 bytes per access (PCI's `vp_get`
            // BUG()s on other lengths): fields of other sizes, such as a
            // MAC address, are read byte by byte, as `virtio_cread_bytes`.
            if matches!(len, 1 | 2 | 4 | 8) {
                // SAFETY: `buf` is valid for `len` bytes; `self` is a live
                // device.
                unsafe {
                    bindings::virtio_config_get(self.as_raw(), offset, buf.as_mut_ptr().cast(), len)
                };
            } else {
                for (i, byte) in buf.iter_mut().enumerate() {
                    // SAFETY: `byte` is valid for one byte; `self` is a live
                    // device; `i < len`, so the offset does not overflow.
                    unsafe {
                        bindings::virtio_config_get(
                            self.as_raw(),
                            offset + i as u32,
                            core::ptr::from_mut(byte).cast(),
                            1,
                        )
                    };
                }
            }
            if self.generation() == before {
                return Ok(());
            }
        }
        // The device keeps changing its configuration under us.
        Err(EAGAIN)
    }

    /// Reads the little-endian value of type `T` at `offset` of the
    /// configuration space. Fields of up to 32 bits are read with one
    /// access, which the device must make atomic (virtio 1.2, 2.5.1); wider
    /// ones are read generation-consistently.
    pub fn read_config<T: ConfigValue>(&self, offset: usize) -> Result<T> {
        let mut bytes = [0u8; 8];
        let part = bytes.get_mut(..T::SIZE).ok_or(EINVAL)?;
        if T::SIZE <= 4 {
            let offset = u32::try_from(offset).map_err(|_| EINVAL)?;
            // SAFETY: `part` is valid for `T::SIZE` bytes; `self` is a live
            // device.
            unsafe {
                bindings::virtio_config_get(
                    self.as_raw(),
                    offset,
                    part.as_mut_ptr().cast(),
                    T::SIZE as u32,
                )
            };
        } else {
            self.read_config_bytes(offset, part)?;
        }
        Ok(T::from_le_prefix(bytes))
    }

    /// Writes `value` (little endian) at `offset` of the configuration space.
    pub fn write_config_u32(&self, offset: usize, value: u32) -> Result {
        let offset = u32::try_from(offset).map_err(|_| EINVAL)?;
        let bytes = value.to_le_bytes();
        // SAFETY: `bytes` is valid for 4 bytes; `self` is a live device.
        unsafe { bindings::virtio_config_set(self.as_raw(), offset, bytes.as_ptr().cast(), 4) };
        Ok(())
    }

    /// Sets `DRIVER_OK` during [`Driver::probe`], for drivers that must use
    /// their queues before probe returns (a network device can be opened as
    /// soon as it is registered). Queue callbacks that come before probe
    /// returns do not reach the driver, which must not depend on them.
    pub fn set_driver_ok_in_probe(&self) {
        // SAFETY: `self` is a live device being probed; its queues are set
        // up (the driver found them).
        unsafe { bindings::virtio_device_ready(self.as_raw()) }
    }

    /// Finds the device's virtqueues: one per entry of `names`, in order;
    /// the ones marked `true` in `callbacks` get [`Driver::vq_callback`]
    /// calls with their index.
    pub fn find_vqs<T: Driver>(
        &self,
        names: &[&'static CStr],
        callbacks: &[bool],
    ) -> Result<KVec<VirtqueueHandle>> {
        if names.len() != callbacks.len() || names.is_empty() {
            return Err(EINVAL);
        }
        let n = names.len();
        let mut infos = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut vqs: KVec<*mut bindings::virtqueue> = KVec::with_capacity(n, GFP_KERNEL)?;
        for (name, &callback) in names.iter().zip(callbacks) {
            infos.push(
                bindings::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: if callback {
                        Some(vq_callback::<T>)
                    } else {
                        None
                    },
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
            vqs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        // SAFETY: `vqs` and `infos` hold `n` entries each; the names are
        // static strings.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                self.as_raw(),
                n as u32,
                vqs.as_mut_ptr(),
                infos.as_mut_ptr(),
            )
        })?;
        let mut handles = KVec::with_capacity(n, GFP_KERNEL)?;
        for vq in vqs.iter() {
            let vq = NonNull::new(*vq).ok_or(EINVAL)?;
            handles.push(VirtqueueHandle { vq }, GFP_KERNEL)?;
        }
        Ok(handles)
    }
}

/// A device whose features are being negotiated: what
/// [`Driver::validate`] sees before the features are final.
#[repr(transparent)]
pub struct Negotiating(Device);

impl Negotiating {
    /// Whether feature bit `bit` is in the tentative feature set (offered by
    /// the device and listed in [`Driver::FEATURES`], or a transport bit).
    pub fn has_feature(&self, bit: u32) -> bool {
        self.0.has_feature(bit)
    }

    /// Drops feature bit `bit` from the set to be negotiated (for features
    /// that only work together with others the device did not offer).
    pub fn clear_feature(&self, bit: u32) {
        // SAFETY: `validate` runs before the features are written back to
        // the device; the device is live.
        unsafe { bindings::virtio_clear_feature(self.0.as_raw(), bit) }
    }

    /// Reads the little-endian value of type `T` at `offset` of the
    /// configuration space.
    pub fn read_config<T: ConfigValue>(&self, offset: usize) -> Result<T> {
        self.0.read_config(offset)
    }
}

/// A virtqueue found by [`Device::find_vqs`], to be turned into a
/// [`Virtqueue`] for the type of buffers it will carry.
pub struct VirtqueueHandle {
    vq: NonNull<bindings::virtqueue>,
}

impl VirtqueueHandle {
    /// The queue, carrying buffers of type `B`.
    pub fn into_queue<B: Buffer>(self) -> Virtqueue<B> {
        Virtqueue {
            vq: self.vq,
            in_flight: 0,
            malformed: AtomicU64::new(0),
            _buffers: PhantomData,
        }
    }
}

/// A buffer a virtqueue can carry: device-readable and device-writable
/// bytes in memory the device may access for as long as the queue owns it.
pub trait Buffer: Sized + Send + private::Sealed {}

mod private {
    pub trait Sealed: Sized {
        /// The buffer a virtqueue token stands for.
        ///
        /// # Safety
        ///
        /// `token` must be the token of a buffer of this type given to a
        /// virtqueue, which the queue no longer holds; each token is turned
        /// back once.
        unsafe fn from_token(token: *mut core::ffi::c_void) -> Self;

        /// The device was reset with this buffer still in the queue: it was
        /// never used.
        fn abandon(self) {}
    }
}

impl<T: AsBytes + FromBytes + Send> private::Sealed for KBox<T> {
    unsafe fn from_token(token: *mut c_void) -> Self {
        // SAFETY: The tokens of `KBox<T>` buffers are `KBox::into_raw` of
        // them (see `Virtqueue::add`), per this function's contract.
        unsafe { KBox::from_raw(token.cast()) }
    }
}
/// A kmalloc'd `T` (physically contiguous, so usable for DMA). It must be
/// valid for any bytes the device writes (`FromBytes`) and have no
/// uninitialized bytes to show the device (`AsBytes`).
impl<T: AsBytes + FromBytes + Send> Buffer for KBox<T> {}

/// A new all-zero buffer for a virtqueue, allocated with `flags` (without
/// building it on the stack first, which matters for page-sized buffers).
pub fn zeroed_buffer<T: FromBytes>(flags: crate::alloc::Flags) -> Result<KBox<T>> {
    let buf = KBox::<T>::new_uninit(flags | crate::alloc::flags::__GFP_ZERO)?;
    // SAFETY: `__GFP_ZERO` zeroed the allocation, and all-zero bytes are a
    // valid `T` (`FromBytes`).
    Ok(unsafe { buf.assume_init() })
}

/// A buffer the device has used.
pub struct Used<B> {
    /// The buffer, back in the driver's hands.
    pub buf: B,
    /// How many bytes the device says it wrote, clamped to the buffer.
    pub written: usize,
}

/// A virtqueue carrying buffers of type `B`.
///
/// Its operations need exclusive access (`&mut self`), as the C virtqueue
/// functions require external serialization.
pub struct Virtqueue<B: Buffer> {
    vq: NonNull<bindings::virtqueue>,
    in_flight: usize,
    malformed: AtomicU64,
    _buffers: PhantomData<B>,
}

// SAFETY: The C virtqueue may be used from any thread with external
// serialization, which `&mut self` provides; buffers are `Send`.
unsafe impl<B: Buffer> Send for Virtqueue<B> {}
// SAFETY: `&Virtqueue` only reads counters.
unsafe impl<B: Buffer> Sync for Virtqueue<B> {}

impl<T: AsBytes + FromBytes + Send> Virtqueue<KBox<T>> {
    /// Hands `buf` to the device: its first `readable` bytes
    /// device-readable, the `writable` bytes after them device-writable.
    /// On failure (the queue is full: `ENOSPC`) the buffer comes back with
    /// the error.
    pub fn add(
        &mut self,
        buf: KBox<T>,
        readable: usize,
        writable: usize,
    ) -> core::result::Result<(), (Error, KBox<T>)> {
        let size = size_of::<T>();
        let fits = readable.checked_add(writable).is_some_and(|n| n <= size);
        if !fits || readable + writable == 0 || size > u32::MAX as usize {
            return Err((EINVAL, buf));
        }
        let raw = KBox::into_raw(buf);
        let base = raw.cast::<u8>();
        let sg = [Opaque::<bindings::scatterlist>::uninit(), Opaque::uninit()];
        let mut heads: [*mut bindings::scatterlist; 2] = [core::ptr::null_mut(); 2];
        let mut count = 0usize;
        // `sg[count]` below: at most the two parts above, so `count < 2`.
        let mut out = 0u32;
        let mut inn = 0u32;
        for (start, len, readable_part) in [(0, readable, true), (readable, writable, false)] {
            if len == 0 {
                continue;
            }
            let entry = sg[count].get();
            // SAFETY: `entry` is a local scatterlist; `base + start` is within
            // the buffer, which stays allocated while the queue owns it.
            unsafe {
                bindings::sg_init_table(entry, 1);
                bindings::sg_set_buf(entry, base.add(start).cast(), len as u32);
            }
            heads[count] = entry;
            count += 1;
            if readable_part {
                out += 1;
            } else {
                inn += 1;
            }
        }
        // SAFETY: `heads` holds `out + inn` initialized scatterlists (used
        // only during the call); `raw` identifies the buffer and is turned
        // back into the box exactly once: by `get_buf`, by `drop`, or below.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq.as_ptr(),
                heads.as_mut_ptr(),
                out,
                inn,
                raw.cast(),
                GFP_ATOMIC.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The queue did not take the buffer.
            return Err((Error::from_errno(ret), unsafe { KBox::from_raw(raw) }));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Hands the whole of `buf` to the device as device-readable.
    pub fn add_out(&mut self, buf: KBox<T>) -> core::result::Result<(), (Error, KBox<T>)> {
        self.add(buf, size_of::<T>(), 0)
    }

    /// Hands the whole of `buf` to the device as device-writable.
    pub fn add_in(&mut self, buf: KBox<T>) -> core::result::Result<(), (Error, KBox<T>)> {
        self.add(buf, 0, size_of::<T>())
    }

    /// A buffer the device has used, if any.
    pub fn get_buf(&mut self) -> Option<Used<KBox<T>>> {
        let mut len = 0u32;
        // SAFETY: The queue is live; `len` is a valid output location. The
        // virtio core checks that the id the device returned is one it was
        // given (else it marks the queue broken and returns NULL).
        let token = unsafe { bindings::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        let raw = NonNull::new(token)?;
        self.in_flight = self.in_flight.saturating_sub(1);
        // SAFETY: Every token in this queue is a `KBox<T>` given by `add`,
        // and the queue just gave this one back.
        let buf = unsafe { <KBox<T> as private::Sealed>::from_token(raw.as_ptr()) };
        let mut written = len as usize;
        if written > size_of::<T>() {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            pr_warn!(
                "virtio: used length {} exceeds the {}-byte buffer; clamped\n",
                len,
                size_of::<T>()
            );
            written = size_of::<T>();
        }
        Some(Used { buf, written })
    }
}

impl<B: Buffer> Virtqueue<B> {
    /// Tells the device about new buffers, if it wants to be told.
    pub fn kick(&mut self) -> bool {
        // SAFETY: The queue is live.
        unsafe { bindings::virtqueue_kick(self.vq.as_ptr()) }
    }

    /// Whether the virtio core found the device misbehaving on this queue.
    pub fn is_broken(&self) -> bool {
        // SAFETY: The queue is live.
        unsafe { bindings::virtqueue_is_broken(self.vq.as_ptr()) }
    }

    /// The number of descriptors of the queue's ring.
    pub fn size(&self) -> u32 {
        // SAFETY: The queue is live.
        unsafe { bindings::virtqueue_get_vring_size(self.vq.as_ptr()) }
    }

    /// Asks the device not to interrupt for used buffers (a hint).
    pub fn disable_callbacks(&mut self) {
        // SAFETY: The queue is live.
        unsafe { bindings::virtqueue_disable_cb(self.vq.as_ptr()) }
    }

    /// Asks for interrupts again; `false` if buffers were used meanwhile,
    /// which the caller must then collect (and try again) so none is left
    /// without an interrupt.
    pub fn enable_callbacks(&mut self) -> bool {
        // SAFETY: The queue is live.
        unsafe { bindings::virtqueue_enable_cb(self.vq.as_ptr()) }
    }

    /// Buffers handed to the device and not yet given back.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Used buffers whose length did not fit them.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// A virtqueue behind an interrupt-safe lock, whose device notifications
/// happen after the lock is released (as the C drivers do with
/// `virtqueue_kick_prepare` under their lock and `virtqueue_notify` after
/// it): a notification can be a long exit to the hypervisor, and other
/// CPUs (the completion interrupt) need the lock meanwhile.
#[pin_data]
pub struct LockedQueue<B: Buffer> {
    #[pin]
    queue: SpinLockIrq<Virtqueue<B>>,
    /// The queue inside `queue`, for `virtqueue_notify` without the lock.
    raw: NonNull<bindings::virtqueue>,
}

// SAFETY: `virtqueue_notify` may run concurrently with the queue's other
// operations (which the lock serializes); the rest is the lock's.
unsafe impl<B: Buffer> Send for LockedQueue<B> {}
// SAFETY: As above.
unsafe impl<B: Buffer> Sync for LockedQueue<B> {}

impl<B: Buffer> LockedQueue<B> {
    /// Puts `queue` behind the lock.
    pub fn new(queue: Virtqueue<B>) -> impl PinInit<Self> {
        let raw = queue.vq;
        pin_init!(Self {
            queue <- crate::new_spinlock_irq!(queue, "virtio::LockedQueue"),
            raw,
        })
    }

    /// The locked queue.
    pub fn lock(&self) -> crate::sync::lock::Guard<'_, Virtqueue<B>, SpinLockIrqBackend> {
        self.queue.lock()
    }

    /// Runs `f` on the locked queue; when `f` asks for it (`true` in its
    /// result), notifies the device of new buffers, after unlocking.
    pub fn with_kick<R>(&self, f: impl FnOnce(&mut Virtqueue<B>) -> (R, bool)) -> R {
        let (result, notify) = {
            let mut queue = self.queue.lock();
            let (result, kick) = f(&mut queue);
            // SAFETY: The queue is live and locked.
            (
                result,
                kick && unsafe { bindings::virtqueue_kick_prepare(self.raw.as_ptr()) },
            )
        };
        if notify {
            // SAFETY: The queue lives as long as `self` (it is inside it);
            // notifying needs no lock.
            unsafe { bindings::virtqueue_notify(self.raw.as_ptr()) };
        }
        result
    }
}

impl<B: Buffer> Drop for Virtqueue<B> {
    fn drop(&mut self) {
        // The driver data (and with it this queue) is dropped after the
        // device is reset and before the queues are deleted (see `remove`),
        // or, on a failed probe, before `DRIVER_OK`: the device no longer
        // uses the buffers, which can be taken back.
        loop {
            // SAFETY: The queue is live and the device does not use it.
            let token = unsafe { bindings::virtqueue_detach_unused_buf(self.vq.as_ptr()) };
            if token.is_null() {
                break;
            }
            // SAFETY: Every token in this queue is a buffer `B` given to the
            // queue, and the queue just gave this one up.
            unsafe { B::from_token(token) }.abandon();
        }
    }
}

/// A virtio driver.
pub trait Driver: Send + Sync + Sized + 'static {
    /// The driver's name.
    const NAME: &'static CStr;
    /// The devices it drives; the last entry must be [`DeviceId::END`].
    const ID_TABLE: &'static [DeviceId];
    /// The feature bits it knows (accepted when the device offers them).
    const FEATURES: &'static [u32];

    /// Adjusts the features before they are final, e.g. drops a feature
    /// that needs another the device did not offer.
    fn validate(_dev: &Negotiating) -> Result {
        Ok(())
    }

    /// Sets up a new device: read the configuration, find the queues. The
    /// device may not use the queues yet.
    fn probe(dev: &Device) -> Result<KBox<Self>>;

    /// The device is live: `DRIVER_OK` is set and callbacks reach `self`.
    fn ready(&self, _dev: &Device) -> Result {
        Ok(())
    }

    /// The device goes away; the queues still work (the device is reset
    /// right after).
    fn remove(&self, _dev: &Device) {}

    /// The device used buffers of queue `index` (hard interrupt context:
    /// only wake up or queue work here).
    fn vq_callback(&self, _index: u32) {}

    /// The device changed its configuration (possibly interrupt context).
    fn config_changed(&self, _dev: &Device) {}

    /// The system suspends (PM sleep).
    fn freeze(&self, _dev: &Device) -> Result {
        Err(EOPNOTSUPP)
    }

    /// The system resumes (PM sleep).
    fn restore(&self, _dev: &Device) -> Result {
        Err(EOPNOTSUPP)
    }
}

/// # Safety
///
/// `dev` must be a live device bound to driver `T`.
unsafe fn driver_data<'a, T: Driver>(dev: *mut bindings::virtio_device) -> Option<&'a T> {
    // SAFETY: `priv_` is NULL or the `T` stored by `probe_callback`, freed
    // only after it is reset to NULL and the callbacks synchronized.
    let data = unsafe { (*dev).priv_ } as *const T;
    // SAFETY: As above.
    unsafe { data.as_ref() }
}

/// The callback of every queue found by [`Device::find_vqs`] for `T`.
///
/// # Safety
///
/// Called by the virtio core with a live queue of a device bound to `T`.
unsafe extern "C" fn vq_callback<T: Driver>(vq: *mut bindings::virtqueue) {
    // SAFETY: The virtio core calls this with a live queue of a live device.
    let (dev, index) = unsafe { ((*vq).vdev, (*vq).index) };
    // SAFETY: The device is bound to `T` (the callback was set up by
    // `find_vqs::<T>`).
    if let Some(data) = unsafe { driver_data::<T>(dev) } {
        data.vq_callback(index);
    }
}

/// A registered virtio driver; dropping it unregisters it (removing it from
/// every device it drives).
pub struct Registration<T: Driver> {
    drv: Pin<KBox<Opaque<bindings::virtio_driver>>>,
    _driver: PhantomData<T>,
}

// SAFETY: The C structure is only used by the driver core, under its locks.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `&Registration` allows nothing.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers driver `T` for module `module`.
    pub fn register(module: &'static ThisModule) -> Result<Self> {
        if !matches!(T::ID_TABLE.last(), Some(last) if last.0.device == 0) {
            pr_err!(
                "virtio: {:?}: the id table must end with DeviceId::END\n",
                T::NAME
            );
            return Err(EINVAL);
        }
        let drv = KBox::pin(Opaque::<bindings::virtio_driver>::uninit(), GFP_KERNEL)?;
        let raw = drv.get();
        // SAFETY: `raw` points to the pinned, not yet registered structure;
        // all-zero is a valid start. The tables are `'static`.
        unsafe {
            raw.write_bytes(0, 1);
            (*raw).driver.name = T::NAME.as_char_ptr();
            (*raw).id_table = T::ID_TABLE.as_ptr().cast();
            (*raw).feature_table = T::FEATURES.as_ptr();
            (*raw).feature_table_size = T::FEATURES.len() as u32;
            (*raw).validate = Some(validate_callback::<T>);
            (*raw).probe = Some(probe_callback::<T>);
            (*raw).remove = Some(remove_callback::<T>);
            (*raw).config_changed = Some(config_changed_callback::<T>);
            (*raw).freeze = Some(freeze_callback::<T>);
            (*raw).restore = Some(restore_callback::<T>);
        }
        // SAFETY: `raw` is fully set up and stays pinned until unregistered.
        to_result(unsafe { bindings::__register_virtio_driver(raw, module.as_ptr()) })?;
        Ok(Self {
            drv,
            _driver: PhantomData,
        })
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: The driver was registered in `register`.
        unsafe { bindings::unregister_virtio_driver(self.drv.get()) };
    }
}

/// Resets the device, detaches the driver data and waits until no callback
/// can still see it, then drops it and deletes the queues.
///
/// # Safety
///
/// `vdev` must be a live device whose driver data is `data` (or none).
unsafe fn teardown<T: Driver>(vdev: *mut bindings::virtio_device, data: Option<KBox<T>>) {
    // SAFETY: `vdev` is live.
    unsafe {
        bindings::virtio_reset_device(vdev);
        (*vdev).priv_ = core::ptr::null_mut();
        bindings::virtio_synchronize_cbs(vdev);
    }
    // The queues in the driver data take their buffers back here.
    drop(data);
    // SAFETY: `vdev` is live; its queues are no longer referenced.
    unsafe {
        if bindings::virtio_has_vqs(vdev) {
            bindings::virtio_del_vqs(vdev);
        }
    }
}

/// `validate` of the driver.
///
/// # Safety
///
/// Called by the virtio bus with a live device that matched `T`, before its
/// features are final.
unsafe extern "C" fn validate_callback<T: Driver>(
    vdev: *mut bindings::virtio_device,
) -> core::ffi::c_int {
    // SAFETY: The bus calls `validate` with a live device; `Negotiating` is a
    // transparent wrapper of `Device`, itself one of the C structure.
    let dev = unsafe { &*vdev.cast::<Negotiating>() };
    match T::validate(dev) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `probe` of the driver.
///
/// # Safety
///
/// Called by the virtio bus with a live device that matched `T`.
unsafe extern "C" fn probe_callback<T: Driver>(
    vdev: *mut bindings::virtio_device,
) -> core::ffi::c_int {
    // SAFETY: The bus calls `probe` with a live device.
    let dev = unsafe { Device::from_raw(vdev) };
    let data = match T::probe(dev) {
        Ok(data) => data,
        Err(e) => {
            // SAFETY: No driver data was stored.
            unsafe { teardown::<T>(vdev, None) };
            return e.to_errno();
        }
    };
    let raw = KBox::into_raw(data);
    // SAFETY: `raw` is the driver data, freed by `teardown`; then the
    // device may use its queues (virtio 1.2, 3.1.1 step 8).
    unsafe {
        (*vdev).priv_ = raw.cast();
        if !bindings::virtio_driver_ok(vdev) {
            bindings::virtio_device_ready(vdev);
        }
    }
    // SAFETY: `raw` was just stored and is only freed by `teardown`.
    let data = unsafe { &*raw };
    if let Err(e) = data.ready(dev) {
        // SAFETY: `raw` is the driver data of `vdev`, turned back once.
        unsafe { teardown::<T>(vdev, Some(KBox::from_raw(raw))) };
        return e.to_errno();
    }
    0
}

/// `remove` of the driver.
///
/// # Safety
///
/// Called by the virtio bus with a live device bound to `T`.
unsafe extern "C" fn remove_callback<T: Driver>(vdev: *mut bindings::virtio_device) {
    // SAFETY: The bus calls `remove` with a live, bound device.
    let dev = unsafe { Device::from_raw(vdev) };
    // SAFETY: As above.
    let raw = unsafe { (*vdev).priv_ } as *mut T;
    if raw.is_null() {
        return;
    }
    // SAFETY: `raw` is the driver data stored by `probe_callback`.
    unsafe { (*raw).remove(dev) };
    // SAFETY: `raw` is turned back into its box exactly once, here.
    unsafe { teardown::<T>(vdev, Some(KBox::from_raw(raw))) };
}

/// `config_changed` of the driver.
///
/// # Safety
///
/// Called by the virtio core with a live device bound to `T`.
unsafe extern "C" fn config_changed_callback<T: Driver>(vdev: *mut bindings::virtio_device) {
    // SAFETY: The core calls this with a live, bound device.
    if let Some(data) = unsafe { driver_data::<T>(vdev) } {
        // SAFETY: As above.
        data.config_changed(unsafe { Device::from_raw(vdev) });
    }
}

/// `freeze` of the driver.
///
/// # Safety
///
/// Called by the virtio core with a live device bound to `T`.
unsafe extern "C" fn freeze_callback<T: Driver>(
    vdev: *mut bindings::virtio_device,
) -> core::ffi::c_int {
    // SAFETY: The core calls this with a live, bound device.
    match unsafe { driver_data::<T>(vdev) } {
        // SAFETY: As above.
        Some(data) => match data.freeze(unsafe { Device::from_raw(vdev) }) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => 0,
    }
}

/// `restore` of the driver.
///
/// # Safety
///
/// Called by the virtio core with a live device bound to `T`.
unsafe extern "C" fn restore_callback<T: Driver>(
    vdev: *mut bindings::virtio_device,
) -> core::ffi::c_int {
    // SAFETY: The core calls this with a live, bound device.
    match unsafe { driver_data::<T>(vdev) } {
        // SAFETY: As above.
        Some(data) => match data.restore(unsafe { Device::from_raw(vdev) }) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => 0,
    }
}
