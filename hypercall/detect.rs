// SPDX-License-Identifier: GPL-2.0

//! Detection of the KVM paravirtual interface (Documentation/virt/kvm/x86/cpuid.rst).
//!
//! A guest first checks CPUID.1:ECX[31] (a hypervisor is present), then
//! looks for the "KVMKVMKVM\0\0\0" signature in the hypervisor range. KVM
//! normally sits at 0x40000000, but when it also offers another interface
//! (for example Hyper-V's) that one comes first and KVM's follows at a
//! multiple of 0x100, so the whole range is searched the way Linux's
//! `hypervisor_cpuid_base()` does.

use core::fmt;

use super::cpuid::CpuidSource;
use crate::abi::cpuid::{self as leaves, Features, Hints};

/// CPUID.1:ECX bit 31, "hypervisor present".
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The KVM interface as the CPUID leaves describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmInterface {
    /// The leaf holding the signature (KVM_CPUID_SIGNATURE when alone).
    pub base: u32,
    /// The highest hypervisor leaf (EAX of the signature leaf, fixed up).
    pub max_leaf: u32,
    /// KVM_CPUID_FEATURES.EAX.
    pub features: Features,
    /// KVM_CPUID_FEATURES.EDX.
    pub hints: Hints,
}

/// A hypervisor that is not KVM, by its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherHypervisor {
    /// Its base leaf.
    pub base: u32,
    /// Its 12-byte signature.
    pub signature: [u8; 12],
}

/// What the CPU says about the hypervisor underneath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// KVM, with its features.
    Kvm(KvmInterface),
    /// Some other hypervisor (e.g. TCG, Hyper-V) without KVM leaves.
    OtherHypervisor(OtherHypervisor),
    /// Bare metal, or a hypervisor that hides itself.
    NoHypervisor,
}

/// The CPU vendor string of CPUID leaf 0 (e.g. `AuthenticAMD`).
pub fn vendor(cpu: &impl CpuidSource) -> [u8; 12] {
    let r = cpu.leaf(0);
    // Leaf 0 spells the vendor in EBX, EDX, ECX order.
    leaves::decode_signature(r.ebx, r.edx, r.ecx)
}

/// Reads the hypervisor leaves from `cpu`.
pub fn probe(cpu: &impl CpuidSource) -> Probe {
    if cpu.leaf(1).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return Probe::NoHypervisor;
    }
    let mut other = None;
    for base in leaves::hypervisor_cpuid_bases() {
        let sig = cpu.leaf(base);
        if leaves::is_kvm_signature(sig.ebx, sig.ecx, sig.edx) {
            let max_leaf = leaves::max_kvm_leaf(base, sig.eax);
            let features_leaf = leaves::features_leaf(base);
            let (features, hints) = if max_leaf >= features_leaf {
                let f = cpu.leaf(features_leaf);
                (f.eax, f.edx)
            } else {
                (0, 0)
            };
            return Probe::Kvm(KvmInterface {
                base,
                max_leaf,
                features: Features(features),
                hints: Hints(hints),
            });
        }
        let signature = leaves::decode_signature(sig.ebx, sig.ecx, sig.edx);
        if other.is_none() && signature.iter().any(|&b| b != 0) {
            other = Some(OtherHypervisor { base, signature });
        }
    }
    match other {
        Some(o) => Probe::OtherHypervisor(o),
        None => Probe::NoHypervisor,
    }
}

/// Writes a signature as text, stopping at the first NUL, with any byte
/// that is not printable ASCII as `?` (the hypervisor is not trusted).
fn write_signature(f: &mut fmt::Formatter<'_>, signature: &[u8; 12]) -> fmt::Result {
    for &b in signature.iter().take_while(|&&b| b != 0) {
        let c = if b.is_ascii_graphic() { b as char } else { '?' };
        write!(f, "{}", c)?;
    }
    Ok(())
}

impl fmt::Display for KvmInterface {
    /// The same `key=value` form that the `pvrs-cpuid` guest tool prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signature=")?;
        write_signature(f, &leaves::KVM_SIGNATURE)?;
        write!(
            f,
            " base={:#010x} max_leaf={:#010x} features={:#010x} hints={:#010x} names=",
            self.base, self.max_leaf, self.features.0, self.hints.0
        )?;
        let mut any = false;
        for name in self.features.names() {
            write!(f, "{}{}", if any { "," } else { "" }, name)?;
            any = true;
        }
        if !any {
            f.write_str("-")?;
        }
        if self.features.unknown_bits() != 0 {
            write!(
                f,
                " unknown_features={:#010x}",
                self.features.unknown_bits()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for OtherHypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signature=")?;
        write_signature(f, &self.signature)?;
        write!(f, " base={:#010x}", self.base)
    }
}
