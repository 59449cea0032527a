// SPDX-License-Identifier: GPL-2.0

//! The virtio-blk device: configuration, queues, requests, completions
//! (virtio 1.2, 5.2).

use core::{
    mem::offset_of,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    block::mq::{
        gen_disk::{GenDisk, GenDiskBuilder},
        Op, Operations, Request, TagSet,
    },
    c_str, cpu, new_condvar, new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    sync::{Arc, ArcBorrow, CondVar, Mutex, SpinLockIrq},
    time::msecs_to_jiffies,
    types::ARef,
    virtio::{
        self,
        blk::{BlkBuffer, Command, Header, IdQuery, Payload, Used, ID_BYTES, MAX_SEGMENTS},
        Device, DeviceId, LockedQueue,
    },
    workqueue::{self, impl_has_work, Work, WorkItem},
};

use crate::abi::{
    virtio::{VIRTIO_ID_BLOCK, VIRTIO_RING_F_INDIRECT_DESC},
    virtio_blk::*,
};

/// Request queues at most (one per vCPU up to this; names below).
const MAX_QUEUES: usize = 16;
const QUEUE_NAMES: [&CStr; MAX_QUEUES] = [
    c_str!("req.0"),
    c_str!("req.1"),
    c_str!("req.2"),
    c_str!("req.3"),
    c_str!("req.4"),
    c_str!("req.5"),
    c_str!("req.6"),
    c_str!("req.7"),
    c_str!("req.8"),
    c_str!("req.9"),
    c_str!("req.10"),
    c_str!("req.11"),
    c_str!("req.12"),
    c_str!("req.13"),
    c_str!("req.14"),
    c_str!("req.15"),
];
/// Requests in flight per queue, at most (the C driver's default fills the
/// ring too).
const MAX_QUEUE_DEPTH: u32 = 256;
/// How long `ready` waits for the serial number.
const GET_ID_TIMEOUT_MS: u32 = 2000;
const GET_ID_POLL_MS: u32 = 10;
/// Log lines about misbehaving devices, per device, at most.
const MAX_DEVICE_COMPLAINTS: u64 = 20;
/// Disks named `vda`..`vdz`.
const MAX_DISKS: u32 = 26;

/// Which `vdX` names are taken (bit n: `vd` + 'a' + n).
static DISK_NAMES: AtomicU64 = AtomicU64::new(0);

fn claim_disk_index() -> Result<u32> {
    let mut claimed = None;
    DISK_NAMES
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
            let free = (!taken).trailing_zeros();
            if free >= MAX_DISKS {
                claimed = None;
                return None;
            }
            claimed = Some(free);
            Some(taken | (1 << free))
        })
        .map_err(|_| ENOSPC)?;
    claimed.ok_or(ENOSPC)
}

fn release_disk_index(index: u32) {
    DISK_NAMES.fetch_and(!(1u64 << index), Ordering::AcqRel);
}

type RequestQueue = LockedQueue<BlkBuffer<Queues>>;

/// The request queues; also the disk's blk-mq queue data.
#[pin_data]
pub struct Queues {
    vqs: KVec<Pin<KBox<RequestQueue>>>,
    /// The GET_ID answer: (serial, status).
    #[pin]
    id_answer: SpinLockIrq<Option<([u8; ID_BYTES], u8)>>,
    #[pin]
    id_answered: CondVar,
    /// Completions with a status that is not `VIRTIO_BLK_S_*`.
    bad_status: AtomicU64,
    /// Requests that could not be ended (a reference was still held).
    end_failed: AtomicU64,
    /// Requests refused before reaching the device.
    refused: AtomicU64,
    /// A queue was found broken (logged once).
    broken_logged: AtomicBool,
}

impl Queues {
    fn queue(&self, index: u32) -> Option<&RequestQueue> {
        self.vqs.get(index as usize).map(|vq| vq.as_ref().get_ref())
    }

    /// The virtio-blk command for `rq`.
    fn command_for(rq: &Request<Self>) -> Result<(Header, Payload)> {
        let sector = rq.sector();
        let header = |kind| Header {
            kind,
            ioprio: u32::from(rq.ioprio()),
            sector,
        };
        let range = || Payload::Range {
            sector,
            num_sectors: rq.bytes() >> VIRTIO_BLK_SECTOR_SHIFT,
            flags: 0,
        };
        Ok(match rq.op() {
            Op::Read => (header(VIRTIO_BLK_T_IN), Payload::Data),
            Op::Write => (header(VIRTIO_BLK_T_OUT), Payload::Data),
            Op::Flush => (header(VIRTIO_BLK_T_FLUSH), Payload::None),
            Op::Discard => (header(VIRTIO_BLK_T_DISCARD), range()),
            Op::WriteZeroes => (header(VIRTIO_BLK_T_WRITE_ZEROES), range()),
            _ => return Err(EOPNOTSUPP),
        })
    }

    fn submit(&self, hw_queue: u32, rq: ARef<Request<Self>>, is_last: bool) -> Result {
        let (header, payload) = match Self::command_for(&rq) {
            Ok(command) => command,
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let queue = self.queue(hw_queue).ok_or(EINVAL)?;
        // The device is notified after the queue is unlocked (a long exit
        // under a hypervisor; the completion interrupt needs the lock).
        queue.with_kick(|vq| match vq.add_request(rq, header, payload) {
            Ok(()) => (Ok(()), is_last),
            // The ring is full: let the device see what it has; blk-mq
            // retries this request when one of ours completes.
            Err((e, _rq)) if e == ENOSPC => (Err(EBUSY), true),
            Err((e, _rq)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                pr_warn!("pvrs: virtio_blk: request refused: {:?}\n", e);
                (Err(EIO), false)
            }
        })
    }

    fn kick(&self, hw_queue: u32) {
        if let Some(queue) = self.queue(hw_queue) {
            queue.with_kick(|_| ((), true));
        }
    }

    /// The result of a request the device completed with `status`.
    fn result_of(&self, status: u8) -> Result {
        match status {
            VIRTIO_BLK_S_OK => Ok(()),
            VIRTIO_BLK_S_UNSUPP => Err(EOPNOTSUPP),
            VIRTIO_BLK_S_IOERR => Err(EIO),
            other => {
                let seen = self.bad_status.fetch_add(1, Ordering::Relaxed);
                if seen < MAX_DEVICE_COMPLAINTS {
                    pr_warn!(
                        "pvrs: virtio_blk: device returned status {:#x}; failing the request\n",
                        other
                    );
                }
                Err(EIO)
            }
        }
    }

    /// Ends every request queue `index` completed (hard interrupt context).
    fn complete(&self, index: u32) {
        let Some(queue) = self.queue(index) else {
            return;
        };
        let mut vq = queue.lock();
        loop {
            vq.disable_callbacks();
            // Handing a request to blk-mq is cheap (it ends it here or
            // sends it to its submitting CPU): all under one lock.
            while let Some(used) = vq.get_used() {
                match used {
                    // Ended in `Operations::complete`, on the CPU that
                    // submitted it (blk-mq sends it there), with the status
                    // the device left in the request.
                    Used::Request { rq, .. } => Request::complete(rq),
                    Used::Id { id, status } => {
                        *self.id_answer.lock() = Some((id, status));
                        self.id_answered.notify_all();
                    }
                }
            }
            if vq.is_broken() {
                if !self.broken_logged.swap(true, Ordering::Relaxed) {
                    pr_err!(
                        "pvrs: virtio_blk: queue {} broken (the device returned a buffer it was \
                         not given); its requests will not complete\n",
                        index
                    );
                }
                break;
            }
            if vq.enable_callbacks() {
                break;
            }
        }
    }

    /// Asks the device for its serial number (GET_ID) and waits for it.
    fn query_serial(&self) -> Result<Option<[u8; ID_BYTES]>> {
        let query = IdQuery::new()?;
        let queue = self.queue(0).ok_or(EINVAL)?;
        queue.with_kick(|vq| (vq.add_get_id(query).map_err(|(e, _)| e), true))?;
        let mut waited = 0;
        let mut answer = self.id_answer.lock();
        while answer.is_none() && waited < GET_ID_TIMEOUT_MS {
            let _ = self
                .id_answered
                .wait_interruptible_timeout(&mut answer, msecs_to_jiffies(GET_ID_POLL_MS));
            waited += GET_ID_POLL_MS;
        }
        match answer.take() {
            Some((id, VIRTIO_BLK_S_OK)) => Ok(Some(id)),
            Some(_) => Ok(None),
            None => {
                pr_warn!("pvrs: virtio_blk: no answer to GET_ID\n");
                Err(ETIMEDOUT)
            }
        }
    }

    fn malformed(&self) -> u64 {
        self.vqs.iter().map(|vq| vq.lock().malformed()).sum()
    }
}

#[vtable]
impl Operations for Queues {
    type QueueData = Arc<Queues>;
    type RequestData = Command;

    fn new_request_data() -> Command {
        Command::new()
    }

    fn queue_rq(
        queues: ArcBorrow<'_, Queues>,
        hw_queue: u32,
        rq: ARef<Request<Self>>,
        is_last: bool,
    ) -> Result {
        queues.submit(hw_queue, rq, is_last)
    }

    fn commit_rqs(queues: ArcBorrow<'_, Queues>, hw_queue: u32) {
        queues.kick(hw_queue);
    }

    fn complete(rq: ARef<Request<Self>>) {
        let queues: Arc<Queues> = rq.queue_data().into();
        let result = queues.result_of(rq.data().status());
        if Request::end(rq, result).is_err() {
            queues.end_failed.fetch_add(1, Ordering::Relaxed);
            pr_warn!("pvrs: virtio_blk: a completed request is still referenced\n");
        }
    }
}

/// What the configuration space says about the disk.
struct Geometry {
    capacity: u64,
    logical_block_size: u32,
    physical_block_size: u32,
    io_min: u32,
    io_opt: u32,
    alignment_offset: u32,
    max_segments: u16,
    max_segment_size: u32,
    max_discard_sectors: u32,
    discard_granularity: u32,
    max_write_zeroes_sectors: u32,
    read_only: bool,
    write_cache: bool,
    num_queues: u32,
}

fn field<T: virtio::ConfigValue>(dev: &Device, offset: usize) -> Result<T> {
    dev.read_config(offset)
}

impl Geometry {
    fn read(dev: &Device) -> Result<Self> {
        let has = |bit| dev.has_feature(bit);
        let capacity: u64 = field(dev, offset_of!(VirtioBlkConfig, capacity))?;
        let mut logical_block_size = VIRTIO_BLK_SECTOR_SIZE as u32;
        if has(VIRTIO_BLK_F_BLK_SIZE) {
            let size: u32 = field(dev, offset_of!(VirtioBlkConfig, blk_size))?;
            // The block layer takes 512..=PAGE_SIZE, powers of two.
            if size.is_power_of_two() && (512..=4096).contains(&size) {
                logical_block_size = size;
            } else {
                pr_warn!("pvrs: virtio_blk: ignoring block size {}\n", size);
            }
        }
        let mut geometry = Self {
            capacity,
            logical_block_size,
            physical_block_size: logical_block_size,
            io_min: 0,
            io_opt: 0,
            alignment_offset: 0,
            max_segments: MAX_SEGMENTS as u16,
            max_segment_size: 0,
            max_discard_sectors: 0,
            discard_granularity: 0,
            max_write_zeroes_sectors: 0,
            read_only: has(VIRTIO_BLK_F_RO),
            write_cache: has(VIRTIO_BLK_F_FLUSH),
            num_queues: 1,
        };
        if has(VIRTIO_BLK_F_CONFIG_WCE) {
            // The device says which cache mode it is in (virtio 1.2,
            // 5.2.5): write-through needs no flushes even if it can take
            // them.
            let wce: u8 = field(dev, offset_of!(VirtioBlkConfig, wce))?;
            geometry.write_cache = wce != 0;
        }
        if has(VIRTIO_BLK_F_SEG_MAX) {
            let seg_max: u32 = field(dev, offset_of!(VirtioBlkConfig, seg_max))?;
            geometry.max_segments = seg_max.clamp(1, MAX_SEGMENTS as u32) as u16;
        }
        if has(VIRTIO_BLK_F_SIZE_MAX) {
            let size_max: u32 = field(dev, offset_of!(VirtioBlkConfig, size_max))?;
            // The block layer needs at least a page per segment.
            geometry.max_segment_size = size_max.max(4096);
        }
        if has(VIRTIO_BLK_F_TOPOLOGY) {
            let exp: u8 = field(dev, offset_of!(VirtioBlkConfig, physical_block_exp))?;
            let align: u8 = field(dev, offset_of!(VirtioBlkConfig, alignment_offset))?;
            let min_io: u16 = field(dev, offset_of!(VirtioBlkConfig, min_io_size))?;
            let opt_io: u32 = field(dev, offset_of!(VirtioBlkConfig, opt_io_size))?;
            let physical = logical_block_size.checked_shl(u32::from(exp)).unwrap_or(0);
            if (logical_block_size..=4096).contains(&physical) {
                geometry.physical_block_size = physical;
            }
            geometry.alignment_offset = logical_block_size.saturating_mul(u32::from(align));
            geometry.io_min = logical_block_size.saturating_mul(u32::from(min_io));
            geometry.io_opt = logical_block_size.saturating_mul(opt_io);
        }
        if has(VIRTIO_BLK_F_DISCARD) {
            let max: u32 = field(dev, offset_of!(VirtioBlkConfig, max_discard_sectors))?;
            let align: u32 = field(dev, offset_of!(VirtioBlkConfig, discard_sector_alignment))?;
            geometry.max_discard_sectors = if max == 0 { u32::MAX >> 9 } else { max };
            geometry.discard_granularity = align
                .saturating_mul(VIRTIO_BLK_SECTOR_SIZE as u32)
                .max(logical_block_size);
        }
        if has(VIRTIO_BLK_F_WRITE_ZEROES) {
            let max: u32 = field(dev, offset_of!(VirtioBlkConfig, max_write_zeroes_sectors))?;
            geometry.max_write_zeroes_sectors = if max == 0 { u32::MAX >> 9 } else { max };
        }
        if has(VIRTIO_BLK_F_MQ) {
            let queues: u16 = field(dev, offset_of!(VirtioBlkConfig, num_queues))?;
            geometry.num_queues = u32::from(queues.max(1));
        }
        Ok(geometry)
    }
}

/// Per-device state, shared with the configuration work item.
#[pin_data]
pub struct Inner {
    dev: ARef<Device>,
    queues: Arc<Queues>,
    #[pin]
    disk: Mutex<Option<GenDisk<Queues>>>,
    geometry: Geometry,
    disk_index: u32,
    stopping: AtomicBool,
    #[pin]
    config_work: Work<Inner>,
}

impl_has_work! {
    impl HasWork<Self> for Inner { self.config_work }
}

impl WorkItem for Inner {
    type Pointer = Arc<Inner>;

    fn run(this: Arc<Inner>) {
        this.update_capacity();
    }
}

impl Inner {
    fn name_letter(&self) -> char {
        char::from(b'a' + self.disk_index as u8)
    }

    /// Applies a capacity change of the device (virtio 1.2, 5.2.4: the
    /// device may change `capacity` and notify the driver).
    fn update_capacity(&self) {
        let capacity: u64 = match field(&self.dev, offset_of!(VirtioBlkConfig, capacity)) {
            Ok(capacity) => capacity,
            Err(e) => {
                pr_warn!("pvrs: virtio_blk: capacity unreadable: {:?}\n", e);
                return;
            }
        };
        if let Some(disk) = self.disk.lock().as_ref() {
            if disk.set_capacity_and_notify(capacity) {
                pr_info!(
                    "pvrs: virtio_blk: vd{}: capacity now {} sectors ({} MiB)\n",
                    self.name_letter(),
                    capacity,
                    capacity >> 11
                );
            }
        }
    }

    fn add_disk(&self, serial: Option<[u8; ID_BYTES]>) -> Result {
        let g = &self.geometry;
        let queue_count = self.queues.vqs.len() as u32;
        let ring = self.queues.queue(0).ok_or(EINVAL)?.lock().size();
        // Without indirect descriptors a request takes at least two ring
        // entries (as the C driver assumes).
        let depth = if self.dev.has_feature(VIRTIO_RING_F_INDIRECT_DESC) {
            ring
        } else {
            ring / 2
        }
        .clamp(1, MAX_QUEUE_DEPTH);
        let tagset = Arc::pin_init(TagSet::new(queue_count, depth, 1), GFP_KERNEL)?;
        let mut builder = GenDiskBuilder::new()
            .capacity_sectors(g.capacity)
            .logical_block_size(g.logical_block_size)?
            .physical_block_size(g.physical_block_size)?
            // Requests are bounded by segments and segment size, as in the
            // C driver (the block layer caps the default request size).
            .max_hw_sectors(u32::MAX)
            .max_segments(g.max_segments)
            .max_segment_size(g.max_segment_size)
            .topology(g.io_min, g.io_opt, g.alignment_offset)
            .write_cache(g.write_cache)
            .read_only(g.read_only)
            .parent(self.dev.as_dev());
        if g.max_discard_sectors != 0 {
            builder = builder.discard(g.max_discard_sectors, g.discard_granularity, 1);
        }
        if g.max_write_zeroes_sectors != 0 {
            builder = builder.write_zeroes(g.max_write_zeroes_sectors);
        }
        if let Some(serial) = serial {
            builder = builder.serial(&serial);
        }
        let disk = builder.build(
            format_args!("vd{}", self.name_letter()),
            tagset,
            self.queues.clone(),
        )?;
        *self.disk.lock() = Some(disk);
        pr_info!(
            "pvrs: virtio_blk: vd{}: {} sectors ({} MiB), {} queue(s) of depth {}, block {}/{}, \
             segments {}, cache {}, {}, discard {}, write-zeroes {}\n",
            self.name_letter(),
            g.capacity,
            g.capacity >> 11,
            queue_count,
            depth,
            g.logical_block_size,
            g.physical_block_size,
            g.max_segments,
            if g.write_cache {
                "write back"
            } else {
                "write through"
            },
            if g.read_only {
                "read-only"
            } else {
                "read-write"
            },
            g.max_discard_sectors != 0,
            g.max_write_zeroes_sectors != 0
        );
        Ok(())
    }
}

/// The driver data of one virtio-blk device.
pub struct VirtioBlk {
    inner: Arc<Inner>,
}

impl virtio::Driver for VirtioBlk {
    const NAME: &'static CStr = c_str!("pvrs_virtio_blk");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VIRTIO_ID_BLOCK), DeviceId::END];
    const FEATURES: &'static [u32] = &[
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_CONFIG_WCE,
        VIRTIO_BLK_F_RO,
        VIRTIO_BLK_F_MQ,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ];

    fn probe(dev: &Device) -> Result<KBox<Self>> {
        let geometry = Geometry::read(dev)?;
        let queue_count = geometry
            .num_queues
            .min(cpu::nr_cpu_ids())
            .clamp(1, MAX_QUEUES as u32) as usize;
        let callbacks = [true; MAX_QUEUES];
        let handles =
            dev.find_vqs::<Self>(&QUEUE_NAMES[..queue_count], &callbacks[..queue_count])?;
        let mut vqs = KVec::with_capacity(queue_count, GFP_KERNEL)?;
        for handle in handles {
            vqs.push(
                KBox::pin_init(LockedQueue::new(handle.into_queue()), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let queues = Arc::pin_init(
            try_pin_init!(Queues {
                vqs,
                id_answer <- new_spinlock_irq!(None),
                id_answered <- new_condvar!(),
                bad_status: AtomicU64::new(0),
                end_failed: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                broken_logged: AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )?;
        let disk_index = claim_disk_index()?;
        let inner = Arc::pin_init(
            try_pin_init!(Inner {
                dev: dev.into(),
                queues,
                disk <- new_mutex!(None),
                geometry,
                disk_index,
                stopping: AtomicBool::new(false),
                config_work <- new_work!("pvrs_virtio_blk::config"),
            }),
            GFP_KERNEL,
        );
        let inner = match inner {
            Ok(inner) => inner,
            Err(e) => {
                release_disk_index(disk_index);
                return Err(e);
            }
        };
        Ok(KBox::new(Self { inner }, GFP_KERNEL)?)
    }

    fn ready(&self, _dev: &Device) -> Result {
        // GET_ID has no feature bit: a device without it answers UNSUPP,
        // and the disk has no serial then.
        let serial = self.inner.queues.query_serial().unwrap_or(None);
        self.inner.add_disk(serial)
    }

    fn vq_callback(&self, index: u32) {
        self.inner.queues.complete(index);
    }

    fn config_changed(&self, _dev: &Device) {
        if !self.inner.stopping.load(Ordering::Relaxed) {
            let _ = workqueue::system().enqueue::<Arc<Inner>, 0>(self.inner.clone());
        }
    }

    fn remove(&self, _dev: &Device) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::Relaxed);
        inner.config_work.cancel_sync();
        // Deleting the disk waits for its requests, while the queues work.
        let disk = inner.disk.lock().take();
        drop(disk);
        let queues = &inner.queues;
        pr_info!(
            "pvrs: virtio_blk: vd{} removed; bad status {}, malformed used {}, refused {}, \
             unended {}\n",
            inner.name_letter(),
            queues.bad_status.load(Ordering::Relaxed),
            queues.malformed(),
            queues.refused.load(Ordering::Relaxed),
            queues.end_failed.load(Ordering::Relaxed)
        );
    }
}

impl Drop for VirtioBlk {
    fn drop(&mut self) {
        release_disk_index(self.inner.disk_index);
    }
}
