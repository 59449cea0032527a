//! Nested page tables (AMD APM vol. 2 15.25 "Nested Paging"): building,
//! zapping and walking the GPA -> HPA tables that `nested_cr3` points at.
//!
//! The format is long-mode paging (APM 5.3): 4 levels, or 5 when the host
//! runs LA57, because the processor walks the nested tables in the host's
//! paging mode (QEMU TCG captures it at VMRUN; KVM's `get_npt_level`).
//! The walk counts as a user-mode access (APM 15.25.5), so every entry,
//! leaf or not, has U=1; non-leaf entries are P|RW|U and the leaf carries
//! the real rights (RW, and NX for non-executable mappings; NX in nested
//! entries needs the host's EFER.NXE, which Linux always sets).
//!
//! Memory is reached through [`PageTableMemory`], which the kernel
//! implements over pages it allocates (host physical addresses in, u64
//! entries out) and the tests over a vector.  Nothing here frees: a zap
//! reports the table pages it emptied and unlinked, and the caller frees
//! them after the TLB flush that makes the hardware forget them.

/// A table page: 512 entries of 8 bytes.
pub const ENTRIES_PER_TABLE: usize = 512;
/// Bit 0 (P): the entry maps something.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Bit 1 (R/W): writes allowed (at every level of the walk).
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Bit 2 (U/S): user access allowed; nested walks are user accesses, so always set.
pub const PTE_USER: u64 = 1 << 2;
/// In a level-2 (or level-3) entry: the entry maps a large page.
pub const PTE_LARGE: u64 = 1 << 7;
/// Bit 63 (NX): no instruction fetch from the page (needs host EFER.NXE).
pub const PTE_NO_EXECUTE: u64 = 1 << 63;
/// Bits 51:12: the address field of an entry (further limited by the
/// host's MAXPHYADDR).
const PTE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// What a table entry (pointing at a lower table) holds besides the
/// address: rights are decided at the leaf.
const TABLE_ENTRY_BITS: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_USER;

/// Access to table memory by host physical address.
pub trait PageTableMemory {
    /// A new table page, zeroed, 4 KiB aligned: its host physical
    /// address, or `None` when out of memory.
    fn allocate_table(&mut self) -> Option<u64>;
    /// Entry `index` (0-511) of the table at `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Sets entry `index` (0-511) of the table at `table` to `value`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// The two page sizes pvrs maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// A 4 KiB page, mapped by a level-1 entry.
    Size4K,
    /// A 2 MiB page, mapped by a level-2 entry with PS set.
    Size2M,
}

impl PageSize {
    /// The page's size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
        }
    }

    /// The level whose entries map this size (1 = the lowest table).
    fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
        }
    }
}

/// The rights of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Guest writes allowed (else they fault as NPF with the P bit set).
    pub writable: bool,
    /// Guest instruction fetches allowed (else the leaf has NX).
    pub executable: bool,
}

/// A present leaf, as [`NestedPageTable::lookup`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The host physical address of the GPA looked up (not of the page).
    pub hpa: u64,
    /// The size of the leaf that maps it.
    pub size: PageSize,
    /// The rights of that leaf.
    pub access: Access,
}

/// Why a table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NptError {
    /// Levels other than 4 or 5, or address widths beyond 52 bits.
    InvalidConfig,
    /// The GPA is at or above 2^guest_phys_bits or beyond what the levels
    /// translate.
    GpaOutOfRange(u64),
    /// The HPA is at or above 2^host_phys_bits.
    HpaOutOfRange(u64),
    /// GPA or HPA not aligned to the page size.
    Misaligned,
    /// A page of the other size is in the way (a 2 MiB leaf where a 4 KiB
    /// page goes, or a table where a 2 MiB leaf goes): zap first.
    SizeConflict,
    /// The allocator had no page.
    OutOfMemory,
}

/// Address widths and depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NptConfig {
    /// 4, or 5 with host LA57.
    pub levels: u8,
    /// The guest's MAXPHYADDR: GPAs must be below 2^this.
    pub guest_phys_bits: u8,
    /// The host's MAXPHYADDR: HPAs must be below 2^this.
    pub host_phys_bits: u8,
}

/// One nested page table hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedPageTable {
    root: u64,
    config: NptConfig,
    address_mask: u64,
}

/// Bit position of the index field of a level's entries.
fn index_shift(level: u8) -> u32 {
    12 + 9 * (u32::from(level) - 1)
}

fn index_at(gpa: u64, level: u8) -> usize {
    ((gpa >> index_shift(level)) & 0x1ff) as usize
}

fn is_leaf(entry: u64, level: u8) -> bool {
    level == 1 || entry & PTE_LARGE != 0
}

impl NestedPageTable {
    /// Allocates an empty root table.
    pub fn new(memory: &mut impl PageTableMemory, config: NptConfig) -> Result<Self, NptError> {
        if !matches!(config.levels, 4 | 5)
            || config.guest_phys_bits > 52
            || config.host_phys_bits > 52
        {
            return Err(NptError::InvalidConfig);
        }
        let address_mask = PTE_ADDRESS_MASK & ((1u64 << config.host_phys_bits) - 1);
        let root = memory.allocate_table().ok_or(NptError::OutOfMemory)?;
        Ok(Self {
            root: root & address_mask,
            config,
            address_mask,
        })
    }

    /// The root's host physical address: the VMCB's `nested_cr3`.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The widths and depth the table was created with.
    pub fn config(&self) -> NptConfig {
        self.config
    }

    /// One past the highest GPA the tables may map.
    fn gpa_limit(&self) -> u64 {
        let translated_bits = index_shift(self.config.levels) + 9;
        1u64 << translated_bits.min(u32::from(self.config.guest_phys_bits))
    }

    fn check_gpa(&self, gpa: u64) -> Result<(), NptError> {
        if gpa < self.gpa_limit() {
            Ok(())
        } else {
            Err(NptError::GpaOutOfRange(gpa))
        }
    }

    /// Maps the page at `gpa` to `hpa`.  Returns the leaf entry it
    /// replaced, if one was present (the caller must then flush).
    pub fn map(
        &mut self,
        memory: &mut impl PageTableMemory,
        gpa: u64,
        hpa: u64,
        size: PageSize,
        access: Access,
    ) -> Result<Option<u64>, NptError> {
        if gpa % size.bytes() != 0 || hpa % size.bytes() != 0 {
            return Err(NptError::Misaligned);
        }
        self.check_gpa(gpa)?;
        // The page's last byte too: a 2 MiB page must fit entirely.
        self.check_gpa(gpa + (size.bytes() - 1))?;
        if hpa & !self.address_mask != 0 {
            return Err(NptError::HpaOutOfRange(hpa));
        }
        let target = size.level();
        let mut table = self.root;
        let mut level = self.config.levels;
        while level > target {
            let index = index_at(gpa, level);
            let entry = memory.read_entry(table, index);
            if entry & PTE_PRESENT == 0 {
                let child =
                    memory.allocate_table().ok_or(NptError::OutOfMemory)? & self.address_mask;
                memory.write_entry(table, index, child | TABLE_ENTRY_BITS);
                table = child;
            } else if entry & PTE_LARGE != 0 {
                return Err(NptError::SizeConflict);
            } else {
                table = entry & self.address_mask;
            }
            level -= 1;
        }
        let index = index_at(gpa, level);
        let previous = memory.read_entry(table, index);
        if previous & PTE_PRESENT != 0 && !is_leaf(previous, level) {
            return Err(NptError::SizeConflict);
        }
        let mut leaf = hpa | PTE_PRESENT | PTE_USER;
        if access.writable {
            leaf |= PTE_WRITABLE;
        }
        if !access.executable {
            leaf |= PTE_NO_EXECUTE;
        }
        if size == PageSize::Size2M {
            leaf |= PTE_LARGE;
        }
        memory.write_entry(table, index, leaf);
        Ok((previous & PTE_PRESENT != 0).then_some(previous))
    }

    /// Finds the leaf mapping `gpa`.
    pub fn lookup(&self, memory: &impl PageTableMemory, gpa: u64) -> Option<Mapping> {
        self.check_gpa(gpa).ok()?;
        let mut table = self.root;
        let mut level = self.config.levels;
        loop {
            let entry = memory.read_entry(table, index_at(gpa, level));
            if entry & PTE_PRESENT == 0 {
                return None;
            }
            if is_leaf(entry, level) {
                let size = match level {
                    1 => PageSize::Size4K,
                    2 => PageSize::Size2M,
                    // pvrs never writes larger leaves.
                    _ => return None,
                };
                let offset = gpa & (size.bytes() - 1);
                let base = entry & self.address_mask & !(size.bytes() - 1);
                return Some(Mapping {
                    hpa: base | offset,
                    size,
                    access: Access {
                        writable: entry & PTE_WRITABLE != 0,
                        executable: entry & PTE_NO_EXECUTE == 0,
                    },
                });
            }
            table = entry & self.address_mask;
            level -= 1;
        }
    }

    /// Removes every mapping in `[start, end)` (whole leaves: a 2 MiB page
    /// that the range only touches goes entirely, which is always safe;
    /// it faults back in).  Tables left empty are unlinked and passed to
    /// `freed` (never the root).  Returns how many leaves were cleared;
    /// if any, the caller must flush before freeing.
    pub fn zap_range(
        &mut self,
        memory: &mut impl PageTableMemory,
        start: u64,
        end: u64,
        freed: &mut impl FnMut(u64),
    ) -> u64 {
        let end = end.min(self.gpa_limit());
        if start >= end {
            return 0;
        }
        let (cleared, _root_empty) =
            self.zap_table(memory, self.root, self.config.levels, 0, start, end, freed);
        cleared
    }

    /// Removes the mapping of the page at `gpa`; see [`Self::zap_range`].
    pub fn unmap(
        &mut self,
        memory: &mut impl PageTableMemory,
        gpa: u64,
        freed: &mut impl FnMut(u64),
    ) -> u64 {
        let page = gpa & !0xfff;
        self.zap_range(memory, page, page.saturating_add(0x1000), freed)
    }

    /// Zaps `[start, end)` (already clipped to this table's span) in the
    /// table at `table`, of `level`, which maps GPAs from `base`.
    /// Returns (leaves cleared, the table is now empty).
    #[allow(clippy::too_many_arguments)]
    fn zap_table(
        &mut self,
        memory: &mut impl PageTableMemory,
        table: u64,
        level: u8,
        base: u64,
        start: u64,
        end: u64,
        freed: &mut impl FnMut(u64),
    ) -> (u64, bool) {
        let shift = index_shift(level);
        let first = ((start - base) >> shift) as usize;
        let last = ((end - 1 - base) >> shift) as usize;
        let mut cleared = 0;
        for index in first..=last.min(ENTRIES_PER_TABLE - 1) {
            let entry = memory.read_entry(table, index);
            if entry & PTE_PRESENT == 0 {
                continue;
            }
            if is_leaf(entry, level) {
                memory.write_entry(table, index, 0);
                cleared += 1;
                continue;
            }
            let child_base = base + ((index as u64) << shift);
            let child_end = child_base + (1u64 << shift);
            let child = entry & self.address_mask;
            let (child_cleared, child_empty) = self.zap_table(
                memory,
                child,
                level - 1,
                child_base,
                start.max(child_base),
                end.min(child_end),
                freed,
            );
            cleared += child_cleared;
            if child_empty {
                memory.write_entry(table, index, 0);
                freed(child);
            }
        }
        let empty =
            (0..ENTRIES_PER_TABLE).all(|index| memory.read_entry(table, index) & PTE_PRESENT == 0);
        (cleared, empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Table pages in a map from HPA to 512 entries, with a page budget.
    struct MockMemory {
        tables: BTreeMap<u64, Vec<u64>>,
        next: u64,
        budget: usize,
    }

    impl MockMemory {
        fn new(budget: usize) -> Self {
            Self {
                tables: BTreeMap::new(),
                next: 0x10_0000,
                budget,
            }
        }
    }

    impl PageTableMemory for MockMemory {
        fn allocate_table(&mut self) -> Option<u64> {
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            let hpa = self.next;
            self.next += 0x1000;
            self.tables.insert(hpa, std::vec![0; ENTRIES_PER_TABLE]);
            Some(hpa)
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[index] = value;
        }
    }

    const RWX: Access = Access {
        writable: true,
        executable: true,
    };
    const RO: Access = Access {
        writable: false,
        executable: false,
    };

    fn config(levels: u8) -> NptConfig {
        NptConfig {
            levels,
            guest_phys_bits: 48,
            host_phys_bits: 46,
        }
    }

    #[test]
    fn map_and_lookup_4k_four_levels() {
        let mut memory = MockMemory::new(16);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        assert_eq!(
            npt.map(&mut memory, 0xfee0_0000, 0x1234_5000, PageSize::Size4K, RWX),
            Ok(None)
        );
        // Root + PDPT + PD + PT.
        assert_eq!(memory.tables.len(), 4);
        let mapping = npt.lookup(&memory, 0xfee0_0abc).unwrap();
        assert_eq!(mapping.hpa, 0x1234_5abc);
        assert_eq!(mapping.size, PageSize::Size4K);
        assert_eq!(mapping.access, RWX);
        assert_eq!(npt.lookup(&memory, 0xfee0_1000), None);
        // Every entry on the path has U=1; the leaf has RW and no NX.
        let root_entry = memory.read_entry(npt.root(), index_at(0xfee0_0000, 4));
        assert_eq!(root_entry & TABLE_ENTRY_BITS, TABLE_ENTRY_BITS);
        let leaf = memory
            .tables
            .values()
            .flat_map(|t| t.iter())
            .find(|&&e| e & !0xfff & PTE_ADDRESS_MASK == 0x1234_5000)
            .copied()
            .unwrap();
        assert_eq!(leaf, 0x1234_5000 | PTE_PRESENT | PTE_WRITABLE | PTE_USER);
    }

    #[test]
    fn read_only_no_execute_and_remap_returns_previous() {
        let mut memory = MockMemory::new(16);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        npt.map(&mut memory, 0x1000, 0x5000, PageSize::Size4K, RO)
            .unwrap();
        let mapping = npt.lookup(&memory, 0x1000).unwrap();
        assert_eq!(mapping.access, RO);
        let previous = npt
            .map(&mut memory, 0x1000, 0x6000, PageSize::Size4K, RWX)
            .unwrap()
            .unwrap();
        assert_eq!(previous, 0x5000 | PTE_PRESENT | PTE_USER | PTE_NO_EXECUTE);
        assert_eq!(npt.lookup(&memory, 0x1000).unwrap().hpa, 0x6000);
    }

    #[test]
    fn five_levels() {
        let mut memory = MockMemory::new(16);
        let wide = NptConfig {
            levels: 5,
            guest_phys_bits: 52,
            host_phys_bits: 52,
        };
        let mut npt = NestedPageTable::new(&mut memory, wide).unwrap();
        let gpa = 1 << 50;
        npt.map(&mut memory, gpa, 0x7000, PageSize::Size4K, RWX)
            .unwrap();
        assert_eq!(memory.tables.len(), 5);
        assert_eq!(npt.lookup(&memory, gpa | 0x10).unwrap().hpa, 0x7010);
        // 4 levels cannot reach it.
        let mut memory4 = MockMemory::new(16);
        let four = NptConfig { levels: 4, ..wide };
        let mut npt4 = NestedPageTable::new(&mut memory4, four).unwrap();
        assert_eq!(
            npt4.map(&mut memory4, gpa, 0x7000, PageSize::Size4K, RWX),
            Err(NptError::GpaOutOfRange(gpa))
        );
    }

    #[test]
    fn large_pages_and_size_conflicts() {
        let mut memory = MockMemory::new(16);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        npt.map(&mut memory, 0x20_0000, 0x4000_0000, PageSize::Size2M, RWX)
            .unwrap();
        let mapping = npt.lookup(&memory, 0x3f_f123).unwrap();
        assert_eq!(mapping.hpa, 0x401f_f123);
        assert_eq!(mapping.size, PageSize::Size2M);
        assert_eq!(
            npt.map(&mut memory, 0x20_1000, 0x1000, PageSize::Size4K, RWX),
            Err(NptError::SizeConflict)
        );
        npt.map(&mut memory, 0x40_0000, 0x1000, PageSize::Size4K, RWX)
            .unwrap();
        assert_eq!(
            npt.map(&mut memory, 0x40_0000, 0x4020_0000, PageSize::Size2M, RWX),
            Err(NptError::SizeConflict)
        );
    }

    #[test]
    fn argument_errors() {
        let mut memory = MockMemory::new(16);
        assert_eq!(
            NestedPageTable::new(&mut memory, config(3)),
            Err(NptError::InvalidConfig)
        );
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        assert_eq!(
            npt.map(&mut memory, 0x1001, 0x1000, PageSize::Size4K, RWX),
            Err(NptError::Misaligned)
        );
        assert_eq!(
            npt.map(&mut memory, 0x1000, 0x10_1000, PageSize::Size2M, RWX),
            Err(NptError::Misaligned)
        );
        assert_eq!(
            npt.map(&mut memory, 1 << 48, 0x1000, PageSize::Size4K, RWX),
            Err(NptError::GpaOutOfRange(1 << 48))
        );
        assert_eq!(
            npt.map(&mut memory, 0x1000, 1 << 46, PageSize::Size4K, RWX),
            Err(NptError::HpaOutOfRange(1 << 46))
        );
        let narrow = NptConfig {
            guest_phys_bits: 32,
            ..config(4)
        };
        let mut npt32 = NestedPageTable::new(&mut memory, narrow).unwrap();
        assert_eq!(
            npt32.map(&mut memory, 1 << 32, 0x1000, PageSize::Size4K, RWX),
            Err(NptError::GpaOutOfRange(1 << 32))
        );
        assert_eq!(npt32.lookup(&memory, u64::MAX), None);
    }

    #[test]
    fn allocator_exhaustion() {
        let mut memory = MockMemory::new(2);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        assert_eq!(
            npt.map(&mut memory, 0, 0x1000, PageSize::Size4K, RWX),
            Err(NptError::OutOfMemory)
        );
        let mut none = MockMemory::new(0);
        assert_eq!(
            NestedPageTable::new(&mut none, config(4)),
            Err(NptError::OutOfMemory)
        );
    }

    #[test]
    fn zap_reports_emptied_tables_but_keeps_shared_ones() {
        let mut memory = MockMemory::new(32);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        for page in 0..4u64 {
            npt.map(
                &mut memory,
                page << 12,
                0x100_0000 + (page << 12),
                PageSize::Size4K,
                RWX,
            )
            .unwrap();
        }
        npt.map(&mut memory, 0x20_0000, 0x200_0000, PageSize::Size4K, RWX)
            .unwrap();
        let mut freed = Vec::new();
        // Zap the first two pages: nothing becomes empty.
        assert_eq!(
            npt.zap_range(&mut memory, 0, 0x2000, &mut |t| freed.push(t)),
            2
        );
        assert!(freed.is_empty());
        assert_eq!(npt.lookup(&memory, 0x1000), None);
        assert!(npt.lookup(&memory, 0x2000).is_some());
        // Zap the rest of the first PT: it empties, the PD does not.
        assert_eq!(
            npt.zap_range(&mut memory, 0, 0x20_0000, &mut |t| freed.push(t)),
            2
        );
        assert_eq!(freed.len(), 1);
        assert!(npt.lookup(&memory, 0x20_0000).is_some());
        // The last page: PT, PD and PDPT empty, the root stays.
        assert_eq!(npt.unmap(&mut memory, 0x20_0fff, &mut |t| freed.push(t)), 1);
        assert_eq!(freed.len(), 4);
        assert!(!freed.contains(&npt.root()));
        assert!((0..ENTRIES_PER_TABLE).all(|i| memory.read_entry(npt.root(), i) == 0));
    }

    #[test]
    fn zap_takes_a_whole_large_page_and_clips_ranges() {
        let mut memory = MockMemory::new(16);
        let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
        npt.map(&mut memory, 0x20_0000, 0x4000_0000, PageSize::Size2M, RWX)
            .unwrap();
        let mut freed = 0;
        assert_eq!(
            npt.zap_range(&mut memory, 0x30_0000, 0x30_1000, &mut |_| freed += 1),
            1
        );
        assert_eq!(npt.lookup(&memory, 0x20_0000), None);
        assert_eq!(freed, 2);
        // Empty, inverted and out-of-range ranges do nothing.
        assert_eq!(npt.zap_range(&mut memory, 5, 5, &mut |_| ()), 0);
        assert_eq!(npt.zap_range(&mut memory, 10, 5, &mut |_| ()), 0);
        assert_eq!(
            npt.zap_range(&mut memory, 1 << 60, u64::MAX, &mut |_| ()),
            0
        );
        assert_eq!(npt.zap_range(&mut memory, 0, u64::MAX, &mut |_| ()), 0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Random maps and zaps agree with a model map of 4 KiB pages.
            #[test]
            fn matches_a_model(
                operations in proptest::collection::vec(
                    (any::<bool>(), 0u64..2048, 1u64..600),
                    1..60,
                )
            ) {
                let mut memory = MockMemory::new(4096);
                let mut npt = NestedPageTable::new(&mut memory, config(4)).unwrap();
                let mut model = BTreeMap::new();
                // Pages spread over two PTs and two PDPT entries.
                let gpa_of = |page: u64| (page & 1023) << 12 | (page >> 10) << 30;
                for (is_map, page, count) in operations {
                    if is_map {
                        let hpa = (page + 1) << 12;
                        npt.map(&mut memory, gpa_of(page), hpa, PageSize::Size4K, RWX).unwrap();
                        model.insert(gpa_of(page), hpa);
                    } else {
                        let start = gpa_of(page);
                        let end = start + (count << 12);
                        // The mock never reuses pages, so freeing is a no-op.
                        npt.zap_range(&mut memory, start, end, &mut |_| ());
                        model.retain(|&gpa, _| gpa < start || gpa >= end);
                    }
                }
                for page in 0..2048u64 {
                    let gpa = gpa_of(page);
                    prop_assert_eq!(
                        npt.lookup(&memory, gpa).map(|m| m.hpa),
                        model.get(&gpa).copied()
                    );
                }
            }
        }
    }
}
