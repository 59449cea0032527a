//! The CPUID table each vCPU gets: what KVM supports
//! (`KVM_GET_SUPPORTED_CPUID`), with the per-vCPU topology filled in and the
//! KVM paravirtual leaves made explicit.
//!
//! The KVM leaves follow `Documentation/virt/kvm/x86/cpuid.rst`, through the
//! constants of `pvrs-abi`: the signature leaf `0x4000_0000` says
//! "KVMKVMKVM" and names the highest KVM leaf; the features leaf
//! `0x4000_0001` carries exactly the `KVM_FEATURE_*` bits KVM reported as
//! supported (kvmclock, steal time, PV EOI, ...), since all of them are
//! implemented inside KVM and need nothing from the VMM. The hints register
//! stays zero: vCPUs are ordinary threads, not dedicated CPUs, so
//! `KVM_HINTS_REALTIME` would be a lie.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use pvrs_abi::cpuid::{
    Features, KVM_CPUID_FEATURES, KVM_CPUID_SIGNATURE, KVM_SIGNATURE_EBX, KVM_SIGNATURE_ECX,
    KVM_SIGNATURE_EDX,
};

/// Leaf 1 ecx: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 edx: the "HTT" bit, meaning ebx[23:16] counts logical CPUs.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb / 0x1f level types (ecx[15:8]).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// What the VM offers in the KVM features leaf, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvLeaves {
    /// The eax of the signature leaf (the highest KVM leaf).
    pub max_leaf: u32,
    /// The `KVM_FEATURE_*` bits offered.
    pub features: Features,
}

/// Makes sure the KVM signature and features leaves are present and well
/// formed. Returns what they offer.
pub fn fix_kvm_leaves(entries: &mut Vec<kvm_cpuid_entry2>) -> PvLeaves {
    let features = entries
        .iter()
        .find(|e| e.function == KVM_CPUID_FEATURES)
        .map_or(0, |e| e.eax);
    let mut max_leaf = KVM_CPUID_FEATURES;
    match entries
        .iter_mut()
        .find(|e| e.function == KVM_CPUID_SIGNATURE)
    {
        Some(sig) => {
            max_leaf =
                pvrs_abi::cpuid::max_kvm_leaf(KVM_CPUID_SIGNATURE, sig.eax).max(KVM_CPUID_FEATURES);
            sig.eax = max_leaf;
            sig.ebx = KVM_SIGNATURE_EBX;
            sig.ecx = KVM_SIGNATURE_ECX;
            sig.edx = KVM_SIGNATURE_EDX;
        }
        None => entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_SIGNATURE,
            eax: max_leaf,
            ebx: KVM_SIGNATURE_EBX,
            ecx: KVM_SIGNATURE_ECX,
            edx: KVM_SIGNATURE_EDX,
            ..Default::default()
        }),
    }
    match entries
        .iter_mut()
        .find(|e| e.function == KVM_CPUID_FEATURES)
    {
        Some(f) => {
            f.ebx = 0;
            f.ecx = 0;
            f.edx = 0;
        }
        None => entries.push(kvm_cpuid_entry2 {
            function: KVM_CPUID_FEATURES,
            eax: features,
            ..Default::default()
        }),
    }
    PvLeaves {
        max_leaf,
        features: Features(features),
    }
}

/// The number of bits needed to number `n` items (ceil(log2 n)).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Fills in what differs between vCPUs: the initial APIC ID in leaf 1 and
/// the x2APIC ID and topology in leaves 0xb and 0x1f (one socket with
/// `cpu_count` single-threaded cores), and sets the hypervisor bit.
pub fn set_vcpu_topology(entries: &mut [kvm_cpuid_entry2], cpu_index: u8, cpu_count: u8) {
    let apic_id = u32::from(cpu_index);
    let count = u32::from(cpu_count.max(1));
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.min(255) << 16);
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                }
                e.ecx |= LEAF1_ECX_HYPERVISOR;
            }
            0xb | 0x1f => {
                e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.edx = apic_id;
                let (eax, ebx, level_type) = match e.index {
                    0 => (0, 1, LEVEL_TYPE_SMT),
                    1 => (bits_for(count), count, LEVEL_TYPE_CORE),
                    _ => (0, 0, 0),
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (level_type << 8) | (e.index & 0xff);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvrs_abi::cpuid::{feature_mask, is_kvm_signature, KVM_FEATURE_CLOCKSOURCE2};

    fn leaf(function: u32, index: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ..Default::default()
        }
    }

    #[test]
    fn kvm_leaves_keep_supported_features() {
        let feats = feature_mask(KVM_FEATURE_CLOCKSOURCE2) | 1 << 24;
        let mut e = vec![
            leaf(0x4000_0000, 0, 0x4000_0001),
            leaf(0x4000_0001, 0, feats),
        ];
        e[1].edx = 1; // a realtime hint must not leak through
        let pv = fix_kvm_leaves(&mut e);
        assert_eq!(pv.features, Features(feats));
        assert!(pv.features.has(KVM_FEATURE_CLOCKSOURCE2));
        assert!(is_kvm_signature(e[0].ebx, e[0].ecx, e[0].edx));
        assert_eq!(e[0].eax, 0x4000_0001);
        assert_eq!(e[1].edx, 0);
    }

    #[test]
    fn kvm_leaves_are_added_when_missing() {
        let mut e = vec![leaf(0, 0, 0xd)];
        let pv = fix_kvm_leaves(&mut e);
        assert_eq!(pv.features, Features(0));
        let sig = e.iter().find(|x| x.function == 0x4000_0000).unwrap();
        assert!(is_kvm_signature(sig.ebx, sig.ecx, sig.edx));
        assert!(e.iter().any(|x| x.function == 0x4000_0001));
    }

    #[test]
    fn old_style_zero_max_leaf_is_fixed() {
        let mut e = vec![leaf(0x4000_0000, 0, 0)];
        assert_eq!(fix_kvm_leaves(&mut e).max_leaf, 0x4000_0001);
        assert_eq!(e[0].eax, 0x4000_0001);
    }

    #[test]
    fn topology_per_vcpu() {
        let mut e = vec![
            leaf(1, 0, 0),
            leaf(0xb, 0, 0),
            leaf(0xb, 1, 0),
            leaf(0xb, 2, 0),
        ];
        e[0].ebx = 0xff00_0800; // stale APIC ID, CLFLUSH size 8
        set_vcpu_topology(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert!(e[1..].iter().all(|x| x.edx == 3));
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx), (0, 1, 0x100));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx), (2, 4, 0x201));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx), (0, 0, 2));
    }

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
    }
}
