//! virtio devices (virtio 1.2, "Virtual I/O Device Version 1.2", OASIS
//! Committee Specification 01).
//!
//! Every device implements [`VirtioDevice`] and knows nothing of how the
//! guest reaches it; the virtio-mmio transport ([`mmio`], §4.2) owns the
//! device registers, the feature negotiation (§2.2), the device status
//! (§2.1) and the virtqueues (§2.7), and calls into the device with a
//! [`DeviceCtx`] when a queue has work. Queues are split virtqueues handled
//! by the rust-vmm `virtio-queue` crate, wrapped by [`queue::VirtQueue`]
//! which validates every descriptor chain ([`chain`]) before a device sees
//! it.

pub mod balloon;
pub mod block;
pub mod chain;
pub mod mmio;
pub mod net;
pub mod queue;

use std::fmt;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use queue::VirtQueue;

/// The feature bits every pvrs device offers: `VIRTIO_F_VERSION_1` (§6.1),
/// indirect descriptors (§2.7.5.3) and used/avail event suppression
/// (§2.7.7, `VIRTIO_F_EVENT_IDX`).
pub const COMMON_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;

/// Interrupt status bit: a used ring was updated (§4.2.2 InterruptStatus).
pub const INT_USED_RING: u32 = VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the device configuration changed.
pub const INT_CONFIG: u32 = VIRTIO_MMIO_INT_CONFIG;

/// A device's interrupt line: the pending-reason bits the driver reads from
/// InterruptStatus, and the irqfd that raises the line in KVM.
pub struct Interrupt {
    status: AtomicU32,
    config_generation: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Sets `bits` in the status and raises the line.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            log::error!("raising a virtio interrupt: {e}");
        }
    }

    /// Signals that the device configuration changed (bumps the
    /// configuration generation first, §2.5.1).
    pub fn signal_config(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.signal(INT_CONFIG);
    }

    /// The pending bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The configuration generation (§4.2.2 ConfigGeneration).
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Clears the status, as a device reset does.
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The irqfd.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// Error and activity counters of one device, for the log and the control
/// socket's `status` command.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Descriptor chains refused by [`chain::validate_chain`].
    pub bad_chains: AtomicU64,
    /// Well-formed chains carrying an invalid request (bad type, bounds,
    /// directions, sizes).
    pub bad_requests: AtomicU64,
    /// Back-end I/O failures.
    pub io_errors: AtomicU64,
    /// Queues that stopped because the driver broke the ring protocol.
    pub broken_queues: AtomicU64,
}

impl DeviceCounters {
    /// Adds one to `counter` and says whether this occurrence should be
    /// logged (the first ten, then every power of two), so that a
    /// misbehaving guest cannot flood the log.
    pub fn bump(counter: &AtomicU64) -> bool {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        n <= 10 || n.is_power_of_two()
    }
}

impl fmt::Display for DeviceCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "requests={} bad_chains={} bad_requests={} io_errors={} broken_queues={}",
            g(&self.requests),
            g(&self.bad_chains),
            g(&self.bad_requests),
            g(&self.io_errors),
            g(&self.broken_queues)
        )
    }
}

/// What a device gets when it handles queue work.
pub struct DeviceCtx<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// The device's queues, in queue-index order.
    pub queues: &'a mut [VirtQueue],
    /// The device's interrupt.
    pub interrupt: &'a Interrupt,
}

impl DeviceCtx<'_> {
    /// Raises the used-ring interrupt if queue `index` asks for one
    /// (event-index suppression, §2.7.10).
    pub fn notify_queue(&mut self, index: usize) {
        if let Some(q) = self.queues.get_mut(index) {
            if q.take_notification(self.mem) {
                self.interrupt.signal(INT_USED_RING);
            }
        }
    }
}

/// A virtio device, independent of the transport.
pub trait VirtioDevice: Send {
    /// The device ID (§5).
    fn device_type(&self) -> u32;

    /// A short name for logs ("virtio-blk0").
    fn name(&self) -> &str;

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers.
    fn device_features(&self) -> u64;

    /// Called with the features the driver accepted, when the driver sets
    /// FEATURES_OK and they are a valid subset.
    fn ack_features(&mut self, features: u64);

    /// Reads device configuration space (§4.2.2, offset 0x100 on).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device configuration space. Most fields are read-only.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "{}: ignored config write at {offset:#x} ({} bytes)",
            self.name(),
            data.len()
        );
    }

    /// Called when the driver sets DRIVER_OK and all its queues are valid.
    fn activate(&mut self, _ctx: &mut DeviceCtx) -> Result<(), String> {
        Ok(())
    }

    /// Handles the buffers available on queue `index`.
    fn process_queue(&mut self, index: usize, ctx: &mut DeviceCtx);

    /// Further file descriptors the device wants to be woken for (tap,
    /// timers); watched edge-triggered.
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Handles readiness of `extra_fds()[index]`. Only called while the
    /// device is active.
    fn process_extra(&mut self, _index: usize, _ctx: &mut DeviceCtx) {}

    /// Called instead of [`VirtioDevice::process_extra`] while the device is
    /// not active: the device must consume the readiness of fds whose
    /// next edge would otherwise never come (timers).
    fn drain_extra(&mut self, _index: usize) {}

    /// Returns the device to its initial state (§2.4 "Device Reset").
    fn reset(&mut self);

    /// The device's counters.
    fn counters(&self) -> &DeviceCounters;

    /// Handles a control-socket command meant for this device; `None` if
    /// the command is not the device's.
    fn control(&mut self, _command: &[&str], _ctx: Option<&mut DeviceCtx>) -> Option<String> {
        None
    }
}

/// Reads `data.len()` bytes at `offset` of a configuration image, zero
/// beyond its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_bits() {
        let irq = Interrupt::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        irq.signal(INT_USED_RING);
        irq.signal_config();
        assert_eq!(irq.status(), INT_USED_RING | INT_CONFIG);
        assert_eq!(irq.config_generation(), 1);
        irq.ack(INT_USED_RING);
        assert_eq!(irq.status(), INT_CONFIG);
        assert_eq!(irq.irqfd().read().unwrap(), 2);
        irq.reset();
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3];
        let mut d = [0xffu8; 4];
        read_config_bytes(&cfg, 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn counters_rate_limit() {
        let c = DeviceCounters::default();
        let logged = (0..100)
            .filter(|_| DeviceCounters::bump(&c.bad_chains))
            .count();
        // 1..=10, then 16, 32, 64.
        assert_eq!(logged, 13);
        assert!(c.to_string().contains("bad_chains=100"));
    }
}
