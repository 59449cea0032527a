//! The guest's CPUID table: KVM_SET_CPUID2 entries, and CPUID emulation
//! with KVM's lookup rules.
//!
//! Rules (Linux 6.12 `arch/x86/kvm/cpuid.c`; `Documentation/virt/kvm/
//! api.rst` 4.73 KVM_SET_CPUID2):
//! - An entry matches a query if the function matches and either its
//!   `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` flag is clear or its index equals
//!   the query's; the first such entry wins (`cpuid_entry2_find`).
//! - No match: for an Intel-compatible guest vendor (anything but
//!   AuthenticAMD and HygonGenuine), a function above its class's maximum
//!   (CPUID.0, 0x4000_0000-style sub-class, 0x8000_0000 or 0xc000_0000
//!   EAX), or in a class that does not exist, is answered from the
//!   highest basic leaf, with the original index
//!   (`get_out_of_range_cpuid_entry`).  AMD returns zeros for any
//!   undefined leaf, so for an AMD guest nothing is redirected.
//! - Still nothing: all zeros, except that for leaves 0xB and 0x1F, if
//!   subleaf 1 exists, ECX echoes the index's low byte and EDX (the x2APIC
//!   ID) comes from subleaf 1 (`kvm_cpuid`).
//! - KVM_SET_CPUID2 takes at most `KVM_MAX_CPUID_ENTRIES` (256) entries
//!   (E2BIG), and refuses a 0x8000_0008 virtual-address width other than
//!   48 or 57 (EINVAL, `kvm_check_cpuid`).
//!
//! The table has a fixed capacity `N` (at most 256 is useful).

pinned_constants! {
    /// Pinned to uapi/asm/kvm.h and asm/kvm_host.h by the header test.
    table CPUID_CONSTANTS;

    /// `kvm_cpuid_entry2.flags`: the index (subleaf) selects the entry
    /// (Linux's spelling of "significant").
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1 << 0;
    /// The most entries KVM_SET_CPUID2 accepts.
    KVM_MAX_CPUID_ENTRIES: usize = 256;
}

/// One entry (the fields of `struct kvm_cpuid_entry2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// The leaf (EAX input).
    pub function: u32,
    /// The subleaf (ECX input); compared only with [`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`].
    pub index: u32,
    /// `KVM_CPUID_FLAG_*` bits.
    pub flags: u32,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// The four output registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// Why KVM_SET_CPUID2 is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidError {
    /// E2BIG: more entries than `KVM_MAX_CPUID_ENTRIES` or than the
    /// table's capacity.
    TooManyEntries(usize),
    /// EINVAL: CPUID 0x8000_0008 EAX\[15:8\] is neither 0, 48 nor 57.
    VirtualAddressBits(u32),
}

impl CpuidError {
    /// The positive errno value.
    pub fn errno(&self) -> i32 {
        match self {
            CpuidError::TooManyEntries(_) => 7,
            CpuidError::VirtualAddressBits(_) => 22,
        }
    }
}

/// "AuthenticAMD" and "HygonGenuine" in CPUID.0 EBX, EDX, ECX.
const AMD_VENDOR: [u32; 3] = [0x6874_7541, 0x6974_6e65, 0x444d_4163];
const HYGON_VENDOR: [u32; 3] = [0x6f67_7948, 0x6e65_476e, 0x656e_6975];

/// The guest's CPUID entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidTable<const N: usize> {
    entries: [CpuidEntry; N],
    len: usize,
}

impl<const N: usize> Default for CpuidTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CpuidTable<N> {
    /// An empty table: every CPUID returns zeros.
    pub const fn new() -> Self {
        Self {
            entries: [CpuidEntry {
                function: 0,
                index: 0,
                flags: 0,
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }; N],
            len: 0,
        }
    }

    /// The entries in use.
    pub fn entries(&self) -> &[CpuidEntry] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// KVM_SET_CPUID2: replaces the table, or leaves it unchanged on error.
    pub fn set(&mut self, entries: &[CpuidEntry]) -> Result<(), CpuidError> {
        if entries.len() > KVM_MAX_CPUID_ENTRIES || entries.len() > N {
            return Err(CpuidError::TooManyEntries(entries.len()));
        }
        if let Some(leaf) = find_in(entries, 0x8000_0008, None) {
            let bits = (leaf.eax >> 8) & 0xff;
            if !matches!(bits, 0 | 48 | 57) {
                return Err(CpuidError::VirtualAddressBits(bits));
            }
        }
        for (slot, entry) in self.entries.iter_mut().zip(entries) {
            *slot = *entry;
        }
        self.len = entries.len();
        Ok(())
    }

    /// The first entry for `function` matching `index` (KVM's
    /// `kvm_find_cpuid_entry_index`); `None` as index means "any", for
    /// leaves the caller knows are not indexed.
    pub fn find(&self, function: u32, index: Option<u32>) -> Option<&CpuidEntry> {
        find_in(self.entries(), function, index)
    }

    fn guest_is_amd_like(&self) -> bool {
        self.find(0, None).is_some_and(|basic| {
            let vendor = [basic.ebx, basic.edx, basic.ecx];
            vendor == AMD_VENDOR || vendor == HYGON_VENDOR
        })
    }

    /// The entry to answer an out-of-range query from
    /// (`get_out_of_range_cpuid_entry`).
    fn out_of_range_entry(&self, function: u32, index: u32) -> Option<&CpuidEntry> {
        let basic = self.find(0, None)?;
        if self.guest_is_amd_like() {
            return None;
        }
        let class_base = match function {
            0x4000_0000..=0x4fff_ffff => function & 0xffff_ff00,
            0xc000_0000.. => 0xc000_0000,
            _ => function & 0x8000_0000,
        };
        if self
            .find(class_base, None)
            .is_some_and(|class| function <= class.eax)
        {
            return None;
        }
        // The original index is kept, as KVM does.
        self.find(basic.eax, Some(index))
    }

    /// The guest's CPUID(`function`, `index`) (`kvm_cpuid`).
    pub fn query(&self, function: u32, index: u32) -> CpuidResult {
        let found = self
            .find(function, Some(index))
            .or_else(|| self.out_of_range_entry(function, index));
        if let Some(entry) = found {
            return CpuidResult {
                eax: entry.eax,
                ebx: entry.ebx,
                ecx: entry.ecx,
                edx: entry.edx,
            };
        }
        let mut result = CpuidResult::default();
        if function == 0xb || function == 0x1f {
            if let Some(subleaf_one) = self.find(function, Some(1)) {
                result.ecx = index & 0xff;
                result.edx = subleaf_one.edx;
            }
        }
        result
    }
}

fn find_in(entries: &[CpuidEntry], function: u32, index: Option<u32>) -> Option<&CpuidEntry> {
    entries.iter().find(|entry| {
        entry.function == function
            && match index {
                None => true,
                Some(index) => {
                    entry.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || entry.index == index
                }
            }
    })
}

impl From<&crate::kvm_api::layout::kvm_cpuid_entry2> for CpuidEntry {
    /// A KVM_SET_CPUID2 entry as the table keeps it (the padding dropped).
    fn from(entry: &crate::kvm_api::layout::kvm_cpuid_entry2) -> Self {
        Self {
            function: entry.function,
            index: entry.index,
            flags: entry.flags,
            eax: entry.eax,
            ebx: entry.ebx,
            ecx: entry.ecx,
            edx: entry.edx,
        }
    }
}

impl From<&CpuidEntry> for crate::kvm_api::layout::kvm_cpuid_entry2 {
    /// An entry of a KVM_GET_SUPPORTED_CPUID or KVM_GET_CPUID2 answer
    /// (zero padding, as KVM writes it).
    fn from(entry: &CpuidEntry) -> Self {
        Self {
            function: entry.function,
            index: entry.index,
            flags: entry.flags,
            eax: entry.eax,
            ebx: entry.ebx,
            ecx: entry.ecx,
            edx: entry.edx,
            padding: [0; 3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index: 0,
            flags: 0,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn subleaf(function: u32, index: u32, eax: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax,
            ebx: 0,
            ecx: 0,
            edx,
        }
    }

    const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];

    fn basic(max_leaf: u32, vendor: [u32; 3]) -> CpuidEntry {
        leaf(0, max_leaf, vendor[0], vendor[2], vendor[1])
    }

    fn table(entries: &[CpuidEntry]) -> CpuidTable<16> {
        let mut table = CpuidTable::new();
        table.set(entries).unwrap();
        table
    }

    #[test]
    fn amd_vendor_constant_spells_authentic_amd() {
        let bytes: std::vec::Vec<u8> = AMD_VENDOR.iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&bytes, b"AuthenticAMD");
        let bytes: std::vec::Vec<u8> = HYGON_VENDOR.iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&bytes, b"HygonGenuine");
        let bytes: std::vec::Vec<u8> = INTEL.iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&bytes, b"GenuineIntel");
    }

    #[test]
    fn exact_and_indexed_lookup() {
        let table = table(&[
            basic(0xd, INTEL),
            leaf(1, 0x806f8, 0, 0, 0),
            subleaf(7, 0, 1, 0),
            subleaf(7, 1, 0x10, 0),
        ]);
        assert_eq!(
            table.query(1, 99).eax,
            0x806f8,
            "index ignored when not significant"
        );
        assert_eq!(table.query(7, 0).eax, 1);
        assert_eq!(table.query(7, 1).eax, 0x10);
        assert_eq!(table.find(7, None).unwrap().index, 0);
    }

    #[test]
    fn intel_out_of_range_uses_the_highest_basic_leaf_with_the_index() {
        let table = table(&[
            basic(0xd, INTEL),
            subleaf(0xd, 0, 0x207, 0),
            subleaf(0xd, 1, 0xf, 0),
            leaf(0x8000_0000, 0x8000_0008, 0, 0, 0),
        ]);
        // Basic class, above CPUID.0 EAX.
        assert_eq!(table.query(0x14, 1).eax, 0xf);
        // Extended class, above its maximum.
        assert_eq!(table.query(0x8000_001f, 0).eax, 0x207);
        // In range but missing: zeros, no redirect.
        assert_eq!(table.query(0x8000_0005, 0), CpuidResult::default());
        // A hypervisor sub-class that does not exist: redirected.
        assert_eq!(table.query(0x4000_0100, 0).eax, 0x207);
        // Centaur class absent: redirected.
        assert_eq!(table.query(0xc000_0001, 1).eax, 0xf);
    }

    #[test]
    fn amd_returns_zeros_for_undefined_leaves() {
        let table = table(&[basic(0xd, AMD_VENDOR), subleaf(0xd, 0, 0x207, 0)]);
        assert_eq!(table.query(0x14, 0), CpuidResult::default());
        assert_eq!(table.query(0x8000_0021, 0), CpuidResult::default());
        let hygon = self::table(&[basic(0xd, HYGON_VENDOR), subleaf(0xd, 0, 0x207, 0)]);
        assert_eq!(hygon.query(0x14, 0), CpuidResult::default());
    }

    #[test]
    fn empty_table_is_all_zeros() {
        let table = CpuidTable::<4>::new();
        assert_eq!(table.query(0, 0), CpuidResult::default());
        assert_eq!(table.query(u32::MAX, u32::MAX), CpuidResult::default());
    }

    #[test]
    fn topology_leaves_echo_the_index() {
        let table = table(&[
            basic(0x1f, AMD_VENDOR),
            subleaf(0xb, 0, 1, 3),
            subleaf(0xb, 1, 2, 3),
        ]);
        assert_eq!(
            table.query(0xb, 0x105),
            CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 5,
                edx: 3
            }
        );
        // 0x1F has no subleaf 1: plain zeros.
        assert_eq!(table.query(0x1f, 7), CpuidResult::default());
    }

    #[test]
    fn set_limits() {
        let mut small = CpuidTable::<2>::new();
        let three = [
            leaf(0, 1, 0, 0, 0),
            leaf(1, 0, 0, 0, 0),
            leaf(2, 0, 0, 0, 0),
        ];
        let error = small.set(&three).unwrap_err();
        assert_eq!(error, CpuidError::TooManyEntries(3));
        assert_eq!(error.errno(), 7);
        assert!(small.entries().is_empty(), "a refused set changes nothing");
        let too_many = std::vec![CpuidEntry::default(); KVM_MAX_CPUID_ENTRIES + 1];
        let mut big = std::boxed::Box::new(CpuidTable::<300>::new());
        assert_eq!(
            big.set(&too_many),
            Err(CpuidError::TooManyEntries(KVM_MAX_CPUID_ENTRIES + 1))
        );
        assert!(big.set(&too_many[..KVM_MAX_CPUID_ENTRIES]).is_ok());
    }

    #[test]
    fn virtual_address_width_is_checked() {
        let mut table = CpuidTable::<4>::new();
        let error = table
            .set(&[leaf(0x8000_0008, 40 << 8 | 40, 0, 0, 0)])
            .unwrap_err();
        assert_eq!(error, CpuidError::VirtualAddressBits(40));
        assert_eq!(error.errno(), 22);
        assert!(table
            .set(&[leaf(0x8000_0008, 57 << 8 | 52, 0, 0, 0)])
            .is_ok());
        assert!(table
            .set(&[leaf(0x8000_0008, 48 << 8 | 40, 0, 0, 0)])
            .is_ok());
    }

    #[test]
    fn first_matching_entry_wins() {
        let table = table(&[leaf(1, 1, 0, 0, 0), leaf(1, 2, 0, 0, 0)]);
        assert_eq!(table.query(1, 0).eax, 1);
    }
}
