//! The guest physical address space and the interrupt lines.
//!
//! ```text
//! 0x0000_0500  GDT (boot segments)         0x0000_0520  IDT (empty)
//! 0x0000_6000  PVH start_info + memmap     0x0000_7000  zero page (boot_params)
//! 0x0000_8ff0  boot stack top              0x0000_9000  PML4, PDPT, PD (identity map of 1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  -- end of low RAM --
//! 0x000e_0000  ACPI tables (RSDP first), reserved in the e820 map
//! 0x0010_0000  kernel (bzImage protected-mode part or ELF segments), then RAM
//! 0xc000_0000  -- MMIO gap (RAM beyond 3 GiB continues at 4 GiB) --
//! 0xd000_0000  virtio-mmio devices, 4 KiB each
//! 0xfec0_0000  IOAPIC                      0xfee0_0000  local APICs
//! 0xfffb_c000  KVM identity-map page, TSS (3 pages) up to 0xfffc_0000
//! ```

use vm_memory::GuestAddress;

/// GDT used at the 64-bit or 32-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT (interrupts stay disabled until the kernel loads its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The level-4 page table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// The page directory (512 x 2 MiB pages = the first GiB).
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// The largest command line accepted (boot protocol 2.06+ reports the
/// kernel's own limit in `cmdline_size`).
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// The end of conventional memory below 1 MiB (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI tables; the RSDP comes first, so that a scan of 0xe0000..0x100000 finds it.
pub const ACPI_START: u64 = 0xe0000;
/// The end of the ACPI tables area.
pub const ACPI_END: u64 = 0x100000;
/// Where the kernel is loaded and RAM continues ("high memory").
pub const HIMEM_START: u64 = 0x100000;

/// The start of the hole below 4 GiB that holds no RAM.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// The end of the hole (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The first virtio-mmio device.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// KVM's identity-map page (used on Intel without unrestricted guest).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS area (three pages, Intel only).
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// The local APIC base.
pub const APIC_START: u32 = 0xfee0_0000;
/// The IOAPIC base.
pub const IOAPIC_START: u32 = 0xfec0_0000;

/// The ISA IRQ (and GSI) of the serial port ttyS0.
pub const SERIAL_IRQ: u32 = 4;
/// The GSI of the ACPI SCI (never raised, but the guest claims it).
pub const ACPI_SCI_IRQ: u16 = 9;
/// The IRQ lines given to virtio-mmio devices, in device order. All are
/// ISA lines below 16, edge-triggered, identity-mapped to IOAPIC pins and
/// unused by anything else the guest sees (0 timer, 1 keyboard, 2 cascade,
/// 3/4 serial, 8 RTC, 9 SCI and 13 FPU are avoided).
pub const VIRTIO_IRQS: [u32; 8] = [5, 6, 7, 10, 11, 12, 14, 15];
/// The number of virtio devices the layout has room for.
pub const MAX_VIRTIO_DEVICES: usize = VIRTIO_IRQS.len();

/// The POST-code port: firmware progress codes, and Linux's `io_delay=0x80`.
pub const POST_PORT: u16 = 0x80;
/// The I/O port of the first serial port.
pub const SERIAL_PORT: u16 = 0x3f8;
/// The i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The ACPI fixed-hardware registers (see `devices::acpi_pm`).
pub const ACPI_PM_PORT: u16 = 0x600;
/// The number of ports the ACPI PM device decodes.
pub const ACPI_PM_PORT_LEN: u16 = 0x10;

// The command line fits below the EBDA; the boot stack sits between the
// zero page and the page tables.
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
const _: () =
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000);

/// The guest-physical address and IRQ of virtio-mmio device `index`.
pub fn virtio_mmio_slot(index: usize) -> Option<(GuestAddress, u32)> {
    let irq = *VIRTIO_IRQS.get(index)?;
    Some((
        GuestAddress(VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE),
        irq,
    ))
}

/// The RAM regions for `mem_bytes` of guest memory: one region from 0, and
/// a second from 4 GiB for whatever does not fit below the MMIO gap.
pub fn ram_regions(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_bytes.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if mem_bytes > MMIO_GAP_START {
        regions.push((
            GuestAddress(MMIO_GAP_END),
            (mem_bytes - MMIO_GAP_START) as usize,
        ));
    }
    regions
}

/// An e820 memory type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (here: the EBDA/ROM area and the ACPI tables).
    Reserved = 2,
}

/// The guest's memory map: low RAM, the reserved area with the ACPI tables,
/// RAM from 1 MiB, and RAM above 4 GiB if any.
pub fn e820_map(mem_bytes: u64) -> Vec<(u64, u64, E820Type)> {
    let mut map = vec![
        (0, EBDA_START, E820Type::Ram),
        (EBDA_START, HIMEM_START - EBDA_START, E820Type::Reserved),
    ];
    let low_end = mem_bytes.min(MMIO_GAP_START);
    map.push((HIMEM_START, low_end - HIMEM_START, E820Type::Ram));
    if mem_bytes > MMIO_GAP_START {
        map.push((MMIO_GAP_END, mem_bytes - MMIO_GAP_START, E820Type::Ram));
    }
    map
}

/// The end of RAM below the MMIO gap.
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        assert_eq!(ram_regions(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
        let map = e820_map(512 << 20);
        assert_eq!(
            map.last(),
            Some(&(HIMEM_START, (512 << 20) - HIMEM_START, E820Type::Ram))
        );
    }

    #[test]
    fn large_memory_skips_the_gap() {
        let mem = 4u64 << 30;
        let regions = ram_regions(mem);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(regions[1], (GuestAddress(MMIO_GAP_END), (1 << 30) as usize));
        let total: u64 = e820_map(mem)
            .iter()
            .filter(|e| e.2 == E820Type::Ram)
            .map(|e| e.1)
            .sum();
        assert_eq!(total, mem - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn fixed_areas_do_not_collide() {
        // Everything the VMM writes below 1 MiB, in order, without overlap.
        let areas = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 8),
            (PVH_INFO_START, 0x1000),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (ACPI_START, ACPI_END - ACPI_START),
        ];
        for w in areas.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?}");
        }
    }

    #[test]
    fn mmio_slots_are_in_the_gap() {
        for i in 0..MAX_VIRTIO_DEVICES {
            let (addr, irq) = virtio_mmio_slot(i).unwrap();
            assert!(
                addr.0 >= MMIO_GAP_START && addr.0 + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_START)
            );
            assert!(irq < 16 && irq != SERIAL_IRQ && irq != u32::from(ACPI_SCI_IRQ));
        }
        assert_eq!(virtio_mmio_slot(MAX_VIRTIO_DEVICES), None);
    }
}
