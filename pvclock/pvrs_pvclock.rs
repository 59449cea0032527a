// SPDX-License-Identifier: GPL-2.0

//! pvrs_pvclock: a clocksource that speaks the kvmclock protocol.
//!
//! Documentation/virt/kvm/x86/msr.rst: each vCPU hands the host the address
//! of a `pvclock_vcpu_time_info` area through `MSR_KVM_SYSTEM_TIME_NEW` (or
//! the old `MSR_KVM_SYSTEM_TIME` when only `KVM_FEATURE_CLOCKSOURCE` is
//! offered); the host keeps it current, and the guest computes nanoseconds
//! from the TSC with the scaling in `abi/src/pvclock.rs`. The wall clock at
//! the moment kvmclock read zero comes through `MSR_KVM_WALL_CLOCK_NEW`.
//!
//! The C kvm-clock owns those MSRs unless the guest boots with
//! `no-kvmclock`; this module refuses to load while it does. Loaded, it
//! registers the areas on every online CPU (and on CPUs that come online
//! later, through a hotplug state), then registers the clocksource
//! `pvrs-kvm-clock` with the C driver's rating: 400, or 299 when the TSC is
//! invariant and stable so that the TSC is preferred. Unloading unregisters
//! the clocksource first and then takes every area back (writes 0 to the
//! MSR on each CPU).
//!
//! Debugfs, `/sys/kernel/debug/pvrs_pvclock/`: `stats` (read counters) and
//! `wallclock` (the host's wall clock through `MSR_KVM_WALL_CLOCK_NEW`).

use kernel::{c_str, clocksource, cpu, debugfs, prelude::*, sync::Arc, x86};

/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
#[path = "../abi/src/modules.rs"]
pub mod abi;
pub mod clock;
/// The pvrs hypercall API (detection of the KVM interface).
#[path = "../hypercall/api.rs"]
pub mod hypercall;

use abi::{
    cpuid::{
        KVM_FEATURE_CLOCKSOURCE, KVM_FEATURE_CLOCKSOURCE2, KVM_FEATURE_CLOCKSOURCE_STABLE_BIT,
    },
    msr::{
        MSR_KVM_SYSTEM_TIME, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK, MSR_KVM_WALL_CLOCK_NEW,
    },
};
use clock::{CpuSetup, PvClock, PvClockReader, Stats, WallClock};

module! {
    type: PvrsPvclock,
    name: "pvrs_pvclock",
    author: "pvrs maintainers",
    description: "kvmclock-protocol clocksource, in Rust",
    license: "GPL",
}

/// The C driver's rating for kvm-clock.
const RATING: i32 = 400;
/// The C driver's rating when the TSC is invariant: just below the TSC's 300.
const RATING_INVARIANT_TSC: i32 = 299;

struct PvrsPvclock {
    // Fields drop in order: the clocksource goes first, then the areas are
    // taken back on every CPU, then debugfs.
    _clocksource: clocksource::Registration<PvClockReader>,
    _hotplug: cpu::HotplugRegistration<CpuSetup>,
    _debugfs: Option<debugfs::Dir>,
}

impl kernel::Module for PvrsPvclock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let Some(kvm) = hypercall::kvm::Kvm::detect() else {
            pr_info!("pvrs: pvclock: no KVM, not loading\n");
            return Err(ENODEV);
        };
        let features = kvm.features();
        let (system_time_msr, wall_clock_msr) = if features.has(KVM_FEATURE_CLOCKSOURCE2) {
            (MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW)
        } else if features.has(KVM_FEATURE_CLOCKSOURCE) {
            (MSR_KVM_SYSTEM_TIME, MSR_KVM_WALL_CLOCK)
        } else {
            pr_info!("pvrs: pvclock: the host offers no kvmclock\n");
            return Err(ENODEV);
        };
        if x86::kvmclock_in_use() {
            pr_info!("pvrs: pvclock: the C kvm-clock owns the MSRs; boot with no-kvmclock\n");
            return Err(EBUSY);
        }
        let stable_bit_valid = features.has(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT);
        let clock = Arc::new(PvClock::new(system_time_msr, stable_bit_valid)?, GFP_KERNEL)?;
        let hotplug = cpu::HotplugRegistration::register(
            c_str!("pvrs/pvclock:online"),
            CpuSetup::new(clock.clone()),
        )?;
        let rating = if x86::tsc_invariant_and_stable() {
            RATING_INVARIANT_TSC
        } else {
            RATING
        };
        let cs = clocksource::Registration::register(
            c_str!("pvrs-kvm-clock"),
            rating,
            1_000_000_000,
            module,
            PvClockReader::new(clock.clone()),
        )?;
        pr_info!(
            "pvrs: pvclock: using msrs {:#x} and {:#x}, rating {}, stable bit {}\n",
            system_time_msr,
            wall_clock_msr,
            rating,
            if stable_bit_valid {
                "honoured"
            } else {
                "not offered"
            }
        );
        let dir = match debugfs_files(clock, wall_clock_msr, kvm) {
            Ok(dir) => Some(dir),
            Err(e) => {
                pr_warn!("pvrs: pvclock: no debugfs files ({:?})\n", e);
                None
            }
        };
        Ok(PvrsPvclock {
            _clocksource: cs,
            _hotplug: hotplug,
            _debugfs: dir,
        })
    }
}

fn debugfs_files(
    clock: Arc<PvClock>,
    wall_clock_msr: u32,
    kvm: hypercall::kvm::Kvm,
) -> Result<debugfs::Dir> {
    let mut dir = debugfs::Dir::new(c_str!("pvrs_pvclock"))?;
    dir.add_text_file(
        c_str!("stats"),
        0o400,
        Arc::new(Stats::new(clock.clone()), GFP_KERNEL)?,
    )?;
    dir.add_text_file(
        c_str!("wallclock"),
        0o400,
        Arc::new(WallClock::new(clock, wall_clock_msr, kvm)?, GFP_KERNEL)?,
    )?;
    Ok(dir)
}

impl Drop for PvrsPvclock {
    fn drop(&mut self) {
        pr_info!("pvrs: pvclock: unloading; the areas are taken back from every CPU\n");
    }
}
