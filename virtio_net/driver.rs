// SPDX-License-Identifier: GPL-2.0

//! The virtio-net device: configuration, receive and transmit queues,
//! NAPI, link state, control queue (virtio 1.2, 5.1).

use core::{
    mem::offset_of,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use kernel::{
    alloc::{
        flags::{GFP_ATOMIC, GFP_KERNEL},
        KBox, KVec,
    },
    c_str, cpu,
    net::dev::{self, NetDev, Registration, RxFilter, SkBuff, Stats64, ETH_ALEN},
    new_condvar, new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    sync::{Arc, CondVar, Mutex, SpinLockIrq},
    time::msecs_to_jiffies,
    types::ARef,
    virtio::{
        self,
        net::{apply_rx_header, HEADER_BYTES},
        Device, DeviceId, Negotiating, Virtqueue,
    },
    workqueue::{self, impl_has_work, Work, WorkItem},
};

use crate::abi::{
    virtio::{VIRTIO_F_VERSION_1, VIRTIO_ID_NET},
    virtio_net::*,
};

/// Bytes of one receive buffer (header included, for the first buffer of
/// a packet).
const RX_BUFFER_BYTES: usize = 4096;
type RxBuffer = [u8; RX_BUFFER_BYTES];
/// Buffers of one received packet at most: 64 KiB of TSO data plus
/// headers, in 4 KiB buffers.
const MAX_BUFFERS_PER_PACKET: usize = 18;
/// Ethernet header plus a VLAN tag: frame bytes beyond the MTU.
const ETH_OVERHEAD: u32 = 18;
/// The largest MTU the device may announce (`VIRTIO_NET_F_MTU`) or the
/// driver accepts.
const MAX_MTU: u32 = 65535;
/// Transmit descriptors needed for the largest packet (header, linear
/// part, page fragments): below this, the queue is stopped.
const TX_STOP_THRESHOLD: u32 = 2 + 17;
/// Control commands wait this long for the device.
const CTRL_TIMEOUT_MS: u32 = 2000;
const CTRL_POLL_MS: u32 = 10;
/// Log lines about misbehaving devices at most.
const MAX_COMPLAINTS: u64 = 20;

/// Queue pairs used at most (one per vCPU up to this).
const MAX_PAIRS: usize = 8;
/// Queue pairs a device may have at most: all its queues are found (the
/// control queue comes after them), the ones beyond the used pairs idle.
const MAX_DEVICE_PAIRS: u16 = 64;
const RX_NAMES: [&CStr; MAX_PAIRS] = [
    c_str!("input.0"),
    c_str!("input.1"),
    c_str!("input.2"),
    c_str!("input.3"),
    c_str!("input.4"),
    c_str!("input.5"),
    c_str!("input.6"),
    c_str!("input.7"),
];
const TX_NAMES: [&CStr; MAX_PAIRS] = [
    c_str!("output.0"),
    c_str!("output.1"),
    c_str!("output.2"),
    c_str!("output.3"),
    c_str!("output.4"),
    c_str!("output.5"),
    c_str!("output.6"),
    c_str!("output.7"),
];

/// A control command: class, command, data, then the device's ack byte.
type CtrlBuffer = [u8; 512];
/// Addresses per list in the MAC filter table (both lists fit one
/// [`CtrlBuffer`]); with more, the driver asks for promiscuous or
/// all-multicast receive instead.
const MAC_TABLE_ENTRIES: usize = 40;

/// The filter table the stack wants (`VIRTIO_NET_CTRL_MAC_TABLE_SET`).
struct MacTable {
    unicast: [[u8; ETH_ALEN]; MAC_TABLE_ENTRIES],
    unicast_len: usize,
    multicast: [[u8; ETH_ALEN]; MAC_TABLE_ENTRIES],
    multicast_len: usize,
}

impl MacTable {
    const fn new() -> Self {
        Self {
            unicast: [[0; ETH_ALEN]; MAC_TABLE_ENTRIES],
            unicast_len: 0,
            multicast: [[0; ETH_ALEN]; MAC_TABLE_ENTRIES],
            multicast_len: 0,
        }
    }

    /// The command data: two `struct virtio_net_ctrl_mac` (a 32-bit
    /// count, then the addresses), unicast then multicast (virtio 1.2,
    /// 5.1.6.5.2).
    fn encode(&self, out: &mut KVec<u8>) -> Result {
        for (list, len) in [
            (&self.unicast, self.unicast_len),
            (&self.multicast, self.multicast_len),
        ] {
            out.extend_from_slice(&(len as u32).to_le_bytes(), GFP_KERNEL)?;
            for mac in list.iter().take(len) {
                out.extend_from_slice(mac, GFP_KERNEL)?;
            }
        }
        Ok(())
    }
}

/// Per-queue counters, shown by ethtool.
#[derive(Default)]
struct QueueStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    rx_errors: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    tx_errors: AtomicU64,
    tx_stopped: AtomicU64,
}

/// The per-queue statistics, as ethtool names them after `rx<N>_` or
/// `tx<N>_`.
const STAT_NAMES: [(&str, &str); 9] = [
    ("rx", "packets"),
    ("rx", "bytes"),
    ("rx", "dropped"),
    ("rx", "errors"),
    ("tx", "packets"),
    ("tx", "bytes"),
    ("tx", "dropped"),
    ("tx", "errors"),
    ("tx", "stopped"),
];

impl QueueStats {
    fn values(&self) -> [&AtomicU64; STAT_NAMES.len()] {
        [
            &self.rx_packets,
            &self.rx_bytes,
            &self.rx_dropped,
            &self.rx_errors,
            &self.tx_packets,
            &self.tx_bytes,
            &self.tx_dropped,
            &self.tx_errors,
            &self.tx_stopped,
        ]
    }
}

/// One receive and one transmit queue, served by one NAPI context.
#[pin_data]
struct QueuePair {
    #[pin]
    rx: SpinLockIrq<Virtqueue<KBox<RxBuffer>>>,
    #[pin]
    tx: SpinLockIrq<Virtqueue<SkBuff>>,
    stats: QueueStats,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Per-device state: the network driver's data.
#[pin_data]
pub struct Inner {
    vdev: ARef<Device>,
    pairs: KVec<Pin<KBox<QueuePair>>>,
    /// The index of the control queue among the device's queues.
    ctrl_index: u32,
    #[pin]
    ctrl: Mutex<Option<Virtqueue<KBox<CtrlBuffer>>>>,
    #[pin]
    ctrl_acked: CondVar,
    mergeable: bool,
    has_status: bool,
    complaints: AtomicU64,
    /// The receive filter wanted by the stack (set in atomic context,
    /// applied by `rx_mode_work`).
    want_promisc: AtomicBool,
    want_allmulti: AtomicBool,
    #[pin]
    want_table: SpinLockIrq<MacTable>,
    stopping: AtomicBool,
    #[pin]
    rx_mode_work: Work<Inner, 0>,
    #[pin]
    link_work: Work<Inner, 1>,
    /// The network device, once registered (for the link work item).
    #[pin]
    netdev: Mutex<Option<SharedRegistration>>,
}

/// The network device's driver data: the device state, shared with the
/// work items.
pub struct NetOps {
    inner: Arc<Inner>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Inner { self.rx_mode_work }
    impl HasWork<Self, 1> for Inner { self.link_work }
}

impl WorkItem<0> for Inner {
    type Pointer = Arc<Inner>;

    fn run(this: Arc<Inner>) {
        this.apply_rx_mode();
    }
}

impl WorkItem<1> for Inner {
    type Pointer = Arc<Inner>;

    fn run(this: Arc<Inner>) {
        if let Some(reg) = this.netdev.lock().as_ref() {
            this.update_link(reg.dev());
        }
    }
}

impl Inner {
    /// A counter summed over the queue pairs.
    fn total(&self, counter: fn(&QueueStats) -> &AtomicU64) -> u64 {
        let pairs = self.pairs.iter();
        pairs
            .map(|p| counter(&p.stats).load(Ordering::Relaxed))
            .sum()
    }

    fn complain(&self, what: core::fmt::Arguments<'_>) {
        if self.complaints.fetch_add(1, Ordering::Relaxed) < MAX_COMPLAINTS {
            pr_warn!("pvrs: virtio_net: {}\n", what);
        }
    }

    /// Posts new receive buffers until the ring is full, then notifies the
    /// device if it got any buffers: these, or ones the caller `reposted`.
    fn fill_rx(
        &self,
        vq: &mut Virtqueue<KBox<RxBuffer>>,
        flags: kernel::alloc::Flags,
        reposted: bool,
    ) {
        let mut posted = reposted;
        while vq.free_descriptors() > 0 {
            let Ok(buf) = virtio::zeroed_buffer::<RxBuffer>(flags) else {
                break;
            };
            if vq.add_in(buf).is_err() {
                break;
            }
            posted = true;
        }
        if posted {
            vq.kick();
        }
    }

    /// Reads the link state from the device (`VIRTIO_NET_F_STATUS`).
    fn update_link(&self, dev: &NetDev) {
        let up = if self.has_status {
            match self
                .vdev
                .read_config::<u16>(offset_of!(VirtioNetConfig, status))
            {
                Ok(status) => status & VIRTIO_NET_S_LINK_UP != 0,
                Err(_) => true,
            }
        } else {
            true
        };
        if up != dev.carrier_ok() {
            for queue in 0..self.pairs.len() as u16 {
                if up {
                    dev.wake_queue(queue);
                } else {
                    dev.stop_queue(queue);
                }
            }
            if up {
                dev.carrier_on();
            } else {
                dev.carrier_off();
            }
            pr_info!(
                "pvrs: virtio_net: link {}\n",
                if up { "up" } else { "down" }
            );
        }
    }

    /// Receives up to `budget` packets.
    fn receive(&self, pair: &QueuePair, dev: &NetDev, napi: &dev::Napi, budget: i32) -> i32 {
        let mut done = 0;
        let mut vq = pair.rx.lock();
        while done < budget {
            let Some(first) = vq.get_buf() else {
                break;
            };
            done += 1;
            let len = first.written;
            if len < HEADER_BYTES {
                bump(&pair.stats.rx_errors, 1);
                self.complain(format_args!("short receive buffer ({} bytes)", len));
                let _ = vq.add_in(first.buf);
                continue;
            }
            let mut header = [0u8; HEADER_BYTES];
            header.copy_from_slice(&first.buf[..HEADER_BYTES]);
            let buffers = if self.mergeable {
                usize::from(u16::from_le_bytes([header[10], header[11]]))
            } else {
                1
            };
            if buffers == 0 || buffers > MAX_BUFFERS_PER_PACKET {
                bump(&pair.stats.rx_errors, 1);
                self.complain(format_args!("packet in {} buffers refused", buffers));
                // The rest of the packet cannot be found reliably; its
                // buffers arrive as (bad) packets and are dropped the same.
                let _ = vq.add_in(first.buf);
                continue;
            }
            // Gather the packet's buffers; all go back to the ring.
            let mut parts = [const { None }; MAX_BUFFERS_PER_PACKET];
            let mut total = len - HEADER_BYTES;
            parts[0] = Some(first);
            let mut complete = true;
            for slot in parts.iter_mut().take(buffers).skip(1) {
                match vq.get_buf() {
                    Some(used) => {
                        total += used.written;
                        *slot = Some(used);
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            let skb = if complete {
                self.build_skb(pair, napi, &parts[..buffers], total, &header)
            } else {
                bump(&pair.stats.rx_errors, 1);
                self.complain(format_args!(
                    "packet announced {} buffers, fewer used",
                    buffers
                ));
                None
            };
            for used in parts.into_iter().flatten() {
                let _ = vq.add_in(used.buf);
            }
            if let Some(skb) = skb {
                bump(&pair.stats.rx_packets, 1);
                bump(&pair.stats.rx_bytes, u64::from(skb.len()));
                napi.receive(dev, skb);
            }
        }
        // Buffers that could not be reposted above are replaced here; the
        // used ones went back to the ring (`done > 0`).
        self.fill_rx(&mut vq, GFP_ATOMIC, done > 0);
        done
    }

    fn build_skb(
        &self,
        pair: &QueuePair,
        napi: &dev::Napi,
        parts: &[Option<virtio::Used<KBox<RxBuffer>>>],
        total: usize,
        header: &[u8; HEADER_BYTES],
    ) -> Option<SkBuff> {
        let Ok(total32) = u32::try_from(total) else {
            bump(&pair.stats.rx_errors, 1);
            return None;
        };
        let Some(mut skb) = napi.alloc_skb(total32) else {
            bump(&pair.stats.rx_dropped, 1);
            return None;
        };
        for (i, used) in parts.iter().flatten().enumerate() {
            let start = if i == 0 { HEADER_BYTES } else { 0 };
            let data = used.buf.get(start..used.written).unwrap_or(&[]);
            if skb.put_data(data).is_err() {
                bump(&pair.stats.rx_errors, 1);
                return None;
            }
        }
        if apply_rx_header(&mut skb, header).is_err() {
            bump(&pair.stats.rx_errors, 1);
            self.complain(format_args!("inconsistent receive header {:02x?}", header));
            return None;
        }
        Some(skb)
    }

    /// Frees packets the device has sent; wakes the queue when there is
    /// room again.
    fn reclaim_tx(&self, pair: &QueuePair, queue: u16, dev: &NetDev) {
        let mut vq = pair.tx.lock();
        while let Some(skb) = vq.get_sent() {
            drop(skb);
        }
        if dev.queue_stopped(0) && vq.free_descriptors() >= TX_STOP_THRESHOLD && dev.carrier_ok() {
            dev.wake_queue(queue);
        }
    }

    /// Sends a control command and waits for the device's ack.
    fn ctrl_command(&self, class: u8, cmd: u8, data: &[u8]) -> Result {
        let mut guard = self.ctrl.lock();
        let Some(vq) = guard.as_mut() else {
            return Err(EOPNOTSUPP);
        };
        let readable = 2 + data.len();
        let mut buf = virtio::zeroed_buffer::<CtrlBuffer>(GFP_KERNEL)?;
        if readable >= buf.len() {
            return Err(EINVAL);
        }
        buf[0] = class;
        buf[1] = cmd;
        buf[2..readable].copy_from_slice(data);
        // The ack byte: VIRTIO_NET_ERR until the device says otherwise.
        buf[readable] = VIRTIO_NET_ERR;
        vq.add(buf, readable, 1).map_err(|(e, _)| e)?;
        vq.kick();
        let mut waited = 0;
        loop {
            let Some(vq) = guard.as_mut() else {
                return Err(EIO);
            };
            if let Some(used) = vq.get_buf() {
                return if used.written >= 1 && used.buf[readable] == VIRTIO_NET_OK {
                    Ok(())
                } else {
                    Err(EIO)
                };
            }
            if waited >= CTRL_TIMEOUT_MS || vq.is_broken() {
                self.complain(format_args!(
                    "control command {}/{} not answered",
                    class, cmd
                ));
                return Err(ETIMEDOUT);
            }
            let _ = self
                .ctrl_acked
                .wait_interruptible_timeout(&mut guard, msecs_to_jiffies(CTRL_POLL_MS));
            waited += CTRL_POLL_MS;
        }
    }

    /// Applies the wanted receive filter (`VIRTIO_NET_F_CTRL_RX`): the
    /// modes, then the address table.
    fn apply_rx_mode(&self) {
        self.apply_rx_flags();
        let mut data = KVec::new();
        if self.want_table.lock().encode(&mut data).is_ok() {
            if let Err(e) =
                self.ctrl_command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, &data)
            {
                self.complain(format_args!("MAC filter table not set: {:?}", e));
            }
        }
    }

    fn apply_rx_flags(&self) {
        let promisc = u8::from(self.want_promisc.load(Ordering::Relaxed));
        let allmulti = u8::from(self.want_allmulti.load(Ordering::Relaxed));
        for (cmd, on) in [
            (VIRTIO_NET_CTRL_RX_PROMISC, promisc),
            (VIRTIO_NET_CTRL_RX_ALLMULTI, allmulti),
        ] {
            if let Err(e) = self.ctrl_command(VIRTIO_NET_CTRL_RX, cmd, &[on]) {
                self.complain(format_args!("receive mode {}={} failed: {:?}", cmd, on, e));
            }
        }
    }
}

#[vtable]
impl dev::Operations for NetOps {
    const DRIVER_NAME: &'static CStr = c_str!("pvrs_virtio_net");

    fn open(&self, dev: &NetDev) -> Result {
        let inner = &self.inner;
        for pair in inner.pairs.iter() {
            inner.fill_rx(&mut pair.rx.lock(), GFP_KERNEL, false);
        }
        inner.update_link(dev);
        Ok(())
    }

    fn stop(&self, _dev: &NetDev) -> Result {
        Ok(())
    }

    fn start_xmit(&self, dev: &NetDev, skb: SkBuff) {
        let bytes = u64::from(skb.len());
        // The queue the stack picked (one per CPU, by default).
        let queue = skb.queue_mapping();
        let Some(pair) = self.inner.pairs.get(usize::from(queue)) else {
            drop(skb);
            return;
        };
        let mut vq = pair.tx.lock();
        while let Some(sent) = vq.get_sent() {
            drop(sent);
        }
        match vq.add_skb(skb) {
            Ok(()) => {
                bump(&pair.stats.tx_packets, 1);
                bump(&pair.stats.tx_bytes, bytes);
                // More packets follow at once: one notification for all.
                if !dev.xmit_more() {
                    vq.kick();
                }
            }
            Err((e, skb)) => {
                drop(skb);
                // Packets queued before this one may wait for a notification.
                vq.kick();
                if e == ENOSPC {
                    bump(&pair.stats.tx_dropped, 1);
                } else {
                    bump(&pair.stats.tx_errors, 1);
                    self.inner
                        .complain(format_args!("packet not sent: {:?}", e));
                }
            }
        }
        if vq.free_descriptors() < TX_STOP_THRESHOLD {
            // The transmit interrupt's poll wakes the queue again; the
            // device must see what is queued (no more packets will come to
            // trigger the deferred notification).
            vq.kick();
            dev.stop_queue(queue);
            bump(&pair.stats.tx_stopped, 1);
        }
    }

    fn poll(&self, dev: &NetDev, napi: &dev::Napi, budget: i32) -> i32 {
        let index = napi.index();
        let Some(pair) = self.inner.pairs.get(index as usize) else {
            napi.complete_done(0);
            return 0;
        };
        self.inner.reclaim_tx(pair, index as u16, dev);
        let done = self.inner.receive(pair, dev, napi, budget);
        if done < budget && napi.complete_done(done) {
            // Buffers used after the last check but before callbacks were
            // back on would have no interrupt: poll again for them.
            if !pair.rx.lock().enable_callbacks() {
                napi.schedule();
            }
        }
        done
    }

    fn get_stats64(&self, _dev: &NetDev, stats: &mut Stats64) {
        let sum = |counter| self.inner.total(counter);
        *stats = Stats64 {
            rx_packets: sum(|s| &s.rx_packets),
            rx_bytes: sum(|s| &s.rx_bytes),
            rx_dropped: sum(|s| &s.rx_dropped),
            rx_errors: sum(|s| &s.rx_errors),
            tx_packets: sum(|s| &s.tx_packets),
            tx_bytes: sum(|s| &s.tx_bytes),
            tx_dropped: sum(|s| &s.tx_dropped),
            tx_errors: sum(|s| &s.tx_errors),
        };
    }

    fn set_mac_address(&self, _dev: &NetDev, mac: &[u8; ETH_ALEN]) -> Result {
        if self.inner.vdev.has_feature(VIRTIO_NET_F_CTRL_MAC_ADDR) {
            self.inner
                .ctrl_command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mac)
        } else {
            Ok(())
        }
    }

    fn change_mtu(&self, _dev: &NetDev, mtu: u32) -> Result {
        // Without mergeable buffers a frame must fit one receive buffer.
        if !self.inner.mergeable && mtu + ETH_OVERHEAD > (RX_BUFFER_BYTES - HEADER_BYTES) as u32 {
            return Err(EINVAL);
        }
        Ok(())
    }

    fn set_rx_mode(&self, dev: &NetDev, filter: &RxFilter<'_>) {
        let inner = &self.inner;
        if !inner.vdev.has_feature(VIRTIO_NET_F_CTRL_RX) || inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        let (mut unicast_overflow, mut multicast_overflow) = (false, false);
        {
            let mut table = inner.want_table.lock();
            let table = &mut *table;
            table.unicast_len = 0;
            table.multicast_len = 0;
            filter.for_each_unicast(|mac| match table.unicast.get_mut(table.unicast_len) {
                Some(slot) => {
                    *slot = *mac;
                    table.unicast_len += 1;
                }
                None => unicast_overflow = true,
            });
            filter.for_each_multicast(|mac| match table.multicast.get_mut(table.multicast_len) {
                Some(slot) => {
                    *slot = *mac;
                    table.multicast_len += 1;
                }
                None => multicast_overflow = true,
            });
        }
        // Addresses beyond the table: receive everything of the kind.
        inner
            .want_promisc
            .store(dev.is_promiscuous() || unicast_overflow, Ordering::Relaxed);
        inner
            .want_allmulti
            .store(dev.is_allmulti() || multicast_overflow, Ordering::Relaxed);
        // Commands sleep: send them from process context.
        let _ = workqueue::system().enqueue::<Arc<Inner>, 0>(self.inner.clone());
    }

    fn ethtool_stats_count(&self) -> usize {
        self.inner.pairs.len() * STAT_NAMES.len()
    }

    fn ethtool_stat_name(&self, index: usize, out: &mut dyn core::fmt::Write) {
        let (pair, stat) = (index / STAT_NAMES.len(), index % STAT_NAMES.len());
        if let Some((dir, what)) = STAT_NAMES.get(stat) {
            let _ = write!(out, "{dir}{pair}_{what}");
        }
    }

    fn ethtool_stats(&self, values: &mut [u64]) {
        let all = self.inner.pairs.iter().flat_map(|pair| pair.stats.values());
        for (value, counter) in values.iter_mut().zip(all) {
            *value = counter.load(Ordering::Relaxed);
        }
    }
}

type SharedRegistration = Arc<Registration<NetOps>>;

/// The driver data of one virtio-net device.
pub struct VirtioNet {
    inner: Arc<Inner>,
    /// Taken (and the interface unregistered) in `remove`; read by the
    /// queue callbacks in interrupt context.
    registration: Pin<KBox<SpinLockIrq<Option<SharedRegistration>>>>,
}

impl virtio::Driver for VirtioNet {
    const NAME: &'static CStr = c_str!("pvrs_virtio_net");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VIRTIO_ID_NET), DeviceId::END];
    const FEATURES: &'static [u32] = &[
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_MAC_ADDR,
        VIRTIO_NET_F_MQ,
    ];

    fn validate(dev: &Negotiating) -> Result {
        // Large receive packets (GUEST_TSO/ECN/UFO) need mergeable receive
        // buffers here: the driver has no big-packet mode (chains of pages
        // per buffer), so without MRG_RXBUF it does not take them (as
        // pvrs-vmm offers them).
        if !dev.has_feature(VIRTIO_NET_F_MRG_RXBUF) {
            for bit in [
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN,
                VIRTIO_NET_F_GUEST_UFO,
            ] {
                dev.clear_feature(bit);
            }
        }
        Ok(())
    }

    fn probe(vdev: &Device) -> Result<KBox<Self>> {
        let has = |bit| vdev.has_feature(bit);
        let mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
        if !has(VIRTIO_F_VERSION_1) && !mergeable {
            pr_err!("pvrs: virtio_net: legacy device without MRG_RXBUF (10-byte header) not supported\n");
            return Err(ENODEV);
        }
        // `validate` dropped GUEST_TSO without MRG_RXBUF.
        if !mergeable && (has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6)) {
            return Err(EINVAL);
        }
        let mut mac = [0u8; ETH_ALEN];
        if has(VIRTIO_NET_F_MAC) {
            vdev.read_config_bytes(offset_of!(VirtioNetConfig, mac), &mut mac)?;
        }
        let mut max_mtu = if mergeable {
            MAX_MTU
        } else {
            (RX_BUFFER_BYTES - HEADER_BYTES) as u32 - ETH_OVERHEAD
        };
        let mut mtu = 1500;
        if has(VIRTIO_NET_F_MTU) {
            let device_mtu: u16 = vdev.read_config(offset_of!(VirtioNetConfig, mtu))?;
            let device_mtu = u32::from(device_mtu);
            if (68..=max_mtu).contains(&device_mtu) {
                max_mtu = device_mtu;
                mtu = mtu.min(device_mtu);
            } else {
                pr_warn!("pvrs: virtio_net: ignoring device MTU {}\n", device_mtu);
            }
        }
        let with_ctrl = has(VIRTIO_NET_F_CTRL_VQ);
        // Queue pairs: the device's (VIRTIO_NET_F_MQ, which needs the
        // control queue to switch them on), one per vCPU, at most MAX_PAIRS.
        let device_pairs: u16 = if has(VIRTIO_NET_F_MQ) && with_ctrl {
            vdev.read_config(offset_of!(VirtioNetConfig, max_virtqueue_pairs))?
        } else {
            1
        };
        if !(1..=MAX_DEVICE_PAIRS).contains(&device_pairs) {
            pr_err!(
                "pvrs: virtio_net: {} queue pairs not supported\n",
                device_pairs
            );
            return Err(ENODEV);
        }
        let pair_count = usize::from(device_pairs)
            .min(cpu::nr_cpu_ids() as usize)
            .min(MAX_PAIRS);
        // Every queue of the device is found (the control queue's index
        // follows all pairs); pairs beyond `pair_count` stay idle.
        let mut names = KVec::new();
        for i in 0..usize::from(device_pairs) {
            let (rx, tx) = match (RX_NAMES.get(i), TX_NAMES.get(i)) {
                (Some(rx), Some(tx)) if i < pair_count => (*rx, *tx),
                _ => (c_str!("unused"), c_str!("unused")),
            };
            names.push(rx, GFP_KERNEL)?;
            names.push(tx, GFP_KERNEL)?;
        }
        if with_ctrl {
            names.push(c_str!("control"), GFP_KERNEL)?;
        }
        let mut callbacks = KVec::new();
        for _ in 0..names.len() {
            callbacks.push(true, GFP_KERNEL)?;
        }
        let mut handles = vdev.find_vqs::<Self>(&names, &callbacks)?.into_iter();
        let mut pairs = KVec::with_capacity(pair_count, GFP_KERNEL)?;
        for _ in 0..pair_count {
            let rx = handles.next().ok_or(EINVAL)?.into_queue();
            let tx = handles.next().ok_or(EINVAL)?.into_queue();
            pairs.push(
                KBox::pin_init(
                    pin_init!(QueuePair {
                        rx <- new_spinlock_irq!(rx),
                        tx <- new_spinlock_irq!(tx),
                        stats: QueueStats::default(),
                    }),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        // The idle pairs' queues.
        for _ in pair_count..usize::from(device_pairs) {
            handles.next();
            handles.next();
        }
        let ctrl = handles.next().map(|h| h.into_queue());
        let ctrl_index = (names.len() - 1) as u32;
        let inner = Arc::pin_init(
            try_pin_init!(Inner {
                vdev: vdev.into(),
                pairs,
                ctrl_index,
                ctrl <- new_mutex!(ctrl),
                ctrl_acked <- new_condvar!(),
                mergeable,
                has_status: has(VIRTIO_NET_F_STATUS),
                complaints: AtomicU64::new(0),
                want_promisc: AtomicBool::new(false),
                want_allmulti: AtomicBool::new(false),
                want_table <- new_spinlock_irq!(MacTable::new()),
                stopping: AtomicBool::new(false),
                rx_mode_work <- new_work!("pvrs_virtio_net::rx_mode"),
                link_work <- new_work!("pvrs_virtio_net::link"),
                netdev <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )?;
        // The device must work before the interface can be opened, which
        // may happen as soon as it is registered.
        vdev.set_driver_ok_in_probe();
        for pair in inner.pairs.iter() {
            inner.fill_rx(&mut pair.rx.lock(), GFP_KERNEL, false);
        }
        let mut pair_count = pair_count;
        if pair_count > 1 {
            let count = (pair_count as u16).to_le_bytes();
            if let Err(e) =
                inner.ctrl_command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &count)
            {
                pr_warn!(
                    "pvrs: virtio_net: {} queue pairs refused ({:?}); using one\n",
                    pair_count,
                    e
                );
                pair_count = 1;
            }
        }
        let config = dev::Config {
            mac,
            mtu,
            min_mtu: 68,
            max_mtu,
            queue_pairs: pair_count as u32,
            sg: has(VIRTIO_NET_F_CSUM),
            tx_csum: has(VIRTIO_NET_F_CSUM),
            rx_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            tso4: has(VIRTIO_NET_F_HOST_TSO4),
            tso6: has(VIRTIO_NET_F_HOST_TSO6),
            tso_ecn: has(VIRTIO_NET_F_HOST_ECN),
        };
        let ops = Arc::new(
            NetOps {
                inner: inner.clone(),
            },
            GFP_KERNEL,
        )?;
        let registration = Arc::new(Registration::new(vdev.as_dev(), &config, ops)?, GFP_KERNEL)?;
        *inner.netdev.lock() = Some(registration.clone());
        let dev = registration.dev();
        pr_info!(
            "pvrs: virtio_net: {:02x?}: mtu {} (max {}), mergeable {}, csum {}/{}, tso {}/{}, \
             ctrl {}, status {}, queue pairs {} of {}\n",
            dev.mac(),
            mtu,
            max_mtu,
            mergeable,
            has(VIRTIO_NET_F_CSUM),
            has(VIRTIO_NET_F_GUEST_CSUM),
            has(VIRTIO_NET_F_HOST_TSO4),
            has(VIRTIO_NET_F_GUEST_TSO4),
            with_ctrl,
            has(VIRTIO_NET_F_STATUS),
            pair_count,
            device_pairs
        );
        let registration = KBox::pin_init(new_spinlock_irq!(Some(registration)), GFP_KERNEL)?;
        Ok(KBox::new(
            Self {
                inner,
                registration,
            },
            GFP_KERNEL,
        )?)
    }

    fn ready(&self, _dev: &Device) -> Result {
        let _ = workqueue::system().enqueue::<Arc<Inner>, 1>(self.inner.clone());
        Ok(())
    }

    fn vq_callback(&self, index: u32) {
        if index == self.inner.ctrl_index {
            self.inner.ctrl_acked.notify_all();
        } else if let Some(napi) = self
            .registration
            .lock()
            .as_ref()
            .and_then(|r| r.napi(index / 2))
        {
            // Receive queue 2N or transmit queue 2N+1: pair N's context.
            napi.schedule();
        }
    }

    fn config_changed(&self, _dev: &Device) {
        if !self.inner.stopping.load(Ordering::Relaxed) {
            let _ = workqueue::system().enqueue::<Arc<Inner>, 1>(self.inner.clone());
        }
    }

    fn remove(&self, _dev: &Device) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::Relaxed);
        inner.rx_mode_work.cancel_sync();
        inner.link_work.cancel_sync();
        // Unregistering (when the last reference goes, here) stops the
        // interface while the queues still work.
        let registration = self.registration.lock().take();
        inner.netdev.lock().take();
        drop(registration);
        pr_info!(
            "pvrs: virtio_net: removed; rx {} packets, {} errors; tx {} packets, {} errors\n",
            inner.total(|s| &s.rx_packets),
            inner.total(|s| &s.rx_errors),
            inner.total(|s| &s.tx_packets),
            inner.total(|s| &s.tx_errors)
        );
    }
}
