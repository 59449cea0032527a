//! Output on the 16550 at 0x3f8 (the VMM's console), the `log` backend
//! that the virtio-drivers crate reports through, and the two ways the
//! guest ends: ACPI power-off on success, a triple fault on failure, which
//! pvrs-vmm turns into exit statuses 0 and 1.

use core::arch::asm;
use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;
/// Line status register: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// pvrs-vmm's PM1a_CNT (`devices::acpi_pm`; the FADT says the same).
const PM1A_CNT: u16 = 0x604;
/// SLP_TYP = 5 (the DSDT's `\_S5`) with SLP_EN.
const S5: u16 = (5 << 10) | (1 << 13);

/// `in al, dx`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input has no memory effects; the guest owns all ports.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// `out dx, al`.
pub fn outb(port: u16, v: u8) {
    // SAFETY: as for `inb`.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// `out dx, ax`.
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `inb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// The serial port as a `fmt::Write`.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            while inb(COM1 + 5) & LSR_THRE == 0 {}
            outb(COM1, b);
        }
        Ok(())
    }
}

/// Prints a line prefixed with `VIRTIO-GUEST: `.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::console::Serial, "VIRTIO-GUEST: ");
        let _ = writeln!($crate::console::Serial, $($arg)*);
    }};
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(
                Serial,
                "virtio-drivers {}: {}",
                record.level(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Routes the driver crate's log messages (info and above) to the console.
pub fn init_logger() {
    static LOGGER: Logger = Logger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Ends the VM with ACPI S5: pvrs-vmm exits with status 0.
pub fn power_off() -> ! {
    outw(PM1A_CNT, S5);
    halt()
}

/// Ends the VM with a triple fault (`ud2` with no IDT: #UD, #GP, #DF,
/// shutdown): pvrs-vmm reports a crash and exits with status 1.
pub fn crash() -> ! {
    // SAFETY: deliberately faults; nothing runs afterwards.
    unsafe { asm!("ud2", options(noreturn)) }
}

fn halt() -> ! {
    loop {
        // SAFETY: interrupts are off; hlt just parks the vCPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
