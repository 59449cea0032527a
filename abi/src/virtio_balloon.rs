//! The traditional virtio memory balloon: feature bits, configuration
//! space, page frame numbers and memory statistics.
//!
//! Sources: the virtio 1.2 specification, section 5.5 "Traditional Memory
//! Balloon Device" (5.5.3 feature bits, 5.5.4 device configuration layout,
//! 5.5.6 device operation, 5.5.6.3 memory statistics), and the Linux header
//! `include/uapi/linux/virtio_balloon.h`, mirrored completely.  The
//! transport-independent parts are in [`super::virtio`].
//!
//! The device asks for [`VirtioBalloonConfig::num_pages`] pages; the driver
//! gives pages to it (inflate queue) or takes them back (deflate queue) as
//! arrays of 32-bit page frame numbers in units of
//! [`VIRTIO_BALLOON_PAGE_SIZE`] ([`pfn_to_gpa`], [`gpa_to_pfn`]), and
//! reports the total in [`VirtioBalloonConfig::actual`].  With
//! [`VIRTIO_BALLOON_F_STATS_VQ`] it also sends arrays of
//! [`VirtioBalloonStat`].
//!
//! # Byte order
//!
//! Multi-byte fields are little endian on the wire for modern devices
//! (`__le*`, `__virtio*`); they are plain integers here because the guest
//! and the host of pvrs are both x86-64, little endian.
//!
//! # The packed statistics entry
//!
//! `struct virtio_balloon_stat` is `__attribute__((packed))`: a 16-bit tag
//! directly followed by a 64-bit value at offset 2, 10 bytes in all.  A
//! naturally aligned `#[repr(C)]` struct cannot have that layout (it would
//! put the value at 8), so [`VirtioBalloonStat`] is `#[repr(C, packed)]`
//! (the `packed` form of `abi_struct!`): alignment 1, no padding, and with
//! the `zerocopy` feature also `Unaligned`.  Its fields are read and
//! written by value (`stat.val`); taking a reference to one is a compile
//! error rather than undefined behaviour, so no `unsafe` is involved.  The
//! alternative, byte-array fields with accessors, would have hidden the
//! field types behind methods for no gain.

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// Feature bit: the driver must tell the host before it reuses pages
    /// taken out of the balloon (deflate before use).
    VIRTIO_BALLOON_F_MUST_TELL_HOST: u32 = 0;
    /// Feature bit: there is a statistics virtqueue.
    VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
    /// Feature bit: the driver deflates the balloon when the guest runs
    /// out of memory.
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
    /// Feature bit: there is a free page hinting virtqueue, driven by
    /// [`VirtioBalloonConfig::free_page_hint_cmd_id`].
    VIRTIO_BALLOON_F_FREE_PAGE_HINT: u32 = 3;
    /// Feature bit: the guest poisons free pages with
    /// [`VirtioBalloonConfig::poison_val`].
    VIRTIO_BALLOON_F_PAGE_POISON: u32 = 4;
    /// Feature bit: there is a free page reporting virtqueue.
    VIRTIO_BALLOON_F_REPORTING: u32 = 5;

    /// log2 of the balloon's page size: page frame numbers on the inflate
    /// and deflate queues count 4 KiB pages whatever the guest page size.
    VIRTIO_BALLOON_PFN_SHIFT: u32 = 12;

    /// [`VirtioBalloonConfig::free_page_hint_cmd_id`]: stop hinting.
    VIRTIO_BALLOON_CMD_ID_STOP: u32 = 0;
    /// [`VirtioBalloonConfig::free_page_hint_cmd_id`]: hinting is done.
    VIRTIO_BALLOON_CMD_ID_DONE: u32 = 1;

    /// Statistics tag: bytes swapped in.
    VIRTIO_BALLOON_S_SWAP_IN: u16 = 0;
    /// Statistics tag: bytes swapped out.
    VIRTIO_BALLOON_S_SWAP_OUT: u16 = 1;
    /// Statistics tag: major page faults.
    VIRTIO_BALLOON_S_MAJFLT: u16 = 2;
    /// Statistics tag: minor page faults.
    VIRTIO_BALLOON_S_MINFLT: u16 = 3;
    /// Statistics tag: free memory in bytes.
    VIRTIO_BALLOON_S_MEMFREE: u16 = 4;
    /// Statistics tag: total memory in bytes.
    VIRTIO_BALLOON_S_MEMTOT: u16 = 5;
    /// Statistics tag: available memory in bytes (as `MemAvailable` in
    /// `/proc/meminfo`).
    VIRTIO_BALLOON_S_AVAIL: u16 = 6;
    /// Statistics tag: disk caches in bytes.
    VIRTIO_BALLOON_S_CACHES: u16 = 7;
    /// Statistics tag: successful hugetlb page allocations.
    VIRTIO_BALLOON_S_HTLB_PGALLOC: u16 = 8;
    /// Statistics tag: failed hugetlb page allocations.
    VIRTIO_BALLOON_S_HTLB_PGFAIL: u16 = 9;
    /// Statistics tag: OOM killer invocations.
    VIRTIO_BALLOON_S_OOM_KILL: u16 = 10;
    /// Statistics tag: memory allocation stalls.
    VIRTIO_BALLOON_S_ALLOC_STALL: u16 = 11;
    /// Statistics tag: memory scanned asynchronously (kswapd).
    VIRTIO_BALLOON_S_ASYNC_SCAN: u16 = 12;
    /// Statistics tag: memory scanned directly.
    VIRTIO_BALLOON_S_DIRECT_SCAN: u16 = 13;
    /// Statistics tag: memory reclaimed asynchronously (kswapd).
    VIRTIO_BALLOON_S_ASYNC_RECLAIM: u16 = 14;
    /// Statistics tag: memory reclaimed directly.
    VIRTIO_BALLOON_S_DIRECT_RECLAIM: u16 = 15;
    /// The number of statistics tags Linux knows (one more than the
    /// highest).
    VIRTIO_BALLOON_S_NR: u16 = 16;
}

/// The balloon's page size in bytes, `1 << VIRTIO_BALLOON_PFN_SHIFT` (4
/// KiB).  Not a Linux macro.
pub const VIRTIO_BALLOON_PAGE_SIZE: u64 = 1 << VIRTIO_BALLOON_PFN_SHIFT;

/// The name of every statistics tag, indexed by tag (Linux
/// `VIRTIO_BALLOON_S_NAMES`), e.g. for logs.
pub const VIRTIO_BALLOON_S_NAMES: [&str; VIRTIO_BALLOON_S_NR as usize] = [
    "swap-in",
    "swap-out",
    "major-faults",
    "minor-faults",
    "free-memory",
    "total-memory",
    "available-memory",
    "disk-caches",
    "hugetlb-allocations",
    "hugetlb-failures",
    "oom-kills",
    "alloc-stalls",
    "async-scans",
    "direct-scans",
    "async-reclaims",
    "direct-reclaims",
];

/// The name of statistics tag `tag`, or `None` for tags this crate does not
/// know (a newer guest may send them; the spec says to ignore them).
pub const fn stat_name(tag: u16) -> Option<&'static str> {
    if tag < VIRTIO_BALLOON_S_NR {
        Some(VIRTIO_BALLOON_S_NAMES[tag as usize])
    } else {
        None
    }
}

/// The guest physical address of balloon page frame number `pfn`.
pub const fn pfn_to_gpa(pfn: u32) -> u64 {
    (pfn as u64) << VIRTIO_BALLOON_PFN_SHIFT
}

/// The balloon page frame number of guest physical address `gpa`, or `None`
/// if `gpa` is not [`VIRTIO_BALLOON_PAGE_SIZE`]-aligned or is beyond what a
/// 32-bit frame number reaches (16 TiB).
pub const fn gpa_to_pfn(gpa: u64) -> Option<u32> {
    if gpa & (VIRTIO_BALLOON_PAGE_SIZE - 1) != 0 {
        return None;
    }
    let pfn = gpa >> VIRTIO_BALLOON_PFN_SHIFT;
    if pfn > u32::MAX as u64 {
        None
    } else {
        Some(pfn as u32)
    }
}

abi_struct! {
    /// The device configuration space of the balloon (Linux
    /// `struct virtio_balloon_config`, 16 bytes; spec 5.5.4).
    #[derive(Default)]
    pub struct VirtioBalloonConfig {
        /// Pages the device wants the balloon to hold (written by the
        /// device).
        pub num_pages: u32,
        /// Pages the balloon holds (written by the driver).
        pub actual: u32,
        /// The free page hinting command: a new ID starts a hinting run, or
        /// a `VIRTIO_BALLOON_CMD_ID_*` value ([`VIRTIO_BALLOON_F_FREE_PAGE_HINT`]).
        /// C puts it in a union with its deprecated name
        /// `free_page_report_cmd_id` (same offset, checked by the tests).
        pub free_page_hint_cmd_id: u32,
        /// The byte pattern freed pages are poisoned with
        /// ([`VIRTIO_BALLOON_F_PAGE_POISON`]).
        pub poison_val: u32,
    }
}

assert_layout!(VirtioBalloonConfig, size 16, {
    num_pages: 0, actual: 4, free_page_hint_cmd_id: 8, poison_val: 12,
});

abi_struct! {
    /// One entry of the statistics buffer (Linux
    /// `struct virtio_balloon_stat`, packed, 10 bytes; spec 5.5.6.3).  See
    /// the module documentation for why it is `#[repr(C, packed)]`.
    #[derive(Default)]
    packed pub struct VirtioBalloonStat {
        /// One of the `VIRTIO_BALLOON_S_*` tags.
        pub tag: u16,
        /// The value (at offset 2, unaligned).
        pub val: u64,
    }
}

const _: () = assert!(core::mem::align_of::<VirtioBalloonStat>() == 1);
assert_layout!(VirtioBalloonStat, size 10, { tag: 0, val: 2 });

impl VirtioBalloonStat {
    /// The name of this entry's tag ([`stat_name`]).
    pub const fn name(&self) -> Option<&'static str> {
        stat_name(self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_are_indexed_by_tag() {
        assert_eq!(stat_name(VIRTIO_BALLOON_S_SWAP_IN), Some("swap-in"));
        assert_eq!(stat_name(VIRTIO_BALLOON_S_AVAIL), Some("available-memory"));
        assert_eq!(
            stat_name(VIRTIO_BALLOON_S_DIRECT_RECLAIM),
            Some("direct-reclaims")
        );
        assert_eq!(stat_name(VIRTIO_BALLOON_S_NR), None);
        assert_eq!(stat_name(u16::MAX), None);
        let stat = VirtioBalloonStat {
            tag: VIRTIO_BALLOON_S_MEMFREE,
            val: 1 << 30,
        };
        assert_eq!(stat.name(), Some("free-memory"));
        // Fields of the packed struct are used by value.
        let val = stat.val;
        assert_eq!(val, 1 << 30);
    }

    #[test]
    fn pfns_count_4k_pages() {
        assert_eq!(VIRTIO_BALLOON_PAGE_SIZE, 4096);
        assert_eq!(pfn_to_gpa(0x12345), 0x1234_5000);
        assert_eq!(pfn_to_gpa(u32::MAX), 0xfff_ffff_f000);
        assert_eq!(gpa_to_pfn(0x1234_5000), Some(0x12345));
        assert_eq!(gpa_to_pfn(0x1234_5008), None);
        assert_eq!(gpa_to_pfn(0xfff_ffff_f000), Some(u32::MAX));
        assert_eq!(gpa_to_pfn(0x1000_0000_0000), None);
        for pfn in [0, 1, 0x8000_0000, u32::MAX] {
            assert_eq!(gpa_to_pfn(pfn_to_gpa(pfn)), Some(pfn));
        }
    }
}
