//! With the `zerocopy` feature, the shared-memory structs convert to and
//! from the bytes a host sees in guest memory.  Without it this test crate
//! is empty.
#![cfg(feature = "zerocopy")]

use pvrs_abi::pvclock::PvclockVcpuTimeInfo;
use pvrs_abi::steal_time::{KvmStealTime, KVM_VCPU_PREEMPTED};
use pvrs_abi::virtio::{VringAvail, VringDesc, VringUsed, VringUsedElem, VRING_DESC_F_NEXT};
use pvrs_abi::virtio_balloon::{VirtioBalloonStat, VIRTIO_BALLOON_S_MEMFREE};
use pvrs_abi::virtio_blk::{VirtioBlkConfig, VirtioBlkOuthdr, VIRTIO_BLK_T_OUT};
use pvrs_abi::virtio_net::{VirtioNetHdrV1, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use zerocopy::{FromBytes, IntoBytes, Unaligned};

/// msr.rst only promises 4-byte alignment for the pvclock area, so a host
/// must be able to copy it out of memory that is not 8-byte aligned.
#[test]
fn pvclock_area_is_read_from_unaligned_guest_memory() {
    let info = PvclockVcpuTimeInfo {
        version: 2,
        tsc_timestamp: 0x1122_3344_5566_7788,
        system_time: 42,
        tsc_to_system_mul: 0x8000_0000,
        tsc_shift: -1,
        flags: 1,
        ..PvclockVcpuTimeInfo::zeroed()
    };
    let mut guest_memory = [0u8; 40];
    guest_memory[4..36].copy_from_slice(info.as_bytes());

    let area = &guest_memory[4..36];
    assert_eq!(PvclockVcpuTimeInfo::read_from_bytes(area), Ok(info));
    // x86 is little endian and the fields sit at the C offsets.
    assert_eq!(area[0..4], 2u32.to_le_bytes());
    assert_eq!(area[8..16], 0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(area[24..28], 0x8000_0000u32.to_le_bytes());
    assert_eq!(area[28], 0xff);
    assert_eq!(area[29], 1);
}

#[test]
fn steal_time_area_round_trips_through_bytes() {
    let mut bytes = [0u8; 64];
    bytes[0..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
    bytes[16] = KVM_VCPU_PREEMPTED;
    let area = KvmStealTime::read_from_bytes(&bytes).unwrap();
    assert_eq!(area.steal, 1_000_000);
    assert_eq!(area.version, 4);
    assert!(area.is_preempted());
    assert_eq!(area.as_bytes(), &bytes);
}

/// The packed balloon statistics entry is 10 bytes with the value at
/// offset 2, and an array of them can be read straight out of any byte
/// buffer, whatever its alignment.
#[test]
fn balloon_stats_are_packed_and_unaligned() {
    fn assert_unaligned<T: Unaligned>() {}
    assert_unaligned::<VirtioBalloonStat>();

    let stats = [
        VirtioBalloonStat {
            tag: VIRTIO_BALLOON_S_MEMFREE,
            val: 0x0102_0304_0506_0708,
        },
        VirtioBalloonStat { tag: 9, val: 42 },
    ];
    let bytes = stats.as_bytes();
    assert_eq!(bytes.len(), 20);
    assert_eq!(bytes[0..2], VIRTIO_BALLOON_S_MEMFREE.to_le_bytes());
    assert_eq!(bytes[2..10], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(bytes[10..12], 9u16.to_le_bytes());

    let mut buffer = [0u8; 21];
    buffer[1..].copy_from_slice(bytes);
    let read = <[VirtioBalloonStat]>::ref_from_bytes(&buffer[1..]).unwrap();
    assert_eq!(read, &stats);
    let val = read[1].val;
    assert_eq!(val, 42);
}

#[test]
fn virtqueue_entries_have_the_spec_byte_layout() {
    let desc = VringDesc {
        addr: 0x1000,
        len: 512,
        flags: VRING_DESC_F_NEXT,
        next: 7,
    };
    let mut expected = [0u8; 16];
    expected[0..8].copy_from_slice(&0x1000u64.to_le_bytes());
    expected[8..12].copy_from_slice(&512u32.to_le_bytes());
    expected[12..14].copy_from_slice(&VRING_DESC_F_NEXT.to_le_bytes());
    expected[14..16].copy_from_slice(&7u16.to_le_bytes());
    assert_eq!(desc.as_bytes(), &expected);

    // The ring headers are 4 bytes; the zero-length `ring` adds nothing.
    let avail = VringAvail::read_from_bytes(&[1, 0, 5, 0]).unwrap();
    assert_eq!((avail.flags, avail.idx), (1, 5));
    let used = VringUsed::read_from_bytes(&[0, 0, 3, 0]).unwrap();
    assert_eq!(used.idx, 3);
    let elem = VringUsedElem::read_from_bytes(&[2, 0, 0, 0, 0, 2, 0, 0]).unwrap();
    assert_eq!((elem.id, elem.len), (2, 512));
}

#[test]
fn device_headers_round_trip_through_bytes() {
    let header = VirtioBlkOuthdr {
        type_: VIRTIO_BLK_T_OUT,
        ioprio: 0,
        sector: 2048,
    };
    let bytes = header.as_bytes();
    assert_eq!(bytes[0..4], VIRTIO_BLK_T_OUT.to_le_bytes());
    assert_eq!(bytes[8..16], 2048u64.to_le_bytes());
    assert_eq!(VirtioBlkOuthdr::read_from_bytes(bytes), Ok(header));

    let net = VirtioNetHdrV1 {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 1,
        ..VirtioNetHdrV1::default()
    };
    let bytes = net.as_bytes();
    assert_eq!(bytes.len(), 12);
    assert_eq!(bytes[6..8], 34u16.to_le_bytes());
    assert_eq!(bytes[10..12], 1u16.to_le_bytes());

    // A device model fills its configuration space from the struct.
    let config = VirtioBlkConfig {
        capacity: 1 << 21,
        seg_max: 126,
        num_queues: 4,
        ..VirtioBlkConfig::default()
    };
    let space = config.as_bytes();
    assert_eq!(space.len(), 96);
    assert_eq!(space[0..8], (1u64 << 21).to_le_bytes());
    assert_eq!(space[12..16], 126u32.to_le_bytes());
    assert_eq!(space[34..36], 4u16.to_le_bytes());
}
