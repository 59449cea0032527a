use super::*;

/// A host like QEMU TCG's `-cpu max` (AuthenticAMD): every feature bit set,
/// so that the allow-lists alone decide; XSAVE states with real sizes.
fn host(leaf: u32, subleaf: u32) -> CpuidResult {
    let all = CpuidResult { eax: !0, ebx: !0, ecx: !0, edx: !0 };
    match (leaf, subleaf) {
        (0, _) => CpuidResult { eax: 0x1f, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65 },
        (1, _) => CpuidResult { eax: 0x00a0_0f11, ebx: 0x0302_0800, ..all },
        (0xd, 2) => CpuidResult { eax: 256, ebx: 576, ecx: 0, edx: 0 },
        (0xd, 5) => CpuidResult { eax: 64, ebx: 1088, ecx: 0, edx: 0 },
        (0xd, 6) => CpuidResult { eax: 512, ebx: 1152, ecx: 0, edx: 0 },
        (0xd, 7) => CpuidResult { eax: 1024, ebx: 1664, ecx: 0, edx: 0 },
        (0xd, 9) => CpuidResult { eax: 8, ebx: 2688, ecx: 0, edx: 0 },
        (0x8000_0000, _) => CpuidResult { eax: 0x8000_0021, ..host(0, 0) },
        (0x8000_0008, _) => CpuidResult { eax: 0x3030, ..all },
        _ => all,
    }
}

fn find(entries: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
    *entries
        .iter()
        .find(|e| e.function == function && e.index == index)
        .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
}

fn list(config: &SupportedCpuidConfig) -> std::vec::Vec<CpuidEntry> {
    let mut out = [CpuidEntry::default(); 64];
    let n = supported_cpuid(&host, config, &mut out).unwrap();
    out[..n].to_vec()
}

const AVX_HOST: SupportedCpuidConfig =
    SupportedCpuidConfig { lapic: false, kvm_features: 0, host_xcr0: 0x2e7 };

#[test]
fn only_what_the_guest_really_gets_is_listed() {
    let entries = list(&AVX_HOST);
    let leaf1 = find(&entries, 1, 0);
    assert_ne!(leaf1.ecx & LEAF1_ECX_HYPERVISOR, 0);
    // No LAPIC yet: no APIC, x2APIC or TSC-deadline.
    assert_eq!(leaf1.edx & LEAF1_EDX_APIC, 0);
    assert_eq!(leaf1.ecx & (LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE), 0);
    // MCE (7), MTRR (12), MCA (14) and MONITOR (ECX 3), OSXSAVE (ECX 27).
    assert_eq!(leaf1.edx & ((1 << 7) | (1 << 12) | (1 << 14)), 0);
    assert_eq!(leaf1.ecx & ((1 << 3) | (1 << 27)), 0);
    assert_eq!(leaf1.ebx >> 24, 0, "the APIC id is the VMM's");
    // SVM (ECX 2) is not offered; PKU/OSPKE (leaf 7 ECX 3, 4) neither.
    assert_eq!(find(&entries, 0x8000_0001, 0).ecx & (1 << 2), 0);
    assert_eq!(find(&entries, 7, 0).ecx & (0b11 << 3), 0);
    assert_eq!(find(&entries, 7, 0).flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    // LM, NX and SYSCALL are.
    assert_eq!(find(&entries, 0x8000_0001, 0).edx & bits(&[11, 20, 29]), bits(&[11, 20, 29]));
    assert_eq!(find(&entries, 0, 0).eax, 0xd);
    assert_eq!(find(&entries, 0x8000_0000, 0).eax, 0x8000_0008);
    assert_eq!(find(&entries, 0x8000_0008, 0).eax, 0x3030);
}

#[test]
fn the_lapic_brings_its_bits() {
    let entries = list(&SupportedCpuidConfig { lapic: true, ..AVX_HOST });
    let leaf1 = find(&entries, 1, 0);
    assert_ne!(leaf1.edx & LEAF1_EDX_APIC, 0);
    assert_ne!(leaf1.ecx & LEAF1_ECX_X2APIC, 0);
    assert_ne!(leaf1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
}

#[test]
fn kvm_leaves_carry_the_signature_and_the_implemented_features() {
    let entries = list(&SupportedCpuidConfig { kvm_features: 0x5, ..AVX_HOST });
    let sig = find(&entries, KVM_CPUID_SIGNATURE, 0);
    let text: std::vec::Vec<u8> =
        [sig.ebx, sig.ecx, sig.edx].iter().flat_map(|r| r.to_le_bytes()).collect();
    assert_eq!(&text, b"KVMKVMKVM\0\0\0");
    assert_eq!(sig.eax, KVM_CPUID_FEATURES);
    assert_eq!(find(&entries, KVM_CPUID_FEATURES, 0).eax, 0x5);
}

#[test]
fn xsave_lists_the_user_states_without_pkru() {
    // The host enabled x87, SSE, AVX, the AVX-512 trio and PKRU (bit 9).
    let entries = list(&SupportedCpuidConfig { host_xcr0: 0x2e7, ..AVX_HOST });
    let leaf0 = find(&entries, 0xd, 0);
    assert_eq!(leaf0.eax, 0xe7);
    assert_eq!(leaf0.edx, 0);
    assert_eq!(leaf0.ebx, 1664 + 1024, "the end of the highest state (Hi16_ZMM)");
    assert_eq!(find(&entries, 0xd, 1).eax, LEAF_D1_EAX);
    assert_eq!(find(&entries, 0xd, 2).eax, 256);
    assert!(!entries.iter().any(|e| e.function == 0xd && e.index == 9));
    // Only x87/SSE/AVX enabled on the host: the size is the AVX state's end.
    let entries = list(&SupportedCpuidConfig { host_xcr0: 0x7, ..AVX_HOST });
    assert_eq!(find(&entries, 0xd, 0).ebx, 832);
    assert!(!entries.iter().any(|e| e.function == 0xd && e.index == 5));
}

#[test]
fn a_short_array_is_too_small_with_the_count_needed() {
    let full = list(&AVX_HOST).len();
    let mut out = [CpuidEntry::default(); 3];
    assert_eq!(supported_cpuid(&host, &AVX_HOST, &mut out), Err(TooSmall { needed: full }));
    let mut exact = std::vec![CpuidEntry::default(); full];
    assert_eq!(supported_cpuid(&host, &AVX_HOST, &mut exact), Ok(full));
}

#[test]
fn a_host_with_few_leaves_gets_few_entries() {
    let tiny = |leaf: u32, _: u32| match leaf {
        0 => CpuidResult { eax: 1, ..CpuidResult::default() },
        0x8000_0000 => CpuidResult { eax: 0x8000_0001, ..CpuidResult::default() },
        _ => CpuidResult::default(),
    };
    let mut out = [CpuidEntry::default(); 16];
    let n = supported_cpuid(&tiny, &AVX_HOST, &mut out).unwrap();
    let functions: std::vec::Vec<u32> = out[..n].iter().map(|e| e.function).collect();
    assert_eq!(functions, [0, 1, KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES, 0x8000_0000, 0x8000_0001]);
}
