//! The hypervisor CPUID leaves as user space sees them.
//!
//! This reads the leaves with the CPUID instruction directly, independently
//! of the pvrs kernel code, so that tests can compare what the kernel module
//! reports with what the CPU (the hypervisor) really answers. The search for
//! the hypervisor base follows Documentation/virt/kvm/x86/cpuid.rst: the
//! KVM leaves may sit at 0x40000000 or, when another hypervisor interface is
//! offered first, at a later multiple of 0x100.

use core::arch::x86_64::__cpuid;

/// CPUID.1:ECX bit 31: the CPU runs under a hypervisor.
const HYPERVISOR_PRESENT_BIT: u32 = 1 << 31;

/// What the hypervisor leaves say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorLeaves {
    /// The leaf where the signature was found.
    pub base: u32,
    /// The 12-byte vendor signature, e.g. `KVMKVMKVM\0\0\0`.
    pub signature: [u8; 12],
    /// EAX of the signature leaf: the highest hypervisor leaf.
    pub max_leaf: u32,
    /// EAX of base + 1 (KVM_CPUID_FEATURES), 0 when that leaf is absent.
    pub features: u32,
    /// EDX of base + 1 (the KVM hints), 0 when that leaf is absent.
    pub hints: u32,
}

impl HypervisorLeaves {
    /// The signature as text, without trailing NULs.
    pub fn signature_text(&self) -> String {
        String::from_utf8_lossy(&self.signature)
            .trim_end_matches('\0')
            .to_string()
    }

    /// True when this is the KVM interface.
    pub fn is_kvm(&self) -> bool {
        self.signature == pvrs_abi::cpuid::KVM_SIGNATURE
    }
}

/// True when CPUID.1 says a hypervisor is present.
pub fn hypervisor_present() -> bool {
    __cpuid(1).ecx & HYPERVISOR_PRESENT_BIT != 0
}

fn signature_at(leaf: u32) -> ([u8; 12], u32) {
    let r = __cpuid(leaf);
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
    (sig, r.eax)
}

/// The KVM leaves if present, else the first hypervisor leaves found.
pub fn read_hypervisor_leaves() -> Option<HypervisorLeaves> {
    if !hypervisor_present() {
        return None;
    }
    let mut first = None;
    let mut base = 0x4000_0000u32;
    while base < 0x4001_0000 {
        let (signature, max_leaf) = signature_at(base);
        if signature == pvrs_abi::cpuid::KVM_SIGNATURE {
            // The features leaf exists when the signature leaf says so; KVM
            // once reported 0 there, which means "base + 1 exists".
            let has_features = max_leaf == 0 || max_leaf > base;
            let (features, hints) = if has_features {
                let r = __cpuid(base + 1);
                (r.eax, r.edx)
            } else {
                (0, 0)
            };
            return Some(HypervisorLeaves {
                base,
                signature,
                max_leaf,
                features,
                hints,
            });
        }
        if first.is_none() && signature.iter().any(|&b| b != 0) {
            first = Some(HypervisorLeaves {
                base,
                signature,
                max_leaf,
                features: 0,
                hints: 0,
            });
        }
        base += 0x100;
    }
    first
}
