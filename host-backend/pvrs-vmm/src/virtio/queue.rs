//! One split virtqueue as a device sees it (virtio 1.2 §2.7): the
//! `virtio-queue` [`Queue`] plus chain validation, and a "broken" state for
//! drivers that violate the ring protocol.
//!
//! A bad *chain* costs the driver that request only: it is returned on the
//! used ring with length 0 (or, where the device can still locate a status
//! byte, with an error status) and counted. A bad *ring* - an available
//! index more than the queue size ahead, a head index outside the table, a
//! used ring that cannot be written - leaves no safe way to go on: the
//! queue is marked broken, stops being processed until the device is reset,
//! and the transport reports `DEVICE_NEEDS_RESET` (§2.1.2).

use std::num::Wrapping;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{validate_chain, Chain, ChainError, ChainLimits};

use super::DeviceCounters;

/// Fault injection for testing guest drivers (`--hostile-used-len N`):
/// every Nth used-ring entry, over all queues, claims
/// [`HOSTILE_EXTRA_LEN`] more bytes than the device wrote. 0 is off.
static HOSTILE_USED_LEN_EVERY: AtomicU32 = AtomicU32::new(0);
static USED_ENTRIES: AtomicU32 = AtomicU32::new(0);
/// What a hostile used entry adds to the length.
pub const HOSTILE_EXTRA_LEN: u32 = 64 * 1024;

/// Makes every `every`th used entry lie about its length (0: never).
pub fn set_hostile_used_len(every: u32) {
    HOSTILE_USED_LEN_EVERY.store(every, Ordering::Relaxed);
}

/// The length to report for an entry with `len` bytes written.
fn reported_len(len: u32) -> u32 {
    let every = HOSTILE_USED_LEN_EVERY.load(Ordering::Relaxed);
    if every == 0 {
        return len;
    }
    let n = USED_ENTRIES.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let reported = hostile_len(len, every, n);
    if reported != len {
        log::warn!("hostile: used entry {n} claims {reported} bytes, {len} written");
    }
    reported
}

/// The length the `n`th used entry (from 1) reports when every `every`th
/// lies.
fn hostile_len(len: u32, every: u32, n: u32) -> u32 {
    if every != 0 && n % every == 0 {
        len.saturating_add(HOSTILE_EXTRA_LEN)
    } else {
        len
    }
}

/// A chain popped from the available ring: validated, or refused.
pub type Popped = Result<Chain, (u16, ChainError)>;

/// A virtqueue with validation.
pub struct VirtQueue {
    /// The ring state (addresses, size, indices) kept by `virtio-queue`.
    pub queue: Queue,
    limits: ChainLimits,
    broken: bool,
    used_added: bool,
}

impl VirtQueue {
    /// A queue of at most `max_size` entries (a power of two) whose chains
    /// must respect `limits`.
    pub fn new(max_size: u16, limits: ChainLimits) -> Self {
        let queue = Queue::new(max_size).unwrap_or_else(|_| {
            // Only reached for a bad constant; fall back to a valid size.
            Queue::new(256).expect("256 is a valid queue size")
        });
        VirtQueue {
            queue,
            limits,
            broken: false,
            used_added: false,
        }
    }

    /// Whether the driver broke the ring protocol.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Returns to the reset state.
    pub fn reset(&mut self) {
        self.queue.reset();
        self.broken = false;
        self.used_added = false;
    }

    fn mark_broken(&mut self, name: &str, counters: &DeviceCounters, why: &str) {
        if !self.broken {
            self.broken = true;
            DeviceCounters::bump(&counters.broken_queues);
            log::warn!("{name}: queue stopped until reset: {why}");
        }
    }

    /// The next available chain, validated; `None` when the ring is empty
    /// or the queue is broken. Refused chains are counted and logged.
    pub fn pop(
        &mut self,
        mem: &GuestMemoryMmap,
        name: &str,
        counters: &DeviceCounters,
    ) -> Option<Popped> {
        if self.broken || !self.queue.ready() {
            return None;
        }
        let size = self.queue.size();
        let chain = match self.queue.iter(mem) {
            Ok(mut it) => it.next()?,
            Err(e) => {
                self.mark_broken(name, counters, &format!("available ring: {e}"));
                return None;
            }
        };
        let head = chain.head_index();
        if head >= size {
            self.mark_broken(
                name,
                counters,
                &format!("head index {head} outside a queue of {size}"),
            );
            return None;
        }
        match validate_chain(chain, &self.limits) {
            Ok(c) => Some(Ok(c)),
            Err(e) => {
                if DeviceCounters::bump(&counters.bad_chains) {
                    log::warn!("{name}: bad descriptor chain (head {head}): {e}");
                }
                Some(Err((head, e)))
            }
        }
    }

    /// Puts a chain on the used ring with `len` bytes written.
    pub fn add_used(
        &mut self,
        mem: &GuestMemoryMmap,
        head: u16,
        len: u32,
        name: &str,
        counters: &DeviceCounters,
    ) {
        if self.broken || !self.queue.ready() {
            return;
        }
        match self.queue.add_used(mem, head, reported_len(len)) {
            Ok(()) => self.used_added = true,
            Err(e) => self.mark_broken(name, counters, &format!("used ring: {e}")),
        }
    }

    /// Turns driver notifications off while the device is busy (with
    /// `EVENT_IDX`, moves the avail event).
    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) {
        if !self.broken && self.queue.ready() {
            let _ = self.queue.disable_notification(mem);
        }
    }

    /// Turns driver notifications back on; true if buffers arrived in the
    /// meantime and the device should look again.
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        if self.broken || !self.queue.ready() {
            return false;
        }
        self.queue.enable_notification(mem).unwrap_or(false)
    }

    /// Whether the driver should be interrupted for the used buffers added
    /// since the last call.
    pub fn take_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        if !std::mem::take(&mut self.used_added) || self.broken || !self.queue.ready() {
            return false;
        }
        self.queue.needs_notification(mem).unwrap_or(true)
    }

    /// How many chains the driver made available beyond the device's
    /// position (for tests and diagnostics).
    pub fn pending(&self, mem: &GuestMemoryMmap) -> u16 {
        match self.queue.avail_idx(mem, Ordering::Acquire) {
            Ok(idx) => (idx - Wrapping(self.queue.next_avail())).0,
            Err(_) => 0,
        }
    }

    /// Drains the available ring through `handle`, which returns the number
    /// of bytes written into each chain; refused chains go back with 0
    /// bytes. Keeps going until no buffers arrive during processing
    /// (notification race of §2.7.10).
    pub fn process<F>(
        &mut self,
        mem: &GuestMemoryMmap,
        name: &str,
        counters: &DeviceCounters,
        mut handle: F,
    ) where
        F: FnMut(Popped) -> u32,
    {
        loop {
            self.disable_notification(mem);
            while let Some(popped) = self.pop(mem, name, counters) {
                let head = match &popped {
                    Ok(c) => c.head,
                    Err((head, _)) => *head,
                };
                let len = handle(popped);
                self.add_used(mem, head, len, name, counters);
            }
            if !self.enable_notification(mem) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::chain::tests::{mem, queue_with, N, R, W};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn hostile_lengths_lie_every_nth_entry_only() {
        let lengths: Vec<u32> = (1..=8).map(|n| hostile_len(100, 4, n)).collect();
        let lie = 100 + HOSTILE_EXTRA_LEN;
        assert_eq!(lengths, [100, 100, 100, lie, 100, 100, 100, lie]);
        assert_eq!(hostile_len(100, 0, 4), 100);
        assert_eq!(hostile_len(u32::MAX, 1, 1), u32::MAX);
    }

    fn wrap(q: Queue) -> VirtQueue {
        let mut v = VirtQueue::new(16, ChainLimits::default());
        v.queue = q;
        v
    }

    #[test]
    fn good_and_bad_chains_are_returned() {
        let m = mem();
        let counters = DeviceCounters::default();
        let mut q = wrap(queue_with(
            &m,
            &[(0x8000, 16, R | N, 1), (0x9000, 1, W, 0)],
            0,
        ));
        let mut seen = Vec::new();
        q.process(&m, "t", &counters, |p| {
            seen.push(p.is_ok());
            1
        });
        assert_eq!(seen, vec![true]);
        assert!(q.take_notification(&m));
        assert!(!q.take_notification(&m));

        let mut q = wrap(queue_with(&m, &[(0x8000, 16, R | N, 0)], 0));
        q.process(&m, "t", &counters, |p| {
            assert_eq!(p, Err((0, ChainError::Truncated)));
            0
        });
        assert_eq!(counters.bad_chains.load(Ordering::Relaxed), 1);
        assert!(!q.is_broken());
    }

    #[test]
    fn avail_index_too_far_ahead_breaks_the_queue() {
        let m = mem();
        let counters = DeviceCounters::default();
        let vq = MockSplitQueue::new(&m, 16);
        vq.avail().idx().store(u16::to_le(40));
        let mut q = wrap(vq.create_queue().unwrap());
        assert!(q.pop(&m, "t", &counters).is_none());
        assert!(q.is_broken());
        assert_eq!(counters.broken_queues.load(Ordering::Relaxed), 1);
        q.reset();
        assert!(!q.is_broken());
    }

    #[test]
    fn head_index_outside_the_table_breaks_the_queue() {
        let m = mem();
        let counters = DeviceCounters::default();
        let mut q = wrap(queue_with(&m, &[(0x8000, 16, R, 0)], 300));
        assert!(q.pop(&m, "t", &counters).is_none());
        assert!(q.is_broken());
        // A broken queue takes no more work and adds nothing to the used ring.
        q.add_used(&m, 0, 0, "t", &counters);
        assert!(!q.take_notification(&m));
    }

    #[test]
    fn pending_counts_available_chains() {
        let m = mem();
        let q = wrap(queue_with(&m, &[(0x8000, 16, R, 0)], 0));
        assert_eq!(q.pending(&m), 1);
        let _ = m.read_obj::<u16>(GuestAddress(0)).unwrap();
    }
}
