// SPDX-License-Identifier: GPL-2.0

//! Reading the kvmclock areas (Documentation/virt/kvm/x86/msr.rst,
//! `MSR_KVM_SYSTEM_TIME_NEW`).
//!
//! The host updates an area by making its `version` odd, writing the
//! fields, and making `version` even again. A reader takes a snapshot of the
//! fields and a TSC value between two reads of an even, unchanged
//! `version`, and computes `system_time + scale(tsc - tsc_timestamp)`.
//!
//! When the host sets `PVCLOCK_TSC_STABLE_BIT` (and advertises
//! `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`), all vCPUs' areas describe one
//! clock and the result is monotonic across CPUs as it is. Otherwise each
//! vCPU's area may be slightly off from the others, and a global last value
//! keeps the clock from going backwards, as Linux's
//! `pvclock_clocksource_read()` does.

use core::{
    fmt::Write,
    mem::offset_of,
    sync::atomic::{compiler_fence, AtomicU64, Ordering},
};

use kernel::{
    clocksource::Clocksource,
    cpu::{self, HotplugCallbacks, PreemptGuard},
    debugfs::{TextAttribute, TextBuffer},
    hvshared::SharedSlots,
    prelude::*,
    sync::Arc,
    x86,
};

use crate::abi::{
    msr::KVM_MSR_ENABLED,
    pvclock::{
        PvclockVcpuTimeInfo as Info, PvclockWallClock as Wall, PVCLOCK_GUEST_STOPPED,
        PVCLOCK_TSC_STABLE_BIT,
    },
};
use crate::hypercall::kvm::{ClockPairingArea, Kvm};

/// One area per CPU, 64 bytes apart (the C driver's spacing too, so that
/// two vCPUs' areas never share a cache line).
const AREA: usize = 64;
/// The CPU whose area others fall back to while their own is not (or no
/// longer) registered, during CPU bring-up and tear-down. It never goes
/// offline on x86.
const BOOT_CPU: usize = 0;
/// After this many torn reads in a row the host is misbehaving: the read
/// gives up and returns the last value instead of spinning forever.
const MAX_RETRIES: u32 = 10_000;

/// Counters, for `stats`.
///
/// None of them counts the common case: a shared counter bumped on every
/// read would cost an atomic read-modify-write on a cache line all CPUs
/// write, more than the read itself.
#[derive(Default)]
struct Counters {
    retries: AtomicU64,
    fallback_reads: AtomicU64,
    guard_corrections: AtomicU64,
    guest_stopped: AtomicU64,
    torn_giveups: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The kvmclock areas and the state of the clock.
pub struct PvClock {
    areas: SharedSlots<AREA>,
    msr: u32,
    stable_bit_valid: bool,
    last_value: AtomicU64,
    counters: Counters,
}

/// The fields of one consistent read of an area.
struct Reading {
    nsec: u64,
    flags: u8,
}

impl PvClock {
    /// Allocates the areas for every possible CPU; `msr` is the system-time
    /// MSR; `stable_bit_valid` says whether the host advertises the stable
    /// bit (otherwise the bit is ignored, as in Linux).
    pub fn new(msr: u32, stable_bit_valid: bool) -> Result<Self> {
        Ok(Self {
            areas: SharedSlots::new(cpu::nr_cpu_ids() as usize)?,
            msr,
            stable_bit_valid,
            last_value: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// One consistent reading of area `slot`, or `None` if the host kept it
    /// in an update for [`MAX_RETRIES`] attempts.
    fn read_area(&self, slot: usize) -> Option<Reading> {
        let a = &self.areas;
        for attempt in 0..MAX_RETRIES {
            if attempt > 0 {
                bump(&self.counters.retries);
            }
            let version = a.read::<u32>(slot, offset_of!(Info, version)).ok()?;
            // The fields must be read after the version (x86 keeps loads in
            // order; the compiler must too).
            compiler_fence(Ordering::Acquire);
            let info = Info {
                version,
                tsc_timestamp: a.read(slot, offset_of!(Info, tsc_timestamp)).ok()?,
                system_time: a.read(slot, offset_of!(Info, system_time)).ok()?,
                tsc_to_system_mul: a.read(slot, offset_of!(Info, tsc_to_system_mul)).ok()?,
                tsc_shift: a.read(slot, offset_of!(Info, tsc_shift)).ok()?,
                flags: a.read(slot, offset_of!(Info, flags)).ok()?,
                ..Info::zeroed()
            };
            let tsc = x86::rdtsc_ordered();
            compiler_fence(Ordering::Acquire);
            let again = a.read::<u32>(slot, offset_of!(Info, version)).ok()?;
            if version & 1 == 0 && version == again {
                return Some(Reading {
                    nsec: info.nsec_at(tsc),
                    flags: info.flags,
                });
            }
        }
        bump(&self.counters.torn_giveups);
        None
    }

    /// The clock, in nanoseconds since the host started kvmclock.
    pub fn read(&self) -> u64 {
        let reading = {
            // The area and the TSC must be this CPU's: stay on it.
            let guard = PreemptGuard::new();
            let mut slot = guard.cpu() as usize;
            if !self.areas.is_handed_over(slot) {
                bump(&self.counters.fallback_reads);
                slot = BOOT_CPU;
            }
            self.read_area(slot)
        };
        let Some(reading) = reading else {
            return self.last_value.load(Ordering::Relaxed);
        };
        if reading.flags & PVCLOCK_GUEST_STOPPED != 0 {
            // The host paused the guest (e.g. for a migration). Linux uses
            // this to quiet its soft-lockup watchdogs; here it is counted.
            bump(&self.counters.guest_stopped);
        }
        if self.stable_bit_valid && reading.flags & PVCLOCK_TSC_STABLE_BIT != 0 {
            return reading.nsec;
        }
        self.monotonic(reading.nsec)
    }

    /// Never less than any value returned before: a global maximum, moved
    /// forward with compare-and-swap.
    fn monotonic(&self, nsec: u64) -> u64 {
        let mut last = self.last_value.load(Ordering::Relaxed);
        loop {
            if nsec <= last {
                if nsec < last {
                    bump(&self.counters.guard_corrections);
                }
                return last;
            }
            match self.last_value.compare_exchange_weak(
                last,
                nsec,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return nsec,
                Err(current) => last = current,
            }
        }
    }
}

/// The clocksource's `read`.
pub struct PvClockReader {
    clock: Arc<PvClock>,
}

impl PvClockReader {
    /// A reader of `clock`.
    pub fn new(clock: Arc<PvClock>) -> Self {
        Self { clock }
    }
}

impl Clocksource for PvClockReader {
    fn read(&self) -> u64 {
        self.clock.read()
    }
}

/// Registers a CPU's area when it comes online and takes it back when it
/// goes offline (each runs on that CPU).
pub struct CpuSetup {
    clock: Arc<PvClock>,
}

impl CpuSetup {
    /// The hotplug callbacks for `clock`.
    pub fn new(clock: Arc<PvClock>) -> Self {
        Self { clock }
    }
}

impl HotplugCallbacks for CpuSetup {
    fn online(&self, cpu: u32) -> Result {
        let guard = PreemptGuard::new();
        if guard.cpu() != cpu {
            pr_err!(
                "pvrs: pvclock: online callback for CPU {} ran on {}\n",
                cpu,
                guard.cpu()
            );
            return Err(EINVAL);
        }
        let c = &self.clock;
        c.areas
            .hand_over_via_msr(&guard, cpu as usize, c.msr, KVM_MSR_ENABLED)
    }

    fn offline(&self, cpu: u32) -> Result {
        let guard = PreemptGuard::new();
        let c = &self.clock;
        if let Err(e) = c.areas.take_back_via_msr(&guard, cpu as usize, c.msr) {
            pr_err!(
                "pvrs: pvclock: cannot take back CPU {}'s area: {:?}\n",
                cpu,
                e
            );
        }
        // Going offline must not fail for this.
        Ok(())
    }
}

/// `stats`: the read counters.
pub struct Stats {
    clock: Arc<PvClock>,
}

impl Stats {
    /// The statistics of `clock`.
    pub fn new(clock: Arc<PvClock>) -> Self {
        Self { clock }
    }
}

impl TextAttribute for Stats {
    fn show(&self, out: &mut TextBuffer) -> Result {
        let c = &self.clock;
        let n = &c.counters;
        let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
        let registered = (0..c.areas.count())
            .filter(|&i| c.areas.is_handed_over(i))
            .count();
        writeln!(
            out,
            "msr={:#x} stable_bit_valid={} registered_cpus={} online_cpus={} retries={} \
             fallback_reads={} guard_corrections={} guest_stopped={} torn_giveups={}",
            c.msr,
            c.stable_bit_valid,
            registered,
            cpu::num_online_cpus(),
            get(&n.retries),
            get(&n.fallback_reads),
            get(&n.guard_corrections),
            get(&n.guest_stopped),
            get(&n.torn_giveups)
        )?;
        Ok(())
    }
}

/// `wallclock`: the host's wall clock, `MSR_KVM_WALL_CLOCK_NEW` plus the
/// current kvmclock reading; next to it, for comparison, the host's
/// `CLOCK_REALTIME` from `KVM_HC_CLOCK_PAIRING` taken right before.
pub struct WallClock {
    clock: Arc<PvClock>,
    msr: u32,
    area: SharedSlots<16>,
    kvm: Kvm,
    pairing: ClockPairingArea,
}

impl WallClock {
    /// The wall clock through `msr`, added to `clock`.
    pub fn new(clock: Arc<PvClock>, msr: u32, kvm: Kvm) -> Result<Self> {
        Ok(Self {
            clock,
            msr,
            area: SharedSlots::new(1)?,
            kvm,
            pairing: ClockPairingArea::new()?,
        })
    }

    /// The wall-clock time at which kvmclock read zero, as (sec, nsec).
    fn boot_time(&self) -> Result<(u32, u32)> {
        self.area.fill_via_msr(0, self.msr)?;
        for _ in 0..MAX_RETRIES {
            let version = self.area.read::<u32>(0, offset_of!(Wall, version))?;
            compiler_fence(Ordering::Acquire);
            let sec = self.area.read::<u32>(0, offset_of!(Wall, sec))?;
            let nsec = self.area.read::<u32>(0, offset_of!(Wall, nsec))?;
            compiler_fence(Ordering::Acquire);
            if version & 1 == 0 && version == self.area.read::<u32>(0, offset_of!(Wall, version))? {
                return Ok((sec, nsec));
            }
        }
        Err(EAGAIN)
    }
}

impl TextAttribute for WallClock {
    fn show(&self, out: &mut TextBuffer) -> Result {
        let (sec, nsec) = self.boot_time()?;
        let pairing = self.kvm.clock_pairing(&self.pairing);
        let since_boot = self.clock.read();
        let wall = u64::from(sec)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(nsec))
            .saturating_add(since_boot);
        write!(
            out,
            "wall_ns={} boot_sec={} boot_nsec={} kvmclock_ns={}",
            wall, sec, nsec, since_boot
        )?;
        match pairing {
            Ok(p) => writeln!(out, " host_pairing_ns={}", p.host_ns())?,
            Err(e) => writeln!(out, " host_pairing_errno={}", e.to_errno())?,
        }
        Ok(())
    }
}
