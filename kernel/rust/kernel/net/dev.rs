// SPDX-License-Identifier: GPL-2.0

//! Ethernet network devices, NAPI and socket buffers.
//!
//! C headers: [`include/linux/netdevice.h`](srctree/include/linux/netdevice.h),
//! [`include/linux/etherdevice.h`](srctree/include/linux/etherdevice.h),
//! [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h). See also
//! `Documentation/networking/netdevices.rst` (locking of the callbacks) and
//! `Documentation/networking/napi.rst`.
//!
//! A driver implements [`Operations`] for its device data `T` and creates a
//! [`Registration`], which allocates the `net_device` with one NAPI context
//! per queue pair, and registers it. The callbacks get `&T`, the device and,
//! for [`Operations::poll`], the [`Napi`] being polled. NAPI contexts are
//! enabled before [`Operations::open`] and scheduled once after it, and
//! disabled (waiting for a running poll) after [`Operations::stop`]. Dropping the registration unregisters
//! the device (stopping it first if it is up) and frees it.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    bindings, device,
    error::{code::*, from_result, to_result, Result},
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::{ForeignOwnable, Opaque},
};
use core::{ffi::c_void, marker::PhantomData, pin::Pin, ptr::NonNull};

/// The length of an Ethernet address.
pub const ETH_ALEN: usize = bindings::ETH_ALEN as usize;

/// An owned socket buffer (`struct sk_buff`).
pub struct SkBuff(NonNull<bindings::sk_buff>);

// SAFETY: An owned skb may be handed to and freed on any CPU.
unsafe impl Send for SkBuff {}

impl SkBuff {
    /// # Safety
    ///
    /// `skb` must be a valid skb whose ownership is transferred.
    pub(crate) unsafe fn from_raw(skb: *mut bindings::sk_buff) -> Option<Self> {
        NonNull::new(skb).map(Self)
    }

    /// Gives up ownership (to C code that takes it).
    pub(crate) fn into_raw(self) -> *mut bindings::sk_buff {
        let raw = self.0.as_ptr();
        core::mem::forget(self);
        raw
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::sk_buff {
        self.0.as_ptr()
    }

    /// The number of bytes of the packet.
    pub fn len(&self) -> u32 {
        // SAFETY: `self` owns a valid skb.
        unsafe { (*self.as_raw()).len }
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` to the linear part; `EMSGSIZE` if it does not fit.
    pub fn put_data(&mut self, data: &[u8]) -> Result {
        let len = u32::try_from(data.len()).map_err(|_| EMSGSIZE)?;
        // SAFETY: `self` owns a valid skb.
        if unsafe { bindings::skb_tailroom(self.as_raw()) } < len {
            return Err(EMSGSIZE);
        }
        // SAFETY: The tail room holds `len` more bytes; `data` is valid.
        unsafe { bindings::skb_put_data(self.as_raw(), data.as_ptr().cast(), len) };
        Ok(())
    }

    /// The transmit queue the stack chose for the packet.
    pub fn queue_mapping(&self) -> u16 {
        // SAFETY: `self` owns a valid skb.
        unsafe { bindings::skb_get_queue_mapping(self.as_raw()) }
    }
}

impl Drop for SkBuff {
    fn drop(&mut self) {
        // SAFETY: `self` owns the skb; `dev_kfree_skb_any` works in any
        // context.
        unsafe { bindings::dev_kfree_skb_any(self.as_raw()) };
    }
}

/// A network device, as its driver sees it in callbacks.
#[repr(transparent)]
pub struct NetDev(Opaque<bindings::net_device>);

// SAFETY: The methods are safe to call concurrently (the C functions use
// atomic bit operations or their own locks).
unsafe impl Sync for NetDev {}
// SAFETY: As above.
unsafe impl Send for NetDev {}

impl NetDev {
    /// # Safety
    ///
    /// `ptr` must be a live `net_device` for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::net_device) -> &'a Self {
        // SAFETY: Transparent wrapper; live per the safety requirements.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut bindings::net_device {
        self.0.get()
    }

    /// Tells the stack the link is up.
    pub fn carrier_on(&self) {
        // SAFETY: `self` is live.
        unsafe { bindings::netif_carrier_on(self.as_raw()) }
    }

    /// Tells the stack the link is down.
    pub fn carrier_off(&self) {
        // SAFETY: `self` is live.
        unsafe { bindings::netif_carrier_off(self.as_raw()) }
    }

    /// Whether the link is up.
    pub fn carrier_ok(&self) -> bool {
        // SAFETY: `self` is live.
        unsafe { bindings::netif_carrier_ok(self.as_raw()) }
    }

    /// Stops the stack from handing packets to transmit queue `queue`.
    pub fn stop_queue(&self, queue: u16) {
        // SAFETY: `self` is live; out-of-range queues are checked below.
        if u32::from(queue) < unsafe { (*self.as_raw()).real_num_tx_queues } {
            // SAFETY: `queue` is a valid transmit queue of `self`.
            unsafe { bindings::netif_stop_subqueue(self.as_raw(), queue) }
        }
    }

    /// Lets the stack hand packets to transmit queue `queue` again.
    pub fn wake_queue(&self, queue: u16) {
        // SAFETY: `self` is live.
        if u32::from(queue) < unsafe { (*self.as_raw()).real_num_tx_queues } {
            // SAFETY: `queue` is a valid transmit queue of `self`.
            unsafe { bindings::netif_wake_subqueue(self.as_raw(), queue) }
        }
    }

    /// Whether transmit queue `queue` is stopped.
    pub fn queue_stopped(&self, queue: u16) -> bool {
        // SAFETY: `self` is live.
        if u32::from(queue) < unsafe { (*self.as_raw()).real_num_tx_queues } {
            // SAFETY: `queue` is a valid transmit queue of `self`.
            unsafe { bindings::netif_subqueue_stopped(self.as_raw(), queue) }
        } else {
            true
        }
    }

    /// Whether the stack is about to hand over more packets right after
    /// this one (from [`Operations::start_xmit`]): the driver may then
    /// delay telling the device.
    pub fn xmit_more(&self) -> bool {
        // SAFETY: Reads this CPU's transmit state; called in `start_xmit`
        // (bottom halves off).
        unsafe { bindings::netdev_xmit_more() }
    }

    /// The current MTU.
    pub fn mtu(&self) -> u32 {
        // SAFETY: `self` is live; the field is read once.
        unsafe { core::ptr::addr_of!((*self.as_raw()).mtu).read_volatile() }
    }

    /// Whether the interface is in promiscuous mode.
    pub fn is_promiscuous(&self) -> bool {
        // SAFETY: `self` is live.
        unsafe { (*self.as_raw()).flags & bindings::net_device_flags_IFF_PROMISC != 0 }
    }

    /// Whether the interface receives all multicast.
    pub fn is_allmulti(&self) -> bool {
        // SAFETY: `self` is live.
        unsafe { (*self.as_raw()).flags & bindings::net_device_flags_IFF_ALLMULTI != 0 }
    }

    /// The device's current MAC address.
    pub fn mac(&self) -> [u8; ETH_ALEN] {
        let mut mac = [0u8; ETH_ALEN];
        // SAFETY: `self` is live and has an `ETH_ALEN`-byte address.
        unsafe {
            core::ptr::copy_nonoverlapping((*self.as_raw()).dev_addr, mac.as_mut_ptr(), ETH_ALEN)
        };
        mac
    }
}

/// The device's address lists, as [`Operations::set_rx_mode`] sees them
/// (with the device's address list lock held).
pub struct RxFilter<'a> {
    dev: &'a NetDev,
}

impl RxFilter<'_> {
    /// Calls `f` with each address of `list` (`uc` or `mc` of the device).
    ///
    /// # Safety
    ///
    /// `list` must be an address list of the device, with the device's
    /// address lock held.
    unsafe fn each(list: *mut bindings::netdev_hw_addr_list, mut f: impl FnMut(&[u8; ETH_ALEN])) {
        // SAFETY: Per the safety requirements the list is stable; each
        // entry is a `netdev_hw_addr` linked by `list`, whose address holds
        // at least `ETH_ALEN` bytes on an Ethernet device.
        unsafe {
            let head = core::ptr::addr_of_mut!((*list).list);
            let mut node = (*head).next;
            while node != head {
                let entry = crate::container_of!(node, bindings::netdev_hw_addr, list);
                let mut mac = [0u8; ETH_ALEN];
                core::ptr::copy_nonoverlapping((*entry).addr.as_ptr(), mac.as_mut_ptr(), ETH_ALEN);
                f(&mac);
                node = (*node).next;
            }
        }
    }

    /// Calls `f` with each secondary unicast address.
    pub fn for_each_unicast(&self, f: impl FnMut(&[u8; ETH_ALEN])) {
        // SAFETY: `set_rx_mode` runs with the address lock held, and `self`
        // exists only during it.
        unsafe { Self::each(core::ptr::addr_of_mut!((*self.dev.as_raw()).uc), f) }
    }

    /// Calls `f` with each multicast address.
    pub fn for_each_multicast(&self, f: impl FnMut(&[u8; ETH_ALEN])) {
        // SAFETY: As above.
        unsafe { Self::each(core::ptr::addr_of_mut!((*self.dev.as_raw()).mc), f) }
    }
}

/// Writes into a fixed buffer, dropping what does not fit.
struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The counters of [`Operations::get_stats64`].
#[derive(Default, Clone, Copy, Debug)]
pub struct Stats64 {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Receive errors (malformed input from the device).
    pub rx_errors: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// A NAPI context of a [`Registration`].
#[repr(C)]
pub struct Napi {
    /// First, so that the `napi_struct` pointer NAPI passes to the poll
    /// callback is also a pointer to the whole.
    napi: Opaque<bindings::napi_struct>,
    index: u32,
}

// SAFETY: NAPI functions synchronize through the NAPI state bits.
unsafe impl Sync for Napi {}
// SAFETY: As above.
unsafe impl Send for Napi {}

impl Napi {
    /// The index of the context (the queue pair it serves).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Schedules a poll (any context, typically a queue interrupt).
    pub fn schedule(&self) {
        // SAFETY: The context was added to its device by `Registration::new`
        // and is deleted only after the device is unregistered.
        unsafe { bindings::napi_schedule(self.napi.get()) }
    }

    /// Ends a poll that did `done` (< budget) units of work. `false` if the
    /// poll must continue (it was rescheduled meanwhile, or busy polled).
    pub fn complete_done(&self, done: i32) -> bool {
        // SAFETY: Called from the poll callback of this context.
        unsafe { bindings::napi_complete_done(self.napi.get(), done) }
    }

    /// Allocates a receive skb for `len` bytes of packet.
    pub fn alloc_skb(&self, len: u32) -> Option<SkBuff> {
        // SAFETY: The context is live; `napi_alloc_skb` returns an owned
        // skb or NULL.
        unsafe { SkBuff::from_raw(bindings::napi_alloc_skb(self.napi.get(), len)) }
    }

    /// Hands a received Ethernet frame to the stack (GRO), from the poll
    /// callback.
    pub fn receive(&self, dev: &NetDev, skb: SkBuff) {
        let raw = skb.into_raw();
        // SAFETY: `raw` is an owned skb with the frame in its linear part;
        // `eth_type_trans` sets its device and protocol; the stack takes
        // ownership in `napi_gro_receive`.
        unsafe {
            bindings::skb_record_rx_queue(raw, self.index as u16);
            bindings::skb_set_eth_protocol(raw, dev.as_raw());
            bindings::napi_gro_receive(self.napi.get(), raw);
        }
    }
}

/// A network driver's callbacks. `T` is its per-device data.
#[macros::vtable]
pub trait Operations: Send + Sync + Sized + 'static {
    /// The driver's name (ethtool driver info).
    const DRIVER_NAME: &'static CStr;

    /// The interface goes up (NAPI is enabled already).
    fn open(&self, dev: &NetDev) -> Result;

    /// The interface goes down (NAPI is disabled after this returns).
    fn stop(&self, dev: &NetDev) -> Result;

    /// Transmits `skb` (dropping it counts as transmitted). Called in
    /// softirq context with the queue's lock held.
    fn start_xmit(&self, dev: &NetDev, skb: SkBuff);

    /// Polls NAPI context `napi` with `budget`; returns the work done. When
    /// the work done is less than the budget, the driver must call
    /// [`Napi::complete_done`].
    fn poll(&self, dev: &NetDev, napi: &Napi, budget: i32) -> i32;

    /// The device's counters.
    fn get_stats64(&self, dev: &NetDev, stats: &mut Stats64);

    /// Sets a new, valid, unicast MAC address (the stack shows it once this
    /// returns `Ok`).
    fn set_mac_address(&self, _dev: &NetDev, _mac: &[u8; ETH_ALEN]) -> Result {
        Ok(())
    }

    /// Changes the MTU (the stack checked it against the device's range; it
    /// takes it once this returns `Ok`).
    fn change_mtu(&self, _dev: &NetDev, _mtu: u32) -> Result {
        Ok(())
    }

    /// The receive filter (promiscuous, all-multicast, addresses) changed.
    /// Atomic context: defer device commands to a work item.
    fn set_rx_mode(&self, _dev: &NetDev, _filter: &RxFilter<'_>) {}

    /// How many ethtool statistics the driver has.
    fn ethtool_stats_count(&self) -> usize {
        0
    }

    /// Writes the name of ethtool statistic `index` (< 32 bytes are kept).
    fn ethtool_stat_name(&self, _index: usize, _out: &mut dyn core::fmt::Write) {}

    /// The ethtool statistics, in the order of their names.
    fn ethtool_stats(&self, _values: &mut [u64]) {}
}

/// The driver data, from a device's private area.
///
/// # Safety
///
/// `dev` must be a device of a live [`Registration<T>`]; the borrow must not
/// outlive the callback it is used in.
unsafe fn data<'a, T: Operations>(dev: *mut bindings::net_device) -> ArcBorrow<'a, T> {
    // SAFETY: The private area holds the `Arc<T>` foreign pointer, set
    // before registration and turned back after unregistration.
    unsafe {
        let slot = bindings::netdev_priv(dev).cast::<*const c_void>();
        <Arc<T> as ForeignOwnable>::borrow(*slot)
    }
}

/// A registered Ethernet device with driver data `T`.
pub struct Registration<T: Operations> {
    dev: NonNull<bindings::net_device>,
    napis: KVec<Pin<KBox<Napi>>>,
    data: *const c_void,
    registered: bool,
    _p: PhantomData<T>,
}

// SAFETY: The device may be used and unregistered from any thread.
unsafe impl<T: Operations> Send for Registration<T> {}
// SAFETY: `&Registration` gives `&NetDev` and `&Napi`, both `Sync`.
unsafe impl<T: Operations> Sync for Registration<T> {}

/// How a new device looks: address, MTU range, offloads.
pub struct Config {
    /// The MAC address (a random one if it is not a valid unicast one).
    pub mac: [u8; ETH_ALEN],
    /// The initial MTU.
    pub mtu: u32,
    /// The smallest MTU.
    pub min_mtu: u32,
    /// The largest MTU.
    pub max_mtu: u32,
    /// Queue pairs (transmit queues, receive queues, NAPI contexts).
    pub queue_pairs: u32,
    /// Scatter-gather transmit.
    pub sg: bool,
    /// Checksum offload on transmit.
    pub tx_csum: bool,
    /// Checksum validation on receive.
    pub rx_csum: bool,
    /// TCP segmentation offload for IPv4 and IPv6.
    pub tso4: bool,
    /// As above, IPv6.
    pub tso6: bool,
    /// As above, with ECN.
    pub tso_ecn: bool,
}

impl<T: Operations> Registration<T> {
    /// Allocates, sets up and registers an Ethernet device under `parent`.
    pub fn new(parent: &device::Device, config: &Config, data: Arc<T>) -> Result<Self> {
        if config.queue_pairs == 0 || config.min_mtu > config.max_mtu {
            return Err(EINVAL);
        }
        // SAFETY: Allocates a device with a private area for one pointer.
        let raw = unsafe {
            bindings::alloc_etherdev_mqs(
                core::mem::size_of::<*const c_void>() as i32,
                config.queue_pairs,
                config.queue_pairs,
            )
        };
        let dev = NonNull::new(raw).ok_or(ENOMEM)?;
        let foreign = data.into_foreign();
        let mut this = Self {
            dev,
            napis: KVec::new(),
            data: foreign,
            registered: false,
            _p: PhantomData,
        };
        let mut features: bindings::netdev_features_t = bindings::NETIF_F_HIGHDMA;
        if config.sg {
            features |= bindings::NETIF_F_SG;
        }
        if config.tx_csum {
            features |= bindings::NETIF_F_HW_CSUM;
        }
        if config.rx_csum {
            features |= bindings::NETIF_F_RXCSUM;
        }
        if config.tx_csum && config.sg {
            if config.tso4 {
                features |= bindings::NETIF_F_TSO;
            }
            if config.tso6 {
                features |= bindings::NETIF_F_TSO6;
            }
            if config.tso_ecn {
                features |= bindings::NETIF_F_TSO_ECN;
            }
        }
        // SAFETY: `raw` is a new, unregistered device; its private area holds
        // a pointer; `parent` is live (the device core takes a reference
        // when the device is registered).
        unsafe {
            bindings::netdev_priv(raw)
                .cast::<*const c_void>()
                .write(foreign);
            (*raw).netdev_ops = &OpsTable::<T>::NETDEV_OPS;
            (*raw).ethtool_ops = &OpsTable::<T>::ETHTOOL_OPS;
            (*raw).dev.parent = parent.as_raw();
            (*raw).min_mtu = config.min_mtu;
            (*raw).max_mtu = config.max_mtu;
            (*raw).mtu = config.mtu.clamp(config.min_mtu, config.max_mtu);
            (*raw).hw_features = features;
            (*raw).features = features;
            if bindings::is_valid_ether_addr(config.mac.as_ptr()) {
                bindings::eth_hw_addr_set(raw, config.mac.as_ptr());
            } else {
                bindings::eth_hw_addr_random(raw);
            }
        }
        for index in 0..config.queue_pairs {
            let napi = KBox::pin(
                Napi {
                    napi: Opaque::uninit(),
                    index,
                },
                GFP_KERNEL,
            )?;
            // SAFETY: The NAPI structure is pinned and zeroed here before
            // `netif_napi_add` initializes it; it is deleted in `drop`.
            unsafe {
                napi.napi.get().write_bytes(0, 1);
                bindings::netif_napi_add(raw, napi.napi.get(), Some(poll_callback::<T>));
            }
            this.napis.push(napi, GFP_KERNEL)?;
        }
        // SAFETY: `raw` is set up; the link starts down until the driver
        // says otherwise.
        unsafe { bindings::netif_carrier_off(raw) };
        // SAFETY: `raw` is a fully set up device; on failure `drop` frees it
        // (unregistering only what was registered).
        to_result(unsafe { bindings::register_netdev(raw) })?;
        this.registered = true;
        Ok(this)
    }

    /// The device.
    pub fn dev(&self) -> &NetDev {
        // SAFETY: The device lives as long as `self`.
        unsafe { NetDev::from_raw(self.dev.as_ptr()) }
    }

    /// The NAPI context of queue pair `index`.
    pub fn napi(&self, index: u32) -> Option<&Napi> {
        self.napis
            .get(index as usize)
            .map(|napi| napi.as_ref().get_ref())
    }
}

impl<T: Operations> Drop for Registration<T> {
    fn drop(&mut self) {
        let raw = self.dev.as_ptr();
        if self.registered {
            // SAFETY: The device was registered by `new`; this stops it (and
            // disables NAPI through `ndo_stop`) if it is up.
            unsafe { bindings::unregister_netdev(raw) };
        }
        for napi in self.napis.iter() {
            // SAFETY: The context was added by `new` and is not scheduled:
            // the device is down or was never registered.
            unsafe { bindings::__netif_napi_del(napi.napi.get()) };
        }
        // SAFETY: `__netif_napi_del` defers freeing to an RCU grace period;
        // wait for it before the NAPI structures are freed with `self`.
        unsafe { bindings::synchronize_net() };
        // SAFETY: The device is unregistered (or never was); nothing uses it.
        unsafe { bindings::free_netdev(raw) };
        // SAFETY: `data` came from `into_foreign` in `new`; no callback can
        // run any more.
        drop(unsafe { Arc::<T>::from_foreign(self.data) });
    }
}

/// The C callback tables of driver `T`.
struct OpsTable<T: Operations>(PhantomData<T>);

impl<T: Operations> OpsTable<T> {
    const NETDEV_OPS: bindings::net_device_ops = bindings::net_device_ops {
        ndo_open: Some(Self::open),
        ndo_stop: Some(Self::stop),
        ndo_start_xmit: Some(Self::start_xmit),
        ndo_get_stats64: Some(Self::get_stats64),
        ndo_set_mac_address: Some(Self::set_mac_address),
        ndo_change_mtu: Some(Self::change_mtu),
        ndo_set_rx_mode: Some(Self::set_rx_mode),
        ndo_validate_addr: Some(bindings::eth_validate_addr),
        // SAFETY: All-zero is a valid `net_device_ops` (no callback).
        ..unsafe { core::mem::zeroed() }
    };

    const ETHTOOL_OPS: bindings::ethtool_ops = bindings::ethtool_ops {
        get_drvinfo: Some(Self::get_drvinfo),
        get_link: Some(bindings::ethtool_op_get_link),
        get_sset_count: Some(Self::get_sset_count),
        get_strings: Some(Self::get_strings),
        get_ethtool_stats: Some(Self::get_ethtool_stats),
        // SAFETY: All-zero is a valid `ethtool_ops` (no callback).
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// Called by the stack with a live device of a `Registration<T>`.
    unsafe extern "C" fn open(dev: *mut bindings::net_device) -> core::ffi::c_int {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        from_result(|| {
            // SAFETY: The NAPI contexts of the device were added by
            // `Registration::new` (the private area is followed by nothing
            // else; the contexts are reached through the list of the device).
            unsafe { for_each_napi(dev, |napi| bindings::napi_enable(napi)) };
            if let Err(e) = data.open(netdev) {
                // SAFETY: As above; enabled just now.
                unsafe { for_each_napi(dev, |napi| bindings::napi_disable(napi)) };
                return Err(e);
            }
            // One poll at once: completions and packets that came while the
            // interface was down raised no interrupt that NAPI saw.
            // SAFETY: As above; enabled just now.
            unsafe { for_each_napi(dev, |napi| bindings::napi_schedule(napi)) };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the stack with a live device of a `Registration<T>`.
    unsafe extern "C" fn stop(dev: *mut bindings::net_device) -> core::ffi::c_int {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        let result = data.stop(netdev);
        // SAFETY: The contexts were enabled by `open`; this waits for a
        // running poll.
        unsafe { for_each_napi(dev, |napi| bindings::napi_disable(napi)) };
        match result {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the stack with an owned skb and a live device of a
    /// `Registration<T>`.
    unsafe extern "C" fn start_xmit(
        skb: *mut bindings::sk_buff,
        dev: *mut bindings::net_device,
    ) -> bindings::netdev_tx_t {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        // SAFETY: The stack hands over ownership of `skb`.
        if let Some(skb) = unsafe { SkBuff::from_raw(skb) } {
            data.start_xmit(netdev, skb);
        }
        bindings::netdev_tx_NETDEV_TX_OK
    }

    /// # Safety
    ///
    /// Called by the stack with a live device of a `Registration<T>` and a
    /// valid statistics structure.
    unsafe extern "C" fn get_stats64(
        dev: *mut bindings::net_device,
        out: *mut bindings::rtnl_link_stats64,
    ) {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        let mut stats = Stats64::default();
        data.get_stats64(netdev, &mut stats);
        // SAFETY: `out` is valid for writes.
        unsafe {
            (*out).rx_packets = stats.rx_packets;
            (*out).rx_bytes = stats.rx_bytes;
            (*out).rx_dropped = stats.rx_dropped;
            (*out).rx_errors = stats.rx_errors;
            (*out).tx_packets = stats.tx_packets;
            (*out).tx_bytes = stats.tx_bytes;
            (*out).tx_dropped = stats.tx_dropped;
            (*out).tx_errors = stats.tx_errors;
        }
    }

    /// # Safety
    ///
    /// Called by the stack (under RTNL) with a live device of a
    /// `Registration<T>` and a `struct sockaddr`.
    unsafe extern "C" fn set_mac_address(
        dev: *mut bindings::net_device,
        addr: *mut c_void,
    ) -> core::ffi::c_int {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        let mut mac = [0u8; ETH_ALEN];
        // SAFETY: `addr` is a `struct sockaddr` whose data holds at least
        // `ETH_ALEN` bytes.
        unsafe {
            let data = bindings::sockaddr_data(addr.cast::<bindings::sockaddr>());
            core::ptr::copy_nonoverlapping(data, mac.as_mut_ptr(), ETH_ALEN);
        }
        from_result(|| {
            // SAFETY: `mac` holds `ETH_ALEN` bytes.
            if !unsafe { bindings::is_valid_ether_addr(mac.as_ptr()) } {
                return Err(EADDRNOTAVAIL);
            }
            data.set_mac_address(netdev, &mac)?;
            // SAFETY: Under RTNL, as `eth_mac_addr` does.
            unsafe { bindings::eth_hw_addr_set(dev, mac.as_ptr()) };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the stack (under RTNL) with a live device of a
    /// `Registration<T>`; `mtu` is within its range.
    unsafe extern "C" fn change_mtu(
        dev: *mut bindings::net_device,
        mtu: core::ffi::c_int,
    ) -> core::ffi::c_int {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        from_result(|| {
            let mtu = u32::try_from(mtu).map_err(|_| EINVAL)?;
            data.change_mtu(netdev, mtu)?;
            // SAFETY: Under RTNL; readers use `READ_ONCE`.
            unsafe { core::ptr::addr_of_mut!((*dev).mtu).write_volatile(mtu) };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the stack with a live device of a `Registration<T>`.
    unsafe extern "C" fn set_rx_mode(dev: *mut bindings::net_device) {
        // SAFETY: Per the safety requirements.
        let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
        // The stack holds the address lock around `ndo_set_rx_mode`.
        data.set_rx_mode(netdev, &RxFilter { dev: netdev });
    }

    /// # Safety
    ///
    /// Called by ethtool with a live device of a `Registration<T>`.
    unsafe extern "C" fn get_drvinfo(
        dev: *mut bindings::net_device,
        info: *mut bindings::ethtool_drvinfo,
    ) {
        let name = T::DRIVER_NAME.as_bytes();
        // SAFETY: `info` is valid for writes and zeroed by ethtool; the
        // copies leave a NUL at the end of each field; the parent device
        // is live while the net device is registered.
        unsafe {
            let driver = &mut (*info).driver;
            let len = name.len().min(driver.len() - 1);
            core::ptr::copy_nonoverlapping(name.as_ptr(), driver.as_mut_ptr().cast::<u8>(), len);
            let bus = CStr::from_char_ptr(bindings::netdev_parent_name(dev)).as_bytes();
            let slot = &mut (*info).bus_info;
            let len = bus.len().min(slot.len() - 1);
            core::ptr::copy_nonoverlapping(bus.as_ptr(), slot.as_mut_ptr().cast::<u8>(), len);
        }
    }

    /// # Safety
    ///
    /// Called by ethtool with a live device of a `Registration<T>`.
    unsafe extern "C" fn get_sset_count(
        dev: *mut bindings::net_device,
        set: core::ffi::c_int,
    ) -> core::ffi::c_int {
        if set != bindings::ethtool_stringset_ETH_SS_STATS as core::ffi::c_int {
            return EOPNOTSUPP.to_errno();
        }
        // SAFETY: Per the safety requirements.
        let data = unsafe { data::<T>(dev) };
        data.ethtool_stats_count() as core::ffi::c_int
    }

    /// # Safety
    ///
    /// Called by ethtool with a live device of a `Registration<T>` and room
    /// for `get_sset_count` strings of `ETH_GSTRING_LEN` bytes.
    unsafe extern "C" fn get_strings(dev: *mut bindings::net_device, set: u32, buf: *mut u8) {
        if set != bindings::ethtool_stringset_ETH_SS_STATS {
            return;
        }
        // SAFETY: Per the safety requirements.
        let data = unsafe { data::<T>(dev) };
        let width = bindings::ETH_GSTRING_LEN as usize;
        for i in 0..data.ethtool_stats_count() {
            // SAFETY: Slot `i` of `width` bytes is within the buffer (see the
            // safety requirements).
            let slot = unsafe { core::slice::from_raw_parts_mut(buf.add(i * width), width) };
            slot.fill(0);
            // The last byte stays NUL.
            let mut writer = Truncating {
                buf: &mut slot[..width - 1],
                len: 0,
            };
            data.ethtool_stat_name(i, &mut writer);
        }
    }

    /// # Safety
    ///
    /// Called by ethtool with a live device of a `Registration<T>` and room
    /// for `get_sset_count` values.
    unsafe extern "C" fn get_ethtool_stats(
        dev: *mut bindings::net_device,
        _stats: *mut bindings::ethtool_stats,
        values: *mut u64,
    ) {
        // SAFETY: Per the safety requirements.
        let data = unsafe { data::<T>(dev) };
        let count = data.ethtool_stats_count();
        // SAFETY: `values` has room for `count` values (the count ethtool
        // got from `get_sset_count`).
        let values = unsafe { core::slice::from_raw_parts_mut(values, count) };
        values.fill(0);
        data.ethtool_stats(values);
    }
}

/// Calls `f` on each NAPI context of `dev`.
///
/// # Safety
///
/// `dev` must be a live device; `f` must be valid for its contexts.
unsafe fn for_each_napi(dev: *mut bindings::net_device, f: impl Fn(*mut bindings::napi_struct)) {
    // SAFETY: `napi_list` links the `dev_list` members of the device's
    // contexts; the list does not change while the device is up or going
    // up or down (contexts are added before registration).
    unsafe {
        let head = core::ptr::addr_of_mut!((*dev).napi_list);
        let mut node = (*head).next;
        while node != head {
            let napi = crate::container_of!(node, bindings::napi_struct, dev_list).cast_mut();
            f(napi);
            node = (*node).next;
        }
    }
}

/// The NAPI poll callback of driver `T`.
///
/// # Safety
///
/// Called by NAPI with a context added by a `Registration<T>`.
unsafe extern "C" fn poll_callback<T: Operations>(
    napi: *mut bindings::napi_struct,
    budget: core::ffi::c_int,
) -> core::ffi::c_int {
    // SAFETY: The context is the first field of a live `Napi`; its device
    // is a live device of a `Registration<T>`.
    let (ctx, dev) = unsafe { (&*napi.cast::<Napi>(), (*napi).dev) };
    // SAFETY: As above.
    let (data, netdev) = unsafe { (data::<T>(dev), NetDev::from_raw(dev)) };
    data.poll(netdev, ctx, budget)
}
