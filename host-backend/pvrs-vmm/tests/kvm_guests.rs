//! Small hand-assembled guests run through the real VMM (buses, serial
//! port, ACPI PM and i8042 devices, virtio-mmio transport, ioeventfds, the
//! event thread, the vCPU run loop and exit handling) on the KVM device
//! named by `PVRS_KVM_DEV`, by default the machine's `/dev/kvm`. The same
//! binary runs against pvrs-kvm's `/dev/pvrs` inside the nested L1
//! (`tests/build-vmm` builds it static as `build/vmm/kvm-guests`; there:
//! `PVRS_KVM_DEV=/dev/pvrs kvm-guests`). A Linux boot is tested in the
//! nested L1 instead (`tests/run-guest --host kvm --vmm pvrs`).
//!
//! Each test is skipped (passes with a note on stderr) when the default
//! `/dev/kvm` cannot be opened (a device named by `PVRS_KVM_DEV` must
//! open, or the tests fail), and a test that needs an optional capability the
//! device lacks (interrupt delivery needs KVM_CAP_IRQCHIP and
//! KVM_CAP_IRQFD) is skipped with the reason. The fallbacks themselves are
//! tested on any device by treating features as missing
//! (`VmConfig::kvm_without`). `PVRS_VMM_LOG=info` shows the VMM's view of
//! the device and the fallbacks it takes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pvrs_vmm::capabilities::{open_device, Feature, FeatureSet, KvmCapabilities, DEFAULT_KVM_DEV};
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

/// The device named by `PVRS_KVM_DEV`, if any.
fn requested_dev() -> Option<PathBuf> {
    std::env::var_os("PVRS_KVM_DEV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The KVM device under test.
fn kvm_dev() -> PathBuf {
    requested_dev().unwrap_or_else(|| PathBuf::from(DEFAULT_KVM_DEV))
}

/// Says why a test is skipped. Written to the stderr handle rather than
/// with `eprintln!`, which the test harness captures and shows only for
/// failing tests: a skip must be visible in a passing run.
fn skip(why: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// The device's capabilities, or `None` (with the reason shown) when the
/// default `/dev/kvm` cannot be used. A device named by `PVRS_KVM_DEV`
/// must open: a run against `/dev/pvrs` without the module loaded fails
/// rather than passing with every test skipped. Also installs the VMM's
/// logger, so that `PVRS_VMM_LOG=info` shows which fallbacks the VMM took
/// on the device.
fn device() -> Option<KvmCapabilities> {
    pvrs_vmm::logger::init();
    match open_device(&kvm_dev()) {
        Ok(kvm) => Some(KvmCapabilities::probe(&kvm, None, FeatureSet::EMPTY)),
        Err(e) if requested_dev().is_some() => panic!("PVRS_KVM_DEV: {e}"),
        Err(e) => {
            skip(format_args!("{e}"));
            None
        }
    }
}

fn kvm_usable() -> bool {
    device().is_some()
}

/// Whether the device can be used and has all of `needed`; shows why the
/// calling test is skipped otherwise.
fn device_has(test: &str, needed: &[Feature]) -> bool {
    let Some(caps) = device() else {
        return false;
    };
    let lacking = caps.lacking(needed);
    if lacking != FeatureSet::EMPTY {
        skip(format_args!(
            "{test}: {} lacks {lacking}",
            kvm_dev().display()
        ));
        return false;
    }
    true
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
        kvm_dev: kvm_dev(),
        kvm_without: FeatureSet::EMPTY,
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
    /// sti; hlt; jmp back to hlt: waits for interrupts forever.
    fn wait_for_interrupts(&mut self) -> &mut Self {
        self.bytes(&[0xfb, 0xf4, 0xeb, 0xfd])
    }
    /// lidt [addr]
    fn lidt(&mut self, addr: u32) -> &mut Self {
        self.bytes(&[0x0f, 0x01, 0x1d]).bytes(&addr.to_le_bytes())
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
    virtio_blk_read("plain", FeatureSet::EMPTY);
}

/// The same without an ioeventfd: the QueueNotify write comes to the VMM
/// as an MMIO exit and must reach the same queue handler.
#[test]
fn virtio_blk_read_without_ioeventfd() {
    if !kvm_usable() {
        return;
    }
    virtio_blk_read("no-ioeventfd", [Feature::Ioeventfd].into_iter().collect());
}

/// The same with every optional feature treated as missing (no irqchip, so
/// no interrupts; no ioeventfd; the minimal CPUID): the guest polls, so it
/// still works, as it must on a device like pvrs-kvm's first version.
#[test]
fn virtio_blk_read_without_any_optional_feature() {
    if !kvm_usable() {
        return;
    }
    virtio_blk_read("bare", FeatureSet::all());
}

fn virtio_blk_read(variant: &str, kvm_without: FeatureSet) {
    let path =
        std::env::temp_dir().join(format!("pvrs-vmm-kvm-blk-{variant}-{}", std::process::id()));
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
        .store32(base + 0x50, 0) // QueueNotify(0): the ioeventfd, or an MMIO exit
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

    let mut cfg = config(vec![BlkConfig {
        path: path.clone(),
        read_only: false,
    }]);
    cfg.kvm_without = kvm_without;
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
    control_socket_with("plain", FeatureSet::EMPTY);
}

/// The same without an irqchip: the guest's HLT then comes back to the
/// VMM, the vCPU thread waits for the end of the VM, and `quit` still ends
/// it.
#[test]
fn halted_vcpu_without_irqchip_waits_for_the_end() {
    if !kvm_usable() {
        return;
    }
    control_socket_with("no-irqchip", [Feature::Irqchip].into_iter().collect());
}

fn control_socket_with(variant: &str, kvm_without: FeatureSet) {
    let sock = std::env::temp_dir().join(format!("pvrs-vmm-ctl-{variant}-{}", std::process::id()));
    let mut cfg = config(vec![]);
    cfg.kvm_without = kvm_without;
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
    // The control socket answers while the guest may still be printing (a
    // slow nested host took longer than the questions above): quit only
    // once the guest is halted after its output, which is the state under
    // test.
    for _ in 0..1000 {
        if console.text() == "up\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(ask("quit"), "stopping\n");
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
    assert_eq!(console.text(), "up\n");
    assert!(!sock.exists());
}

/// Interrupt delivery through the in-kernel irqchip: the guest programs the
/// 8259 (IRQ 4 at vector 0x24), lets the local APIC pass it (LINT0 ExtINT,
/// unmasked), loads an IDT, enables the serial port's transmitter-empty
/// interrupt and waits in HLT; the handler prints and powers off. Needs
/// KVM_CAP_IRQCHIP and KVM_CAP_IRQFD, and is skipped without them: without
/// an irqchip there is nothing to deliver the interrupt.
#[test]
fn serial_interrupt_reaches_the_guest() {
    if !device_has(
        "serial_interrupt_reaches_the_guest",
        &[Feature::Irqchip, Feature::Irqfd],
    ) {
        return;
    }
    const IDTR: u64 = 0x1_6000;
    const IDT: u64 = 0x1_7000;
    const VECTOR_BASE: u8 = 0x20;
    const SERIAL_VECTOR: u64 = VECTOR_BASE as u64 + 4;
    const APIC_SVR: u32 = 0xfee0_00f0;
    const APIC_LVT0: u32 = 0xfee0_0350;

    let mut a = Asm::default();
    // 8259 master: ICW1 (edge, cascade, ICW4), ICW2 vector base, ICW3
    // slave on IRQ 2, ICW4 8086 mode; then mask all but IRQ 4.
    a.outb(0x20, 0x11)
        .outb(0x21, VECTOR_BASE)
        .outb(0x21, 0x04)
        .outb(0x21, 0x01)
        .outb(0x21, !(1 << 4));
    // Local APIC software-enabled (spurious vector 0xff), LINT0 ExtINT.
    a.store32(APIC_SVR, 0x1ff).store32(APIC_LVT0, 0x700);
    a.lidt(IDTR as u32);
    a.outb(0x3f9, 0x02) // IER: transmitter holding register empty
        .outb(0x3f8, b'x')
        .wait_for_interrupts();
    let handler = CODE + a.0.len() as u64;
    a.print("IRQ\n").poweroff().halt();
    let code = a.0.clone();

    let (reason, out) = run(&config(vec![]), &code, false, |vm| {
        let mem = vm.memory();
        let limit = (SERIAL_VECTOR * 8 + 7) as u16;
        mem.write_obj(limit, GuestAddress(IDTR)).unwrap();
        mem.write_obj(IDT as u32, GuestAddress(IDTR + 2)).unwrap();
        // A present 32-bit interrupt gate, DPL 0, to the flat code
        // segment 0x10 of the boot GDT.
        let gate = (handler & 0xffff) | 0x10 << 16 | 0x8e00 << 32 | (handler & 0xffff_0000) << 32;
        mem.write_obj(gate, GuestAddress(IDT + SERIAL_VECTOR * 8))
            .unwrap();
    });
    assert_eq!((reason, out.as_str()), (ExitReason::PowerOff, "xIRQ\n"));
}

/// Without an in-kernel irqchip the VMM cannot start application
/// processors, and says so instead of letting them run from the reset
/// vector.
#[test]
fn several_vcpus_need_an_irqchip() {
    if !kvm_usable() {
        return;
    }
    let mut cfg = config(vec![]);
    cfg.cpus = 2;
    cfg.kvm_without = [Feature::Irqchip].into_iter().collect();
    let code = Asm::default().poweroff().halt().0.clone();
    let err = match Vm::build_with(
        &cfg,
        Payload::Raw {
            code: &code,
            addr: CODE,
            long_mode: false,
        },
        Box::new(Captured::default()),
    ) {
        Ok(_) => panic!("2 vCPUs without an irqchip were accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("KVM_CAP_IRQCHIP"), "{err}");
}

/// A device path that is no KVM device is an error, not a panic.
#[test]
fn a_device_that_is_not_kvm_is_refused() {
    let mut cfg = config(vec![]);
    cfg.kvm_dev = "/dev/null".into();
    let code = Asm::default().halt().0.clone();
    let built = Vm::build_with(
        &cfg,
        Payload::Raw {
            code: &code,
            addr: CODE,
            long_mode: false,
        },
        Box::new(Captured::default()),
    );
    let err = built.err().expect("/dev/null accepted as a KVM device");
    assert!(err.to_string().contains("/dev/null"), "{err}");
}
