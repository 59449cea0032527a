// SPDX-License-Identifier: GPL-2.0

//! x86 registers and counters: model-specific registers and the TSC.
//!
//! C headers: [`arch/x86/include/asm/msr.h`](srctree/arch/x86/include/asm/msr.h),
//! [`arch/x86/include/asm/tsc.h`](srctree/arch/x86/include/asm/tsc.h)

use crate::{
    bindings,
    error::{to_result, Result},
};

/// Reads MSR `msr` on the current CPU; an MSR that faults gives an error
/// (`-EIO`) instead of a crash.
///
/// # Safety
///
/// Reading some MSRs has side effects; the caller must know that `msr` is
/// one whose read is harmless.
pub unsafe fn read_msr(msr: u32) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: `value` is a valid output location; the `_safe` variant
    // handles a #GP by returning an error.
    to_result(unsafe { bindings::rdmsrl_safe(msr, &mut value) })?;
    Ok(value)
}

/// Writes `value` to MSR `msr` on the current CPU; an MSR that faults gives
/// an error (`-EIO`) instead of a crash.
///
/// # Safety
///
/// MSR writes change processor or hypervisor state: the caller must
/// guarantee that this write is sound, e.g. that memory it hands to the
/// hypervisor stays valid until it is taken back.
pub unsafe fn write_msr(msr: u32, value: u64) -> Result {
    // SAFETY: The caller vouches for the write; the `_safe` variant handles
    // a #GP by returning an error.
    to_result(unsafe { bindings::wrmsrl_safe(msr, value) })
}

/// The time stamp counter, read in program order (not before the
/// loads preceding it), like the kernel's `rdtsc_ordered()`.
///
/// It is `LFENCE; RDTSC` inline: LFENCE orders RDTSC on Intel, and on AMD
/// since Linux makes LFENCE dispatch-serializing at boot
/// (`X86_FEATURE_LFENCE_RDTSC`), which is what `rdtsc_ordered()` relies on
/// too; it only prefers RDTSCP where that is faster.
#[inline(always)]
pub fn rdtsc_ordered() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: LFENCE and RDTSC only write EAX and EDX and have no side
    // effects.
    unsafe {
        core::arch::asm!(
            "lfence",
            "rdtsc",
            out("eax") low,
            out("edx") high,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Whether the TSC runs at a constant rate in all P- and C-states and has
/// not been found unstable: the condition under which Linux prefers the TSC
/// to kvm-clock (`kvmclock_init()` then lowers kvm-clock's rating).
pub fn tsc_invariant_and_stable() -> bool {
    // SAFETY: Reads CPU feature flags and a boolean; always safe.
    unsafe { bindings::x86_tsc_invariant_and_stable() }
}

/// Whether the kernel's own kvm-clock driver has registered the kvmclock
/// areas (it owns the `MSR_KVM_SYSTEM_TIME*` MSRs then).
pub fn kvmclock_in_use() -> bool {
    // SAFETY: Reads a pointer set once during boot; always safe.
    unsafe { bindings::x86_kvmclock_in_use() }
}

/// Whether the boot CPU has feature `feature` (an `X86_FEATURE_*` number
/// of `asm/cpufeatures.h`), as the kernel found or configured it.
pub fn boot_cpu_has(feature: u32) -> bool {
    // SAFETY: Reads the boot CPU's capability bits; always safe.
    unsafe { bindings::boot_cpu_has(feature) }
}

/// Atomically replaces the 32-bit value at user address `address` with
/// `new` if it equals `old` (a locked CMPXCHG on the user mapping).
/// Returns `Ok(true)` if it did, `Ok(false)` if the value differed, and
/// `EFAULT` if the address is not writable user memory of the current task.
pub fn cmpxchg_user_u32(address: usize, old: u32, new: u32) -> Result<bool> {
    let mut expected = old;
    // SAFETY: The helper checks the user address with `user_access_begin`
    // and handles faults; `expected` is a valid local.
    let ret = unsafe { bindings::cmpxchg_user_u32(address as *mut u32, &mut expected, new) };
    to_result(ret.min(0))?;
    Ok(ret == 0)
}

/// The 64-bit form of [`cmpxchg_user_u32`].
pub fn cmpxchg_user_u64(address: usize, old: u64, new: u64) -> Result<bool> {
    let mut expected = old;
    // SAFETY: As in `cmpxchg_user_u32`.
    let ret = unsafe { bindings::cmpxchg_user_u64(address as *mut u64, &mut expected, new) };
    to_result(ret.min(0))?;
    Ok(ret == 0)
}
