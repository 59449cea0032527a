// SPDX-License-Identifier: GPL-2.0

//! The balloon's state machine: inflate, deflate, statistics, OOM.

use core::{
    mem::offset_of,
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};

use kernel::{
    alloc::{flags::GFP_KERNEL, KBox},
    balloon::{Balloon, BalloonPage, MemoryStats, OomHandler, OomNotifier},
    c_str, new_condvar, new_mutex, new_work,
    prelude::*,
    sync::{Arc, CondVar, Mutex},
    time::msecs_to_jiffies,
    types::ARef,
    virtio::{self, Device, DeviceId, Virtqueue},
    workqueue::{self, impl_has_work, Work, WorkItem},
};

use crate::abi::{
    virtio::VIRTIO_ID_BALLOON,
    virtio_balloon::{
        VirtioBalloonConfig, VIRTIO_BALLOON_F_DEFLATE_ON_OOM, VIRTIO_BALLOON_F_MUST_TELL_HOST,
        VIRTIO_BALLOON_F_STATS_VQ, VIRTIO_BALLOON_S_AVAIL, VIRTIO_BALLOON_S_CACHES,
        VIRTIO_BALLOON_S_MAJFLT, VIRTIO_BALLOON_S_MEMFREE, VIRTIO_BALLOON_S_MEMTOT,
        VIRTIO_BALLOON_S_MINFLT, VIRTIO_BALLOON_S_SWAP_IN, VIRTIO_BALLOON_S_SWAP_OUT,
    },
};

/// Page frame numbers per inflate or deflate buffer (virtio 1.2, 5.5.6).
pub const PFNS_PER_BATCH: usize = 256;
/// Pages to deflate per OOM notification (as the C driver).
const OOM_DEFLATE_PAGES: usize = 256;
/// The statistics the driver reports, in the order sent.
const STAT_TAGS: [u16; 8] = [
    VIRTIO_BALLOON_S_SWAP_IN,
    VIRTIO_BALLOON_S_SWAP_OUT,
    VIRTIO_BALLOON_S_MAJFLT,
    VIRTIO_BALLOON_S_MINFLT,
    VIRTIO_BALLOON_S_MEMFREE,
    VIRTIO_BALLOON_S_MEMTOT,
    VIRTIO_BALLOON_S_AVAIL,
    VIRTIO_BALLOON_S_CACHES,
];
/// `struct virtio_balloon_stat` is packed: a 16-bit tag and a 64-bit value.
const STAT_SIZE: usize = 10;
/// How long to wait for the host between checks of the used ring (the
/// wake-up from the queue callback is the normal path; this bounds the
/// cost of a wake-up that raced with going to sleep).
const ACK_POLL_MS: u32 = 10;

/// Queue indices, in `find_vqs` order.
const INFLATE_VQ: u32 = 0;
const DEFLATE_VQ: u32 = 1;
const STATS_VQ: u32 = 2;

type Pfns = [u32; PFNS_PER_BATCH];
/// The pages of one deflate batch, between taking them out of the balloon
/// and giving them to the kernel. Allocated once: deflating runs in the OOM
/// notifier, where an allocation could wait for itself forever.
type PageSlots = [Option<BalloonPage>; PFNS_PER_BATCH];
type StatsBuffer = [u8; STAT_TAGS.len() * STAT_SIZE];

struct Queues {
    inflate: Virtqueue<KBox<Pfns>>,
    deflate: Virtqueue<KBox<Pfns>>,
    stats: Option<Virtqueue<KBox<StatsBuffer>>>,
    /// The PFN buffer, when the device does not hold it.
    pfns: Option<KBox<Pfns>>,
    /// See [`PageSlots`].
    slots: Option<KBox<PageSlots>>,
}

impl Queues {
    /// The inflate or the deflate queue, by index.
    fn pfn_queue(&mut self, which: u32) -> &mut Virtqueue<KBox<Pfns>> {
        if which == INFLATE_VQ {
            &mut self.inflate
        } else {
            &mut self.deflate
        }
    }
}

type QueuesGuard<'a> =
    kernel::sync::lock::Guard<'a, Queues, kernel::sync::lock::mutex::MutexBackend>;

/// Per-device state, shared with the work items and the OOM notifier.
#[pin_data]
pub struct Inner {
    dev: ARef<Device>,
    balloon: Balloon,
    #[pin]
    queues: Mutex<Queues>,
    #[pin]
    acked: CondVar,
    /// Pages in the balloon (the value written to `actual`).
    pages: AtomicU32,
    deflate_on_oom: bool,
    stopping: AtomicBool,
    #[pin]
    resize_work: Work<Inner, 0>,
    #[pin]
    stats_work: Work<Inner, 1>,
    /// Used buffers that were not the one the driver was waiting for.
    unexpected_used: AtomicU64,
    oom_deflated: AtomicU64,
}

impl_has_work! {
    impl HasWork<Self, 0> for Inner { self.resize_work }
    impl HasWork<Self, 1> for Inner { self.stats_work }
}

/// The driver data of one balloon device.
pub struct VirtioBalloon {
    inner: Arc<Inner>,
    _oom: Option<OomNotifier<OomDeflate>>,
}

fn fill_stats(buf: &mut StatsBuffer) {
    let s = MemoryStats::now();
    let page = kernel::page::PAGE_SIZE as u64;
    let values = [
        s.swap_in.saturating_mul(page),
        s.swap_out.saturating_mul(page),
        s.major_faults,
        s.minor_faults,
        s.free,
        s.total,
        s.available,
        s.caches,
    ];
    for ((entry, tag), value) in buf.chunks_exact_mut(STAT_SIZE).zip(STAT_TAGS).zip(values) {
        entry[..2].copy_from_slice(&tag.to_le_bytes());
        entry[2..].copy_from_slice(&value.to_le_bytes());
    }
}

impl Inner {
    /// The device's target, in pages (`num_pages`, little endian).
    fn target(&self) -> Result<u32> {
        self.dev
            .read_config::<u32>(offset_of!(VirtioBalloonConfig, num_pages))
    }

    fn update_actual(&self) {
        let pages = self.pages.load(Ordering::Relaxed);
        if let Err(e) = self
            .dev
            .write_config_u32(offset_of!(VirtioBalloonConfig, actual), pages)
        {
            pr_warn!("pvrs: balloon: cannot write actual: {:?}\n", e);
        }
    }

    /// Hands the first `count` entries of `pfns` to the host on queue
    /// `which` and waits until the host has taken them.
    fn tell_host(
        &self,
        queues: &mut QueuesGuard<'_>,
        which: u32,
        pfns: KBox<Pfns>,
        count: usize,
    ) -> Result<KBox<Pfns>> {
        if let Err((e, buf)) = queues.pfn_queue(which).add(pfns, count * 4, 0) {
            // Cannot happen with one buffer per queue; keep the buffer.
            queues.pfns = Some(buf);
            return Err(e);
        }
        queues.pfn_queue(which).kick();
        loop {
            let vq = queues.pfn_queue(which);
            if let Some(used) = vq.get_buf() {
                return Ok(used.buf);
            }
            if vq.is_broken() {
                // The device misbehaved: the core stopped the queue. The
                // buffer stays with it until the reset at removal.
                pr_err!("pvrs: balloon: queue {} is broken\n", which);
                return Err(EIO);
            }
            let _ = self
                .acked
                .wait_interruptible_timeout(queues, msecs_to_jiffies(ACK_POLL_MS));
        }
    }

    /// Inflates by up to `wanted` pages (one batch); returns how many.
    fn fill(&self, wanted: usize) -> Result<usize> {
        let mut queues = self.queues.lock();
        let (Some(mut pfns), Some(mut slots)) = (queues.pfns.take(), queues.slots.take()) else {
            return Err(EBUSY);
        };
        let mut allocated = 0;
        while allocated < wanted.min(PFNS_PER_BATCH) {
            let Some(page) = BalloonPage::alloc() else {
                // Out of memory for now: stop this batch, try again later.
                break;
            };
            if !self.deflate_on_oom {
                page.adjust_managed_count(-1);
            }
            slots[allocated] = Some(page);
            allocated += 1;
        }
        let mut frames = [0u64; PFNS_PER_BATCH];
        let count = self
            .balloon
            .enqueue_batch(&mut slots[..allocated], &mut frames);
        // x86 pages are 4 KiB, the balloon's unit (PFN_SHIFT 12), and a
        // guest below 16 TiB has 32-bit page numbers.
        for (pfn, frame) in pfns.iter_mut().zip(frames.iter()).take(count) {
            *pfn = *frame as u32;
        }
        queues.slots = Some(slots);
        if count > 0 {
            pfns = self.tell_host(&mut queues, INFLATE_VQ, pfns, count)?;
            self.pages.fetch_add(count as u32, Ordering::Relaxed);
        }
        queues.pfns = Some(pfns);
        Ok(count)
    }

    /// Deflates by up to `wanted` pages (one batch); returns how many.
    /// It allocates nothing: it also runs in the OOM notifier.
    fn leak(&self, wanted: usize) -> Result<usize> {
        let mut queues = self.queues.lock();
        let (Some(mut pfns), Some(mut slots)) = (queues.pfns.take(), queues.slots.take()) else {
            return Err(EBUSY);
        };
        let mut count = 0;
        while count < wanted.min(PFNS_PER_BATCH) {
            let Some(page) = self.balloon.dequeue() else {
                break;
            };
            pfns[count] = page.pfn() as u32;
            slots[count] = Some(page);
            count += 1;
        }
        if count > 0 {
            // Tell the host before the kernel reuses the pages (required
            // with MUST_TELL_HOST, harmless without).
            match self.tell_host(&mut queues, DEFLATE_VQ, pfns, count) {
                Ok(buf) => pfns = buf,
                Err(e) => {
                    // The host did not take the list: the pages stay in the
                    // balloon (lost to the guest until the device is reset).
                    for slot in slots.iter_mut().take(count) {
                        if let Some(page) = slot.take() {
                            self.balloon.enqueue(page);
                        }
                    }
                    queues.slots = Some(slots);
                    return Err(e);
                }
            }
            self.pages.fetch_sub(count as u32, Ordering::Relaxed);
            for slot in slots.iter_mut().take(count) {
                if let Some(page) = slot.take() {
                    if !self.deflate_on_oom {
                        page.adjust_managed_count(1);
                    }
                    drop(page);
                }
            }
        }
        queues.pfns = Some(pfns);
        queues.slots = Some(slots);
        Ok(count)
    }

    /// Moves toward the device's target, batch by batch.
    fn resize(&self) {
        while !self.stopping.load(Ordering::Relaxed) {
            let target = match self.target() {
                Ok(t) => t,
                Err(e) => {
                    pr_warn!("pvrs: balloon: cannot read num_pages: {:?}\n", e);
                    return;
                }
            };
            let have = self.pages.load(Ordering::Relaxed);
            let moved = if target > have {
                self.fill((target - have) as usize)
            } else if target < have {
                self.leak((have - target) as usize)
            } else {
                return;
            };
            self.update_actual();
            match moved {
                Ok(0) | Err(_) => {
                    // No memory to take (or a device error): retry later,
                    // when the device changes the target again.
                    return;
                }
                Ok(_) => {}
            }
        }
    }

    /// Gives the device fresh statistics (it returned the buffer to ask).
    fn refresh_stats(&self) {
        let mut queues = self.queues.lock();
        let Some(vq) = queues.stats.as_mut() else {
            return;
        };
        while let Some(used) = vq.get_buf() {
            let mut buf = used.buf;
            fill_stats(&mut buf);
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            if let Err((e, _)) = vq.add_out(buf) {
                pr_warn!("pvrs: balloon: cannot requeue statistics: {:?}\n", e);
                return;
            }
            vq.kick();
        }
    }
}

impl WorkItem<0> for Inner {
    type Pointer = Arc<Inner>;

    fn run(this: Arc<Inner>) {
        this.resize();
    }
}

impl WorkItem<1> for Inner {
    type Pointer = Arc<Inner>;

    fn run(this: Arc<Inner>) {
        this.refresh_stats();
    }
}

/// Deflates on OOM (`VIRTIO_BALLOON_F_DEFLATE_ON_OOM`).
pub struct OomDeflate {
    inner: Arc<Inner>,
}

impl OomHandler for OomDeflate {
    fn free_pages(&self) -> u64 {
        if self.inner.stopping.load(Ordering::Relaxed) {
            return 0;
        }
        let freed = self.inner.leak(OOM_DEFLATE_PAGES).unwrap_or(0);
        self.inner.update_actual();
        self.inner
            .oom_deflated
            .fetch_add(freed as u64, Ordering::Relaxed);
        freed as u64
    }
}

impl virtio::Driver for VirtioBalloon {
    const NAME: &'static CStr = c_str!("pvrs_balloon");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VIRTIO_ID_BALLOON), DeviceId::END];
    const FEATURES: &'static [u32] = &[
        VIRTIO_BALLOON_F_MUST_TELL_HOST,
        VIRTIO_BALLOON_F_STATS_VQ,
        VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    ];

    fn probe(dev: &Device) -> Result<KBox<Self>> {
        let stats = dev.has_feature(VIRTIO_BALLOON_F_STATS_VQ);
        let deflate_on_oom = dev.has_feature(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
        let names: &[&'static CStr] = if stats {
            &[c_str!("inflate"), c_str!("deflate"), c_str!("stats")]
        } else {
            &[c_str!("inflate"), c_str!("deflate")]
        };
        let callbacks: &[bool] = if stats {
            &[true, true, true]
        } else {
            &[true, true]
        };
        let mut handles = dev.find_vqs::<Self>(names, callbacks)?.into_iter();
        let inflate = handles.next().ok_or(EINVAL)?.into_queue();
        let deflate = handles.next().ok_or(EINVAL)?.into_queue();
        let mut stats_vq = handles.next().map(|h| h.into_queue::<KBox<StatsBuffer>>());
        if let Some(vq) = stats_vq.as_mut() {
            // The first statistics buffer goes to the device at once; the
            // device returns it when it wants numbers (virtio 1.2, 5.5.6.3).
            let mut buf = KBox::new([0u8; STAT_TAGS.len() * STAT_SIZE], GFP_KERNEL)?;
            fill_stats(&mut buf);
            vq.add_out(buf).map_err(|(e, _)| e)?;
        }
        let queues = Queues {
            inflate,
            deflate,
            stats: stats_vq,
            pfns: Some(KBox::new([0u32; PFNS_PER_BATCH], GFP_KERNEL)?),
            slots: Some(KBox::new(core::array::from_fn(|_| None), GFP_KERNEL)?),
        };
        let inner = Arc::pin_init(
            try_pin_init!(Inner {
                dev: dev.into(),
                balloon: Balloon::new()?,
                queues <- new_mutex!(queues),
                acked <- new_condvar!(),
                pages: AtomicU32::new(0),
                deflate_on_oom,
                stopping: AtomicBool::new(false),
                resize_work <- new_work!("pvrs_balloon::resize"),
                stats_work <- new_work!("pvrs_balloon::stats"),
                unexpected_used: AtomicU64::new(0),
                oom_deflated: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )?;
        let oom = if deflate_on_oom {
            Some(OomNotifier::register(OomDeflate {
                inner: inner.clone(),
            })?)
        } else {
            None
        };
        pr_info!(
            "pvrs: balloon: virtio{} bound: stats {}, deflate-on-oom {}, must-tell-host {}\n",
            dev.index(),
            stats,
            deflate_on_oom,
            dev.has_feature(VIRTIO_BALLOON_F_MUST_TELL_HOST)
        );
        Ok(KBox::new(Self { inner, _oom: oom }, GFP_KERNEL)?)
    }

    fn ready(&self, _dev: &Device) -> Result {
        if let Some(vq) = self.inner.queues.lock().stats.as_mut() {
            vq.kick();
        }
        let _ = workqueue::system().enqueue::<Arc<Inner>, 0>(self.inner.clone());
        Ok(())
    }

    fn vq_callback(&self, index: u32) {
        match index {
            INFLATE_VQ | DEFLATE_VQ => self.inner.acked.notify_all(),
            STATS_VQ => {
                if !self.inner.stopping.load(Ordering::Relaxed) {
                    let _ = workqueue::system().enqueue::<Arc<Inner>, 1>(self.inner.clone());
                }
            }
            _ => {
                self.inner.unexpected_used.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn config_changed(&self, _dev: &Device) {
        if !self.inner.stopping.load(Ordering::Relaxed) {
            let _ = workqueue::system().enqueue::<Arc<Inner>, 0>(self.inner.clone());
        }
    }

    fn remove(&self, _dev: &Device) {
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::Relaxed);
        inner.resize_work.cancel_sync();
        inner.stats_work.cancel_sync();
        // Give every page back, telling the host, while the queues work.
        let mut returned = 0usize;
        while inner.pages.load(Ordering::Relaxed) > 0 {
            match inner.leak(PFNS_PER_BATCH) {
                Ok(0) | Err(_) => break,
                Ok(n) => returned += n,
            }
        }
        inner.update_actual();
        pr_info!(
            "pvrs: balloon: removed; {} pages returned, {} left, {} deflated on OOM\n",
            returned,
            inner.pages.load(Ordering::Relaxed),
            inner.oom_deflated.load(Ordering::Relaxed)
        );
    }
}
