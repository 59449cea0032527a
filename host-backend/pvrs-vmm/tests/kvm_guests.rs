//! Small hand-assembled guests on the machine's /dev/kvm, run through the
//! real VMM (buses, serial port, ACPI PM and i8042 devices, virtio-mmio
//! transport, ioeventfds, the event thread, the vCPU run loop and exit
//! handling). A Linux boot is tested in the nested L1 instead
//! (`tests/run-guest --host kvm --vmm pvrs`).
//!
//! Each test is skipped (passes with a note) when /dev/kvm cannot be used.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pvrs_vmm::config::{BlkConfig, VmConfig};
use pvrs_vmm::exit::ExitReason;
use pvrs_vmm::vmm::{ConsoleInput, Payload, RunOptions, Vm};
use vm_memory::{Bytes, GuestAddress};

/// Where test code is loaded.
const CODE: u64 = 0x10_0000;

/// A console that collects output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn kvm_usable() -> bool {
    match kvm_ioctls::Kvm::new() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped: /dev/kvm is not usable here ({e})");
            false
        }
    }
}

fn config(blk: Vec<BlkConfig>) -> VmConfig {
    VmConfig {
        kernel: "unused".into(),
        initrd: None,
        cmdline: String::new(),
        cpus: 1,
        mem_mib: 64,
        blk,
        net: Vec::new(),
        balloon: None,
        control: None,
        log_level: None,
        hostile_used_len: 0,
    }
}

/// A few 32-bit x86 instructions, assembled by hand.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// mov dx, port; mov al, byte; out dx, al
    fn outb(&mut self, port: u16, v: u8) -> &mut Self {
        self.bytes(&[0x66, 0xba])
            .bytes(&port.to_le_bytes())
            .bytes(&[0xb0, v, 0xee])
    }
    /// mov dx, port; mov ax, word; out dx, ax
    fn outw(&mut self, port: u16, v: u16) -> &mut Self {
        self.bytes(&[0x66, 0xba]).bytes(&port.to_le_bytes());
        self.bytes(&[0x66, 0xb8])
            .bytes(&v.to_le_bytes())
            .bytes(&[0x66, 0xef])
    }
    fn print(&mut self, s: &str) -> &mut Self {
        for b in s.bytes() {
            self.outb(0x3f8, b);
        }
        self
    }
    /// mov dword [addr], v
    fn store32(&mut self, addr: u32, v: u32) -> &mut Self {
        self.bytes(&[0xc7, 0x05])
            .bytes(&addr.to_le_bytes())
            .bytes(&v.to_le_bytes())
    }
    /// mov eax, [addr]
    fn load32(&mut self, addr: u32) -> &mut Self {
        self.bytes(&[0xa1]).bytes(&addr.to_le_bytes())
    }
    /// Prints the four bytes of eax, low first.
    fn print_eax(&mut self) -> &mut Self {
        self.bytes(&[0x66, 0xba, 0xf8, 0x03]);
        for _ in 0..4 {
            self.bytes(&[0xee, 0xc1, 0xe8, 0x08]); // out dx, al; shr eax, 8
        }
        self
    }
    /// Spins until the word at `addr` is non-zero.
    fn wait_nonzero16(&mut self, addr: u32) -> &mut Self {
        self.bytes(&[0x66, 0xa1]).bytes(&addr.to_le_bytes()); // mov ax, [addr]
        self.bytes(&[0x66, 0x85, 0xc0]); // test ax, ax
        self.bytes(&[0x74, 0xf5]) // jz back to the mov (11 bytes)
    }
    /// ACPI S5: SLP_TYP=5, SLP_EN, SCI_EN to PM1a_CNT.
    fn poweroff(&mut self) -> &mut Self {
        self.outw(0x604, 5 << 10 | 1 << 13 | 1)
    }
    /// cli; hlt; jmp back to hlt
    fn halt(&mut self) -> &mut Self {
        self.bytes(&[0xfa, 0xf4, 0xeb, 0xfd])
    }
}

fn run(
    cfg: &VmConfig,
    code: &[u8],
    long_mode: bool,
    setup: impl FnOnce(&Vm),
) -> (ExitReason, String) {
    run_with_input(cfg, code, long_mode, setup, ConsoleInput::None)
}

fn run_with_input(
    cfg: &VmConfig,
    code: &[u8],
    long_mode: bool,
    setup: impl FnOnce(&Vm),
    input: ConsoleInput,
) -> (ExitReason, String) {
    let console = Captured::default();
    let vm = Vm::build_with(
        cfg,
        Payload::Raw {
            code,
            addr: CODE,
            long_mode,
        },
        Box::new(console.clone()),
    )
    .expect("building the VM");
    setup(&vm);
    let reason = vm.run_with(RunOptions { input }).expect("running the VM");
    (reason, console.text())
}

#[test]
fn serial_output_then_acpi_poweroff() {
    if !kvm_usable() {
        return;
    }
    let code = Asm::default()
        .print("hello from pvrs\n")
        .poweroff()
        .halt()
        .0
        .clone();
    let (reason, out) = run(&config(vec![]), &code, false, |_| {});
    assert_eq!(out, "hello from pvrs\n");
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(reason.status(), 0);
}

#[test]
fn serial_input_reaches_the_guest() {
    if !kvm_usable() {
        return;
    }
    // Echo three received bytes: poll LSR.DR, read RBR, write THR.
    let code = Asm::default()
        .bytes(&[0xb9, 3, 0, 0, 0]) // mov ecx, 3
        .bytes(&[0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xf7]) // wait for LSR.DR
        .bytes(&[0x66, 0xba, 0xf8, 0x03, 0xec, 0xee]) // in al, dx; out dx, al
        .bytes(&[0xe2, 0xef]) // loop
        .poweroff()
        .halt()
        .0
        .clone();
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
    tx.write_all(b"abc").unwrap();
    let input = ConsoleInput::Reader(std::fs::File::from(std::os::fd::OwnedFd::from(rx)));
    let (reason, out) = run_with_input(&config(vec![]), &code, false, |_| {}, input);
    assert_eq!((reason, out.as_str()), (ExitReason::PowerOff, "abc"));
}

#[test]
fn long_mode_entry_works_too() {
    if !kvm_usable() {
        return;
    }
    // The same port-I/O encodings are valid in 64-bit mode.
    let code = Asm::default().print("64\n").poweroff().halt().0.clone();
    let (reason, out) = run(&config(vec![]), &code, true, |_| {});
    assert_eq!((reason, out.as_str()), (ExitReason::PowerOff, "64\n"));
}

#[test]
fn i8042_reset_is_a_reboot() {
    if !kvm_usable() {
        return;
    }
    let code = Asm::default().outb(0x64, 0xfe).halt().0.clone();
    let (reason, _) = run(&config(vec![]), &code, false, |_| {});
    assert_eq!(reason, ExitReason::Reboot);
    assert_eq!(reason.status(), 0);
}

#[test]
fn acpi_reset_register_is_a_reboot() {
    if !kvm_usable() {
        return;
    }
    let code = Asm::default().outb(0x608, 1).halt().0.clone();
    assert_eq!(
        run(&config(vec![]), &code, false, |_| {}).0,
        ExitReason::Reboot
    );
}

#[test]
fn panic_then_reset_is_a_crash() {
    if !kvm_usable() {
        return;
    }
    let code = Asm::default()
        .print("Kernel panic - not syncing: test\n")
        .outb(0x64, 0xfe)
        .halt()
        .0
        .clone();
    let (reason, _) = run(&config(vec![]), &code, false, |_| {});
    assert_eq!(reason, ExitReason::PanicReboot);
    assert_eq!(reason.status(), 1);
}

#[test]
fn triple_fault_is_a_crash() {
    if !kvm_usable() {
        return;
    }
    // ud2 with an empty IDT: #UD, #GP, #DF, shutdown.
    let code = Asm::default().bytes(&[0x0f, 0x0b]).0.clone();
    let (reason, _) = run(&config(vec![]), &code, false, |_| {});
    assert_eq!(reason, ExitReason::TripleFault { vcpu: 0 });
    assert_eq!(reason.status(), 1);
}

#[test]
fn unknown_ports_read_all_ones() {
    if !kvm_usable() {
        return;
    }
    // in al, 0x84 (no device there; 0x80 is the POST port) -> 0xff; out to serial.
    let code = Asm::default()
        .bytes(&[0xe4, 0x84]) // in al, 0x84
        .bytes(&[0x66, 0xba, 0xf8, 0x03, 0xee]) // mov dx, 0x3f8; out dx, al
        .poweroff()
        .halt()
        .0
        .clone();
    let (reason, out) = run(&config(vec![]), &code, false, |_| {});
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(out.as_bytes(), [0xef, 0xbf, 0xbd]); // U+FFFD: 0xff is not UTF-8
}

/// A guest that drives a virtio-blk device through virtio-mmio: it reads
/// the magic value, brings the device up the way Linux does, submits one
/// read of sector 1 (descriptors prepared by the host in guest memory),
/// waits for the used ring, prints the first data bytes and the status.
#[test]
fn virtio_blk_read_through_mmio() {
    if !kvm_usable() {
        return;
    }
    let path = std::env::temp_dir().join(format!("pvrs-vmm-kvm-blk-{}", std::process::id()));
    let mut image = vec![0u8; 4096];
    image[512..516].copy_from_slice(b"DATA");
    std::fs::write(&path, &image).unwrap();

    let base: u32 = 0xd000_0000;
    let (desc, avail, used) = (0x1_0000u32, 0x1_1000u32, 0x1_2000u32);
    let (hdr, data, status) = (0x1_3000u64, 0x1_4000u64, 0x1_5000u64);
    let mut a = Asm::default();
    a.load32(base).print_eax().print("\n"); // "virt"
    a.store32(base + 0x70, 0) // status: reset
        .store32(base + 0x70, 1) // ACKNOWLEDGE
        .store32(base + 0x70, 3) // DRIVER
        .store32(base + 0x24, 1) // DriverFeaturesSel = 1
        .store32(base + 0x20, 1) // VERSION_1
        .store32(base + 0x70, 0xb) // FEATURES_OK
        .store32(base + 0x30, 0) // QueueSel
        .store32(base + 0x38, 16) // QueueNum
        .store32(base + 0x80, desc)
        .store32(base + 0x90, avail)
        .store32(base + 0xa0, used)
        .store32(base + 0x44, 1) // QueueReady
        .store32(base + 0x70, 0xf) // DRIVER_OK
        .store32(base + 0x50, 0) // QueueNotify(0): the ioeventfd
        .wait_nonzero16(used + 2)
        .load32(data as u32)
        .print_eax()
        .bytes(&[0xa0]) // mov al, [status]
        .bytes(&(status as u32).to_le_bytes())
        .bytes(&[0x04, b'0']) // add al, '0'
        .bytes(&[0x66, 0xba, 0xf8, 0x03, 0xee]) // out
        .print("\n")
        .poweroff()
        .halt();
    let code = a.0.clone();

    let cfg = config(vec![BlkConfig {
        path: path.clone(),
        read_only: false,
    }]);
    let (reason, out) = run(&cfg, &code, false, |vm| {
        let mem = vm.memory();
        // Request header: IN, sector 1.
        let mut h = [0u8; 16];
        h[8] = 1;
        mem.write_slice(&h, GuestAddress(hdr)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        // Descriptors: header (R, next 1), data 512 (W, next 2), status (W).
        let d = |addr: u64, len: u32, flags: u16, next: u16| {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            b
        };
        let table = [d(hdr, 16, 1, 1), d(data, 512, 3, 2), d(status, 1, 2, 0)];
        for (i, e) in table.iter().enumerate() {
            mem.write_slice(e, GuestAddress(u64::from(desc) + 16 * i as u64))
                .unwrap();
        }
        mem.write_obj(0u16, GuestAddress(u64::from(avail) + 4))
            .unwrap(); // ring[0] = 0
        mem.write_obj(1u16, GuestAddress(u64::from(avail) + 2))
            .unwrap(); // idx = 1
    });
    std::fs::remove_file(&path).unwrap();
    assert_eq!(reason, ExitReason::PowerOff, "console: {out:?}");
    assert_eq!(out, "virt\nDATA0\n");
}

/// The control socket of a running VM: status, balloon target, quit.
#[test]
fn control_socket() {
    if !kvm_usable() {
        return;
    }
    let sock = std::env::temp_dir().join(format!("pvrs-vmm-ctl-{}", std::process::id()));
    let mut cfg = config(vec![]);
    cfg.balloon = Some(pvrs_vmm::config::BalloonConfig::default());
    cfg.control = Some(sock.clone());
    let code = Asm::default().print("up\n").halt().0.clone();
    let console = Captured::default();
    let vm = Vm::build_with(
        &cfg,
        Payload::Raw {
            code: &code,
            addr: CODE,
            long_mode: false,
        },
        Box::new(console.clone()),
    )
    .unwrap();
    let runner = std::thread::spawn(move || {
        vm.run_with(RunOptions {
            input: ConsoleInput::None,
        })
        .unwrap()
    });
    let ask = |cmd: &str| {
        for _ in 0..200 {
            if let Ok(reply) = pvrs_vmm::vmm::control_client(&sock, cmd) {
                return reply;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no control socket");
    };
    let status = ask("status");
    assert!(
        status.starts_with("virtio-balloon: status=0x0 requests=0"),
        "{status}"
    );
    let target = ask("balloon 16");
    assert!(target.contains("4096 pages"), "{target}");
    assert!(ask("balloon-stats").contains("last stats: none yet"));
    assert!(ask("frobnicate").starts_with("error"));
    assert_eq!(ask("quit"), "stopping\n");
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
    assert_eq!(console.text(), "up\n");
    assert!(!sock.exists());
}
