//! The boot processor's initial state: segments, control registers, page
//! tables and general registers for the two entry points pvrs-vmm uses.
//!
//! * Linux 64-bit boot protocol (`Documentation/arch/x86/boot.rst`, "64-bit
//!   boot protocol"): long mode with an identity map covering the kernel,
//!   the zero page and the command line; flat `__BOOT_CS` (0x10) and
//!   `__BOOT_DS` (0x18) segments; `rsi` = the zero page; entry at the
//!   protected-mode kernel's start + 0x200.
//! * PVH (Xen's `docs/misc/pvh.pandoc`, used by Linux's `CONFIG_PVH`): 32-bit
//!   protected mode without paging, flat segments, a 32-bit TSS, `ebx` =
//!   the `hvm_start_info` address.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page table entry bits: present, writable, and (in a directory) 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_LARGE: u64 = 0x80;

/// GDT access/flag words in the usual 16-bit packing: bits 0-7 are the
/// access byte (type, S, DPL, P) and bits 12-15 the flags nibble (AVL, L,
/// D/B, G).
const CODE64: u16 = 0xa09b;
const CODE32: u16 = 0xc09b;
const DATA: u16 = 0xc093;
const TSS32_BUSY: u16 = 0x008b;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// The Linux 64-bit boot protocol.
    Linux64 {
        /// The 64-bit entry (`startup_64`).
        rip: u64,
        /// The `boot_params` address, passed in rsi.
        zero_page: u64,
    },
    /// The PVH entry.
    Pvh {
        /// The 32-bit PVH entry point from the ELF note.
        rip: u64,
        /// The `hvm_start_info` address, passed in ebx.
        start_info: u64,
    },
}

/// Packs a GDT descriptor from its flags word, base and (20-bit) limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM view of the segment that `entry` describes, loaded with the
/// selector of GDT slot `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let g = bit(55);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: if bit(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// The boot GDT of an entry point: slot 2 (selector 0x10) is code, slot 3
/// (0x18) data, slot 4 (0x20) the TSS.
pub fn boot_gdt(entry: &EntryPoint) -> [u64; 5] {
    let code = match entry {
        EntryPoint::Linux64 { .. } => CODE64,
        EntryPoint::Pvh { .. } => CODE32,
    };
    [
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS32_BUSY, 0, 0x67),
    ]
}

/// Writes the GDT and the empty IDT.
pub fn write_descriptor_tables(
    mem: &GuestMemoryMmap,
    gdt: &[u64],
) -> vm_memory::GuestMemoryResult<()> {
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
}

/// Writes an identity map of the first GiB with 2 MiB pages.
pub fn write_identity_map(mem: &GuestMemoryMmap) -> vm_memory::GuestMemoryResult<()> {
    mem.write_obj(PDPTE_START | PTE_PRESENT_RW, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | PTE_PRESENT_RW, GuestAddress(PDPTE_START))?;
    for i in 0..512u64 {
        mem.write_obj(
            (i << 21) | PTE_PRESENT_RW | PDE_LARGE,
            GuestAddress(PDE_START + i * 8),
        )?;
    }
    Ok(())
}

/// Sets the special registers for `entry` on top of the vCPU's reset state.
pub fn boot_sregs(mut sregs: kvm_sregs, entry: &EntryPoint) -> kvm_sregs {
    let gdt = boot_gdt(entry);
    let code = segment_from_gdt(gdt[2], 2);
    let data = segment_from_gdt(gdt[3], 3);
    let tss = segment_from_gdt(gdt[4], 4);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !(CR0_CD | CR0_NW);
    match entry {
        EntryPoint::Linux64 { .. } => {
            sregs.cr3 = PML4_START;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryPoint::Pvh { .. } => {
            sregs.cr0 &= !CR0_PG;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// The general registers at the entry point.
pub fn boot_regs(entry: &EntryPoint) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        ..Default::default()
    };
    match *entry {
        EntryPoint::Linux64 { rip, zero_page } => {
            regs.rip = rip;
            regs.rsi = zero_page;
        }
        EntryPoint::Pvh { rip, start_info } => {
            regs.rip = rip;
            regs.rbx = start_info;
        }
    }
    regs
}

/// The x87/SSE state at reset (FCW and MXCSR defaults).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_back() {
        let e = gdt_entry(CODE64, 0, 0xfffff);
        assert_eq!(e, 0x00af_9b00_0000_ffff);
        let s = segment_from_gdt(e, 2);
        assert_eq!(
            (s.selector, s.type_, s.present, s.s, s.l, s.db, s.g),
            (0x10, 0xb, 1, 1, 1, 0, 1)
        );
        assert_eq!((s.base, s.limit, s.unusable), (0, 0xffff_ffff, 0));

        let d = segment_from_gdt(gdt_entry(DATA, 0, 0xfffff), 3);
        assert_eq!((d.selector, d.type_, d.db, d.l), (0x18, 3, 1, 0));

        let t = segment_from_gdt(gdt_entry(TSS32_BUSY, 0x1234_5678, 0x67), 4);
        assert_eq!(
            (t.base, t.limit, t.g, t.s, t.type_),
            (0x1234_5678, 0x67, 0, 0, 0xb)
        );

        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn long_mode_sregs() {
        let entry = EntryPoint::Linux64 {
            rip: 0x100200,
            zero_page: 0x7000,
        };
        let s = boot_sregs(
            kvm_sregs {
                cr0: 0x6000_0010,
                ..Default::default()
            },
            &entry,
        );
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr0 & (CR0_CD | CR0_NW), 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(
            (s.cs.selector, s.ds.selector, s.tr.selector),
            (0x10, 0x18, 0x20)
        );
        assert_eq!(s.cs.l, 1);
        let r = boot_regs(&entry);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100200, 0x7000, 2));
    }

    #[test]
    fn pvh_sregs() {
        let entry = EntryPoint::Pvh {
            rip: 0x1000000,
            start_info: 0x6000,
        };
        let s = boot_sregs(kvm_sregs::default(), &entry);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((s.efer, s.cr4), (0, 0));
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        assert_eq!(boot_regs(&entry).rbx, 0x6000);
    }

    #[test]
    fn identity_map_is_written() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_identity_map(&mem).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PML4_START)).unwrap(),
            PDPTE_START | 3
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PDE_START + 8)).unwrap(),
            (1 << 21) | 0x83
        );
        let entry = EntryPoint::Linux64 {
            rip: 0,
            zero_page: 0,
        };
        write_descriptor_tables(&mem, &boot_gdt(&entry)).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(BOOT_GDT_START + 16))
                .unwrap(),
            gdt_entry(CODE64, 0, 0xfffff)
        );
    }
}
