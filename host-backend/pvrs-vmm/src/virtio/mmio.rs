//! The virtio-mmio transport, version 2 ("modern"), virtio 1.2 §4.2.2
//! "MMIO Device Register Layout" and §4.2.3 "MMIO-specific
//! Initialization And Device Operation".
//!
//! [`MmioTransport`] owns a [`VirtioDevice`], its queues and its interrupt.
//! vCPU threads reach it through the MMIO bus ([`BusDevice`]); the event
//! thread reaches it through `event-manager` ([`MutEventSubscriber`]) when a
//! queue is notified (an ioeventfd on QueueNotify with the queue index as
//! datamatch, so notifications do not leave KVM; on a KVM device without
//! ioeventfds the write is an MMIO exit and the transport signals the same
//! eventfd itself) or a device fd is ready.
//!
//! The driver is checked at every step of §3.1.1 "Driver Requirements:
//! Device Initialization": features it accepts must be offered and include
//! `VIRTIO_F_VERSION_1` (otherwise FEATURES_OK does not stick); queue
//! registers are only writable while the queue is not ready; at DRIVER_OK
//! every ready queue must lie in guest memory (§2.7 alignment and sizes
//! are checked by `virtio-queue`) or the device sets DEVICE_NEEDS_RESET.
//! A driver may stop a queue at any time by writing 0 to QueueReady
//! (§4.2.2.2); it stays stopped until the next reset.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::bindings::virtio_mmio::*;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::ChainLimits;
use super::queue::VirtQueue;
use super::{DeviceCtx, Interrupt, VirtioDevice};
use crate::devices::bus::BusDevice;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The transport version (2: virtio 1.x).
pub const MMIO_VERSION: u32 = 2;
/// The vendor ID reported: "PVRS".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"PVRS");
/// Event data of device fds starts here (below it: queue indices).
const EXTRA_EVENT_BASE: u32 = 0x1000;

/// The transport of one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemoryMmap>,
    interrupt: Arc<Interrupt>,
    queues: Vec<VirtQueue>,
    queue_evts: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    active: bool,
}

impl MmioTransport {
    /// A transport for `device`, raising interrupts through `irqfd`.
    /// `limits` gives the chain limits of each queue.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemoryMmap>,
        irqfd: EventFd,
        limits: ChainLimits,
    ) -> std::io::Result<Self> {
        let queues: Vec<VirtQueue> = device
            .queue_max_sizes()
            .iter()
            .map(|&max| VirtQueue::new(max, limits))
            .collect();
        let queue_evts = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irqfd)),
            queues,
            queue_evts,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            active: false,
        })
    }

    /// The queue notification eventfds, in queue order, to register as
    /// ioeventfds on QueueNotify.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The device.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the driver set DRIVER_OK and the device runs.
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn selected_queue(&mut self) -> Option<&mut VirtQueue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.active = false;
        self.interrupt.reset();
    }

    fn needs_reset(&mut self, why: &str) {
        log::warn!("{}: device needs reset: {why}", self.device.name());
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.interrupt.signal_config();
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let added = value & !old;
        // Bits may only be added (§2.1.1); clearing needs a reset.
        if old & !value & !VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            log::warn!(
                "{}: driver cleared status bits {:#x}; ignored",
                self.device.name(),
                old & !value
            );
            return;
        }
        let mut new = value | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device.device_features();
            let bad = self.driver_features & !offered;
            if old & VIRTIO_CONFIG_S_DRIVER == 0
                || bad != 0
                || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0
            {
                log::warn!(
                    "{}: refusing features {:#x} (offered {offered:#x})",
                    self.device.name(),
                    self.driver_features
                );
                new &= !VIRTIO_CONFIG_S_FEATURES_OK;
            } else {
                self.device.ack_features(self.driver_features);
            }
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 && new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.status = new;
            self.activate();
            return;
        }
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            log::warn!(
                "{}: the driver gave up on the device (FAILED)",
                self.device.name()
            );
        }
        self.status = new;
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features
            & (1 << virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            q.queue.set_event_idx(event_idx);
            if q.queue.ready() && !q.queue.is_valid(self.mem.as_ref()) {
                let why = format!("queue {i} is not inside guest memory");
                self.needs_reset(&why);
                return;
            }
        }
        let mut ctx = DeviceCtx {
            mem: self.mem.as_ref(),
            queues: &mut self.queues,
            interrupt: &self.interrupt,
        };
        match self.device.activate(&mut ctx) {
            Ok(()) => {
                self.active = true;
                log::info!(
                    "{}: activated, features {:#x}",
                    self.device.name(),
                    self.driver_features
                );
                // Buffers made available before DRIVER_OK are looked at now.
                for evt in &self.queue_evts {
                    let _ = evt.write(1);
                }
            }
            Err(e) => self.needs_reset(&format!("activation failed: {e}")),
        }
    }

    fn read_register(&mut self, offset: u32) -> u32 {
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self
                .selected_queue()
                .map_or(0, |q| u32::from(q.queue.max_size())),
            VIRTIO_MMIO_QUEUE_READY => self
                .selected_queue()
                .map_or(0, |q| u32::from(q.queue.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_QUEUE_DESC_LOW => self
                .selected_queue()
                .map_or(0, |q| q.queue.desc_table() as u32),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.queue.desc_table() >> 32) as u32),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => self
                .selected_queue()
                .map_or(0, |q| q.queue.avail_ring() as u32),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.queue.avail_ring() >> 32) as u32),
            VIRTIO_MMIO_QUEUE_USED_LOW => self
                .selected_queue()
                .map_or(0, |q| q.queue.used_ring() as u32),
            VIRTIO_MMIO_QUEUE_USED_HIGH => self
                .selected_queue()
                .map_or(0, |q| (q.queue.used_ring() >> 32) as u32),
            // No shared memory regions: length and base read as all ones.
            VIRTIO_MMIO_SHM_LEN_LOW
            | VIRTIO_MMIO_SHM_LEN_HIGH
            | VIRTIO_MMIO_SHM_BASE_LOW
            | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                log::debug!(
                    "{}: read of unknown register {offset:#x}",
                    self.device.name()
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, v: u32) {
        let driver_set_up = self.status & VIRTIO_CONFIG_S_DRIVER != 0
            && self.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED) == 0;
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if driver_set_up && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(v)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | u64::from(v) << 32
                        }
                        _ => {}
                    }
                } else {
                    log::warn!(
                        "{}: driver features written in status {:#x}; ignored",
                        self.device.name(),
                        self.status
                    );
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_register(offset, v, driver_set_up),
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                // Only reached when the ioeventfd is not registered.
                match self.queue_evts.get(v as usize) {
                    Some(evt) => {
                        let _ = evt.write(1);
                    }
                    None => log::debug!("{}: notify of unknown queue {v}", self.device.name()),
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.set_status(v),
            VIRTIO_MMIO_SHM_SEL => self.shm_sel = v,
            _ => log::debug!(
                "{}: write of unknown register {offset:#x}",
                self.device.name()
            ),
        }
    }

    fn write_queue_register(&mut self, offset: u32, v: u32, driver_set_up: bool) {
        let name = self.device.name().to_string();
        let Some(q) = self.queues.get_mut(self.queue_sel as usize) else {
            log::debug!(
                "{name}: queue register write for missing queue {}",
                self.queue_sel
            );
            return;
        };
        if offset == VIRTIO_MMIO_QUEUE_READY {
            // §4.2.2.2: "To stop using the queue the driver MUST write zero
            // (0x0) to this QueueReady and MUST read the value back to
            // ensure synchronization", at any time, also after DRIVER_OK
            // (drivers do so on teardown before the reset). Every device
            // path checks `ready()`, so the queue is left alone from now on.
            // Enabling is part of setup only: enabling again after
            // DRIVER_OK would be a queue reset (§2.6.1, VIRTIO_F_RING_RESET,
            // not offered).
            if v == 0 {
                if q.queue.ready() && self.active {
                    log::debug!("{name}: queue {} stopped by the driver", self.queue_sel);
                }
                q.queue.set_ready(false);
            } else if driver_set_up {
                q.queue.set_ready(v == 1);
            } else {
                log::warn!(
                    "{name}: queue {} enabled outside driver setup; ignored",
                    self.queue_sel
                );
            }
            return;
        }
        if q.queue.ready() {
            log::warn!(
                "{name}: queue {} register {offset:#x} written while ready; ignored",
                self.queue_sel
            );
            return;
        }
        if !driver_set_up {
            if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
                // A stopped queue's registers cleared on teardown: they are
                // write-only (§4.2.2 table 4.1) and the queue cannot be
                // enabled again before a reset, so the values do not matter.
                log::debug!("{name}: stopped queue register {offset:#x} written; ignored");
            } else {
                log::warn!(
                    "{name}: queue register {offset:#x} written outside driver setup; ignored"
                );
            }
            return;
        }
        let q = &mut q.queue;
        match offset {
            VIRTIO_MMIO_QUEUE_NUM => {
                let size = u16::try_from(v).unwrap_or(0);
                if let Err(e) = q.try_set_size(size) {
                    log::warn!("{name}: invalid queue size {v}: {e}");
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => {}
        }
    }

    fn ctx(&mut self) -> (&mut Box<dyn VirtioDevice>, DeviceCtx<'_>) {
        (
            &mut self.device,
            DeviceCtx {
                mem: self.mem.as_ref(),
                queues: &mut self.queues,
                interrupt: &self.interrupt,
            },
        )
    }

    /// Handles a notification of queue `index` (from its eventfd).
    pub fn process_queue(&mut self, index: usize) {
        if !self.active || self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return;
        }
        let (device, mut ctx) = self.ctx();
        device.process_queue(index, &mut ctx);
        if self.queues.get(index).is_some_and(|q| q.is_broken()) {
            self.needs_reset(&format!("queue {index} broken"));
        }
    }

    /// Handles readiness of device fd `index`.
    pub fn process_extra(&mut self, index: usize) {
        if !self.active || self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.device.drain_extra(index);
            return;
        }
        let (device, mut ctx) = self.ctx();
        device.process_extra(index, &mut ctx);
        if self.queues.iter().any(|q| q.is_broken()) {
            self.needs_reset("a queue broke");
        }
    }

    /// Passes a control command to the device.
    pub fn control(&mut self, command: &[&str]) -> Option<String> {
        let active = self.active;
        let (device, mut ctx) = self.ctx();
        device.control(command, if active { Some(&mut ctx) } else { None })
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        // Registers below the configuration space take 32-bit accesses only.
        if data.len() != 4 || offset % 4 != 0 {
            data.fill(0);
            log::debug!(
                "{}: {}-byte register read at {offset:#x} ignored",
                self.device.name(),
                data.len()
            );
            return;
        }
        let v = self.read_register(offset as u32);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "{}: {}-byte register write at {offset:#x} ignored",
                self.device.name(),
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        self.write_register(offset as u32, u32::from_le_bytes(bytes));
    }
}

impl MutEventSubscriber for MmioTransport {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let data = events.data();
        if data < EXTRA_EVENT_BASE {
            let index = data as usize;
            if let Some(evt) = self.queue_evts.get(index) {
                // Drain the counter; several notifications make one pass.
                let _ = evt.read();
                self.process_queue(index);
            }
        } else {
            self.process_extra((data - EXTRA_EVENT_BASE) as usize);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                log::error!("{}: watching queue {i}: {e:?}", self.device.name());
            }
        }
        for (i, fd) in self.device.extra_fds().into_iter().enumerate() {
            let ev = Events::with_data_raw(
                fd,
                EXTRA_EVENT_BASE + i as u32,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            );
            if let Err(e) = ops.add(ev) {
                log::error!("{}: watching fd {fd}: {e:?}", self.device.name());
            }
        }
    }
}

/// The raw fd of an eventfd, for ioeventfd registration.
pub fn raw(evt: &EventFd) -> RawFd {
    evt.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::{Block, MemDisk};
    use crate::virtio::COMMON_FEATURES;
    use virtio_bindings::bindings::virtio_blk::VIRTIO_BLK_T_IN;
    use virtio_bindings::bindings::virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;
    use vm_memory::{Bytes, GuestAddress};

    fn transport() -> (MmioTransport, Arc<GuestMemoryMmap>, EventFd) {
        let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap());
        let disk = MemDisk {
            data: vec![0x5a; 4096],
            flushes: 0,
        };
        let dev = Block::new("vda".into(), disk, false, "id");
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(
            Box::new(dev),
            mem.clone(),
            irq.try_clone().unwrap(),
            Block::<MemDisk>::chain_limits(),
        )
        .unwrap();
        (t, mem, irq)
    }

    fn rd(t: &mut MmioTransport, off: u32) -> u32 {
        let mut d = [0u8; 4];
        t.read(u64::from(off), &mut d);
        u32::from_le_bytes(d)
    }

    fn wr(t: &mut MmioTransport, off: u32, v: u32) {
        t.write(u64::from(off), &v.to_le_bytes());
    }

    /// The Linux virtio_mmio probe sequence up to DRIVER_OK, with a
    /// 16-entry queue at 0x1000/0x2000/0x3000.
    fn bring_up(t: &mut MmioTransport) {
        assert_eq!(rd(t, VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
        assert_eq!(rd(t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(rd(t, VIRTIO_MMIO_DEVICE_ID), 2);
        wr(t, VIRTIO_MMIO_STATUS, 0);
        wr(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        wr(
            t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        let hi = rd(t, VIRTIO_MMIO_DEVICE_FEATURES);
        wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let lo = rd(t, VIRTIO_MMIO_DEVICE_FEATURES);
        let features = u64::from(hi) << 32 | u64::from(lo);
        assert_eq!(features & COMMON_FEATURES, COMMON_FEATURES);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, hi);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        wr(t, VIRTIO_MMIO_DRIVER_FEATURES, lo);
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        wr(t, VIRTIO_MMIO_STATUS, s);
        assert_eq!(rd(t, VIRTIO_MMIO_STATUS), s);
        wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        wr(t, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(t, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
    }

    #[test]
    fn linux_style_bring_up_and_a_read() {
        let (mut t, mem, irq) = transport();
        bring_up(&mut t);
        assert!(t.is_active());
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        // Config space: capacity 8 sectors.
        let mut cap = [0u8; 8];
        t.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);

        // A read request: header, 512 bytes, status.
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        mem.write_slice(&h, GuestAddress(0x8000)).unwrap();
        let (n, w) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16);
        for (i, d) in [
            (0x8000u64, 16u32, n, 1u16),
            (0x9000, 512, w | n, 2),
            (0xa000, 1, w, 0),
        ]
        .iter()
        .enumerate()
        {
            let raw = RawDescriptor::from(Descriptor::new(d.0, d.1, d.2, d.3));
            mem.write_obj(raw, GuestAddress(0x1000 + 16 * i as u64))
                .unwrap();
        }
        mem.write_obj(0u16, GuestAddress(0x2004)).unwrap(); // ring[0] = head 0
        mem.write_obj(1u16, GuestAddress(0x2002)).unwrap(); // avail idx = 1
        let _ = irq.read();
        t.process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 1); // used idx
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x3008)).unwrap(), 513);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 0x5a);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 1);
        assert!(irq.read().unwrap() >= 1);
        wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 1);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

        // Reset.
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
        assert!(!t.is_active());
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    }

    #[test]
    fn driver_can_stop_a_queue_after_driver_ok() {
        // The teardown of the virtio-drivers crate (its MmioTransport's
        // queue_unset): QueueReady 0, read back until 0, clear the queue
        // registers, then reset.
        let (mut t, mem, _irq) = transport();
        bring_up(&mut t);
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
        // A stopped queue is not processed, and cannot be enabled again
        // without a reset.
        mem.write_obj(1u16, GuestAddress(0x2002)).unwrap();
        t.process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert!(!t.is_active());
        // ... and the device can be brought up again.
        bring_up(&mut t);
        assert!(t.is_active());
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
    }

    #[test]
    fn features_not_offered_are_refused() {
        let (mut t, _, _) = transport();
        wr(
            &mut t,
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1 | 1 << 10); // VERSION_1 plus an unknown bit
        wr(&mut t, VIRTIO_MMIO_STATUS, 0xb);
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        // Without VERSION_1 too.
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
        wr(&mut t, VIRTIO_MMIO_STATUS, 0xb);
        assert_eq!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
    }

    #[test]
    fn queue_outside_memory_needs_reset() {
        let (mut t, _, _) = transport();
        wr(&mut t, VIRTIO_MMIO_STATUS, 3);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 0xb);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 16);
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0xfff000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x10);
        wr(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
        wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 0xf);
        assert!(!t.is_active());
        assert_ne!(
            rd(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
            0
        );
        // Notifications are ignored; a reset clears the state.
        t.process_queue(0);
        wr(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut t, _, _) = transport();
        let mut b = [0xffu8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(2, &[1, 2]);
        t.write(0x31, &[1, 2, 3, 4]);
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 7);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 8);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
        assert_eq!(rd(&mut t, 0xfe0), 0);
        let mut big = [0u8; 8];
        t.read(0x1000 - 8, &mut big);
        // Queue registers before DRIVER are ignored.
        wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 8);
        assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW), 0);
    }
}
