//! The ACPI fixed-hardware registers the guest uses to power off and to
//! reset (ACPI 6.5 §4.8.3 "PM1 Event Grouping" / "PM1 Control Grouping",
//! §4.8.3.6 "Reset Register").
//!
//! Port layout from [`crate::layout::ACPI_PM_PORT`]:
//!
//! | offset | size | register |
//! |--------|------|----------|
//! | 0      | 2    | PM1a_STS (write 1 to clear) |
//! | 2      | 2    | PM1a_EN |
//! | 4      | 2    | PM1a_CNT: SCI_EN reads as 1; SLP_TYP (bits 10-12) with SLP_EN (bit 13) enters a sleep state |
//! | 8      | 1    | RESET_REG: writing [`RESET_VALUE`] resets the machine |
//!
//! Entering S5 (`SLP_TYP` = [`S5_SLP_TYP`], the value of the DSDT's `\_S5`
//! package) ends the VM with [`ExitReason::PowerOff`]; a reset ends it with
//! [`ExitReason::Reboot`]. Other sleep states are refused (the DSDT does not
//! offer them) and logged.

use std::sync::Arc;

use crate::devices::bus::BusDevice;
use crate::exit::{ExitNotifier, ExitReason};

/// Offset of the PM1a event block (status, then enable).
pub const PM1A_EVT_OFFSET: u16 = 0;
/// Length of the PM1 event block.
pub const PM1_EVT_LEN: u8 = 4;
/// Offset of the PM1a control register.
pub const PM1A_CNT_OFFSET: u16 = 4;
/// Length of the PM1 control block.
pub const PM1_CNT_LEN: u8 = 2;
/// Offset of the reset register.
pub const RESET_OFFSET: u16 = 8;
/// The value whose write to the reset register resets the VM.
pub const RESET_VALUE: u8 = 0x1;
/// The `SLP_TYP` value of S5 in the DSDT.
pub const S5_SLP_TYP: u16 = 5;

const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7;
const SLP_EN: u16 = 1 << 13;

/// The ACPI PM registers.
pub struct AcpiPm {
    /// Registers as bytes: status (2), enable (2), control (2), pad, reset.
    regs: [u8; 16],
    exit: Arc<ExitNotifier>,
}

impl AcpiPm {
    /// Registers that report to `exit`.
    pub fn new(exit: Arc<ExitNotifier>) -> Self {
        let mut regs = [0u8; 16];
        regs[usize::from(PM1A_CNT_OFFSET)..][..2].copy_from_slice(&SCI_EN.to_le_bytes());
        AcpiPm { regs, exit }
    }

    fn control(&self) -> u16 {
        let o = usize::from(PM1A_CNT_OFFSET);
        u16::from_le_bytes([self.regs[o], self.regs[o + 1]])
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.regs.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut control_written = false;
        for (i, &b) in data.iter().enumerate() {
            let o = offset as usize + i;
            match o {
                // PM1 status: write 1 to clear.
                0 | 1 => self.regs[o] &= !b,
                2 | 3 => self.regs[o] = b,
                4 | 5 => {
                    self.regs[o] = b;
                    control_written = true;
                }
                8 if b == RESET_VALUE => {
                    log::info!("ACPI reset register written: reboot");
                    self.exit.exit(ExitReason::Reboot);
                }
                _ => {}
            }
        }
        if control_written {
            let cnt = self.control();
            if cnt & SLP_EN != 0 {
                let typ = (cnt >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if typ == S5_SLP_TYP {
                    log::info!("ACPI S5 requested: power off");
                    self.exit.exit(ExitReason::PowerOff);
                } else {
                    log::warn!("guest asked for unsupported ACPI sleep type {typ}; ignored");
                }
            }
            // SLP_EN is write-only; SCI_EN stays on (no SMI handshake).
            let cnt = (cnt & !SLP_EN) | SCI_EN;
            let o = usize::from(PM1A_CNT_OFFSET);
            self.regs[o..o + 2].copy_from_slice(&cnt.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm() -> (AcpiPm, Arc<ExitNotifier>) {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        (AcpiPm::new(exit.clone()), exit)
    }

    #[test]
    fn sci_en_reads_as_set() {
        let (mut pm, _) = pm();
        let mut d = [0u8; 2];
        pm.read(4, &mut d);
        assert_eq!(u16::from_le_bytes(d) & SCI_EN, SCI_EN);
        pm.write(4, &0u16.to_le_bytes());
        pm.read(4, &mut d);
        assert_eq!(u16::from_le_bytes(d) & SCI_EN, SCI_EN);
    }

    #[test]
    fn s5_powers_off() {
        let (mut pm, exit) = pm();
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
        pm.write(4, &(S5_SLP_TYP << 10 | SCI_EN).to_le_bytes());
        assert_eq!(exit.reason(), None);
        pm.write(4, &(S5_SLP_TYP << 10 | SLP_EN | SCI_EN).to_le_bytes());
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn other_sleep_states_are_ignored() {
        let (mut pm, exit) = pm();
        pm.write(4, &(3u16 << 10 | SLP_EN).to_le_bytes());
        assert_eq!(exit.reason(), None);
        let mut d = [0u8; 2];
        pm.read(4, &mut d);
        assert_eq!(u16::from_le_bytes(d) & SLP_EN, 0);
    }

    #[test]
    fn reset_register() {
        let (mut pm, exit) = pm();
        pm.write(8, &[0x2]);
        assert_eq!(exit.reason(), None);
        pm.write(8, &[RESET_VALUE]);
        assert_eq!(exit.reason(), Some(ExitReason::Reboot));
    }

    #[test]
    fn status_is_write_one_to_clear() {
        let (mut pm, _) = pm();
        pm.regs[0] = 0xff;
        pm.write(0, &[0x0f, 0]);
        let mut d = [0u8; 1];
        pm.read(0, &mut d);
        assert_eq!(d[0], 0xf0);
        // Out-of-range reads are zero, writes ignored.
        let mut big = [0xaau8; 4];
        pm.read(14, &mut big);
        assert_eq!(big, [0, 0, 0, 0]);
        pm.write(15, &[1, 2, 3]);
    }
}
