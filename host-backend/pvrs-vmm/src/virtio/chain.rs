//! Validation of descriptor chains taken from a split virtqueue (virtio
//! 1.2 §2.7.5 "The Virtqueue Descriptor Table", §2.7.5.3 "Indirect
//! Descriptors", §2.7.4 "Message Framing").
//!
//! The guest is not trusted. `virtio-queue`'s [`DescriptorChain`] walks a
//! chain, following indirect tables and bounding the walk by the table size
//! (so loops end), but it ends a bad chain silently. [`validate_chain`]
//! walks it and rejects every chain that is not a clean list of buffers:
//!
//! * no descriptor at all (bad head index, unreadable table);
//! * cut short: the last descriptor read still has `NEXT` set (a loop, a
//!   `next` index past the table, an unreadable or nested indirect table,
//!   a byte count overflowing 32 bits);
//! * more descriptors than the device allows;
//! * a zero-length buffer;
//! * a buffer not entirely inside guest RAM;
//! * a device-readable buffer after a device-writable one (§2.7.4.2: "The
//!   driver MUST place any device-writable descriptor elements after any
//!   device-readable descriptor elements");
//! * two buffers overlapping each other;
//! * more bytes in total than the device allows.
//!
//! A validated [`Chain`] is what the device request parsers work on; they
//! never see raw descriptors.

use std::fmt;
use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, GuestAddress, GuestMemory, Permissions};

/// One guest buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes (never zero).
    pub len: u32,
}

impl Segment {
    fn end(&self) -> u64 {
        self.addr.raw_value() + u64::from(self.len)
    }
}

/// A validated descriptor chain: its head index and its buffers, the
/// device-readable ones first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor index, to return the chain with.
    pub head: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Segment>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Segment>,
}

impl Chain {
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Why a chain was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// No descriptor could be read.
    Empty,
    /// The chain ends in a descriptor that still has `NEXT` set.
    Truncated,
    /// More descriptors than the limit.
    TooManyDescriptors,
    /// Descriptor `index` (in chain order) has length 0.
    ZeroLength {
        /// Position in the chain.
        index: usize,
    },
    /// A buffer is not inside guest memory.
    OutOfMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// Descriptor `index` is device-readable but follows a device-writable one.
    ReadableAfterWritable {
        /// Position in the chain.
        index: usize,
    },
    /// Two buffers overlap.
    Overlap {
        /// Start of the first buffer.
        a: u64,
        /// Start of the buffer it overlaps.
        b: u64,
    },
    /// More bytes in total than the limit.
    TooLong(u64),
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Empty => write!(
                f,
                "empty chain (bad head index or unreadable descriptor table)"
            ),
            ChainError::Truncated => {
                write!(
                    f,
                    "chain cut short (loop, bad next index, or bad indirect table)"
                )
            }
            ChainError::TooManyDescriptors => write!(f, "too many descriptors"),
            ChainError::ZeroLength { index } => write!(f, "descriptor {index} has length 0"),
            ChainError::OutOfMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} is outside guest memory")
            }
            ChainError::ReadableAfterWritable { index } => {
                write!(
                    f,
                    "descriptor {index} is device-readable after a device-writable one"
                )
            }
            ChainError::Overlap { a, b } => write!(f, "buffers at {a:#x} and {b:#x} overlap"),
            ChainError::TooLong(n) => write!(f, "chain of {n} bytes is too long"),
        }
    }
}

impl std::error::Error for ChainError {}

/// Device-specific bounds on a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLimits {
    /// The most descriptors a chain may have.
    pub max_descriptors: usize,
    /// The most bytes (readable plus writable) a chain may carry.
    pub max_bytes: u64,
}

impl Default for ChainLimits {
    fn default() -> Self {
        ChainLimits {
            max_descriptors: 1024,
            max_bytes: 1 << 30,
        }
    }
}

/// Walks `chain` and returns its buffers, or why it is unusable.
pub fn validate_chain<M>(
    chain: DescriptorChain<M>,
    limits: &ChainLimits,
) -> Result<Chain, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mem = chain.memory();
    let mut out = Chain {
        head,
        ..Default::default()
    };
    let mut total: u64 = 0;
    let mut last_has_next = false;
    let mut count = 0usize;
    for (index, desc) in chain.clone().enumerate() {
        count += 1;
        if count > limits.max_descriptors {
            return Err(ChainError::TooManyDescriptors);
        }
        last_has_next = desc.has_next();
        let seg = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if seg.len == 0 {
            return Err(ChainError::ZeroLength { index });
        }
        let access = if desc.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        let in_memory = seg.addr.checked_add(u64::from(seg.len)).is_some()
            && mem.check_range(seg.addr, seg.len as usize, access);
        if !in_memory {
            return Err(ChainError::OutOfMemory {
                addr: seg.addr.raw_value(),
                len: seg.len,
            });
        }
        total += u64::from(seg.len);
        if total > limits.max_bytes {
            return Err(ChainError::TooLong(total));
        }
        if desc.is_write_only() {
            out.writable.push(seg);
        } else {
            if !out.writable.is_empty() {
                return Err(ChainError::ReadableAfterWritable { index });
            }
            out.readable.push(seg);
        }
    }
    if count == 0 {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Truncated);
    }
    check_overlaps(&out)?;
    Ok(out)
}

fn check_overlaps(chain: &Chain) -> Result<(), ChainError> {
    let mut all: Vec<Segment> = chain
        .readable
        .iter()
        .chain(&chain.writable)
        .copied()
        .collect();
    all.sort_unstable_by_key(|s| s.addr.raw_value());
    for w in all.windows(2) {
        if w[0].end() > w[1].addr.raw_value() {
            return Err(ChainError::Overlap {
                a: w[0].addr.raw_value(),
                b: w[1].addr.raw_value(),
            });
        }
    }
    Ok(())
}

/// Splits a list of buffers at byte `offset`: the buffers before it and the
/// buffers from it on (a buffer containing `offset` is cut in two). If
/// `offset` is past the end, the second list is empty.
pub fn split_at(segs: &[Segment], offset: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = offset;
    for s in segs {
        let len = u64::from(s.len);
        if left == 0 {
            tail.push(*s);
        } else if left >= len {
            head.push(*s);
            left -= len;
        } else {
            head.push(Segment {
                addr: s.addr,
                len: left as u32,
            });
            tail.push(Segment {
                addr: s.addr.unchecked_add(left),
                len: (len - left) as u32,
            });
            left = 0;
        }
    }
    (head, tail)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestMemoryMmap};

    pub const MEM_SIZE: usize = 0x10_0000;
    pub const R: u16 = 0;
    pub const W: u16 = VRING_DESC_F_WRITE as u16;
    pub const N: u16 = VRING_DESC_F_NEXT as u16;

    pub fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    /// Puts raw descriptors in a 16-entry queue's table, makes descriptor
    /// `head` available and returns the queue.
    pub fn queue_with(m: &GuestMemoryMmap, descs: &[(u64, u32, u16, u16)], head: u16) -> Queue {
        let vq = MockSplitQueue::new(m, 16);
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            m.write_obj(d, vq.desc_table_addr().unchecked_add(16 * i as u64))
                .unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(u16::to_le(head));
        vq.avail().idx().store(u16::to_le(1));
        vq.create_queue().unwrap()
    }

    pub fn validate(
        descs: &[(u64, u32, u16, u16)],
        head: u16,
        limits: &ChainLimits,
    ) -> Result<Chain, ChainError> {
        let m = mem();
        let mut q = queue_with(&m, descs, head);
        let chain = q.iter(&m).unwrap().next().unwrap();
        validate_chain(chain, limits)
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn good_chain() {
        let c = validate(
            &[
                (0x8000, 16, R | N, 1),
                (0x9000, 512, W | N, 2),
                (0xa000, 1, W, 0),
            ],
            0,
            &ChainLimits::default(),
        )
        .unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(c.readable, vec![seg(0x8000, 16)]);
        assert_eq!(c.writable, vec![seg(0x9000, 512), seg(0xa000, 1)]);
        assert_eq!((c.readable_len(), c.writable_len()), (16, 513));
    }

    #[test]
    fn loop_is_truncated() {
        let e = validate(
            &[(0x8000, 16, R | N, 1), (0x9000, 16, R | N, 0)],
            0,
            &ChainLimits::default(),
        );
        assert_eq!(e, Err(ChainError::Truncated));
        let self_loop = validate(&[(0x8000, 16, R | N, 0)], 0, &ChainLimits::default());
        assert_eq!(self_loop, Err(ChainError::Truncated));
    }

    #[test]
    fn bad_next_index_is_truncated() {
        let e = validate(&[(0x8000, 16, R | N, 99)], 0, &ChainLimits::default());
        assert_eq!(e, Err(ChainError::Truncated));
    }

    #[test]
    fn bad_head_index_is_empty() {
        let e = validate(&[(0x8000, 16, R, 0)], 40, &ChainLimits::default());
        assert_eq!(e, Err(ChainError::Empty));
    }

    #[test]
    fn zero_length() {
        let e = validate(
            &[(0x8000, 16, R | N, 1), (0x9000, 0, W, 0)],
            0,
            &ChainLimits::default(),
        );
        assert_eq!(e, Err(ChainError::ZeroLength { index: 1 }));
    }

    #[test]
    fn out_of_memory() {
        let limits = ChainLimits::default();
        let past_end = validate(&[(MEM_SIZE as u64 - 8, 16, R, 0)], 0, &limits);
        assert_eq!(
            past_end,
            Err(ChainError::OutOfMemory {
                addr: MEM_SIZE as u64 - 8,
                len: 16
            })
        );
        let wrap = validate(&[(u64::MAX - 4, 16, R, 0)], 0, &limits);
        assert!(matches!(wrap, Err(ChainError::OutOfMemory { .. })));
        let far = validate(&[(1 << 40, 16, W, 0)], 0, &limits);
        assert!(matches!(far, Err(ChainError::OutOfMemory { .. })));
    }

    #[test]
    fn readable_after_writable() {
        let e = validate(
            &[(0x8000, 16, W | N, 1), (0x9000, 16, R, 0)],
            0,
            &ChainLimits::default(),
        );
        assert_eq!(e, Err(ChainError::ReadableAfterWritable { index: 1 }));
    }

    #[test]
    fn overlap() {
        let e = validate(
            &[(0x8000, 0x100, R | N, 1), (0x80ff, 16, W, 0)],
            0,
            &ChainLimits::default(),
        );
        assert_eq!(
            e,
            Err(ChainError::Overlap {
                a: 0x8000,
                b: 0x80ff
            })
        );
        // Adjacent is fine.
        validate(
            &[(0x8000, 0x100, R | N, 1), (0x8100, 16, W, 0)],
            0,
            &ChainLimits::default(),
        )
        .unwrap();
    }

    #[test]
    fn limits() {
        let descs = [
            (0x8000, 16, R | N, 1),
            (0x9000, 16, R | N, 2),
            (0xa000, 16, R, 0),
        ];
        let few = ChainLimits {
            max_descriptors: 2,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            validate(&descs, 0, &few),
            Err(ChainError::TooManyDescriptors)
        );
        let short = ChainLimits {
            max_descriptors: 16,
            max_bytes: 40,
        };
        assert_eq!(validate(&descs, 0, &short), Err(ChainError::TooLong(48)));
    }

    #[test]
    fn indirect_table() {
        let m = mem();
        // Indirect table at 0x4000 with two descriptors.
        let table = [(0x8000u64, 16u32, R | N, 1u16), (0x9000, 4, W, 0)];
        for (i, &(a, l, f, n)) in table.iter().enumerate() {
            m.write_obj(
                RawDescriptor::from(Descriptor::new(a, l, f, n)),
                GuestAddress(0x4000 + 16 * i as u64),
            )
            .unwrap();
        }
        let mut q = queue_with(&m, &[(0x4000, 32, VRING_DESC_F_INDIRECT as u16, 0)], 0);
        let c =
            validate_chain(q.iter(&m).unwrap().next().unwrap(), &ChainLimits::default()).unwrap();
        assert_eq!(c.readable, vec![seg(0x8000, 16)]);
        assert_eq!(c.writable, vec![seg(0x9000, 4)]);

        // A table whose length is not a multiple of 16 is refused.
        let mut q = queue_with(&m, &[(0x4000, 20, VRING_DESC_F_INDIRECT as u16, 0)], 0);
        let e = validate_chain(q.iter(&m).unwrap().next().unwrap(), &ChainLimits::default());
        assert_eq!(e, Err(ChainError::Empty));

        // A nested indirect descriptor is refused.
        m.write_obj(
            RawDescriptor::from(Descriptor::new(0x4000, 32, VRING_DESC_F_INDIRECT as u16, 0)),
            GuestAddress(0x4000 + 16),
        )
        .unwrap();
        let mut q = queue_with(&m, &[(0x4000, 32, VRING_DESC_F_INDIRECT as u16, 0)], 0);
        let e = validate_chain(q.iter(&m).unwrap().next().unwrap(), &ChainLimits::default());
        assert_eq!(e, Err(ChainError::Truncated));
    }

    #[test]
    fn split_segments() {
        let segs = [seg(0x1000, 16), seg(0x2000, 100)];
        assert_eq!(
            split_at(&segs, 16),
            (vec![seg(0x1000, 16)], vec![seg(0x2000, 100)])
        );
        assert_eq!(
            split_at(&segs, 10),
            (
                vec![seg(0x1000, 10)],
                vec![seg(0x100a, 6), seg(0x2000, 100)]
            )
        );
        assert_eq!(
            split_at(&segs, 20),
            (vec![seg(0x1000, 16), seg(0x2000, 4)], vec![seg(0x2004, 96)])
        );
        assert_eq!(split_at(&segs, 0), (vec![], segs.to_vec()));
        assert_eq!(split_at(&segs, 500), (segs.to_vec(), vec![]));
    }
}
