//! virtio-balloon (virtio 1.2 §5.5, "Traditional Memory Balloon Device").
//!
//! Queues: inflateq (0), deflateq (1) and, with
//! `VIRTIO_BALLOON_F_STATS_VQ`, statsq (2). Configuration (§5.5.4):
//! `num_pages` (le32, the target the device asks for, in 4 KiB pages) and
//! `actual` (le32, what the driver has given, written by the driver).
//!
//! * Inflate (§5.5.6.1): each buffer is an array of le32 page frame numbers;
//!   the device releases each page with `madvise(MADV_DONTNEED)`, so the
//!   host drops the backing memory and the VMM's RSS shrinks. Pages outside
//!   guest RAM are skipped and counted.
//! * Deflate: the pages come back on the guest's next touch (a fresh zero
//!   page); the device only does the bookkeeping. Deflating a page that
//!   was not inflated is counted as a bad request.
//! * Statistics (§5.5.6.3): the driver keeps one buffer of
//!   `{tag: le16, val: le64}` entries in statsq. The device holds it, and
//!   to ask for fresh numbers returns it; the driver refills it and makes
//!   it available again, and the device prints what it got. A request is
//!   made on the control command `balloon-stats` or every `stats=SECS`.
//!
//! The target changes with the control command `balloon MIB` (a
//! configuration change interrupt tells the driver).

use std::collections::BTreeSet;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::timerfd::TimerFd;

use super::chain::{Chain, ChainLimits};
use super::queue::VirtQueue;
use super::{read_config_bytes, DeviceCounters, DeviceCtx, VirtioDevice, COMMON_FEATURES};
use crate::config::BalloonConfig;

/// `VIRTIO_BALLOON_F_STATS_VQ`.
pub const F_STATS_VQ: u64 = 1 << 1;
/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// The balloon's page size (`VIRTIO_BALLOON_PFN_SHIFT` = 12).
pub const PAGE_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const INFLATE_QUEUE: usize = 0;
const DEFLATE_QUEUE: usize = 1;
const STATS_QUEUE: usize = 2;
const QUEUE_SIZE: u16 = 128;
/// One statistics entry: le16 tag, le64 value.
const STAT_SIZE: usize = 10;

/// The names of the statistics tags (§5.5.6.3), by tag.
pub const STAT_NAMES: [&str; 10] = [
    "swap_in",
    "swap_out",
    "major_faults",
    "minor_faults",
    "free_memory",
    "total_memory",
    "available_memory",
    "disk_caches",
    "hugetlb_allocations",
    "hugetlb_failures",
];

/// Parses a statistics buffer into (tag name, value) pairs; unknown tags
/// are named by number, a trailing partial entry is ignored.
pub fn parse_stats(raw: &[u8]) -> Vec<(String, u64)> {
    raw.chunks_exact(STAT_SIZE)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let val = u64::from_le_bytes(e[2..10].try_into().unwrap_or_default());
            let name = STAT_NAMES
                .get(usize::from(tag))
                .map_or_else(|| format!("tag{tag}"), |n| (*n).to_string());
            (name, val)
        })
        .collect()
}

/// Formats statistics for people: memory sizes in MiB.
pub fn format_stats(stats: &[(String, u64)]) -> String {
    stats
        .iter()
        .map(|(n, v)| {
            if n.ends_with("_memory") || n == "disk_caches" {
                format!("{n}={}MiB", v >> 20)
            } else {
                format!("{n}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Releases the host memory behind `[addr, addr + len)` of guest memory.
/// The range must lie in one memory region.
///
/// The release is `madvise(MADV_DONTNEED)`. Kernels built without
/// `CONFIG_ADVISE_SYSCALLS` (the tinyconfig-based L1 of the nested test
/// host) answer `ENOSYS`; for the anonymous private mappings that hold guest
/// RAM, mapping fresh anonymous memory over the range (`MAP_FIXED`) frees
/// the pages just the same.
pub fn release_range(mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> Result<(), String> {
    let region = mem
        .find_region(addr)
        .ok_or_else(|| format!("{:#x} is not guest RAM", addr.0))?;
    let offset = addr.0 - region.start_addr().0;
    if offset.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(format!(
            "{:#x}+{len:#x} crosses a memory region end",
            addr.0
        ));
    }
    let host = region.as_ptr().wrapping_add(offset as usize);
    // SAFETY: [host, host + len) lies inside the live anonymous mapping of
    // one guest memory region (checked just above) and is page aligned
    // (callers pass whole pages). MADV_DONTNEED on it only drops the
    // contents, which the guest gave up; the mapping stays valid and reads
    // as zeroes afterwards, for the VMM and for KVM (its MMU notifier
    // drops the stage-2 mappings).
    let r = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) || region.file_offset().is_some() {
        return Err(format!("madvise: {err}"));
    }
    // SAFETY: as above, the range is inside one anonymous private guest
    // RAM mapping; MAP_FIXED atomically replaces exactly those pages with
    // new zero-filled anonymous pages of the same protection and flags as
    // vm-memory used, so every pointer into the region stays valid and
    // only the contents the guest gave up are lost.
    let p = unsafe {
        libc::mmap(
            host.cast(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p != host.cast() {
        return Err(format!(
            "remapping released pages: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The balloon device.
pub struct Balloon {
    name: String,
    features: u64,
    queue_sizes: Vec<u16>,
    /// Target in pages.
    num_pages: u32,
    /// What the driver reports.
    actual: u32,
    /// Pages currently inflated.
    inflated: BTreeSet<u64>,
    /// The statistics buffer the device holds, if any.
    stats_head: Option<u16>,
    /// Whether a statistics request is outstanding.
    stats_requested: bool,
    last_stats: Option<String>,
    stats_timer: Option<TimerFd>,
    counters: Arc<DeviceCounters>,
}

impl Balloon {
    /// A balloon configured by `cfg`.
    pub fn new(name: String, cfg: &BalloonConfig) -> Result<Self, String> {
        let mut features = COMMON_FEATURES | F_STATS_VQ;
        if cfg.deflate_on_oom {
            features |= F_DEFLATE_ON_OOM;
        }
        let stats_timer = match cfg.stats_interval_s {
            Some(secs) => {
                let mut t = TimerFd::new().map_err(|e| format!("timerfd: {e}"))?;
                let period = Duration::from_secs(secs);
                t.reset(period, Some(period))
                    .map_err(|e| format!("timerfd: {e}"))?;
                Some(t)
            }
            None => None,
        };
        Ok(Balloon {
            name,
            features,
            queue_sizes: vec![QUEUE_SIZE; 3],
            num_pages: mib_to_pages(cfg.target_mib),
            actual: 0,
            inflated: BTreeSet::new(),
            stats_head: None,
            stats_requested: false,
            last_stats: None,
            stats_timer,
            counters: Arc::default(),
        })
    }

    /// The limits of balloon chains (Linux sends up to 256 PFNs per buffer).
    pub fn chain_limits() -> ChainLimits {
        ChainLimits {
            max_descriptors: 16,
            max_bytes: 64 << 10,
        }
    }

    /// Pages currently inflated.
    pub fn inflated_pages(&self) -> usize {
        self.inflated.len()
    }

    /// The target in pages.
    pub fn target_pages(&self) -> u32 {
        self.num_pages
    }

    /// The last statistics received, formatted.
    pub fn last_stats(&self) -> Option<&str> {
        self.last_stats.as_deref()
    }

    fn config(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..4].copy_from_slice(&self.num_pages.to_le_bytes());
        c[4..].copy_from_slice(&self.actual.to_le_bytes());
        c
    }

    fn read_pfns(mem: &GuestMemoryMmap, chain: &Chain) -> Option<Vec<u32>> {
        if !chain.writable.is_empty() {
            return None;
        }
        let mut raw = Vec::with_capacity(chain.readable_len() as usize);
        for s in &chain.readable {
            let start = raw.len();
            raw.resize(start + s.len as usize, 0);
            mem.read_slice(&mut raw[start..], s.addr).ok()?;
        }
        Some(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// Inflates the pages of `pfns`; returns how many were released.
    pub fn inflate(&mut self, mem: &GuestMemoryMmap, pfns: &[u32]) -> usize {
        let mut pages: Vec<u64> = pfns.iter().map(|&p| u64::from(p)).collect();
        pages.sort_unstable();
        pages.dedup();
        let mut released = 0;
        // Release runs of consecutive pages with one madvise each.
        let mut i = 0;
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                j += 1;
            }
            let addr = GuestAddress(pages[i] << PAGE_SHIFT);
            let len = (j - i) as u64 * PAGE_SIZE;
            let in_ram = mem.check_range(addr, len as usize);
            let result = if in_ram {
                release_range(mem, addr, len).or_else(|_| {
                    // A run crossing a region end: page by page.
                    (i..j).try_for_each(|k| {
                        release_range(mem, GuestAddress(pages[k] << PAGE_SHIFT), PAGE_SIZE)
                    })
                })
            } else {
                Err(format!(
                    "pages {:#x}..{:#x} are not guest RAM",
                    pages[i],
                    pages[j - 1] + 1
                ))
            };
            match result {
                Ok(()) => {
                    released += j - i;
                    self.inflated.extend(pages[i..j].iter().copied());
                }
                Err(e) => {
                    if DeviceCounters::bump(&self.counters.bad_requests) {
                        log::warn!("{}: inflate: {e}", self.name);
                    }
                }
            }
            i = j;
        }
        released
    }

    /// Deflates the pages of `pfns`; returns how many were inflated.
    pub fn deflate(&mut self, pfns: &[u32]) -> usize {
        let mut back = 0;
        let mut unknown = 0;
        for &p in pfns {
            if self.inflated.remove(&u64::from(p)) {
                back += 1;
            } else {
                unknown += 1;
            }
        }
        if unknown > 0 && DeviceCounters::bump(&self.counters.bad_requests) {
            log::warn!(
                "{}: deflate of {unknown} pages that were not inflated",
                self.name
            );
        }
        back
    }

    fn process_pfn_queue(&mut self, index: usize, ctx: &mut DeviceCtx) {
        let mem = ctx.mem;
        let name = self.name.clone();
        let counters = Arc::clone(&self.counters);
        let Some(q) = ctx.queues.get_mut(index) else {
            return;
        };
        q.process(mem, &name, &counters, |popped| {
            let Ok(chain) = popped else {
                return 0;
            };
            counters.requests.fetch_add(1, Ordering::Relaxed);
            match Self::read_pfns(mem, &chain) {
                Some(pfns) if index == INFLATE_QUEUE => {
                    self.inflate(mem, &pfns);
                }
                Some(pfns) => {
                    self.deflate(&pfns);
                }
                None => {
                    if DeviceCounters::bump(&counters.bad_requests) {
                        log::warn!("{name}: page list with device-writable buffers or unreadable");
                    }
                }
            }
            0
        });
        log::debug!("{}: {} pages inflated", self.name, self.inflated.len());
        ctx.notify_queue(index);
    }

    fn process_stats_queue(&mut self, ctx: &mut DeviceCtx) {
        let mem = ctx.mem;
        let Some(q) = ctx.queues.get_mut(STATS_QUEUE) else {
            return;
        };
        let counters = Arc::clone(&self.counters);
        // With EVENT_IDX the driver only notifies when the device has moved
        // its avail event, so look again after re-enabling notifications.
        loop {
            while let Some(popped) = q.pop(mem, &self.name, &counters) {
                match popped {
                    Ok(chain) => self.take_stats_buffer(mem, q, &chain),
                    Err((head, _)) => q.add_used(mem, head, 0, &self.name, &counters),
                }
            }
            if !q.enable_notification(mem) {
                break;
            }
        }
        ctx.notify_queue(STATS_QUEUE);
    }

    fn take_stats_buffer(&mut self, mem: &GuestMemoryMmap, q: &mut VirtQueue, chain: &Chain) {
        log::debug!(
            "{}: statistics buffer {} ({} bytes)",
            self.name,
            chain.head,
            chain.readable_len()
        );
        if let Some(old) = self.stats_head.replace(chain.head) {
            // The driver may only have one buffer out: give the older one back.
            q.add_used(mem, old, 0, &self.name, &self.counters);
        }
        let mut raw = vec![0u8; chain.readable_len().min(4096) as usize];
        let mut done = 0;
        for s in &chain.readable {
            let n = (s.len as usize).min(raw.len() - done);
            if n == 0 || mem.read_slice(&mut raw[done..done + n], s.addr).is_err() {
                break;
            }
            done += n;
        }
        let text = format_stats(&parse_stats(&raw[..done]));
        if std::mem::take(&mut self.stats_requested) {
            // Printed because someone asked; not a log message.
            eprint!("pvrs-vmm: {}: stats: {text}\r\n", self.name);
        }
        self.last_stats = Some(text);
    }

    /// Asks the driver for fresh statistics by returning its buffer.
    pub fn request_stats(&mut self, ctx: &mut DeviceCtx) -> bool {
        let Some(head) = self.stats_head.take() else {
            log::debug!("{}: no statistics buffer to return yet", self.name);
            return false;
        };
        log::debug!(
            "{}: requesting statistics (returning buffer {head})",
            self.name
        );
        self.stats_requested = true;
        if let Some(q) = ctx.queues.get_mut(STATS_QUEUE) {
            q.add_used(ctx.mem, head, 0, &self.name, &self.counters);
        }
        ctx.notify_queue(STATS_QUEUE);
        true
    }
}

fn mib_to_pages(mib: u64) -> u32 {
    u32::try_from(mib.saturating_mul(1 << (20 - PAGE_SHIFT))).unwrap_or(u32::MAX)
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
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

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (offset 4) is driver-writable.
        let mut c = self.config();
        let Some(end) = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(data.len()))
        else {
            return;
        };
        if offset < 4 || end > c.len() {
            log::debug!("{}: config write at {offset:#x} ignored", self.name);
            return;
        }
        c[offset as usize..end].copy_from_slice(data);
        let actual = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        if actual != self.actual {
            log::info!(
                "{}: guest reports {} pages ({} MiB) in the balloon",
                self.name,
                actual,
                actual >> 8
            );
            self.actual = actual;
        }
    }

    fn process_queue(&mut self, index: usize, ctx: &mut DeviceCtx) {
        match index {
            INFLATE_QUEUE | DEFLATE_QUEUE => self.process_pfn_queue(index, ctx),
            STATS_QUEUE => self.process_stats_queue(ctx),
            _ => {}
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        self.stats_timer.iter().map(|t| t.as_raw_fd()).collect()
    }

    fn process_extra(&mut self, index: usize, ctx: &mut DeviceCtx) {
        self.drain_extra(index);
        self.request_stats(ctx);
    }

    fn drain_extra(&mut self, _index: usize) {
        if let Some(t) = &mut self.stats_timer {
            // The timer is readable: this returns the expiry count at once.
            let _ = t.wait();
        }
    }

    fn reset(&mut self) {
        self.actual = 0;
        self.stats_head = None;
        self.stats_requested = false;
        // Inflated pages stay released on the host; after a reset the guest
        // owns them again and they fault back in on use.
        self.inflated.clear();
    }

    fn counters(&self) -> &DeviceCounters {
        &self.counters
    }

    fn control(&mut self, command: &[&str], ctx: Option<&mut DeviceCtx>) -> Option<String> {
        match command {
            ["balloon", mib] => {
                let Ok(mib) = mib.parse::<u64>() else {
                    return Some(format!("error: bad size {mib:?}"));
                };
                self.num_pages = mib_to_pages(mib);
                if let Some(ctx) = ctx {
                    ctx.interrupt.signal_config();
                }
                Some(format!(
                    "balloon target {mib} MiB ({} pages); guest reports {} pages, {} inflated",
                    self.num_pages,
                    self.actual,
                    self.inflated.len()
                ))
            }
            ["balloon-stats"] => {
                let requested = ctx.is_some_and(|ctx| self.request_stats(ctx));
                let last = self.last_stats.clone().unwrap_or_else(|| "none yet".into());
                Some(format!(
                    "balloon: target {} pages, actual {}, inflated {}; last stats: {last}{}",
                    self.num_pages,
                    self.actual,
                    self.inflated.len(),
                    if requested {
                        " (fresh stats requested)"
                    } else {
                        ""
                    }
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::chain::tests::{queue_with, N, R, W};
    use crate::virtio::Interrupt;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn resident_pages(mem: &GuestMemoryMmap, addr: u64, pages: usize) -> usize {
        let region = mem.find_region(GuestAddress(addr)).unwrap();
        let host = region
            .as_ptr()
            .wrapping_add((addr - region.start_addr().0) as usize);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is inside the mapping; `vec` has one byte per page.
        let r = unsafe { libc::mincore(host.cast(), pages * PAGE_SIZE as usize, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    fn balloon() -> Balloon {
        Balloon::new(
            "balloon-test".into(),
            &BalloonConfig {
                target_mib: 4,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn inflate_releases_host_memory_and_deflate_brings_it_back() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let base = 8u64 << 20;
        mem.write_slice(&vec![0xaa; 1 << 20], GuestAddress(base))
            .unwrap();
        assert_eq!(resident_pages(&mem, base, 256), 256);
        let mut b = balloon();
        let pfns: Vec<u32> = (0..256).map(|i| ((base >> 12) + i) as u32).collect();
        assert_eq!(b.inflate(&mem, &pfns), 256);
        assert_eq!(resident_pages(&mem, base, 256), 0);
        assert_eq!(b.inflated_pages(), 256);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(base)).unwrap(), 0);
        assert_eq!(b.deflate(&pfns[..128]), 128);
        assert_eq!(b.inflated_pages(), 128);
        // Deflated pages are usable again.
        mem.write_obj(7u8, GuestAddress(base)).unwrap();
        assert_eq!(resident_pages(&mem, base, 1), 1);
        // Deflating pages that were never inflated is counted.
        assert_eq!(b.deflate(&[1, 2]), 0);
        assert_eq!(b.counters().bad_requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn inflate_outside_ram_is_refused() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut b = balloon();
        assert_eq!(b.inflate(&mem, &[0x100, 0x1000_0000, u32::MAX]), 0);
        assert_eq!(b.inflated_pages(), 0);
        assert!(b.counters().bad_requests.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn runs_crossing_regions_are_split() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(1 << 20), 1 << 20),
        ])
        .unwrap();
        let mut b = balloon();
        assert_eq!(b.inflate(&mem, &[0xff, 0x100]), 2);
    }

    #[test]
    fn config_and_control() {
        let mut b = balloon();
        let mut c = [0u8; 4];
        b.read_config(0, &mut c);
        assert_eq!(u32::from_le_bytes(c), 1024);
        b.write_config(4, &512u32.to_le_bytes());
        b.read_config(4, &mut c);
        assert_eq!(u32::from_le_bytes(c), 512);
        // num_pages is read-only for the driver.
        b.write_config(0, &[0, 0, 0, 0]);
        assert_eq!(b.target_pages(), 1024);
        let reply = b.control(&["balloon", "8"], None).unwrap();
        assert!(reply.contains("2048 pages"), "{reply}");
        assert!(b
            .control(&["balloon", "x"], None)
            .unwrap()
            .starts_with("error"));
        assert!(b.control(&["status"], None).is_none());
    }

    #[test]
    fn stats_round_trip() {
        let mem = crate::virtio::chain::tests::mem();
        let mut raw = Vec::new();
        for (tag, val) in [(4u16, 100u64 << 20), (5, 512 << 20), (2, 7)] {
            raw.extend_from_slice(&tag.to_le_bytes());
            raw.extend_from_slice(&val.to_le_bytes());
        }
        mem.write_slice(&raw, GuestAddress(0x8000)).unwrap();
        let mut b = balloon();
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut queues = [
            VirtQueue::new(16, Balloon::chain_limits()),
            VirtQueue::new(16, Balloon::chain_limits()),
            VirtQueue::new(16, Balloon::chain_limits()),
        ];
        queues[2].queue = queue_with(&mem, &[(0x8000, raw.len() as u32, R, 0)], 0);
        let mut ctx = DeviceCtx {
            mem: &mem,
            queues: &mut queues,
            interrupt: &irq,
        };
        b.process_queue(STATS_QUEUE, &mut ctx);
        assert_eq!(
            b.last_stats(),
            Some("free_memory=100MiB total_memory=512MiB major_faults=7")
        );
        // The buffer is held until stats are requested.
        assert_eq!(irq.status(), 0);
        let reply = b.control(&["balloon-stats"], Some(&mut ctx)).unwrap();
        assert!(reply.contains("fresh stats requested"), "{reply}");
        assert_eq!(irq.status(), crate::virtio::INT_USED_RING);
        let _ = (N, W);
    }

    #[test]
    fn stats_parsing() {
        let mut raw = vec![];
        raw.extend_from_slice(&42u16.to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
        raw.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse_stats(&raw), vec![("tag42".to_string(), 1)]);
    }
}
