// SPDX-License-Identifier: GPL-2.0

//! The KVM hypercall ABI (Documentation/virt/kvm/x86/hypercalls.rst).
//!
//! A hypercall puts its number in RAX and up to four arguments in RBX, RCX,
//! RDX and RSI, and executes VMCALL (Intel VMX; Intel SDM vol. 3C, "VMCALL")
//! or VMMCALL (AMD SVM; AMD APM vol. 3, "VMMCALL"); the host's result comes
//! back in RAX, negative `KVM_E*` codes for errors. The instruction is chosen
//! once, when [`Kvm`] is made, from the CPU vendor, as Linux does with its
//! `X86_FEATURE_VMMCALL` alternative.
//!
//! This is the abstraction layer of the pvrs hypercall code: the instruction
//! itself is the only `unsafe` here. The typed wrappers check the feature bit
//! of their hypercall first and refuse with `EOPNOTSUPP` when it is absent,
//! so they never trap on a host without the feature; host error codes become
//! kernel errors through [`host_result`].

use kernel::{hvshared::SharedSlots, prelude::*, x86};

use super::{
    cpuid::Cpu,
    detect::{self, KvmInterface, Probe},
};
use crate::abi::{
    cpuid::{
        Features, KVM_FEATURE_CLOCKSOURCE2, KVM_FEATURE_PV_SCHED_YIELD, KVM_FEATURE_PV_SEND_IPI,
        KVM_FEATURE_PV_UNHALT,
    },
    hypercall::{
        KVM_CLOCK_PAIRING_WALLCLOCK, KVM_E2BIG, KVM_EFAULT, KVM_EINVAL, KVM_ENOSYS, KVM_EOPNOTSUPP,
        KVM_EPERM, KVM_HC_CLOCK_PAIRING, KVM_HC_KICK_CPU, KVM_HC_MAP_GPA_RANGE, KVM_HC_MMU_OP,
        KVM_HC_SCHED_YIELD, KVM_HC_SEND_IPI, KVM_HC_VAPIC_POLL_IRQ,
    },
};

/// The instruction that enters the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// Intel VMX, and the default for other vendors.
    Vmcall,
    /// AMD SVM, also on Hygon.
    Vmmcall,
}

impl Instruction {
    /// The instruction the CPU with vendor string `vendor` (CPUID leaf 0)
    /// implements natively. KVM would emulate the other one, at the cost of
    /// an extra exit per call.
    pub fn for_vendor(vendor: &[u8; 12]) -> Self {
        match vendor {
            b"AuthenticAMD" | b"HygonGenuine" => Instruction::Vmmcall,
            _ => Instruction::Vmcall,
        }
    }

    /// The mnemonic, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Instruction::Vmcall => "vmcall",
            Instruction::Vmmcall => "vmmcall",
        }
    }
}

/// Maps a hypercall's return value to a kernel result: non-negative values
/// are results, `-KVM_E*` become the matching kernel errors, and anything
/// else negative (which the ABI does not define) is `EIO`.
pub fn host_result(ret: i64) -> Result<u64> {
    if ret >= 0 {
        return Ok(ret as u64);
    }
    Err(match ret.checked_neg() {
        Some(KVM_ENOSYS) => ENOSYS,
        Some(KVM_EFAULT) => EFAULT,
        Some(KVM_EINVAL) => EINVAL,
        Some(KVM_E2BIG) => E2BIG,
        Some(KVM_EPERM) => EPERM,
        Some(KVM_EOPNOTSUPP) => EOPNOTSUPP,
        _ => EIO,
    })
}

/// The lowest vector an IPI may carry: 0-31 are CPU exceptions.
pub const FIRST_EXTERNAL_VECTOR: u8 = 0x20;

/// The host's answer to `KVM_HC_CLOCK_PAIRING` (`struct kvm_clock_pairing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockPairing {
    /// Host `CLOCK_REALTIME` seconds.
    pub sec: i64,
    /// Host `CLOCK_REALTIME` nanoseconds.
    pub nsec: i64,
    /// The guest TSC at the same instant.
    pub tsc: u64,
}

impl ClockPairing {
    /// The host time in nanoseconds since the epoch.
    pub fn host_ns(&self) -> i64 {
        self.sec.wrapping_mul(1_000_000_000).wrapping_add(self.nsec)
    }
}

/// The memory the host writes a `struct kvm_clock_pairing` into (64 bytes).
pub struct ClockPairingArea {
    slots: SharedSlots<64>,
}

impl ClockPairingArea {
    /// Allocates the area.
    pub fn new() -> Result<Self> {
        Ok(Self {
            slots: SharedSlots::new(1)?,
        })
    }
}

/// A KVM host's hypercall interface: its instruction and features.
#[derive(Clone, Copy, Debug)]
pub struct Kvm {
    instruction: Instruction,
    features: Features,
}

/// Emits one hypercall with `$insn`. RBX is reserved by LLVM, so the first
/// argument is swapped into it around the instruction.
macro_rules! hypercall_asm {
    ($insn:literal, $nr:expr, $a0:expr, $a1:expr, $a2:expr, $a3:expr) => {{
        let ret: i64;
        // SAFETY: The caller of `Kvm::raw` vouches for the hypercall; the
        // host only changes RAX (and memory the hypercall names), and RBX is
        // restored before the block ends.
        unsafe {
            core::arch::asm!(
                "xchg {a0}, rbx",
                $insn,
                "xchg {a0}, rbx",
                a0 = inout(reg) $a0 => _,
                inout("rax") u64::from($nr) => ret,
                in("rcx") $a1,
                in("rdx") $a2,
                in("rsi") $a3,
                options(nostack),
            );
        }
        ret
    }};
}

impl Kvm {
    /// The KVM interface of the host this guest runs on, if it is KVM.
    pub fn detect() -> Option<Self> {
        match detect::probe(&Cpu) {
            Probe::Kvm(iface) => Some(Self::new(&iface, detect::vendor(&Cpu))),
            _ => None,
        }
    }

    /// The interface described by `iface`, on a CPU of vendor `vendor`.
    pub fn new(iface: &KvmInterface, vendor: [u8; 12]) -> Self {
        Self {
            instruction: Instruction::for_vendor(&vendor),
            features: iface.features,
        }
    }

    /// The instruction chosen at detection.
    pub fn instruction(&self) -> Instruction {
        self.instruction
    }

    /// The `KVM_FEATURE_*` bits the host offers.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Issues hypercall `nr` with four arguments (unused ones are 0; KVM
    /// ignores the registers a hypercall does not use) and returns RAX.
    ///
    /// # Safety
    ///
    /// The hypercall must not make the host write guest memory that the
    /// caller does not own, change how guest memory is mapped or encrypted,
    /// or inject an interrupt vector the guest cannot handle.
    pub unsafe fn raw(&self, nr: u32, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        match self.instruction {
            Instruction::Vmcall => hypercall_asm!("vmcall", nr, a0, a1, a2, a3),
            Instruction::Vmmcall => hypercall_asm!("vmmcall", nr, a0, a1, a2, a3),
        }
    }

    /// Hypercall `nr` without arguments.
    ///
    /// # Safety
    ///
    /// As for [`Kvm::raw`].
    pub unsafe fn hypercall0(&self, nr: u32) -> i64 {
        // SAFETY: The caller's obligations are those of `raw`.
        unsafe { self.raw(nr, 0, 0, 0, 0) }
    }

    /// Hypercall `nr` with one argument.
    ///
    /// # Safety
    ///
    /// As for [`Kvm::raw`].
    pub unsafe fn hypercall1(&self, nr: u32, a0: u64) -> i64 {
        // SAFETY: The caller's obligations are those of `raw`.
        unsafe { self.raw(nr, a0, 0, 0, 0) }
    }

    /// Hypercall `nr` with two arguments.
    ///
    /// # Safety
    ///
    /// As for [`Kvm::raw`].
    pub unsafe fn hypercall2(&self, nr: u32, a0: u64, a1: u64) -> i64 {
        // SAFETY: The caller's obligations are those of `raw`.
        unsafe { self.raw(nr, a0, a1, 0, 0) }
    }

    /// Hypercall `nr` with three arguments.
    ///
    /// # Safety
    ///
    /// As for [`Kvm::raw`].
    pub unsafe fn hypercall3(&self, nr: u32, a0: u64, a1: u64, a2: u64) -> i64 {
        // SAFETY: The caller's obligations are those of `raw`.
        unsafe { self.raw(nr, a0, a1, a2, 0) }
    }

    /// Hypercall `nr` with four arguments.
    ///
    /// # Safety
    ///
    /// As for [`Kvm::raw`].
    pub unsafe fn hypercall4(&self, nr: u32, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        // SAFETY: The caller's obligations are those of `raw`.
        unsafe { self.raw(nr, a0, a1, a2, a3) }
    }

    /// Whether `nr` is a hypercall whose arguments can make the host write
    /// guest memory, remap it, or inject an interrupt: those are only
    /// reachable through their typed wrappers, never as raw numbers.
    pub fn touches_guest_state(nr: u32) -> bool {
        matches!(
            nr,
            KVM_HC_CLOCK_PAIRING | KVM_HC_MAP_GPA_RANGE | KVM_HC_MMU_OP | KVM_HC_SEND_IPI
        )
    }

    /// Issues hypercall `nr` with `args` and returns the host's raw answer,
    /// unless `nr` is one that [`Kvm::touches_guest_state`] (`EPERM`).
    /// Unknown numbers are passed on: the host answers `-KVM_ENOSYS`.
    pub fn raw_checked(&self, nr: u32, args: [u64; 4]) -> Result<i64> {
        if Self::touches_guest_state(nr) {
            return Err(EPERM);
        }
        // SAFETY: The remaining hypercalls take no guest addresses and
        // inject no interrupts (hypercalls.rst); unknown ones fail.
        Ok(unsafe { self.raw(nr, args[0], args[1], args[2], args[3]) })
    }

    fn require(&self, feature: u32) -> Result {
        if self.features.has(feature) {
            Ok(())
        } else {
            Err(EOPNOTSUPP)
        }
    }

    /// `KVM_HC_KICK_CPU`: wakes the vCPU with APIC ID `apic_id` from a
    /// halt in a paravirtual spinlock wait. Needs `KVM_FEATURE_PV_UNHALT`.
    pub fn kick_cpu(&self, apic_id: u32) -> Result {
        self.require(KVM_FEATURE_PV_UNHALT)?;
        // SAFETY: KICK_CPU takes flags (0) and an APIC ID; it touches no
        // guest memory and injects no vector.
        host_result(unsafe { self.hypercall2(KVM_HC_KICK_CPU, 0, apic_id.into()) }).map(|_| ())
    }

    /// `KVM_HC_SEND_IPI`: sends a fixed-mode IPI with `vector` to the APIC
    /// IDs `min_apic_id + i` for each bit `i` set in the 128-bit `bitmap`
    /// (`bitmap[0]` holds bits 0-63). Returns how many vCPUs the host
    /// delivered it to. Needs `KVM_FEATURE_PV_SEND_IPI`.
    pub fn send_ipi(&self, bitmap: [u64; 2], min_apic_id: u32, vector: u8) -> Result<u32> {
        self.require(KVM_FEATURE_PV_SEND_IPI)?;
        if vector < FIRST_EXTERNAL_VECTOR {
            return Err(EINVAL);
        }
        // ICR bits 10:8 select the delivery mode; 0 is "fixed".
        let icr = u64::from(vector);
        // SAFETY: The vector is an external-interrupt vector, each of which
        // has a handler in Linux (a spurious one at worst); no guest memory
        // is named.
        let ret = unsafe {
            self.hypercall4(
                KVM_HC_SEND_IPI,
                bitmap[0],
                bitmap[1],
                min_apic_id.into(),
                icr,
            )
        };
        host_result(ret).map(|n| n as u32)
    }

    /// `KVM_HC_SCHED_YIELD`: lets the host run the vCPU with APIC ID
    /// `apic_id` if it is preempted. Needs `KVM_FEATURE_PV_SCHED_YIELD`.
    pub fn sched_yield(&self, apic_id: u32) -> Result {
        self.require(KVM_FEATURE_PV_SCHED_YIELD)?;
        // SAFETY: SCHED_YIELD takes an APIC ID only.
        host_result(unsafe { self.hypercall1(KVM_HC_SCHED_YIELD, apic_id.into()) }).map(|_| ())
    }

    /// `KVM_HC_VAPIC_POLL_IRQ`: an exit to let the host deliver pending
    /// interrupts. Every KVM host implements it (no feature bit).
    pub fn vapic_poll_irq(&self) -> Result {
        // SAFETY: VAPIC_POLL_IRQ takes no arguments.
        host_result(unsafe { self.hypercall0(KVM_HC_VAPIC_POLL_IRQ) }).map(|_| ())
    }

    /// `KVM_HC_CLOCK_PAIRING`: the host's wall-clock time and the guest TSC
    /// at the same instant, written by the host into `area`. There is no
    /// feature bit of its own; it comes with kvmclock (`CLOCKSOURCE2`), and
    /// a host whose clock is not TSC-based answers `EOPNOTSUPP`.
    pub fn clock_pairing(&self, area: &ClockPairingArea) -> Result<ClockPairing> {
        self.require(KVM_FEATURE_CLOCKSOURCE2)?;
        let phys = area.slots.phys_addr(0)?;
        // SAFETY: The host writes one `struct kvm_clock_pairing` (64 bytes)
        // at `phys`, which is `area`'s own 64-byte slot, during the call.
        let ret =
            unsafe { self.hypercall2(KVM_HC_CLOCK_PAIRING, phys, KVM_CLOCK_PAIRING_WALLCLOCK) };
        host_result(ret)?;
        Ok(ClockPairing {
            sec: area.slots.read::<u64>(0, 0)? as i64,
            nsec: area.slots.read::<u64>(0, 8)? as i64,
            tsc: area.slots.read::<u64>(0, 16)?,
        })
    }
}

/// The TSC, for timing hypercalls.
pub fn cycles() -> u64 {
    x86::rdtsc_ordered()
}
