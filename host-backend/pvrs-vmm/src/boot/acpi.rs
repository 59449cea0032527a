//! The ACPI tables the guest finds at boot, built with the rust-vmm
//! `acpi_tables` crate (ACPI 6.5 layouts).
//!
//! * RSDP (§5.2.5) at [`ACPI_START`], found through `boot_params.acpi_rsdp_addr`,
//!   `hvm_start_info.rsdp_paddr`, or the BIOS-area scan;
//! * XSDT (§5.2.8) listing the FADT and MADT;
//! * FADT (§5.2.9): a full (not hardware-reduced) FADT, so that the guest
//!   keeps its legacy 8259/ISA interrupt numbering, which the
//!   `virtio_mmio.device=...:IRQ` command-line devices and the 16550 rely
//!   on. It has no SMI command port (ACPI is always enabled), no PM timer
//!   and no GPE blocks; it points at the PM1a event and control registers
//!   and the reset register of [`crate::devices::acpi_pm`], and says that
//!   there is no 8042, VGA or CMOS RTC;
//! * FACS (§5.2.10), required by a full FADT;
//! * DSDT (§5.2.11.1) holding only the `\_S5` sleep package (§7.4.2), so
//!   that the guest can power off by writing `SLP_TYPa`/`SLP_EN`;
//! * MADT (§5.2.12) with one local APIC per vCPU and the IOAPIC at GSI 0.

use acpi_tables::aml::{Name, Package, Path};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::acpi_pm::{
    PM1A_CNT_OFFSET, PM1A_EVT_OFFSET, PM1_CNT_LEN, PM1_EVT_LEN, RESET_OFFSET, RESET_VALUE,
    S5_SLP_TYP,
};
use crate::layout::{ACPI_END, ACPI_PM_PORT, ACPI_SCI_IRQ, ACPI_START, APIC_START, IOAPIC_START};

const OEM_ID: [u8; 6] = *b"PVRS  ";
const OEM_TABLE_ID: [u8; 8] = *b"PVRSVMM ";
const OEM_REVISION: u32 = 1;

/// FADT `IAPC_BOOT_ARCH` bits (ACPI 6.5 table 5.11).
const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// An error placing the tables.
#[derive(Debug)]
pub enum AcpiError {
    /// The tables do not fit below [`ACPI_END`].
    TooLarge(u64),
    /// Writing guest memory failed.
    Memory(vm_memory::GuestMemoryError),
}

impl std::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcpiError::TooLarge(end) => {
                write!(f, "ACPI tables end at {end:#x}, past {ACPI_END:#x}")
            }
            AcpiError::Memory(e) => write!(f, "writing the ACPI tables: {e}"),
        }
    }
}

impl std::error::Error for AcpiError {}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// The DSDT: definition block header plus `Name(_S5, Package() {5, 5, 0, 0})`.
pub fn dsdt() -> Vec<u8> {
    let s5 = u8::try_from(S5_SLP_TYP).unwrap_or(5);
    let zero = 0u8;
    let package = Package::new(vec![&s5, &s5, &zero, &zero]);
    let name = Name::new(Path::new("_S5_"), &package);
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.append_slice(&bytes_of(&name));
    sdt.as_slice().to_vec()
}

fn io_gas(port: u16, bytes: u8) -> GAS {
    let access = match bytes {
        1 => AccessSize::ByteAccess,
        2 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(
        AddressSpace::SystemIo,
        bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

/// The FADT, pointing at the FACS and DSDT.
pub fn fadt(facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs_addr as u32)
        .dsdt_32(dsdt_addr as u32)
        // Power and sleep buttons are not fixed-feature hardware.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .flag(Flags::Wbinvd);
    b.sci_int = ACPI_SCI_IRQ.into();
    b.pm1a_evt_blk = u32::from(ACPI_PM_PORT + PM1A_EVT_OFFSET).into();
    b.pm1a_cnt_blk = u32::from(ACPI_PM_PORT + PM1A_CNT_OFFSET).into();
    b.pm1_evt_len = PM1_EVT_LEN;
    b.pm1_cnt_len = PM1_CNT_LEN;
    b.iapc_boot_arch = (IAPC_BOOT_ARCH_VGA_NOT_PRESENT
        | IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED
        | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT)
        .into();
    b.reset_reg = io_gas(ACPI_PM_PORT + RESET_OFFSET, 1);
    b.reset_value = RESET_VALUE;
    bytes_of(&b.finalize())
}

/// The MADT for `cpus` vCPUs.
pub fn madt(cpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(APIC_START),
    );
    for i in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(i, i, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_START, 0));
    bytes_of(&madt)
}

/// Builds all tables and writes them from [`ACPI_START`]. Returns the RSDP
/// address.
pub fn write_tables(mem: &GuestMemoryMmap, cpus: u8) -> Result<GuestAddress, AcpiError> {
    let rsdp_addr = ACPI_START;
    let xsdt_addr = align_up(rsdp_addr + Rsdp::len() as u64, 64);
    // The XSDT has two entries: header (36 bytes) + 2 * 8.
    let facs_addr = align_up(xsdt_addr + 36 + 16, 64);
    let dsdt_addr = align_up(facs_addr + FACS::len() as u64, 64);
    let dsdt = dsdt();
    let fadt_addr = align_up(dsdt_addr + dsdt.len() as u64, 64);
    let fadt = fadt(facs_addr, dsdt_addr);
    let madt_addr = align_up(fadt_addr + fadt.len() as u64, 64);
    let madt = madt(cpus);
    let end = madt_addr + madt.len() as u64;
    if end > ACPI_END {
        return Err(AcpiError::TooLarge(end));
    }

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes_of(&xsdt);
    debug_assert_eq!(xsdt.len(), 52);

    let tables: [(u64, Vec<u8>); 6] = [
        (rsdp_addr, bytes_of(&Rsdp::new(OEM_ID, xsdt_addr))),
        (xsdt_addr, xsdt),
        (facs_addr, bytes_of(&FACS::new())),
        (dsdt_addr, dsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
    ];
    for (addr, bytes) in &tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(AcpiError::Memory)?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        for t in [dsdt(), fadt(0xe0100, 0xe0200), madt(4)] {
            assert!(checksum_ok(&t));
            assert_eq!(u32_at(&t, 4) as usize, t.len());
        }
    }

    #[test]
    fn dsdt_contains_s5() {
        let d = dsdt();
        assert_eq!(&d[0..4], b"DSDT");
        // NameOp, "_S5_", PackageOp.
        let body = &d[36..];
        assert_eq!(body[0], 0x08);
        assert_eq!(&body[1..5], b"_S5_");
        assert_eq!(body[5], 0x12);
    }

    #[test]
    fn fadt_points_at_pm_registers() {
        let f = fadt(0xe0100, 0xe0200);
        assert_eq!(&f[0..4], b"FACP");
        assert_eq!(u32_at(&f, 36), 0xe0100); // FIRMWARE_CTRL
        assert_eq!(u32_at(&f, 40), 0xe0200); // DSDT
        assert_eq!(u16::from_le_bytes([f[46], f[47]]), ACPI_SCI_IRQ);
        assert_eq!(u32_at(&f, 48), 0); // SMI_CMD: ACPI always on
        assert_eq!(u32_at(&f, 56), u32::from(ACPI_PM_PORT + PM1A_EVT_OFFSET));
        assert_eq!(u32_at(&f, 64), u32::from(ACPI_PM_PORT + PM1A_CNT_OFFSET));
        assert_eq!(u32_at(&f, 76), 0); // no PM timer
        let flags = u32_at(&f, 112);
        assert_ne!(flags & (1 << 10), 0); // RESET_REG_SUP
        assert_eq!(flags & (1 << 20), 0); // not HW_REDUCED_ACPI
        assert_eq!(f[116], 1); // reset register in system I/O space
        assert_eq!(
            u64::from_le_bytes(f[120..128].try_into().unwrap()),
            u64::from(ACPI_PM_PORT + RESET_OFFSET)
        );
        assert_eq!(f[128], RESET_VALUE);
    }

    #[test]
    fn madt_lists_cpus_and_ioapic() {
        let m = madt(3);
        assert_eq!(&m[0..4], b"APIC");
        assert_eq!(u32_at(&m, 36), APIC_START);
        // 44-byte header, three 8-byte LAPIC entries, one 12-byte IOAPIC.
        assert_eq!(m.len(), 44 + 3 * 8 + 12);
        assert_eq!((m[44], m[47]), (0, 0));
        assert_eq!((m[60], m[63]), (0, 2));
        assert_eq!(m[68], 1);
        assert_eq!(u32_at(&m, 72), IOAPIC_START);
    }

    #[test]
    fn written_tables_are_linked() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let rsdp = write_tables(&mem, 2).unwrap();
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, rsdp).unwrap();
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert!(checksum_ok(&r[..20]) && checksum_ok(&r));
        let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let mut x = [0u8; 52];
        mem.read_slice(&mut x, GuestAddress(xsdt)).unwrap();
        assert_eq!(&x[0..4], b"XSDT");
        assert!(checksum_ok(&x));
        let fadt = u64::from_le_bytes(x[36..44].try_into().unwrap());
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(fadt)).unwrap();
        assert_eq!(&sig, b"FACP");
    }
}
