//! With the `zerocopy` feature, the shared-memory structs convert to and
//! from the bytes a host sees in guest memory.  Without it this test crate
//! is empty.
#![cfg(feature = "zerocopy")]

use pvrs_abi::pvclock::PvclockVcpuTimeInfo;
use pvrs_abi::steal_time::{KvmStealTime, KVM_VCPU_PREEMPTED};
use zerocopy::{FromBytes, IntoBytes};

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
