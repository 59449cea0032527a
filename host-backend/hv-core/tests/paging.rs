//! The guest page-table walker against hand-built page tables, one group
//! of tests per paging mode.

mod common;

use common::SparseMemory;
use hv_core::paging::*;

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

const FEATURES: PagingFeatures = PagingFeatures {
    max_phys_addr_bits: 40,
    pse36: true,
    gb_pages: true,
};

fn read(privilege: Privilege) -> Access {
    Access {
        kind: AccessKind::Read,
        privilege,
    }
}
fn write(privilege: Privilege) -> Access {
    Access {
        kind: AccessKind::Write,
        privilege,
    }
}
fn fetch(privilege: Privilege) -> Access {
    Access {
        kind: AccessKind::Fetch,
        privilege,
    }
}
const USER: Privilege = Privilege::User;
const KERNEL: Privilege = Privilege::Supervisor {
    alignment_check: false,
};
const KERNEL_AC: Privilege = Privilege::Supervisor {
    alignment_check: true,
};
const IMPLICIT: Privilege = Privilege::ImplicitSupervisor;

fn fault_code(result: Result<Translation, WalkError>) -> u32 {
    match result {
        Err(WalkError::PageFault(fault)) => fault.error_code,
        other => panic!("expected a #PF, got {other:?}"),
    }
}

fn gpa(result: Result<Translation, WalkError>) -> u64 {
    result.expect("translation").gpa
}

// ---------------------------------------------------------------- no paging

#[test]
fn without_paging_linear_is_physical_and_wraps_at_4g() {
    let mut memory = SparseMemory::new();
    let regs = PagingRegisters::default();
    let t = translate(&mut memory, &regs, &FEATURES, 0x1_0000_1234, read(KERNEL)).unwrap();
    assert_eq!(t.gpa, 0x1234);
    assert_eq!(t.page_size, PageSize::Size4K);
    assert!(t.accessed_dirty.as_slice().is_empty());
}

#[test]
fn inconsistent_registers_are_refused() {
    let mut memory = SparseMemory::new();
    let long_without_pae = PagingRegisters {
        cr0: CR0_PE | CR0_PG,
        efer: EFER_LMA,
        ..Default::default()
    };
    assert_eq!(
        translate(&mut memory, &long_without_pae, &FEATURES, 0, read(KERNEL)),
        Err(WalkError::InvalidPagingState)
    );
    let paging_without_protection = PagingRegisters {
        cr0: CR0_PG,
        ..Default::default()
    };
    assert_eq!(
        translate(
            &mut memory,
            &paging_without_protection,
            &FEATURES,
            0,
            read(KERNEL)
        ),
        Err(WalkError::InvalidPagingState)
    );
}

// ------------------------------------------------------------ 32-bit paging

const PD32: u64 = 0x1000;
const PT32: u64 = 0x2000;

fn legacy_regs(cr4: u64) -> PagingRegisters {
    PagingRegisters {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3: PD32,
        cr4,
        ..Default::default()
    }
}

/// Maps 0x0040_3000 → 0x0055_5000 through PD32[1] and PT32[3].
fn legacy_memory(pde: u64, pte: u64) -> SparseMemory {
    let mut memory = SparseMemory::new();
    memory.write_u32(PD32 + 4, (PT32 | pde) as u32);
    memory.write_u32(PT32 + 3 * 4, (0x0055_5000 | pte) as u32);
    memory
}

#[test]
fn legacy32_maps_4k_pages_and_reports_accessed_dirty() {
    let mut memory = legacy_memory(P | RW | US, P | RW | US);
    let regs = legacy_regs(0);
    let t = translate(&mut memory, &regs, &FEATURES, 0x0040_3abc, write(USER)).unwrap();
    assert_eq!(t.gpa, 0x0055_5abc);
    assert_eq!(t.page_size, PageSize::Size4K);
    let updates = t.accessed_dirty.as_slice();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].entry_gpa, PD32 + 4);
    assert_eq!(updates[0].set_bits, A);
    assert_eq!(updates[0].width, EntryWidth::Bits32);
    assert_eq!(updates[1].entry_gpa, PT32 + 12);
    assert_eq!(updates[1].set_bits, A | D);
    assert_eq!(t.accessed_dirty.apply(&mut memory), Ok(true));
    assert_eq!(memory.read_u32(PT32 + 12).unwrap() as u64 & (A | D), A | D);
    // Nothing left to set on the second walk.
    let again = translate(&mut memory, &regs, &FEATURES, 0x0040_3abc, write(USER)).unwrap();
    assert!(again.accessed_dirty.as_slice().is_empty());
}

#[test]
fn legacy32_not_present_at_each_level() {
    let regs = legacy_regs(0);
    let mut no_pde = legacy_memory(0, P);
    assert_eq!(
        fault_code(translate(
            &mut no_pde,
            &regs,
            &FEATURES,
            0x0040_3000,
            read(KERNEL)
        )),
        0
    );
    let mut no_pte = legacy_memory(P, 0);
    assert_eq!(
        fault_code(translate(
            &mut no_pte,
            &regs,
            &FEATURES,
            0x0040_3000,
            write(USER)
        )),
        PF_WRITE | PF_USER
    );
}

#[test]
fn legacy32_write_protection_follows_cr0_wp() {
    let mut memory = legacy_memory(P | RW, P);
    let mut regs = legacy_regs(0);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x0040_3000,
            write(KERNEL)
        )),
        PF_PRESENT | PF_WRITE
    );
    regs.cr0 &= !CR0_WP;
    assert_eq!(
        gpa(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x0040_3000,
            write(KERNEL)
        )),
        0x0055_5000
    );
}

#[test]
fn legacy32_user_needs_user_at_every_level() {
    let regs = legacy_regs(0);
    let mut kernel_pde = legacy_memory(P | RW, P | RW | US);
    assert_eq!(
        fault_code(translate(
            &mut kernel_pde,
            &regs,
            &FEATURES,
            0x0040_3000,
            read(USER)
        )),
        PF_PRESENT | PF_USER
    );
    let mut read_only_pde = legacy_memory(P | US, P | RW | US);
    assert_eq!(
        fault_code(translate(
            &mut read_only_pde,
            &regs,
            &FEATURES,
            0x0040_3000,
            write(USER)
        )),
        PF_PRESENT | PF_WRITE | PF_USER
    );
}

#[test]
fn legacy32_4m_pages_need_cr4_pse() {
    let mut memory = SparseMemory::new();
    // PD32[2] maps 0x0080_0000..0x00c0_0000 with PS; without PSE it points
    // to a page table at 0x00c0_0000 (whose low bits are ignored).
    memory.write_u32(PD32 + 8, 0x00c0_0000 | (P | RW | PS) as u32);
    memory.write_u32(0x00c0_0000 + 5 * 4, 0x0077_7000 | P as u32);
    let big = translate(
        &mut memory,
        &legacy_regs(CR4_PSE),
        &FEATURES,
        0x0080_5123,
        read(KERNEL),
    )
    .unwrap();
    assert_eq!(big.gpa, 0x00c0_5123);
    assert_eq!(big.page_size, PageSize::Size4M);
    assert_eq!(big.accessed_dirty.as_slice().len(), 1);
    let small = translate(
        &mut memory,
        &legacy_regs(0),
        &FEATURES,
        0x0080_5123,
        read(KERNEL),
    )
    .unwrap();
    assert_eq!(small.gpa, 0x0077_7123);
    assert_eq!(small.page_size, PageSize::Size4K);
}

#[test]
fn legacy32_pse36_high_bits_and_reserved_bits() {
    let mut memory = SparseMemory::new();
    // Physical bits 39:32 = 0x12 in PDE bits 20:13.
    memory.write_u32(PD32, 0x0040_0000 | (0x12 << 13) | (P | PS) as u32);
    let regs = legacy_regs(CR4_PSE);
    assert_eq!(
        gpa(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x1234,
            read(KERNEL)
        )),
        0x12_0040_1234
    );

    // With MAXPHYADDR 36, only bits 16:13 may be set.
    let narrow = PagingFeatures {
        max_phys_addr_bits: 36,
        ..FEATURES
    };
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &narrow, 0x1234, read(KERNEL))),
        PF_PRESENT | PF_RESERVED
    );
    // Without PSE-36, bits 21:13 are all reserved.
    let no_pse36 = PagingFeatures {
        pse36: false,
        ..FEATURES
    };
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &regs,
            &no_pse36,
            0x1234,
            write(USER)
        )),
        PF_PRESENT | PF_RESERVED | PF_WRITE | PF_USER
    );
    // Bit 21 is reserved even with PSE-36 and 40 physical bits.
    memory.write_u32(PD32, 0x0040_0000 | (1 << 21) | (P | PS) as u32);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x1234,
            read(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
}

#[test]
fn legacy32_fetch_reports_i_d_only_with_smep() {
    let mut memory = legacy_memory(P | RW | US, P | RW | US);
    // No NX in 32-bit paging: a supervisor fetch from a user page is fine
    // without SMEP, and a not-present fetch fault has no I/D bit.
    let regs = legacy_regs(0);
    assert!(translate(&mut memory, &regs, &FEATURES, 0x0040_3000, fetch(KERNEL)).is_ok());
    let smep = legacy_regs(CR4_SMEP);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &smep,
            &FEATURES,
            0x0040_3000,
            fetch(KERNEL)
        )),
        PF_PRESENT | PF_FETCH
    );
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x0080_0000,
            fetch(KERNEL)
        )),
        0
    );
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &smep,
            &FEATURES,
            0x0080_0000,
            fetch(KERNEL)
        )),
        PF_FETCH
    );
}

#[test]
fn legacy32_ignores_bit_63_and_high_linear_bits() {
    let mut memory = legacy_memory(P | RW, P | RW);
    let regs = legacy_regs(0);
    assert_eq!(
        gpa(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0xffff_ffff_0040_3001,
            read(KERNEL)
        )),
        0x0055_5001
    );
}

// -------------------------------------------------------------- PAE paging

const PAE_PD: u64 = 0x3000;
const PAE_PT: u64 = 0x4000;

fn pae_regs(pdpte: u64) -> PagingRegisters {
    PagingRegisters {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3: 0x5000,
        cr4: CR4_PAE,
        efer: EFER_NXE,
        pdptes: [0, 0, pdpte, 0],
        ..Default::default()
    }
}

/// Maps 0x8020_1000 (PDPTE 2, PDE 1, PTE 1) → 0x1_2345_6000.
fn pae_memory(pde: u64, pte: u64) -> SparseMemory {
    let mut memory = SparseMemory::new();
    memory.write_u64(PAE_PD + 8, PAE_PT | pde);
    memory.write_u64(PAE_PT + 8, 0x1_2345_6000 | pte);
    memory
}

#[test]
fn pae_uses_the_pdpte_registers_not_memory() {
    let mut memory = pae_memory(P | RW | US, P | RW | US);
    // What CR3 points at says "not present": it must not be re-read.
    memory.write_u64(0x5000 + 16, 0);
    let t = translate(
        &mut memory,
        &pae_regs(PAE_PD | P),
        &FEATURES,
        0x8020_1abc,
        write(USER),
    )
    .unwrap();
    assert_eq!(t.gpa, 0x1_2345_6abc);
    // No A/D update for the PDPTE: it is a register.
    let updates = t.accessed_dirty.as_slice();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].entry_gpa, PAE_PD + 8);
    assert_eq!(updates[1].set_bits, A | D);
    assert_eq!(updates[1].width, EntryWidth::Bits64);
}

#[test]
fn pae_pdpte_not_present_and_reserved() {
    let mut memory = pae_memory(P | RW, P | RW);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &pae_regs(PAE_PD),
            &FEATURES,
            0x8020_1000,
            read(KERNEL)
        )),
        0
    );
    // Bit 1 (R/W in other entries) is reserved in a PDPTE, and so is XD.
    for bad in [RW, US, PS, XD, 1 << 40] {
        assert_eq!(
            fault_code(translate(
                &mut memory,
                &pae_regs(PAE_PD | P | bad),
                &FEATURES,
                0x8020_1000,
                read(KERNEL)
            )),
            PF_PRESENT | PF_RESERVED,
            "PDPTE bit {bad:#x}"
        );
    }
}

#[test]
fn pae_2m_pages_ignore_cr4_pse() {
    let mut memory = SparseMemory::new();
    memory.write_u64(PAE_PD + 8, 0x4_0020_0000 | P | RW | PS);
    let t = translate(
        &mut memory,
        &pae_regs(PAE_PD | P),
        &FEATURES,
        0x8030_0001,
        read(KERNEL),
    )
    .unwrap();
    assert_eq!(t.gpa, 0x4_0030_0001);
    assert_eq!(t.page_size, PageSize::Size2M);
    // Bits 20:13 of a 2 MiB PDE are reserved; bit 12 is PAT.
    memory.write_u64(PAE_PD + 8, 0x4_0020_0000 | (1 << 13) | P | PS);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &pae_regs(PAE_PD | P),
            &FEATURES,
            0x8030_0001,
            read(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
    memory.write_u64(PAE_PD + 8, 0x4_0020_0000 | (1 << 12) | P | PS);
    assert_eq!(
        gpa(translate(
            &mut memory,
            &pae_regs(PAE_PD | P),
            &FEATURES,
            0x8030_0001,
            read(KERNEL)
        )),
        0x4_0030_0001
    );
}

#[test]
fn pae_no_execute_depends_on_efer_nxe() {
    let mut memory = pae_memory(P | RW | XD, P | RW);
    let regs = pae_regs(PAE_PD | P);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &regs,
            &FEATURES,
            0x8020_1000,
            fetch(KERNEL)
        )),
        PF_PRESENT | PF_FETCH
    );
    assert!(translate(&mut memory, &regs, &FEATURES, 0x8020_1000, read(KERNEL)).is_ok());
    let no_nxe = PagingRegisters { efer: 0, ..regs };
    // Without NXE the XD bit is reserved, for every kind of access; and
    // fetch faults carry no I/D bit.
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &no_nxe,
            &FEATURES,
            0x8020_1000,
            read(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &no_nxe,
            &FEATURES,
            0x8020_1000,
            fetch(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
}

#[test]
fn pae_reserved_bits_above_maxphyaddr() {
    let mut memory = pae_memory(P | RW, P | RW | (1 << 40));
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &pae_regs(PAE_PD | P),
            &FEATURES,
            0x8020_1000,
            read(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
    let wide = PagingFeatures {
        max_phys_addr_bits: 48,
        ..FEATURES
    };
    assert_eq!(
        gpa(translate(
            &mut memory,
            &pae_regs(PAE_PD | P),
            &wide,
            0x8020_1000,
            read(KERNEL)
        )),
        0x101_2345_6000
    );
}

// ------------------------------------------------------- 4-level paging

const PML4: u64 = 0x10000;
const PDPT: u64 = 0x11000;
const PD: u64 = 0x12000;
const PT: u64 = 0x13000;
/// PML4 index 0x1ff, PDPT 3, PD 4, PT 5, in the upper half.
const LA: u64 = 0xffff_ff80_c080_5000;

fn long_regs(cr4: u64) -> PagingRegisters {
    PagingRegisters {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr3: PML4,
        cr4: CR4_PAE | cr4,
        efer: EFER_LMA | EFER_NXE,
        ..Default::default()
    }
}

/// Four levels, with `flags[i]` on the entry of level 4 - i.
fn long_memory(flags: [u64; 4]) -> SparseMemory {
    let mut memory = SparseMemory::new();
    memory.write_u64(PML4 + 0x1ff * 8, PDPT | flags[0]);
    memory.write_u64(PDPT + 3 * 8, PD | flags[1]);
    memory.write_u64(PD + 4 * 8, PT | flags[2]);
    memory.write_u64(PT + 5 * 8, 0xab_cdef_0000 | flags[3]);
    memory
}

const ALL: u64 = P | RW | US;

#[test]
fn four_level_4k_translation_and_ad_updates() {
    let mut memory = long_memory([ALL, ALL | A, ALL, ALL | A]);
    let t = translate(
        &mut memory,
        &long_regs(0),
        &FEATURES,
        LA + 0x123,
        write(USER),
    )
    .unwrap();
    assert_eq!(t.gpa, 0xab_cdef_0123);
    assert_eq!(t.bytes_to_page_end(), 0x1000 - 0x123);
    let updates: Vec<_> = t
        .accessed_dirty
        .as_slice()
        .iter()
        .map(|u| (u.entry_gpa, u.set_bits))
        .collect();
    // A already set on the PDPTE; the leaf had A and gets D.
    assert_eq!(
        updates,
        vec![(PML4 + 0x1ff * 8, A), (PD + 32, A), (PT + 40, D)]
    );
    // A read of the same page sets no D.
    let read_only = translate(&mut memory, &long_regs(0), &FEATURES, LA, read(USER)).unwrap();
    assert_eq!(
        read_only
            .accessed_dirty
            .as_slice()
            .last()
            .map(|u| u.entry_gpa),
        Some(PD + 32)
    );
}

#[test]
fn four_level_ad_update_detects_a_changed_entry() {
    let mut memory = long_memory([ALL, ALL, ALL, ALL]);
    let t = translate(&mut memory, &long_regs(0), &FEATURES, LA, write(KERNEL)).unwrap();
    // The guest rewrites the PTE before the flags are applied.
    memory.write_u64(PT + 5 * 8, 0x1000 | ALL);
    assert_eq!(t.accessed_dirty.apply(&mut memory), Ok(false));
    assert_eq!(memory.applied.len(), 3);
    assert_eq!(memory.peek_u64(PT + 5 * 8), 0x1000 | ALL);
}

#[test]
fn four_level_not_present_at_each_level() {
    for level in 0..4 {
        let mut flags = [ALL; 4];
        flags[level] = RW | US;
        let mut memory = long_memory(flags);
        assert_eq!(
            fault_code(translate(
                &mut memory,
                &long_regs(0),
                &FEATURES,
                LA,
                write(USER)
            )),
            PF_WRITE | PF_USER,
            "level {}",
            4 - level
        );
    }
}

#[test]
fn four_level_reserved_bits_at_each_level() {
    for level in 0..4 {
        let mut flags = [ALL; 4];
        flags[level] |= 1 << 45;
        let mut memory = long_memory(flags);
        assert_eq!(
            fault_code(translate(
                &mut memory,
                &long_regs(0),
                &FEATURES,
                LA,
                fetch(USER)
            )),
            PF_PRESENT | PF_RESERVED | PF_USER | PF_FETCH,
            "level {}",
            4 - level
        );
    }
    // PS in a PML4E is reserved.
    let mut memory = long_memory([ALL | PS, ALL, ALL, ALL]);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &long_regs(0),
            &FEATURES,
            LA,
            read(KERNEL)
        )),
        PF_PRESENT | PF_RESERVED
    );
}

#[test]
fn four_level_a_missing_table_is_a_memory_error() {
    let mut memory = long_memory([ALL; 4]);
    memory.write_u64(PD + 4 * 8, 0x7_0000_0000 | ALL);
    assert_eq!(
        translate(&mut memory, &long_regs(0), &FEATURES, LA, read(KERNEL)),
        Err(WalkError::Memory {
            gpa: 0x7_0000_0000 + 5 * 8,
            error: MemoryError::Unmapped
        })
    );
}

#[test]
fn four_level_large_pages() {
    let mut memory = long_memory([ALL; 4]);
    memory.write_u64(PD + 4 * 8, 0x2_0060_0000 | ALL | PS);
    let two_mb = translate(
        &mut memory,
        &long_regs(0),
        &FEATURES,
        LA + 0x1234,
        read(USER),
    )
    .unwrap();
    assert_eq!(two_mb.gpa, 0x2_0060_0000 + 0x5000 + 0x1234);
    assert_eq!(two_mb.page_size, PageSize::Size2M);

    memory.write_u64(PDPT + 3 * 8, 0x40_0000_0000 | ALL | PS);
    let one_gb = translate(
        &mut memory,
        &long_regs(0),
        &FEATURES,
        LA + 0x1234,
        read(USER),
    )
    .unwrap();
    assert_eq!(one_gb.gpa, 0x40_0000_0000 + 0x80_5000 + 0x1234);
    assert_eq!(one_gb.page_size, PageSize::Size1G);
    assert_eq!(one_gb.bytes_to_page_end(), (1 << 30) - 0x80_6234);

    // 1 GiB frames are aligned: bits 29:13 are reserved.
    memory.write_u64(PDPT + 3 * 8, 0x40_0000_0000 | (1 << 29) | ALL | PS);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &long_regs(0),
            &FEATURES,
            LA,
            read(USER)
        )),
        PF_PRESENT | PF_RESERVED | PF_USER
    );
    // Without 1 GiB pages, PS in a PDPTE is reserved.
    memory.write_u64(PDPT + 3 * 8, 0x40_0000_0000 | ALL | PS);
    let no_gb = PagingFeatures {
        gb_pages: false,
        ..FEATURES
    };
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &long_regs(0),
            &no_gb,
            LA,
            read(USER)
        )),
        PF_PRESENT | PF_RESERVED | PF_USER
    );
}

#[test]
fn four_level_non_canonical_addresses() {
    let mut memory = long_memory([ALL; 4]);
    for address in [
        0x0000_8000_0000_0000,
        0xffff_7fff_ffff_ffff,
        0x0100_0000_0000_0000,
    ] {
        assert_eq!(
            translate(&mut memory, &long_regs(0), &FEATURES, address, read(KERNEL)),
            Err(WalkError::NonCanonical {
                linear_address: address
            })
        );
    }
}

#[test]
fn four_level_no_execute_at_any_level() {
    for level in 0..4 {
        let mut flags = [ALL; 4];
        flags[level] |= XD;
        let mut memory = long_memory(flags);
        assert_eq!(
            fault_code(translate(
                &mut memory,
                &long_regs(0),
                &FEATURES,
                LA,
                fetch(USER)
            )),
            PF_PRESENT | PF_USER | PF_FETCH
        );
        assert!(translate(&mut memory, &long_regs(0), &FEATURES, LA, write(USER)).is_ok());
    }
}

#[test]
fn four_level_supervisor_write_protect() {
    let mut memory = long_memory([ALL, P | US, ALL, ALL]);
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &long_regs(0),
            &FEATURES,
            LA,
            write(KERNEL)
        )),
        PF_PRESENT | PF_WRITE
    );
    let no_wp = PagingRegisters {
        cr0: CR0_PE | CR0_PG,
        ..long_regs(0)
    };
    assert!(translate(&mut memory, &no_wp, &FEATURES, LA, write(KERNEL)).is_ok());
    // User writes ignore WP: always refused on a read-only page.
    assert_eq!(
        fault_code(translate(&mut memory, &no_wp, &FEATURES, LA, write(USER))),
        PF_PRESENT | PF_WRITE | PF_USER
    );
}

#[test]
fn four_level_smep() {
    let mut memory = long_memory([ALL; 4]);
    assert!(translate(&mut memory, &long_regs(0), &FEATURES, LA, fetch(KERNEL)).is_ok());
    assert_eq!(
        fault_code(translate(
            &mut memory,
            &long_regs(CR4_SMEP),
            &FEATURES,
            LA,
            fetch(KERNEL)
        )),
        PF_PRESENT | PF_FETCH
    );
    // SMEP is about user pages only, and user fetches are not affected.
    assert!(translate(
        &mut memory,
        &long_regs(CR4_SMEP),
        &FEATURES,
        LA,
        fetch(USER)
    )
    .is_ok());
    let mut kernel_page = long_memory([ALL, ALL, ALL, P | RW]);
    assert!(translate(
        &mut kernel_page,
        &long_regs(CR4_SMEP),
        &FEATURES,
        LA,
        fetch(KERNEL)
    )
    .is_ok());
    assert_eq!(
        fault_code(translate(
            &mut kernel_page,
            &long_regs(CR4_SMEP),
            &FEATURES,
            LA,
            fetch(USER)
        )),
        PF_PRESENT | PF_USER | PF_FETCH
    );
}

#[test]
fn four_level_smap() {
    let mut memory = long_memory([ALL; 4]);
    let smap = long_regs(CR4_SMAP);
    for access in [read(KERNEL), write(KERNEL), read(IMPLICIT), write(IMPLICIT)] {
        let write_bit = if access.kind == AccessKind::Write {
            PF_WRITE
        } else {
            0
        };
        assert_eq!(
            fault_code(translate(&mut memory, &smap, &FEATURES, LA, access)),
            PF_PRESENT | write_bit,
            "{access:?}"
        );
        assert!(translate(&mut memory, &long_regs(0), &FEATURES, LA, access).is_ok());
    }
    // RFLAGS.AC opens user pages to explicit supervisor accesses only.
    assert!(translate(&mut memory, &smap, &FEATURES, LA, read(KERNEL_AC)).is_ok());
    assert!(translate(&mut memory, &smap, &FEATURES, LA, write(KERNEL_AC)).is_ok());
    // SMAP does not apply to fetches (that is SMEP's job).
    assert!(translate(&mut memory, &smap, &FEATURES, LA, fetch(KERNEL)).is_ok());
    // A supervisor write with AC=1 still needs R/W with CR0.WP=1.
    let mut read_only = long_memory([ALL, ALL, ALL, P | US]);
    assert_eq!(
        fault_code(translate(
            &mut read_only,
            &smap,
            &FEATURES,
            LA,
            write(KERNEL_AC)
        )),
        PF_PRESENT | PF_WRITE
    );
}

#[test]
fn four_level_protection_keys() {
    let key = 5u64;
    let mut memory = long_memory([ALL, ALL, ALL, ALL | (key << 59)]);
    let mut regs = long_regs(CR4_PKE);
    regs.pkru = 1 << (2 * key); // access disable
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, LA, read(USER))),
        PF_PRESENT | PF_USER | PF_PROTECTION_KEY
    );
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, LA, read(KERNEL))),
        PF_PRESENT | PF_PROTECTION_KEY
    );
    // Keys do not restrict fetches.
    assert!(translate(&mut memory, &regs, &FEATURES, LA, fetch(USER)).is_ok());
    // Write disable: reads pass, user writes fault, supervisor writes
    // fault only with CR0.WP=1.
    regs.pkru = 2 << (2 * key);
    assert!(translate(&mut memory, &regs, &FEATURES, LA, read(USER)).is_ok());
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, LA, write(USER))),
        PF_PRESENT | PF_WRITE | PF_USER | PF_PROTECTION_KEY
    );
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, LA, write(KERNEL))),
        PF_PRESENT | PF_WRITE | PF_PROTECTION_KEY
    );
    regs.cr0 &= !CR0_WP;
    assert!(translate(&mut memory, &regs, &FEATURES, LA, write(KERNEL)).is_ok());
    // Without CR4.PKE, or on a supervisor page, the key is ignored.
    regs.pkru = u32::MAX;
    assert!(translate(&mut memory, &long_regs(0), &FEATURES, LA, write(USER)).is_ok());
    let mut kernel_page = long_memory([ALL, ALL, ALL, P | RW | (key << 59)]);
    assert!(translate(&mut kernel_page, &regs, &FEATURES, LA, write(KERNEL)).is_ok());
    // The other protection (U/S) is checked first: no PK bit.
    assert_eq!(
        fault_code(translate(
            &mut kernel_page,
            &regs,
            &FEATURES,
            LA,
            read(USER)
        )),
        PF_PRESENT | PF_USER
    );
}

#[test]
fn cr3_bits_above_maxphyaddr_are_ignored() {
    let mut memory = long_memory([ALL; 4]);
    let mut regs = long_regs(0);
    regs.cr3 |= 0x8000_0000_0000_0000 | 0x18;
    assert_eq!(
        gpa(translate(&mut memory, &regs, &FEATURES, LA, read(KERNEL))),
        0xab_cdef_0000
    );
}

// ------------------------------------------------------- 5-level paging

#[test]
fn five_level_uses_bits_56_48() {
    let mut memory = long_memory([ALL; 4]);
    const PML5: u64 = 0x20000;
    // 57-bit canonical address with PML5 index 0x1ff and the same lower
    // indices as LA.
    let la57 = 0xffff_ff80_c080_5000u64;
    memory.write_u64(PML5 + 0x1ff * 8, PML4 | ALL);
    let mut regs = long_regs(CR4_LA57);
    regs.cr3 = PML5;
    let t = translate(&mut memory, &regs, &FEATURES, la57 + 7, read(USER)).unwrap();
    assert_eq!(t.gpa, 0xab_cdef_0007);
    assert_eq!(t.accessed_dirty.as_slice().len(), 5);

    // An address canonical only with 57 bits.
    let high = 0x00ff_8000_0000_0000u64;
    assert!(matches!(
        translate(&mut memory, &long_regs(0), &FEATURES, high, read(USER)),
        Err(WalkError::NonCanonical { .. })
    ));
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, high, read(USER))),
        PF_USER
    );
    // PS in a PML5E is reserved.
    memory.write_u64(PML5 + 0x1ff * 8, PML4 | ALL | PS);
    assert_eq!(
        fault_code(translate(&mut memory, &regs, &FEATURES, la57, read(USER))),
        PF_PRESENT | PF_RESERVED | PF_USER
    );
}

#[test]
fn maxphyaddr_is_clamped_to_a_valid_range() {
    let mut memory = long_memory([ALL; 4]);
    for bits in [0, 12, 200] {
        let features = PagingFeatures {
            max_phys_addr_bits: bits,
            ..FEATURES
        };
        // Never panics; with 52 bits the translation succeeds.
        let _ = translate(&mut memory, &long_regs(0), &features, LA, read(KERNEL));
    }
}
