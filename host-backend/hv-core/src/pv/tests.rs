//! The PV MSRs, areas and hypercalls against a byte-vector guest RAM that
//! logs every write, and the irqchip side of KICK_CPU / SEND_IPI on a
//! real `VmIrqchip`.

use super::*;
use crate::irqchip::vm::{PendingInterrupt, VcpuIrqchip, VmIrqchip};
use crate::paging::{AccessedDirtyUpdate, GuestMemory, PageTableWrite};
use crate::pvrs_abi::hypercall::{KVM_EINVAL, KVM_HC_MAP_GPA_RANGE};
use crate::pvrs_abi::pvclock::pvclock_read_cycles;
use crate::vcpu::tests::{TestRam, RAM_SIZE};
use std::boxed::Box;
use std::vec::Vec;

const TIME_AREA: u64 = 0x1040;
const STEAL_AREA: u64 = 0x2000;
const OUTSIDE: u64 = 0x4000_0000;

/// The vCPU tests' RAM, recording each write (GPA and bytes) in order.
struct LoggingRam {
    ram: TestRam,
    writes: Vec<(u64, Vec<u8>)>,
}

impl LoggingRam {
    fn new() -> Self {
        Self {
            ram: TestRam::new(),
            writes: Vec::new(),
        }
    }

    fn peek<const N: usize>(&self, gpa: u64) -> [u8; N] {
        self.ram.peek(gpa, N).try_into().unwrap()
    }

    fn peek_u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.peek(gpa))
    }

    fn peek_u64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.peek(gpa))
    }

    fn poke(&mut self, gpa: u64, bytes: &[u8]) {
        self.ram.poke(gpa, bytes);
    }

    fn time_info(&self, gpa: u64) -> PvclockVcpuTimeInfo {
        PvclockVcpuTimeInfo {
            version: self.peek_u32(gpa),
            pad0: 0,
            tsc_timestamp: self.peek_u64(gpa + 8),
            system_time: self.peek_u64(gpa + 16),
            tsc_to_system_mul: self.peek_u32(gpa + 24),
            tsc_shift: self.peek::<1>(gpa + 28)[0] as i8,
            flags: self.peek::<1>(gpa + 29)[0],
            pad: [0; 2],
        }
    }
}

impl GuestMemory for LoggingRam {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        self.ram.read_u32(gpa)
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        self.ram.read_u64(gpa)
    }
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.ram.read_bytes(gpa, buffer)
    }
}

impl PageTableWrite for LoggingRam {
    fn set_entry_bits(&mut self, _update: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
        unreachable!("no page walks here")
    }
}

impl GuestRam for LoggingRam {
    fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        assert!(gpa % PAGE_SIZE + bytes.len() as u64 <= PAGE_SIZE, "write crosses a page");
        self.ram.write_bytes(gpa, bytes)?;
        self.writes.push((gpa, bytes.to_vec()));
        Ok(())
    }
}

fn reference(tsc_khz: u32) -> ClockReference {
    ClockReference {
        guest_tsc: 1_000_000_000_000,
        kvmclock_ns: 5_000_000_000,
        tsc_khz,
        tsc_stable: true,
        wall_clock_ns: 1_700_000_000_500_000_000,
    }
}

fn guest_write(state: &mut PvState, ram: &mut LoggingRam, msr: u32, value: u64) -> Result<(), MsrError> {
    write_msr(state, ram, msr, value, &reference(2_000_000), MsrOrigin::Guest)
}

fn enter(state: &mut PvState, ram: &mut LoggingRam, steal_ns_delta: u64) -> EntryOutcome {
    before_entry(state, ram, &reference(2_000_000), steal_ns_delta, false)
}

// ------------------------------------------------------------ kvmclock

#[test]
fn system_time_enables_publishes_and_disables() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    assert_eq!(enter(&mut state, &mut ram, 0), EntryOutcome::default());
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1).unwrap();
    assert!(state.clock_enabled() && state.clock_update_pending());
    assert_eq!(read_msr(&state, MSR_KVM_SYSTEM_TIME_NEW), Ok(TIME_AREA | 1));
    assert_eq!(read_msr(&state, MSR_KVM_SYSTEM_TIME), Ok(TIME_AREA | 1), "one value, as KVM");
    assert!(ram.writes.is_empty(), "published at entry, not at the write");

    let outcome = enter(&mut state, &mut ram, 0);
    assert!(outcome.clock_published);
    assert!(!state.clock_update_pending());
    assert_eq!(ram.time_info(TIME_AREA).version, 2);
    assert_eq!(state.pvclock_version(), 2);
    assert_eq!(state.counters.clock_publishes, 1);
    assert!(!enter(&mut state, &mut ram, 0).clock_published, "nothing pending");

    // Moving to another host CPU republishes.
    assert!(before_entry(&mut state, &mut ram, &reference(2_000_000), 0, true).clock_published);
    assert_eq!(ram.time_info(TIME_AREA).version, 4);

    // Disabled: stored, nothing published any more.
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA).unwrap();
    assert!(!state.clock_enabled());
    let writes = ram.writes.len();
    assert!(!before_entry(&mut state, &mut ram, &reference(2_000_000), 0, true).clock_published);
    state.request_clock_update();
    assert!(!state.clock_update_pending());
    assert_eq!(ram.writes.len(), writes);
    assert_eq!(read_msr(&state, MSR_KVM_SYSTEM_TIME_NEW), Ok(TIME_AREA));
}

#[test]
fn publish_is_a_seqlock_update() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1).unwrap();
    enter(&mut state, &mut ram, 0);
    let versions: Vec<(usize, u32)> = ram
        .writes
        .iter()
        .enumerate()
        .filter(|(_, (gpa, bytes))| *gpa == TIME_AREA && bytes.len() == 4)
        .map(|(i, (_, bytes))| (i, u32::from_le_bytes(bytes[..].try_into().unwrap())))
        .collect();
    assert_eq!(versions, [(0, 1), (2, 2)], "odd first, even last: {:?}", ram.writes);
    let (gpa, fields) = &ram.writes[1];
    assert_eq!((*gpa, fields.len()), (TIME_AREA + 4, 28), "the fields in between");
    assert_eq!(ram.writes.len(), 3);
}

#[test]
fn an_odd_guest_version_is_skipped_and_guest_stopped_kept() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    ram.poke(TIME_AREA, &7u32.to_le_bytes());
    ram.poke(TIME_AREA + 29, &[PVCLOCK_GUEST_STOPPED]);
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1).unwrap();
    enter(&mut state, &mut ram, 0);
    let info = ram.time_info(TIME_AREA);
    assert_eq!(info.version, 10, "7 is junk: 9 while writing, then 10");
    assert_eq!(info.flags, PVCLOCK_GUEST_STOPPED | PVCLOCK_TSC_STABLE_BIT);
}

#[test]
fn areas_crossing_a_page_or_outside_ram_are_refused_untouched() {
    for gpa in [0xff0, RAM_SIZE - 16, OUTSIDE, !1] {
        let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
        guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, gpa | 1).unwrap();
        let outcome = enter(&mut state, &mut ram, 0);
        assert!(!outcome.clock_published, "{gpa:#x}");
        assert!(ram.writes.is_empty(), "{gpa:#x}: {:?}", ram.writes);
        assert_eq!(state.counters.clock_refused, 1, "{gpa:#x}");
        assert!(!state.clock_update_pending(), "{gpa:#x}: not retried");
    }
    let mut ram = LoggingRam::new();
    assert_eq!(
        publish_time_info(&mut ram, 0xfe8, &PvclockVcpuTimeInfo::zeroed()),
        Err(AreaError::CrossesPage)
    );
    assert_eq!(
        publish_time_info(&mut ram, OUTSIDE, &PvclockVcpuTimeInfo::zeroed()),
        Err(AreaError::Memory(MemoryError::Unmapped))
    );
    // The last 32 bytes of a page are fine.
    assert_eq!(publish_time_info(&mut ram, 0xfe0, &PvclockVcpuTimeInfo::zeroed()), Ok(2));
}

#[test]
fn the_published_area_converts_tsc_to_kvmclock_time() {
    for tsc_khz in [1_000_000u32, 2_500_000, 3_700_000] {
        let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
        let reference = reference(tsc_khz);
        guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1).unwrap();
        before_entry(&mut state, &mut ram, &reference, 0, false);
        let info = ram.time_info(TIME_AREA);
        assert_eq!(info.tsc_timestamp, reference.guest_tsc);
        assert_eq!(info.system_time, reference.kvmclock_ns);
        assert!(info.is_tsc_stable());
        assert_eq!(pvclock_read_cycles(&info, reference.guest_tsc), reference.kvmclock_ns);
        for seconds in [1u64, 10, 3600] {
            let ticks = u64::from(tsc_khz) * 1000 * seconds;
            let expected = reference.kvmclock_ns + seconds * NSEC_PER_SEC;
            let got = pvclock_read_cycles(&info, reference.guest_tsc + ticks);
            // The 32.32 multiplier is exact to about 2^-32: under 1 ns per
            // second, plus the truncation.
            let error = got.abs_diff(expected);
            assert!(error <= seconds + 1, "{tsc_khz} kHz, {seconds} s: {got} vs {expected}");
        }
    }
}

#[test]
fn time_info_flags_follow_stable_and_the_old_msr() {
    assert_eq!(time_info(&reference(1_000_000), false).flags, 0);
    assert_eq!(time_info(&reference(1_000_000), true).flags, PVCLOCK_TSC_STABLE_BIT);
    assert_eq!(time_info(&reference(0), true).tsc_to_system_mul, 0, "no frequency: clock stands still");

    // A guest on the old MSR never gets the stable bit; a VMM restoring
    // both MSRs does not change which one the guest chose.
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME, TIME_AREA | 1).unwrap();
    enter(&mut state, &mut ram, 0);
    assert!(!ram.time_info(TIME_AREA).is_tsc_stable());
    let host = MsrOrigin::Host;
    write_msr(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1, &reference(1), host).unwrap();
    enter(&mut state, &mut ram, 0);
    assert!(!ram.time_info(TIME_AREA).is_tsc_stable());
    guest_write(&mut state, &mut ram, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1).unwrap();
    enter(&mut state, &mut ram, 0);
    assert!(ram.time_info(TIME_AREA).is_tsc_stable());
}

#[test]
fn a_transient_failure_keeps_the_update_pending() {
    struct Unreachable;
    impl GuestMemory for Unreachable {
        fn read_u32(&mut self, _: u64) -> Result<u32, MemoryError> {
            Err(MemoryError::Unavailable)
        }
        fn read_u64(&mut self, _: u64) -> Result<u64, MemoryError> {
            Err(MemoryError::Unavailable)
        }
    }
    impl PageTableWrite for Unreachable {
        fn set_entry_bits(&mut self, _: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
            Err(MemoryError::Unavailable)
        }
    }
    impl GuestRam for Unreachable {
        fn write_bytes(&mut self, _: u64, _: &[u8]) -> Result<(), MemoryError> {
            Err(MemoryError::Unavailable)
        }
    }
    let mut state = PvState::new();
    let reference = reference(1_000_000);
    let host = MsrOrigin::Host;
    write_msr(&mut state, &mut Unreachable, MSR_KVM_SYSTEM_TIME_NEW, TIME_AREA | 1, &reference, host).unwrap();
    write_msr(&mut state, &mut Unreachable, MSR_KVM_STEAL_TIME, STEAL_AREA | 1, &reference, host).unwrap();
    let outcome = before_entry(&mut state, &mut Unreachable, &reference, 500, false);
    assert_eq!(outcome, EntryOutcome::default());
    assert!(state.clock_update_pending());
    before_entry(&mut state, &mut Unreachable, &reference, 250, false);

    // Once the page is back, the steal time of both entries arrives.
    let mut ram = LoggingRam::new();
    let outcome = before_entry(&mut state, &mut ram, &reference, 0, false);
    assert!(outcome.clock_published && outcome.steal_recorded);
    assert_eq!(ram.peek_u64(STEAL_AREA), 750);
}

// ------------------------------------------------------------ wall clock

#[test]
fn the_wall_clock_is_the_boot_time_and_written_at_once() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    let gpa = 0x3000;
    guest_write(&mut state, &mut ram, MSR_KVM_WALL_CLOCK_NEW, gpa).unwrap();
    // 1_700_000_000.5 s wall time, 5 s of kvmclock.
    assert_eq!(ram.peek_u32(gpa), 2, "version even");
    assert_eq!(ram.peek_u32(gpa + 4), 1_699_999_995);
    assert_eq!(ram.peek_u32(gpa + 8), 500_000_000);
    assert_eq!(u32::from_le_bytes(ram.writes[0].1[..].try_into().unwrap()), 1, "odd first");
    assert_eq!(read_msr(&state, MSR_KVM_WALL_CLOCK_NEW), Ok(gpa));
    assert_eq!(read_msr(&state, MSR_KVM_WALL_CLOCK), Ok(gpa));
    guest_write(&mut state, &mut ram, MSR_KVM_WALL_CLOCK, gpa).unwrap();
    assert_eq!(ram.peek_u32(gpa), 4);
    assert_eq!(state.counters.wall_clock_publishes, 2);

    // Across a page boundary it is written in two pieces, as KVM does.
    let gpa = 0x1ffc;
    guest_write(&mut state, &mut ram, MSR_KVM_WALL_CLOCK_NEW, gpa).unwrap();
    assert_eq!((ram.peek_u32(gpa), ram.peek_u32(gpa + 4)), (2, 1_699_999_995));

    // Outside RAM: accepted (KVM does), nothing written, counted.
    let writes = ram.writes.len();
    guest_write(&mut state, &mut ram, MSR_KVM_WALL_CLOCK_NEW, OUTSIDE).unwrap();
    assert_eq!(ram.writes.len(), writes);
    assert_eq!(state.counters.wall_clock_refused, 1);
    // GPA 0 means no area.
    guest_write(&mut state, &mut ram, MSR_KVM_WALL_CLOCK_NEW, 0).unwrap();
    assert_eq!(ram.writes.len(), writes);
}

// ------------------------------------------------------------ steal time

fn steal_version(ram: &LoggingRam) -> u32 {
    ram.peek_u32(STEAL_AREA + 8)
}

#[test]
fn steal_time_reserved_bits_fault() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    for bad in [STEAL_AREA | 1 | 2, STEAL_AREA | 0x20, STEAL_AREA | 0x3e] {
        assert_eq!(
            guest_write(&mut state, &mut ram, MSR_KVM_STEAL_TIME, bad),
            Err(MsrError::InvalidValue { msr: MSR_KVM_STEAL_TIME, value: bad })
        );
    }
    assert_eq!(read_msr(&state, MSR_KVM_STEAL_TIME), Ok(0));
    guest_write(&mut state, &mut ram, MSR_KVM_STEAL_TIME, STEAL_AREA | 0x40).unwrap();
    assert!(!state.steal_time_enabled());
}

#[test]
fn steal_time_accumulates_between_odd_and_even_versions() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    assert!(!enter(&mut state, &mut ram, 1000).steal_recorded, "not enabled");
    guest_write(&mut state, &mut ram, MSR_KVM_STEAL_TIME, STEAL_AREA | 1).unwrap();
    let outcome = enter(&mut state, &mut ram, 0);
    assert!(outcome.steal_recorded, "the first entry after enabling updates the area");
    assert_eq!((ram.peek_u64(STEAL_AREA), steal_version(&ram)), (0, 2));
    assert!(!enter(&mut state, &mut ram, 0).steal_recorded, "nothing new");
    enter(&mut state, &mut ram, 1500);
    enter(&mut state, &mut ram, 2500);
    assert_eq!((ram.peek_u64(STEAL_AREA), steal_version(&ram)), (4000, 6));
    assert_eq!(state.counters.steal_records, 3);

    // The version writes around the steal update: odd, then even.
    let versions: Vec<u32> = ram
        .writes
        .iter()
        .filter(|(gpa, _)| *gpa == STEAL_AREA + 8)
        .map(|(_, bytes)| u32::from_le_bytes(bytes[..].try_into().unwrap()))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);

    // Junk (odd) version in a fresh area.
    ram.poke(STEAL_AREA + 8, &9u32.to_le_bytes());
    enter(&mut state, &mut ram, 1);
    assert_eq!(steal_version(&ram), 12);
}

#[test]
fn preemption_and_the_flush_request() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    assert!(!mark_preempted(&mut state, &mut ram), "steal time off");
    guest_write(&mut state, &mut ram, MSR_KVM_STEAL_TIME, STEAL_AREA | 1).unwrap();
    assert!(!enter(&mut state, &mut ram, 0).flush_tlb);

    assert!(mark_preempted(&mut state, &mut ram));
    assert_eq!(ram.peek::<1>(STEAL_AREA + 16), [KVM_VCPU_PREEMPTED]);
    assert!(!mark_preempted(&mut state, &mut ram), "once per preemption");
    // Another vCPU asks for a flush instead of an IPI.
    ram.poke(STEAL_AREA + 16, &[KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB]);
    let steal = record_steal_time(&mut state, &mut ram, 0);
    let requested = StealOutcome { recorded: true, flush_requested: true, flush_tlb: true };
    assert_eq!(steal, requested);
    assert_eq!(ram.peek::<1>(STEAL_AREA + 16), [0], "preempted cleared");
    // Through the entry hook: flushed and counted.
    mark_preempted(&mut state, &mut ram);
    ram.poke(STEAL_AREA + 16, &[KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB]);
    let outcome = enter(&mut state, &mut ram, 0);
    assert!(outcome.flush_tlb && outcome.steal_recorded);
    assert_eq!(state.counters.tlb_flushes, 1);

    // Preempted without a request: flushed all the same (the request may
    // have raced with the clear), but not reported as requested.
    mark_preempted(&mut state, &mut ram);
    let steal = record_steal_time(&mut state, &mut ram, 0);
    assert_eq!(
        steal,
        StealOutcome { recorded: true, flush_requested: false, flush_tlb: true }
    );
    assert!(!enter(&mut state, &mut ram, 5).flush_tlb, "not preempted since");
}

// ------------------------------------------------------------ PV EOI

#[test]
fn pv_eoi_is_validated_and_stored() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    for bad in [0x1002 | 1, 0x1002, 0x1007, OUTSIDE | 1] {
        assert_eq!(
            guest_write(&mut state, &mut ram, MSR_KVM_PV_EOI_EN, bad),
            Err(MsrError::InvalidValue { msr: MSR_KVM_PV_EOI_EN, value: bad }),
            "{bad:#x}"
        );
    }
    guest_write(&mut state, &mut ram, MSR_KVM_PV_EOI_EN, 0x1004 | 1).unwrap();
    assert!(state.pv_eoi_enabled());
    assert_eq!(read_msr(&state, MSR_KVM_PV_EOI_EN), Ok(0x1005));
    // Disabled, the address need not be RAM.
    guest_write(&mut state, &mut ram, MSR_KVM_PV_EOI_EN, OUTSIDE).unwrap();
    assert!(!state.pv_eoi_enabled());
    assert!(ram.writes.is_empty());
    assert_eq!(IMPLEMENTED_KVM_FEATURES & feature_mask(crate::pvrs_abi::cpuid::KVM_FEATURE_PV_EOI), 0);
}

#[test]
fn every_pv_msr_round_trips_from_the_host_and_others_are_unknown() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    for (&msr, value) in PV_MSRS.iter().zip([0x1000 | 1, 0x1100, 0x1200 | 1, 0x1300, 0x2040 | 1, 0x1404]) {
        write_msr(&mut state, &mut ram, msr, value, &reference(1), MsrOrigin::Host).unwrap();
        assert_eq!(read_msr(&state, msr), Ok(value), "{msr:#x}");
        assert!(is_pv_msr(msr));
    }
    assert_eq!(crate::msr::EMULATED_MSRS, PV_MSRS);
    assert!(!is_pv_msr(crate::pvrs_abi::msr::MSR_KVM_ASYNC_PF_EN));
    assert_eq!(read_msr(&state, 0x10), Err(MsrError::Unknown(0x10)));
    let unknown = write_msr(&mut state, &mut ram, 0x10, 0, &reference(1), MsrOrigin::Guest);
    assert_eq!(unknown, Err(MsrError::Unknown(0x10)));
    assert_eq!(read_msr(&PvState::default(), MSR_KVM_STEAL_TIME), Ok(0));
}

// ------------------------------------------------------------ hypercalls

fn decode64(nr: u32, a: [u64; 4]) -> Hypercall {
    decode_hypercall(u64::from(nr), a[0], a[1], a[2], a[3], 0, true)
}

#[test]
fn hypercalls_decode_like_kvm() {
    assert_eq!(decode64(KVM_HC_VAPIC_POLL_IRQ, [0; 4]), Hypercall::VapicPollIrq);
    assert_eq!(decode64(KVM_HC_KICK_CPU, [9, 3, 0, 0]), Hypercall::KickCpu { apic_id: 3 });
    assert_eq!(
        decode64(KVM_HC_KICK_CPU, [0, 0x1_0000_0002, 0, 0]),
        Hypercall::KickCpu { apic_id: 2 },
        "KVM's int apicid"
    );
    assert_eq!(
        decode64(KVM_HC_SEND_IPI, [1, 2, 0x1_0000_0003, 0x4fd]),
        Hypercall::SendIpi(PvSendIpi {
            bitmap_low: 1,
            bitmap_high: 2,
            min_apic_id: 3,
            icr: 0x4fd,
            bitmap_bits: 64,
        })
    );
    assert_eq!(decode64(KVM_HC_SCHED_YIELD, [u64::MAX, 0, 0, 0]), Hypercall::SchedYield { apic_id: u64::MAX });
    assert_eq!(
        decode64(KVM_HC_CLOCK_PAIRING, [0x1000, 0, 0, 0]),
        Hypercall::ClockPairing { gpa: 0x1000, clock_type: 0 }
    );
    for nr in [0, KVM_HC_MAP_GPA_RANGE, 1000] {
        assert_eq!(decode64(nr, [0; 4]), Hypercall::Unknown { nr: u64::from(nr) });
    }
    let huge = decode_hypercall(1 << 32 | 5, 0, 0, 0, 0, 0, true);
    assert_eq!(huge, Hypercall::Unknown { nr: 1 << 32 | 5 });
    for cpl in [1, 3] {
        let call = decode_hypercall(u64::from(KVM_HC_KICK_CPU), 0, 0, 0, 0, cpl, true);
        assert_eq!(call, Hypercall::Privileged);
    }
}

#[test]
fn outside_64_bit_mode_everything_is_32_bits() {
    let high = 0xdead_beef_0000_0000;
    let call = decode_hypercall(high | 10, high | 1, high | 2, high | 3, high | 4, 0, false);
    assert_eq!(
        call,
        Hypercall::SendIpi(PvSendIpi {
            bitmap_low: 1,
            bitmap_high: 2,
            min_apic_id: 3,
            icr: 4,
            bitmap_bits: 32,
        })
    );
    let call = decode_hypercall(high | 9, high | 0x2000, high, 0, 0, 0, false);
    assert_eq!(call, Hypercall::ClockPairing { gpa: 0x2000, clock_type: 0 });
    assert_eq!(hypercall_result(-KVM_ENOSYS, false), 0xffff_fc18);
    assert_eq!(hypercall_result(-KVM_ENOSYS, true), (-1000i64) as u64);
    assert_eq!(hypercall_result(3, false), 3);
}

fn call(state: &mut PvState, ram: &mut LoggingRam, hypercall: Hypercall, reference: &ClockReference) -> i64 {
    handle_hypercall(state, ram, &hypercall, reference, None)
}

#[test]
fn without_an_irqchip_kick_and_send_ipi_are_unknown() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    let reference = reference(1);
    let ipi = PvSendIpi { bitmap_low: 1, bitmap_high: 0, min_apic_id: 0, icr: 0x40, bitmap_bits: 64 };
    assert_eq!(call(&mut state, &mut ram, Hypercall::KickCpu { apic_id: 0 }, &reference), -KVM_ENOSYS);
    assert_eq!(call(&mut state, &mut ram, Hypercall::SendIpi(ipi), &reference), -KVM_ENOSYS);
    assert_eq!(call(&mut state, &mut ram, Hypercall::SchedYield { apic_id: 1 }, &reference), 0);
    assert_eq!(call(&mut state, &mut ram, Hypercall::VapicPollIrq, &reference), 0);
    assert_eq!(call(&mut state, &mut ram, Hypercall::Unknown { nr: 77 }, &reference), -KVM_ENOSYS);
    assert_eq!(call(&mut state, &mut ram, Hypercall::Privileged, &reference), -KVM_EPERM);
    assert_eq!(state.counters.hypercalls_unknown, 3);
    assert_eq!(state.counters.sched_yields, 1);
    assert_eq!(state.counters.hypercalls_privileged, 1);
    assert!(ram.writes.is_empty());
}

#[test]
fn clock_pairing_writes_wall_time_and_guest_tsc() {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    let reference = reference(1);
    let pairing = |gpa, clock_type| Hypercall::ClockPairing { gpa, clock_type };
    ram.poke(0x1000, &[0xaa; 64]);
    assert_eq!(call(&mut state, &mut ram, pairing(0x1000, 0), &reference), 0);
    assert_eq!(ram.peek_u64(0x1000), 1_700_000_000);
    assert_eq!(ram.peek_u64(0x1008), 500_000_000);
    assert_eq!(ram.peek_u64(0x1010), reference.guest_tsc);
    assert_eq!(ram.peek::<40>(0x1018), [0; 40], "flags and pad zeroed");

    // A static struct may straddle two pages: written in two pieces.
    assert_eq!(call(&mut state, &mut ram, pairing(0x1fe0, 0), &reference), 0);
    assert_eq!(ram.peek_u64(0x2000 - 32 + 16), reference.guest_tsc);

    let writes = ram.writes.len();
    assert_eq!(call(&mut state, &mut ram, pairing(0x1000, 1), &reference), -KVM_EOPNOTSUPP);
    let unstable = ClockReference { tsc_stable: false, ..reference };
    assert_eq!(call(&mut state, &mut ram, pairing(0x1000, 0), &unstable), -KVM_EOPNOTSUPP);
    assert_eq!(ram.writes.len(), writes);
    for gpa in [OUTSIDE, RAM_SIZE - 8, u64::MAX - 3] {
        assert_eq!(call(&mut state, &mut ram, pairing(gpa, 0), &reference), -KVM_EFAULT, "{gpa:#x}");
    }
    assert_eq!(state.counters.clock_pairings, 7);
    assert_eq!(state.counters.clock_pairings_failed, 5);
}

// ------------------------------------------------------------ irqchip side

type Chip = VmIrqchip<4>;
const APIC_SVR: u64 = 0xfee0_00f0;

/// Four vCPUs (APIC ids 0-3); `enabled` of them software-enabled.
fn chip(enabled: usize) -> Box<Chip> {
    let mut chip = Box::new(Chip::default());
    for vcpu in 0..4 {
        chip.add_vcpu(vcpu, false).unwrap();
        if vcpu < enabled {
            let _ = chip.mmio_write(vcpu, 0, APIC_SVR, &0x1ffu32.to_le_bytes());
        }
    }
    chip
}

fn hypercall_on(chip: &mut Chip, vcpu: usize, hypercall: Hypercall) -> (i64, u64) {
    let (mut state, mut ram) = (PvState::new(), LoggingRam::new());
    let mut view = VcpuIrqchip::new(chip, vcpu, 0, 1_000_000);
    let result = handle_hypercall(&mut state, &mut ram, &hypercall, &reference(1), Some(&mut view));
    (result, view.effects.kick)
}

#[test]
fn kick_cpu_unhalts_the_target_until_it_leaves_its_halt() {
    let mut chip = chip(4);
    assert!(!chip.has_wakeup_event(2, false, false));
    let (result, kicks) = hypercall_on(&mut chip, 0, Hypercall::KickCpu { apic_id: 2 });
    assert_eq!((result, kicks), (0, 1 << 2));
    assert!(chip.has_wakeup_event(2, false, false), "wakes even with IF clear");
    assert!(!chip.has_wakeup_event(2, false, true), "not a vCPU waiting for SIPI");
    assert!(!chip.has_wakeup_event(1, false, false));
    chip.clear_pv_unhalt(2);
    assert!(!chip.has_wakeup_event(2, false, false));

    for apic_id in [4, 0xff, u32::MAX] {
        let (result, kicks) = hypercall_on(&mut chip, 0, Hypercall::KickCpu { apic_id });
        assert_eq!((result, kicks), (0, 0), "{apic_id:#x}");
    }
    assert!((0..4).all(|vcpu| !chip.has_wakeup_event(vcpu, false, false)));
}

fn send_ipi(chip: &mut Chip, low: u64, high: u64, min: u32, icr: u64, bits: u32) -> (i64, u64) {
    let ipi = PvSendIpi { bitmap_low: low, bitmap_high: high, min_apic_id: min, icr, bitmap_bits: bits };
    hypercall_on(chip, 0, Hypercall::SendIpi(ipi))
}

#[test]
fn send_ipi_delivers_to_each_selected_apic_id() {
    let mut chip = chip(4);
    // Fixed vector 0x40 to APIC ids 1 and 3.
    assert_eq!(send_ipi(&mut chip, 0b1010, 0, 0, 0x40, 64), (2, 0b1010));
    assert_eq!(chip.pending_interrupt(1), Some(PendingInterrupt::Lapic(0x40)));
    assert_eq!(chip.pending_interrupt(3), Some(PendingInterrupt::Lapic(0x40)));
    assert_eq!(chip.pending_interrupt(2), None);
    // min_apic_id shifts the bitmap: bit 0 is APIC id 2.
    assert_eq!(send_ipi(&mut chip, 1, 0, 2, 0x41, 64), (1, 1 << 2));
    assert_eq!(chip.pending_interrupt(2), Some(PendingInterrupt::Lapic(0x41)));
    // NMI (delivery mode 4).
    assert_eq!(send_ipi(&mut chip, 1, 0, 0, 4 << 8, 64), (1, 1));
    assert!(chip.take_nmi(0));
}

#[test]
fn send_ipi_with_hostile_arguments() {
    let mut chip = chip(4);
    // Every bit set: only the four vCPUs that exist.
    assert_eq!(send_ipi(&mut chip, u64::MAX, u64::MAX, 0, 0x50, 64), (4, 0b1111));
    // The high half starts at min + 64 (or + 32 outside long mode).
    let mut chip = self::chip(4);
    assert_eq!(send_ipi(&mut chip, 0, 1, 0, 0x50, 64), (0, 0));
    assert_eq!(send_ipi(&mut chip, 0, 1 << 2, u32::MAX - 65, 0x50, 64), (0, 0));
    assert_eq!(send_ipi(&mut chip, 0, 1 << 3, 0, 0x50, 32), (0, 0), "APIC id 35");
    // min + bitmap_bits past 2^32 does not wrap around to small ids (KVM's
    // u32 sum would reach APIC ids 0-3 here).
    assert_eq!(send_ipi(&mut chip, 0, u64::MAX, u32::MAX - 63, 0x50, 64), (0, 0));
    assert_eq!(send_ipi(&mut chip, 0, u64::MAX, u32::MAX - 31, 0x50, 32), (0, 0));
    assert_eq!(send_ipi(&mut chip, u64::MAX, u64::MAX, u32::MAX, 0x50, 64), (0, 0));
    // Logical destination or a shorthand: -KVM_EINVAL, nothing sent.
    for icr in [0x50 | 1 << 11, 0x50 | 1 << 18, 0x50 | 3 << 18] {
        assert_eq!(send_ipi(&mut chip, 1, 0, 0, icr, 64), (-KVM_EINVAL, 0), "{icr:#x}");
    }
    // The reserved delivery mode 3 and a fixed IPI to a software-disabled
    // LAPIC are accepted by no one.
    assert_eq!(send_ipi(&mut chip, 1, 0, 0, 3 << 8 | 0x50, 64), (0, 0));
    let mut chip = self::chip(1);
    assert_eq!(send_ipi(&mut chip, 0b11, 0, 0, 0x50, 64), (1, 1));
    assert_eq!(chip.pending_interrupt(1), None);
    // ICR bits above 19 are ignored, as KVM only looks at the low ones.
    assert_eq!(send_ipi(&mut chip, 1, 0, 0, 0xffff_0000_0000_0051, 64), (1, 1));
    assert!((0..4).all(|vcpu| chip.lapic(vcpu).is_some()));
}

#[test]
fn selects_covers_both_halves_without_overflow() {
    let ipi = PvSendIpi { bitmap_low: 1, bitmap_high: 1 << 63, min_apic_id: 10, icr: 0, bitmap_bits: 64 };
    assert!(ipi.selects(10));
    assert!(ipi.selects(10 + 127));
    assert!(!ipi.selects(9) && !ipi.selects(11) && !ipi.selects(10 + 128));
    let top = PvSendIpi { min_apic_id: u32::MAX, ..ipi };
    assert!(top.selects(u32::MAX));
    let wide = PvSendIpi { bitmap_bits: u32::MAX, ..ipi };
    assert!(wide.selects(10 + 127), "clamped to 64");
}
