//! Putting a VM together and running it.
//!
//! [`Vm::build`] opens the KVM device (`/dev/kvm` or `--kvm-dev`), asks
//! which optional features it has ([`crate::capabilities`]), and sets up,
//! with the plain KVM API: the VM with its in-kernel IOAPIC/PIC/LAPIC and
//! PIT, guest memory (one memory slot per RAM region), the devices on the
//! port-I/O and MMIO buses with an irqfd per interrupt line and an
//! ioeventfd per virtqueue, the ACPI tables, the kernel, and the vCPUs.
//! Where the device lacks one of the optional features, the VM does
//! without it and says so in the log (interrupts not delivered, queue
//! notifications as MMIO exits, a minimal CPUID). [`Vm::run`] starts one
//! thread per vCPU and one event thread (`event-manager`) for device work,
//! stdin and the control socket, and waits until something ends the VM.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, VcpuFd, VmFd};
use virtio_bindings::bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::terminal::Terminal;

use crate::boot::{self, BootSpec, MmioAnnouncement};
use crate::capabilities::{self, Feature, KvmCapabilities};
use crate::config::VmConfig;
use crate::cpu::regs::{self, EntryPoint};
use crate::cpu::{self, cpuid, UnhandledCounters, Vcpu, VcpuSetup};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::bus::Bus;
use crate::devices::legacy::{I8042Port, PostPort, ResetTrigger, SerialDevice};
use crate::exit::{ExitNotifier, ExitReason};
use crate::layout;
use crate::virtio::block::{Block, FileDisk};
use crate::virtio::chain::ChainLimits;
use crate::virtio::mmio::MmioTransport;
use crate::virtio::VirtioDevice;

/// A failure to build the VM.
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> BuildError {
    move |e| BuildError(format!("{what}: {e}"))
}

/// Where the serial console goes.
pub type Console = Box<dyn Write + Send>;
type Serial = SerialDevice<Console>;

/// What the VM boots.
pub enum Payload<'a> {
    /// The kernel, initrd and command line of the configuration.
    Kernel,
    /// Raw machine code for tests: loaded at `addr` and entered there in
    /// 32-bit flat protected mode (`long_mode` false) or in 64-bit mode
    /// with the boot identity map of the first GiB. It is taken not to
    /// execute CPUID, so a device without `KVM_SET_CPUID2` can run it
    /// (see [`cpu::configure_vcpu`]).
    Raw {
        /// The code.
        code: &'a [u8],
        /// Where it is loaded and entered.
        addr: u64,
        /// 64-bit rather than 32-bit entry.
        long_mode: bool,
    },
}

/// Where the guest's console input comes from.
pub enum ConsoleInput {
    /// No input.
    None,
    /// stdin (a terminal is put in raw mode while the VM runs).
    Stdin,
    /// Any readable, pollable file (a pipe, a socket).
    Reader(File),
}

/// Run-time options.
pub struct RunOptions {
    /// Console input.
    pub input: ConsoleInput,
}
type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A built VM, ready to run.
pub struct Vm {
    // Keeps the VM (and its memory slots, irqfds, ioeventfds) alive.
    _vm: VmFd,
    mem: Arc<GuestMemoryMmap>,
    vcpus: Vec<VcpuFd>,
    in_kernel_lapic: bool,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitNotifier>,
    serial: Arc<Mutex<Serial>>,
    subscribers: Vec<Subscriber>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    control: Option<PathBuf>,
}

/// The signal that kicks vCPU threads out of `KVM_RUN` when the VM ends.
fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// A device with the chain limits of its queues.
type DeviceWithLimits = (Box<dyn VirtioDevice>, ChainLimits);

/// The virtio devices of a configuration, in slot order.
fn make_devices(cfg: &VmConfig) -> Result<Vec<DeviceWithLimits>, BuildError> {
    let mut devices: Vec<DeviceWithLimits> = Vec::new();
    for (i, b) in cfg.blk.iter().enumerate() {
        let disk = FileDisk::open(&b.path, b.read_only)
            .map_err(err(format!("opening disk {}", b.path.display())))?;
        let serial = b
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("pvrs-blk{i}"));
        let name = format!("virtio-blk{i}");
        if disk_size_unaligned(&disk) {
            log::warn!(
                "{name}: {} is not a whole number of 512-byte sectors; the tail is not visible",
                b.path.display()
            );
        }
        devices.push((
            Box::new(Block::new(name, disk, b.read_only, &serial)),
            Block::<FileDisk>::chain_limits(),
        ));
    }
    for (i, n) in cfg.net.iter().enumerate() {
        let dev = crate::virtio::net::Net::new(format!("virtio-net{i}"), &n.tap, n.mac)
            .map_err(err(format!("opening tap {}", n.tap)))?;
        devices.push((Box::new(dev), crate::virtio::net::Net::chain_limits()));
    }
    if let Some(b) = &cfg.balloon {
        let dev = crate::virtio::balloon::Balloon::new("virtio-balloon".into(), b)
            .map_err(err("balloon"))?;
        devices.push((
            Box::new(dev),
            crate::virtio::balloon::Balloon::chain_limits(),
        ));
    }
    Ok(devices)
}

fn disk_size_unaligned(disk: &FileDisk) -> bool {
    use crate::virtio::block::DiskBackend;
    disk.size() % crate::virtio::block::SECTOR_SIZE != 0
}

/// Connects `evt` to interrupt line `gsi` with an irqfd when the VM
/// delivers interrupts; otherwise leaves it unconnected, so that the
/// device's signals are counted in the eventfd and go nowhere.
fn connect_irq(
    vm: &VmFd,
    caps: &KvmCapabilities,
    evt: &EventFd,
    gsi: u32,
    what: &str,
) -> Result<(), BuildError> {
    if caps.delivers_interrupts() {
        vm.register_irqfd(evt, gsi)
            .map_err(err(format!("KVM_IRQFD ({what})")))?;
    }
    Ok(())
}

/// The VM-wide setup that depends on optional features: the TSS and
/// identity-map addresses, the in-kernel irqchip and PIT. Logs what is
/// done without.
fn set_up_optional_features(
    vm: &VmFd,
    caps: &KvmCapabilities,
    dev: &Path,
    cpus: u8,
) -> Result<(), BuildError> {
    // The TSS and identity-map pages are only used by Intel VMX without
    // unrestricted guest, to run real mode; a device without the
    // capability has no use for them.
    if caps.has(Feature::SetTssAddr) {
        vm.set_tss_address(layout::KVM_TSS_START as usize)
            .map_err(err("KVM_SET_TSS_ADDR"))?;
    } else {
        log::debug!("{}: no KVM_CAP_SET_TSS_ADDR; not set", dev.display());
    }
    if caps.has(Feature::SetIdentityMapAddr) {
        if let Err(e) = vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_START) {
            log::debug!("KVM_SET_IDENTITY_MAP_ADDR: {e}");
        }
    }

    if caps.has(Feature::Irqchip) {
        vm.create_irq_chip().map_err(err("KVM_CREATE_IRQCHIP"))?;
        if caps.has(Feature::Pit2) {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(err("KVM_CREATE_PIT2"))?;
        } else {
            log::warn!(
                "{}: no KVM_CAP_PIT2: the guest has no PIT (i8254) timer",
                dev.display()
            );
        }
    } else if cpus > 1 {
        // Without an in-kernel local APIC, KVM starts every vCPU runnable
        // at the reset vector instead of waiting for INIT/SIPI, and the
        // VMM has no way to send those: application processors cannot be
        // started the way a guest expects.
        return Err(BuildError(format!(
            "{} vCPUs need an in-kernel irqchip (KVM_CAP_IRQCHIP) to start the application processors; {} has none: use --cpus 1",
            cpus,
            dev.display()
        )));
    }
    if !caps.delivers_interrupts() {
        let why = if caps.has(Feature::Irqchip) {
            "device interrupt lines cannot be raised without irqfds"
        } else {
            "there is no in-kernel PIC, IOAPIC, local APIC or PIT"
        };
        log::info!(
            "{} lacks {}: {why}, so devices cannot interrupt the guest and interrupts are not delivered; polled devices (serial, ACPI PM, i8042 reset, virtio-mmio with a polling driver) still work",
            dev.display(),
            caps.lacking(&[Feature::Irqchip, Feature::Irqfd])
        );
    }
    if !caps.has(Feature::Ioeventfd) {
        log::info!(
            "{}: no KVM_CAP_IOEVENTFD: virtqueue notifications arrive as MMIO exits on QueueNotify",
            dev.display()
        );
    }
    Ok(())
}

/// The CPUID table every vCPU starts from: what the device supports, or
/// the minimal table where it cannot say.
fn base_cpuid(
    kvm: &kvm_ioctls::Kvm,
    caps: &KvmCapabilities,
    dev: &Path,
) -> Result<Vec<kvm_cpuid_entry2>, BuildError> {
    if caps.has(Feature::ExtCpuid) {
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut table = supported.as_slice().to_vec();
        if !caps.has(Feature::Irqchip) {
            cpuid::hide_local_apic(&mut table);
        }
        let pv = cpuid::fix_kvm_leaves(&mut table);
        let names: Vec<&str> = pv.features.names().collect();
        log::info!(
            "KVM PV CPUID: signature KVMKVMKVM, max leaf {:#x}, features {:#x} [{}]",
            pv.max_leaf,
            pv.features.0,
            names.join(" ")
        );
        Ok(table)
    } else {
        log::info!(
            "{}: no KVM_CAP_EXT_CPUID: the guest CPUID is the minimal x86-64 baseline table (no XSAVE/AVX, no paravirtual leaves)",
            dev.display()
        );
        Ok(cpuid::minimal_table(
            cpuid::host_cpuid,
            caps.has(Feature::Irqchip),
        ))
    }
}

impl Vm {
    /// Builds the VM described by `cfg`, with the console on stdout.
    pub fn build(cfg: &VmConfig) -> Result<Vm, BuildError> {
        Self::build_with(cfg, Payload::Kernel, Box::new(io::stdout()))
    }

    /// Builds a VM booting `payload` with the serial console on `console`.
    pub fn build_with(
        cfg: &VmConfig,
        payload: Payload,
        console: Console,
    ) -> Result<Vm, BuildError> {
        let dev = cfg.kvm_dev.as_path();
        let kvm = capabilities::open_device(dev).map_err(|e| BuildError(e.to_string()))?;
        let vm = kvm
            .create_vm()
            .map_err(err(format!("KVM_CREATE_VM on {}", dev.display())))?;
        let caps = KvmCapabilities::probe(&kvm, Some(&vm), cfg.kvm_without);
        log::info!("{}: {caps}", dev.display());
        set_up_optional_features(&vm, &caps, dev, cfg.cpus)?;

        let mem_bytes = cfg.mem_mib << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(mem_bytes))
            .map_err(err("allocating guest memory"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region.as_ptr() as u64;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host,
            };
            // SAFETY: the region is a live mapping of exactly `memory_size`
            // bytes owned by `mem`, which the returned `Vm` keeps (in an
            // Arc) for as long as the VM fd, so the guest never sees freed
            // memory.
            unsafe { vm.set_user_memory_region(r) }.map_err(err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let mem = Arc::new(mem);
        let exit = Arc::new(ExitNotifier::new().map_err(err("eventfd"))?);

        // Legacy devices.
        let mut pio = Bus::new();
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(err("eventfd"))?;
        connect_irq(&vm, &caps, &serial_irq, layout::SERIAL_IRQ, "serial")?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            console,
            exit.clone(),
        )));
        let bus_err = |e: crate::devices::bus::OverlapError| BuildError(e.to_string());
        pio.insert(serial.clone(), u64::from(layout::SERIAL_PORT), 8)
            .map_err(bus_err)?;
        let i8042 = Arc::new(Mutex::new(I8042Device::new(ResetTrigger(exit.clone()))));
        for (port, offset) in [
            (layout::I8042_DATA_PORT, 0),
            (layout::I8042_COMMAND_PORT, 4),
        ] {
            let p = Arc::new(Mutex::new(I8042Port {
                device: i8042.clone(),
                offset,
            }));
            pio.insert(p, u64::from(port), 1).map_err(bus_err)?;
        }
        pio.insert(
            Arc::new(Mutex::new(PostPort)),
            u64::from(layout::POST_PORT),
            1,
        )
        .map_err(bus_err)?;
        let pm = Arc::new(Mutex::new(AcpiPm::new(exit.clone())));
        pio.insert(
            pm,
            u64::from(layout::ACPI_PM_PORT),
            u64::from(layout::ACPI_PM_PORT_LEN),
        )
        .map_err(bus_err)?;

        // virtio devices.
        let mut mmio = Bus::new();
        let mut subscribers: Vec<Subscriber> = Vec::new();
        let mut transports = Vec::new();
        let mut announcements = Vec::new();
        for (i, (device, limits)) in make_devices(cfg)?.into_iter().enumerate() {
            let (base, irq) = layout::virtio_mmio_slot(i)
                .ok_or_else(|| BuildError("too many virtio devices".into()))?;
            let irqfd = EventFd::new(EFD_NONBLOCK).map_err(err("eventfd"))?;
            let name = device.name().to_string();
            connect_irq(&vm, &caps, &irqfd, irq, &name)?;
            let t =
                MmioTransport::new(device, mem.clone(), irqfd, limits).map_err(err("eventfd"))?;
            // Without an ioeventfd the guest's QueueNotify write is an MMIO
            // exit, and the transport signals the very eventfd that the
            // ioeventfd would have (`MmioTransport::write`), so the event
            // thread runs the same queue handler either way.
            if caps.has(Feature::Ioeventfd) {
                for (q, evt) in t.queue_evts().iter().enumerate() {
                    let addr = IoEventAddress::Mmio(base.0 + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
                    if let Err(e) = vm.register_ioevent(evt, &addr, q as u32) {
                        log::warn!("{name}: KVM_IOEVENTFD for queue {q}: {e}; notifications go through MMIO exits");
                    }
                }
            }
            let t = Arc::new(Mutex::new(t));
            mmio.insert(t.clone(), base.0, layout::VIRTIO_MMIO_SIZE)
                .map_err(bus_err)?;
            subscribers.push(t.clone());
            transports.push(t);
            announcements.push(MmioAnnouncement { base, irq });
            log::info!("{name} at {:#x}, IRQ {irq}", base.0);
        }

        // Boot data.
        let rsdp = boot::acpi::write_tables(&mem, cfg.cpus).map_err(err("ACPI tables"))?;
        let spec = BootSpec {
            kernel: &cfg.kernel,
            initrd: cfg.initrd.as_deref(),
            cmdline: &cfg.cmdline,
            mem_bytes,
            devices: &announcements,
            rsdp,
        };
        let entry = match payload {
            Payload::Kernel => boot::load(&mem, &spec).map_err(err("boot"))?,
            Payload::Raw {
                code,
                addr,
                long_mode,
            } => {
                use vm_memory::Bytes;
                mem.write_slice(code, GuestAddress(addr))
                    .map_err(err("loading code"))?;
                if long_mode {
                    EntryPoint::Linux64 {
                        rip: addr,
                        zero_page: layout::ZERO_PAGE_START,
                    }
                } else {
                    EntryPoint::Pvh {
                        rip: addr,
                        start_info: layout::PVH_INFO_START,
                    }
                }
            }
        };
        regs::write_descriptor_tables(&mem, &regs::boot_gdt(&entry)).map_err(err("boot GDT"))?;
        if let EntryPoint::Linux64 { .. } = entry {
            regs::write_identity_map(&mem).map_err(err("boot page tables"))?;
        }
        log::info!("entry: {entry:x?}");

        // vCPUs.
        let base_cpuid = base_cpuid(&kvm, &caps, dev)?;
        let setup = VcpuSetup {
            cpuid: &base_cpuid,
            set_cpuid_promised: caps.has(Feature::ExtCpuid),
            guest_reads_cpuid: matches!(payload, Payload::Kernel),
            in_kernel_lapic: caps.has(Feature::Irqchip),
        };
        let mut vcpus = Vec::new();
        for i in 0..cfg.cpus {
            let fd = vm
                .create_vcpu(u64::from(i))
                .map_err(err(format!("KVM_CREATE_VCPU {i}")))?;
            let boot_entry = (i == 0).then_some(&entry);
            cpu::configure_vcpu(&fd, i, cfg.cpus, &setup, boot_entry)
                .map_err(err(format!("vCPU {i}")))?;
            vcpus.push(fd);
        }

        Ok(Vm {
            _vm: vm,
            mem,
            vcpus,
            in_kernel_lapic: caps.has(Feature::Irqchip),
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            exit,
            serial,
            subscribers,
            transports,
            control: cfg.control.clone(),
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Runs the VM until it ends; returns why.
    pub fn run(self) -> Result<ExitReason, BuildError> {
        self.run_with(RunOptions {
            input: ConsoleInput::Stdin,
        })
    }

    /// Runs the VM with `opts` until it ends; returns why. The vCPU and
    /// event threads are stopped before this returns.
    pub fn run_with(self, opts: RunOptions) -> Result<ExitReason, BuildError> {
        let Vm {
            _vm,
            mem: _mem,
            vcpus,
            in_kernel_lapic,
            pio,
            mmio,
            exit,
            serial,
            mut subscribers,
            transports,
            control,
        } = self;

        let mut raw_terminal = false;
        if let Some((input, raw)) = SerialInput::new(serial.clone(), opts.input) {
            raw_terminal = raw;
            subscribers.push(Arc::new(Mutex::new(input)));
        }
        if let Some(path) = &control {
            let server = ControlServer::bind(path, transports.clone(), exit.clone())
                .map_err(err(format!("control socket {}", path.display())))?;
            subscribers.push(Arc::new(Mutex::new(server)));
        }

        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| BuildError(format!("event manager: {e:?}")))?;
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let event_exit = exit.clone();
        let events = thread::Builder::new()
            .name("pvrs-events".into())
            .spawn(move || {
                while event_exit.reason().is_none() {
                    if let Err(e) = manager.run_with_timeout(200) {
                        event_exit.exit(ExitReason::VmmError(format!("event loop: {e:?}")));
                        return;
                    }
                }
            })
            .map_err(err("spawning the event thread"))?;

        vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_signal_handler)
            .map_err(err("installing the vCPU kick signal handler"))?;

        let unhandled = Arc::new(UnhandledCounters::default());
        let mut vcpu_threads = Vec::new();
        for (index, fd) in vcpus.into_iter().enumerate() {
            let vcpu = Vcpu {
                fd,
                index,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: exit.clone(),
                unhandled: unhandled.clone(),
                in_kernel_lapic,
            };
            let handle = thread::Builder::new()
                .name(format!("pvrs-vcpu{index}"))
                .spawn(move || vcpu.run())
                .map_err(err("spawning a vCPU thread"))?;
            vcpu_threads.push(handle);
        }

        // Wait for the end.
        let reason = loop {
            if let Some(r) = exit.wait(1000) {
                break r;
            }
        };
        // Kick the vCPUs out of KVM_RUN (a halted vCPU sleeps in KVM) until
        // every thread has seen the end.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for h in &vcpu_threads {
            while !h.is_finished() && std::time::Instant::now() < deadline {
                use vmm_sys_util::signal::Killable;
                let _ = h.kill(kick_signal());
                thread::sleep(Duration::from_millis(1));
            }
        }
        for h in vcpu_threads {
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let _ = events.join();
        serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
        if raw_terminal {
            let _ = io::stdin().lock().set_canon_mode();
        }
        for t in &transports {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            let c = t.device().counters();
            log::info!("{}: {c}", t.device().name());
        }
        if let Some(path) = &control {
            let _ = std::fs::remove_file(path);
        }
        Ok(reason)
    }
}

/// Feeds console input (stdin, or a file for tests) to the serial port.
struct SerialInput {
    serial: Arc<Mutex<Serial>>,
    file: File,
}

impl SerialInput {
    fn new(serial: Arc<Mutex<Serial>>, input: ConsoleInput) -> Option<(Self, bool)> {
        match input {
            ConsoleInput::None => None,
            ConsoleInput::Reader(file) => Some((SerialInput { serial, file }, false)),
            ConsoleInput::Stdin => {
                let stdin = io::stdin();
                let file = File::from(stdin.as_fd().try_clone_to_owned().ok()?);
                // SAFETY: isatty only inspects the descriptor.
                let tty = unsafe { libc::isatty(file.as_raw_fd()) } == 1;
                // A terminal goes raw, so that keys (^C too) reach the guest.
                let raw = tty && stdin.lock().set_raw_mode().is_ok();
                Some((SerialInput { serial, file }, raw))
            }
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        match self.file.read(&mut buf) {
            Ok(0) => {
                let _ = ops.remove(Events::empty(&self.file));
            }
            Ok(n) => {
                let queued = self
                    .serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .enqueue_input(&buf[..n]);
                if queued < n {
                    log::debug!("serial input: dropped {} bytes", n - queued);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                log::warn!("console input: {e}; no more input");
                let _ = ops.remove(Events::empty(&self.file));
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null: then there is no input.
        if let Err(e) = ops.add(Events::new(&self.file, EventSet::IN)) {
            log::debug!("console input is not pollable ({e:?}); no console input");
        }
    }
}

/// The control socket: one command per connection, one reply.
struct ControlServer {
    listener: UnixListener,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    exit: Arc<ExitNotifier>,
}

impl ControlServer {
    fn bind(
        path: &Path,
        transports: Vec<Arc<Mutex<MmioTransport>>>,
        exit: Arc<ExitNotifier>,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener,
            transports,
            exit,
        })
    }

    fn answer(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => "error: empty command\n".into(),
            Some("quit") => {
                self.exit.exit(ExitReason::Stopped);
                "stopping\n".into()
            }
            Some("status") => {
                let mut out = String::new();
                for t in &self.transports {
                    let t = t.lock().unwrap_or_else(|e| e.into_inner());
                    let d = t.device();
                    out += &format!("{}: status={:#x} {}\n", d.name(), t.status(), d.counters());
                }
                if out.is_empty() {
                    out = "no virtio devices\n".into();
                }
                out
            }
            Some(_) => {
                for t in &self.transports {
                    if let Some(reply) = t.lock().unwrap_or_else(|e| e.into_inner()).control(&words)
                    {
                        return reply + "\n";
                    }
                }
                format!("error: unknown command {:?}\n", words[0])
            }
        }
    }

    fn serve(&self, mut stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 4096 {
            match stream.read(&mut byte)? {
                0 => break,
                _ if byte[0] == b'\n' => break,
                _ => line.push(byte[0]),
            }
        }
        let reply = self.answer(&String::from_utf8_lossy(&line));
        stream.write_all(reply.as_bytes())
    }
}

impl MutEventSubscriber for ControlServer {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = self.serve(stream) {
                log::warn!("control connection: {e}");
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            log::error!("watching the control socket: {e:?}");
        }
    }
}

/// Sends `command` to the control socket at `socket` and returns the reply.
pub fn control_client(socket: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}
