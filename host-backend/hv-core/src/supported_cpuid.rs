//! KVM_GET_SUPPORTED_CPUID (Linux `Documentation/virt/kvm/api.rst` 4.46):
//! the CPUID leaves and bits pvrs-kvm can give a guest, derived from the
//! host's CPUID.
//!
//! A bit is listed only if the guest really gets the feature: the
//! hardware runs it without an intercept we would have to emulate, or
//! this backend emulates it.  That is why the list is an allow-list per
//! register, built from what SVM with nested paging passes through (AMD
//! APM vol. 2 15.9-15.13: CPUID, MSR and instruction intercepts) and what
//! `msr.rs` and the exit handler implement, not the host's CPUID with a
//! few bits removed.  Left out, with the reason:
//! - MCE/MCA, MTRR: their MSRs (MCG_*, MTRRcap and the variable ranges)
//!   are not emulated; a guest that saw the bits would read them and #GP.
//! - MONITOR/MWAIT: intercepted and not emulated.
//! - SVM: no nested virtualization.
//! - PKU/OSPKE and XCR0.PKRU: PKRU is not switched between host and guest.
//! - XSAVES and the supervisor XSAVE states: IA32_XSS is not emulated.
//! - RDPID: it reads TSC_AUX without an intercept, and TSC_AUX holds the
//!   host's value while the guest runs (RDTSCP is intercepted and
//!   emulated, so it is listed).
//! - x2APIC, TSC-deadline and the APIC bit wait for the in-kernel LAPIC:
//!   [`SupportedCpuidConfig::lapic`] turns them on.
//! - Dynamic bits (OSXSAVE, OSPKE, the APIC id in leaf 1 EBX) are zero;
//!   the guest's CR4 and KVM_SET_CPUID2 provide them.
//!
//! Leaf 0x4000_0000 carries the KVM signature "KVMKVMKVM" with 0x4000_0001
//! as the highest leaf; 0x4000_0001 lists the paravirtual features the
//! backend implements ([`SupportedCpuidConfig::kvm_features`]).

use crate::cpuid::{CpuidEntry, CpuidResult, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// What the backend implements beyond the hardware, which decides some
/// bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupportedCpuidConfig {
    /// The in-kernel LAPIC exists (APIC, x2APIC, TSC-deadline timer).
    pub lapic: bool,
    /// CPUID 0x4000_0001 EAX: the `KVM_FEATURE_*` bits implemented.
    pub kvm_features: u32,
    /// The XCR0 bits the host kernel enabled (XGETBV(0) on the host); the
    /// guest may enable their intersection with the states listed here.
    pub host_xcr0: u64,
}

/// KVM_GET_SUPPORTED_CPUID needs more entries than the caller offered
/// (E2BIG; the caller reports the count it needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooSmall {
    /// The entries the full list needs.
    pub needed: usize,
}

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// Leaf 1 EDX: FPU VME DE PSE TSC MSR PAE CX8 SEP PGE CMOV PAT PSE36
/// CLFLUSH MMX FXSR SSE SSE2 (APIC with the LAPIC).
const LEAF1_EDX: u32 = bits(&[0, 1, 2, 3, 4, 5, 6, 8, 11, 13, 15, 16, 17, 19, 23, 24, 25, 26]);
const LEAF1_EDX_APIC: u32 = 1 << 9;
/// Leaf 1 ECX: SSE3 PCLMULQDQ SSSE3 FMA CX16 PCID SSE4.1 SSE4.2 MOVBE
/// POPCNT AES XSAVE AVX F16C RDRAND.
const LEAF1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 17, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 7.0 EBX: FSGSBASE BMI1 AVX2 SMEP BMI2 ERMS INVPCID RDSEED ADX SMAP
/// CLFLUSHOPT CLWB SHA.
const LEAF7_EBX: u32 = bits(&[0, 3, 5, 7, 8, 9, 10, 18, 19, 20, 23, 24, 29]);
/// Leaf 7.0 ECX: VAES VPCLMULQDQ.
const LEAF7_ECX: u32 = bits(&[9, 10]);
/// Leaf 7.0 EDX: FSRM.
const LEAF7_EDX: u32 = bits(&[4]);
/// Leaf 0xD.1 EAX: XSAVEOPT XSAVEC XGETBV1 (not XSAVES).
const LEAF_D1_EAX: u32 = bits(&[0, 1, 2]);
/// Leaf 0x8000_0001 ECX: LAHF/SAHF, CR8_LEGACY, ABM, SSE4A, MISALIGNSSE,
/// 3DNOWPREFETCH, FMA4, TBM.
const EXT1_ECX: u32 = bits(&[0, 4, 5, 6, 7, 8, 16, 21]);
/// Leaf 0x8000_0001 EDX: the leaf 1 EDX bits AMD mirrors, SYSCALL, NX,
/// MMXEXT, FXSR_OPT, 1 GiB pages, RDTSCP, LM.
const EXT1_EDX: u32 = (LEAF1_EDX & bits(&[0, 1, 2, 3, 4, 5, 6, 8, 13, 15, 16, 17, 23, 24]))
    | bits(&[11, 20, 22, 25, 26, 27, 29]);
/// XCR0 states a guest may enable: x87, SSE, AVX, and the AVX-512 trio.
const GUEST_XCR0: u64 = 0b1110_0111;

/// The XCR0 bits a guest may set on a host whose kernel enabled
/// `host_xcr0` (KVM_SET_XCRS, and what leaf 0xD lists).
pub fn guest_xcr0(host_xcr0: u64) -> u64 {
    host_xcr0 & GUEST_XCR0
}

/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// The KVM paravirtual CPUID leaves' base.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// The leaf of `KVM_FEATURE_*` bits.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// Fills `out` with the supported CPUID entries, asking `host` for the
/// host's (leaf, subleaf), and returns how many it wrote.
pub fn supported_cpuid(
    host: &dyn Fn(u32, u32) -> CpuidResult,
    config: &SupportedCpuidConfig,
    out: &mut [CpuidEntry],
) -> Result<usize, TooSmall> {
    let mut list = EntryList { out, len: 0, needed: 0 };
    let max_basic = host(0, 0).eax.min(0xd);
    let vendor = host(0, 0);
    list.push(0, 0, false, CpuidResult { eax: max_basic, ..vendor });
    if max_basic >= 1 {
        let leaf = host(1, 0);
        let mut edx = leaf.edx & LEAF1_EDX;
        let mut ecx = (leaf.ecx & LEAF1_ECX) | LEAF1_ECX_HYPERVISOR;
        if config.lapic {
            edx |= LEAF1_EDX_APIC;
            // Both are emulated by the LAPIC, whatever the host has.
            ecx |= LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE;
        }
        // EBX: brand index, CLFLUSH line size and logical processor count
        // from the host; the initial APIC id (31:24) is the VMM's to set.
        let ebx = leaf.ebx & 0x00ff_ffff;
        list.push(1, 0, false, CpuidResult { eax: leaf.eax, ebx, ecx, edx });
    }
    if max_basic >= 7 {
        let leaf = host(7, 0);
        let result = CpuidResult {
            eax: 0,
            ebx: leaf.ebx & LEAF7_EBX,
            ecx: leaf.ecx & LEAF7_ECX,
            edx: leaf.edx & LEAF7_EDX,
        };
        list.push(7, 0, true, result);
    }
    if max_basic >= 0xd && host(1, 0).ecx & (1 << 26) != 0 {
        push_xsave_leaves(&mut list, host, guest_xcr0(config.host_xcr0));
    }
    list.push(
        KVM_CPUID_SIGNATURE,
        0,
        false,
        CpuidResult {
            eax: KVM_CPUID_FEATURES,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
        },
    );
    list.push(
        KVM_CPUID_FEATURES,
        0,
        false,
        CpuidResult { eax: config.kvm_features, ..CpuidResult::default() },
    );
    let max_extended = host(0x8000_0000, 0).eax.min(0x8000_0008);
    if max_extended >= 0x8000_0000 {
        let leaf = host(0x8000_0000, 0);
        list.push(0x8000_0000, 0, false, CpuidResult { eax: max_extended, ..leaf });
    }
    for function in 0x8000_0001..=max_extended {
        let leaf = host(function, 0);
        let result = match function {
            0x8000_0001 => CpuidResult {
                eax: leaf.eax,
                ebx: 0,
                ecx: leaf.ecx & EXT1_ECX,
                edx: leaf.edx & EXT1_EDX,
            },
            // The brand string and the cache and TLB descriptions.
            0x8000_0002..=0x8000_0006 => leaf,
            // Address sizes (physical 7:0, virtual 15:8); no core count,
            // no extended features.
            0x8000_0008 => CpuidResult { eax: leaf.eax & 0xffff, ..CpuidResult::default() },
            // 0x8000_0007 (power management, invariant TSC): not promised.
            _ => CpuidResult::default(),
        };
        list.push(function, 0, false, result);
    }
    if list.needed > list.len {
        return Err(TooSmall { needed: list.needed });
    }
    Ok(list.len)
}

/// Leaf 0xD: subleaf 0 (the user states and the size they need), 1 (the
/// XSAVE instruction variants) and one per enabled state above SSE (its
/// size and offset, from the host).
fn push_xsave_leaves(list: &mut EntryList<'_>, host: &dyn Fn(u32, u32) -> CpuidResult, xcr0: u64) {
    // The standard-format size of the enabled states: the end of the
    // highest one, at least the legacy area and header (576 bytes).
    let mut size = 576u32;
    for state in 2..64u32 {
        if xcr0 & (1 << state) != 0 {
            let leaf = host(0xd, state);
            size = size.max(leaf.ebx.saturating_add(leaf.eax));
        }
    }
    let leaf0 = CpuidResult { eax: xcr0 as u32, ebx: size, ecx: size, edx: (xcr0 >> 32) as u32 };
    list.push(0xd, 0, true, leaf0);
    let leaf1 = host(0xd, 1);
    list.push(0xd, 1, true, CpuidResult { eax: leaf1.eax & LEAF_D1_EAX, ..CpuidResult::default() });
    for state in 2..64u32 {
        if xcr0 & (1 << state) != 0 {
            let leaf = host(0xd, state);
            // EAX size, EBX offset; ECX bit 0 (supervisor) is clear for
            // user states, bit 1 (64-byte alignment in compacted form) kept.
            let result = CpuidResult { eax: leaf.eax, ebx: leaf.ebx, ecx: leaf.ecx & 2, edx: 0 };
            list.push(0xd, state, true, result);
        }
    }
}

/// The output array, counting what did not fit.
struct EntryList<'a> {
    out: &'a mut [CpuidEntry],
    len: usize,
    needed: usize,
}

impl EntryList<'_> {
    fn push(&mut self, function: u32, index: u32, indexed: bool, result: CpuidResult) {
        self.needed += 1;
        if let Some(slot) = self.out.get_mut(self.len) {
            *slot = CpuidEntry {
                function,
                index,
                flags: if indexed { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
                eax: result.eax,
                ebx: result.ebx,
                ecx: result.ecx,
                edx: result.edx,
            };
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests;
