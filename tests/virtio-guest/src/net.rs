//! Checks of a virtio-net device (virtio 1.2 §5.1) through virtio-drivers'
//! `VirtIONetRaw`, against the host kernel's network stack at the other
//! end of the tap.
//!
//! The host gives the tap [`HOST_IP`]/24 and the device the MAC it expects
//! (`VIRTIO_NET_F_MAC`, §5.1.4). The guest, at [`GUEST_IP`]:
//!
//! 1. sends an ARP request for [`HOST_IP`] and waits for the host's reply
//!    (one frame each way, §5.1.6.2 transmit, §5.1.6.3 receive);
//! 2. sends an ICMP echo request and waits for the reply carrying the
//!    same payload. The host kernel drops frames whose IP or ICMP checksum
//!    is wrong, so a reply also checks the frame the guest built.
//!
//! Meanwhile it answers ARP requests for its own address and skips
//! anything else the host sends (IPv6 neighbour discovery and the like).
//! The driver negotiates no offloads, so frames cross without checksum or
//! segmentation offload: the tap must be set to match (pvrs-vmm sets its
//! offloads to what the driver accepted).

use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::MmioTransport;

use crate::hal::IdentityHal;
use crate::say;

/// The guest's address.
pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
/// The host end of the tap.
pub const HOST_IP: [u8; 4] = [10, 0, 2, 1];
const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Frames the guest skips while waiting for one reply before giving up.
const MAX_SKIPPED: usize = 64;
/// TSC cycles to wait for one reply (a few seconds at any plausible rate).
const REPLY_TIMEOUT_CYCLES: u64 = 20_000_000_000;

type Net = VirtIONetRaw<IdentityHal, MmioTransport<'static>, 16>;

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An Ethernet frame being built.
struct Frame {
    buf: [u8; 128],
    len: usize,
}

impl Frame {
    fn new(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Self {
        let mut f = Frame {
            buf: [0; 128],
            len: 0,
        };
        f.put(&dst).put(&src).put(&ethertype.to_be_bytes());
        f
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    /// The frame, padded to the 60-byte Ethernet minimum.
    fn bytes(&mut self) -> &[u8] {
        self.len = self.len.max(60);
        &self.buf[..self.len]
    }
}

fn arp(
    op: u16,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
) -> Frame {
    let mut f = Frame::new(dst_mac, src_mac, ETH_ARP);
    f.put(&1u16.to_be_bytes()) // Ethernet
        .put(&ETH_IPV4.to_be_bytes())
        .put(&[6, 4])
        .put(&op.to_be_bytes())
        .put(&src_mac)
        .put(&GUEST_IP)
        .put(&target_mac)
        .put(&target_ip);
    f
}

fn echo_request(mac: [u8; 6], host_mac: [u8; 6], payload: &[u8]) -> Frame {
    let mut icmp = [0u8; 8 + 32];
    icmp[0] = 8; // echo request
    icmp[4..6].copy_from_slice(&0x5052u16.to_be_bytes()); // identifier "PR"
    icmp[6..8].copy_from_slice(&1u16.to_be_bytes()); // sequence
    icmp[8..8 + payload.len()].copy_from_slice(payload);
    let icmp = &icmp[..8 + payload.len()];
    let mut icmp_buf = [0u8; 40];
    icmp_buf[..icmp.len()].copy_from_slice(icmp);
    let c = checksum(icmp);
    icmp_buf[2..4].copy_from_slice(&c.to_be_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 1; // ICMP
    ip[12..16].copy_from_slice(&GUEST_IP);
    ip[16..20].copy_from_slice(&HOST_IP);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = Frame::new(host_mac, mac, ETH_IPV4);
    f.put(&ip).put(&icmp_buf[..icmp.len()]);
    f
}

/// What a received frame is, as far as the checks care.
enum Rx<'a> {
    ArpReply { mac: [u8; 6], ip: [u8; 4] },
    ArpRequestForUs { mac: [u8; 6], ip: [u8; 4] },
    EchoReply { from: [u8; 4], payload: &'a [u8] },
    Other,
}

fn classify(p: &[u8]) -> Rx<'_> {
    if p.len() < 42 {
        return Rx::Other;
    }
    let mac_at = |at: usize| -> [u8; 6] { p[at..at + 6].try_into().expect("6 bytes") };
    let ip_at = |at: usize| -> [u8; 4] { p[at..at + 4].try_into().expect("4 bytes") };
    match be16(p, 12) {
        ETH_ARP if be16(p, 20) == 2 => Rx::ArpReply {
            mac: mac_at(22),
            ip: ip_at(28),
        },
        ETH_ARP if be16(p, 20) == 1 && ip_at(38) == GUEST_IP => Rx::ArpRequestForUs {
            mac: mac_at(22),
            ip: ip_at(28),
        },
        ETH_IPV4 if p[23] == 1 => {
            let ihl = usize::from(p[14] & 0xf) * 4;
            let total = usize::from(be16(p, 16));
            let icmp = 14 + ihl;
            if icmp + 8 > p.len() || 14 + total > p.len() || p[icmp] != 0 {
                return Rx::Other;
            }
            Rx::EchoReply {
                from: ip_at(26),
                payload: &p[icmp + 8..14 + total],
            }
        }
        _ => Rx::Other,
    }
}

/// Receives frames until `want` accepts one; answers ARP requests for the
/// guest's address meanwhile. `None` after too many other frames or too
/// long a wait.
fn wait_for<T>(
    net: &mut Net,
    mac: [u8; 6],
    mut want: impl FnMut(Rx<'_>) -> Option<T>,
) -> Option<T> {
    let mut buf = [0u8; 2048];
    for _ in 0..MAX_SKIPPED {
        // SAFETY: `buf` is not touched until receive_complete below; on a
        // timeout the function returns and the guest ends without reusing
        // the queue.
        let token = unsafe { net.receive_begin(&mut buf) }.ok()?;
        let start = rdtsc();
        while net.poll_receive().is_none() {
            if rdtsc() - start > REPLY_TIMEOUT_CYCLES {
                say!("net: no frame within the timeout");
                return None;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the same buffer as in receive_begin.
        let (hdr, len) = unsafe { net.receive_complete(token, &mut buf) }.ok()?;
        let packet = &buf[hdr..hdr + len];
        if let Rx::ArpRequestForUs { mac: asker, ip } = classify(packet) {
            let mut reply = arp(2, mac, asker, asker, ip);
            if net.send(reply.bytes()).is_err() {
                say!("net: FAIL sending an ARP reply");
            }
            continue;
        }
        if let Some(v) = want(classify(packet)) {
            return Some(v);
        }
    }
    say!("net: {MAX_SKIPPED} frames without the expected one");
    None
}

/// Runs the checks on one device; true if all passed.
pub fn test(index: usize, mut net: Net) -> bool {
    let mac = net.mac_address();
    say!(
        "net{index}: mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    let mut request = arp(1, mac, BROADCAST, [0; 6], HOST_IP);
    if let Err(e) = net.send(request.bytes()) {
        say!("net{index}: FAIL sending the ARP request: {e:?}");
        return false;
    }
    let Some(host_mac) = wait_for(&mut net, mac, |rx| match rx {
        Rx::ArpReply { mac, ip } if ip == HOST_IP => Some(mac),
        _ => None,
    }) else {
        say!("net{index}: FAIL no ARP reply from the host");
        return false;
    };
    say!(
        "net{index}: ARP reply: {}.{}.{}.{} is at {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        HOST_IP[0],
        HOST_IP[1],
        HOST_IP[2],
        HOST_IP[3],
        host_mac[0],
        host_mac[1],
        host_mac[2],
        host_mac[3],
        host_mac[4],
        host_mac[5]
    );

    let payload = b"pvrs-vmm virtio-net echo payload";
    let mut ping = echo_request(mac, host_mac, payload);
    if let Err(e) = net.send(ping.bytes()) {
        say!("net{index}: FAIL sending the echo request: {e:?}");
        return false;
    }
    let got = wait_for(&mut net, mac, |rx| match rx {
        Rx::EchoReply { from, payload: p } if from == HOST_IP => Some(p == payload),
        _ => None,
    });
    match got {
        Some(true) => {
            say!("net{index}: ICMP echo reply from the host with the same payload");
            say!("net{index}: ok");
            true
        }
        Some(false) => {
            say!("net{index}: FAIL the echo reply's payload differs");
            false
        }
        None => {
            say!("net{index}: FAIL no echo reply from the host");
            false
        }
    }
}
