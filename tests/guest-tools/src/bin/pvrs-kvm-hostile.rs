//! Feeds a KVM device malformed and hostile input and prints what a VMM
//! would observe, one line per case, so that the same run on kvm_amd's
//! `/dev/kvm` and on pvrs-kvm's `/dev/pvrs` in one machine can be diffed:
//! the two must refuse the same input with the same errno and end the
//! same broken guests with the same exit.
//!
//! `pvrs-kvm-hostile [DEVICE]` (default /dev/kvm). Each case prints
//! `case=<name> result=<what happened>`, where the result is the errno
//! name (`EINVAL`, `EEXIST`, `EFAULT`, `E2BIG`, `ENOTTY`, `ENXIO`, ...),
//! `ok=<return value>` (`ok=fd` for a new file), or for a guest run the
//! exit (`exit=SHUTDOWN`, `exit=INTERNAL_ERROR suberror=N`,
//! `exit=MMIO addr=.. len=.. write=..`, `exit=FAIL_ENTRY ...`), sometimes
//! followed by what the case read back. Nothing printed depends on the
//! backend's internals or on counts that legitimately differ (supported
//! CPUID leaves, saved MSRs: only whether they are zero). A case that
//! could not build its preconditions prints `setup_failed(<step>=<errno>)`.
//! The program does not judge: it ends with `HOSTILE: done cases=N` and
//! exit status 0 whatever the device answered; only a crash or hang of
//! the program (or of the kernel) is a failure, and the last case,
//! `still_works`, runs a HLT guest in a new VM to show the device still
//! works (`exit=HLT`).
//!
//! Every ioctl runs under a SIGALRM guard (5 s; a handler that only sets
//! a flag, installed without SA_RESTART), so a KVM_RUN that never returns
//! shows as `result=EINTR(timeout)` instead of hanging the program.
//!
//! What the cases probe, with the sections of Linux
//! `Documentation/virt/kvm/api.rst` (and the KVM code that decides):
//! - wrong file: commands sent to a file that does not answer them and
//!   unknown numbers (section 2; `kvm_arch_dev_ioctl` and
//!   `kvm_arch_vcpu_ioctl` end in EINVAL, `kvm_arch_vm_ioctl` in ENOTTY),
//!   non-zero arguments where KVM requires 0 (4.1, 4.5, 4.10);
//! - KVM_CREATE_VM types (4.2) and KVM_CREATE_VCPU ids (4.7);
//! - KVM_SET_USER_MEMORY_REGION (4.35, `__kvm_set_memory_region`):
//!   alignment, slot and address-space ids, flags, user addresses,
//!   wrapping and out-of-range guest ranges, overlap, delete, resize,
//!   move;
//! - bad argument pointers: NULL, a kernel address, a struct straddling
//!   into an inaccessible page, an output into a read-only page (EFAULT);
//! - counted arrays: KVM_GET_SUPPORTED_CPUID (4.46),
//!   KVM_GET_EMULATED_CPUID (4.88), KVM_SET_CPUID2 / KVM_GET_CPUID2 (4.20
//!   describes their predecessor; a changed CPUID after KVM_RUN is
//!   refused), KVM_GET_MSRS / KVM_SET_MSRS (4.18, 4.19: the count of MSRs
//!   processed), KVM_GET_MSR_INDEX_LIST and the feature list (4.3);
//! - vCPU state the architecture forbids: KVM_SET_SREGS (4.14,
//!   `kvm_is_valid_sregs`), KVM_SET_XCRS (4.45), KVM_SET_MP_STATE (4.39),
//!   KVM_SET_DEBUGREGS (4.34), KVM_SET_VCPU_EVENTS (4.32), KVM_INTERRUPT
//!   (4.16), KVM_SET_SIGNAL_MASK (4.21), KVM_SET_TSC_KHZ (4.55),
//!   KVM_ENABLE_CAP (4.37);
//! - VM devices and their absence: KVM_CREATE_IRQCHIP (4.24),
//!   KVM_IRQ_LINE (4.25), KVM_SIGNAL_MSI (4.71), KVM_GET_LAPIC (4.57),
//!   KVM_IOEVENTFD (4.59), KVM_IRQFD (4.75), KVM_SET_CLOCK (4.30),
//!   KVM_GET_DIRTY_LOG (4.8);
//! - the vCPU mmap (4.5): beyond KVM_GET_VCPU_MMAP_SIZE, at a far offset,
//!   of the VM and system files (a page that maps but cannot be read is
//!   shown by `probe=`, a kernel read of it, instead of a SIGBUS);
//! - guests (real mode unless said, a few bytes of code at 0x1000 in a
//!   64 KiB slot at 0): triple faults with an empty IDT, garbage code, a
//!   jump out of every memslot, 64-bit paging with CR3 outside the
//!   memslots, a long-mode CS the hardware refuses, a slot whose host
//!   memory is unmapped, a write to a read-only slot, an endless loop,
//!   immediate_exit (section 5), a VM without memory;
//! - guests with the in-kernel irqchip (`guest_irqchip_*`, issue 13):
//!   KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2 and a CPUID with the KVM leaves,
//!   1 MiB of RAM, long mode at CPL 0 with interrupts off, running a
//!   hand-assembled interpreter of a table of MMIO, port, MSR and
//!   hypercall operations (so the hostile content is Rust tables):
//!   garbage in every LAPIC, IOAPIC, PIC and PIT register, IPI storms
//!   through both ICRs (with every delivery mode, shorthand and reserved
//!   bit; INIT and SMI only where no vCPU is, and apart, to itself),
//!   hypercalls with hostile numbers and arguments, and the kvmclock,
//!   wall clock, steal time and PV EOI MSRs pointed outside and across
//!   the end of RAM. A guest ends with an OUT to 0x3f0 (done), 0x3f1
//!   (an unexpected exception, `vector=`), 0x3f2 (the reset vector: INIT
//!   reset it) or 0x3f3 (the SMM entry); #GPs of WRMSR/RDMSR are skipped
//!   and counted (`gp=`), NMIs counted (`nmi=`), and the result adds
//!   what the case read back where KVM's answer does not depend on time.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hv_core::kvm_api::constants::{
    exit_reason_name, KVMIO, KVM_CAP_SPLIT_IRQCHIP, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO,
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
    KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, KVM_USER_MEM_SLOTS, MAX_IO_MSRS,
};
use hv_core::kvm_api::decode::{
    decode, encode, EFER_LMA, EFER_LME, X86_CR0_CD, X86_CR0_NW, X86_CR0_PE, X86_CR0_PG, X86_CR4_PAE,
};
use hv_core::kvm_api::ioctl::{
    lookup, _IO, _IOC_SIZE, _IOR, KVM_CHECK_EXTENSION, KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2,
    KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_CPUID2,
    KVM_GET_DIRTY_LOG, KVM_GET_EMULATED_CPUID, KVM_GET_LAPIC, KVM_GET_MP_STATE, KVM_GET_MSRS,
    KVM_GET_MSR_FEATURE_INDEX_LIST, KVM_GET_MSR_INDEX_LIST, KVM_GET_REGS, KVM_GET_SREGS,
    KVM_GET_SUPPORTED_CPUID, KVM_GET_VCPU_MMAP_SIZE, KVM_INTERRUPT, KVM_IOEVENTFD, KVM_IRQFD,
    KVM_IRQ_LINE, KVM_RUN, KVM_SET_CLOCK, KVM_SET_CPUID2, KVM_SET_DEBUGREGS, KVM_SET_MP_STATE,
    KVM_SET_MSRS, KVM_SET_REGS, KVM_SET_SIGNAL_MASK, KVM_SET_SREGS, KVM_SET_TSC_KHZ,
    KVM_SET_USER_MEMORY_REGION, KVM_SET_VCPU_EVENTS, KVM_SET_XCRS, KVM_SIGNAL_MSI,
};
use hv_core::kvm_api::layout::{
    kvm_clock_data, kvm_cpuid2, kvm_cpuid_entry2, kvm_debugregs, kvm_dirty_log, kvm_enable_cap,
    kvm_interrupt, kvm_ioeventfd, kvm_irq_level, kvm_irqfd, kvm_mp_state, kvm_msi, kvm_msr_entry,
    kvm_msr_list, kvm_msrs, kvm_pit_config, kvm_regs, kvm_segment, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs,
};
use hv_core::kvm_api::run;
use hv_core::kvm_api::wire::Wire;
use hv_core::kvm_api::Errno;
use hv_core::msr::{MSR_EFER, MSR_IA32_APICBASE, MSR_IA32_SYSENTER_CS};

const PAGE: usize = 4096;
/// The start of the kernel half of the address space: never a user address.
const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;
/// The guests' memory: 64 KiB at GPA 0, the code at 0x1000.
const GUEST_MEM: usize = 0x1_0000;
const CODE: u64 = 0x1000;
/// A GPA no slot of the guests covers.
const UNBACKED: u64 = 0x10_0000;
/// An MSR index no CPU or hypervisor defines.
const UNKNOWN_MSR: u32 = 0x1234_5678;
/// `KVM_MAX_VCPU_IDS` on x86 (4 * KVM_MAX_VCPUS): the first id refused.
const MAX_VCPU_IDS: u64 = 4096;
/// `KVM_USER_MEM_SLOTS` as a slot number.
const USER_MEM_SLOTS: u64 = KVM_USER_MEM_SLOTS as u64;
const TIMEOUT_SECS: u32 = 5;
/// How an ioctl interrupted by this program's own alarm is reported
/// (a negative number, so that it is no errno).
const TIMED_OUT: i32 = -libc::EINTR;

/// CR0.ET, which hardware keeps set.
const X86_CR0_ET: u64 = 1 << 4;

static ALARM_FIRED: AtomicBool = AtomicBool::new(false);
static CASES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_alarm(_signal: libc::c_int) {
    ALARM_FIRED.store(true, Ordering::SeqCst);
}

/// Installs the SIGALRM handler without SA_RESTART, so that the alarm
/// makes a blocked KVM_RUN return EINTR.
fn install_alarm_handler() {
    // SAFETY: A zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
    }
}

/// The return value of an ioctl, or its errno ([`TIMED_OUT`] when this
/// program's alarm interrupted it).
type Outcome = Result<i64, i32>;

/// One ioctl under an alarm of `seconds`.
fn ioctl_within(fd: RawFd, cmd: u32, arg: u64, seconds: u32) -> Outcome {
    ALARM_FIRED.store(false, Ordering::SeqCst);
    // SAFETY: alarm only arms a timer of this process.
    unsafe { libc::alarm(seconds) };
    // SAFETY: Hostile input by design, but never to this program's harm:
    // `arg` is a value, a pointer to a live buffer at least as large as
    // what the command may write with the count the caller put in it, or
    // an address the kernel must refuse (NULL, a kernel address, a page
    // this program made inaccessible or read-only); the buffers of counted
    // arrays end at an inaccessible page, so that even a backend writing
    // past what the count allows faults instead of corrupting memory.
    let ret = unsafe { libc::ioctl(fd, cmd as _, arg) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: As above: disarms the timer.
    unsafe { libc::alarm(0) };
    if ret >= 0 {
        Ok(i64::from(ret))
    } else if errno == libc::EINTR && ALARM_FIRED.load(Ordering::SeqCst) {
        Err(TIMED_OUT)
    } else {
        Err(errno)
    }
}

fn ioctl(fd: RawFd, cmd: u32, arg: u64) -> Outcome {
    ioctl_within(fd, cmd, arg, TIMEOUT_SECS)
}

fn errno_name(errno: i32) -> String {
    const MORE: [(i32, &str); 6] = [
        (libc::ENOSYS, "ENOSYS"),
        (libc::EOVERFLOW, "EOVERFLOW"),
        (libc::EACCES, "EACCES"),
        (libc::ERANGE, "ERANGE"),
        (libc::ESRCH, "ESRCH"),
        (libc::EMFILE, "EMFILE"),
    ];
    if errno == TIMED_OUT {
        return "EINTR(timeout)".into();
    }
    let known = Errno::ALL.iter().map(|&(name, e)| (e as i32, name));
    known
        .chain(MORE)
        .find(|&(e, _)| e == errno)
        .map_or_else(|| format!("errno{errno}"), |(_, name)| name.into())
}

fn show(outcome: Outcome) -> String {
    match outcome {
        Ok(value) => format!("ok={value}"),
        Err(errno) => errno_name(errno),
    }
}

/// [`show`] for a command that returns a new file: the file is closed and
/// its number not printed (it depends on what else is open).
fn show_fd(outcome: Outcome) -> String {
    match outcome {
        Ok(fd) => {
            drop(owned(fd));
            "ok=fd".into()
        }
        Err(errno) => errno_name(errno),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// A step a case needed before its hostile part, which failed.
struct SetupFailed(String);
type Step<T> = Result<T, SetupFailed>;

fn command_name(cmd: u32) -> &'static str {
    lookup(cmd).map_or("ioctl", |info| info.name)
}

fn need(cmd: u32, outcome: Outcome) -> Step<i64> {
    outcome.map_err(|errno| SetupFailed(format!("{}={}", command_name(cmd), errno_name(errno))))
}

/// Runs `cases` with what `setup` built, or prints the one case `name`
/// with the step that failed.
fn with_setup<T>(name: &str, setup: impl FnOnce() -> Step<T>, cases: impl FnOnce(T)) {
    match setup() {
        Ok(built) => cases(built),
        Err(failed) => case(name, || Err(failed)),
    }
}

/// Runs one case and prints its line.
fn case(name: &str, body: impl FnOnce() -> Step<String>) {
    let result = body().unwrap_or_else(|SetupFailed(step)| format!("setup_failed({step})"));
    println!("case={name} result={result}");
    CASES.fetch_add(1, Ordering::Relaxed);
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new file of this
    // process, and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn bytes_of<T: Wire>(value: &T) -> Vec<u8> {
    let mut bytes = vec![0u8; T::SIZE];
    encode(value, &mut bytes).expect("a buffer of the struct's size");
    bytes
}

/// A command that reads `value`.
fn put<T: Wire>(fd: RawFd, cmd: u32, value: &T) -> Outcome {
    ioctl(fd, cmd, bytes_of(value).as_ptr() as u64)
}

/// A command that writes a `T`, as a setup step.
fn get<T: Wire>(fd: RawFd, cmd: u32) -> Step<T> {
    let mut bytes = vec![0u8; T::SIZE];
    need(cmd, ioctl(fd, cmd, bytes.as_mut_ptr() as u64))?;
    decode(&bytes).map_err(|e| SetupFailed(format!("{}={e:?}", command_name(cmd))))
}

/// A header-plus-entries argument (`kvm_cpuid2`, `kvm_msrs`,
/// `kvm_msr_list`): `count` in the header's first u32, room for `room`
/// entries after it, all else zero. It ends right before an inaccessible
/// page, so that a backend trusting a huge count faults (EFAULT) instead
/// of writing over this program's memory.
struct Counted {
    map: Mapping,
    at: usize,
    header: usize,
    entry: usize,
}

impl Counted {
    fn new<Header: Wire, Entry: Wire>(count: u32, room: usize) -> Step<Counted> {
        let len = Header::SIZE + room * Entry::SIZE;
        let pages = len.div_ceil(PAGE);
        let map = Mapping::anonymous((pages + 1) * PAGE)?;
        map.protect(pages * PAGE, PAGE, libc::PROT_NONE);
        let at = pages * PAGE - len;
        map.write(at, &count.to_le_bytes());
        Ok(Counted {
            map,
            at,
            header: Header::SIZE,
            entry: Entry::SIZE,
        })
    }

    fn cpuid(count: u32, room: usize) -> Step<Counted> {
        Counted::new::<kvm_cpuid2, kvm_cpuid_entry2>(count, room)
    }

    fn msrs(entries: &[(u32, u64)]) -> Step<Counted> {
        let count = entries.len() as u32;
        let mut msrs = Counted::new::<kvm_msrs, kvm_msr_entry>(count, entries.len())?;
        for (i, &(index, data)) in entries.iter().enumerate() {
            let entry = kvm_msr_entry {
                index,
                reserved: 0,
                data,
            };
            msrs.set(i, &entry);
        }
        Ok(msrs)
    }

    fn set<T: Wire>(&mut self, index: usize, value: &T) {
        self.map
            .write(self.at + self.header + index * self.entry, &bytes_of(value));
    }

    fn count(&self) -> u32 {
        u32::from_le_bytes(self.map.read(self.at))
    }

    fn call(&mut self, fd: RawFd, cmd: u32) -> Outcome {
        ioctl(fd, cmd, self.map.at(self.at))
    }
}

/// A mapping of this program (anonymous memory or a vCPU's pages),
/// unmapped on drop.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize, prot: i32, flags: i32, fd: RawFd, offset: i64) -> Result<Mapping, i32> {
        // SAFETY: A new mapping at an address the kernel chooses; no
        // existing memory is touched.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Mapping {
            addr: addr as *mut u8,
            len,
        })
    }

    fn anonymous(len: usize) -> Step<Mapping> {
        let (rw, private) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        );
        Mapping::new(len, rw, private, -1, 0)
            .map_err(|errno| SetupFailed(format!("mmap={}", errno_name(errno))))
    }

    fn at(&self, offset: usize) -> u64 {
        assert!(offset <= self.len);
        self.addr as u64 + offset as u64
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: In bounds of this mapping (checked above), in pages the
        // callers map writable and left so; no vCPU runs while we write.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.addr.add(offset), bytes.len())
        };
    }

    fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
        assert!(offset + N <= self.len);
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: In bounds of this readable mapping (checked above);
            // volatile because the kernel writes the run page.
            *byte = unsafe { std::ptr::read_volatile(self.addr.add(offset + i)) };
        }
        out
    }

    fn protect(&self, offset: usize, len: usize, prot: i32) {
        assert!(offset + len <= self.len && offset.is_multiple_of(PAGE));
        // SAFETY: Changes the protection of pages of this mapping only;
        // no reference into them is held.
        unsafe { libc::mprotect(self.addr.add(offset) as *mut libc::c_void, len, prot) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: The mapping is ours, and nothing refers to it any more.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Whether the kernel can read one byte at `addr`: written to a pipe, so
/// that a page which maps but cannot be faulted in (KVM's SIGBUS) shows
/// as EFAULT instead of killing this program.
fn probe(addr: u64) -> String {
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` is room for the two new file numbers.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return "pipe_failed".into();
    }
    let (read_end, write_end) = (owned(pipe[0].into()), owned(pipe[1].into()));
    // SAFETY: The kernel reads the byte on our behalf and fails with
    // EFAULT where it cannot; this program never touches it.
    let written = unsafe { libc::write(write_end.as_raw_fd(), addr as *const libc::c_void, 1) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    drop((read_end, write_end));
    if written == 1 {
        "readable".into()
    } else {
        errno_name(errno)
    }
}

/// The device, opened once: its system file and vCPU mmap size.
struct Kvm {
    sys: RawFd,
    mmap_size: usize,
}

impl Kvm {
    fn vm(&self) -> Step<OwnedFd> {
        Ok(owned(need(
            KVM_CREATE_VM,
            ioctl(self.sys, KVM_CREATE_VM, 0),
        )?))
    }

    /// vCPU `id` of `vm` with its run page mapped.
    fn vcpu(&self, vm: &OwnedFd, id: u64) -> Step<Vcpu> {
        let fd = owned(need(
            KVM_CREATE_VCPU,
            ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, id),
        )?);
        let (rw, shared) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
        let run = Mapping::new(self.mmap_size, rw, shared, fd.as_raw_fd(), 0)
            .map_err(|errno| SetupFailed(format!("mmap_vcpu={}", errno_name(errno))))?;
        Ok(Vcpu { fd, run })
    }

    /// A case on vCPU 0 of a new VM.
    fn vcpu_case(&self, name: &str, body: impl FnOnce(RawFd) -> Step<String>) {
        case(name, || {
            let vm = self.vm()?;
            let vcpu = self.vcpu(&vm, 0)?;
            body(vcpu.fd.as_raw_fd())
        });
    }

    /// A case on a new VM.
    fn vm_case(&self, name: &str, body: impl FnOnce(RawFd) -> Step<String>) {
        case(name, || body(self.vm()?.as_raw_fd()));
    }

    /// A VM with `code` at [`CODE`] in a [`GUEST_MEM`] slot at GPA 0, and
    /// vCPU 0 in real mode about to run it.
    fn guest(&self, code: &[u8]) -> Step<Guest> {
        let vm = self.vm()?;
        let memory = Mapping::anonymous(GUEST_MEM)?;
        memory.write(CODE as usize, code);
        let slot = region(vm.as_raw_fd(), 0, 0, 0, GUEST_MEM as u64, memory.at(0));
        need(KVM_SET_USER_MEMORY_REGION, slot)?;
        let vcpu = self.vcpu(&vm, 0)?;
        vcpu.real_mode(CODE)?;
        Ok(Guest { vcpu, vm, memory })
    }

    /// A case running `code` until the first exit.
    fn guest_case(&self, name: &str, code: &[u8]) {
        case(name, || Ok(self.guest(code)?.vcpu.run(TIMEOUT_SECS)));
    }
}

struct Vcpu {
    fd: OwnedFd,
    run: Mapping,
}

impl Vcpu {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Real mode with CS = 0 and IP = `rip`, RFLAGS = 2.
    fn real_mode(&self, rip: u64) -> Step<()> {
        let mut sregs: kvm_sregs = get(self.raw(), KVM_GET_SREGS)?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        need(KVM_SET_SREGS, put(self.raw(), KVM_SET_SREGS, &sregs))?;
        let mut regs: kvm_regs = get(self.raw(), KVM_GET_REGS)?;
        regs.rip = rip;
        regs.rflags = 2;
        need(KVM_SET_REGS, put(self.raw(), KVM_SET_REGS, &regs))?;
        Ok(())
    }

    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.run.read(offset))
    }

    fn u64_at(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.run.read(offset))
    }

    /// One KVM_RUN: the exit, or the errno (with the exit reason for
    /// EINTR, which KVM reports as KVM_EXIT_INTR).
    fn run(&self, seconds: u32) -> String {
        self.ran(ioctl_within(self.raw(), KVM_RUN, 0, seconds))
    }

    /// What a KVM_RUN that returned `outcome` reports.
    fn ran(&self, outcome: Outcome) -> String {
        match outcome {
            Ok(_) => self.exit(),
            Err(errno) if errno == libc::EINTR || errno == TIMED_OUT => {
                format!("{} {}", errno_name(errno), self.exit())
            }
            Err(errno) => errno_name(errno),
        }
    }

    /// The exit in the run page, as `exit=NAME` and the fields a VMM acts
    /// on (none that a backend may fill in its own way).
    fn exit(&self) -> String {
        let reason = self.u32_at(run::EXIT_REASON);
        let name = exit_reason_name(reason).map_or_else(
            || reason.to_string(),
            |n| n.trim_start_matches("KVM_EXIT_").into(),
        );
        match reason {
            KVM_EXIT_INTERNAL_ERROR => format!(
                "exit={name} suberror={}",
                self.u32_at(run::INTERNAL_SUBERROR)
            ),
            KVM_EXIT_MMIO => format!(
                "exit={name} addr={:#x} len={} write={}",
                self.u64_at(run::MMIO_PHYS_ADDR),
                self.u32_at(run::MMIO_LEN),
                self.run.read::<1>(run::MMIO_IS_WRITE)[0]
            ),
            KVM_EXIT_IO => format!(
                "exit={name} port={:#x} direction={} size={}",
                u16::from_le_bytes(self.run.read(run::IO_PORT)),
                self.run.read::<1>(run::IO_DIRECTION)[0],
                self.run.read::<1>(run::IO_SIZE)[0]
            ),
            KVM_EXIT_FAIL_ENTRY => format!(
                "exit={name} reason={:#x}",
                self.u64_at(run::FAIL_ENTRY_HARDWARE_ENTRY_FAILURE_REASON)
            ),
            _ => format!("exit={name}"),
        }
    }
}

/// A guest VM; fields drop in order: the vCPU, then the VM, then its
/// memory.
struct Guest {
    vcpu: Vcpu,
    vm: OwnedFd,
    memory: Mapping,
}

fn region(vm: RawFd, slot: u32, flags: u32, gpa: u64, size: u64, uaddr: u64) -> Outcome {
    let region = kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: uaddr,
    };
    put(vm, KVM_SET_USER_MEMORY_REGION, &region)
}

fn main() {
    let device = std::env::args().nth(1).unwrap_or_else(|| "/dev/kvm".into());
    let path = std::ffi::CString::new(device.clone()).expect("a path without NUL");
    // SAFETY: `path` is a valid C string.
    let sys = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if sys < 0 {
        println!(
            "HOSTILE: cannot open {device}: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    install_alarm_handler();
    let mmap_size = match ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0) {
        Ok(size) => size as usize,
        Err(errno) => {
            println!("HOSTILE: KVM_GET_VCPU_MMAP_SIZE: {}", errno_name(errno));
            std::process::exit(1);
        }
    };
    println!("device={device}");
    let kvm = Kvm { sys, mmap_size };
    wrong_file(&kvm);
    creation(&kvm);
    memory_regions(&kvm);
    bad_pointers(&kvm);
    cpuid(&kvm);
    msrs(&kvm);
    registers(&kvm);
    vcpu_state(&kvm);
    vm_devices(&kvm);
    vcpu_mmap(&kvm);
    guests(&kvm);
    irqchip_guests(&kvm);
    kvm.guest_case("still_works", &[0xf4]);
    println!("HOSTILE: done cases={}", CASES.load(Ordering::Relaxed));
}

/// Commands on files that do not answer them, unknown numbers, and
/// arguments that must be 0.
fn wrong_file(kvm: &Kvm) {
    let setup = || -> Step<(OwnedFd, Vcpu)> {
        let vm = kvm.vm()?;
        let vcpu = kvm.vcpu(&vm, 0)?;
        Ok((vm, vcpu))
    };
    with_setup("wrong_file", setup, |(vm, vcpu)| {
        wrong_file_cases(kvm.sys, &vm, &vcpu)
    });
}

fn wrong_file_cases(sys: RawFd, vm: &OwnedFd, vcpu: &Vcpu) {
    let (vm, vcpu) = (vm.as_raw_fd(), vcpu.raw());
    // A KVM number nothing defines, and a tty command (what isatty sends).
    let unknown = _IO(KVMIO, 0xff);
    let tcgets = libc::TCGETS as u32;
    // (file kind, [(case name after the kind, command, argument)])
    type Commands<'a> = &'a [(&'a str, u32, u64)];
    let files: [(&str, RawFd, Commands); 3] = [
        (
            "sys",
            sys,
            &[
                ("kvm_run", KVM_RUN, 0),
                ("get_regs", KVM_GET_REGS, 0),
                ("create_vcpu", KVM_CREATE_VCPU, 0),
                ("set_user_memory_region", KVM_SET_USER_MEMORY_REGION, 0),
                ("unknown_ioctl", unknown, 0),
                ("tcgets", tcgets, 0),
                ("get_api_version_arg_1", KVM_GET_API_VERSION, 1),
                ("get_vcpu_mmap_size_arg_1", KVM_GET_VCPU_MMAP_SIZE, 1),
                ("check_extension_unknown", KVM_CHECK_EXTENSION, 0xdead),
            ],
        ),
        (
            "vm",
            vm,
            &[
                ("create_vm", KVM_CREATE_VM, 0),
                ("kvm_run", KVM_RUN, 0),
                ("get_supported_cpuid", KVM_GET_SUPPORTED_CPUID, 0),
                ("unknown_ioctl", unknown, 0),
                ("tcgets", tcgets, 0),
                ("check_extension_unknown", KVM_CHECK_EXTENSION, 0xdead),
            ],
        ),
        (
            "vcpu",
            vcpu,
            &[
                ("create_vcpu", KVM_CREATE_VCPU, 1),
                ("create_vm", KVM_CREATE_VM, 0),
                ("unknown_ioctl", unknown, 0),
                ("tcgets", tcgets, 0),
                ("kvm_run_arg_1", KVM_RUN, 1),
            ],
        ),
    ];
    for (kind, fd, commands) in files {
        for &(name, cmd, arg) in commands {
            let outcome = ioctl(fd, cmd, arg);
            let creates = [KVM_CREATE_VM, KVM_CREATE_VCPU].contains(&cmd);
            let shown = if creates {
                show_fd(outcome)
            } else {
                show(outcome)
            };
            case(&format!("{kind}_{name}"), || Ok(shown));
        }
    }
    // KVM_GET_REGS with the size bits of a u64: another command.
    let short_get_regs = _IOR::<u64>(KVMIO, 0x81);
    let mut scratch = [0u8; 8];
    case("vcpu_get_regs_wrong_size", || {
        Ok(show(ioctl(
            vcpu,
            short_get_regs,
            scratch.as_mut_ptr() as u64,
        )))
    });
}

/// KVM_CREATE_VM types and KVM_CREATE_VCPU ids.
fn creation(kvm: &Kvm) {
    case("create_vm_type_0xdead", || {
        Ok(show_fd(ioctl(kvm.sys, KVM_CREATE_VM, 0xdead)))
    });
    case("create_vm_type_high_bits", || {
        Ok(show_fd(ioctl(kvm.sys, KVM_CREATE_VM, 1 << 32)))
    });
    for (name, id) in [
        ("create_vcpu_id_0xffffffff", 0xffff_ffff),
        ("create_vcpu_id_max_vcpu_ids", MAX_VCPU_IDS),
        ("create_vcpu_id_last_valid", MAX_VCPU_IDS - 1),
        ("create_vcpu_id_high_bits", 1 << 32),
    ] {
        kvm.vm_case(name, |vm| Ok(show_fd(ioctl(vm, KVM_CREATE_VCPU, id))));
    }
    kvm.vm_case("create_vcpu_duplicate_id", |vm| {
        let _first = owned(need(KVM_CREATE_VCPU, ioctl(vm, KVM_CREATE_VCPU, 3))?);
        Ok(show_fd(ioctl(vm, KVM_CREATE_VCPU, 3)))
    });
    case("vcpu_outlives_vm_fd", || {
        let vm = kvm.vm()?;
        let vcpu = kvm.vcpu(&vm, 0)?;
        drop(vm);
        let mut regs = [0u8; kvm_regs::SIZE];
        Ok(show(ioctl(
            vcpu.raw(),
            KVM_GET_REGS,
            regs.as_mut_ptr() as u64,
        )))
    });
}

/// Where a hostile memory region's userspace address points.
#[derive(Clone, Copy)]
enum Uaddr {
    /// This many bytes into a mapping of this program (2 * GUEST_MEM).
    Ours(usize),
    /// This address.
    Raw(u64),
}

/// KVM_SET_USER_MEMORY_REGION, on a new VM and on a VM with slot 0 at
/// GPA 0 (GUEST_MEM bytes at `Ours(0)`).
fn memory_regions(kvm: &Kvm) {
    const SIZE: u64 = GUEST_MEM as u64;
    type Region = (&'static str, u32, u32, u64, u64, Uaddr);
    let fresh: [Region; 20] = [
        ("region_gpa_unaligned", 0, 0, 0x800, SIZE, Uaddr::Ours(0)),
        ("region_size_unaligned", 0, 0, 0, 0x800, Uaddr::Ours(0)),
        ("region_uaddr_unaligned", 0, 0, 0, SIZE, Uaddr::Ours(0x800)),
        ("region_slot_0x7fff", 0x7fff, 0, 0, SIZE, Uaddr::Ours(0)),
        (
            "region_slot_user_max",
            USER_MEM_SLOTS as u32,
            0,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        (
            "region_slot_last_valid",
            USER_MEM_SLOTS as u32 - 1,
            0,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        ("region_as_id_1", 1 << 16, 0, 0, SIZE, Uaddr::Ours(0)),
        ("region_as_id_5", 5 << 16, 0, 0, SIZE, Uaddr::Ours(0)),
        ("region_flags_unknown", 0, 1 << 7, 0, SIZE, Uaddr::Ours(0)),
        (
            "region_flags_guest_memfd",
            0,
            KVM_MEM_GUEST_MEMFD,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        (
            "region_flags_readonly",
            0,
            KVM_MEM_READONLY,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        (
            "region_flags_log_dirty",
            0,
            KVM_MEM_LOG_DIRTY_PAGES,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        (
            "region_uaddr_kernel",
            0,
            0,
            0,
            SIZE,
            Uaddr::Raw(KERNEL_ADDR),
        ),
        (
            "region_uaddr_noncanonical",
            0,
            0,
            0,
            SIZE,
            Uaddr::Raw(1 << 47),
        ),
        (
            "region_uaddr_crosses_user_end",
            0,
            0,
            0,
            SIZE,
            Uaddr::Raw((1 << 47) - SIZE / 2),
        ),
        ("region_uaddr_zero", 0, 0, 0, SIZE, Uaddr::Raw(0)),
        (
            "region_gpa_wraps",
            0,
            0,
            0u64.wrapping_sub(SIZE),
            2 * SIZE,
            Uaddr::Ours(0),
        ),
        (
            "region_gpa_beyond_phys_bits",
            0,
            0,
            1 << 56,
            SIZE,
            Uaddr::Ours(0),
        ),
        ("region_size_huge", 0, 0, 0, 1 << 62, Uaddr::Ours(0)),
        ("region_size_0_fresh_slot", 0, 0, SIZE, 0, Uaddr::Ours(0)),
    ];
    let with_slot0: [Region; 13] = [
        (
            "region_overlap",
            1,
            0,
            SIZE / 2,
            SIZE,
            Uaddr::Ours(GUEST_MEM),
        ),
        (
            "region_overlap_inside",
            1,
            0,
            CODE,
            0x1000,
            Uaddr::Ours(GUEST_MEM),
        ),
        (
            "region_same_range_other_slot",
            1,
            0,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        ("region_adjacent", 1, 0, SIZE, SIZE, Uaddr::Ours(GUEST_MEM)),
        ("region_alias_host_memory", 1, 0, SIZE, SIZE, Uaddr::Ours(0)),
        (
            "region_same_gpa_as_id_1",
            1 << 16,
            0,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
        ("region_delete_missing_slot", 5, 0, 0, 0, Uaddr::Raw(0)),
        ("region_delete_existing", 0, 0, 0, 0, Uaddr::Raw(0)),
        ("region_resize", 0, 0, 0, 2 * SIZE, Uaddr::Ours(0)),
        ("region_change_uaddr", 0, 0, 0, SIZE, Uaddr::Ours(GUEST_MEM)),
        ("region_move", 0, 0, UNBACKED, SIZE, Uaddr::Ours(0)),
        ("region_set_again_unchanged", 0, 0, 0, SIZE, Uaddr::Ours(0)),
        (
            "region_toggle_readonly",
            0,
            KVM_MEM_READONLY,
            0,
            SIZE,
            Uaddr::Ours(0),
        ),
    ];
    let tables: [(&[Region], bool); 2] = [(&fresh, false), (&with_slot0, true)];
    for (table, slot0) in tables {
        for &(name, slot, flags, gpa, size, uaddr) in table {
            kvm.vm_case(name, |vm| {
                let memory = Mapping::anonymous(2 * GUEST_MEM)?;
                if slot0 {
                    need(
                        KVM_SET_USER_MEMORY_REGION,
                        region(vm, 0, 0, 0, SIZE, memory.at(0)),
                    )?;
                }
                let uaddr = match uaddr {
                    Uaddr::Ours(offset) => memory.at(offset),
                    Uaddr::Raw(addr) => addr,
                };
                Ok(show(region(vm, slot, flags, gpa, size, uaddr)))
            });
        }
    }
    kvm.vm_case("region_delete_twice", |vm| {
        let memory = Mapping::anonymous(GUEST_MEM)?;
        need(
            KVM_SET_USER_MEMORY_REGION,
            region(vm, 0, 0, 0, SIZE, memory.at(0)),
        )?;
        let first = show(region(vm, 0, 0, 0, 0, 0));
        Ok(format!("{first} then {}", show(region(vm, 0, 0, 0, 0, 0))))
    });
}

/// Argument pointers the kernel must refuse: NULL, a kernel address, a
/// struct that runs into an inaccessible page, an output into a
/// read-only page.
fn bad_pointers(kvm: &Kvm) {
    let setup = || -> Step<(OwnedFd, Vcpu, Mapping)> {
        let vm = kvm.vm()?;
        let vcpu = kvm.vcpu(&vm, 0)?;
        // Two pages: the first read-write, the second inaccessible.
        let guard = Mapping::anonymous(2 * PAGE)?;
        guard.protect(PAGE, PAGE, libc::PROT_NONE);
        Ok((vm, vcpu, guard))
    };
    with_setup("bad_pointers", setup, |(vm, vcpu, guard)| {
        let (sys, vm, vcpu) = (kvm.sys, vm.as_raw_fd(), vcpu.raw());
        // (command, file, the count in a counted array's header, whether
        // the kernel writes the argument)
        let commands: [(u32, RawFd, u32, bool); 11] = [
            (KVM_GET_REGS, vcpu, 0, true),
            (KVM_SET_REGS, vcpu, 0, false),
            (KVM_GET_SREGS, vcpu, 0, true),
            (KVM_SET_SREGS, vcpu, 0, false),
            (KVM_SET_USER_MEMORY_REGION, vm, 0, false),
            (KVM_GET_SUPPORTED_CPUID, sys, KVM_MAX_CPUID_ENTRIES, true),
            (KVM_GET_MSR_INDEX_LIST, sys, 4096, true),
            (KVM_SET_CPUID2, vcpu, 2, false),
            (KVM_GET_MSRS, vcpu, 2, true),
            (KVM_SET_MSRS, vcpu, 2, false),
            (KVM_GET_MP_STATE, vcpu, 0, true),
        ];
        for (cmd, fd, count, output) in commands {
            let name = command_name(cmd).trim_start_matches("KVM_").to_lowercase();
            let call = |arg| Ok(show(ioctl(fd, cmd, arg)));
            case(&format!("{name}_arg_null"), || call(0));
            case(&format!("{name}_arg_kernel"), || call(KERNEL_ADDR));
            // Before the inaccessible page: a counted array's header
            // accessible and its entries not, or the first half (at most
            // 8 bytes) of a struct. The number's size bits are the size
            // of the struct or header.
            let size = _IOC_SIZE(cmd) as usize;
            let accessible = if count > 0 { size } else { 8.min(size / 2) };
            let straddle = PAGE - accessible;
            guard.protect(0, PAGE, libc::PROT_READ | libc::PROT_WRITE);
            guard.write(0, &[0; PAGE]);
            guard.write(straddle, &count.to_le_bytes()[..accessible.min(4)]);
            case(&format!("{name}_arg_straddles_guard_page"), || {
                call(guard.at(straddle))
            });
            if output {
                // The whole argument readable, none of it writable.
                guard.write(0, &count.to_le_bytes());
                guard.protect(0, PAGE, libc::PROT_READ);
                case(&format!("{name}_arg_readonly"), || call(guard.at(0)));
            }
        }
    });
}

/// CPUID arrays: the supported list and a vCPU's.
fn cpuid(kvm: &Kvm) {
    // (name, nent, room): KVM clamps nent to KVM_MAX_CPUID_ENTRIES first.
    let max = KVM_MAX_CPUID_ENTRIES as usize;
    for (list, cmd) in [
        ("supported", KVM_GET_SUPPORTED_CPUID),
        ("emulated", KVM_GET_EMULATED_CPUID),
    ] {
        for (size, nent, room) in [
            ("0", 0, 1),
            ("1", 1, 1),
            ("max", KVM_MAX_CPUID_ENTRIES, max),
            ("huge", 0x7fff_ffff, max),
        ] {
            case(&format!("get_{list}_cpuid_nent_{size}"), || {
                let mut cpuid = Counted::cpuid(nent, room)?;
                let outcome = cpuid.call(kvm.sys, cmd);
                Ok(match outcome {
                    Ok(_) => format!(
                        "{} nent_nonzero={}",
                        show(outcome),
                        yes_no(cpuid.count() > 0)
                    ),
                    Err(_) => format!(
                        "{} nent_unchanged={}",
                        show(outcome),
                        yes_no(cpuid.count() == nent)
                    ),
                })
            });
        }
    }
    let limit = KVM_MAX_CPUID_ENTRIES + 1;
    for (name, nent) in [
        ("set_cpuid2_nent_max_plus_1", limit),
        ("set_cpuid2_nent_huge", 0x7fff_ffff),
        ("set_cpuid2_nent_0", 0),
    ] {
        kvm.vcpu_case(name, |vcpu| {
            Ok(show(
                Counted::cpuid(nent, limit as usize)?.call(vcpu, KVM_SET_CPUID2),
            ))
        });
    }
    for (name, set, room) in [
        ("get_cpuid2_fresh_nent_0", false, 0),
        ("get_cpuid2_nent_0_after_set_2", true, 0),
        ("get_cpuid2_nent_2_after_set_2", true, 2),
    ] {
        kvm.vcpu_case(name, |vcpu| {
            if set {
                need(KVM_SET_CPUID2, two_leaves(0)?.call(vcpu, KVM_SET_CPUID2))?;
            }
            let mut got = Counted::cpuid(room, room as usize)?;
            let outcome = got.call(vcpu, KVM_GET_CPUID2);
            Ok(format!("{} nent={}", show(outcome), got.count()))
        });
    }
    // KVM refuses a different CPUID once the vCPU has run (5.16+).
    for (name, ebx) in [
        ("set_cpuid2_after_run_same", 0),
        ("set_cpuid2_after_run_changed", 1),
    ] {
        case(name, || {
            let guest = kvm.guest(&[0xf4])?;
            let vcpu = guest.vcpu.raw();
            need(KVM_SET_CPUID2, two_leaves(0)?.call(vcpu, KVM_SET_CPUID2))?;
            let ran = guest.vcpu.run(TIMEOUT_SECS);
            let outcome = two_leaves(ebx)?.call(vcpu, KVM_SET_CPUID2);
            Ok(format!(
                "{} first_run={}",
                show(outcome),
                ran.replace(' ', ",")
            ))
        });
    }
}

/// KVM_SET_CPUID2's argument with leaves 0 (max leaf 1, EBX "pvrs" plus
/// `ebx_delta`) and 1 (nothing set).
fn two_leaves(ebx_delta: u32) -> Step<Counted> {
    let mut cpuid = Counted::cpuid(2, 2)?;
    let leaf0 = kvm_cpuid_entry2 {
        eax: 1,
        ebx: u32::from_le_bytes(*b"pvrs") + ebx_delta,
        ..kvm_cpuid_entry2::ZERO
    };
    let leaf1 = kvm_cpuid_entry2 {
        function: 1,
        ..kvm_cpuid_entry2::ZERO
    };
    cpuid.set(0, &leaf0);
    cpuid.set(1, &leaf1);
    Ok(cpuid)
}

/// MSR arrays: counts, unknown indices, the index lists.
fn msrs(kvm: &Kvm) {
    for (name, cmd, nmsrs) in [
        ("get_msrs_nmsrs_huge", KVM_GET_MSRS, 0x7fff_ffff),
        ("set_msrs_nmsrs_huge", KVM_SET_MSRS, 0x7fff_ffff),
        ("get_msrs_nmsrs_max_io", KVM_GET_MSRS, MAX_IO_MSRS),
        ("get_msrs_nmsrs_0", KVM_GET_MSRS, 0),
    ] {
        kvm.vcpu_case(name, |vcpu| {
            // The entries are MSR 0 ... (zeroed); room for MAX_IO_MSRS.
            let mut msrs = Counted::new::<kvm_msrs, kvm_msr_entry>(nmsrs, MAX_IO_MSRS as usize)?;
            Ok(show(msrs.call(vcpu, cmd)))
        });
    }
    type MsrCase<'a> = (&'a str, u32, &'a [(u32, u64)]);
    let cases: [MsrCase; 5] = [
        ("get_msrs_unknown_index", KVM_GET_MSRS, &[(UNKNOWN_MSR, 0)]),
        ("set_msrs_unknown_index", KVM_SET_MSRS, &[(UNKNOWN_MSR, 1)]),
        (
            "get_msrs_known_then_unknown",
            KVM_GET_MSRS,
            &[(MSR_IA32_SYSENTER_CS, 0), (UNKNOWN_MSR, 0)],
        ),
        (
            "set_msrs_known_then_unknown",
            KVM_SET_MSRS,
            &[(MSR_IA32_SYSENTER_CS, 0x10), (UNKNOWN_MSR, 0)],
        ),
        (
            "set_msrs_efer_reserved_bit",
            KVM_SET_MSRS,
            &[(MSR_EFER, 1 << 63)],
        ),
    ];
    for (name, cmd, entries) in cases {
        kvm.vcpu_case(name, |vcpu| {
            Ok(show(Counted::msrs(entries)?.call(vcpu, cmd)))
        });
    }
    case("sys_get_msrs_unknown_feature", || {
        Ok(show(
            Counted::msrs(&[(UNKNOWN_MSR, 0)])?.call(kvm.sys, KVM_GET_MSRS),
        ))
    });
    for (name, cmd) in [
        ("get_msr_index_list_nmsrs_0", KVM_GET_MSR_INDEX_LIST),
        (
            "get_msr_feature_index_list_nmsrs_0",
            KVM_GET_MSR_FEATURE_INDEX_LIST,
        ),
    ] {
        case(name, || {
            let mut list = Counted::new::<kvm_msr_list, u32>(0, 0)?;
            let outcome = list.call(kvm.sys, cmd);
            Ok(format!(
                "{} nmsrs_nonzero={}",
                show(outcome),
                yes_no(list.count() > 0)
            ))
        });
    }
}

/// Long mode with 4-level paging from `cr3`: flat 64-bit CS (with CS.D
/// if `cs_db`, which no entry accepts) and flat data segments.
fn long_mode(sregs: &mut kvm_sregs, cr3: u64, cs_db: bool) {
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    let flat = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 3,
        present: 1,
        s: 1,
        g: 1,
        db: 1,
        ..kvm_segment::ZERO
    };
    sregs.cs = kvm_segment {
        selector: 0x8,
        type_: 11,
        db: u8::from(cs_db),
        l: 1,
        ..flat
    };
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (flat, flat, flat, flat, flat);
}

/// KVM_SET_SREGS combinations `kvm_is_valid_sregs` refuses, and
/// KVM_SET_REGS.
fn registers(kvm: &Kvm) {
    type Edit = fn(&mut kvm_sregs);
    let edits: [(&str, Edit); 11] = [
        ("set_sregs_unchanged", |_| {}),
        ("set_sregs_long_mode_valid", |s| {
            long_mode(s, UNBACKED, false)
        }),
        ("set_sregs_pg_without_pe", |s| {
            s.cr0 = X86_CR0_ET | X86_CR0_PG
        }),
        ("set_sregs_lma_without_pae", |s| {
            long_mode(s, UNBACKED, false);
            s.cr4 = 0;
        }),
        ("set_sregs_lma_without_pg", |s| {
            long_mode(s, UNBACKED, false);
            s.cr0 = X86_CR0_PE | X86_CR0_ET;
        }),
        ("set_sregs_cs_l_outside_long_mode", |s| s.cs.l = 1),
        ("set_sregs_cr3_beyond_phys_bits", |s| {
            long_mode(s, 1 << 62, false)
        }),
        ("set_sregs_cr0_high_bits", |s| s.cr0 |= 1 << 32),
        ("set_sregs_cr0_nw_without_cd", |s| {
            s.cr0 = (s.cr0 | X86_CR0_NW) & !X86_CR0_CD
        }),
        ("set_sregs_cr4_reserved_bit", |s| s.cr4 |= 1 << 63),
        ("set_sregs_apic_base_reserved_bit", |s| s.apic_base |= 1),
    ];
    for (name, edit) in edits {
        kvm.vcpu_case(name, |vcpu| {
            let mut sregs: kvm_sregs = get(vcpu, KVM_GET_SREGS)?;
            edit(&mut sregs);
            Ok(show(put(vcpu, KVM_SET_SREGS, &sregs)))
        });
    }
    kvm.vcpu_case("set_regs_rflags_0", |vcpu| {
        let regs = kvm_regs {
            rip: 0xfff0,
            ..kvm_regs::ZERO
        };
        let outcome = put(vcpu, KVM_SET_REGS, &regs);
        let back: kvm_regs = get(vcpu, KVM_GET_REGS)?;
        Ok(format!("{} rflags={:#x}", show(outcome), back.rflags))
    });
}

/// Other vCPU state: XCRs, MP state, debug registers, events, interrupt
/// injection, the signal mask, the TSC rate, capabilities.
fn vcpu_state(kvm: &Kvm) {
    type XcrEdit = fn(&mut kvm_xcrs);
    let xcrs: [(&str, XcrEdit); 7] = [
        ("set_xcrs_xcr0_zero", |x| x.xcrs[0].value = 0),
        ("set_xcrs_xcr0_x87", |_| {}),
        ("set_xcrs_xcr0_sse_without_cpuid", |x| x.xcrs[0].value = 3),
        ("set_xcrs_nr_100", |x| x.nr_xcrs = 100),
        ("set_xcrs_nr_0", |x| x.nr_xcrs = 0),
        ("set_xcrs_flags", |x| x.flags = 1),
        ("set_xcrs_only_xcr1", |x| x.xcrs[0].xcr = 1),
    ];
    for (name, edit) in xcrs {
        kvm.vcpu_case(name, |vcpu| {
            let mut value = kvm_xcrs {
                nr_xcrs: 1,
                ..kvm_xcrs::ZERO
            };
            value.xcrs[0].value = 1;
            edit(&mut value);
            Ok(show(put(vcpu, KVM_SET_XCRS, &value)))
        });
    }
    for (name, mp_state) in [
        ("set_mp_state_99", 99),
        ("set_mp_state_halted_without_irqchip", KVM_MP_STATE_HALTED),
        ("set_mp_state_runnable", KVM_MP_STATE_RUNNABLE),
    ] {
        kvm.vcpu_case(name, |vcpu| {
            Ok(show(put(
                vcpu,
                KVM_SET_MP_STATE,
                &kvm_mp_state { mp_state },
            )))
        });
    }
    type DebugEdit = fn(&mut kvm_debugregs);
    let debugregs: [(&str, DebugEdit); 4] = [
        ("set_debugregs_valid", |_| {}),
        ("set_debugregs_flags", |d| d.flags = 1),
        ("set_debugregs_dr6_high_bits", |d| d.dr6 |= 1 << 32),
        ("set_debugregs_dr7_high_bits", |d| d.dr7 |= 1 << 32),
    ];
    for (name, edit) in debugregs {
        kvm.vcpu_case(name, |vcpu| {
            let mut value = kvm_debugregs {
                dr6: 0xffff_0ff0,
                dr7: 0x400,
                ..kvm_debugregs::ZERO
            };
            edit(&mut value);
            Ok(show(put(vcpu, KVM_SET_DEBUGREGS, &value)))
        });
    }
    type EventEdit = fn(&mut kvm_vcpu_events);
    let events: [(&str, EventEdit); 4] = [
        ("set_vcpu_events_none", |_| {}),
        ("set_vcpu_events_unknown_flag", |e| e.flags = 1 << 31),
        ("set_vcpu_events_exception_32", |e| {
            e.exception.injected = 1;
            e.exception.nr = 32;
        }),
        ("set_vcpu_events_exception_nmi_vector", |e| {
            e.exception.injected = 1;
            e.exception.nr = 2;
        }),
    ];
    for (name, edit) in events {
        kvm.vcpu_case(name, |vcpu| {
            let mut value = kvm_vcpu_events::ZERO;
            edit(&mut value);
            Ok(show(put(vcpu, KVM_SET_VCPU_EVENTS, &value)))
        });
    }
    kvm.vcpu_case("interrupt_vector_256", |vcpu| {
        Ok(show(put(vcpu, KVM_INTERRUPT, &kvm_interrupt { irq: 256 })))
    });
    kvm.vcpu_case("interrupt_twice", |vcpu| {
        let first = show(put(vcpu, KVM_INTERRUPT, &kvm_interrupt { irq: 0x20 }));
        let second = show(put(vcpu, KVM_INTERRUPT, &kvm_interrupt { irq: 0x21 }));
        Ok(format!("{first} then {second}"))
    });
    for (name, len) in [
        ("set_signal_mask_len_4", 4u32),
        ("set_signal_mask_len_8", 8),
    ] {
        kvm.vcpu_case(name, |vcpu| {
            let mut mask = [0u8; 4 + 8];
            mask[..4].copy_from_slice(&len.to_le_bytes());
            Ok(show(ioctl(vcpu, KVM_SET_SIGNAL_MASK, mask.as_ptr() as u64)))
        });
    }
    kvm.vcpu_case("set_signal_mask_null", |vcpu| {
        Ok(show(ioctl(vcpu, KVM_SET_SIGNAL_MASK, 0)))
    });
    kvm.vcpu_case("set_tsc_khz_huge", |vcpu| {
        Ok(show(ioctl(vcpu, KVM_SET_TSC_KHZ, 0xffff_ffff)))
    });
    let enable = |cap, flags| kvm_enable_cap {
        cap,
        flags,
        ..kvm_enable_cap::ZERO
    };
    kvm.vm_case("vm_enable_cap_unknown", |vm| {
        Ok(show(put(vm, KVM_ENABLE_CAP, &enable(0xdead, 0))))
    });
    kvm.vm_case("vm_enable_cap_flags", |vm| {
        Ok(show(put(
            vm,
            KVM_ENABLE_CAP,
            &enable(KVM_CAP_SPLIT_IRQCHIP, 1),
        )))
    });
    kvm.vcpu_case("vcpu_enable_cap_unknown", |vcpu| {
        Ok(show(put(vcpu, KVM_ENABLE_CAP, &enable(0xdead, 0))))
    });
}

/// An eventfd, for KVM_IOEVENTFD and KVM_IRQFD.
fn eventfd() -> Step<OwnedFd> {
    // SAFETY: Creates a new file; no memory is involved.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(SetupFailed("eventfd".into()));
    }
    Ok(owned(fd.into()))
}

/// The in-kernel devices, and what refers to them without them.
fn vm_devices(kvm: &Kvm) {
    kvm.vm_case("create_irqchip_twice", |vm| {
        let first = show(ioctl(vm, KVM_CREATE_IRQCHIP, 0));
        Ok(format!(
            "{first} then {}",
            show(ioctl(vm, KVM_CREATE_IRQCHIP, 0))
        ))
    });
    case("create_irqchip_after_vcpu", || {
        let vm = kvm.vm()?;
        let _vcpu = kvm.vcpu(&vm, 0)?;
        Ok(show(ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, 0)))
    });
    kvm.vm_case("irq_line_without_irqchip", |vm| {
        Ok(show(put(
            vm,
            KVM_IRQ_LINE,
            &kvm_irq_level { irq: 4, level: 1 },
        )))
    });
    kvm.vm_case("signal_msi_without_irqchip", |vm| {
        let msi = kvm_msi {
            address_lo: 0xfee0_0000,
            data: 0x30,
            ..kvm_msi::ZERO
        };
        Ok(show(put(vm, KVM_SIGNAL_MSI, &msi)))
    });
    kvm.vcpu_case("get_lapic_without_irqchip", |vcpu| {
        let mut lapic = vec![0u8; 1024];
        Ok(show(ioctl(vcpu, KVM_GET_LAPIC, lapic.as_mut_ptr() as u64)))
    });
    let pio = KVM_IOEVENTFD_FLAG_PIO;
    for (name, len, flags) in [
        ("ioeventfd_len_3", 3, pio),
        ("ioeventfd_unknown_flag", 1, pio | 1 << 20),
        (
            "ioeventfd_deassign_missing",
            1,
            pio | KVM_IOEVENTFD_FLAG_DEASSIGN,
        ),
        ("ioeventfd_pio_valid", 1, pio),
    ] {
        kvm.vm_case(name, |vm| {
            let event = eventfd()?;
            let value = kvm_ioeventfd {
                addr: 0x80,
                len,
                fd: event.as_raw_fd(),
                flags,
                ..kvm_ioeventfd::ZERO
            };
            Ok(show(put(vm, KVM_IOEVENTFD, &value)))
        });
    }
    for (name, flags) in [
        ("irqfd_without_irqchip", 0),
        ("irqfd_unknown_flag", 1 << 20),
    ] {
        kvm.vm_case(name, |vm| {
            let event = eventfd()?;
            let value = kvm_irqfd {
                fd: event.as_raw_fd() as u32,
                gsi: 4,
                flags,
                ..kvm_irqfd::ZERO
            };
            Ok(show(put(vm, KVM_IRQFD, &value)))
        });
    }
    kvm.vm_case("set_clock_unknown_flag", |vm| {
        let clock = kvm_clock_data {
            flags: 1 << 20,
            ..kvm_clock_data::ZERO
        };
        Ok(show(put(vm, KVM_SET_CLOCK, &clock)))
    });
    for (name, slot, with_slot) in [
        ("get_dirty_log_missing_slot", 0, false),
        ("get_dirty_log_slot_without_logging", 0, true),
        ("get_dirty_log_slot_out_of_range", 0x7fff, false),
    ] {
        kvm.vm_case(name, |vm| {
            let memory = Mapping::anonymous(GUEST_MEM)?;
            if with_slot {
                let outcome = region(vm, 0, 0, 0, GUEST_MEM as u64, memory.at(0));
                need(KVM_SET_USER_MEMORY_REGION, outcome)?;
            }
            let mut bitmap = [0u64; GUEST_MEM / PAGE / 64 + 1];
            let log = kvm_dirty_log {
                slot,
                padding1: 0,
                dirty_bitmap: bitmap.as_mut_ptr() as u64,
            };
            Ok(show(put(vm, KVM_GET_DIRTY_LOG, &log)))
        });
    }
}

/// mmap of a vCPU file beyond its size, and of files that have no mmap.
fn vcpu_mmap(kvm: &Kvm) {
    let shared = libc::MAP_SHARED;
    let read = libc::PROT_READ;
    let size = kvm.mmap_size;
    // (name, file: 0 system / 1 VM / 2 vCPU, length, offset, flags, the
    // page to probe)
    let cases: [(&str, u8, usize, i64, i32, usize); 7] = [
        ("mmap_vcpu_size", 2, size, 0, shared, 0),
        ("mmap_vcpu_size_plus_page", 2, size + PAGE, 0, shared, size),
        (
            "mmap_vcpu_offset_page_5",
            2,
            PAGE,
            5 * PAGE as i64,
            shared,
            0,
        ),
        ("mmap_vcpu_offset_huge", 2, PAGE, 1 << 44, shared, 0),
        ("mmap_vcpu_private", 2, PAGE, 0, libc::MAP_PRIVATE, 0),
        ("mmap_vm_fd", 1, PAGE, 0, shared, 0),
        ("mmap_system_fd", 0, PAGE, 0, shared, 0),
    ];
    for (name, file, len, offset, flags, probe_at) in cases {
        case(name, || {
            let vm = kvm.vm()?;
            let vcpu = owned(need(
                KVM_CREATE_VCPU,
                ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0),
            )?);
            let fd = [kvm.sys, vm.as_raw_fd(), vcpu.as_raw_fd()][usize::from(file)];
            Ok(match Mapping::new(len, read, flags, fd, offset) {
                Ok(mapping) => format!("ok probe={}", probe(mapping.at(probe_at))),
                Err(errno) => errno_name(errno),
            })
        });
    }
}

/// Broken guests: what KVM_RUN reports.
fn guests(kvm: &Kvm) {
    // lidt [0x2000]: the IDT limit 0 from the zeroed descriptor there.
    const LIDT_ZERO: [u8; 5] = [0x0f, 0x01, 0x1e, 0x00, 0x20];
    let with_empty_idt = |tail: &[u8]| [&LIDT_ZERO[..], tail].concat();
    kvm.guest_case("guest_hlt", &[0xf4]);
    kvm.guest_case("guest_triple_fault_int3", &with_empty_idt(&[0xcc, 0xf4]));
    kvm.guest_case(
        "guest_triple_fault_ud2",
        &with_empty_idt(&[0x0f, 0x0b, 0xf4]),
    );
    kvm.guest_case("guest_garbage_ff", &with_empty_idt(&[0xff; 32]));
    // jmp far 0x2000:0 -> GPA 0x20000, outside the 64 KiB slot.
    kvm.guest_case("guest_jump_outside_memslots", &[0xea, 0, 0, 0, 0x20]);
    // mov ax, 0x1000; mov ds, ax; mov byte [0], 0x5a -> GPA 0x10000.
    let write_10000 = [
        0xb8, 0x00, 0x10, 0x8e, 0xd8, 0xc6, 0x06, 0x00, 0x00, 0x5a, 0xf4,
    ];
    kvm.guest_case("guest_write_unbacked", &write_10000);
    case("guest_write_readonly_slot", || {
        let guest = kvm.guest(&write_10000)?;
        let readonly = Mapping::anonymous(GUEST_MEM)?;
        let slot = region(
            guest.vm.as_raw_fd(),
            1,
            KVM_MEM_READONLY,
            GUEST_MEM as u64,
            GUEST_MEM as u64,
            readonly.at(0),
        );
        need(KVM_SET_USER_MEMORY_REGION, slot)?;
        Ok(guest.vcpu.run(TIMEOUT_SECS))
    });
    case("guest_loop_forever", || {
        // jmp $: only the alarm ends it (1 s here).
        Ok(kvm.guest(&[0xeb, 0xfe])?.vcpu.run(1))
    });
    for (name, cs_db) in [
        ("guest_long_mode_cr3_unbacked", false),
        ("guest_long_mode_cs_l_and_d", true),
    ] {
        case(name, || {
            let guest = kvm.guest(&[0xf4])?;
            let vcpu = guest.vcpu.raw();
            let mut sregs: kvm_sregs = get(vcpu, KVM_GET_SREGS)?;
            long_mode(&mut sregs, UNBACKED, cs_db);
            need(KVM_SET_SREGS, put(vcpu, KVM_SET_SREGS, &sregs))?;
            Ok(guest.vcpu.run(TIMEOUT_SECS))
        });
    }
    case("guest_host_memory_unmapped", || {
        let guest = kvm.guest(&[0xf4])?;
        // Slot 0's host memory goes away under the VM.
        drop(guest.memory);
        Ok(guest.vcpu.run(TIMEOUT_SECS))
    });
    case("guest_immediate_exit", || {
        let guest = kvm.guest(&[0xf4])?;
        guest.vcpu.run.write(run::IMMEDIATE_EXIT, &[1]);
        Ok(guest.vcpu.run(TIMEOUT_SECS))
    });
    case("guest_no_memory", || {
        let vm = kvm.vm()?;
        // At reset: CS:IP = f000:fff0, GPA 0xfffffff0, no slot anywhere.
        Ok(kvm.vcpu(&vm, 0)?.run(TIMEOUT_SECS))
    });
    case("guest_run_before_mmap", || {
        let vm = kvm.vm()?;
        let fd = owned(need(
            KVM_CREATE_VCPU,
            ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0),
        )?);
        let outcome = ioctl(fd.as_raw_fd(), KVM_RUN, 0);
        let (rw, shared) = (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED);
        let run = Mapping::new(kvm.mmap_size, rw, shared, fd.as_raw_fd(), 0)
            .map_err(|errno| SetupFailed(format!("mmap_vcpu={}", errno_name(errno))))?;
        Ok(Vcpu { fd, run }.ran(outcome))
    });
}

// ------------------------------------------------ irqchip and PV guests

// Hostile guests with the in-kernel irqchip (issue 13): each VM has
// KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2 (flags 0) and a CPUID with the KVM
// leaves, and runs at CPL 0 in long mode a small interpreter of a table
// of operations the host wrote into guest memory (MMIO, port I/O, MSR
// and hypercall operations), so that the hostile content lives in Rust
// tables and one piece of hand-assembled code serves every case.

/// The irqchip guests' RAM: 1 MiB at GPA 0.
const IRQ_RAM: u64 = 0x10_0000;
/// Page tables identity-mapping the low 4 GiB with 2 MiB pages: the
/// PML4 here, the PDPT in the next page, then four page directories.
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PAGE_DIRECTORIES: u64 = 0x3000;
/// Null, 64-bit code (selector 0x8), flat data (0x10), as `long_mode`
/// sets them: IRETQ reloads CS and SS from here.
const GDT: u64 = 0x7000;
/// 32 interrupt gates, one per exception vector.
const IDT: u64 = 0x7100;
const IDT_VECTORS: u64 = 32;
/// The interpreter ([`INTERPRETER`]), then its exception stubs.
const PROGRAM: u64 = 0x8000;
/// Where KVM's SMM entry starts (SMBASE 0x30000 + 0x8000, 16-bit).
const SMM_ENTRY: u64 = 0x3_8000;
/// The operation table ([`Op`]): 48 bytes each, ended by a zeroed entry.
const OPS: u64 = 0x4_0000;
const OP_SIZE: u64 = 48;
const MAX_OPS: usize = 8000;
/// The value each operation left (RAX), one u64 each; at +0x10000 (the
/// interpreter's displacement) whether it took a #GP, one u64 each.
const RESULTS: u64 = 0xa_0000;
const FAULTS: u64 = RESULTS + 0x1_0000;
/// The vector of an unexpected exception (one byte).
const FAULT_VECTOR: u64 = 0xc_0000;
/// RAM the cases may point PV areas at (unaligned, but inside RAM).
const SCRATCH: u64 = 0xd_0000;
/// The last 64 bytes of RAM hold [`CANARY`] bytes: what an area that
/// crosses the end of RAM leaves there.
const CANARY: u8 = 0x5a;
/// A 64 KiB slot under 4 GiB holding the reset vector (at its 0xfff0):
/// a vCPU that INIT resets ends at [`RESET_PORT`].
const RESET_SLOT: u64 = 0xffff_0000;
/// Ports the guest ends at: all operations done, an unexpected
/// exception, the reset vector, the SMM entry.
const DONE_PORT: u16 = 0x3f0;
const FAULT_PORT: u16 = 0x3f1;
const RESET_PORT: u16 = 0x3f2;
const SMM_PORT: u16 = 0x3f3;
const LAPIC: u64 = 0xfee0_0000;
const IOAPIC: u64 = 0xfec0_0000;
/// IOREGSEL and IOWIN of the IOAPIC.
const IOAPIC_SELECT: u64 = IOAPIC;
const IOAPIC_WINDOW: u64 = IOAPIC + 0x10;
/// The xAPIC ICR (low, high) and the x2APIC MSRs used.
const APIC_ICR: u64 = LAPIC + 0x300;
const APIC_ICR2: u64 = LAPIC + 0x310;
const APIC_SVR: u64 = LAPIC + 0xf0;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_SELF_IPI: u32 = 0x83f;
const X2APIC_ESR: u32 = 0x828;
const X2APIC_IRR: u32 = 0x820;
/// IA32_APIC_BASE at reset of the BSP (enabled, BSP) and with x2APIC.
const APIC_BASE_RESET: u64 = 0xfee0_0900;
const APIC_BASE_X2APIC: u64 = APIC_BASE_RESET | 1 << 10;
/// ICR fields.
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL: u32 = 1 << 15;
const ICR_SELF: u32 = 1 << 18;
const ICR_ALL: u32 = 2 << 18;
const ICR_ALL_BUT_SELF: u32 = 3 << 18;
/// The longer limit of these guests (thousands of exits, nested).
const IRQCHIP_TIMEOUT_SECS: u32 = 15;

/// The interpreter, at [`PROGRAM`], assembled by hand (checked with GNU
/// as). Registers: RBP the current operation, R12 its result slot, R13
/// whether it took a #GP, R14 NMIs taken, R15 #GPs taken. Each
/// operation is six u64s: code, target, value, a1, a2, a3.
#[rustfmt::skip]
const INTERPRETER: [u8; 0xe0] = [
    // start (0x00):
    0xbc, 0x00, 0x00, 0x0f, 0x00,       // mov esp, 0xf0000 (the stack)
    0xbd, 0x00, 0x00, 0x04, 0x00,       // mov ebp, 0x40000 (OPS)
    0x41, 0xbc, 0x00, 0x00, 0x0a, 0x00, // mov r12d, 0xa0000 (RESULTS)
    0x45, 0x31, 0xf6,                   // xor r14d, r14d
    0x45, 0x31, 0xff,                   // xor r15d, r15d
    0xeb, 0x14,                         // jmp fetch
    // store (0x18):
    0x49, 0x89, 0x04, 0x24,             // mov [r12], rax
    0x4d, 0x89, 0xac, 0x24, 0x00, 0x00, 0x01, 0x00, // mov [r12+0x10000], r13
    0x48, 0x83, 0xc5, 0x30,             // add rbp, 48
    0x49, 0x83, 0xc4, 0x08,             // add r12, 8
    // fetch (0x2c):
    0x48, 0x8b, 0x45, 0x00,             // mov rax, [rbp] (code)
    0x48, 0x8b, 0x4d, 0x08,             // mov rcx, [rbp+8] (target)
    0x48, 0x8b, 0x55, 0x10,             // mov rdx, [rbp+16] (value)
    0x45, 0x31, 0xed,                   // xor r13d, r13d
    // 1: 32-bit write of value at target
    0x83, 0xf8, 0x01,                   // cmp eax, 1
    0x75, 0x06,                         // jne +6
    0x89, 0x11,                         // mov [rcx], edx
    0x31, 0xc0,                         // xor eax, eax
    0xeb, 0xd2,                         // jmp store
    // 2: 32-bit read at target
    0x83, 0xf8, 0x02,                   // cmp eax, 2
    0x75, 0x04,                         // jne +4
    0x8b, 0x01,                         // mov eax, [rcx]
    0xeb, 0xc9,                         // jmp store
    // 3: OUT of the value's low byte to port target
    0x83, 0xf8, 0x03,                   // cmp eax, 3
    0x75, 0x09,                         // jne +9
    0x89, 0xd0,                         // mov eax, edx
    0x89, 0xca,                         // mov edx, ecx
    0xee,                               // out dx, al
    0x31, 0xc0,                         // xor eax, eax
    0xeb, 0xbb,                         // jmp store
    // 4: IN of a byte from port target
    0x83, 0xf8, 0x04,                   // cmp eax, 4
    0x75, 0x07,                         // jne +7
    0x89, 0xca,                         // mov edx, ecx
    0x31, 0xc0,                         // xor eax, eax
    0xec,                               // in al, dx
    0xeb, 0xaf,                         // jmp store
    // 5: WRMSR target = value
    0x83, 0xf8, 0x05,                   // cmp eax, 5
    0x75, 0x0d,                         // jne +13
    0x48, 0x89, 0xd0,                   // mov rax, rdx
    0x48, 0xc1, 0xea, 0x20,             // shr rdx, 32
    0x0f, 0x30,                         // wrmsr
    0x31, 0xc0,                         // xor eax, eax
    0xeb, 0x9d,                         // jmp store
    // 6: RDMSR target (0 if it faults)
    0x83, 0xf8, 0x06,                   // cmp eax, 6
    0x75, 0x0f,                         // jne +15
    0x31, 0xc0,                         // xor eax, eax
    0x31, 0xd2,                         // xor edx, edx
    0x0f, 0x32,                         // rdmsr
    0x48, 0xc1, 0xe2, 0x20,             // shl rdx, 32
    0x48, 0x09, 0xd0,                   // or rax, rdx
    0xeb, 0x89,                         // jmp store
    // 7: VMMCALL: RAX = target, RBX = value, RCX, RDX, RSI = a1-a3
    0x83, 0xf8, 0x07,                   // cmp eax, 7
    0x75, 0x1a,                         // jne +26
    0x48, 0x89, 0xc8,                   // mov rax, rcx
    0x48, 0x89, 0xd3,                   // mov rbx, rdx
    0x48, 0x8b, 0x4d, 0x18,             // mov rcx, [rbp+24]
    0x48, 0x8b, 0x55, 0x20,             // mov rdx, [rbp+32]
    0x48, 0x8b, 0x75, 0x28,             // mov rsi, [rbp+40]
    0x0f, 0x01, 0xd9,                   // vmmcall
    0xe9, 0x6a, 0xff, 0xff, 0xff,       // jmp store
    // 8: a loop of value (>= 1) iterations
    0x83, 0xf8, 0x08,                   // cmp eax, 8
    0x75, 0x0c,                         // jne +12
    0x48, 0xff, 0xca,                   // dec rdx
    0x75, 0xfb,                         // jnz -5 (the dec)
    0x31, 0xc0,                         // xor eax, eax
    0xe9, 0x59, 0xff, 0xff, 0xff,       // jmp store
    // 0 (and anything else): done
    0x66, 0xba, 0xf0, 0x03,             // mov dx, 0x3f0 (DONE_PORT)
    0xee,                               // out dx, al
    0xeb, 0xfe,                         // jmp $
    // #GP handler (0xc6): skip the 2-byte WRMSR/RDMSR, count, flag.
    0x49, 0xff, 0xc7,                   // inc r15
    0x41, 0xbd, 0x01, 0x00, 0x00, 0x00, // mov r13d, 1
    0x48, 0x83, 0x44, 0x24, 0x08, 0x02, // add qword [rsp+8], 2 (RIP)
    0x48, 0x83, 0xc4, 0x08,             // add rsp, 8 (the error code)
    0x48, 0xcf,                         // iretq
    // NMI handler (0xdb): count.
    0x49, 0xff, 0xc6,                   // inc r14
    0x48, 0xcf,                         // iretq
];
/// Offsets in [`INTERPRETER`]; the exception stubs follow it.
const GP_HANDLER: u64 = 0xc6;
const NMI_HANDLER: u64 = 0xdb;
const STUBS: u64 = INTERPRETER.len() as u64;
/// After the 4-byte stubs (`mov al, vector; jmp fault`): the vector to
/// FAULT_VECTOR, then an OUT to FAULT_PORT.
#[rustfmt::skip]
const FAULT_TAIL: [u8; 14] = [
    0xbf, 0x00, 0x00, 0x0c, 0x00,       // mov edi, 0xc0000 (FAULT_VECTOR)
    0x88, 0x07,                         // mov [rdi], al
    0x66, 0xba, 0xf1, 0x03,             // mov dx, 0x3f1 (FAULT_PORT)
    0xee,                               // out dx, al
    0xeb, 0xfe,                         // jmp $
];
/// The little-endian u32 at `at` in `bytes`.
const fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

// The addresses and ports the hand-assembled bytes encode.
const _: () = {
    assert!(u32_at(&INTERPRETER, 6) as u64 == OPS);
    assert!(u32_at(&INTERPRETER, 12) as u64 == RESULTS);
    assert!(u32_at(&INTERPRETER, 0x20) as u64 == FAULTS - RESULTS);
    assert!(u32_at(&INTERPRETER, 0xc0) & 0xff_ffff == (DONE_PORT as u32) << 8 | 0xba);
    assert!(u32_at(&FAULT_TAIL, 1) as u64 == FAULT_VECTOR);
    assert!(u32_at(&FAULT_TAIL, 8) & 0xff_ffff == (FAULT_PORT as u32) << 8 | 0xba);
    assert!(INTERPRETER[0x27] as u64 == OP_SIZE);
};

/// 16-bit code reporting `port`: at the reset vector and the SMM entry.
fn report_port_16bit(port: u16) -> [u8; 6] {
    let [low, high] = port.to_le_bytes();
    [
        0xba, low, high, // mov dx, port
        0xee, // out dx, al
        0xeb, 0xfe, // jmp $
    ]
}

/// One operation of the interpreter.
#[derive(Clone, Copy, Debug)]
enum Op {
    Write32(u64, u32),
    Read32(u64),
    Out8(u16, u8),
    In8(u16),
    Wrmsr(u32, u64),
    Rdmsr(u32),
    /// RAX and RBX, RCX, RDX, RSI.
    Hypercall(u64, [u64; 4]),
    Spin(u64),
}

impl Op {
    fn encode(self) -> [u8; OP_SIZE as usize] {
        let words: [u64; 6] = match self {
            Op::Write32(addr, value) => [1, addr, value.into(), 0, 0, 0],
            Op::Read32(addr) => [2, addr, 0, 0, 0, 0],
            Op::Out8(port, value) => [3, port.into(), value.into(), 0, 0, 0],
            Op::In8(port) => [4, port.into(), 0, 0, 0, 0],
            Op::Wrmsr(msr, value) => [5, msr.into(), value, 0, 0, 0],
            Op::Rdmsr(msr) => [6, msr.into(), 0, 0, 0, 0],
            Op::Hypercall(nr, [a0, a1, a2, a3]) => [7, nr, a0, a1, a2, a3],
            Op::Spin(count) => [8, 0, count.max(1), 0, 0, 0],
        };
        let mut bytes = [0u8; OP_SIZE as usize];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// What one operation left: RAX, and whether it took a #GP.
#[derive(Clone, Copy)]
struct Done {
    value: u64,
    gp: bool,
}

/// An irqchip guest; fields drop in order: the vCPU, the VM, its memory.
struct IrqGuest {
    vcpu: Vcpu,
    _vm: OwnedFd,
    ram: Mapping,
    _reset: Mapping,
}

impl IrqGuest {
    fn u64_at(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.ram.read(gpa as usize))
    }
}

/// The guest CPUID: AMD, family 0x17, with the APIC, x2APIC, long mode
/// and the KVM leaves 0x40000000 ("KVMKVMKVM") and 0x40000001 with the
/// PV features whose MSRs and hypercalls the cases use.
fn pv_cpuid() -> Step<Counted> {
    use hv_core::pvrs_abi::cpuid::{
        feature_mask, KVM_FEATURE_CLOCKSOURCE, KVM_FEATURE_CLOCKSOURCE2,
        KVM_FEATURE_CLOCKSOURCE_STABLE_BIT, KVM_FEATURE_PV_EOI, KVM_FEATURE_PV_SCHED_YIELD,
        KVM_FEATURE_PV_SEND_IPI, KVM_FEATURE_PV_TLB_FLUSH, KVM_FEATURE_PV_UNHALT,
        KVM_FEATURE_STEAL_TIME,
    };
    use hv_core::supported_cpuid::{KVM_CPUID_FEATURES, KVM_CPUID_SIGNATURE, KVM_SIGNATURE};
    let [auth, enti, camd] = [b"Auth", b"enti", b"cAMD"].map(|s| u32::from_le_bytes(*s));
    let features = [
        KVM_FEATURE_CLOCKSOURCE,
        KVM_FEATURE_CLOCKSOURCE2,
        KVM_FEATURE_STEAL_TIME,
        KVM_FEATURE_PV_EOI,
        KVM_FEATURE_PV_UNHALT,
        KVM_FEATURE_PV_TLB_FLUSH,
        KVM_FEATURE_PV_SEND_IPI,
        KVM_FEATURE_PV_SCHED_YIELD,
        KVM_FEATURE_CLOCKSOURCE_STABLE_BIT,
    ]
    .into_iter()
    .fold(0, |mask, bit| mask | feature_mask(bit));
    // (leaf, eax, ebx, ecx, edx)
    let leaves: [(u32, u32, u32, u32, u32); 6] = [
        (0, 1, auth, camd, enti),
        // ECX: x2APIC (21), hypervisor (31). EDX: FPU, PSE, TSC, MSR,
        // PAE, CX8, APIC, PGE, CMOV, PAT.
        (1, 0x0080_0f12, 0, 1 << 21 | 1 << 31, 0x0001_a379),
        (
            KVM_CPUID_SIGNATURE,
            KVM_CPUID_FEATURES,
            KVM_SIGNATURE[0],
            KVM_SIGNATURE[1],
            KVM_SIGNATURE[2],
        ),
        (KVM_CPUID_FEATURES, features, 0, 0, 0),
        (0x8000_0000, 0x8000_0001, auth, camd, enti),
        // EDX: long mode (29).
        (0x8000_0001, 0, 0, 0, 1 << 29),
    ];
    let mut cpuid = Counted::cpuid(leaves.len() as u32, leaves.len())?;
    for (i, (function, eax, ebx, ecx, edx)) in leaves.into_iter().enumerate() {
        let entry = kvm_cpuid_entry2 {
            function,
            eax,
            ebx,
            ecx,
            edx,
            ..kvm_cpuid_entry2::ZERO
        };
        cpuid.set(i, &entry);
    }
    Ok(cpuid)
}

/// Page tables, GDT, IDT, the interpreter and its stubs, the SMM entry,
/// `ops` and the canary, in the guest's RAM.
fn fill_irq_ram(ram: &Mapping, ops: &[Op]) {
    ram.write(PML4 as usize, &(PDPT | 3).to_le_bytes());
    for directory in 0..4u64 {
        let at = PAGE_DIRECTORIES + directory * PAGE as u64;
        ram.write((PDPT + directory * 8) as usize, &(at | 3).to_le_bytes());
        for entry in 0..512u64 {
            // Present, writable, 2 MiB page.
            let page = (directory * 512 + entry) << 21 | 0x83;
            ram.write((at + entry * 8) as usize, &page.to_le_bytes());
        }
    }
    let gdt: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (i, descriptor) in gdt.iter().enumerate() {
        ram.write(GDT as usize + i * 8, &descriptor.to_le_bytes());
    }
    let mut code = INTERPRETER.to_vec();
    let tail = STUBS + 4 * IDT_VECTORS;
    for vector in 0..IDT_VECTORS {
        // mov al, vector; jmp rel8 to the tail.
        let rel = tail - (STUBS + 4 * vector + 4);
        code.extend([0xb0, vector as u8, 0xeb, rel as u8]);
    }
    code.extend(FAULT_TAIL);
    ram.write(PROGRAM as usize, &code);
    for vector in 0..IDT_VECTORS {
        let handler = PROGRAM
            + match vector {
                2 => NMI_HANDLER,
                13 => GP_HANDLER,
                _ => STUBS + 4 * vector,
            };
        // A 64-bit interrupt gate: offset 15:0, selector 0x8, type 0x8e
        // (present, DPL 0), offset 31:16, offset 63:32, reserved.
        let mut gate = [0u8; 16];
        gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&8u16.to_le_bytes());
        gate[5] = 0x8e;
        gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        ram.write((IDT + vector * 16) as usize, &gate);
    }
    ram.write(SMM_ENTRY as usize, &report_port_16bit(SMM_PORT));
    assert!(ops.len() < MAX_OPS);
    for (i, op) in ops.iter().enumerate() {
        ram.write((OPS + i as u64 * OP_SIZE) as usize, &op.encode());
    }
    ram.write(IRQ_RAM as usize - 64, &[CANARY; 64]);
}

impl Kvm {
    /// A VM with the in-kernel irqchip and PIT, [`IRQ_RAM`] of RAM
    /// holding the interpreter and `ops`, the reset-vector slot, and
    /// vCPU 0 in long mode at [`PROGRAM`] with interrupts off.
    fn irqchip_guest(&self, ops: &[Op]) -> Step<IrqGuest> {
        let vm = self.vm()?;
        need(
            KVM_CREATE_IRQCHIP,
            ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, 0),
        )?;
        let pit = put(vm.as_raw_fd(), KVM_CREATE_PIT2, &kvm_pit_config::ZERO);
        need(KVM_CREATE_PIT2, pit)?;
        let ram = Mapping::anonymous(IRQ_RAM as usize)?;
        fill_irq_ram(&ram, ops);
        let slot = region(vm.as_raw_fd(), 0, 0, 0, IRQ_RAM, ram.at(0));
        need(KVM_SET_USER_MEMORY_REGION, slot)?;
        let reset = Mapping::anonymous(GUEST_MEM)?;
        reset.write(0xfff0, &report_port_16bit(RESET_PORT));
        let slot = region(
            vm.as_raw_fd(),
            1,
            0,
            RESET_SLOT,
            GUEST_MEM as u64,
            reset.at(0),
        );
        need(KVM_SET_USER_MEMORY_REGION, slot)?;
        let vcpu = self.vcpu(&vm, 0)?;
        need(KVM_SET_CPUID2, pv_cpuid()?.call(vcpu.raw(), KVM_SET_CPUID2))?;
        let mut sregs: kvm_sregs = get(vcpu.raw(), KVM_GET_SREGS)?;
        long_mode(&mut sregs, PML4, false);
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 3 * 8 - 1;
        sregs.idt.base = IDT;
        sregs.idt.limit = (IDT_VECTORS * 16 - 1) as u16;
        need(KVM_SET_SREGS, put(vcpu.raw(), KVM_SET_SREGS, &sregs))?;
        let regs = kvm_regs {
            rip: PROGRAM,
            rflags: 2,
            ..kvm_regs::ZERO
        };
        need(KVM_SET_REGS, put(vcpu.raw(), KVM_SET_REGS, &regs))?;
        Ok(IrqGuest {
            vcpu,
            _vm: vm,
            ram,
            _reset: reset,
        })
    }

    /// A case running `ops` in an irqchip guest: the exit, the #GPs and
    /// NMIs the guest took (`vector=` of an unexpected exception), and
    /// what `report` makes of the operations and the guest.
    fn irqchip_case(
        &self,
        name: &str,
        ops: &[Op],
        report: impl FnOnce(&[(Op, Done)], &IrqGuest) -> String,
    ) {
        case(name, || {
            let guest = self.irqchip_guest(ops)?;
            let ran = guest.vcpu.run(IRQCHIP_TIMEOUT_SECS);
            let regs: kvm_regs = get(guest.vcpu.raw(), KVM_GET_REGS)?;
            let mut result = format!("{ran} gp={} nmi={}", regs.r15, regs.r14);
            if guest.vcpu.io_port() == Some(FAULT_PORT) {
                let vector = guest.ram.read::<1>(FAULT_VECTOR as usize)[0];
                result += &format!(" vector={vector}");
            }
            let done: Vec<(Op, Done)> = ops
                .iter()
                .enumerate()
                .map(|(i, &op)| {
                    let slot = i as u64 * 8;
                    let value = guest.u64_at(RESULTS + slot);
                    let gp = guest.u64_at(FAULTS + slot) != 0;
                    (op, Done { value, gp })
                })
                .collect();
            let more = report(&done, &guest);
            if !more.is_empty() {
                result += " ";
                result += &more;
            }
            Ok(result)
        });
    }
}

impl Vcpu {
    /// The port of a KVM_EXIT_IO in the run page.
    fn io_port(&self) -> Option<u16> {
        (self.u32_at(run::EXIT_REASON) == KVM_EXIT_IO)
            .then(|| u16::from_le_bytes(self.run.read(run::IO_PORT)))
    }
}

/// `values` with runs of equal ones as `value*count`, comma-separated.
fn runs(values: impl IntoIterator<Item = String>) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for value in values {
        match out.last_mut() {
            Some((last, count)) if *last == value => *count += 1,
            _ => out.push((value, 1)),
        }
    }
    let shown = out.into_iter().map(|(value, count)| match count {
        1 => value,
        _ => format!("{value}*{count}"),
    });
    shown.collect::<Vec<_>>().join(",")
}

/// The results of the reads (Read32, In8, Rdmsr) among `done`, in hex;
/// `gp` for a read that faulted.
fn reads(done: &[(Op, Done)]) -> impl Iterator<Item = (Op, String)> + '_ {
    done.iter().filter_map(|&(op, d)| {
        let shown = if d.gp {
            "gp".into()
        } else {
            format!("{:#x}", d.value)
        };
        matches!(op, Op::Read32(_) | Op::In8(_) | Op::Rdmsr(_)).then_some((op, shown))
    })
}

/// How many operations matching `pick` took a #GP.
fn faults(done: &[(Op, Done)], pick: impl Fn(Op) -> bool) -> usize {
    done.iter().filter(|(op, d)| pick(*op) && d.gp).count()
}

/// The issue 13 hostile guests, each in a new VM with the in-kernel
/// irqchip and PIT.
fn irqchip_guests(kvm: &Kvm) {
    lapic_garbage(kvm);
    ioapic_garbage_case(kvm);
    pic_garbage(kvm);
    pit_garbage(kvm);
    ipi_storm(kvm);
    ipi_to_self(kvm);
    hypercalls(kvm);
    pv_msrs_outside_ram(kvm);
}

/// The xAPIC registers a read reports (KVM's readable set in xAPIC
/// mode), without the current count (0x390), which depends on time, and
/// ESR (0x280), where KVM records no errors while hardware (and pvrs)
/// does: `guest_irqchip_ipi_illegal_vectors` shows it.
const LAPIC_READABLE: [u64; 42] = [
    0x20, 0x30, 0x80, 0x90, 0xa0, 0xd0, 0xe0, 0xf0, 0x100, 0x110, 0x120, 0x130, 0x140, 0x150,
    0x160, 0x170, 0x180, 0x190, 0x1a0, 0x1b0, 0x1c0, 0x1d0, 0x1e0, 0x1f0, 0x200, 0x210, 0x220,
    0x230, 0x240, 0x250, 0x260, 0x270, 0x300, 0x310, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370,
    0x380, 0x3e0,
];

/// Every 16-byte register of the xAPIC page written with 0xffffffff,
/// then 0, then 0xdeadbeef, then read; reports the readable registers.
fn lapic_garbage(kvm: &Kvm) {
    let offsets = || (0..0x400u64).step_by(0x10);
    let mut ops = Vec::new();
    for pattern in [0xffff_ffff, 0, 0xdead_beef] {
        ops.extend(offsets().map(|offset| Op::Write32(LAPIC + offset, pattern)));
    }
    ops.extend(offsets().map(|offset| Op::Read32(LAPIC + offset)));
    kvm.irqchip_case("guest_irqchip_lapic_garbage", &ops, |done, _| {
        let shown = reads(done).filter_map(|(op, value)| match op {
            Op::Read32(addr) if LAPIC_READABLE.contains(&(addr - LAPIC)) => {
                Some(format!("{:03x}:{value}", addr - LAPIC))
            }
            _ => None,
        });
        format!("regs={}", shown.collect::<Vec<_>>().join(","))
    });
}

/// IOAPIC garbage for register `index`: redirection entries with every
/// delivery mode (reserved ones too), vectors 0-23, logical and
/// physical destinations, both polarities and triggers, the read-only
/// bits set, reserved bits set in every third; pins 16-23 masked (no
/// line is ever raised, so nothing is delivered).
fn ioapic_garbage_value(index: u32) -> u32 {
    if !(0x10..0x40).contains(&index) {
        return 0xdead_beef ^ index;
    }
    let pin = (index - 0x10) / 2;
    if !index.is_multiple_of(2) {
        let dest = if pin.is_multiple_of(2) { 0xff } else { pin };
        return dest << 24 | pin;
    }
    let mut low = pin | (pin & 7) << 8 | 1 << 12 | 1 << 14;
    low |= if pin & 8 != 0 { 1 << 11 } else { 0 };
    low |= if pin & 1 != 0 { 1 << 13 } else { 0 };
    low |= if pin & 2 != 0 { 1 << 15 } else { 0 };
    low |= if pin >= 16 { 1 << 16 } else { 0 };
    low |= if pin.is_multiple_of(3) {
        0xfffe_0000 & !(1 << 16)
    } else {
        0
    };
    low
}

/// Every IOAPIC register index 0..=0x40 written with 0xffffffff, then
/// with [`ioapic_garbage_value`], IOREGSEL beyond 8 bits, writes to offsets
/// outside the two registers (0x20, the version-0x20 EOI register at
/// 0x40); then every index read back.
fn ioapic_garbage_case(kvm: &Kvm) {
    let mut ops = Vec::new();
    for pass in 0..2 {
        for index in 0..=0x40u32 {
            let value = if pass == 0 {
                0xffff_ffff
            } else {
                ioapic_garbage_value(index)
            };
            ops.push(Op::Write32(IOAPIC_SELECT, index));
            ops.push(Op::Write32(IOAPIC_WINDOW, value));
        }
    }
    ops.extend([
        Op::Write32(IOAPIC_SELECT, 0x1ff),
        Op::Read32(IOAPIC_SELECT),
        Op::Write32(IOAPIC_WINDOW, 0x1234_5678),
        Op::Write32(IOAPIC + 0x20, 0xffff_ffff),
        Op::Write32(IOAPIC + 0x40, 0x20),
        Op::Write32(IOAPIC + 0x40, 0),
        Op::Read32(IOAPIC + 0x20),
        Op::Read32(IOAPIC + 0x40),
    ]);
    for index in 0..=0x40u32 {
        ops.push(Op::Write32(IOAPIC_SELECT, index));
        ops.push(Op::Read32(IOAPIC_WINDOW));
    }
    kvm.irqchip_case("guest_irqchip_ioapic_garbage", &ops, |done, _| {
        format!("reads={}", runs(reads(done).map(|(_, value)| value)))
    });
}

/// Pseudo-random bytes (a fixed LCG), the same on every run.
fn garbage_bytes(count: usize) -> impl Iterator<Item = u8> {
    let mut state: u32 = 0x1234_5678;
    (0..count).map(move |_| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (state >> 16) as u8
    })
}

/// The 8259 pair and ELCR: OCWs before any ICW, an ICW1 followed by an
/// OCW3 and garbage ICWs, single-mode and level ICW1s, every OCW2
/// command, OCW3 reads and polls, ELCR patterns, pseudo-random bytes to
/// every port; reports every read (nothing raises a line here).
fn pic_garbage(kvm: &Kvm) {
    const PORTS: [u16; 6] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1];
    let mut ops = vec![
        Op::Out8(0x21, 0xa5),
        Op::Out8(0xa1, 0x5a),
        Op::In8(0x21),
        Op::In8(0xa1),
        Op::Out8(0x20, 0x11),
        Op::Out8(0x20, 0x0b),
        Op::Out8(0x21, 0xff),
        Op::Out8(0x21, 0xff),
        Op::Out8(0x21, 0xff),
        Op::Out8(0xa0, 0x1b),
        Op::Out8(0xa1, 0x07),
        Op::Out8(0xa1, 0x00),
    ];
    for command in 0..8u8 {
        for level in [0, 7] {
            ops.push(Op::Out8(0x20, command << 5 | level));
            ops.push(Op::Out8(0xa0, command << 5 | level));
        }
    }
    for ocw3 in [0x08, 0x0a, 0x0b, 0x0c, 0x48, 0x68, 0x6c, 0x4e] {
        ops.extend([
            Op::Out8(0x20, ocw3),
            Op::In8(0x20),
            Op::Out8(0xa0, ocw3),
            Op::In8(0xa0),
        ]);
    }
    for value in [0xff, 0x00, 0xa5] {
        ops.extend([
            Op::Out8(0x4d0, value),
            Op::Out8(0x4d1, value),
            Op::In8(0x4d0),
            Op::In8(0x4d1),
        ]);
    }
    for (i, byte) in garbage_bytes(384).enumerate() {
        ops.push(Op::Out8(PORTS[i % PORTS.len()], byte));
        if i % 8 == 7 {
            ops.push(Op::In8(PORTS[(i / 8) % PORTS.len()]));
        }
    }
    ops.extend(PORTS.map(Op::In8));
    for ocw3 in [0x0a, 0x0b] {
        ops.extend([
            Op::Out8(0x20, ocw3),
            Op::In8(0x20),
            Op::Out8(0xa0, ocw3),
            Op::In8(0xa0),
        ]);
    }
    kvm.irqchip_case("guest_irqchip_pic_garbage", &ops, |done, _| {
        format!("reads={}", runs(reads(done).map(|(_, value)| value)))
    });
}

/// The PIT: every control byte to 0x43, each followed by garbage counts
/// to the three channels, the byte to port 0x61 and reads of the
/// channels and port 0x61 (not reported: they depend on time).
fn pit_garbage(kvm: &Kvm) {
    let mut ops = Vec::new();
    for control in 0..=255u8 {
        ops.extend([
            Op::Out8(0x43, control),
            Op::Out8(0x40, control),
            Op::Out8(0x40, !control),
            Op::Out8(0x41, control),
            Op::Out8(0x42, !control),
            Op::Out8(0x61, control),
            Op::In8(0x40),
            Op::In8(0x42),
            Op::In8(0x61),
        ]);
    }
    kvm.irqchip_case("guest_irqchip_pit_garbage", &ops, |_, _| String::new());
}

/// ICR delivery modes: the ones a guest can send to itself without
/// ending (fixed, lowest priority, NMI, SIPI to a running vCPU, ExtINT),
/// and the ones sent only where no vCPU is (SMI, reserved 3, INIT).
const SAFE_MODES: [u32; 5] = [0, 1, 4, 6, 7];
const UNSAFE_MODES: [u32; 3] = [2, 3, 5];
/// Level bits: edge, edge assert, level assert, level de-assert.
const ICR_LEVELS: [u32; 4] = [0, ICR_ASSERT, ICR_LEVEL | ICR_ASSERT, ICR_LEVEL];
/// ICR bits reserved in both APIC modes (12-13, 16-17, 20-31).
const ICR_RESERVED: u32 = 0xfff3_3000;

/// `(destination, dest mode and shorthand bits)` that include this vCPU
/// and that do not, in xAPIC mode (xAPIC id 0, LDR 0, flat model).
const XAPIC_TO_SELF: [(u32, u32); 5] = [
    (0, 0),
    (0xff, 0),
    (0, ICR_SELF),
    (0, ICR_ALL),
    (0xff, ICR_LOGICAL),
];
const XAPIC_NOT_SELF: [(u32, u32); 4] = [
    (0x55, 0),
    (0x0f, 0),
    (0x02, ICR_LOGICAL),
    (0, ICR_ALL_BUT_SELF),
];
/// The same in x2APIC mode (x2APIC id 0, LDR 1: cluster 0, bit 0).
const X2APIC_TO_SELF: [(u32, u32); 5] = [
    (0, 0),
    (0xffff_ffff, 0),
    (0, ICR_SELF),
    (0, ICR_ALL),
    (0xffff_ffff, ICR_LOGICAL),
];
const X2APIC_NOT_SELF: [(u32, u32); 4] = [
    (0x55, 0),
    (0xff, 0),
    (0x0001_0002, ICR_LOGICAL),
    (0, ICR_ALL_BUT_SELF),
];

/// ICR values `(destination, low)` for `vectors`: every safe mode to
/// every target, the unsafe modes only to targets without this vCPU,
/// each with every level combination.
fn icr_storm(
    vectors: &[u32],
    to_self: &[(u32, u32)],
    not_self: &[(u32, u32)],
    levels: &[u32],
) -> Vec<(u32, u32)> {
    let mut icrs = Vec::new();
    let all_modes = [&SAFE_MODES[..], &UNSAFE_MODES[..]].concat();
    let targets = to_self
        .iter()
        .map(|&t| (t, &SAFE_MODES[..]))
        .chain(not_self.iter().map(|&t| (t, &all_modes[..])));
    for ((dest, bits), modes) in targets {
        for &mode in modes.iter() {
            for &vector in vectors {
                for &level in levels {
                    icrs.push((dest, bits | mode << 8 | vector | level));
                }
            }
        }
    }
    icrs
}

/// The xAPIC ICR ops for `icrs`: ICR2 written only when the destination
/// changes.
fn xapic_icr_ops(icrs: &[(u32, u32)]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut last_dest = None;
    for &(dest, low) in icrs {
        if last_dest != Some(dest) {
            ops.push(Op::Write32(APIC_ICR2, dest << 24));
            last_dest = Some(dest);
        }
        ops.push(Op::Write32(APIC_ICR, low));
    }
    ops
}

/// x2APIC mode on (read back), and a read of the xAPIC page then.
fn x2apic_on() -> [Op; 3] {
    [
        Op::Wrmsr(MSR_IA32_APICBASE, APIC_BASE_X2APIC),
        Op::Rdmsr(MSR_IA32_APICBASE),
        // The xAPIC page in x2APIC mode.
        Op::Read32(LAPIC + 0x30),
    ]
}

/// ESR latched and read, then IRR, TMR and ISR, through x2APIC MSRs.
fn apic_state_reads() -> Vec<Op> {
    let mut ops = vec![Op::Wrmsr(X2APIC_ESR, 0), Op::Rdmsr(X2APIC_ESR)];
    // IRR 0x820-0x827, TMR 0x818-0x81f, ISR 0x810-0x817.
    for base in [X2APIC_IRR, 0x818, 0x810] {
        ops.extend((base..base + 8).map(Op::Rdmsr));
    }
    ops
}

/// What [`apic_state_reads`] (and [`x2apic_on`]) read, after the #GP
/// counts of the ICR and self-IPI MSR writes.
fn report_apic_state(done: &[(Op, Done)]) -> String {
    let icr_gp = faults(done, |op| matches!(op, Op::Wrmsr(X2APIC_ICR, _)));
    let self_gp = faults(done, |op| matches!(op, Op::Wrmsr(X2APIC_SELF_IPI, _)));
    let read = |msr: u32| {
        reads(done)
            .filter(|(op, _)| matches!(*op, Op::Rdmsr(m) if m == msr))
            .map(|(_, value)| value)
            .last()
            .unwrap_or_default()
    };
    let bank = |base: u32| (base..base + 8).map(read).collect::<Vec<_>>().join(",");
    let mmio = reads(done)
        .find(|(op, _)| matches!(op, Op::Read32(_)))
        .map(|(_, value)| value)
        .unwrap_or_default();
    format!(
        "icr_msr_gp={icr_gp} self_ipi_gp={self_gp} apic_base={} xapic_page_in_x2apic={mmio} \
         esr={} irr={} tmr={} isr={}",
        read(MSR_IA32_APICBASE),
        read(X2APIC_ESR),
        bank(X2APIC_IRR),
        bank(0x818),
        bank(0x810)
    )
}

/// Thousands of IPIs with legal vectors: the APIC software-enabled,
/// then every safe delivery mode to every target that includes this
/// vCPU and every mode (INIT, SMI, reserved 3 too) to nonexistent APIC
/// ids and "all but self", with every level combination, once plain and
/// once with the reserved ICR bits set; then the same through the
/// x2APIC ICR MSR (reserved bits there may #GP) and the self-IPI MSR.
fn ipi_storm(kvm: &Kvm) {
    let vectors = [0x30, 0x41, 0xfe];
    let mut icrs = icr_storm(&vectors, &XAPIC_TO_SELF, &XAPIC_NOT_SELF, &ICR_LEVELS);
    let reserved: Vec<_> = icrs
        .iter()
        .map(|&(d, low)| (d, low | ICR_RESERVED))
        .collect();
    icrs.extend(reserved);
    let mut ops = vec![Op::Write32(APIC_SVR, 0x1ff)];
    ops.extend(xapic_icr_ops(&icrs));
    ops.extend(x2apic_on());
    let levels = [0, ICR_ASSERT];
    let x2icrs = icr_storm(&vectors[..2], &X2APIC_TO_SELF, &X2APIC_NOT_SELF, &levels);
    let msr =
        |(dest, low): (u32, u32)| Op::Wrmsr(X2APIC_ICR, u64::from(dest) << 32 | u64::from(low));
    ops.extend(x2icrs.into_iter().map(msr));
    for reserved in [1 << 13, 1 << 16, 1 << 20, 1 << 31, ICR_RESERVED] {
        ops.push(msr((0, 0x30 | ICR_ASSERT | reserved)));
    }
    for value in [0x30, 0xfe, 0x1ff, 0xffff_ffff, 1 << 32 | 0x30] {
        ops.push(Op::Wrmsr(X2APIC_SELF_IPI, value));
    }
    ops.extend(apic_state_reads());
    kvm.irqchip_case("guest_irqchip_ipi_storm", &ops, |done, _| {
        report_apic_state(done)
    });
}

/// IPIs that end (INIT, SMI) or mark (illegal vectors) this vCPU, one
/// case each.
fn ipi_to_self(kvm: &Kvm) {
    // (name, ICR destination, ICR low): INIT resets the BSP (the reset
    // vector's OUT), an INIT de-assert is ignored, an SMI enters SMM
    // (the SMM entry's OUT) where SMM is emulated.
    let init = 5 << 8;
    let cases: [(&str, u32, u32); 4] = [
        ("guest_irqchip_ipi_init_self", 0, init | ICR_ASSERT),
        ("guest_irqchip_ipi_init_all", 0, init | ICR_ASSERT | ICR_ALL),
        ("guest_irqchip_ipi_init_deassert_self", 0, init | ICR_LEVEL),
        ("guest_irqchip_ipi_smi_self", 0, 2 << 8 | ICR_ASSERT),
    ];
    for (name, dest, low) in cases {
        let ops = xapic_icr_ops(&[(dest, low)]);
        kvm.irqchip_case(name, &ops, |_, _| String::new());
    }
    // Fixed and lowest-priority IPIs with the vectors 0-15 the SDM calls
    // illegal, to this vCPU with the APIC enabled, through both ICRs and
    // the self-IPI MSR.
    let vectors: Vec<u32> = (0..16).collect();
    let fixed = [0, 1 << 8];
    let mut ops = vec![Op::Write32(APIC_SVR, 0x1ff)];
    for &mode in &fixed {
        let icrs: Vec<_> = vectors
            .iter()
            .map(|&v| (0, mode | v | ICR_ASSERT))
            .collect();
        ops.extend(xapic_icr_ops(&icrs));
    }
    ops.extend(x2apic_on());
    for &mode in &fixed {
        let msr = |&v: &u32| Op::Wrmsr(X2APIC_ICR, u64::from(mode | v | ICR_SELF));
        ops.extend(vectors.iter().map(msr));
    }
    ops.extend(
        vectors
            .iter()
            .map(|&v| Op::Wrmsr(X2APIC_SELF_IPI, v.into())),
    );
    ops.extend(apic_state_reads());
    kvm.irqchip_case("guest_irqchip_ipi_illegal_vectors", &ops, |done, _| {
        report_apic_state(done)
    });
}

/// The hypercall results among `done` (RAX as a signed number).
fn report_hypercalls(done: &[(Op, Done)]) -> String {
    let results = done
        .iter()
        .filter(|(op, _)| matches!(op, Op::Hypercall(..)))
        .map(|(_, d)| (d.value as i64).to_string());
    format!("rax={}", runs(results))
}

/// VMMCALLs with hostile arguments, each case a new VM: every number
/// 0-16 (but CLOCK_PAIRING) and two huge ones with all four arguments
/// 0, all ones and bit 63; SEND_IPI and KICK_CPU at APIC ids that do not
/// exist; SEND_IPI refused (logical, shorthand), to a disabled and an
/// enabled APIC, as an NMI; CLOCK_PAIRING apart (whether KVM answers it
/// depends on the host's clocksource); SEND_IPI whose 32-bit minimum APIC
/// id wraps; INIT by SEND_IPI.
fn hypercalls(kvm: &Kvm) {
    use hv_core::pvrs_abi::hypercall::{
        KVM_HC_CLOCK_PAIRING, KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD, KVM_HC_SEND_IPI,
    };
    let [kick, send_ipi, yield_to, pairing] = [
        KVM_HC_KICK_CPU,
        KVM_HC_SEND_IPI,
        KVM_HC_SCHED_YIELD,
        KVM_HC_CLOCK_PAIRING,
    ]
    .map(u64::from);
    let patterns = [0, u64::MAX, 1 << 63];
    let numbers = (0..=16)
        .filter(|&nr| nr != pairing)
        .chain([0xffff_ffff, 1 << 63]);
    let mut ops: Vec<Op> = numbers
        .flat_map(|nr| patterns.map(|arg| Op::Hypercall(nr, [arg; 4])))
        .collect();
    let fixed_30 = u64::from(0x30 | ICR_ASSERT);
    ops.extend([
        // bitmap low, bitmap high, minimum APIC id, ICR
        Op::Hypercall(send_ipi, [u64::MAX, u64::MAX, 0xffff_ffff, fixed_30]),
        Op::Hypercall(send_ipi, [u64::MAX, u64::MAX, 0x8000_0000, fixed_30]),
        Op::Hypercall(send_ipi, [1, 0, 0, fixed_30 | u64::from(ICR_LOGICAL)]),
        Op::Hypercall(send_ipi, [1, 0, 0, fixed_30 | u64::from(ICR_SELF)]),
        Op::Hypercall(send_ipi, [1, 0, 0, fixed_30]),
        Op::Write32(APIC_SVR, 0x1ff),
        Op::Hypercall(send_ipi, [1, 0, 0, fixed_30]),
        Op::Hypercall(send_ipi, [u64::MAX, u64::MAX, 0, fixed_30 | 1 << 32]),
        Op::Hypercall(send_ipi, [1, 0, 0, 4 << 8 | u64::from(ICR_ASSERT)]),
        Op::Hypercall(kick, [0, 0xffff_ffff, 0, 0]),
        Op::Hypercall(kick, [0, 0, 0, 0]),
        Op::Hypercall(yield_to, [0xffff_ffff, 0, 0, 0]),
    ]);
    kvm.irqchip_case("guest_irqchip_hypercalls", &ops, |done, _| {
        report_hypercalls(done)
    });
    // gpa, clock type: 0 is KVM_CLOCK_PAIRING_WALLCLOCK.
    let pairings = [
        (SCRATCH, 0),
        (0, 0),
        (0xc000_0000, 0),
        (IRQ_RAM - 1, 0),
        (IRQ_RAM - 32, 0),
        (u64::MAX, 0),
        (1 << 63, 0),
        (SCRATCH, 1),
        (SCRATCH, u64::MAX),
    ];
    let mut ops: Vec<Op> = pairings
        .iter()
        .map(|&(gpa, kind)| Op::Hypercall(pairing, [gpa, kind, 0, 0]))
        .collect();
    ops.extend(patterns.map(|arg| Op::Hypercall(pairing, [arg; 4])));
    kvm.irqchip_case("guest_irqchip_hypercall_clock_pairing", &ops, |done, _| {
        report_hypercalls(done)
    });
    // The high bitmap's APIC ids start at minimum + 64, which KVM
    // computes in 32 bits: 0xffffffc0 + 64 wraps to APIC id 0.
    let ops = [
        Op::Write32(APIC_SVR, 0x1ff),
        Op::Hypercall(send_ipi, [0, 1, 0xffff_ffc0, fixed_30]),
    ];
    kvm.irqchip_case("guest_irqchip_hypercall_send_ipi_wraps", &ops, |done, _| {
        report_hypercalls(done)
    });
    let init = Op::Hypercall(send_ipi, [1, 0, 0, 5 << 8 | u64::from(ICR_ASSERT)]);
    kvm.irqchip_case(
        "guest_irqchip_hypercall_send_ipi_init_self",
        &[init],
        |_, _| String::new(),
    );
}

/// The PV MSRs (kvmclock, wall clock, both ABIs; steal time; PV EOI)
/// pointed outside RAM, across its end, unaligned and at all ones, each
/// write read back; then guest work (entries that would publish the
/// clock and steal time) and the wall clock's version where its area
/// crosses the end of RAM (the canary before it untouched).
fn pv_msrs_outside_ram(kvm: &Kvm) {
    use hv_core::pvrs_abi::msr::{
        MSR_KVM_PV_EOI_EN, MSR_KVM_STEAL_TIME, MSR_KVM_SYSTEM_TIME, MSR_KVM_SYSTEM_TIME_NEW,
        MSR_KVM_WALL_CLOCK, MSR_KVM_WALL_CLOCK_NEW,
    };
    let msrs = [
        MSR_KVM_SYSTEM_TIME_NEW,
        MSR_KVM_WALL_CLOCK_NEW,
        MSR_KVM_SYSTEM_TIME,
        MSR_KVM_WALL_CLOCK,
        MSR_KVM_STEAL_TIME,
        MSR_KVM_PV_EOI_EN,
    ];
    let crossing = IRQ_RAM - 8;
    let values = [
        0xc000_0000 | 1,
        1 << 51 | 1,
        crossing | 1,
        SCRATCH | 3,
        u64::MAX,
    ];
    let mut ops = Vec::new();
    for msr in msrs {
        for value in values {
            ops.extend([Op::Wrmsr(msr, value), Op::Rdmsr(msr)]);
            ops.push(Op::Spin(1000));
        }
    }
    ops.push(Op::Spin(5000));
    ops.extend(msrs.map(Op::Rdmsr));
    kvm.irqchip_case("guest_irqchip_pv_msrs_outside_ram", &ops, |done, guest| {
        let mut shown = Vec::new();
        for pair in done.windows(2) {
            let [(Op::Wrmsr(msr, value), wrote), (Op::Rdmsr(_), back)] = pair else {
                continue;
            };
            shown.push(match (wrote.gp, back.value == *value) {
                (true, _) => format!("{msr:x}:gp"),
                (false, true) => format!("{msr:x}:ok"),
                (false, false) => format!("{msr:x}:ok>{:#x}", back.value),
            });
        }
        let canary = guest.ram.read::<1>(crossing as usize)[0];
        let version = u32::from_le_bytes(guest.ram.read((crossing + 1) as usize));
        format!(
            "writes={} canary={canary:#x} wall_clock_version={version:#x}",
            shown.join(",")
        )
    });
}
