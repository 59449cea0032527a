//! The host half of KVM's paravirtual interface: kvmclock, the wall
//! clock, steal time, the PV EOI MSR (stored only) and the hypercalls
//! KICK_CPU, SEND_IPI, SCHED_YIELD and CLOCK_PAIRING.
//!
//! Sources: Linux `Documentation/virt/kvm/x86/msr.rst` (the MSRs and the
//! areas they register), `Documentation/virt/kvm/x86/hypercalls.rst` (the
//! hypercalls) and `Documentation/virt/kvm/x86/cpuid.rst` (the
//! `KVM_FEATURE_*` bits of [`IMPLEMENTED_KVM_FEATURES`]); the behaviour
//! follows KVM's `kvm_set_msr_common`, `kvm_write_system_time`,
//! `kvm_write_wall_clock`, `record_steal_time`, `kvm_lapic_set_pv_eoi`
//! and `kvm_emulate_hypercall` (`arch/x86/kvm/x86.c`, `lapic.c`, 6.12).
//! Layouts and numbers come from `crate::pvrs_abi`.
//!
//! # Who calls what
//!
//! - The exit handler (`vcpu.rs`) sends guest RDMSR/WRMSR of [`PV_MSRS`]
//!   to [`read_msr`] / [`write_msr`] and every VMMCALL to
//!   [`decode_hypercall`] and [`handle_hypercall`].
//! - The kernel sends KVM_GET/SET_MSRS of [`PV_MSRS`] to the same two
//!   functions with [`MsrOrigin::Host`].
//! - Before each VMRUN, with preemption off, the kernel calls
//!   [`before_entry`]: it republishes the clock when asked to and records
//!   steal time.  When the vCPU thread is preempted, [`mark_preempted`].
//!
//! # The MSRs exist whatever the guest's CPUID says
//!
//! KVM refuses them when the guest's KVM features leaf lacks the feature
//! only with `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, which pvrs does not
//! offer; by default it accepts them, and so does this module.
//!
//! # Guest memory
//!
//! Every area is untrusted guest memory reached through [`GuestRam`].
//! The per-vCPU areas (time info, steal time) must lie within one page,
//! as KVM's `gfn_to_pfn_cache` requires; the wall clock and the clock
//! pairing are written page by page, as KVM's `kvm_write_guest` does.  An
//! area that cannot be written is counted in [`PvCounters`] and
//! otherwise ignored, as KVM ignores it: a guest that registers garbage
//! gets no clock, never a host panic.

use core::sync::atomic::{compiler_fence, Ordering};

use crate::msr::{MsrError, MsrOrigin};
use crate::paging::MemoryError;
use crate::pvrs_abi::cpuid::{
    feature_mask, KVM_FEATURE_CLOCKSOURCE, KVM_FEATURE_CLOCKSOURCE2,
    KVM_FEATURE_CLOCKSOURCE_STABLE_BIT, KVM_FEATURE_PV_SCHED_YIELD, KVM_FEATURE_PV_SEND_IPI,
    KVM_FEATURE_PV_TLB_FLUSH, KVM_FEATURE_PV_UNHALT, KVM_FEATURE_STEAL_TIME,
};
use crate::pvrs_abi::hypercall::{
    KVM_CLOCK_PAIRING_WALLCLOCK, KVM_EFAULT, KVM_ENOSYS, KVM_EOPNOTSUPP, KVM_EPERM,
    KVM_HC_CLOCK_PAIRING, KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD, KVM_HC_SEND_IPI,
    KVM_HC_VAPIC_POLL_IRQ,
};
use crate::pvrs_abi::msr::{
    KVM_MSR_ENABLED, KVM_STEAL_RESERVED_MASK, KVM_STEAL_VALID_BITS, MSR_KVM_PV_EOI_EN,
    MSR_KVM_STEAL_TIME, MSR_KVM_SYSTEM_TIME, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK,
    MSR_KVM_WALL_CLOCK_NEW,
};
use crate::pvrs_abi::pvclock::{
    time_scale, PvclockVcpuTimeInfo, PVCLOCK_GUEST_STOPPED, PVCLOCK_TSC_STABLE_BIT,
};
use crate::pvrs_abi::steal_time::{KVM_VCPU_FLUSH_TLB, KVM_VCPU_PREEMPTED};
use crate::vcpu::{GuestRam, HostState, InKernelIrqchip};

const PAGE_SIZE: u64 = 4096;
const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The `KVM_FEATURE_*` bits this module implements, for
/// `SupportedCpuidConfig::kvm_features`.  PV_UNHALT, PV_SEND_IPI and
/// PV_TLB_FLUSH also need the kernel's part: an in-kernel irqchip for the
/// first two, and a guest TLB flush when [`EntryOutcome::flush_tlb`] is
/// set for the third.  PV EOI is left out: its MSR is stored, but no EOI
/// is ever skipped.
pub const IMPLEMENTED_KVM_FEATURES: u32 = feature_mask(KVM_FEATURE_CLOCKSOURCE)
    | feature_mask(KVM_FEATURE_CLOCKSOURCE2)
    | feature_mask(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT)
    | feature_mask(KVM_FEATURE_STEAL_TIME)
    | feature_mask(KVM_FEATURE_PV_TLB_FLUSH)
    | feature_mask(KVM_FEATURE_PV_UNHALT)
    | feature_mask(KVM_FEATURE_PV_SEND_IPI)
    | feature_mask(KVM_FEATURE_PV_SCHED_YIELD);

/// The MSRs of this module, in KVM's `emulated_msrs` order: the ones a
/// VMM saves and restores with KVM_GET/SET_MSRS.
pub const PV_MSRS: &[u32] = &[
    MSR_KVM_SYSTEM_TIME,
    MSR_KVM_WALL_CLOCK,
    MSR_KVM_SYSTEM_TIME_NEW,
    MSR_KVM_WALL_CLOCK_NEW,
    MSR_KVM_STEAL_TIME,
    MSR_KVM_PV_EOI_EN,
];

/// Whether `msr` is one of [`PV_MSRS`].
pub fn is_pv_msr(msr: u32) -> bool {
    PV_MSRS.contains(&msr)
}

// ------------------------------------------------------------ state

/// Why an area was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaError {
    /// A per-vCPU area that does not fit in one page.
    CrossesPage,
    /// The guest memory access failed (outside RAM, or the host could not
    /// reach the page).
    Memory(MemoryError),
}

impl From<MemoryError> for AreaError {
    fn from(error: MemoryError) -> Self {
        Self::Memory(error)
    }
}

impl AreaError {
    /// Whether trying again later may succeed: the host, not the guest,
    /// failed (a page it could not reach right now).
    fn is_transient(self) -> bool {
        self == Self::Memory(MemoryError::Unavailable)
    }
}

/// Per-vCPU counters for a debugfs file; every one wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvCounters {
    /// Time areas published.
    pub clock_publishes: u64,
    /// Time area publications refused ([`AreaError`]).
    pub clock_refused: u64,
    /// Wall clock areas written.
    pub wall_clock_publishes: u64,
    /// Wall clock writes refused.
    pub wall_clock_refused: u64,
    /// Steal-time records updated.
    pub steal_records: u64,
    /// Steal-time updates refused.
    pub steal_refused: u64,
    /// Entries that asked for a guest TLB flush.
    pub tlb_flushes: u64,
    /// KICK_CPU hypercalls.
    pub kicks: u64,
    /// KICK_CPU of an APIC id no vCPU has.
    pub kicks_unmatched: u64,
    /// SEND_IPI hypercalls.
    pub send_ipis: u64,
    /// SCHED_YIELD hypercalls (a hint only: nothing yields).
    pub sched_yields: u64,
    /// CLOCK_PAIRING hypercalls.
    pub clock_pairings: u64,
    /// CLOCK_PAIRING hypercalls that failed.
    pub clock_pairings_failed: u64,
    /// Hypercalls answered `-KVM_ENOSYS`.
    pub hypercalls_unknown: u64,
    /// Hypercalls from CPL > 0 (`-KVM_EPERM`).
    pub hypercalls_privileged: u64,
}

impl PvCounters {
    /// All zero.
    pub const ZERO: Self = Self {
        clock_publishes: 0,
        clock_refused: 0,
        wall_clock_publishes: 0,
        wall_clock_refused: 0,
        steal_records: 0,
        steal_refused: 0,
        tlb_flushes: 0,
        kicks: 0,
        kicks_unmatched: 0,
        send_ipis: 0,
        sched_yields: 0,
        clock_pairings: 0,
        clock_pairings_failed: 0,
        hypercalls_unknown: 0,
        hypercalls_privileged: 0,
    };
}

fn bump(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// The paravirtual state of one vCPU, part of `VcpuState` and reset with
/// it.  The MSR values are kept as written (KVM_GET_MSRS returns them
/// unchanged); what they enable is derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvState {
    /// MSR_KVM_SYSTEM_TIME(_NEW): the time area's GPA, bit 0 enables.  One
    /// value for both MSRs, as in KVM (`vcpu->arch.time`).
    system_time: u64,
    /// The guest last wrote the time area through the old MSR 0x12; KVM
    /// then never sets the stable bit (`boot_vcpu_runs_old_kvmclock`).
    system_time_old_msr: bool,
    /// MSR_KVM_WALL_CLOCK(_NEW): the wall clock area's GPA.
    wall_clock: u64,
    /// MSR_KVM_STEAL_TIME: the steal area's GPA, bit 0 enables.
    steal_time: u64,
    /// MSR_KVM_PV_EOI_EN: the PV EOI byte's GPA, bit 0 enables.
    pv_eoi: u64,
    /// The version of the last time area published (even).
    pvclock_version: u32,
    /// The time area must be (re)published before the next entry.
    clock_update_pending: bool,
    /// The steal area must be updated before the next entry (just
    /// enabled, or marked preempted).
    steal_update_pending: bool,
    /// Steal time not yet added to the area because the host could not
    /// reach it.
    steal_ns_unrecorded: u64,
    /// KVM_VCPU_PREEMPTED was written since the last entry.
    preempted_marked: bool,
    /// Statistics.
    pub counters: PvCounters,
}

impl Default for PvState {
    fn default() -> Self {
        Self::RESET
    }
}

impl PvState {
    /// Everything off, as at vCPU creation.
    pub const RESET: Self = Self::new();

    /// Everything off, as at vCPU creation.
    pub const fn new() -> Self {
        Self {
            system_time: 0,
            system_time_old_msr: false,
            wall_clock: 0,
            steal_time: 0,
            pv_eoi: 0,
            pvclock_version: 0,
            clock_update_pending: false,
            steal_update_pending: false,
            steal_ns_unrecorded: 0,
            preempted_marked: false,
            counters: PvCounters::ZERO,
        }
    }

    /// Whether the guest registered an enabled time area.
    pub fn clock_enabled(&self) -> bool {
        self.system_time & KVM_MSR_ENABLED != 0
    }

    /// Whether the time area is to be republished before the next entry.
    pub fn clock_update_pending(&self) -> bool {
        self.clock_update_pending
    }

    /// Whether [`before_entry`] has work without new steal time: a time
    /// area to publish, or a steal-time area to (re)write. The kernel may
    /// skip the call (and guest-memory access) on an entry without it
    /// and without a steal delta.
    pub fn entry_work_pending(&self) -> bool {
        self.clock_update_pending
            || (self.steal_time_enabled()
                && (self.steal_update_pending || self.steal_ns_unrecorded != 0))
    }

    /// Asks for the time area to be republished before the next entry
    /// (KVM_REQ_CLOCK_UPDATE), e.g. after KVM_SET_CLOCK or a change of the
    /// TSC frequency or offset.  Nothing happens while the clock is off.
    pub fn request_clock_update(&mut self) {
        self.clock_update_pending = self.clock_enabled();
    }

    /// The version of the last time area published (even; 0 before the
    /// first).
    pub fn pvclock_version(&self) -> u32 {
        self.pvclock_version
    }

    /// Whether the guest registered an enabled steal-time area.
    pub fn steal_time_enabled(&self) -> bool {
        self.steal_time & KVM_MSR_ENABLED != 0
    }

    /// Whether the guest enabled PV EOI (stored only: see
    /// [`IMPLEMENTED_KVM_FEATURES`]).
    pub fn pv_eoi_enabled(&self) -> bool {
        self.pv_eoi & KVM_MSR_ENABLED != 0
    }

    fn time_area(&self) -> Option<u64> {
        self.clock_enabled()
            .then_some(self.system_time & !KVM_MSR_ENABLED)
    }

    fn steal_area(&self) -> Option<u64> {
        self.steal_time_enabled()
            .then_some(self.steal_time & KVM_STEAL_VALID_BITS)
    }
}

// ------------------------------------------------------------ time

/// The host's clocks at one instant, as the kernel reads them (all at
/// the same moment, with preemption off).
///
/// With `tsc_stable` the guest is told (PVCLOCK_TSC_STABLE_BIT) that
/// readings of different vCPUs are monotonic across each other, so it
/// drops its own cross-vCPU check.  That only holds if every vCPU's area
/// is computed from the same (guest TSC, kvmclock ns) pair, as KVM's
/// master clock does: a kernel that sets `tsc_stable` should pass one
/// VM-wide reference, taken once, to every vCPU, and refresh all of them
/// together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockReference {
    /// The guest's TSC: the host TSC plus the VM's TSC offset.
    pub guest_tsc: u64,
    /// kvmclock nanoseconds: host monotonic nanoseconds minus those at the
    /// VM's creation.
    pub kvmclock_ns: u64,
    /// The TSC frequency in kHz (0: unknown; the clock then stands still).
    pub tsc_khz: u32,
    /// The host TSC is constant and synchronised across CPUs.
    pub tsc_stable: bool,
    /// Host wall-clock (CLOCK_REALTIME) nanoseconds since the epoch.
    pub wall_clock_ns: u64,
}

impl ClockReference {
    /// The reference of an exit: `host` as the kernel filled it, and the
    /// vCPU's TSC offset.
    pub fn at_exit(host: &HostState, tsc_offset: u64) -> Self {
        Self {
            guest_tsc: host.tsc.wrapping_add(tsc_offset),
            kvmclock_ns: host.kvmclock_ns,
            tsc_khz: host.tsc_khz,
            tsc_stable: host.tsc_stable,
            wall_clock_ns: host.wall_clock_ns,
        }
    }
}

/// The time area for `reference` (version left 0, set when published):
/// the guest computes `kvmclock_ns + scale(tsc - guest_tsc)` from it.
/// `stable` sets PVCLOCK_TSC_STABLE_BIT.
pub fn time_info(reference: &ClockReference, stable: bool) -> PvclockVcpuTimeInfo {
    let tsc_hz = u64::from(reference.tsc_khz) * 1000;
    let (tsc_shift, tsc_to_system_mul) = time_scale(NSEC_PER_SEC, tsc_hz);
    PvclockVcpuTimeInfo {
        tsc_timestamp: reference.guest_tsc,
        system_time: reference.kvmclock_ns,
        tsc_to_system_mul,
        tsc_shift,
        flags: if stable { PVCLOCK_TSC_STABLE_BIT } else { 0 },
        ..PvclockVcpuTimeInfo::zeroed()
    }
}

fn time_info_bytes(info: &PvclockVcpuTimeInfo) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0..4].copy_from_slice(&info.version.to_le_bytes());
    bytes[4..8].copy_from_slice(&info.pad0.to_le_bytes());
    bytes[8..16].copy_from_slice(&info.tsc_timestamp.to_le_bytes());
    bytes[16..24].copy_from_slice(&info.system_time.to_le_bytes());
    bytes[24..28].copy_from_slice(&info.tsc_to_system_mul.to_le_bytes());
    bytes[28] = info.tsc_shift as u8;
    bytes[29] = info.flags;
    bytes[30..32].copy_from_slice(&info.pad);
    bytes
}

/// Whether `len` bytes at `gpa` stay in one page.
fn within_page(gpa: u64, len: u64) -> bool {
    (gpa % PAGE_SIZE) + len <= PAGE_SIZE
}

/// The odd version that opens an update of an area whose guest copy
/// holds `version`: the next odd number.  An odd `version` is junk from
/// before the first update (or a guest's scribble) and is skipped, as KVM
/// does, so that the closing version is even.
fn next_odd_version(version: u32) -> u32 {
    version.wrapping_add(1 + (version & 1))
}

/// Writes the guest-visible version of a seqlock-protected area, then
/// orders the next write after it.  x86 keeps stores in program order, so
/// only the compiler must not move them (`smp_wmb()` in KVM).
fn write_version(guest: &mut impl GuestRam, gpa: u64, version: u32) -> Result<(), MemoryError> {
    let result = write_split(guest, gpa, &version.to_le_bytes());
    compiler_fence(Ordering::Release);
    result
}

/// Publishes `info` into the 32-byte time area at `gpa` with the
/// seqlock protocol of pvclock-abi.h: the version made odd, the fields,
/// the version even again.  The new version follows the guest's (KVM
/// `kvm_setup_guest_pvclock`: `(version + 1) | 1`, so a guest copy with
/// an odd junk version is fixed), and the guest's PVCLOCK_GUEST_STOPPED
/// stays until the guest clears it.  Returns the version published.
///
/// An area crossing a page or outside RAM is refused with nothing
/// written.  If a later write fails after the odd version is out, the
/// version is made even again so that no reader spins forever.
pub fn publish_time_info(
    guest: &mut impl GuestRam,
    gpa: u64,
    info: &PvclockVcpuTimeInfo,
) -> Result<u32, AreaError> {
    if !within_page(gpa, 32) {
        return Err(AreaError::CrossesPage);
    }
    let mut current = [0u8; 32];
    guest.read_bytes(gpa, &mut current)?;
    let guest_version = u32::from_le_bytes([current[0], current[1], current[2], current[3]]);
    let odd = next_odd_version(guest_version);
    let even = odd.wrapping_add(1);
    let mut area = *info;
    area.version = odd;
    area.flags |= current[29] & PVCLOCK_GUEST_STOPPED;
    write_version(guest, gpa, odd)?;
    let fields = guest.write_bytes(gpa + 4, &time_info_bytes(&area)[4..]);
    compiler_fence(Ordering::Release);
    let closed = write_version(guest, gpa, even);
    fields?;
    closed?;
    Ok(even)
}

/// Publishes the time area if the clock is on (KVM `kvm_guest_time_update`
/// for one vCPU).  Clears the pending request unless the failure may be
/// the host's and pass.
fn publish_clock(state: &mut PvState, guest: &mut impl GuestRam, reference: &ClockReference) -> bool {
    let Some(gpa) = state.time_area() else {
        state.clock_update_pending = false;
        return false;
    };
    let stable = reference.tsc_stable && !state.system_time_old_msr;
    match publish_time_info(guest, gpa, &time_info(reference, stable)) {
        Ok(version) => {
            state.pvclock_version = version;
            state.clock_update_pending = false;
            bump(&mut state.counters.clock_publishes);
            true
        }
        Err(error) => {
            state.clock_update_pending = error.is_transient();
            bump(&mut state.counters.clock_refused);
            false
        }
    }
}

/// Fills the wall clock area at `gpa` (KVM `kvm_write_wall_clock`): the
/// wall-clock time at which kvmclock read 0, i.e. the host's wall clock
/// minus kvmclock now, seconds truncated to 32 bits as in KVM.  GPA 0 is
/// KVM's "no area".
pub fn publish_wall_clock(
    guest: &mut impl GuestRam,
    gpa: u64,
    reference: &ClockReference,
) -> Result<(), AreaError> {
    if gpa == 0 {
        return Ok(());
    }
    let mut version = [0u8; 4];
    read_split(guest, gpa, &mut version)?;
    let odd = next_odd_version(u32::from_le_bytes(version));
    let boot_ns = reference.wall_clock_ns.wrapping_sub(reference.kvmclock_ns);
    let mut fields = [0u8; 8];
    fields[0..4].copy_from_slice(&((boot_ns / NSEC_PER_SEC) as u32).to_le_bytes());
    fields[4..8].copy_from_slice(&((boot_ns % NSEC_PER_SEC) as u32).to_le_bytes());
    write_version(guest, gpa, odd)?;
    let written = write_split(guest, gpa.wrapping_add(4), &fields);
    compiler_fence(Ordering::Release);
    let closed = write_version(guest, gpa, odd.wrapping_add(1));
    written?;
    closed?;
    Ok(())
}

/// The pieces of `len` bytes at `gpa` that each stay in one page: the GPA
/// of each and its range in the caller's buffer.  An area that would run
/// past the top of the address space ends with an unmapped piece.
fn page_pieces(
    gpa: u64,
    len: usize,
) -> impl Iterator<Item = Result<(u64, core::ops::Range<usize>), MemoryError>> {
    let mut done = 0usize;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let Some(address) = gpa.checked_add(done as u64) else {
            done = len;
            return Some(Err(MemoryError::Unmapped));
        };
        let room = (PAGE_SIZE - address % PAGE_SIZE) as usize;
        let start = done;
        done += room.min(len - done);
        Some(Ok((address, start..done)))
    })
}

/// Reads `buffer.len()` bytes at `gpa`, page by page.
fn read_split(guest: &mut impl GuestRam, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
    for piece in page_pieces(gpa, buffer.len()) {
        let (address, range) = piece?;
        guest.read_bytes(address, &mut buffer[range])?;
    }
    Ok(())
}

/// Writes `bytes` at `gpa`, page by page ([`GuestRam::write_bytes`] stays
/// within one).  Like KVM's `kvm_write_guest`, a failure on a later page
/// leaves the earlier ones written.
fn write_split(guest: &mut impl GuestRam, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
    for piece in page_pieces(gpa, bytes.len()) {
        let (address, range) = piece?;
        guest.write_bytes(address, &bytes[range])?;
    }
    Ok(())
}

// ------------------------------------------------------------ steal time

/// Byte offsets in `struct kvm_steal_time`.
const STEAL_OFFSET: u64 = 0;
const STEAL_VERSION_OFFSET: u64 = 8;
const STEAL_PREEMPTED_OFFSET: u64 = 16;

/// What [`record_steal_time`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StealOutcome {
    /// The area was updated.
    pub recorded: bool,
    /// The guest had set KVM_VCPU_FLUSH_TLB in `preempted`.
    pub flush_requested: bool,
    /// The kernel must flush the guest's TLB before entry: the guest asked
    /// for it, or it may have asked between the read and the clear of
    /// `preempted`.  `GuestRam` has no atomic exchange, so a guest's
    /// `cmpxchg(preempted, PREEMPTED, PREEMPTED | FLUSH_TLB)` could land
    /// between the two and be lost; any PREEMPTED seen therefore counts as
    /// a request (one extra flush after a preemption instead of a stale
    /// TLB).
    pub flush_tlb: bool,
}

/// Adds `steal_ns_delta` to the steal-time area if the guest enabled it
/// (KVM `record_steal_time`): `preempted` is cleared first (reporting a
/// flush request), then `steal` is updated between an odd and an even
/// `version`.  If the host could not reach the page, the delta is kept
/// for the next call.
pub fn record_steal_time(
    state: &mut PvState,
    guest: &mut impl GuestRam,
    steal_ns_delta: u64,
) -> StealOutcome {
    let Some(gpa) = state.steal_area() else {
        state.steal_update_pending = false;
        return StealOutcome::default();
    };
    let delta = state.steal_ns_unrecorded.wrapping_add(steal_ns_delta);
    match update_steal_area(guest, gpa, delta) {
        Ok(preempted) => {
            state.steal_ns_unrecorded = 0;
            state.steal_update_pending = false;
            state.preempted_marked = false;
            bump(&mut state.counters.steal_records);
            let flush_requested = preempted & KVM_VCPU_FLUSH_TLB != 0;
            StealOutcome {
                recorded: true,
                flush_requested,
                flush_tlb: preempted & (KVM_VCPU_FLUSH_TLB | KVM_VCPU_PREEMPTED) != 0,
            }
        }
        Err(error) => {
            bump(&mut state.counters.steal_refused);
            if error == MemoryError::Unavailable {
                state.steal_ns_unrecorded = delta;
            } else {
                state.steal_update_pending = false;
            }
            StealOutcome::default()
        }
    }
}

/// The steal area update; returns the `preempted` byte it cleared.
fn update_steal_area(guest: &mut impl GuestRam, gpa: u64, delta: u64) -> Result<u8, MemoryError> {
    let preempted_gpa = gpa + STEAL_PREEMPTED_OFFSET;
    let mut preempted = [0u8; 1];
    guest.read_bytes(preempted_gpa, &mut preempted)?;
    guest.write_bytes(preempted_gpa, &[0])?;
    let version_gpa = gpa + STEAL_VERSION_OFFSET;
    let mut version = [0u8; 4];
    guest.read_bytes(version_gpa, &mut version)?;
    let version = next_odd_version(u32::from_le_bytes(version));
    write_version(guest, version_gpa, version)?;
    let mut steal = [0u8; 8];
    let added = guest
        .read_bytes(gpa + STEAL_OFFSET, &mut steal)
        .and_then(|()| {
            let steal = u64::from_le_bytes(steal).wrapping_add(delta);
            guest.write_bytes(gpa + STEAL_OFFSET, &steal.to_le_bytes())
        });
    compiler_fence(Ordering::Release);
    let closed = write_version(guest, version_gpa, version.wrapping_add(1));
    added?;
    closed?;
    Ok(preempted[0])
}

/// The vCPU thread was preempted (scheduled out while runnable): tells
/// the guest with KVM_VCPU_PREEMPTED, once per preemption (KVM
/// `kvm_steal_time_set_preempted`), and has the next entry clear it.
/// Returns whether the flag was written.
pub fn mark_preempted(state: &mut PvState, guest: &mut impl GuestRam) -> bool {
    let Some(gpa) = state.steal_area() else {
        return false;
    };
    if state.preempted_marked {
        return false;
    }
    if guest
        .write_bytes(gpa + STEAL_PREEMPTED_OFFSET, &[KVM_VCPU_PREEMPTED])
        .is_err()
    {
        bump(&mut state.counters.steal_refused);
        return false;
    }
    state.preempted_marked = true;
    state.steal_update_pending = true;
    true
}

// ------------------------------------------------------------ entry

/// What [`before_entry`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryOutcome {
    /// Flush the guest's TLB (its ASID) before this VMRUN: PV TLB flush
    /// (see [`StealOutcome::flush_tlb`]).
    pub flush_tlb: bool,
    /// The time area was published.
    pub clock_published: bool,
    /// The steal-time area was updated.
    pub steal_recorded: bool,
}

/// The kernel calls this before each VMRUN, with preemption off (so
/// that `reference` and the host CPU stay true until the guest runs; the
/// kernel's [`GuestRam`] must then not sleep, e.g. copy with page faults
/// disabled, and a page it cannot reach is reported as
/// `MemoryError::Unavailable` and retried at the next entry).
///
/// `steal_ns_delta` is the time the vCPU thread waited runnable since the
/// last call (the growth of its `run_delay`); `moved_cpu` says the vCPU
/// runs on another host CPU than at its last entry, after which KVM
/// republishes the clock (KVM_REQ_GLOBAL_CLOCK_UPDATE).  The clock is
/// republished when an update is pending; the steal area is updated when
/// there is a delta or an update is pending.
pub fn before_entry(
    state: &mut PvState,
    guest: &mut impl GuestRam,
    reference: &ClockReference,
    steal_ns_delta: u64,
    moved_cpu: bool,
) -> EntryOutcome {
    let mut outcome = EntryOutcome::default();
    if moved_cpu {
        state.request_clock_update();
    }
    if state.clock_update_pending {
        outcome.clock_published = publish_clock(state, guest, reference);
    }
    if state.steal_time_enabled()
        && (state.steal_update_pending || steal_ns_delta != 0 || state.steal_ns_unrecorded != 0)
    {
        let steal = record_steal_time(state, guest, steal_ns_delta);
        outcome.steal_recorded = steal.recorded;
        outcome.flush_tlb = steal.flush_tlb;
        if steal.flush_tlb {
            bump(&mut state.counters.tlb_flushes);
        }
    }
    outcome
}

// ------------------------------------------------------------ MSRs

/// Reads one of [`PV_MSRS`]: the value last written (KVM returns its
/// stored copy for each).
pub fn read_msr(state: &PvState, msr: u32) -> Result<u64, MsrError> {
    match msr {
        MSR_KVM_SYSTEM_TIME | MSR_KVM_SYSTEM_TIME_NEW => Ok(state.system_time),
        MSR_KVM_WALL_CLOCK | MSR_KVM_WALL_CLOCK_NEW => Ok(state.wall_clock),
        MSR_KVM_STEAL_TIME => Ok(state.steal_time),
        MSR_KVM_PV_EOI_EN => Ok(state.pv_eoi),
        _ => Err(MsrError::Unknown(msr)),
    }
}

/// Writes one of [`PV_MSRS`], from the guest (WRMSR) or the VMM
/// (KVM_SET_MSRS); `Err` is #GP for the guest and a short count for the
/// VMM, as in KVM.
///
/// - System time: stored; bit 0 enables the area and asks for a publish
///   before the next entry.  No bit is reserved (KVM checks none).
/// - Wall clock: stored, and the area is filled at once.
/// - Steal time: bits 5:1 reserved; bit 0 enables, and the next entry
///   updates the area.
/// - PV EOI: the address must be 4-byte aligned and, when enabled, guest
///   RAM (KVM `kvm_lapic_set_pv_eoi` and its hva cache); stored only.
pub fn write_msr(
    state: &mut PvState,
    guest: &mut impl GuestRam,
    msr: u32,
    value: u64,
    reference: &ClockReference,
    origin: MsrOrigin,
) -> Result<(), MsrError> {
    let invalid = Err(MsrError::InvalidValue { msr, value });
    match msr {
        MSR_KVM_SYSTEM_TIME | MSR_KVM_SYSTEM_TIME_NEW => {
            // A VMM restores both MSRs with the same value; only the guest's
            // own choice of MSR says which kvmclock ABI it runs.
            if origin == MsrOrigin::Guest {
                state.system_time_old_msr = msr == MSR_KVM_SYSTEM_TIME;
            }
            state.system_time = value;
            state.clock_update_pending = value & KVM_MSR_ENABLED != 0;
        }
        MSR_KVM_WALL_CLOCK | MSR_KVM_WALL_CLOCK_NEW => {
            state.wall_clock = value;
            match publish_wall_clock(guest, value, reference) {
                Ok(()) if value != 0 => bump(&mut state.counters.wall_clock_publishes),
                Ok(()) => {}
                Err(_) => bump(&mut state.counters.wall_clock_refused),
            }
        }
        MSR_KVM_STEAL_TIME => {
            if value & KVM_STEAL_RESERVED_MASK != 0 {
                return invalid;
            }
            state.steal_time = value;
            state.steal_update_pending = value & KVM_MSR_ENABLED != 0;
            state.preempted_marked = false;
        }
        MSR_KVM_PV_EOI_EN => {
            let address = value & !KVM_MSR_ENABLED;
            if address % 4 != 0 {
                return invalid;
            }
            if value & KVM_MSR_ENABLED != 0 && guest.read_bytes(address, &mut [0u8; 1]).is_err() {
                return invalid;
            }
            state.pv_eoi = value;
        }
        _ => return Err(MsrError::Unknown(msr)),
    }
    Ok(())
}

// ------------------------------------------------------------ hypercalls

/// The arguments of KVM_HC_SEND_IPI (KVM `kvm_pv_send_ipi`): for every bit
/// `i` set in `bitmap_low`, the IPI `icr` goes to APIC id
/// `min_apic_id + i`; for every bit `i` in `bitmap_high`, to
/// `min_apic_id + bitmap_bits + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvSendIpi {
    /// The first half of the 128-bit (64-bit outside long mode) bitmap.
    pub bitmap_low: u64,
    /// The second half.
    pub bitmap_high: u64,
    /// The APIC id of bit 0 of `bitmap_low` (KVM truncates it to 32 bits).
    pub min_apic_id: u32,
    /// The low ICR bits: vector 7:0, delivery mode 10:8, level 14,
    /// trigger mode 15.  Logical destination (bit 11) or a shorthand
    /// (bits 19:18) is `-KVM_EINVAL`.
    pub icr: u64,
    /// The width of each half: 64 in 64-bit mode, 32 otherwise.
    pub bitmap_bits: u32,
}

/// ICR bit 11: logical destination mode.
pub const ICR_DEST_LOGICAL: u64 = 1 << 11;
/// ICR bits 19:18: the destination shorthand.
pub const ICR_SHORTHAND_MASK: u64 = 0x3 << 18;

impl PvSendIpi {
    /// Whether KVM refuses the ICR (`-KVM_EINVAL`): the hypercall only
    /// sends physical-destination IPIs without a shorthand.
    pub fn icr_is_invalid(&self) -> bool {
        self.icr & (ICR_DEST_LOGICAL | ICR_SHORTHAND_MASK) != 0
    }

    /// Whether APIC id `apic_id` is selected by one of the bitmaps.  An id
    /// past 2^32 is never selected: where KVM lets `min_apic_id +
    /// bitmap_bits` wrap to small ids, this sends nothing.
    pub fn selects(&self, apic_id: u32) -> bool {
        let bits = u64::from(self.bitmap_bits.min(64));
        let Some(offset) = u64::from(apic_id).checked_sub(u64::from(self.min_apic_id)) else {
            return false;
        };
        let (bitmap, bit) = if offset < bits {
            (self.bitmap_low, offset)
        } else if offset < 2 * bits {
            (self.bitmap_high, offset - bits)
        } else {
            return false;
        };
        bitmap >> bit & 1 != 0
    }
}

/// A decoded VMMCALL (KVM `kvm_emulate_hypercall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// KVM_HC_VAPIC_POLL_IRQ: only makes the host look for interrupts; 0.
    VapicPollIrq,
    /// KVM_HC_KICK_CPU: wake the vCPU with this APIC id from its halt.
    KickCpu {
        /// a1, truncated to 32 bits as KVM's `int apicid`.
        apic_id: u32,
    },
    /// KVM_HC_SEND_IPI.
    SendIpi(PvSendIpi),
    /// KVM_HC_SCHED_YIELD: the caller waits for the vCPU with this APIC id.
    SchedYield {
        /// a0.
        apic_id: u64,
    },
    /// KVM_HC_CLOCK_PAIRING: write a `KvmClockPairing` at `gpa`.
    ClockPairing {
        /// a0.
        gpa: u64,
        /// a1: only KVM_CLOCK_PAIRING_WALLCLOCK is known.
        clock_type: u64,
    },
    /// Any other number: `-KVM_ENOSYS`.
    Unknown {
        /// RAX.
        nr: u64,
    },
    /// A hypercall from CPL > 0: `-KVM_EPERM`, whatever the number.
    Privileged,
}

/// Decodes a VMMCALL from RAX (`nr`) and RBX, RCX, RDX, RSI (`a0`-`a3`).
/// Outside 64-bit mode (`long_mode` false: also compatibility mode) the
/// number and the arguments count with their low 32 bits only, as KVM's
/// `is_64_bit_hypercall` decides.
pub fn decode_hypercall(
    nr: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    cpl: u8,
    long_mode: bool,
) -> Hypercall {
    if cpl != 0 {
        return Hypercall::Privileged;
    }
    let width = |value: u64| if long_mode { value } else { value & 0xffff_ffff };
    let (nr, a0, a1, a2, a3) = (width(nr), width(a0), width(a1), width(a2), width(a3));
    let Ok(number) = u32::try_from(nr) else {
        return Hypercall::Unknown { nr };
    };
    match number {
        KVM_HC_VAPIC_POLL_IRQ => Hypercall::VapicPollIrq,
        KVM_HC_KICK_CPU => Hypercall::KickCpu { apic_id: a1 as u32 },
        KVM_HC_SEND_IPI => Hypercall::SendIpi(PvSendIpi {
            bitmap_low: a0,
            bitmap_high: a1,
            min_apic_id: a2 as u32,
            icr: a3,
            bitmap_bits: if long_mode { 64 } else { 32 },
        }),
        KVM_HC_SCHED_YIELD => Hypercall::SchedYield { apic_id: a0 },
        KVM_HC_CLOCK_PAIRING => Hypercall::ClockPairing {
            gpa: a0,
            clock_type: a1,
        },
        _ => Hypercall::Unknown { nr },
    }
}

/// The RAX value for a hypercall `result`: outside 64-bit mode only its
/// low 32 bits (KVM writes `(u32)ret`).
pub fn hypercall_result(result: i64, long_mode: bool) -> u64 {
    let value = result as u64;
    if long_mode {
        value
    } else {
        value & 0xffff_ffff
    }
}

/// Carries out `call` and returns its result (0 or a count on success, a
/// negated `KVM_E*` code on failure).  KICK_CPU and SEND_IPI need the
/// in-kernel irqchip (`-KVM_ENOSYS` without one); SCHED_YIELD is a hint
/// the host does not act on and returns 0, as KVM does when it finds no
/// one to yield to.
pub fn handle_hypercall(
    state: &mut PvState,
    guest: &mut impl GuestRam,
    call: &Hypercall,
    reference: &ClockReference,
    irqchip: Option<&mut (dyn InKernelIrqchip + '_)>,
) -> i64 {
    let counters = &mut state.counters;
    match *call {
        Hypercall::VapicPollIrq => 0,
        Hypercall::KickCpu { apic_id } => match irqchip {
            Some(irqchip) => {
                bump(&mut counters.kicks);
                if !irqchip.pv_kick(apic_id) {
                    bump(&mut counters.kicks_unmatched);
                }
                0
            }
            None => {
                bump(&mut counters.hypercalls_unknown);
                -KVM_ENOSYS
            }
        },
        Hypercall::SendIpi(ipi) => match irqchip {
            Some(irqchip) => {
                bump(&mut counters.send_ipis);
                irqchip.pv_send_ipi(&ipi)
            }
            None => {
                bump(&mut counters.hypercalls_unknown);
                -KVM_ENOSYS
            }
        },
        Hypercall::SchedYield { .. } => {
            bump(&mut counters.sched_yields);
            0
        }
        Hypercall::ClockPairing { gpa, clock_type } => {
            bump(&mut counters.clock_pairings);
            let result = clock_pairing(guest, gpa, clock_type, reference);
            if result != 0 {
                bump(&mut counters.clock_pairings_failed);
            }
            result
        }
        Hypercall::Unknown { .. } => {
            bump(&mut counters.hypercalls_unknown);
            -KVM_ENOSYS
        }
        Hypercall::Privileged => {
            bump(&mut counters.hypercalls_privileged);
            -KVM_EPERM
        }
    }
}

/// KVM_HC_CLOCK_PAIRING (KVM `kvm_pv_clock_pairing`): writes the host's
/// wall clock and the guest TSC of the same instant as a
/// `KvmClockPairing` (64 bytes) at `gpa`.  `-KVM_EOPNOTSUPP` for another
/// clock type or an unstable host TSC (KVM needs the TSC clocksource),
/// `-KVM_EFAULT` if the area cannot be written.
pub fn clock_pairing(
    guest: &mut impl GuestRam,
    gpa: u64,
    clock_type: u64,
    reference: &ClockReference,
) -> i64 {
    if clock_type != KVM_CLOCK_PAIRING_WALLCLOCK || !reference.tsc_stable {
        return -KVM_EOPNOTSUPP;
    }
    let sec = (reference.wall_clock_ns / NSEC_PER_SEC) as i64;
    let nsec = (reference.wall_clock_ns % NSEC_PER_SEC) as i64;
    let mut bytes = [0u8; 64];
    bytes[0..8].copy_from_slice(&sec.to_le_bytes());
    bytes[8..16].copy_from_slice(&nsec.to_le_bytes());
    bytes[16..24].copy_from_slice(&reference.guest_tsc.to_le_bytes());
    // flags and pad stay 0.
    match write_split(guest, gpa, &bytes) {
        Ok(()) => 0,
        Err(_) => -KVM_EFAULT,
    }
}

#[cfg(test)]
mod tests;
