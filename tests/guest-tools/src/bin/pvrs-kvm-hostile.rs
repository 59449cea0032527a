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
//!   immediate_exit (section 5), a VM without memory.

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
    lookup, _IO, _IOC_SIZE, _IOR, KVM_CHECK_EXTENSION, KVM_CREATE_IRQCHIP, KVM_CREATE_VCPU,
    KVM_CREATE_VM, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_CPUID2, KVM_GET_DIRTY_LOG,
    KVM_GET_EMULATED_CPUID, KVM_GET_LAPIC, KVM_GET_MP_STATE, KVM_GET_MSRS,
    KVM_GET_MSR_FEATURE_INDEX_LIST, KVM_GET_MSR_INDEX_LIST, KVM_GET_REGS, KVM_GET_SREGS,
    KVM_GET_SUPPORTED_CPUID, KVM_GET_VCPU_MMAP_SIZE, KVM_INTERRUPT, KVM_IOEVENTFD, KVM_IRQFD,
    KVM_IRQ_LINE, KVM_RUN, KVM_SET_CLOCK, KVM_SET_CPUID2, KVM_SET_DEBUGREGS, KVM_SET_MP_STATE,
    KVM_SET_MSRS, KVM_SET_REGS, KVM_SET_SIGNAL_MASK, KVM_SET_SREGS, KVM_SET_TSC_KHZ,
    KVM_SET_USER_MEMORY_REGION, KVM_SET_VCPU_EVENTS, KVM_SET_XCRS, KVM_SIGNAL_MSI,
};
use hv_core::kvm_api::layout::{
    kvm_clock_data, kvm_cpuid2, kvm_cpuid_entry2, kvm_debugregs, kvm_dirty_log, kvm_enable_cap,
    kvm_interrupt, kvm_ioeventfd, kvm_irq_level, kvm_irqfd, kvm_mp_state, kvm_msi, kvm_msr_entry,
    kvm_msr_list, kvm_msrs, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
    kvm_vcpu_events, kvm_xcrs,
};
use hv_core::kvm_api::run;
use hv_core::kvm_api::wire::Wire;
use hv_core::kvm_api::Errno;
use hv_core::msr::{MSR_EFER, MSR_IA32_SYSENTER_CS};

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
