//! virtio-net (virtio 1.2 §5.1) on a Linux tap interface.
//!
//! Queues: receiveq (0) and transmitq (1); no control queue, one queue
//! pair. Every buffer starts with the 12-byte `virtio_net_hdr_v1`
//! (§5.1.6), which the tap reads and writes as its own vnet header
//! (`IFF_VNET_HDR`, `TUNSETVNETHDRSZ` 12), so packets and their offload
//! metadata pass through unchanged.
//!
//! Offloads are negotiated honestly (§5.1.3.1):
//! * guest → host (`CSUM`, `HOST_TSO4`, `HOST_TSO6`): the tap accepts
//!   partially checksummed and GSO packets with a vnet header, so these
//!   are offered whenever the vnet header works;
//! * host → guest (`GUEST_CSUM`, `GUEST_TSO4`, `GUEST_TSO6`, `GUEST_ECN`):
//!   offered only if the tap accepts the matching `TUN_F_*` offload (probed
//!   at open), and the tap is told (`TUNSETOFFLOAD`) exactly what the
//!   driver accepted, so it never hands the guest a packet it cannot take.
//!
//! `MRG_RXBUF` is not offered: the driver then posts receive buffers big
//! enough for the largest packet it negotiated. A packet that does not fit
//! the buffer it is given is dropped and counted; transmit chains with
//! device-writable buffers or shorter than the header are refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::chain::ChainLimits;
use super::{read_config_bytes, DeviceCounters, DeviceCtx, VirtioDevice, COMMON_FEATURES};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    virtio_net_config, virtio_net_hdr_v1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
};
use vm_memory::Bytes;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

/// The vnet header size with `VIRTIO_F_VERSION_1`.
pub const VNET_HDR_LEN: usize = size_of::<virtio_net_hdr_v1>();
/// The largest frame: a 64 KiB GSO packet plus Ethernet header.
pub const MAX_FRAME: usize = 65535 + 14;
/// Buffer size for one packet with its header.
pub const MAX_BUFFER: usize = VNET_HDR_LEN + MAX_FRAME;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 256;

/// `TUN_F_*` offload flags of `TUNSETOFFLOAD`.
pub const TUN_F_CSUM: u32 = 0x01;
/// TCPv4 segmentation offload.
pub const TUN_F_TSO4: u32 = 0x02;
/// TCPv6 segmentation offload.
pub const TUN_F_TSO6: u32 = 0x04;
/// TSO with ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// The tun/tap ioctl numbers (`include/uapi/linux/if_tun.h`).
mod tun_ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_iow_nr;

    const TUNTAP: u32 = b'T' as u32;
    ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, libc::c_int);
    ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, libc::c_uint);
    ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, libc::c_int);
}
use tun_ioctls::{TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ};

/// Where packets come from and go to.
pub trait PacketIo: Send {
    /// Reads one packet (vnet header first); `WouldBlock` when there is none.
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one packet (vnet header first).
    fn write_packet(&mut self, buf: &[u8]) -> io::Result<()>;
    /// The `TUN_F_*` offloads the back end can do for received packets.
    fn supported_offloads(&self) -> u32;
    /// Turns on exactly `flags` of the `TUN_F_*` offloads.
    fn set_offloads(&mut self, flags: u32) -> io::Result<()>;
    /// An fd that becomes readable when packets arrive.
    fn event_fd(&self) -> Option<RawFd>;
}

/// `struct ifreq` with the flags member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// A tap interface with a vnet header.
pub struct Tap {
    file: File,
    name: String,
    offloads: u32,
}

impl Tap {
    /// Attaches to (or creates) the tap interface `name`.
    pub fn open(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq`
        // lays out (40 bytes, name then flags); `req` outlives the call.
        if unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        if unsafe { ioctl_with_ref(&file, TUNSETVNETHDRSZ(), &hdr_len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let mut tap = Tap {
            file,
            name: String::from_utf8_lossy(&req.name[..end]).into_owned(),
            offloads: 0,
        };
        tap.offloads = tap.probe_offloads();
        Ok(tap)
    }

    /// The interface name the kernel gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn try_offloads(&self, flags: u32) -> bool {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        unsafe { ioctl_with_val(&self.file, TUNSETOFFLOAD(), libc::c_ulong::from(flags)) >= 0 }
    }

    fn probe_offloads(&self) -> u32 {
        let mut ok = 0;
        if self.try_offloads(TUN_F_CSUM) {
            ok |= TUN_F_CSUM;
            for f in [TUN_F_TSO4, TUN_F_TSO6] {
                if self.try_offloads(TUN_F_CSUM | f) {
                    ok |= f;
                }
            }
            if ok & TUN_F_TSO4 != 0 && self.try_offloads(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN) {
                ok |= TUN_F_TSO_ECN;
            }
        }
        self.try_offloads(0);
        ok
    }
}

impl PacketIo for Tap {
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_packet(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = self.file.write(buf)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the tap",
            ));
        }
        Ok(())
    }

    fn supported_offloads(&self) -> u32 {
        self.offloads
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        if self.try_offloads(flags) {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

/// The device features for a back end with `tun_offloads` and an optional MAC.
pub fn offered_features(tun_offloads: u32, mac: bool) -> u64 {
    let mut f = COMMON_FEATURES
        | 1 << VIRTIO_NET_F_CSUM
        | 1 << VIRTIO_NET_F_HOST_TSO4
        | 1 << VIRTIO_NET_F_HOST_TSO6;
    if mac {
        f |= 1 << VIRTIO_NET_F_MAC;
    }
    if tun_offloads & TUN_F_CSUM != 0 {
        f |= 1 << VIRTIO_NET_F_GUEST_CSUM;
        if tun_offloads & TUN_F_TSO4 != 0 {
            f |= 1 << VIRTIO_NET_F_GUEST_TSO4;
        }
        if tun_offloads & TUN_F_TSO6 != 0 {
            f |= 1 << VIRTIO_NET_F_GUEST_TSO6;
        }
        if tun_offloads & TUN_F_TSO_ECN != 0 {
            f |= 1 << VIRTIO_NET_F_GUEST_ECN;
        }
    }
    f
}

/// The `TUN_F_*` offloads matching the guest-receive features the driver
/// accepted (a TSO flag only together with the checksum it relies on).
pub fn tun_offloads_for(acked: u64) -> u32 {
    let has = |bit: u32| acked & (1 << bit) != 0;
    let mut flags = 0;
    if has(VIRTIO_NET_F_GUEST_CSUM) {
        flags |= TUN_F_CSUM;
        if has(VIRTIO_NET_F_GUEST_TSO4) {
            flags |= TUN_F_TSO4;
        }
        if has(VIRTIO_NET_F_GUEST_TSO6) {
            flags |= TUN_F_TSO6;
        }
        if has(VIRTIO_NET_F_GUEST_ECN) && flags & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
            flags |= TUN_F_TSO_ECN;
        }
    }
    flags
}

/// A network device.
pub struct Net<P: PacketIo> {
    name: String,
    io: P,
    features: u64,
    config: Vec<u8>,
    queue_sizes: [u16; 2],
    counters: Arc<DeviceCounters>,
    rx_buf: Vec<u8>,
    /// Length of a packet read from the back end and not yet delivered.
    rx_pending: Option<usize>,
    tx_buf: Vec<u8>,
}

impl Net<Tap> {
    /// A device on the tap `tap`.
    pub fn new(name: String, tap: &str, mac: Option<[u8; 6]>) -> io::Result<Self> {
        let tap = Tap::open(tap)?;
        log::info!(
            "{name}: tap {} offloads {:#x}",
            tap.name(),
            tap.supported_offloads()
        );
        Ok(Self::with_io(name, tap, mac))
    }
}

impl Net<Tap> {
    /// The limits of net chains: a receive buffer of the largest packet in
    /// pages plus the header, or a transmit packet.
    pub fn chain_limits() -> ChainLimits {
        ChainLimits {
            max_descriptors: QUEUE_SIZE as usize,
            max_bytes: 2 * MAX_BUFFER as u64,
        }
    }
}

impl<P: PacketIo> Net<P> {
    /// A device on an arbitrary packet back end.
    pub fn with_io(name: String, io: P, mac: Option<[u8; 6]>) -> Self {
        let mut config = vec![0u8; size_of::<virtio_net_config>()];
        if let Some(mac) = mac {
            let off = offset_of!(virtio_net_config, mac);
            config[off..off + 6].copy_from_slice(&mac);
        }
        Net {
            name,
            features: offered_features(io.supported_offloads(), mac.is_some()),
            io,
            config,
            queue_sizes: [QUEUE_SIZE; 2],
            counters: Arc::default(),
            rx_buf: vec![0; MAX_BUFFER],
            rx_pending: None,
            tx_buf: Vec::with_capacity(MAX_BUFFER),
        }
    }

    /// The back end.
    pub fn io(&self) -> &P {
        &self.io
    }

    /// Mutable back end.
    pub fn io_mut(&mut self) -> &mut P {
        &mut self.io
    }

    fn process_tx(&mut self, ctx: &mut DeviceCtx) {
        let mem = ctx.mem;
        let name = self.name.clone();
        let counters = Arc::clone(&self.counters);
        let Some(q) = ctx.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let (io, buf) = (&mut self.io, &mut self.tx_buf);
        q.process(mem, &name, &counters, |popped| {
            let Ok(chain) = popped else {
                return 0;
            };
            let len = chain.readable_len() as usize;
            if !chain.writable.is_empty() || !(VNET_HDR_LEN..=MAX_BUFFER).contains(&len) {
                if DeviceCounters::bump(&counters.bad_requests) {
                    log::warn!(
                        "{name}: bad transmit chain ({len} readable, {} writable bytes)",
                        chain.writable_len()
                    );
                }
                return 0;
            }
            buf.clear();
            buf.resize(len, 0);
            let mut done = 0;
            for s in &chain.readable {
                let n = s.len as usize;
                if mem.read_slice(&mut buf[done..done + n], s.addr).is_err() {
                    return 0;
                }
                done += n;
            }
            counters.requests.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = io.write_packet(buf) {
                if DeviceCounters::bump(&counters.io_errors) {
                    log::warn!("{name}: transmit: {e}");
                }
            }
            0
        });
        ctx.notify_queue(TX_QUEUE);
    }

    /// Delivers packets from the back end while the guest has buffers.
    fn process_rx(&mut self, ctx: &mut DeviceCtx) {
        let mem = ctx.mem;
        let Some(q) = ctx.queues.get_mut(RX_QUEUE) else {
            return;
        };
        loop {
            let len = match self.rx_pending {
                Some(len) => len,
                None => match self.io.read_packet(&mut self.rx_buf) {
                    Ok(len) if len >= VNET_HDR_LEN => {
                        // Without MRG_RXBUF the packet is in one buffer.
                        self.rx_buf[VNET_HDR_LEN - 2..VNET_HDR_LEN]
                            .copy_from_slice(&1u16.to_le_bytes());
                        self.rx_pending = Some(len);
                        len
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if DeviceCounters::bump(&self.counters.io_errors) {
                            log::warn!("{}: receive: {e}", self.name);
                        }
                        break;
                    }
                },
            };
            let Some(popped) = q.pop(mem, &self.name, &self.counters) else {
                // No buffer: wait for the driver, unless one just came.
                if q.is_broken() || !q.enable_notification(mem) {
                    break;
                }
                continue;
            };
            let chain = match popped {
                Ok(chain) => chain,
                Err((head, _)) => {
                    q.add_used(mem, head, 0, &self.name, &self.counters);
                    continue;
                }
            };
            self.rx_pending = None;
            if !chain.readable.is_empty() || (chain.writable_len() as usize) < len {
                if DeviceCounters::bump(&self.counters.bad_requests) {
                    log::warn!(
                        "{}: receive buffer of {} bytes for a {len}-byte packet; packet dropped",
                        self.name,
                        chain.writable_len()
                    );
                }
                q.add_used(mem, chain.head, 0, &self.name, &self.counters);
                continue;
            }
            let mut done = 0;
            for s in &chain.writable {
                if done == len {
                    break;
                }
                let n = (s.len as usize).min(len - done);
                if mem
                    .write_slice(&self.rx_buf[done..done + n], s.addr)
                    .is_err()
                {
                    break;
                }
                done += n;
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            q.add_used(mem, chain.head, done as u32, &self.name, &self.counters);
        }
        ctx.notify_queue(RX_QUEUE);
    }
}

impl<P: PacketIo> VirtioDevice for Net<P> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        let flags = tun_offloads_for(features);
        match self.io.set_offloads(flags) {
            Ok(()) => log::info!("{}: receive offloads {flags:#x}", self.name),
            Err(e) => log::warn!("{}: setting receive offloads {flags:#x}: {e}", self.name),
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, ctx: &mut DeviceCtx) {
        match index {
            RX_QUEUE => self.process_rx(ctx),
            TX_QUEUE => self.process_tx(ctx),
            _ => {}
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        self.io.event_fd().into_iter().collect()
    }

    fn process_extra(&mut self, _index: usize, ctx: &mut DeviceCtx) {
        self.process_rx(ctx);
    }

    fn reset(&mut self) {
        self.rx_pending = None;
        let _ = self.io.set_offloads(0);
    }

    fn counters(&self) -> &DeviceCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::chain::tests::{mem, queue_with, N, R, W};
    use crate::virtio::queue::VirtQueue;
    use crate::virtio::Interrupt;
    use std::collections::VecDeque;
    use virtio_queue::QueueT;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Default)]
    struct Mock {
        incoming: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        offloads: u32,
    }

    impl PacketIo for Mock {
        fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let p = self.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..p.len()].copy_from_slice(&p);
            Ok(p.len())
        }
        fn write_packet(&mut self, buf: &[u8]) -> io::Result<()> {
            self.sent.push(buf.to_vec());
            Ok(())
        }
        fn supported_offloads(&self) -> u32 {
            TUN_F_CSUM | TUN_F_TSO4
        }
        fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
            self.offloads = flags;
            Ok(())
        }
        fn event_fd(&self) -> Option<RawFd> {
            None
        }
    }

    fn run(
        net: &mut Net<Mock>,
        m: &GuestMemoryMmap,
        index: usize,
        descs: &[(u64, u32, u16, u16)],
    ) -> (u16, u32) {
        let mut queues = [
            VirtQueue::new(16, ChainLimits::default()),
            VirtQueue::new(16, ChainLimits::default()),
        ];
        queues[index].queue = queue_with(m, descs, 0);
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut ctx = DeviceCtx {
            mem: m,
            queues: &mut queues,
            interrupt: &irq,
        };
        net.process_queue(index, &mut ctx);
        let used = queues[index].queue.used_ring();
        (
            m.read_obj(GuestAddress(used + 2)).unwrap(),
            m.read_obj(GuestAddress(used + 8)).unwrap(),
        )
    }

    #[test]
    fn features_follow_the_back_end() {
        let f = offered_features(TUN_F_CSUM | TUN_F_TSO4, true);
        assert_ne!(f & 1 << VIRTIO_NET_F_GUEST_TSO4, 0);
        assert_eq!(f & 1 << VIRTIO_NET_F_GUEST_TSO6, 0);
        assert_ne!(f & 1 << VIRTIO_NET_F_MAC, 0);
        let none = offered_features(0, false);
        assert_eq!(
            none & (1 << VIRTIO_NET_F_GUEST_CSUM | 1 << VIRTIO_NET_F_GUEST_TSO4),
            0
        );
        assert_ne!(none & 1 << VIRTIO_NET_F_HOST_TSO4, 0);
        // TSO flags never without the checksum offload.
        assert_eq!(tun_offloads_for(1 << VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_eq!(
            tun_offloads_for(
                1 << VIRTIO_NET_F_GUEST_CSUM
                    | 1 << VIRTIO_NET_F_GUEST_TSO4
                    | 1 << VIRTIO_NET_F_GUEST_ECN
            ),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN
        );
    }

    #[test]
    fn ack_sets_tap_offloads() {
        let mut net = Net::with_io("n".into(), Mock::default(), None);
        net.ack_features(1 << VIRTIO_NET_F_GUEST_CSUM | 1 << VIRTIO_NET_F_GUEST_TSO4);
        assert_eq!(net.io().offloads, TUN_F_CSUM | TUN_F_TSO4);
        net.reset();
        assert_eq!(net.io().offloads, 0);
    }

    #[test]
    fn mac_in_config() {
        let net = Net::with_io("n".into(), Mock::default(), Some([2, 0, 0, 0, 0, 9]));
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn transmit_gathers_the_chain() {
        let m = mem();
        m.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x8000))
            .unwrap();
        m.write_slice(b"frame-bytes", GuestAddress(0x9000)).unwrap();
        let mut net = Net::with_io("n".into(), Mock::default(), None);
        let (idx, len) = run(
            &mut net,
            &m,
            TX_QUEUE,
            &[(0x8000, 12, R | N, 1), (0x9000, 11, R, 0)],
        );
        assert_eq!((idx, len), (1, 0));
        assert_eq!(net.io().sent.len(), 1);
        assert_eq!(&net.io().sent[0][12..], b"frame-bytes");
        // A transmit chain with a writable buffer is refused.
        let _ = run(
            &mut net,
            &m,
            TX_QUEUE,
            &[(0x8000, 12, R | N, 1), (0x9000, 11, W, 0)],
        );
        assert_eq!(net.io().sent.len(), 1);
        // So is one shorter than the header.
        let _ = run(&mut net, &m, TX_QUEUE, &[(0x8000, 4, R, 0)]);
        assert_eq!(net.counters().bad_requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn receive_fills_buffers_and_sets_num_buffers() {
        let m = mem();
        let mut io = Mock::default();
        let mut pkt = vec![0u8; VNET_HDR_LEN];
        pkt.extend_from_slice(b"hello-guest");
        io.incoming.push_back(pkt.clone());
        let mut net = Net::with_io("n".into(), io, None);
        let (idx, len) = run(
            &mut net,
            &m,
            RX_QUEUE,
            &[(0x8000, 8, W | N, 1), (0x9000, 2048, W, 0)],
        );
        assert_eq!((idx, len), (1, pkt.len() as u32));
        let mut got = vec![0u8; pkt.len()];
        m.read_slice(&mut got[..8], GuestAddress(0x8000)).unwrap();
        m.read_slice(&mut got[8..], GuestAddress(0x9000)).unwrap();
        assert_eq!(&got[VNET_HDR_LEN..], b"hello-guest");
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    }

    #[test]
    fn receive_waits_for_buffers_and_drops_what_does_not_fit() {
        let m = mem();
        let mut io = Mock::default();
        io.incoming.push_back(vec![0u8; 100]);
        let mut net = Net::with_io("n".into(), io, None);
        // A 50-byte buffer for a 100-byte packet: dropped, buffer returned empty.
        let (idx, len) = run(&mut net, &m, RX_QUEUE, &[(0x8000, 50, W, 0)]);
        assert_eq!((idx, len), (1, 0));
        assert_eq!(net.counters().bad_requests.load(Ordering::Relaxed), 1);
        // No buffers: the packet waits.
        net.io_mut().incoming.push_back(vec![0u8; 20]);
        let mut queues = [
            VirtQueue::new(16, ChainLimits::default()),
            VirtQueue::new(16, ChainLimits::default()),
        ];
        queues[0].queue = virtio_queue::mock::MockSplitQueue::new(&m, 16)
            .create_queue()
            .unwrap();
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut ctx = DeviceCtx {
            mem: &m,
            queues: &mut queues,
            interrupt: &irq,
        };
        net.process_queue(RX_QUEUE, &mut ctx);
        assert_eq!(net.rx_pending, Some(20));
    }

    #[test]
    fn tap_round_trip_if_allowed() {
        let name = format!("pvrst{}", std::process::id() % 100000);
        let mut tap = match Tap::open(&name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipped: cannot create tap {name}: {e}");
                return;
            }
        };
        assert_eq!(tap.name(), name);
        assert_ne!(tap.supported_offloads() & TUN_F_CSUM, 0);
        tap.set_offloads(TUN_F_CSUM | TUN_F_TSO4).unwrap();
        // Interface down: nothing to read, and writes are refused.
        let mut buf = vec![0u8; MAX_BUFFER];
        assert_eq!(
            tap.read_packet(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend_from_slice(&[0u8; 46]);
        assert!(tap.write_packet(&frame).is_err());
    }
}
