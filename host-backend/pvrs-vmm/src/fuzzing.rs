//! Entry points for the fuzz targets in `host-backend/fuzz` (cargo-fuzz,
//! nightly) and for replaying their corpus in ordinary tests
//! (`tests/fuzz_corpus.rs`, stable).
//!
//! The queue-based targets read their input as
//!
//! ```text
//! byte 0     bits 0-3: log2 of the queue size (max 8), bit 4: EVENT_IDX,
//!            bit 5: read-only disk (blk), bits 6-7: device-specific
//! bytes 1-2  the device's next available index (le16)
//! rest       guest memory from address 0 (at most MEM_SIZE bytes)
//! ```
//!
//! with the descriptor table at [`DESC`], the available ring at [`AVAIL`]
//! and the used ring at [`USED`] (they may overlap for big queues: a guest
//! may do that too). Everything a guest controls is in the input; the
//! device must neither panic nor touch memory outside the guest's.

use std::collections::VecDeque;
use std::io;
use std::os::unix::io::RawFd;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::BalloonConfig;
use crate::devices::bus::BusDevice;
use crate::virtio::balloon::Balloon;
use crate::virtio::block::{Block, MemDisk};
use crate::virtio::chain::{validate_chain, ChainLimits};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::net::{Net, PacketIo, TUN_F_CSUM, TUN_F_TSO4};
use crate::virtio::queue::VirtQueue;
use crate::virtio::{DeviceCounters, DeviceCtx, Interrupt, VirtioDevice};

/// Guest memory size of the fuzzed VM.
pub const MEM_SIZE: usize = 0x1_0000;
/// The descriptor table.
pub const DESC: u64 = 0x0;
/// The available ring.
pub const AVAIL: u64 = 0x100;
/// The used ring.
pub const USED: u64 = 0x300;

/// A queue set up from the input header.
pub struct Setup {
    /// Guest memory, filled from the input.
    pub mem: GuestMemoryMmap,
    /// The first header byte.
    pub flags: u8,
    size: u16,
    next_avail: u16,
}

impl Setup {
    /// Parses the header and fills memory; `None` if the input is too short.
    pub fn new(data: &[u8]) -> Option<Setup> {
        if data.len() < 3 {
            return None;
        }
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let image = &data[3..data.len().min(3 + MEM_SIZE)];
        mem.write_slice(image, GuestAddress(0)).ok()?;
        Some(Setup {
            mem,
            flags: data[0],
            size: 1 << (data[0] & 0xf).min(8),
            next_avail: u16::from_le_bytes([data[1], data[2]]),
        })
    }

    /// A ready queue with the input's size, index and EVENT_IDX setting.
    pub fn queue(&self, limits: ChainLimits) -> VirtQueue {
        let mut q = VirtQueue::new(256, limits);
        q.queue.set_size(self.size);
        q.queue.set_desc_table_address(Some(DESC as u32), Some(0));
        q.queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.queue.set_used_ring_address(Some(USED as u32), Some(0));
        q.queue.set_event_idx(self.flags & 0x10 != 0);
        q.queue.set_next_avail(self.next_avail);
        q.queue.set_ready(true);
        q
    }
}

fn interrupt() -> Interrupt {
    Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"))
}

/// The chain validator and the queue wrapper: every accepted chain must be
/// in memory, non-overlapping, readable before writable, within limits.
pub fn virtqueue(data: &[u8]) {
    let Some(s) = Setup::new(data) else {
        return;
    };
    let limits = ChainLimits {
        max_descriptors: 64,
        max_bytes: 1 << 14,
    };
    let mut q = s.queue(limits);
    let counters = DeviceCounters::default();
    let mut rounds = 0;
    q.process(&s.mem, "fuzz", &counters, |popped| {
        rounds += 1;
        let Ok(chain) = popped else {
            return 0;
        };
        let mut all: Vec<_> = chain.readable.iter().chain(&chain.writable).collect();
        assert!(all.len() <= limits.max_descriptors);
        assert!(chain.readable_len() + chain.writable_len() <= limits.max_bytes);
        all.sort_by_key(|seg| seg.addr.0);
        for w in all.windows(2) {
            assert!(w[0].addr.0 + u64::from(w[0].len) <= w[1].addr.0);
        }
        for seg in &all {
            assert!(seg.len > 0 && seg.addr.0 + u64::from(seg.len) <= MEM_SIZE as u64);
        }
        let (a, b) = crate::virtio::chain::split_at(&chain.writable, (rounds as u64) % 7);
        assert_eq!(
            a.iter().chain(&b).map(|x| u64::from(x.len)).sum::<u64>(),
            chain.writable_len()
        );
        chain.writable_len() as u32
    });
    assert!(rounds <= usize::from(s.size) + 1 || q.is_broken());
    // Also walk one chain directly from the first avail entry.
    let mut raw = s.queue(limits);
    if let Ok(mut it) = virtio_queue::QueueOwnedT::iter(&mut raw.queue, &s.mem) {
        if let Some(chain) = it.next() {
            let _ = validate_chain(chain, &limits);
        }
    }
}

/// The virtio-blk request parser and executor on a 64 KiB in-memory disk.
pub fn blk(data: &[u8]) {
    let Some(s) = Setup::new(data) else {
        return;
    };
    let disk = MemDisk {
        data: vec![0x5a; 64 << 10],
        flushes: 0,
    };
    let mut dev = Block::new("fuzz-blk".into(), disk, s.flags & 0x20 != 0, "fuzz");
    let irq = interrupt();
    let mut queues = [s.queue(Block::<MemDisk>::chain_limits())];
    let mut ctx = DeviceCtx {
        mem: &s.mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    dev.process_queue(0, &mut ctx);
    assert_eq!(dev.disk().data.len(), 64 << 10);
}

/// A packet back end fed from the input.
#[derive(Default)]
pub struct FuzzIo {
    /// Packets to receive.
    pub incoming: VecDeque<Vec<u8>>,
    /// Packets sent.
    pub sent: usize,
}

impl PacketIo for FuzzIo {
    fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }
    fn write_packet(&mut self, buf: &[u8]) -> io::Result<()> {
        assert!(buf.len() <= crate::virtio::net::MAX_BUFFER);
        self.sent += 1;
        Ok(())
    }
    fn supported_offloads(&self) -> u32 {
        TUN_F_CSUM | TUN_F_TSO4
    }
    fn set_offloads(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
}

/// virtio-net: the same queue image serves as receive queue (fed with a
/// few packets whose sizes come from the input) and as transmit queue
/// (bit 6 of the flags picks which runs first).
pub fn net(data: &[u8]) {
    let Some(s) = Setup::new(data) else {
        return;
    };
    let mut io = FuzzIo::default();
    for (i, &b) in data.iter().take(4).enumerate() {
        io.incoming
            .push_back(vec![i as u8; 12 + usize::from(b) * 37]);
    }
    let mut dev = Net::with_io("fuzz-net".into(), io, None);
    let irq = interrupt();
    let limits = ChainLimits {
        max_descriptors: 256,
        max_bytes: 2 * crate::virtio::net::MAX_BUFFER as u64,
    };
    let mut queues = [s.queue(limits), s.queue(limits)];
    let mut ctx = DeviceCtx {
        mem: &s.mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    let order = if s.flags & 0x40 != 0 { [1, 0] } else { [0, 1] };
    for index in order {
        dev.process_queue(index, &mut ctx);
    }
}

/// virtio-balloon: inflate (or deflate, by bit 6) page lists, then the
/// statistics queue.
pub fn balloon(data: &[u8]) {
    let Some(s) = Setup::new(data) else {
        return;
    };
    let Ok(mut dev) = Balloon::new("fuzz-balloon".into(), &BalloonConfig::default()) else {
        return;
    };
    let irq = interrupt();
    let limits = Balloon::chain_limits();
    let mut queues = [s.queue(limits), s.queue(limits), s.queue(limits)];
    let mut ctx = DeviceCtx {
        mem: &s.mem,
        queues: &mut queues,
        interrupt: &irq,
    };
    let first = usize::from(s.flags & 0x40 != 0);
    dev.process_queue(first, &mut ctx);
    dev.process_queue(2, &mut ctx);
    let _ = dev.control(&["balloon-stats"], Some(&mut ctx));
    dev.process_queue(1 - first, &mut ctx);
    assert!(dev.inflated_pages() <= MEM_SIZE >> 12);
}

/// The virtio-mmio transport with a block device: the input is a memory
/// image length (le16), the image, then 8-byte operations
/// `[op, size, offset le16, value le32]`: register/config reads and
/// writes of 1, 2, 4 or 8 bytes, and queue notifications.
pub fn mmio(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let len = usize::from(u16::from_le_bytes([data[0], data[1]]))
        .min(data.len() - 2)
        .min(MEM_SIZE);
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]) else {
        return;
    };
    if mem.write_slice(&data[2..2 + len], GuestAddress(0)).is_err() {
        return;
    }
    let mem = std::sync::Arc::new(mem);
    let disk = MemDisk {
        data: vec![0; 16 << 10],
        flushes: 0,
    };
    let dev = Block::new("fuzz-mmio-blk".into(), disk, false, "fuzz");
    let Ok(irq) = EventFd::new(EFD_NONBLOCK) else {
        return;
    };
    let Ok(mut t) = MmioTransport::new(Box::new(dev), mem, irq, Block::<MemDisk>::chain_limits())
    else {
        return;
    };
    for op in data[2 + len..].chunks_exact(8) {
        let size = [1usize, 2, 4, 8][usize::from(op[1] & 3)];
        let offset = u64::from(u16::from_le_bytes([op[2], op[3]]) & 0xfff);
        let value = u64::from(u32::from_le_bytes([op[4], op[5], op[6], op[7]]));
        match op[0] % 4 {
            0 => {
                let mut buf = [0u8; 8];
                t.read(offset, &mut buf[..size]);
            }
            1 | 2 => t.write(offset, &value.to_le_bytes()[..size]),
            _ => t.process_queue(usize::from(op[4] & 1)),
        }
    }
}
