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

/// Whether the kernel's current clocksource is the TSC: the host
/// condition under which a hypervisor can hand its guests one TSC-based
/// clock for all vCPUs, as KVM's master clock requires (Linux leaves the
/// TSC clocksource when it finds the TSC unstable).
pub fn clocksource_is_tsc() -> bool {
    let mut snapshot = bindings::system_time_snapshot::default();
    // SAFETY: `ktime_get_snapshot` fills the struct it is given; it may
    // sleep on nothing (a seqcount read).
    unsafe { bindings::ktime_get_snapshot(&mut snapshot) };
    snapshot.cs_id == bindings::clocksource_ids_CSID_X86_TSC
}

/// The TSC frequency in kHz as the kernel calibrated it (`tsc_khz`), or 0
/// if it has none.
pub fn tsc_khz() -> u32 {
    // SAFETY: `tsc_khz` is written during boot and by TSC refinement (a
    // single aligned word); a racy read yields either value, as C's plain
    // reads of it do.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(bindings::tsc_khz)) }
}

/// The host's wall clock (`CLOCK_REALTIME`) in nanoseconds since the
/// epoch, 0 before it; what a hypervisor hands its guests as their boot
/// time's base (kvmclock's wall clock, `KVM_HC_CLOCK_PAIRING`).
pub fn realtime_ns() -> u64 {
    let mut now = bindings::timespec64::default();
    // SAFETY: `ktime_get_real_ts64` fills the struct it is given; it may
    // be called from any context but NMI.
    unsafe { bindings::ktime_get_real_ts64(&mut now) };
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanoseconds = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(nanoseconds)
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

/// A guest's FPU/extended state, switched with the task's around guest
/// execution (`struct fpu_guest`, `asm/fpu/api.h`), as KVM does: while
/// loaded, the current task's FPU state *is* the guest's, so a context
/// switch saves and restores it like the task's own, and the guest's
/// registers are live whenever the task runs.
///
/// # Invariants
///
/// `inner` was set up by `fpu_alloc_guest_fpstate` and is freed in `drop`.
pub struct GuestFpu {
    inner: crate::alloc::KBox<crate::types::Opaque<bindings::fpu_guest>>,
}

// SAFETY: The state is only touched through `&mut self` or by the task
// that loaded it.
unsafe impl Send for GuestFpu {}

impl GuestFpu {
    /// Allocates a guest FPU state in its reset configuration.
    pub fn new() -> Result<Self> {
        let inner = crate::alloc::KBox::new(
            crate::types::Opaque::<bindings::fpu_guest>::uninit(),
            crate::alloc::flags::GFP_KERNEL,
        )?;
        // SAFETY: `inner` is valid for writes of a `fpu_guest`, which the
        // function initializes; it returns false if it could not allocate.
        if !unsafe { bindings::fpu_alloc_guest_fpstate(inner.get()) } {
            return Err(crate::error::code::ENOMEM);
        }
        Ok(Self { inner })
    }

    /// Makes the guest state the current task's FPU state (the task's own
    /// is saved); `put` gives it back. Returns an error if the guest state
    /// could not be loaded (KVM treats that as a failed KVM_RUN).
    pub fn load(&mut self) -> Result {
        // SAFETY: The state was allocated in `new` (type invariant); the
        // kernel swaps it with the current task's state.
        to_result(unsafe { bindings::fpu_swap_kvm_fpstate(self.inner.get(), true) })
    }

    /// The size of the guest state in the XSAVE format userspace sees
    /// (`struct kvm_xsave`, at least 4096 bytes).
    pub fn uabi_size(&self) -> usize {
        // SAFETY: Initialized in `new` (type invariant); set once there.
        unsafe { (*self.inner.get()).uabi_size as usize }
    }

    /// Copies the guest state into `buf` in XSAVE format, with the
    /// components of `xfeatures` (`fpu_copy_guest_fpstate_to_uabi`).
    /// `buf` must hold [`Self::uabi_size`] bytes.
    pub fn to_uabi(&self, buf: &mut [u8], xfeatures: u64) -> Result {
        if buf.len() < self.uabi_size() {
            return Err(crate::error::code::EINVAL);
        }
        // SAFETY: The state is initialized and not loaded (callers run
        // between KVM_RUNs, under the vCPU lock); `buf` is big enough.
        unsafe {
            bindings::fpu_copy_guest_fpstate_to_uabi(
                self.inner.get(),
                buf.as_mut_ptr().cast(),
                buf.len() as u32,
                xfeatures,
                0,
            )
        };
        Ok(())
    }

    /// Loads the guest state from `buf` in XSAVE format
    /// (`fpu_copy_uabi_to_guest_fpstate`): components outside `xcr0` are
    /// refused (EINVAL); PKRU is left as it is.
    pub fn from_uabi(&mut self, buf: &[u8], xcr0: u64) -> Result {
        if buf.len() < self.uabi_size() {
            return Err(crate::error::code::EINVAL);
        }
        let mut pkru = 0u32;
        // SAFETY: As in `to_uabi`; the function validates the header and
        // copies only what fits the guest state.
        to_result(unsafe {
            bindings::fpu_copy_uabi_to_guest_fpstate(
                self.inner.get(),
                buf.as_ptr().cast(),
                xcr0,
                &mut pkru,
            )
        })
    }

    /// Gives the current task its own FPU state back after `load`.
    pub fn put(&mut self) {
        // SAFETY: As in `load`; called after a successful `load`.
        let _ = unsafe { bindings::fpu_swap_kvm_fpstate(self.inner.get(), false) };
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        // SAFETY: Allocated in `new` (type invariant), not loaded (`load`
        // and `put` are paired by the caller within one ioctl).
        unsafe { bindings::fpu_free_guest_fpstate(self.inner.get()) };
    }
}

/// Reads extended control register 0 (XCR0), the enabled XSAVE features.
/// Only valid when CR4.OSXSAVE is set, which Linux sets on every CPU with
/// XSAVE.
pub fn read_xcr0() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: XGETBV with ECX=0 reads XCR0; it has no side effect.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes XCR0.
///
/// # Safety
///
/// `value` must be a valid XCR0 for this CPU (a #GP otherwise), and the
/// caller must restore the kernel's value before any kernel FPU use or
/// XSAVE of a task's state.
pub unsafe fn write_xcr0(value: u64) {
    // SAFETY: The caller guarantees a valid value and its restoration.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags));
    }
}
