//! Checks `pvrs_abi` against the Linux 6.12 headers it mirrors.
//!
//! No number is typed in here.  The crate's `LINUX_CONSTANTS` tables (built
//! by the same macro that defines the constants) and the layouts the Rust
//! compiler computes are compared with what a C compiler computes from the
//! real headers: the test writes a C program that includes them by path,
//! prints every value, and compares the output.  The same program runs the
//! headers' own code where the crate reimplements it (the hypervisor leaf
//! loop of `cpuid.h`, `vring_size()`, `vring_init()` and
//! `vring_need_event()` of `virtio_ring.h`, the balloon statistics names).
//! A text scan of the headers makes sure that no `#define` and no struct is
//! left out.
//!
//! The kernel tree comes from `PVRS_KERNEL_SRC`, by default
//! `$HOME/.cache/pvrs/src/linux-source-6.12`.  Nothing is built or written
//! in it (another build may be using it); the C program lives in a
//! temporary directory.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use pvrs_abi::hypercall::{
    KvmClockPairing, KvmMmuOpFlushTlb, KvmMmuOpHeader, KvmMmuOpReleasePt, KvmMmuOpWritePte,
};
use pvrs_abi::msr::KvmVcpuPvApfData;
use pvrs_abi::pvclock::{PvclockVcpuTimeInfo, PvclockWallClock};
use pvrs_abi::steal_time::KvmStealTime;
use pvrs_abi::virtio::{
    VringAvail, VringDesc, VringPackedDesc, VringPackedDescEvent, VringUsed, VringUsedElem,
};
use pvrs_abi::virtio_balloon::{VirtioBalloonConfig, VirtioBalloonStat};
use pvrs_abi::virtio_blk::{
    VirtioBlkConfig, VirtioBlkDiscardWriteZeroes, VirtioBlkGeometry, VirtioBlkOuthdr,
    VirtioBlkZoneDescriptor, VirtioBlkZoneReport, VirtioBlkZonedCharacteristics, VirtioScsiInhdr,
};
use pvrs_abi::virtio_net::{
    VirtioNetConfig, VirtioNetCtrlCoal, VirtioNetCtrlCoalRx, VirtioNetCtrlCoalTx,
    VirtioNetCtrlCoalVq, VirtioNetCtrlHdr, VirtioNetCtrlMac, VirtioNetCtrlMq,
    VirtioNetCtrlQueueStats, VirtioNetCtrlQueueStatsEntry, VirtioNetHdr, VirtioNetHdrMrgRxbuf,
    VirtioNetHdrV1, VirtioNetHdrV1Hash, VirtioNetRssConfigHdr, VirtioNetStatsCapabilities,
    VirtioNetStatsCvq, VirtioNetStatsReplyHdr, VirtioNetStatsRxBasic, VirtioNetStatsRxCsum,
    VirtioNetStatsRxGso, VirtioNetStatsRxSpeed, VirtioNetStatsTxBasic, VirtioNetStatsTxCsum,
    VirtioNetStatsTxGso, VirtioNetStatsTxSpeed,
};
use pvrs_abi::{
    cpuid, hypercall, msr, pvclock, steal_time, virtio, virtio_balloon, virtio_blk, virtio_net,
};

/// The headers the crate mirrors, relative to the kernel tree.  Every
/// `#define` and struct in them must be covered (structs with the
/// exceptions of [`UNMIRRORED_STRUCTS`]).
const MIRRORED_HEADERS: [&str; 10] = [
    "include/uapi/linux/kvm_para.h",
    "arch/x86/include/uapi/asm/kvm_para.h",
    "arch/x86/include/asm/pvclock-abi.h",
    "include/uapi/linux/virtio_config.h",
    "include/uapi/linux/virtio_ids.h",
    "include/uapi/linux/virtio_ring.h",
    "include/uapi/linux/virtio_mmio.h",
    "include/uapi/linux/virtio_blk.h",
    "include/uapi/linux/virtio_net.h",
    "include/uapi/linux/virtio_balloon.h",
];

/// Structs of the mirrored headers that have no Rust counterpart, and why.
const UNMIRRORED_STRUCTS: [(&str, &str); 4] = [
    (
        "vring",
        "the C driver's pointers to the three parts of a ring, not a memory layout",
    ),
    (
        "virtio_net_rss_config",
        "variable-length message with fields after a variable-length array",
    ),
    (
        "virtio_net_rss_config_trailer",
        "variable-length message whose byte array starts in the tail padding",
    ),
    (
        "virtio_net_hash_config",
        "variable-length message whose byte array starts in the tail padding",
    ),
];

/// The kernel-internal header whose `for_each_possible_hypervisor_cpuid_base`
/// loop the crate's hypervisor leaf search mirrors.
const CPUID_HEADER: &str = "arch/x86/include/asm/cpuid.h";

/// Defines that are not plain numbers and so are not in the constant
/// tables; `c_program_checks` covers each of them in its own way.
const SPECIAL_DEFINES: [&str; 6] = [
    "KVM_SIGNATURE",
    "KVM_MAP_GPA_RANGE_ENC_STAT",
    "vring_used_event",
    "vring_avail_event",
    "VIRTIO_BALLOON_S_NAMES_WITH_PREFIX",
    "VIRTIO_BALLOON_S_NAMES",
];

/// The function-like defines among [`SPECIAL_DEFINES`].
const FUNCTION_LIKE_DEFINES: [&str; 4] = [
    "KVM_MAP_GPA_RANGE_ENC_STAT",
    "vring_used_event",
    "vring_avail_event",
    "VIRTIO_BALLOON_S_NAMES_WITH_PREFIX",
];

fn kernel_source() -> PathBuf {
    let tree = match std::env::var_os("PVRS_KERNEL_SRC") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/pvrs/src/linux-source-6.12")
        }
    };
    let missing: Vec<_> = MIRRORED_HEADERS
        .iter()
        .chain([&CPUID_HEADER, &"Makefile"])
        .filter(|file| !tree.join(file).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the Linux 6.12 source tree is missing or incomplete at {} (lacks {missing:?}): \
         run `make kernel-source`, or point PVRS_KERNEL_SRC at an extracted linux-6.12 tree",
        tree.display()
    );
    tree
}

fn read(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Every constant table of the crate, in one list.
fn crate_constants() -> Vec<(&'static str, u64)> {
    [
        cpuid::LINUX_CONSTANTS,
        hypercall::LINUX_CONSTANTS,
        msr::LINUX_CONSTANTS,
        pvclock::LINUX_CONSTANTS,
        steal_time::LINUX_CONSTANTS,
        virtio::LINUX_CONSTANTS,
        virtio_blk::LINUX_CONSTANTS,
        virtio_net::LINUX_CONSTANTS,
        virtio_balloon::LINUX_CONSTANTS,
    ]
    .concat()
}

/// A `#define` found in a header: its name and whether it takes arguments.
struct Define {
    name: String,
    is_function_like: bool,
}

fn identifier_len(text: &str) -> usize {
    text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len())
}

fn defines_in(text: &str) -> Vec<Define> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('#')?.trim_start();
            let rest = rest.strip_prefix("define")?.trim_start();
            let (name, after_name) = rest.split_at(identifier_len(rest));
            Some(Define {
                name: name.to_string(),
                is_function_like: after_name.starts_with('('),
            })
        })
        .collect()
}

/// Names of the structs *defined* (not just used) in a header; anonymous
/// ones (`struct {`) have no name and are left out.
fn structs_defined_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("struct ")?.trim_start();
            let (name, after_name) = rest.split_at(identifier_len(rest));
            (!name.is_empty() && after_name.trim_start().starts_with('{')).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn kernel_source_is_linux_6_12() {
    let makefile = read(&kernel_source(), "Makefile");
    let variable = |name: &str| {
        makefile
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim)
            })
            .unwrap_or_else(|| panic!("no {name} in the kernel Makefile"))
            .to_string()
    };
    assert_eq!(
        (
            variable("VERSION").as_str(),
            variable("PATCHLEVEL").as_str()
        ),
        ("6", "12"),
        "the ABI is pinned to Linux 6.12 headers"
    );
}

/// Completeness in both directions: every numeric `#define` of the
/// mirrored headers is a crate constant of the same name, and every crate
/// constant is defined there.  This covers in particular every
/// `KVM_FEATURE_*`, `KVM_HINTS_*`, `KVM_HC_*` and `MSR_KVM_*`, and every
/// `VIRTIO_*` / `VRING_*` name of the virtio headers.
#[test]
fn every_header_define_is_a_crate_constant() {
    let tree = kernel_source();
    let defines: Vec<Define> = MIRRORED_HEADERS
        .iter()
        .flat_map(|header| defines_in(&read(&tree, header)))
        // Leading underscores mark include guards.
        .filter(|define| !define.name.starts_with('_'))
        .collect();
    let constants: BTreeSet<&str> = crate_constants().iter().map(|&(name, _)| name).collect();
    assert_eq!(
        constants.len(),
        crate_constants().len(),
        "a constant is listed twice"
    );

    let missing: Vec<&str> = defines
        .iter()
        .filter(|define| {
            !constants.contains(define.name.as_str())
                && !SPECIAL_DEFINES.contains(&define.name.as_str())
        })
        .map(|define| define.name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "defined in the headers but not in pvrs_abi: {missing:?}"
    );

    for define in &defines {
        assert_eq!(
            define.is_function_like,
            FUNCTION_LIKE_DEFINES.contains(&define.name.as_str()),
            "{} changed between plain and function-like",
            define.name
        );
    }
    for special in SPECIAL_DEFINES {
        assert!(
            defines.iter().any(|define| define.name == special),
            "{special} is no longer defined"
        );
    }

    let header_names: BTreeSet<&str> = defines.iter().map(|define| define.name.as_str()).collect();
    let invented: Vec<&&str> = constants
        .iter()
        .filter(|name| !header_names.contains(**name))
        .collect();
    assert!(
        invented.is_empty(),
        "in pvrs_abi's tables but not in the headers: {invented:?}"
    );

    for prefix in [
        "KVM_FEATURE_",
        "KVM_HINTS_",
        "KVM_HC_",
        "MSR_KVM_",
        "VIRTIO_CONFIG_S_",
        "VIRTIO_F_",
        "VIRTIO_ID_",
        "VRING_DESC_F_",
        "VIRTIO_RING_F_",
        "VIRTIO_MMIO_",
        "VIRTIO_BLK_F_",
        "VIRTIO_BLK_T_",
        "VIRTIO_BLK_S_",
        "VIRTIO_NET_F_",
        "VIRTIO_NET_HDR_GSO_",
        "VIRTIO_NET_CTRL_",
        "VIRTIO_BALLOON_F_",
        "VIRTIO_BALLOON_S_",
    ] {
        assert!(
            header_names.iter().any(|name| name.starts_with(prefix)),
            "the scan found no {prefix} names: has the header format changed?"
        );
    }
}

/// One struct's layout as Rust computes it, to compare with C.
struct StructLayout {
    /// The C type: `struct name`, or a `__typeof__` expression for an
    /// anonymous struct.
    c_type: String,
    /// C declares it `__packed` (alignment 1); the Rust type has the same
    /// size and offsets, with natural alignment unless it is
    /// `#[repr(packed)]` too.
    c_packed: bool,
    size: usize,
    align: usize,
    /// (C name, offset, size) of every field, in declaration order.  A
    /// zero-size field mirrors a C flexible array member (which has an
    /// offset but no `sizeof`); it must come last.
    fields: Vec<(&'static str, usize, usize)>,
}

impl StructLayout {
    /// The struct's C tag, if it has one.
    fn c_name(&self) -> Option<&str> {
        self.c_type.strip_prefix("struct ")
    }
}

/// The size of what `_field` returns: the size of a field, found without
/// creating a value and without taking a reference (which a packed field
/// does not allow).
fn returned_size<S, T>(_field: impl Fn(&S) -> T) -> usize {
    size_of::<T>()
}

/// The C name of a field: the Rust one, unless `as "c_name"` gives another
/// (for C names that are Rust keywords).
macro_rules! c_field_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $c_name:literal) => {
        $c_name
    };
}

macro_rules! layout {
    (@ $rust:ty, $c_type:expr, $packed:literal, [$($field:ident $(as $c_field:literal)?),+]) => {
        StructLayout {
            c_type: $c_type,
            c_packed: $packed,
            size: size_of::<$rust>(),
            align: align_of::<$rust>(),
            fields: vec![$((
                c_field_name!($field $($c_field)?),
                offset_of!($rust, $field),
                returned_size(|value: &$rust| value.$field),
            )),+],
        }
    };
    (
        $rust:ty, anonymous $c_type:literal, c_packed: $packed:literal,
        [$($field:ident $(as $c_field:literal)?),+ $(,)?]
    ) => {
        layout!(@ $rust, String::from($c_type), $packed, [$($field $(as $c_field)?),+])
    };
    (
        $rust:ty, $c_name:literal, c_packed: $packed:literal,
        [$($field:ident $(as $c_field:literal)?),+ $(,)?]
    ) => {
        layout!(@ $rust, format!("struct {}", $c_name), $packed, [$($field $(as $c_field)?),+])
    };
}

fn crate_layouts() -> Vec<StructLayout> {
    vec![
        layout!(PvclockVcpuTimeInfo, "pvclock_vcpu_time_info", c_packed: true, [
            version, pad0, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags, pad,
        ]),
        layout!(PvclockWallClock, "pvclock_wall_clock", c_packed: true, [version, sec, nsec]),
        layout!(KvmStealTime, "kvm_steal_time", c_packed: false, [
            steal, version, flags, preempted, u8_pad, pad,
        ]),
        layout!(KvmClockPairing, "kvm_clock_pairing", c_packed: false, [sec, nsec, tsc, flags, pad]),
        layout!(KvmVcpuPvApfData, "kvm_vcpu_pv_apf_data", c_packed: false, [flags, token, pad]),
        layout!(KvmMmuOpHeader, "kvm_mmu_op_header", c_packed: false, [op, pad]),
        layout!(KvmMmuOpWritePte, "kvm_mmu_op_write_pte", c_packed: false, [header, pte_phys, pte_val]),
        layout!(KvmMmuOpFlushTlb, "kvm_mmu_op_flush_tlb", c_packed: false, [header]),
        layout!(KvmMmuOpReleasePt, "kvm_mmu_op_release_pt", c_packed: false, [header, pt_phys]),
        // virtio_ring.h
        layout!(VringDesc, "vring_desc", c_packed: false, [addr, len, flags, next]),
        layout!(VringAvail, "vring_avail", c_packed: false, [flags, idx, ring]),
        layout!(VringUsedElem, "vring_used_elem", c_packed: false, [id, len]),
        layout!(VringUsed, "vring_used", c_packed: false, [flags, idx, ring]),
        layout!(VringPackedDescEvent, "vring_packed_desc_event", c_packed: false, [off_wrap, flags]),
        layout!(VringPackedDesc, "vring_packed_desc", c_packed: false, [addr, len, id, flags]),
        // virtio_blk.h
        layout!(VirtioBlkGeometry, "virtio_blk_geometry", c_packed: false, [
            cylinders, heads, sectors,
        ]),
        layout!(VirtioBlkZonedCharacteristics, "virtio_blk_zoned_characteristics", c_packed: false, [
            zone_sectors, max_open_zones, max_active_zones, max_append_sectors, write_granularity,
            model, unused2,
        ]),
        layout!(VirtioBlkConfig, "virtio_blk_config", c_packed: true, [
            capacity, size_max, seg_max, geometry, blk_size, physical_block_exp, alignment_offset,
            min_io_size, opt_io_size, wce, unused, num_queues, max_discard_sectors,
            max_discard_seg, discard_sector_alignment, max_write_zeroes_sectors,
            max_write_zeroes_seg, write_zeroes_may_unmap, unused1, max_secure_erase_sectors,
            max_secure_erase_seg, secure_erase_sector_alignment, zoned,
        ]),
        layout!(VirtioBlkOuthdr, "virtio_blk_outhdr", c_packed: false, [
            type_ as "type", ioprio, sector,
        ]),
        layout!(VirtioBlkZoneDescriptor, "virtio_blk_zone_descriptor", c_packed: false, [
            z_cap, z_start, z_wp, z_type, z_state, reserved,
        ]),
        layout!(VirtioBlkZoneReport, "virtio_blk_zone_report", c_packed: false, [
            nr_zones, reserved, zones,
        ]),
        layout!(VirtioBlkDiscardWriteZeroes, "virtio_blk_discard_write_zeroes", c_packed: false, [
            sector, num_sectors, flags,
        ]),
        layout!(VirtioScsiInhdr, "virtio_scsi_inhdr", c_packed: false, [
            errors, data_len, sense_len, residual,
        ]),
        // virtio_net.h
        layout!(VirtioNetConfig, "virtio_net_config", c_packed: true, [
            mac, status, max_virtqueue_pairs, mtu, speed, duplex, rss_max_key_size,
            rss_max_indirection_table_length, supported_hash_types,
        ]),
        layout!(VirtioNetHdrV1, "virtio_net_hdr_v1", c_packed: false, [
            flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers,
        ]),
        layout!(VirtioNetHdrV1Hash, "virtio_net_hdr_v1_hash", c_packed: false, [
            hdr, hash_value, hash_report, padding,
        ]),
        layout!(VirtioNetHdr, "virtio_net_hdr", c_packed: false, [
            flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
        ]),
        layout!(VirtioNetHdrMrgRxbuf, "virtio_net_hdr_mrg_rxbuf", c_packed: false, [hdr, num_buffers]),
        layout!(VirtioNetCtrlHdr, "virtio_net_ctrl_hdr", c_packed: true, [class, cmd]),
        layout!(VirtioNetCtrlMac, "virtio_net_ctrl_mac", c_packed: true, [entries, macs]),
        layout!(VirtioNetCtrlMq, "virtio_net_ctrl_mq", c_packed: false, [virtqueue_pairs]),
        layout!(VirtioNetRssConfigHdr, "virtio_net_rss_config_hdr", c_packed: false, [
            hash_types, indirection_table_mask, unclassified_queue, indirection_table,
        ]),
        layout!(VirtioNetCtrlCoalTx, "virtio_net_ctrl_coal_tx", c_packed: false, [tx_max_packets, tx_usecs]),
        layout!(VirtioNetCtrlCoalRx, "virtio_net_ctrl_coal_rx", c_packed: false, [rx_max_packets, rx_usecs]),
        layout!(VirtioNetCtrlCoal, "virtio_net_ctrl_coal", c_packed: false, [max_packets, max_usecs]),
        layout!(VirtioNetCtrlCoalVq, "virtio_net_ctrl_coal_vq", c_packed: false, [vqn, reserved, coal]),
        layout!(VirtioNetStatsCapabilities, "virtio_net_stats_capabilities", c_packed: false, [
            supported_stats_types,
        ]),
        layout!(VirtioNetCtrlQueueStats, "virtio_net_ctrl_queue_stats", c_packed: false, [stats]),
        layout!(
            VirtioNetCtrlQueueStatsEntry,
            anonymous "__typeof__(((struct virtio_net_ctrl_queue_stats *)0)->stats[0])",
            c_packed: false,
            [vq_index, reserved, types_bitmap]
        ),
        layout!(VirtioNetStatsReplyHdr, "virtio_net_stats_reply_hdr", c_packed: false, [
            type_ as "type", reserved, vq_index, reserved1, size,
        ]),
        layout!(VirtioNetStatsCvq, "virtio_net_stats_cvq", c_packed: false, [hdr, command_num, ok_num]),
        layout!(VirtioNetStatsRxBasic, "virtio_net_stats_rx_basic", c_packed: false, [
            hdr, rx_notifications, rx_packets, rx_bytes, rx_interrupts, rx_drops, rx_drop_overruns,
        ]),
        layout!(VirtioNetStatsTxBasic, "virtio_net_stats_tx_basic", c_packed: false, [
            hdr, tx_notifications, tx_packets, tx_bytes, tx_interrupts, tx_drops, tx_drop_malformed,
        ]),
        layout!(VirtioNetStatsRxCsum, "virtio_net_stats_rx_csum", c_packed: false, [
            hdr, rx_csum_valid, rx_needs_csum, rx_csum_none, rx_csum_bad,
        ]),
        layout!(VirtioNetStatsTxCsum, "virtio_net_stats_tx_csum", c_packed: false, [
            hdr, tx_csum_none, tx_needs_csum,
        ]),
        layout!(VirtioNetStatsRxGso, "virtio_net_stats_rx_gso", c_packed: false, [
            hdr, rx_gso_packets, rx_gso_bytes, rx_gso_packets_coalesced, rx_gso_bytes_coalesced,
        ]),
        layout!(VirtioNetStatsTxGso, "virtio_net_stats_tx_gso", c_packed: false, [
            hdr, tx_gso_packets, tx_gso_bytes, tx_gso_segments, tx_gso_segments_bytes,
            tx_gso_packets_noseg, tx_gso_bytes_noseg,
        ]),
        layout!(VirtioNetStatsRxSpeed, "virtio_net_stats_rx_speed", c_packed: false, [
            hdr, rx_ratelimit_packets, rx_ratelimit_bytes,
        ]),
        layout!(VirtioNetStatsTxSpeed, "virtio_net_stats_tx_speed", c_packed: false, [
            hdr, tx_ratelimit_packets, tx_ratelimit_bytes,
        ]),
        // virtio_balloon.h
        layout!(VirtioBalloonConfig, "virtio_balloon_config", c_packed: false, [
            num_pages, actual, free_page_hint_cmd_id, poison_val,
        ]),
        layout!(VirtioBalloonStat, "virtio_balloon_stat", c_packed: true, [tag, val]),
    ]
}

/// Every struct of the mirrored headers has a Rust layout listed above
/// (except the [`UNMIRRORED_STRUCTS`]), and every listed field set tiles
/// its struct without gaps.  Together with the C comparison of each size
/// and offset, that proves no C field is missing.
#[test]
fn every_header_struct_is_mirrored_completely() {
    let tree = kernel_source();
    let header_structs: BTreeSet<String> = MIRRORED_HEADERS
        .iter()
        .flat_map(|header| structs_defined_in(&read(&tree, header)))
        .collect();
    let layouts = crate_layouts();
    let mirrored: BTreeSet<String> = layouts
        .iter()
        .filter_map(|layout| layout.c_name().map(str::to_string))
        .collect();
    let unmirrored: BTreeSet<String> = UNMIRRORED_STRUCTS
        .iter()
        .map(|&(name, _reason)| name.to_string())
        .collect();
    assert!(
        mirrored.is_disjoint(&unmirrored),
        "a struct is both mirrored and listed as unmirrored"
    );
    let covered: BTreeSet<String> = mirrored.union(&unmirrored).cloned().collect();
    assert_eq!(header_structs, covered);

    for layout in &layouts {
        let mut end = 0;
        for (index, &(field, offset, size)) in layout.fields.iter().enumerate() {
            assert_eq!(
                offset, end,
                "gap or reordering before {}.{field}",
                layout.c_type
            );
            assert!(
                size != 0 || index + 1 == layout.fields.len(),
                "flexible array {}.{field} is not the last field",
                layout.c_type
            );
            end = offset + size;
        }
        assert_eq!(end, layout.size, "padding at the end of {}", layout.c_type);
    }
}

/// One value that the C program prints: a C expression and what the crate
/// says it is.
struct Check {
    c_expression: String,
    expected: u64,
}

fn check(c_expression: impl Into<String>, expected: impl TryInto<u64>) -> Check {
    Check {
        c_expression: c_expression.into(),
        expected: expected.try_into().ok().expect("expected value fits u64"),
    }
}

fn c_program_checks() -> Vec<Check> {
    let mut checks: Vec<Check> = crate_constants()
        .into_iter()
        .map(|(name, value)| check(name, value))
        .collect();

    for status in [0, 1] {
        checks.push(check(
            format!("KVM_MAP_GPA_RANGE_ENC_STAT({status})"),
            hypercall::map_gpa_range_enc_stat(status),
        ));
    }

    checks.push(check(
        "sizeof(KVM_SIGNATURE) - 1",
        cpuid::KVM_SIGNATURE.len(),
    ));
    for (index, &byte) in cpuid::KVM_SIGNATURE.iter().enumerate() {
        checks.push(check(
            format!("(unsigned char)KVM_SIGNATURE[{index}]"),
            byte,
        ));
    }
    for (register, value) in [
        cpuid::KVM_SIGNATURE_EBX,
        cpuid::KVM_SIGNATURE_ECX,
        cpuid::KVM_SIGNATURE_EDX,
    ]
    .into_iter()
    .enumerate()
    {
        checks.push(check(format!("signature_register({register})"), value));
    }

    let bases: Vec<u32> = cpuid::hypervisor_cpuid_bases().collect();
    checks.push(check("hypervisor_base_count()", bases.len()));
    checks.push(check("hypervisor_base_first()", bases[0]));
    checks.push(check("hypervisor_base_last()", *bases.last().unwrap()));
    checks.push(check(
        "hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_FIRST,
    ));
    checks.push(check(
        "hypervisor_base_second() - hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_STEP,
    ));
    checks.push(check(
        "hypervisor_base_last() + hypervisor_base_second() - hypervisor_base_first()",
        cpuid::HYPERVISOR_CPUID_BASE_END,
    ));

    for layout in crate_layouts() {
        let c_type = &layout.c_type;
        checks.push(check(format!("sizeof({c_type})"), layout.size));
        let c_align = if layout.c_packed { 1 } else { layout.align };
        checks.push(check(format!("_Alignof({c_type})"), c_align));
        for (field, offset, size) in layout.fields {
            checks.push(check(format!("offsetof({c_type}, {field})"), offset));
            // A flexible array member has no size in C.
            if size != 0 {
                checks.push(check(format!("sizeof((({c_type} *)0)->{field})"), size));
            }
        }
    }

    checks.extend(virtio_checks());
    checks
}

/// The C union members that the crate folds into one field: (C type, C
/// member, Rust offset, Rust size).
fn union_alias_checks() -> Vec<Check> {
    let aliases = [
        (
            "struct virtio_balloon_config",
            "free_page_report_cmd_id",
            offset_of!(VirtioBalloonConfig, free_page_hint_cmd_id),
            size_of::<u32>(),
        ),
        (
            "struct virtio_net_hdr_v1",
            "csum.start",
            offset_of!(VirtioNetHdrV1, csum_start),
            size_of::<u16>(),
        ),
        (
            "struct virtio_net_hdr_v1",
            "csum.offset",
            offset_of!(VirtioNetHdrV1, csum_offset),
            size_of::<u16>(),
        ),
        (
            "struct virtio_net_hdr_v1",
            "rsc.segments",
            offset_of!(VirtioNetHdrV1, csum_start),
            size_of::<u16>(),
        ),
        (
            "struct virtio_net_hdr_v1",
            "rsc.dup_acks",
            offset_of!(VirtioNetHdrV1, csum_offset),
            size_of::<u16>(),
        ),
    ];
    let mut checks = Vec::new();
    for (c_type, member, offset, size) in aliases {
        checks.push(check(format!("offsetof({c_type}, {member})"), offset));
        checks.push(check(format!("sizeof((({c_type} *)0)->{member})"), size));
    }
    checks
}

/// Queue sizes and alignments for the legacy ring layout comparisons; the
/// largest layout must fit the C program's `ring_memory`.
const LEGACY_RING_SIZES: [u16; 6] = [1, 2, 8, 128, 256, 1024];
const LEGACY_RING_ALIGNS: [usize; 4] = [2, 4, 64, 4096];

/// Ring indexes around the interesting points (0, the event index, the
/// 2^15 and 2^16 wraps) for the `vring_need_event` comparison.
const RING_INDEXES: [u16; 9] = [0, 1, 10, 11, 12, 0x7fff, 0x8000, 0xfffe, 0xffff];

/// The virtio values that are not plain constants or layouts: the ring
/// arithmetic of virtio_ring.h, the virtio-mmio magic value, the balloon
/// statistics names and the C unions.
fn virtio_checks() -> Vec<Check> {
    let mut checks = union_alias_checks();

    checks.push(check(
        "('v' | 'i' << 8 | 'r' << 16 | 't' << 24)",
        virtio::MMIO_MAGIC,
    ));

    for num in LEGACY_RING_SIZES.into_iter().chain([32768]) {
        for align in LEGACY_RING_ALIGNS {
            let size = virtio::vring_size(num, align).unwrap();
            checks.push(check(format!("vring_size({num}, {align})"), size));
        }
    }
    for num in LEGACY_RING_SIZES {
        for align in LEGACY_RING_ALIGNS {
            let avail = virtio::desc_table_size(num);
            let used = virtio::vring_used_offset(num, align).unwrap();
            let parts = [
                ("RING_AVAIL", avail),
                ("RING_USED", used),
                ("RING_USED_EVENT", avail + virtio::used_event_offset(num)),
                ("RING_AVAIL_EVENT", used + virtio::avail_event_offset(num)),
                ("RING_END", virtio::vring_size(num, align).unwrap()),
            ];
            for (part, offset) in parts {
                checks.push(check(
                    format!("legacy_ring_offset({num}, {align}, {part})"),
                    offset,
                ));
            }
        }
    }
    for event in RING_INDEXES {
        for new in RING_INDEXES {
            for old in RING_INDEXES {
                checks.push(check(
                    format!("vring_need_event({event}, {new}, {old})"),
                    u64::from(virtio::vring_need_event(event, new, old)),
                ));
            }
        }
    }

    checks.push(check(
        "sizeof(balloon_stat_names) / sizeof(balloon_stat_names[0])",
        virtio_balloon::VIRTIO_BALLOON_S_NAMES.len(),
    ));
    checks.push(check(
        "sizeof(prefixed_balloon_stat_names) / sizeof(prefixed_balloon_stat_names[0])",
        virtio_balloon::VIRTIO_BALLOON_S_NAMES.len(),
    ));
    for (tag, name) in virtio_balloon::VIRTIO_BALLOON_S_NAMES.iter().enumerate() {
        assert!(
            name.bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'-'),
            "{name:?} needs escaping in C"
        );
        let tag = u16::try_from(tag).unwrap();
        assert_eq!(virtio_balloon::stat_name(tag), Some(*name));
        checks.push(check(
            format!("strcmp(balloon_stat_names[{tag}], \"{name}\") == 0"),
            1u8,
        ));
        checks.push(check(
            format!("strcmp(prefixed_balloon_stat_names[{tag}], \"guest-{name}\") == 0"),
            1u8,
        ));
    }
    checks
}

/// A directory under the system temporary directory, unique to this
/// process and test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pvrs-abi-{purpose}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("creating the temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The `#define for_each_possible_hypervisor_cpuid_base(...)` macro, with
/// its continuation lines, copied out of `cpuid.h` (which cannot be
/// included outside the kernel).
fn hypervisor_base_loop_macro(cpuid_h: &str) -> String {
    let mut lines = cpuid_h.lines().skip_while(|line| {
        !line
            .trim_start()
            .starts_with("#define for_each_possible_hypervisor_cpuid_base(")
    });
    let mut text = String::new();
    for line in lines.by_ref() {
        text.push_str(line);
        text.push('\n');
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    assert!(
        !text.is_empty(),
        "no for_each_possible_hypervisor_cpuid_base in {CPUID_HEADER}"
    );
    text
}

fn c_include(tree: &Path, file: &str) -> String {
    let path = tree.join(file);
    let path = path.to_str().expect("kernel path is UTF-8");
    assert!(
        !path.contains(['"', '\\', '\n']),
        "unusual kernel path {path:?}"
    );
    format!("#include \"{path}\"\n")
}

fn c_program(tree: &Path, checks: &[Check]) -> String {
    let mut program = String::from(
        "#include <stddef.h>\n\
         #include <stdint.h>\n\
         #include <stdio.h>\n\
         #include <string.h>\n\
         \n\
         /* The kernel's internal fixed-width types, for pvclock-abi.h. */\n\
         typedef uint8_t u8;\n\
         typedef int8_t s8;\n\
         typedef uint16_t u16;\n\
         typedef int16_t s16;\n\
         typedef uint32_t u32;\n\
         typedef int32_t s32;\n\
         typedef uint64_t u64;\n\
         typedef int64_t s64;\n\
         \n\
         /* What asm/bitsperlong.h says on x86-64; __GENMASK needs it. */\n\
         #define __BITS_PER_LONG 64\n\
         #define __BITS_PER_LONG_LONG 64\n\
         _Static_assert(sizeof(long) * 8 == __BITS_PER_LONG, \"x86-64 host expected\");\n\
         \n",
    );
    // const.h and bits.h provide __GENMASK, which kvm_para.h uses without
    // including; errno-base.h provides the errno values KVM_E* alias.
    for file in [
        "include/uapi/linux/const.h",
        "include/uapi/linux/bits.h",
        "include/uapi/asm-generic/errno-base.h",
        "include/uapi/linux/kvm_para.h",
        "arch/x86/include/asm/pvclock-abi.h",
        "include/uapi/linux/virtio_config.h",
        "include/uapi/linux/virtio_ids.h",
        "include/uapi/linux/virtio_ring.h",
        "include/uapi/linux/virtio_mmio.h",
        "include/uapi/linux/virtio_blk.h",
        "include/uapi/linux/virtio_net.h",
        "include/uapi/linux/virtio_balloon.h",
    ] {
        program.push_str(&c_include(tree, file));
    }
    program.push('\n');
    program.push_str(&hypervisor_base_loop_macro(&read(tree, CPUID_HEADER)));
    program.push_str(
        "\n\
         /* The legacy contiguous ring layout as vring_init() computes it. */\n\
         static char ring_memory[1 << 16] __attribute__((aligned(4096)));\n\
         enum ring_part { RING_AVAIL, RING_USED, RING_USED_EVENT, RING_AVAIL_EVENT, RING_END };\n\
         \n\
         static unsigned long long legacy_ring_offset(unsigned int num, unsigned long align,\n\
         \t\t\t\t\t     enum ring_part part)\n\
         {\n\
         \tstruct vring vr;\n\
         \n\
         \tif (vring_size(num, align) > sizeof(ring_memory))\n\
         \t\treturn ~0ULL;\n\
         \tvring_init(&vr, num, ring_memory, align);\n\
         \tswitch (part) {\n\
         \tcase RING_AVAIL:\n\
         \t\treturn (char *)vr.avail - ring_memory;\n\
         \tcase RING_USED:\n\
         \t\treturn (char *)vr.used - ring_memory;\n\
         \tcase RING_USED_EVENT:\n\
         \t\treturn (char *)&vring_used_event(&vr) - ring_memory;\n\
         \tcase RING_AVAIL_EVENT:\n\
         \t\treturn (char *)&vring_avail_event(&vr) - ring_memory;\n\
         \tcase RING_END:\n\
         \t\treturn (char *)(&vring_avail_event(&vr) + 1) - ring_memory;\n\
         \t}\n\
         \treturn ~0ULL;\n\
         }\n\
         \n\
         static const char *const balloon_stat_names[] = VIRTIO_BALLOON_S_NAMES;\n\
         static const char *const prefixed_balloon_stat_names[] =\n\
         \tVIRTIO_BALLOON_S_NAMES_WITH_PREFIX(\"guest-\");\n",
    );
    program.push_str(
        "\n\
         static unsigned long long signature_register(int index)\n\
         {\n\
         \tuint32_t registers[3];\n\
         \tmemcpy(registers, KVM_SIGNATURE, sizeof(registers));\n\
         \treturn registers[index];\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_count(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tunsigned long long count = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tcount++;\n\
         \treturn count;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_first(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\treturn base;\n\
         \treturn 0;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_second(void)\n\
         {\n\
         \tuint32_t base;\n\
         \tint seen = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tif (seen++ == 1)\n\
         \t\t\treturn base;\n\
         \treturn 0;\n\
         }\n\
         \n\
         static unsigned long long hypervisor_base_last(void)\n\
         {\n\
         \tuint32_t base, last = 0;\n\
         \tfor_each_possible_hypervisor_cpuid_base(base)\n\
         \t\tlast = base;\n\
         \treturn last;\n\
         }\n\
         \n\
         int main(void)\n\
         {\n",
    );
    for (index, check) in checks.iter().enumerate() {
        writeln!(
            program,
            "\tprintf(\"{index} %llu\\n\", (unsigned long long)({}));",
            check.c_expression
        )
        .unwrap();
    }
    program.push_str("\treturn 0;\n}\n");
    program
}

/// The stand-ins for the headers the mirrored headers include by `<...>`:
/// `linux/types.h` (whose real version needs generated headers), and
/// `asm/kvm_para.h` and the `linux/` headers the virtio ones include,
/// forwarded to the real files, so that no kernel directory is put on the
/// include path where it could shadow libc's.
fn write_include_stubs(dir: &Path, tree: &Path) {
    fs::create_dir_all(dir.join("linux")).unwrap();
    fs::create_dir_all(dir.join("asm")).unwrap();
    fs::write(
        dir.join("linux/types.h"),
        "#ifndef PVRS_STUB_LINUX_TYPES_H\n\
         #define PVRS_STUB_LINUX_TYPES_H\n\
         /* As asm-generic/int-ll64.h defines them for x86-64. */\n\
         typedef unsigned char __u8;\n\
         typedef signed char __s8;\n\
         typedef unsigned short __u16;\n\
         typedef signed short __s16;\n\
         typedef unsigned int __u32;\n\
         typedef signed int __s32;\n\
         typedef unsigned long long __u64;\n\
         typedef signed long long __s64;\n\
         #define __aligned_u64 __u64 __attribute__((aligned(8)))\n\
         /* As the real linux/types.h has them outside sparse. */\n\
         #define __bitwise\n\
         typedef __u16 __bitwise __le16;\n\
         typedef __u16 __bitwise __be16;\n\
         typedef __u32 __bitwise __le32;\n\
         typedef __u32 __bitwise __be32;\n\
         typedef __u64 __bitwise __le64;\n\
         typedef __u64 __bitwise __be64;\n\
         #endif\n",
    )
    .unwrap();
    fs::write(
        dir.join("asm/kvm_para.h"),
        c_include(tree, "arch/x86/include/uapi/asm/kvm_para.h"),
    )
    .unwrap();
    for header in [
        "virtio_types.h",
        "virtio_ids.h",
        "virtio_config.h",
        "if_ether.h",
    ] {
        fs::write(
            dir.join("linux").join(header),
            c_include(tree, &format!("include/uapi/linux/{header}")),
        )
        .unwrap();
    }
}

#[test]
fn constants_and_layouts_match_the_c_compiler() {
    let tree = kernel_source();
    let checks = c_program_checks();
    let work = TempDir::new("kernel-headers");
    let stubs = work.0.join("include");
    write_include_stubs(&stubs, &tree);
    let source = work.0.join("abi_values.c");
    let binary = work.0.join("abi_values");
    fs::write(&source, c_program(&tree, &checks)).unwrap();

    let compiled = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-I"])
        .arg(&stubs)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("running the C compiler `cc`");
    assert!(
        compiled.status.success(),
        "cc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );

    let ran = Command::new(&binary)
        .output()
        .expect("running the compiled C program");
    assert!(
        ran.status.success(),
        "the C program failed: {:?}",
        ran.status
    );
    let stdout = String::from_utf8(ran.stdout).expect("C output is ASCII");

    let mut seen = vec![false; checks.len()];
    let mut mismatches = Vec::new();
    for line in stdout.lines() {
        let (index, value) = line.split_once(' ').expect("`index value` lines");
        let index: usize = index.parse().unwrap();
        let value: u64 = value.parse().unwrap();
        let check = &checks[index];
        seen[index] = true;
        if value != check.expected {
            mismatches.push(format!(
                "{}: C says {value:#x}, pvrs_abi says {:#x}",
                check.c_expression, check.expected
            ));
        }
    }
    assert!(
        seen.iter().all(|&seen| seen),
        "the C program skipped some values"
    );
    assert!(
        mismatches.is_empty(),
        "pvrs_abi disagrees with Linux:\n{}",
        mismatches.join("\n")
    );

    let constants = crate_constants().len();
    println!(
        "compared {} values with the Linux headers: {constants} named constants, {} struct \
         layouts and {} other values (signature bytes and registers, function-like macros, \
         hypervisor leaf range, ring arithmetic, balloon statistics names, struct sizes, \
         alignments, field offsets and field sizes)",
        checks.len(),
        crate_layouts().len(),
        checks.len() - constants
    );
}
