//! The legacy PC devices, emulated by the rust-vmm `vm-superio` crate and
//! glued to the bus here: the 16550A serial port at 0x3f8 (IRQ 4, through a
//! KVM irqfd) carrying the console, and the i8042 controller, kept only for
//! its reset line (`outb(0xfe, 0x64)`, Linux's `reboot=k`). Plus the POST
//! port 0x80, which needs no emulation beyond swallowing writes.

use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::serial::NoEvents;
use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::exit::{ExitNotifier, ExitReason};

/// Raises an interrupt by signalling an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The text that marks a guest kernel panic on the console (what Linux's
/// `panic()` prints first).
const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";

/// Where the console goes: a writer (stdout), with a watch for the kernel
/// panic line so that the reset after a panic counts as a crash.
pub struct ConsoleOut<W: Write> {
    out: W,
    line: Vec<u8>,
    exit: Arc<ExitNotifier>,
}

impl<W: Write> ConsoleOut<W> {
    /// A console writing to `out`.
    pub fn new(out: W, exit: Arc<ExitNotifier>) -> Self {
        ConsoleOut {
            out,
            line: Vec::with_capacity(256),
            exit,
        }
    }

    /// The underlying writer.
    pub fn inner(&self) -> &W {
        &self.out
    }

    fn watch(&mut self, byte: u8) {
        if byte == b'\n' {
            if self
                .line
                .windows(PANIC_MARKER.len())
                .any(|w| w == PANIC_MARKER)
            {
                self.exit.note_panic();
            }
            self.line.clear();
        } else if self.line.len() < 1024 {
            self.line.push(byte);
        }
    }
}

impl<W: Write> Write for ConsoleOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.watch(b);
        }
        self.out.write_all(buf)?;
        if buf.contains(&b'\n') {
            self.out.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The serial port on the bus.
pub struct SerialDevice<W: Write + Send> {
    serial: Serial<IrqTrigger, NoEvents, ConsoleOut<W>>,
}

impl<W: Write + Send> SerialDevice<W> {
    /// A 16550A whose interrupt is `irq` and whose output goes to `out`.
    pub fn new(irq: EventFd, out: W, exit: Arc<ExitNotifier>) -> Self {
        SerialDevice {
            serial: Serial::new(IrqTrigger(irq), ConsoleOut::new(out, exit)),
        }
    }

    /// Queues guest input; bytes that do not fit in the receive FIFO are
    /// dropped. Returns how many were queued.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(bytes.len());
        match self.serial.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("serial input dropped: {e:?}");
                0
            }
        }
    }

    /// Flushes the console.
    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().flush();
    }

    /// The console writer.
    pub fn console(&self) -> &ConsoleOut<W> {
        self.serial.writer()
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.serial.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&b), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.serial.write(off, b) {
                log::debug!("serial write: {e:?}");
            }
        }
    }
}

/// Port 0x80, where PC firmware writes POST codes and where Linux writes
/// for a short delay (`outb_p`, `io_delay=0x80`) when the KVM
/// `NOP_IO_DELAY` feature is off. Decoding it keeps those writes off the
/// unhandled-port path (codes go to the trace log). Reads return 0xff, as
/// on QEMU's `ioport80`.
#[derive(Default)]
pub struct PostPort;

impl BusDevice for PostPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            log::trace!("POST code {code:#04x}");
        }
    }
}

/// Reports the i8042 reset line as a guest reboot.
pub struct ResetTrigger(pub Arc<ExitNotifier>);

impl Trigger for ResetTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        log::info!("i8042 reset line pulsed: reboot");
        self.0.exit(ExitReason::Reboot);
        Ok(())
    }
}

/// One port of the i8042: the device decodes offset 0 (data, port 0x60)
/// and offset 4 (command/status, port 0x64); each port is put on the bus on
/// its own, with the offset it stands for.
pub struct I8042Port {
    /// The shared controller.
    pub device: Arc<std::sync::Mutex<I8042Device<ResetTrigger>>>,
    /// The controller offset of this port.
    pub offset: u8,
}

impl BusDevice for I8042Port {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self
                .device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(self.offset);
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            let mut dev = self.device.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = dev.write(self.offset, b) {
                log::debug!("i8042 write: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn serial_prints_and_interrupts() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq.try_clone().unwrap(), Vec::new(), exit.clone());
        // Enable the THR-empty interrupt, then write two bytes.
        s.write(1, &[0x02]);
        for b in b"ok\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(s.console().inner().as_slice(), b"ok\n");
        assert!(irq.read().unwrap() >= 1);
        // Line status: THR empty.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn serial_input_is_readable() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, Vec::new(), exit);
        assert_eq!(s.enqueue_input(b"hi"), 2);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'h');
    }

    #[test]
    fn panic_line_then_reset_is_a_crash() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let mut c = ConsoleOut::new(Vec::new(), exit.clone());
        c.write_all(b"[ 1.0] Kernel panic - not syncing: Attempted to kill init!\r\n")
            .unwrap();
        exit.exit(ExitReason::Reboot);
        assert_eq!(exit.reason(), Some(ExitReason::PanicReboot));
    }

    #[test]
    fn post_port_swallows_writes() {
        let mut p = PostPort;
        p.write(0, &[0x42]);
        let mut b = [0u8; 2];
        p.read(0, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }

    #[test]
    fn i8042_reset_reboots() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let dev = Arc::new(Mutex::new(I8042Device::new(ResetTrigger(exit.clone()))));
        let mut cmd = I8042Port {
            device: dev.clone(),
            offset: 4,
        };
        let mut status = [0u8];
        cmd.read(0, &mut status);
        cmd.write(0, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reboot));
    }
}
