// SPDX-License-Identifier: GPL-2.0

//! Access to the CPUID instruction.
//!
//! Detection logic takes a [`CpuidSource`] rather than executing CPUID
//! itself, so that it reads like the specification and the hardware access
//! stays in this one place.

/// The four registers one CPUID leaf returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidRegs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Something that answers CPUID queries.
pub trait CpuidSource {
    /// The registers of `leaf` (sub-leaf 0).
    fn leaf(&self, leaf: u32) -> CpuidRegs;
}

/// The CPU this code runs on.
pub struct Cpu;

impl CpuidSource for Cpu {
    fn leaf(&self, leaf: u32) -> CpuidRegs {
        // CPUID is available on every x86_64 CPU, is not privileged, and only
        // writes the four output registers, which is why the intrinsic is safe.
        let r = core::arch::x86_64::__cpuid(leaf);
        CpuidRegs {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}
