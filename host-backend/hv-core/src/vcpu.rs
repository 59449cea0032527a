//! The vendor-neutral vCPU exit handler: what `KVM_RUN` does between two
//! VMRUNs, and what it tells userspace when the kernel cannot finish an
//! exit itself.
//!
//! # The run loop (the kernel module's side)
//!
//! ```text
//! KVM_RUN:
//!   request = kvm_api::run::read_run_request(private copy of kvm_run)
//!   state.begin_run(&request)
//!   step = complete_user_exit(vcpu, state, guest, map, run, pio_page)?
//!   if step is ToUser(exit): write_user_exit(...); return 0
//!   if request.immediate_exit: return -EINTR          (nothing is lost:
//!                                                      the completion ran)
//!   loop:
//!     prepare_entry(vcpu, state); VMRUN; vcpu.complete_exit()
//!     match handle_exit(vcpu, state, guest, map, host):
//!       Resume               => continue
//!       MapPage { gpa, write } => pin the memslot page, map it in the NPT,
//!                               continue
//!       ToUser(exit)         => write_user_exit(...); return 0
//! ```
//!
//! Everything between VMRUN and the NPT update is decided here; the
//! kernel only copies bytes, pins pages and runs the guest.
//!
//! # Exits (AMD APM vol. 2 §15.9-15.13, §15.25; KVM `svm_exit_handlers`)
//!
//! | exit | what happens |
//! |---|---|
//! | CPUID | the KVM_SET_CPUID2 table (`cpuid.rs`); the KVM leaves 0x4000_00xx are answered as userspace set them; OSXSAVE, OSPKE and the APIC bit follow CR4 and APIC_BASE (`kvm_update_cpuid_runtime`) |
//! | RDMSR/WRMSR | `msr.rs`, the MSR_KVM_* of kvmclock, steal time and PV EOI `pv.rs`; an unknown MSR or a refused value is #GP(0) |
//! | VMMCALL | `pv.rs`: KICK_CPU and SEND_IPI through the in-kernel irqchip, SCHED_YIELD (a hint), CLOCK_PAIRING; `-KVM_ENOSYS` for the rest, `-KVM_EPERM` from CPL > 0; 32 bits outside 64-bit mode, as `__kvm_emulate_hypercall` |
//! | IOIO | `KVM_EXIT_IO`; the data of OUT is copied now, IN is completed at the next `KVM_RUN`; RIP moves to EXITINFO2 only then (`complete_fast_pio_*`) |
//! | INS/OUTS | decoded (`x86/decode.rs`) for the address size, segment and REP count that TCG leaves out of EXITINFO1 (host-backend notes §1.2): as many elements as stay in one 4 KiB page go to userspace in one exit, and RIP stays on the instruction while RCX is not zero |
//! | NPF on RAM | [`Step::MapPage`]; a write to a read-only slot is an MMIO write to userspace, as in KVM |
//! | NPF elsewhere | the instruction at CS.base + RIP is fetched through the guest's page tables (`paging.rs`), decoded and begun with `x86/emulate.rs`; an access the kernel cannot do is `KVM_EXIT_MMIO`, finished by [`complete_user_exit`] |
//! | HLT | RIP advanced, `KVM_EXIT_HLT`; with an in-kernel irqchip [`Step::Halt`] unless an event waits |
//! | SHUTDOWN | `KVM_EXIT_SHUTDOWN` (the kernel should reset the VMCB before the next entry, as `shutdown_interception` does) |
//! | VMEXIT_INVALID | `KVM_EXIT_FAIL_ENTRY` with the exit code |
//! | INTR, NMI, SMI, INIT, VINTR, IRET | nothing (the host takes its interrupt after STGI); VINTR may end `KVM_RUN` with `KVM_EXIT_IRQ_WINDOW_OPEN` |
//! | intercepted exceptions | reflected into the guest (#PF with CR2); #MC is the host's |
//! | VMRUN, VMLOAD, … | #UD: no nested virtualization |
//! | INVD, WBINVD, MONITOR, MWAIT, PAUSE | NOPs (KVM's default `MWAIT_NEVER_UD_FAULTS` quirk) |
//! | RDTSC(P) | host TSC + offset; RDPMC is #GP (no PMU) |
//! | anything else | `KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON` with the exit code and CPU |
//!
//! An event whose delivery the exit interrupted (EXITINTINFO, APM §15.7.2)
//! is queued again first through [`VendorVcpu::inject_event`]; if the exit
//! is an MMIO access made by that delivery, the instruction at RIP is not
//! the culprit and the exit is `KVM_INTERNAL_ERROR_DELIVERY_EV`.
//!
//! # RIP advance without NRIPS
//!
//! QEMU TCG gives no next RIP except for IOIO.  For the fixed-length
//! intercepts (CPUID, RDMSR, VMMCALL, HLT, …) the bytes at RIP are always
//! fetched and decoded: a redundant prefix (`2e 0f a2`) would make the
//! vendor's fixed length wrong, and only the bytes tell.  If the decoded
//! instruction is the intercepted one, RIP moves by its decoded length
//! ([`VendorVcpu::retire_instruction`]); if the bytes cannot be read or
//! decode to something else (the guest rewrote them since), the vendor's
//! [`VendorVcpu::skip_instruction`] advances by the fixed length.  Both
//! outcomes are counted.  The cost is one guest page walk per such exit,
//! small beside a nested exit's 35-60 µs.
//!
//! # Emulation failures (KVM `handle_emulation_failure`)
//!
//! When the instruction cannot be fetched, decoded or emulated, the exit
//! is `KVM_INTERNAL_ERROR_EMULATION` with the instruction bytes fetched so
//! far and KVM's five exit-information words; KVM also queues #UD, and at
//! CPL > 0 resumes the guest with that #UD instead of exiting.  Failures
//! that are the host's (guest RAM the kernel cannot reach, inconsistent
//! paging registers) exit without the #UD.
//!
//! # Guest and userspace input
//!
//! Exit information, registers, guest memory and the data userspace
//! leaves in `kvm_run` are all untrusted: nothing here indexes without a
//! check or overflows, every refusal is a typed outcome and a counter
//! ([`ExitCounters`], for a debugfs file).
//!
//! # With an in-kernel irqchip (KVM_CREATE_IRQCHIP)
//!
//! The module calls [`handle_exit_with_irqchip`] instead of
//! [`handle_exit`], with an [`InKernelIrqchip`] for the vCPU (the
//! VM-wide `irqchip::vm::VmIrqchip` under its lock), and before each
//! entry [`inject_pending_events`]:
//!
//! ```text
//!   loop:
//!     step = inject_pending_events(vcpu, state, irqchip)
//!     if step is Halt: block until wakeup_pending(..) (re-checked at
//!                      every kick) or a signal (EINTR); continue
//!     prepare_entry; VMRUN; complete_exit
//!     step = handle_exit_with_irqchip(.., irqchip)
//!     Halt => block as above
//! ```
//!
//! The irqchip takes the xAPIC page and the IOAPIC window (decided after
//! the instruction is decoded and emulated, through the emulator's bus),
//! IN/OUT of the PIC and PIT ports (string I/O still goes to userspace),
//! the x2APIC MSRs 0x800-0x8ff, IA32_TSC_DEADLINE and IA32_APIC_BASE
//! (the LAPIC's copy is the authoritative one; `state.msrs.apic_base`
//! mirrors it), all before `msr.rs` and userspace.  Without an
//! irqchip nothing of this runs and every exit is handled as before.
//!
//! # Not handled yet
//!
//! The paravirtual MSRs of async page faults, poll control and migration
//! control (#GP), x2APIC MSRs without an irqchip (#GP), and task
//! switches (internal error), KVM's `OUT 0x7e` RIP quirk, `cr8` in the
//! run page (the vendor trait has no TPR accessor yet), PKRU for the
//! guest page walks (taken as 0: no key denies an access).

use core::cell::RefCell;

use crate::cpuid::{CpuidEntry, CpuidError, CpuidTable, KVM_MAX_CPUID_ENTRIES};
use crate::irqchip::vm::is_irqchip_msr;
pub use crate::kvm_api::decode::MpState;
use crate::kvm_api::constants::{
    KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, PAGE_SIZE,
};
use crate::kvm_api::run::{self, ExitState, IoDirection as RunIoDirection, RunRequest};
use crate::kvm_api::decode::{is_valid_xcr0, XFEATURE_MASK_FP};
use crate::kvm_api::Error as RunPageError;
use crate::msr::{
    self, GuestMsrs, MsrError, MsrFeatures, MsrOrigin, MSR_IA32_APICBASE,
    MSR_IA32_APICBASE_ENABLE,
};
use crate::paging::{
    translate, Access, AccessKind, GuestMemory, MemoryError, PageTableWrite, PagingFeatures,
    PagingRegisters, WalkError, CR0_PE, CR0_PG, CR4_LA57, CR4_PAE, CR4_PKE, EFER_LMA,
};
use crate::vendor::{
    exception_has_error_code, Event, Exit, Gpr, HardwareExitInfo, IoDirection, IoExit, NpfExit,
    Reinjection, Segment as VendorSegment, SegmentRegister, VendorVcpu,
};
use crate::x86::decode::{
    decode, truncate, CodeSize, DecodeError, Instruction, Mnemonic, Register, Segment,
    MAX_INSTRUCTION_LENGTH,
};
use crate::x86::emulate::{
    self, Context, EmulateError, Exception, MmioRequest, MmioResult, Outcome, Pending, Registers,
    RFLAGS_DF,
};

/// The most bytes one `KVM_EXIT_IO` carries: the PIO data page.
pub const PIO_DATA_CAPACITY: usize = PAGE_SIZE;

const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
/// Descriptor bits 53 (L) and 54 (D/B) in the VMCB's 12-bit attributes.
const SEGMENT_LONG: u16 = 1 << 9;
const SEGMENT_DEFAULT_BIG: u16 = 1 << 10;
const LINEAR_PAGE: u64 = 4096;

const VECTOR_UD: u8 = 6;
const VECTOR_SS: u8 = 12;
const VECTOR_GP: u8 = 13;
const VECTOR_PF: u8 = 14;
const VECTOR_MC: u8 = 18;

const RAX: u8 = Gpr::Rax as u8;
const RCX: u8 = Gpr::Rcx as u8;
const RSI: u8 = Gpr::Rsi as u8;
const RDI: u8 = Gpr::Rdi as u8;

// ------------------------------------------------------------ interfaces

/// What backs a guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// No memslot: MMIO, handled by userspace.
    Unbacked,
    /// A memslot page (read-only with `KVM_MEM_READONLY`).
    Ram {
        /// The guest may write the page (no `KVM_MEM_READONLY`).
        writable: bool,
    },
}

/// The memslots as the exit handler needs them.
pub trait MemoryMap {
    /// What backs the page of `gpa`.
    fn backing(&self, gpa: u64) -> Backing;
}

/// The in-kernel irqchip as one vCPU sees it (KVM_CREATE_IRQCHIP).  The
/// kernel module implements it for a vCPU by taking the VM-wide irqchip
/// lock for each call, calling the same-named method of
/// [`crate::irqchip::vm::VmIrqchip`] with this vCPU's index and the
/// current time, and applying the returned `Effects` (kicks, timers)
/// after the unlock; [`crate::irqchip::vm::VcpuIrqchip`] is that
/// adapter without the lock.  The boolean accessors answer whether the
/// irqchip claimed the access: `false` sends it to userspace as before.
pub trait InKernelIrqchip {
    /// A guest MMIO read of `data.len()` bytes at `gpa`.
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) -> bool;
    /// A guest MMIO write.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> bool;
    /// A guest IN.
    fn pio_read(&mut self, port: u16, data: &mut [u8]) -> bool;
    /// A guest OUT.
    fn pio_write(&mut self, port: u16, data: &[u8]) -> bool;
    /// RDMSR of 0x800-0x8ff or IA32_TSC_DEADLINE; `Err` is #GP.
    fn msr_read(&mut self, msr: u32) -> Result<u64, MsrError>;
    /// WRMSR of 0x800-0x8ff or IA32_TSC_DEADLINE, with the guest's TSC
    /// now; `Err` is #GP.
    fn msr_write(&mut self, msr: u32, value: u64, guest_tsc: u64) -> Result<(), MsrError>;
    /// IA32_APIC_BASE: the LAPIC holds the authoritative copy.
    fn apic_base(&mut self) -> u64;
    /// A write of IA32_APIC_BASE; `Err` is #GP (guest) or EINVAL (host).
    fn set_apic_base(
        &mut self,
        value: u64,
        features: &MsrFeatures,
        origin: MsrOrigin,
    ) -> Result<(), MsrError>;
    /// Whether a maskable interrupt waits (PIC or LAPIC).
    fn has_interrupt(&mut self) -> bool;
    /// The interrupt acknowledge: the vector to inject, now in service.
    fn acknowledge_interrupt(&mut self) -> Option<u8>;
    /// Takes a pending NMI.
    fn take_nmi(&mut self) -> bool;
    /// Takes a pending INIT (the LAPIC resets itself for it).
    fn take_init(&mut self) -> bool;
    /// Takes a pending SIPI's vector.
    fn take_sipi(&mut self) -> Option<u8>;
    /// Whether an event would end a wait (see
    /// [`crate::irqchip::vm::VmIrqchip::has_wakeup_event`]).
    fn has_wakeup_event(&mut self, interrupts_enabled: bool, waiting_for_sipi: bool) -> bool;
    /// Whether this vCPU is the BSP (runs on after INIT).
    fn is_bsp(&self) -> bool;
    /// The LAPIC's TPR as CR8 (bits 7:4 of TPR).
    fn cr8(&mut self) -> u64;
    /// A guest write of CR8 into the LAPIC's TPR.
    fn set_cr8(&mut self, cr8: u64);
    /// KVM_HC_KICK_CPU: marks the vCPU with APIC id `apic_id` unhalted
    /// (its wait ends, or its next HLT does not wait) and kicks it;
    /// whether such a vCPU exists.
    fn pv_kick(&mut self, apic_id: u32) -> bool;
    /// KVM_HC_SEND_IPI: the number of vCPUs that accepted the IPI, or
    /// `-KVM_EINVAL` for a logical destination or a shorthand.
    fn pv_send_ipi(&mut self, ipi: &crate::pv::PvSendIpi) -> i64;
    /// This vCPU left its halt: a KICK_CPU that came before is used up.
    fn clear_pv_unhalt(&mut self);
}

/// Guest RAM: the page-table reads of [`GuestMemory`], the accessed and
/// dirty updates of [`PageTableWrite`], and plain writes, for the RAM
/// side of a string instruction (MOVS between RAM and MMIO, INS).
/// `write_bytes` never crosses a page.
pub trait GuestRam: PageTableWrite {
    /// Writes `bytes` at `gpa`, all within one page.
    fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError>;
}

/// What the kernel knows about the host side of the exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// The host TSC, read after the exit (for IA32_TSC and RDTSC).
    pub tsc: u64,
    /// The CPU the guest ran on (`fail_entry.cpu`, internal error data).
    pub cpu: u32,
    /// The XCR0 states this host lets a guest enable (those its kernel
    /// enabled, of the ones pvrs-kvm switches); XSETBV is checked
    /// against them and the guest's CPUID leaf 0xD.
    pub xcr0_mask: u64,
    /// kvmclock nanoseconds (host monotonic minus the VM's creation),
    /// read with `tsc`, for `pv::ClockReference::at_exit`.
    pub kvmclock_ns: u64,
    /// The TSC frequency in kHz.
    pub tsc_khz: u32,
    /// The host TSC is constant and synchronised (CLOCK_PAIRING works).
    pub tsc_stable: bool,
    /// Host CLOCK_REALTIME nanoseconds, read with `tsc` (CLOCK_PAIRING).
    pub wall_clock_ns: u64,
}

/// What the kernel does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Enter the guest again.
    Resume,
    /// Pin the memslot page of `gpa`, map it in the nested page tables
    /// (writable if `write`), and enter the guest again.
    MapPage {
        /// The guest physical address that faulted.
        gpa: u64,
        /// The access was a write: map the page writable.
        write: bool,
    },
    /// Describe the exit in `kvm_run` ([`write_user_exit`]) and return
    /// from `KVM_RUN`.
    ToUser(UserExit),
    /// Only with an in-kernel irqchip: the vCPU waits (after HLT, or an
    /// AP waiting for INIT or SIPI; [`VcpuState::mp_state`] says which).
    /// Block until [`wakeup_pending`] is true (re-check it after every
    /// kick) or a signal arrives (`KVM_RUN` returns EINTR, the vCPU stays
    /// waiting), then call [`inject_pending_events`] again before entry.
    Halt,
}

/// Up to 16 data words of an internal-error exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitWords {
    words: [u64; run::EXIT_DATA_WORDS],
    len: u8,
}

impl ExitWords {
    /// The first 16 words of `words` (the rest are dropped).
    pub fn from_slice(words: &[u64]) -> Self {
        let mut result = Self::default();
        for (slot, word) in result.words.iter_mut().zip(words) {
            *slot = *word;
            result.len = result.len.wrapping_add(1);
        }
        result
    }

    /// The words held.
    pub fn as_slice(&self) -> &[u64] {
        self.words.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Up to 15 instruction bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstructionBytes {
    bytes: [u8; MAX_INSTRUCTION_LENGTH],
    len: u8,
}

impl InstructionBytes {
    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// An exit to userspace, in the form `kvm_api::run::write_exit` takes it
/// ([`UserExit::to_run_exit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserExit {
    /// `KVM_EXIT_IO`; for `Out`, the `size * count` bytes are in
    /// [`VcpuState::pio_data`].
    Io {
        /// In or out.
        direction: RunIoDirection,
        /// Bytes per access: 1, 2 or 4.
        size: u8,
        /// The port.
        port: u16,
        /// The number of accesses (more than 1 for a REP INS/OUTS).
        count: u32,
    },
    /// `KVM_EXIT_MMIO` of `len` bytes; `write` holds a write's data.
    Mmio {
        /// The guest physical address accessed.
        gpa: u64,
        /// The access size in bytes (1 to 8).
        len: u8,
        /// The bytes of a write (the first `len` count); `None` for a read.
        write: Option<[u8; 8]>,
    },
    /// `KVM_EXIT_HLT`: the guest halted.
    Hlt,
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted.
    Shutdown,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`: the interrupt userspace asked a window for can be injected.
    IrqWindowOpen,
    /// `KVM_EXIT_FAIL_ENTRY`: VMRUN refused the VMCB.
    FailEntry {
        /// The exit code VMRUN returned (`SVM_EXIT_ERR`).
        hardware_entry_failure_reason: u64,
        /// The CPU of the attempt.
        cpu: u32,
    },
    /// `KVM_EXIT_INTERNAL_ERROR` with a sub-code other than EMULATION.
    InternalError {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// The words of `internal.data`.
        data: ExitWords,
    },
    /// `KVM_INTERNAL_ERROR_EMULATION` with the instruction bytes fetched
    /// (`None` if none could be) and KVM's exit-information words.
    EmulationFailure {
        /// The bytes at RIP, if any could be fetched.
        instruction: Option<InstructionBytes>,
        /// The exit-information words after the flags and instruction.
        data: ExitWords,
    },
}

impl UserExit {
    /// The exit as the run-page writer takes it; the PIO data comes from
    /// `state`.
    pub fn to_run_exit<'a>(&'a self, state: &'a VcpuState) -> run::Exit<'a> {
        match self {
            UserExit::Io {
                direction,
                size,
                port,
                count,
            } => {
                let length = usize::try_from(*count)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(usize::from(*size));
                run::Exit::Io {
                    direction: *direction,
                    size: *size,
                    port: *port,
                    count: *count,
                    data: state.pio_data.get(..length).unwrap_or(&[]),
                }
            }
            UserExit::Mmio { gpa, len, write } => run::Exit::Mmio {
                phys_addr: *gpa,
                len: u32::from(*len),
                write: write
                    .as_ref()
                    .map(|bytes| bytes.get(..usize::from(*len)).unwrap_or(bytes)),
            },
            UserExit::Hlt => run::Exit::Hlt,
            UserExit::Shutdown => run::Exit::Shutdown,
            UserExit::IrqWindowOpen => run::Exit::IrqWindowOpen,
            UserExit::FailEntry {
                hardware_entry_failure_reason,
                cpu,
            } => run::Exit::FailEntry {
                hardware_entry_failure_reason: *hardware_entry_failure_reason,
                cpu: *cpu,
            },
            UserExit::InternalError { suberror, data } => run::Exit::InternalError {
                suberror: *suberror,
                data: data.as_slice(),
            },
            UserExit::EmulationFailure { instruction, data } => run::Exit::EmulationFailure {
                insn: instruction
                    .as_ref()
                    .map(InstructionBytes::as_slice)
                    .filter(|bytes| !bytes.is_empty()),
                data: data.as_slice(),
            },
        }
    }
}

// ------------------------------------------------------------ counters

/// Declares a counted category: an enum, its names and a count.
macro_rules! counted {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$variant_meta])* $variant,)* }

        impl $name {
            /// Every variant, in declaration (and debugfs) order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The number of variants: the length of a counter array.
            pub const COUNT: usize = Self::ALL.len();
            /// The name in the debugfs file.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }
    };
}

counted! {
    /// Exits by vendor-neutral reason.
    ExitReason {
        /// CPUID.
        Cpuid => "cpuid",
        /// RDMSR.
        Rdmsr => "rdmsr",
        /// WRMSR.
        Wrmsr => "wrmsr",
        /// Port I/O (IN, OUT, INS, OUTS).
        Io => "io",
        /// Nested page faults.
        Npf => "npf",
        /// HLT.
        Hlt => "hlt",
        /// VMMCALL.
        Hypercall => "hypercall",
        /// A host interrupt arrived while the guest ran.
        ExternalInterrupt => "intr",
        /// A host NMI arrived.
        Nmi => "nmi",
        /// A host SMI arrived.
        Smi => "smi",
        /// An INIT signal.
        Init => "init",
        /// The guest became able to take an interrupt (VINTR).
        InterruptWindow => "interrupt_window",
        /// IRET (the NMI window).
        Iret => "iret",
        /// The guest shut down (triple fault).
        Shutdown => "shutdown",
        /// An intercepted exception.
        Exception => "exception",
        /// A CR access.
        ControlRegister => "cr",
        /// A DR access.
        DebugRegister => "dr",
        /// INVLPG.
        Invlpg => "invlpg",
        /// RDTSC.
        Rdtsc => "rdtsc",
        /// RDTSCP.
        Rdtscp => "rdtscp",
        /// RDPMC.
        Rdpmc => "rdpmc",
        /// PAUSE (pause filter).
        Pause => "pause",
        /// INVD.
        Invd => "invd",
        /// WBINVD.
        Wbinvd => "wbinvd",
        /// MONITOR.
        Monitor => "monitor",
        /// MWAIT.
        Mwait => "mwait",
        /// XSETBV.
        Xsetbv => "xsetbv",
        /// A hardware task switch.
        TaskSwitch => "task_switch",
        /// VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT or INVLPGA.
        VirtualizationInstruction => "svm_instruction",
        /// VMRUN failed: the VMCB state was invalid.
        Invalid => "invalid",
        /// A known exit code that was not intercepted.
        Unexpected => "unexpected",
        /// An exit code the decoder does not know.
        Unknown => "unknown",
    }
}

impl ExitReason {
    /// The counter an exit is counted under.
    pub fn of(exit: &Exit) -> Self {
        match exit {
            Exit::Cpuid => Self::Cpuid,
            Exit::Msr { write: false } => Self::Rdmsr,
            Exit::Msr { write: true } => Self::Wrmsr,
            Exit::Io(_) => Self::Io,
            Exit::Npf(_) => Self::Npf,
            Exit::Hlt => Self::Hlt,
            Exit::Hypercall => Self::Hypercall,
            Exit::ExternalInterrupt => Self::ExternalInterrupt,
            Exit::Nmi => Self::Nmi,
            Exit::Smi => Self::Smi,
            Exit::Init => Self::Init,
            Exit::InterruptWindow => Self::InterruptWindow,
            Exit::Iret => Self::Iret,
            Exit::Shutdown => Self::Shutdown,
            Exit::Exception { .. } => Self::Exception,
            Exit::ControlRegister { .. } => Self::ControlRegister,
            Exit::DebugRegister { .. } => Self::DebugRegister,
            Exit::Invlpg { .. } => Self::Invlpg,
            Exit::Rdtsc => Self::Rdtsc,
            Exit::Rdtscp => Self::Rdtscp,
            Exit::Rdpmc => Self::Rdpmc,
            Exit::Pause => Self::Pause,
            Exit::Invd => Self::Invd,
            Exit::Wbinvd => Self::Wbinvd,
            Exit::Monitor => Self::Monitor,
            Exit::Mwait => Self::Mwait,
            Exit::Xsetbv => Self::Xsetbv,
            Exit::TaskSwitch => Self::TaskSwitch,
            Exit::VirtualizationInstruction => Self::VirtualizationInstruction,
            Exit::Invalid => Self::Invalid,
            Exit::Unexpected(_) => Self::Unexpected,
            Exit::Unknown(_) => Self::Unknown,
        }
    }
}

counted! {
    /// Port I/O exits by the device a PC has at the port (pvrs-vmm's
    /// `layout.rs` for the ACPI PM block).
    PortClass {
        /// The 8259 PICs and their ELCR.
        Pic => "pic",
        /// The 8254 PIT and port 0x61.
        Pit => "pit",
        /// The keyboard controller.
        I8042 => "i8042",
        /// The CMOS RTC.
        Rtc => "rtc",
        /// The POST code port 0x80 (also the I/O delay).
        PostCode => "post_code",
        /// The four COM ports.
        Serial => "serial",
        /// PCI configuration mechanism 1.
        PciConfig => "pci_config",
        /// The ACPI PM block.
        AcpiPm => "acpi_pm",
        /// Any other port.
        Other => "other",
    }
}

impl PortClass {
    /// The device a PC has at `port`.
    pub fn of(port: u16) -> Self {
        match port {
            0x20..=0x21 | 0xa0..=0xa1 | 0x4d0..=0x4d1 => Self::Pic,
            0x40..=0x43 | 0x61 => Self::Pit,
            0x60 | 0x64 => Self::I8042,
            0x70..=0x71 => Self::Rtc,
            0x80 => Self::PostCode,
            0x3f8..=0x3ff | 0x2f8..=0x2ff | 0x3e8..=0x3ef | 0x2e8..=0x2ef => Self::Serial,
            0xcf8..=0xcff => Self::PciConfig,
            0x600..=0x60f => Self::AcpiPm,
            _ => Self::Other,
        }
    }
}

counted! {
    /// Instructions that could not be emulated.
    EmulationFailureKind {
        /// The instruction bytes are not in guest RAM.
        FetchUnmapped => "fetch_unmapped",
        /// The decoder does not know the bytes.
        Decode => "decode",
        /// An operand or a paging structure is not in guest RAM.
        OperandUnmapped => "operand_unmapped",
        /// The emulator does not handle the instruction (or a page-crossing
        /// access).
        Unsupported => "unsupported",
        /// The guest executes from MMIO.
        FetchFromMmio => "fetch_from_mmio",
        /// The guest's page tables are in MMIO.
        PageTableInMmio => "page_table_in_mmio",
        /// INS/OUTS that this handler refuses (to or from MMIO, across a
        /// page, disagreeing with the exit).
        StringIo => "string_io",
        /// The hardware's next RIP is not 1-15 bytes on.
        NextRip => "next_rip",
        /// Guest RAM the host could not reach (pin or copy failed).
        HostMemory => "host_memory",
        /// Inconsistent paging registers (a hypervisor bug).
        InvalidState => "invalid_state",
    }
}

counted! {
    /// Guest (or userspace) inputs that were refused.
    Rejection {
        /// An access to an MSR that is not emulated.
        UnknownMsr => "unknown_msr",
        /// A WRMSR value the MSR refuses.
        InvalidMsrValue => "invalid_msr_value",
        /// A hypercall from CPL > 0.
        PrivilegedHypercall => "hypercall_from_user_mode",
        /// EXITINTINFO held something that cannot be injected again.
        UninjectableEvent => "uninjectable_event",
        /// An event was to be injected while another one was queued.
        InjectionConflict => "injection_conflict",
        /// The bytes at RIP are not the instruction the exit reported.
        StaleInstruction => "stale_instruction",
        /// Userspace moved RIP before completing an exit: the completion
        /// was dropped, as KVM drops a PIO completion then.
        CompletionDropped => "completion_dropped",
        /// A new exit arrived while a completion was pending (the kernel
        /// skipped `complete_user_exit`).
        CompletionOverwritten => "completion_overwritten",
        /// An exception intercept that cannot be reflected.
        UnreflectableException => "unreflectable_exception",
        /// An XSETBV from CPL > 0, of an XCR other than XCR0, or of an
        /// XCR0 value the guest may not have.
        InvalidXsetbv => "invalid_xsetbv",
    }
}

/// Per-vCPU statistics, for a debugfs file.  Every counter wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCounters {
    /// Exits by [`ExitReason`].
    pub exits: [u64; ExitReason::COUNT],
    /// Port I/O exits by [`PortClass`].
    pub ports: [u64; PortClass::COUNT],
    /// Emulation failures by [`EmulationFailureKind`].
    pub emulation_failures: [u64; EmulationFailureKind::COUNT],
    /// Refused inputs by [`Rejection`].
    pub rejected: [u64; Rejection::COUNT],
    /// MMIO reads that went to userspace.
    pub mmio_reads: u64,
    /// MMIO writes that went to userspace.
    pub mmio_writes: u64,
    /// Emulated instructions finished in the kernel (RAM operands).
    pub mmio_in_kernel: u64,
    /// Port I/O exits that were INS/OUTS.
    pub string_io: u64,
    /// Nested page faults answered with [`Step::MapPage`].
    pub map_page: u64,
    /// Hypercalls answered (all with an error).
    pub hypercalls: u64,
    /// Exceptions injected into the guest.
    pub exceptions_injected: u64,
    /// Events that EXITINTINFO showed interrupted and that were injected again.
    pub events_reinjected: u64,
    /// Fixed-length intercepts whose length the bytes at RIP confirmed.
    pub lengths_verified: u64,
    /// Fixed-length intercepts whose length the bytes at RIP corrected (a prefix).
    pub lengths_corrected: u64,
    /// Fixed-length intercepts whose length could not be checked.
    pub lengths_unverified: u64,
    /// Interrupt-window exits handed to userspace.
    pub irq_window_exits: u64,
    /// In-kernel irqchip: maskable interrupts injected.
    pub interrupts_injected: u64,
    /// In-kernel irqchip: NMIs injected.
    pub nmis_injected: u64,
    /// In-kernel irqchip: interrupt windows (VINTR) opened.
    pub interrupt_windows: u64,
    /// In-kernel irqchip: NMI windows (IRET intercept or VINTR) opened
    /// for a blocked NMI.
    pub nmi_windows: u64,
    /// In-kernel irqchip: HLTs that blocked the vCPU ([`Step::Halt`]).
    pub halts: u64,
    /// In-kernel irqchip: INITs taken (register reset).
    pub inits: u64,
    /// In-kernel irqchip: SIPIs that started the vCPU.
    pub sipis: u64,
    /// In-kernel irqchip: SIPIs dropped (the vCPU did not wait for one).
    pub sipis_dropped: u64,
    /// MMIO accesses the in-kernel irqchip answered.
    pub irqchip_mmio: u64,
    /// Port accesses the in-kernel irqchip answered.
    pub irqchip_pio: u64,
    /// MSR accesses the in-kernel irqchip answered (APIC_BASE included).
    pub irqchip_msr: u64,
}

fn bump(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

fn bump_at(counters: &mut [u64], index: usize) {
    if let Some(counter) = counters.get_mut(index) {
        bump(counter);
    }
}

impl ExitCounters {
    /// Every counter at 0.
    pub const ZERO: Self = Self {
        exits: [0; ExitReason::COUNT],
        ports: [0; PortClass::COUNT],
        emulation_failures: [0; EmulationFailureKind::COUNT],
        rejected: [0; Rejection::COUNT],
        mmio_reads: 0,
        mmio_writes: 0,
        mmio_in_kernel: 0,
        string_io: 0,
        map_page: 0,
        hypercalls: 0,
        exceptions_injected: 0,
        events_reinjected: 0,
        lengths_verified: 0,
        lengths_corrected: 0,
        lengths_unverified: 0,
        irq_window_exits: 0,
        interrupts_injected: 0,
        nmis_injected: 0,
        interrupt_windows: 0,
        nmi_windows: 0,
        halts: 0,
        inits: 0,
        sipis: 0,
        sipis_dropped: 0,
        irqchip_mmio: 0,
        irqchip_pio: 0,
        irqchip_msr: 0,
    };

    /// The exits counted under `reason`.
    pub fn exit(&self, reason: ExitReason) -> u64 {
        self.exits.get(reason as usize).copied().unwrap_or(0)
    }

    /// The port I/O exits to ports of `class`.
    pub fn port(&self, class: PortClass) -> u64 {
        self.ports.get(class as usize).copied().unwrap_or(0)
    }

    /// The emulation failures of `kind`.
    pub fn emulation_failure(&self, kind: EmulationFailureKind) -> u64 {
        self.emulation_failures
            .get(kind as usize)
            .copied()
            .unwrap_or(0)
    }

    /// How often `rejection` happened.
    pub fn rejection(&self, rejection: Rejection) -> u64 {
        self.rejected.get(rejection as usize).copied().unwrap_or(0)
    }

    /// Every counter as (group, name, value), for a debugfs file.
    pub fn for_each(&self, mut visit: impl FnMut(&'static str, &'static str, u64)) {
        for reason in ExitReason::ALL {
            visit("exit", reason.name(), self.exit(*reason));
        }
        for class in PortClass::ALL {
            visit("port", class.name(), self.port(*class));
        }
        for kind in EmulationFailureKind::ALL {
            visit(
                "emulation_failure",
                kind.name(),
                self.emulation_failure(*kind),
            );
        }
        for rejection in Rejection::ALL {
            visit("rejected", rejection.name(), self.rejection(*rejection));
        }
        for (name, value) in [
            ("mmio_reads", self.mmio_reads),
            ("mmio_writes", self.mmio_writes),
            ("mmio_in_kernel", self.mmio_in_kernel),
            ("string_io", self.string_io),
            ("map_page", self.map_page),
            ("hypercalls", self.hypercalls),
            ("exceptions_injected", self.exceptions_injected),
            ("events_reinjected", self.events_reinjected),
            ("lengths_verified", self.lengths_verified),
            ("lengths_corrected", self.lengths_corrected),
            ("lengths_unverified", self.lengths_unverified),
            ("irq_window_exits", self.irq_window_exits),
            ("interrupts_injected", self.interrupts_injected),
            ("nmis_injected", self.nmis_injected),
            ("interrupt_windows", self.interrupt_windows),
            ("nmi_windows", self.nmi_windows),
            ("halts", self.halts),
            ("inits", self.inits),
            ("sipis", self.sipis),
            ("sipis_dropped", self.sipis_dropped),
            ("irqchip_mmio", self.irqchip_mmio),
            ("irqchip_pio", self.irqchip_pio),
            ("irqchip_msr", self.irqchip_msr),
        ] {
            visit("other", name, value);
        }
    }
}

impl Default for ExitCounters {
    fn default() -> Self {
        Self::ZERO
    }
}

// ------------------------------------------------------------ state

/// What the guest's CPUID says about MSRs and paging, recomputed at
/// KVM_SET_CPUID2 (as `kvm_vcpu_after_set_cpuid` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuModel {
    msr: MsrFeatures,
    paging: PagingFeatures,
    /// CR4 bits the guest's CPUID leaves reserved (KVM's
    /// `cr4_guest_rsvd_bits`).
    cr4_reserved: u64,
}

/// CR4 bits KVM lets any guest set (the complement of its
/// `CR4_RESERVED_BITS`): VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR
/// OSXMMEXCPT UMIP LA57 VMXE FSGSBASE PCIDE OSXSAVE SMEP SMAP PKE LAM_SUP.
const CR4_KNOWN_BITS: u64 = 0x1077_3fff | (1 << 28);

/// Where the guest's CPUID lists a feature: leaf (subleaf 0), register
/// and bit.
#[derive(Clone, Copy)]
struct CpuidBit(u32, CpuidRegister, u32);

/// A CR4 bit whose feature the guest's CPUID must list
/// (`__cr4_reserved_bits`); `None`: reserved on every SVM guest.
#[derive(Clone, Copy)]
struct Cr4Feature(u64, Option<CpuidBit>);

const CR4_FEATURES: [Cr4Feature; 10] = [
    Cr4Feature(1 << 18, Some(CpuidBit(1, CpuidRegister::Ecx, 26))), // OSXSAVE: XSAVE
    Cr4Feature(1 << 20, Some(CpuidBit(7, CpuidRegister::Ebx, 7))),  // SMEP
    Cr4Feature(1 << 21, Some(CpuidBit(7, CpuidRegister::Ebx, 20))), // SMAP
    Cr4Feature(1 << 16, Some(CpuidBit(7, CpuidRegister::Ebx, 0))),  // FSGSBASE
    Cr4Feature(1 << 22, Some(CpuidBit(7, CpuidRegister::Ecx, 3))),  // PKE: PKU
    Cr4Feature(1 << 12, Some(CpuidBit(7, CpuidRegister::Ecx, 16))), // LA57
    Cr4Feature(1 << 11, Some(CpuidBit(7, CpuidRegister::Ecx, 2))),  // UMIP
    Cr4Feature(1 << 17, Some(CpuidBit(1, CpuidRegister::Ecx, 17))), // PCIDE: PCID
    // VMXE (`svm_is_valid_cr4`) and LAM_SUP (an Intel feature).
    Cr4Feature(1 << 13, None),
    Cr4Feature(1 << 28, None),
];

/// CR4's reserved bits whatever the CPUID: those KVM does not know and
/// those of [`CR4_FEATURES`] that no SVM guest may set.
const fn cr4_reserved_on_svm() -> u64 {
    let mut reserved = !CR4_KNOWN_BITS;
    let mut i = 0;
    while i < CR4_FEATURES.len() {
        if CR4_FEATURES[i].1.is_none() {
            reserved |= CR4_FEATURES[i].0;
        }
        i += 1;
    }
    reserved
}

/// CR4's reserved bits for a CPU whose CPUID (leaf, subleaf 0) `find`
/// answers: KVM's `__cr4_reserved_bits` on SVM. For the guest's CPUID this
/// is `cr4_guest_rsvd_bits`; for the supported CPUID, the host's part
/// (`cr4_reserved_bits`), which KVM_SET_SREGS applies before any
/// KVM_SET_CPUID2 too.
pub fn cr4_reserved_for(find: &dyn Fn(u32) -> Option<CpuidEntry>) -> u64 {
    let mut reserved = cr4_reserved_on_svm();
    for Cr4Feature(cr4_bit, feature) in CR4_FEATURES {
        let listed = feature.is_some_and(|CpuidBit(leaf, register, position)| {
            find(leaf).is_some_and(|entry| {
                let value = match register {
                    CpuidRegister::Ebx => entry.ebx,
                    CpuidRegister::Ecx => entry.ecx,
                };
                value & (1 << position) != 0
            })
        });
        if !listed {
            reserved |= cr4_bit;
        }
    }
    reserved
}

/// A CPUID output register, to name where a feature bit is.
#[derive(Clone, Copy)]
enum CpuidRegister {
    Ebx,
    Ecx,
}

/// `cpuid_query_maxphyaddr`: 36 bits when CPUID 0x8000_0008 is missing.
const DEFAULT_PHYSICAL_ADDRESS_BITS: u8 = 36;

impl CpuModel {
    const RESET: Self = Self {
        msr: MsrFeatures {
            long_mode: false,
            nx: false,
            ffxsr: false,
            tsc_aux: false,
            x2apic: false,
            physical_address_bits: DEFAULT_PHYSICAL_ADDRESS_BITS,
            virtual_address_bits: 48,
        },
        paging: PagingFeatures {
            max_phys_addr_bits: DEFAULT_PHYSICAL_ADDRESS_BITS,
            pse36: false,
            gb_pages: false,
        },
        // Before KVM_SET_CPUID2 no feature is excluded by the guest's CPUID
        // (KVM's `cr4_guest_rsvd_bits` starts at 0): only the bits no SVM
        // guest may set. A bit this host lacks fails at VMRUN then
        // (FAIL_ENTRY) where KVM would refuse it from its host mask.
        cr4_reserved: cr4_reserved_on_svm(),
    };

    fn from_cpuid(table: &GuestCpuid) -> Self {
        let bit = |function: u32, index: u32, register: fn(&CpuidEntry) -> u32, bit: u32| {
            table
                .find(function, Some(index))
                .is_some_and(|entry| register(entry) & (1 << bit) != 0)
        };
        let edx = |entry: &CpuidEntry| entry.edx;
        let ecx = |entry: &CpuidEntry| entry.ecx;
        let physical_address_bits = table
            .find(0x8000_0008, Some(0))
            .map(|entry| entry.eax as u8)
            .filter(|&bits| bits != 0)
            .unwrap_or(DEFAULT_PHYSICAL_ADDRESS_BITS);
        Self {
            msr: MsrFeatures {
                long_mode: bit(0x8000_0001, 0, edx, 29),
                nx: bit(0x8000_0001, 0, edx, 20),
                ffxsr: bit(0x8000_0001, 0, edx, 25),
                tsc_aux: bit(0x8000_0001, 0, edx, 27) || bit(7, 0, ecx, 22),
                x2apic: bit(1, 0, ecx, 21),
                physical_address_bits,
                virtual_address_bits: 48,
            },
            paging: PagingFeatures {
                max_phys_addr_bits: physical_address_bits,
                pse36: bit(1, 0, edx, 17),
                gb_pages: bit(0x8000_0001, 0, edx, 26),
            },
            cr4_reserved: cr4_reserved_for(&|leaf| table.find(leaf, Some(0)).copied()),
        }
    }
}

/// The guest's CPUID table.
pub type GuestCpuid = CpuidTable<KVM_MAX_CPUID_ENTRIES>;

/// One string I/O exit in flight (INS/OUTS): where the elements are and
/// how the registers move once userspace is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StringIo {
    direction: IoDirection,
    size: u8,
    /// Elements in this exit.
    count: u32,
    /// The GPA of the first element; the others follow (or, with
    /// RFLAGS.DF, precede) it in the same page.
    first_gpa: u64,
    backwards: bool,
    /// Address size in bytes, for RSI/RDI/RCX.
    address_size: u8,
    rep: bool,
    next_rip: u64,
}

/// What to do with the data userspace writes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompletionKind {
    /// OUT: only RIP moves (`complete_fast_pio_out`).
    PortOut {
        next_rip: u64,
    },
    /// IN: the data goes to AL/AX/EAX (`complete_fast_pio_in`).
    PortIn {
        size: u8,
        next_rip: u64,
    },
    StringIo(StringIo),
    /// The second phase of an emulated instruction.
    Mmio {
        pending: Pending,
        request: MmioRequest,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Completion {
    /// RIP at the exit: if userspace moved it, the completion is dropped.
    rip: u64,
    kind: CompletionKind,
}

/// What generic exit handling keeps per vCPU besides the vendor state.
/// About 12 KiB: the kernel allocates it and calls [`VcpuState::reset`]
/// in place.
#[derive(Clone, Debug)]
pub struct VcpuState {
    cpuid: GuestCpuid,
    model: CpuModel,
    /// The MSRs that are neither in the VMCB nor elsewhere; the kernel's
    /// KVM_GET/SET_MSRS use them with [`msr::read_msr`] and
    /// [`msr::write_msr`] (`MsrOrigin::Host`).
    pub msrs: GuestMsrs,
    completion: Option<Completion>,
    interrupt_window_requested: bool,
    pio_data: [u8; PIO_DATA_CAPACITY],
    counters: ExitCounters,
    /// KVM_GET/SET_MP_STATE; only [`Step::Halt`] paths change it.
    mp_state: MpState,
    /// An NMI the irqchip delivered that is not injected yet.
    nmi_pending: bool,
    /// An injected NMI's handler runs (KVM's `nmi_masked` without vNMI):
    /// the IRET intercept is on.
    nmi_masked: bool,
    /// The RIP of the intercepted IRET that will unmask NMIs once it
    /// retires (KVM's `nmi_iret_rip` / `awaiting_iret_completion`).
    iret_rip: Option<u64>,
    /// The guest's XCR0, which the kernel loads around VMRUN once the
    /// guest has set CR4.OSXSAVE (XSETBV exits, KVM_SET_XCRS).
    xcr0: u64,
    /// kvmclock, steal time and PV EOI; the kernel calls
    /// [`crate::pv::before_entry`] and KVM_GET/SET_MSRS of the MSR_KVM_*
    /// with it.
    pub pv: crate::pv::PvState,
}

impl Default for VcpuState {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuState {
    /// A vCPU at reset: no CPUID entries, reset MSRs, no pending completion.
    pub const fn new() -> Self {
        Self {
            cpuid: CpuidTable::new(),
            model: CpuModel::RESET,
            msrs: GuestMsrs::RESET,
            completion: None,
            interrupt_window_requested: false,
            pio_data: [0; PIO_DATA_CAPACITY],
            counters: ExitCounters::ZERO,
            mp_state: MpState::Runnable,
            nmi_pending: false,
            nmi_masked: false,
            iret_rip: None,
            xcr0: XFEATURE_MASK_FP,
            pv: crate::pv::PvState::RESET,
        }
    }

    /// Back to [`VcpuState::new`] without a temporary copy on the stack.
    pub fn reset(&mut self) {
        // An empty list is always accepted.
        let _ = self.cpuid.set(&[]);
        self.model = CpuModel::RESET;
        self.msrs = GuestMsrs::RESET;
        self.completion = None;
        self.interrupt_window_requested = false;
        self.pio_data.fill(0);
        self.counters = ExitCounters::ZERO;
        self.mp_state = MpState::Runnable;
        self.nmi_pending = false;
        self.nmi_masked = false;
        self.iret_rip = None;
        self.xcr0 = XFEATURE_MASK_FP;
        self.pv = crate::pv::PvState::RESET;
    }

    /// The guest's XCR0 (KVM_GET_XCRS; what the kernel loads for it).
    pub fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// The XCR0 states this guest may enable: those its CPUID leaf 0xD
    /// lists, of `host_mask` (KVM's `guest_supported_xcr0`).
    pub fn supported_xcr0(&self, host_mask: u64) -> u64 {
        let listed = self
            .cpuid
            .find(0xd, Some(0))
            .map_or(0, |leaf| u64::from(leaf.eax) | (u64::from(leaf.edx) << 32));
        listed & host_mask
    }

    /// KVM_SET_XCRS, after `kvm_api::decode::decode_xcrs` checked the
    /// value against [`VcpuState::supported_xcr0`].
    pub fn set_xcr0(&mut self, xcr0: u64) {
        self.xcr0 = xcr0;
    }

    /// KVM_GET_MP_STATE.  Without an in-kernel irqchip always RUNNABLE.
    pub fn mp_state(&self) -> MpState {
        self.mp_state
    }

    /// KVM_SET_MP_STATE after `kvm_api::decode::decode_mp_state`, and the
    /// backend at KVM_CREATE_VCPU: an AP of a VM with an in-kernel
    /// irqchip starts `Uninitialized` (waiting for INIT).  SIPI_RECEIVED
    /// becomes INIT_RECEIVED (the SIPI vector is not part of the ioctl
    /// here; KVM re-queues the LAPIC's), AP_RESET_HOLD (SEV-ES) is
    /// refused.
    pub fn set_mp_state(&mut self, mp_state: MpState) -> Result<(), crate::kvm_api::Error> {
        self.mp_state = match mp_state {
            MpState::SipiReceived => MpState::InitReceived,
            MpState::ApResetHold => return Err(crate::kvm_api::Error::InvalidValue),
            other => other,
        };
        Ok(())
    }

    /// Whether an NMI waits for injection (KVM_GET_VCPU_EVENTS).
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// KVM_SET_CPUID2.
    pub fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), CpuidError> {
        self.cpuid.set(entries)?;
        self.model = CpuModel::from_cpuid(&self.cpuid);
        Ok(())
    }

    /// The CPUID table set with KVM_SET_CPUID2.
    pub fn cpuid(&self) -> &GuestCpuid {
        &self.cpuid
    }

    /// The MSR features for an access now: the CPUID part, and the
    /// virtual-address width of the current CR4.LA57 (`vcpu_virt_addr_bits`).
    pub fn msr_features(&self, vcpu: &impl VendorVcpu) -> MsrFeatures {
        MsrFeatures {
            virtual_address_bits: if vcpu.cr4() & CR4_LA57 != 0 { 57 } else { 48 },
            ..self.model.msr
        }
    }

    /// What KVM_SET_SREGS checks against (`kvm_is_valid_sregs`), from
    /// the guest's CPUID.
    pub fn sregs_limits(&self) -> crate::kvm_api::decode::SregsLimits {
        crate::kvm_api::decode::SregsLimits {
            max_phys_addr_bits: self.model.msr.physical_address_bits,
            cr4_reserved: self.model.cr4_reserved,
            efer_reserved: !self.model.msr.efer_writable_bits(),
        }
    }

    /// The exit statistics.
    pub fn counters(&self) -> &ExitCounters {
        &self.counters
    }

    /// The data of the last `KVM_EXIT_IO` with direction out.
    pub fn pio_data(&self) -> &[u8] {
        &self.pio_data
    }

    /// Whether an exit to userspace waits for [`complete_user_exit`].
    pub fn has_pending_completion(&self) -> bool {
        self.completion.is_some()
    }

    /// Takes what userspace asks of this `KVM_RUN`.
    pub fn begin_run(&mut self, request: &RunRequest) {
        self.interrupt_window_requested = request.request_interrupt_window;
    }

    fn reject(&mut self, rejection: Rejection) {
        bump_at(&mut self.counters.rejected, rejection as usize);
    }
}

// ------------------------------------------------------------ entry points

/// Before each VMRUN: opens the interrupt window userspace asked for
/// (SvmVcpu closes it at every VINTR exit).
pub fn prepare_entry(vcpu: &mut impl VendorVcpu, state: &VcpuState) {
    if state.interrupt_window_requested {
        vcpu.set_interrupt_window(true);
    }
}

/// Handles the exit the vendor decoded (after `complete_exit`).
pub fn handle_exit<V, G, M>(
    vcpu: &mut V,
    state: &mut VcpuState,
    guest: &mut G,
    memory_map: &M,
    host: HostState,
) -> Step
where
    V: VendorVcpu,
    G: GuestRam,
    M: MemoryMap + ?Sized,
{
    let mut handler = Handler {
        vcpu,
        state,
        guest,
        map: memory_map,
        host,
        irqchip: None,
    };
    handler.handle_and_finish()
}

/// [`handle_exit`] for a VM with an in-kernel irqchip: the xAPIC page
/// and IOAPIC window (after the instruction is decoded and emulated),
/// the PIC and PIT ports, the x2APIC MSRs, IA32_TSC_DEADLINE and
/// IA32_APIC_BASE go to `irqchip` first; HLT becomes [`Step::Halt`]
/// unless an event already waits; IRET ends NMI masking.  Call
/// [`inject_pending_events`] before each entry.
pub fn handle_exit_with_irqchip<V, G, M>(
    vcpu: &mut V,
    state: &mut VcpuState,
    guest: &mut G,
    memory_map: &M,
    host: HostState,
    irqchip: &mut dyn InKernelIrqchip,
) -> Step
where
    V: VendorVcpu,
    G: GuestRam,
    M: MemoryMap + ?Sized,
{
    // The guest may have changed CR8 (V_TPR) without an exit; KVM's
    // `sync_cr8_to_lapic`, which like this rewrites the TPR from V_TPR
    // after every exit: TPR bits 3:0 written through the APIC read back
    // as 0 once the guest has run (as on KVM with SVM).
    let cr8 = vcpu.cr8();
    irqchip.set_cr8(cr8);
    Handler {
        vcpu,
        state,
        guest,
        map: memory_map,
        host,
        irqchip: Some(irqchip),
    }
    .handle_and_finish()
}

/// Why [`complete_user_exit`] could not read what userspace left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionError {
    /// The run page or PIO page given is too short (a kernel bug); the
    /// completion stays pending.
    RunPage(RunPageError),
}

/// At the start of `KVM_RUN`: finishes the exit userspace handled, with
/// the data it left in `run` (a private copy of `kvm_run`) or `pio_page`.
/// Call it even with `immediate_exit`, as KVM does, so nothing is lost.
/// It may return another exit (the store of a read-modify-write to MMIO).
pub fn complete_user_exit<V, G, M>(
    vcpu: &mut V,
    state: &mut VcpuState,
    guest: &mut G,
    memory_map: &M,
    run: &[u8],
    pio_page: &[u8],
) -> Result<Step, CompletionError>
where
    V: VendorVcpu,
    G: GuestRam,
    M: MemoryMap + ?Sized,
{
    let Some(completion) = state.completion else {
        return Ok(Step::Resume);
    };
    if vcpu.rip() != completion.rip {
        state.completion = None;
        state.reject(Rejection::CompletionDropped);
        return Ok(Step::Resume);
    }
    let mut handler = Handler {
        vcpu,
        state,
        guest,
        map: memory_map,
        host: HostState::default(),
        irqchip: None,
    };
    let step = handler
        .complete(completion.kind, run, pio_page)
        .map_err(CompletionError::RunPage)?;
    Ok(step)
}

/// Whether the guest can take a maskable interrupt now: RFLAGS.IF and no
/// interrupt shadow.
fn interrupts_enabled(vcpu: &impl VendorVcpu) -> bool {
    vcpu.rflags() & RFLAGS_IF != 0 && !vcpu.interrupt_shadow()
}

/// While [`Step::Halt`] blocks: whether the vCPU should go on (KVM
/// `kvm_vcpu_has_events` / `kvm_arch_vcpu_runnable`).  A halted vCPU
/// wakes for an NMI it can take, INIT, SIPI, or an interrupt while IF is
/// set; one waiting for INIT or SIPI only for those.
pub fn wakeup_pending(
    vcpu: &impl VendorVcpu,
    state: &VcpuState,
    irqchip: &mut dyn InKernelIrqchip,
) -> bool {
    match state.mp_state {
        MpState::Uninitialized | MpState::InitReceived | MpState::SipiReceived => {
            irqchip.has_wakeup_event(false, true)
        }
        MpState::Halted | MpState::ApResetHold => {
            (state.nmi_pending && !state.nmi_masked)
                || irqchip.has_wakeup_event(interrupts_enabled(vcpu), false)
        }
        MpState::Runnable => true,
    }
}

/// Segment attributes (VMCB layout) after RESET and INIT, as
/// `SvmVcpu::reset` sets them: present data/code, LDT, busy 16-bit TSS.
const RESET_DATA_ATTRIBUTES: u16 = 0x92;
const RESET_CODE_ATTRIBUTES: u16 = 0x9a;
const RESET_LDT_ATTRIBUTES: u16 = 0x82;
const RESET_TSS_ATTRIBUTES: u16 = 0x83;
const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;

/// The register state INIT leaves (SDM vol. 3 table 10-1; KVM
/// `kvm_vcpu_reset(vcpu, true)`): real mode at F000:FFF0, CR0.CD/NW
/// kept, EDX the CPUID family/model/stepping, everything else zero.  MSRs
/// other than EFER, the FPU and the debug registers are left alone, as
/// INIT leaves them (KVM resets DR6/DR7 too; the vendor trait cannot).
/// An event already queued for injection stays queued: the vendor trait
/// has no way to drop it (KVM clears it); only an exit that interrupted a
/// delivery at the moment of the INIT leaves one.
fn reset_for_init(vcpu: &mut impl VendorVcpu, state: &mut VcpuState) {
    for register in Gpr::ALL {
        vcpu.set_gpr(register, 0);
    }
    let version = state.cpuid.find(1, Some(0)).map_or(0x600, |entry| entry.eax);
    vcpu.set_gpr(Gpr::Rdx, u64::from(version));
    vcpu.set_rflags(2);
    vcpu.set_rip(0xfff0);
    let segment = |selector: u16, base: u64, attributes: u16| VendorSegment {
        selector,
        attributes,
        limit: 0xffff,
        base,
    };
    vcpu.set_segment(
        SegmentRegister::Cs,
        segment(0xf000, 0xffff_0000, RESET_CODE_ATTRIBUTES),
    );
    for register in [
        SegmentRegister::Es,
        SegmentRegister::Ss,
        SegmentRegister::Ds,
        SegmentRegister::Fs,
        SegmentRegister::Gs,
    ] {
        vcpu.set_segment(register, segment(0, 0, RESET_DATA_ATTRIBUTES));
    }
    vcpu.set_segment(SegmentRegister::Ldtr, segment(0, 0, RESET_LDT_ATTRIBUTES));
    vcpu.set_segment(SegmentRegister::Tr, segment(0, 0, RESET_TSS_ATTRIBUTES));
    vcpu.set_segment(SegmentRegister::Gdtr, segment(0, 0, 0));
    vcpu.set_segment(SegmentRegister::Idtr, segment(0, 0, 0));
    let cr0 = CR0_ET | (vcpu.cr0() & (CR0_CD | CR0_NW));
    vcpu.set_cr0(cr0);
    vcpu.set_cr2(0);
    vcpu.set_cr3(0);
    vcpu.set_cr4(0);
    vcpu.set_efer(0);
    vcpu.set_interrupt_window(false);
    vcpu.set_nmi_window(false);
    vcpu.request_tlb_flush();
    state.nmi_pending = false;
    state.nmi_masked = false;
    state.iret_rip = None;
    state.completion = None;
}

/// Asks for an exit as soon as the guest can take an interrupt (the
/// VINTR intercept with a vector-0 V_IRQ that is never delivered, host
/// notes on TCG).
fn open_interrupt_window(vcpu: &mut impl VendorVcpu, state: &mut VcpuState) {
    vcpu.set_interrupt_window(true);
    bump(&mut state.counters.interrupt_windows);
}

/// Before each entry of a vCPU of a VM with an in-kernel irqchip (KVM
/// `kvm_apic_accept_events` and `inject_pending_event`), after the exit
/// handler re-queued what EXITINTINFO showed interrupted:
///
/// 1. INIT resets the registers to the INIT state; the BSP runs on, an
///    AP waits for SIPI (INIT_RECEIVED).  A SIPI starts a waiting AP in
///    real mode at `vector << 12` (CS = vector << 8, RIP = 0); others
///    drop it (counted).
/// 2. A vCPU waiting (INIT/SIPI, or halted without a wakeup event)
///    returns [`Step::Halt`]; a halted one with an event becomes
///    runnable.
/// 3. With an event already queued (re-injection or an exception), only
///    windows are opened, to come back for the rest.
/// 4. An NMI is injected unless NMIs are masked (an NMI handler runs:
///    the IRET intercept is on, or the IRET has not retired: the
///    interrupt window stands in for KVM's single-step) or the guest is
///    in an interrupt shadow (the interrupt window again).
/// 5. A maskable interrupt is acknowledged and injected through EVENTINJ
///    when RFLAGS.IF = 1 and no shadow; otherwise the interrupt window
///    (VINTR) is opened and the exit handler's VINTR exit resumes, to
///    inject at the next call.
///
/// The LAPIC's TPR goes to the guest's CR8 (V_TPR) each time (KVM's
/// `sync_lapic_to_cr8`).  An interrupt that TPR blocks waits for the next
/// exit after the guest lowers CR8 (KVM intercepts CR8 writes then; not
/// done here).
///
/// Returns [`Step::Resume`] (enter the guest) or [`Step::Halt`].
pub fn inject_pending_events(
    vcpu: &mut impl VendorVcpu,
    state: &mut VcpuState,
    irqchip: &mut dyn InKernelIrqchip,
) -> Step {
    let step = inject_events(vcpu, state, irqchip);
    vcpu.set_cr8(irqchip.cr8());
    step
}

fn inject_events(
    vcpu: &mut impl VendorVcpu,
    state: &mut VcpuState,
    irqchip: &mut dyn InKernelIrqchip,
) -> Step {
    if irqchip.take_init() {
        bump(&mut state.counters.inits);
        reset_for_init(vcpu, state);
        state.mp_state = if irqchip.is_bsp() {
            MpState::Runnable
        } else {
            MpState::InitReceived
        };
    }
    if let Some(vector) = irqchip.take_sipi() {
        if state.mp_state == MpState::InitReceived {
            bump(&mut state.counters.sipis);
            let mut cs = vcpu.segment(SegmentRegister::Cs);
            cs.selector = u16::from(vector) << 8;
            cs.base = u64::from(vector) << 12;
            vcpu.set_segment(SegmentRegister::Cs, cs);
            vcpu.set_rip(0);
            state.mp_state = MpState::Runnable;
        } else {
            bump(&mut state.counters.sipis_dropped);
        }
    }
    match state.mp_state {
        MpState::Runnable => {}
        MpState::Halted if wakeup_pending(vcpu, state, irqchip) => {
            state.mp_state = MpState::Runnable;
            irqchip.clear_pv_unhalt();
        }
        _ => return Step::Halt,
    }
    if let Some(rip) = state.iret_rip {
        if vcpu.rip() != rip {
            state.nmi_masked = false;
            state.iret_rip = None;
        }
    }
    if irqchip.take_nmi() {
        state.nmi_pending = true;
    }
    if vcpu.injection_pending() {
        if state.nmi_pending || irqchip.has_interrupt() {
            open_interrupt_window(vcpu, state);
        }
        return Step::Resume;
    }
    if state.nmi_pending {
        if !state.nmi_masked && !vcpu.interrupt_shadow() {
            if vcpu.inject_event(Event::nmi()).is_ok() {
                state.nmi_pending = false;
                state.nmi_masked = true;
                state.iret_rip = None;
                vcpu.set_nmi_window(true);
                bump(&mut state.counters.nmis_injected);
            }
            if irqchip.has_interrupt() {
                open_interrupt_window(vcpu, state);
            }
            return Step::Resume;
        }
        bump(&mut state.counters.nmi_windows);
        if state.nmi_masked && state.iret_rip.is_none() {
            vcpu.set_nmi_window(true);
        } else {
            vcpu.set_interrupt_window(true);
        }
    }
    if irqchip.has_interrupt() {
        if interrupts_enabled(vcpu) {
            if let Some(vector) = irqchip.acknowledge_interrupt() {
                if vcpu.inject_event(Event::interrupt(vector)).is_ok() {
                    bump(&mut state.counters.interrupts_injected);
                } else {
                    state.reject(Rejection::InjectionConflict);
                }
            }
        } else {
            open_interrupt_window(vcpu, state);
        }
    }
    Step::Resume
}

/// KVM_SET_MSRS (or any host write) of IA32_APIC_BASE on a VM with an
/// in-kernel irqchip: the LAPIC's copy is the authoritative one (it
/// decides the xAPIC page, x2APIC mode and the ids); `state.msrs`
/// mirrors it for CPUID's APIC bit, `kvm_run.apic_base` and
/// KVM_GET_MSRS.
pub fn write_apic_base(
    state: &mut VcpuState,
    features: &MsrFeatures,
    irqchip: &mut dyn InKernelIrqchip,
    value: u64,
    origin: MsrOrigin,
) -> Result<(), MsrError> {
    irqchip.set_apic_base(value, features, origin)?;
    state.msrs.apic_base = irqchip.apic_base();
    Ok(())
}

/// What `kvm_run` reports beside every exit (`post_kvm_run_save`).
pub fn exit_state(vcpu: &impl VendorVcpu, state: &VcpuState) -> ExitState {
    ExitState {
        if_flag: vcpu.rflags() & RFLAGS_IF != 0,
        cr8: 0,
        apic_base: state.msrs.apic_base,
        ready_for_interrupt_injection: ready_for_interrupt(vcpu),
        flags: 0,
    }
}

/// Writes `exit` into the run page and, for port I/O, the PIO page.
pub fn write_user_exit(
    vcpu: &impl VendorVcpu,
    state: &VcpuState,
    exit: &UserExit,
    run: &mut [u8],
    pio_page: &mut [u8],
) -> Result<(), RunPageError> {
    run::write_exit(
        run,
        pio_page,
        &exit_state(vcpu, state),
        &exit.to_run_exit(state),
    )
}

/// Whether an interrupt could be injected now (`kvm_vcpu_ready_for_
/// interrupt_injection` without an in-kernel irqchip).
fn ready_for_interrupt(vcpu: &impl VendorVcpu) -> bool {
    vcpu.rflags() & RFLAGS_IF != 0 && !vcpu.interrupt_shadow() && !vcpu.injection_pending()
}

// ------------------------------------------------------------ guest access

/// Lets the page walker and the emulator's bus share the guest memory.
/// Neither holds a borrow across a call into the other, so the borrow
/// never fails; if it did, the access fails instead of panicking.
struct SharedGuest<'c, 'g, G>(&'c RefCell<&'g mut G>);

impl<G> SharedGuest<'_, '_, G> {
    fn with<T>(
        &self,
        access: impl FnOnce(&mut G) -> Result<T, MemoryError>,
    ) -> Result<T, MemoryError> {
        let mut guest = self
            .0
            .try_borrow_mut()
            .map_err(|_| MemoryError::Unavailable)?;
        access(&mut guest)
    }
}

impl<G: GuestRam> GuestMemory for SharedGuest<'_, '_, G> {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        self.with(|guest| guest.read_u32(gpa))
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        self.with(|guest| guest.read_u64(gpa))
    }
    fn read_bytes(&mut self, gpa: u64, buffer: &mut [u8]) -> Result<(), MemoryError> {
        self.with(|guest| guest.read_bytes(gpa, buffer))
    }
}

impl<G: GuestRam> PageTableWrite for SharedGuest<'_, '_, G> {
    fn set_entry_bits(
        &mut self,
        update: &crate::paging::AccessedDirtyUpdate,
    ) -> Result<bool, MemoryError> {
        self.with(|guest| guest.set_entry_bits(update))
    }
}

/// The emulator's bus: RAM through the guest memory, everything else
/// (and writes to read-only slots) deferred to userspace.
struct Bus<'c, 'g, 'i, G, M: ?Sized> {
    guest: SharedGuest<'c, 'g, G>,
    map: &'c M,
    /// Unbacked accesses go here first.
    irqchip: Option<&'c mut (dyn InKernelIrqchip + 'i)>,
    /// Accesses the irqchip answered.
    in_irqchip: u64,
}

impl<G: GuestRam, M: MemoryMap + ?Sized> emulate::Mmio for Bus<'_, '_, '_, G, M> {
    fn read(&mut self, gpa: u64, size: u8) -> Result<MmioResult, MemoryError> {
        if self.map.backing(gpa) == Backing::Unbacked {
            let mut value = [0u8; 8];
            if let (Some(irqchip), Some(data)) = (
                self.irqchip.as_deref_mut(),
                value.get_mut(..usize::from(size)),
            ) {
                if irqchip.mmio_read(gpa, data) {
                    bump(&mut self.in_irqchip);
                    return Ok(MmioResult::Done(u64::from_le_bytes(value)));
                }
            }
            return Ok(MmioResult::Deferred);
        }
        let mut value = [0u8; 8];
        let target = value
            .get_mut(..usize::from(size))
            .ok_or(MemoryError::Unavailable)?;
        self.guest.with(|guest| guest.read_bytes(gpa, target))?;
        Ok(MmioResult::Done(u64::from_le_bytes(value)))
    }

    fn write(&mut self, gpa: u64, size: u8, value: u64) -> Result<MmioResult, MemoryError> {
        let backing = self.map.backing(gpa);
        if backing == Backing::Unbacked {
            let bytes = value.to_le_bytes();
            if let (Some(irqchip), Some(data)) =
                (self.irqchip.as_deref_mut(), bytes.get(..usize::from(size)))
            {
                if irqchip.mmio_write(gpa, data) {
                    bump(&mut self.in_irqchip);
                    return Ok(MmioResult::Done(0));
                }
            }
        }
        if backing != (Backing::Ram { writable: true }) {
            return Ok(MmioResult::Deferred);
        }
        let bytes = value.to_le_bytes();
        let source = bytes
            .get(..usize::from(size))
            .ok_or(MemoryError::Unavailable)?;
        self.guest.with(|guest| guest.write_bytes(gpa, source))?;
        Ok(MmioResult::Done(0))
    }
}

fn load_registers(vcpu: &impl VendorVcpu) -> Registers {
    let mut registers = Registers {
        gprs: [0; 16],
        rip: vcpu.rip(),
        rflags: vcpu.rflags(),
    };
    for (slot, register) in registers.gprs.iter_mut().zip(Gpr::ALL) {
        *slot = vcpu.gpr(register);
    }
    registers
}

/// Writes back the GPRs and RFLAGS (RIP is the caller's business).
fn store_registers(vcpu: &mut impl VendorVcpu, registers: &Registers) {
    for (value, register) in registers.gprs.iter().zip(Gpr::ALL) {
        if vcpu.gpr(register) != *value {
            vcpu.set_gpr(register, *value);
        }
    }
    vcpu.set_rflags(registers.rflags);
}

fn gpr_operand(index: u8) -> Register {
    Register {
        index,
        high_byte: false,
    }
}

fn code_size(vcpu: &impl VendorVcpu) -> CodeSize {
    let cs = vcpu.segment(SegmentRegister::Cs);
    CodeSize::of_guest(
        vcpu.cr0() & CR0_PE != 0,
        vcpu.rflags() & RFLAGS_VM != 0,
        vcpu.efer() & EFER_LMA != 0,
        cs.attributes & SEGMENT_LONG != 0,
        cs.attributes & SEGMENT_DEFAULT_BIG != 0,
    )
}

/// The mask of the instruction pointer in `code_size`.
fn ip_mask(code_size: CodeSize) -> u64 {
    match code_size {
        CodeSize::Bits16 => 0xffff,
        CodeSize::Bits32 => 0xffff_ffff,
        CodeSize::Bits64 => u64::MAX,
    }
}

/// The address-size mask for `address_size` bytes.
fn address_mask(address_size: u8) -> u64 {
    truncate(u64::MAX, address_size)
}

/// The linear address of `offset` in `segment` (in 64-bit mode only FS
/// and GS have a base; elsewhere linear addresses wrap at 4 GiB).
fn linear_address(context: &Context, segment: Segment, offset: u64) -> u64 {
    let base = context.segment(segment).base;
    match (context.code_size, segment) {
        (CodeSize::Bits64, Segment::Fs | Segment::Gs) => base.wrapping_add(offset),
        (CodeSize::Bits64, _) => offset,
        _ => base.wrapping_add(offset) & 0xffff_ffff,
    }
}

/// The code-segment linear address of `rip`.
fn code_linear(context: &Context, rip: u64) -> u64 {
    match context.code_size {
        CodeSize::Bits64 => rip,
        _ => context.cs.base.wrapping_add(rip) & 0xffff_ffff,
    }
}

/// An instruction fetched at RIP and decoded, with its bytes.
#[derive(Clone, Copy, Debug)]
struct Fetched {
    instruction: Instruction,
    bytes: InstructionBytes,
}

/// Why no instruction came out of the bytes at RIP.
#[derive(Clone, Copy, Debug)]
enum FetchFailure {
    /// The guest's MMU would fault: inject it.
    Fault(Exception),
    Failed(EmulationFailureKind, InstructionBytes),
}

fn walk_failure(error: WalkError, bytes: InstructionBytes) -> FetchFailure {
    match error {
        WalkError::PageFault(fault) => FetchFailure::Fault(Exception::PageFault(fault)),
        WalkError::NonCanonical { .. } => FetchFailure::Fault(Exception::GeneralProtection),
        WalkError::Memory { error, .. } => FetchFailure::Failed(memory_failure(error, true), bytes),
        WalkError::InvalidPagingState => {
            FetchFailure::Failed(EmulationFailureKind::InvalidState, bytes)
        }
    }
}

fn memory_failure(error: MemoryError, fetch: bool) -> EmulationFailureKind {
    match (error, fetch) {
        (MemoryError::Unavailable, _) => EmulationFailureKind::HostMemory,
        (MemoryError::Unmapped, true) => EmulationFailureKind::FetchUnmapped,
        (MemoryError::Unmapped, false) => EmulationFailureKind::OperandUnmapped,
    }
}

/// Reads up to 15 bytes at CS.base + RIP through the guest's page tables
/// and decodes them.  The second page is translated only if the first
/// ends inside the instruction, so its #PF is raised only when the guest
/// would take it.  Accessed flags are not set: the CPU set them when it
/// fetched the instruction that exited.
fn fetch_instruction<G: GuestMemory + ?Sized>(
    context: &Context,
    registers: &Registers,
    guest: &mut G,
) -> Result<Fetched, FetchFailure> {
    let mut bytes = InstructionBytes::default();
    let rip = registers.rip;
    // Outside 64-bit mode, bytes past the CS limit cannot be fetched.
    let room = match context.code_size {
        CodeSize::Bits64 => MAX_INSTRUCTION_LENGTH,
        _ => match u64::from(context.cs.limit).checked_sub(rip) {
            Some(room) => room.saturating_add(1).min(MAX_INSTRUCTION_LENGTH as u64) as usize,
            None => return Err(FetchFailure::Fault(Exception::GeneralProtection)),
        },
    };
    let access = Access::explicit(AccessKind::Fetch, context.cpl, registers.rflags);
    let mut fetched = 0usize;
    while fetched < room {
        let offset = rip.wrapping_add(fetched as u64) & ip_mask(context.code_size);
        let linear = code_linear(context, offset);
        let translation = translate(guest, &context.paging, &context.features, linear, access)
            .map_err(|error| walk_failure(error, bytes))?;
        let in_page = usize::try_from(translation.bytes_to_page_end()).unwrap_or(usize::MAX);
        let chunk = in_page.min(room - fetched);
        let so_far = bytes;
        let target = bytes
            .bytes
            .get_mut(fetched..fetched + chunk)
            .ok_or(FetchFailure::Failed(
                EmulationFailureKind::InvalidState,
                so_far,
            ))?;
        if let Err(error) = guest.read_bytes(translation.gpa, target) {
            return Err(FetchFailure::Failed(memory_failure(error, true), bytes));
        }
        fetched += chunk;
        bytes.len = fetched as u8;
        match decode(bytes.as_slice(), context.code_size) {
            Ok(instruction) => return Ok(Fetched { instruction, bytes }),
            // Fetch what the next page holds of the instruction.
            Err(DecodeError::NeedMoreBytes) => {}
            Err(_) => {
                return Err(FetchFailure::Failed(EmulationFailureKind::Decode, bytes));
            }
        }
    }
    // Out of room: the CS limit cut the instruction (#GP on hardware), or
    // 15 bytes were not enough for the decoder.
    Err(if room < MAX_INSTRUCTION_LENGTH {
        FetchFailure::Fault(Exception::GeneralProtection)
    } else {
        FetchFailure::Failed(EmulationFailureKind::Decode, bytes)
    })
}

/// The mnemonic the decoder gives the instruction of a fixed-length
/// intercept (RDPMC is not decoded).
fn intercepted_mnemonic(exit: &Exit) -> Option<Mnemonic> {
    Some(match exit {
        Exit::Cpuid => Mnemonic::Cpuid,
        Exit::Msr { write: false } => Mnemonic::Rdmsr,
        Exit::Msr { write: true } => Mnemonic::Wrmsr,
        Exit::Hypercall => Mnemonic::Vmmcall,
        Exit::Hlt => Mnemonic::Hlt,
        Exit::Rdtsc => Mnemonic::Rdtsc,
        Exit::Rdtscp => Mnemonic::Rdtscp,
        Exit::Pause => Mnemonic::Pause,
        Exit::Invd => Mnemonic::Invd,
        Exit::Wbinvd => Mnemonic::Wbinvd,
        Exit::Monitor => Mnemonic::Monitor,
        Exit::Mwait => Mnemonic::Mwait,
        Exit::Xsetbv => Mnemonic::Xsetbv,
        _ => return None,
    })
}

// ------------------------------------------------------------ the handler

/// One exit's worth of borrowed state.
struct Handler<'a, V, G, M: ?Sized> {
    vcpu: &'a mut V,
    state: &'a mut VcpuState,
    guest: &'a mut G,
    map: &'a M,
    host: HostState,
    irqchip: Option<&'a mut dyn InKernelIrqchip>,
}

impl<V, G, M> Handler<'_, V, G, M>
where
    V: VendorVcpu,
    G: GuestRam,
    M: MemoryMap + ?Sized,
{
    fn handle_and_finish(&mut self) -> Step {
        let step = self.handle();
        self.finish(step)
    }

    fn handle(&mut self) -> Step {
        let info = self.vcpu.exit_info();
        bump_at(
            &mut self.state.counters.exits,
            ExitReason::of(&info.exit) as usize,
        );
        if self.state.completion.take().is_some() {
            self.state.reject(Rejection::CompletionOverwritten);
        }
        let delivering = match info.interrupted_event {
            Ok(None) => false,
            Ok(Some(event)) => {
                if let Reinjection::Inject(event) = Reinjection::for_interrupted(event) {
                    if self.vcpu.inject_event(event).is_err() {
                        self.state.reject(Rejection::InjectionConflict);
                        return self.delivery_error();
                    }
                    bump(&mut self.state.counters.events_reinjected);
                }
                true
            }
            Err(_) => {
                self.state.reject(Rejection::UninjectableEvent);
                return self.delivery_error();
            }
        };
        let exit = info.exit;
        match exit {
            Exit::Cpuid => self.cpuid(&exit),
            Exit::Msr { write } => self.msr(&exit, write),
            Exit::Hypercall => self.hypercall(&exit),
            Exit::Xsetbv => self.xsetbv(&exit),
            Exit::Io(io) => self.io(io),
            Exit::Npf(npf) => self.npf(npf, delivering),
            Exit::Hlt => {
                self.skip(&exit);
                self.halt()
            }
            Exit::Iret => {
                if self.irqchip.is_some() && self.state.nmi_masked {
                    // NMIs unmask once this IRET retires.
                    self.state.iret_rip = Some(self.vcpu.rip());
                }
                Step::Resume
            }
            Exit::ExternalInterrupt
            | Exit::Nmi
            | Exit::Smi
            | Exit::Init
            | Exit::InterruptWindow => Step::Resume,
            Exit::Shutdown => Step::ToUser(UserExit::Shutdown),
            Exit::Exception {
                vector,
                error_code,
                fault_address,
            } => self.reflect_exception(vector, error_code, fault_address),
            Exit::VirtualizationInstruction => self.inject_exception(VECTOR_UD, None),
            Exit::Invd | Exit::Wbinvd | Exit::Monitor | Exit::Mwait | Exit::Pause => {
                self.skip(&exit);
                Step::Resume
            }
            Exit::Rdtsc | Exit::Rdtscp => {
                let tsc = self.host.tsc.wrapping_add(self.state.msrs.tsc_offset);
                self.vcpu.set_gpr(Gpr::Rax, tsc & 0xffff_ffff);
                self.vcpu.set_gpr(Gpr::Rdx, tsc >> 32);
                if exit == Exit::Rdtscp {
                    self.vcpu
                        .set_gpr(Gpr::Rcx, u64::from(self.state.msrs.tsc_aux));
                }
                self.skip(&exit);
                Step::Resume
            }
            // No PMU is offered: RDPMC faults, as kvm_emulate_rdpmc does.
            Exit::Rdpmc => self.inject_exception(VECTOR_GP, Some(0)),
            Exit::Invalid => Step::ToUser(UserExit::FailEntry {
                hardware_entry_failure_reason: self.vcpu.hardware_exit_info().reason,
                cpu: self.host.cpu,
            }),
            Exit::ControlRegister { .. }
            | Exit::DebugRegister { .. }
            | Exit::Invlpg { .. }
            | Exit::TaskSwitch
            | Exit::Unexpected(_)
            | Exit::Unknown(_) => self.unexpected_exit(),
        }
    }

    /// After a `Resume`: the interrupt window userspace asked for may be
    /// open now (KVM checks after every exit, `vcpu_run`).
    fn finish(&mut self, step: Step) -> Step {
        if step == Step::Resume
            && self.state.interrupt_window_requested
            && ready_for_interrupt(self.vcpu)
        {
            bump(&mut self.state.counters.irq_window_exits);
            return Step::ToUser(UserExit::IrqWindowOpen);
        }
        step
    }

    /// HLT, after RIP moved past it: userspace's without an in-kernel
    /// irqchip; with one, the vCPU blocks unless an event already waits
    /// (KVM `kvm_emulate_halt`, `kvm_vcpu_has_events`).
    fn halt(&mut self) -> Step {
        let Some(irqchip) = self.irqchip.as_deref_mut() else {
            return Step::ToUser(UserExit::Hlt);
        };
        let state = &mut *self.state;
        state.mp_state = MpState::Halted;
        if wakeup_pending(&*self.vcpu, state, irqchip) {
            state.mp_state = MpState::Runnable;
            irqchip.clear_pv_unhalt();
            return Step::Resume;
        }
        bump(&mut state.counters.halts);
        Step::Halt
    }

    // -------------------------------------------------------- failures

    fn unexpected_exit(&mut self) -> Step {
        let reason = self.vcpu.hardware_exit_info().reason;
        Step::ToUser(UserExit::InternalError {
            suberror: KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
            data: ExitWords::from_slice(&[reason, u64::from(self.host.cpu)]),
        })
    }

    /// KVM's five exit-information words (`prepare_emulation_failure_exit`).
    fn exit_info_words(&self) -> [u64; 5] {
        let HardwareExitInfo {
            reason,
            info1,
            info2,
            interrupt_info,
            interrupt_error_code,
        } = self.vcpu.hardware_exit_info();
        // KVM passes the reason through a u32.
        [
            reason & 0xffff_ffff,
            info1,
            info2,
            u64::from(interrupt_info),
            u64::from(interrupt_error_code),
        ]
    }

    fn delivery_error(&mut self) -> Step {
        Step::ToUser(UserExit::InternalError {
            suberror: KVM_INTERNAL_ERROR_DELIVERY_EV,
            data: ExitWords::from_slice(&self.exit_info_words()),
        })
    }

    fn emulation_failure(
        &mut self,
        kind: EmulationFailureKind,
        bytes: Option<InstructionBytes>,
    ) -> Step {
        bump_at(&mut self.state.counters.emulation_failures, kind as usize);
        let guest_caused = !matches!(
            kind,
            EmulationFailureKind::HostMemory | EmulationFailureKind::InvalidState
        );
        if guest_caused {
            // handle_emulation_failure: #UD is queued; user mode just
            // takes it, so a guest process cannot stop the VM.
            let queued = self.vcpu.inject_event(Event::exception(VECTOR_UD, None));
            if queued.is_ok() && self.vcpu.cpl() != 0 {
                bump(&mut self.state.counters.exceptions_injected);
                return Step::Resume;
            }
        }
        Step::ToUser(UserExit::EmulationFailure {
            instruction: bytes,
            data: ExitWords::from_slice(&self.exit_info_words()),
        })
    }

    fn fetch_failure(&mut self, failure: FetchFailure) -> Step {
        match failure {
            FetchFailure::Fault(exception) => self.inject(exception),
            FetchFailure::Failed(kind, bytes) => self.emulation_failure(kind, Some(bytes)),
        }
    }

    // -------------------------------------------------------- events

    /// Queues an exception; the error code is dropped outside protected
    /// mode, where none is pushed (as `kvm_inject_exception` does).
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) -> Step {
        let error_code = error_code.filter(|_| self.vcpu.cr0() & CR0_PE != 0);
        match self.vcpu.inject_event(Event::exception(vector, error_code)) {
            Ok(()) => {
                bump(&mut self.state.counters.exceptions_injected);
                Step::Resume
            }
            Err(_) => {
                self.state.reject(Rejection::InjectionConflict);
                self.delivery_error()
            }
        }
    }

    fn inject(&mut self, exception: Exception) -> Step {
        match exception {
            Exception::PageFault(fault) => {
                self.vcpu.set_cr2(fault.linear_address);
                self.inject_exception(VECTOR_PF, Some(fault.error_code))
            }
            Exception::GeneralProtection => self.inject_exception(VECTOR_GP, Some(0)),
            Exception::StackFault => self.inject_exception(VECTOR_SS, Some(0)),
            Exception::InvalidOpcode => self.inject_exception(VECTOR_UD, None),
        }
    }

    /// An intercepted exception goes back to the guest; #MC was the
    /// host's (its handler ran after the exit).  #BP and #OF would need
    /// the length of INT3/INTO to be injected as software exceptions.
    fn reflect_exception(&mut self, vector: u8, error_code: u32, fault_address: u64) -> Step {
        match vector {
            VECTOR_MC => Step::Resume,
            0..=1 | 5..=30 => {
                if vector == VECTOR_PF {
                    self.vcpu.set_cr2(fault_address);
                }
                let error_code = exception_has_error_code(vector).then_some(error_code);
                self.inject_exception(vector, error_code)
            }
            _ => {
                self.state.reject(Rejection::UnreflectableException);
                self.unexpected_exit()
            }
        }
    }

    // -------------------------------------------------------- simple exits

    fn context(&mut self) -> Result<Context, EmulationFailureKind> {
        let vcpu = &*self.vcpu;
        let mut paging = PagingRegisters {
            cr0: vcpu.cr0(),
            cr3: vcpu.cr3(),
            cr4: vcpu.cr4(),
            efer: vcpu.efer(),
            pdptes: [0; 4],
            pkru: 0,
        };
        let pae_legacy =
            paging.cr0 & CR0_PG != 0 && paging.cr4 & CR4_PAE != 0 && paging.efer & EFER_LMA == 0;
        if pae_legacy {
            // With nested paging the CPU reads the PDPTEs from memory
            // (APM §15.25.10), so there are no PDPTE registers to copy.
            let table = paging.cr3 & 0xffff_ffe0;
            for (index, pdpte) in paging.pdptes.iter_mut().enumerate() {
                *pdpte = self
                    .guest
                    .read_u64(table.wrapping_add(8 * index as u64))
                    .map_err(|error| memory_failure(error, false))?;
            }
        }
        let vcpu = &*self.vcpu;
        Ok(Context {
            code_size: code_size(vcpu),
            cpl: vcpu.cpl(),
            paging,
            features: self.state.model.paging,
            es: vcpu.segment(SegmentRegister::Es).into(),
            cs: vcpu.segment(SegmentRegister::Cs).into(),
            ss: vcpu.segment(SegmentRegister::Ss).into(),
            ds: vcpu.segment(SegmentRegister::Ds).into(),
            fs: vcpu.segment(SegmentRegister::Fs).into(),
            gs: vcpu.segment(SegmentRegister::Gs).into(),
        })
    }

    /// Moves RIP past a fixed-length intercept, checking the length
    /// against the bytes at RIP (see the module docs).
    fn skip(&mut self, exit: &Exit) {
        if let Some(expected) = intercepted_mnemonic(exit) {
            if let Ok(context) = self.context() {
                let registers = load_registers(self.vcpu);
                if let Ok(fetched) = fetch_instruction(&context, &registers, self.guest) {
                    let length = fetched.instruction.length;
                    if fetched.instruction.mnemonic == expected {
                        let counters = &mut self.state.counters;
                        if exit.fixed_instruction_length() == Some(length) {
                            bump(&mut counters.lengths_verified);
                        } else {
                            bump(&mut counters.lengths_corrected);
                        }
                        self.vcpu
                            .retire_instruction(registers.next_rip(context.code_size, length));
                        return;
                    }
                    self.state.reject(Rejection::StaleInstruction);
                }
            }
        }
        bump(&mut self.state.counters.lengths_unverified);
        // Only exits with a fixed length get here, so this cannot fail;
        // if it did, the guest would exit again on the same instruction.
        let _ = self.vcpu.skip_instruction(exit);
    }

    fn cpuid(&mut self, exit: &Exit) -> Step {
        let function = self.vcpu.gpr(Gpr::Rax) as u32;
        let index = self.vcpu.gpr(Gpr::Rcx) as u32;
        let mut result = self.state.cpuid.query(function, index);
        // The bits that follow guest state (kvm_update_cpuid_runtime).
        let set_bit = |register: &mut u32, bit: u32, on: bool| {
            *register = (*register & !(1 << bit)) | (u32::from(on) << bit);
        };
        let cr4 = self.vcpu.cr4();
        if function == 1 && self.state.cpuid.find(1, Some(index)).is_some() {
            set_bit(&mut result.ecx, 27, cr4 & CR4_OSXSAVE != 0);
            let apic_enabled = self.state.msrs.apic_base & MSR_IA32_APICBASE_ENABLE != 0;
            set_bit(&mut result.edx, 9, apic_enabled);
        }
        if function == 7 && index == 0 && self.state.cpuid.find(7, Some(0)).is_some() {
            set_bit(&mut result.ecx, 4, cr4 & CR4_PKE != 0);
        }
        self.vcpu.set_gpr(Gpr::Rax, u64::from(result.eax));
        self.vcpu.set_gpr(Gpr::Rbx, u64::from(result.ebx));
        self.vcpu.set_gpr(Gpr::Rcx, u64::from(result.ecx));
        self.vcpu.set_gpr(Gpr::Rdx, u64::from(result.edx));
        self.skip(exit);
        Step::Resume
    }

    /// An MSR access the in-kernel irqchip serves: the x2APIC registers,
    /// IA32_TSC_DEADLINE and IA32_APIC_BASE.  `None` for other MSRs.
    fn irqchip_msr(&mut self, number: u32, write: bool, value: u64) -> Option<Result<(), MsrError>> {
        let irqchip = self.irqchip.as_deref_mut()?;
        if number != MSR_IA32_APICBASE && !is_irqchip_msr(number) {
            return None;
        }
        bump(&mut self.state.counters.irqchip_msr);
        let read = |vcpu: &mut V, value: u64| {
            vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
            vcpu.set_gpr(Gpr::Rdx, value >> 32);
        };
        Some(match (number, write) {
            (MSR_IA32_APICBASE, true) => {
                let features = self.state.msr_features(self.vcpu);
                write_apic_base(self.state, &features, irqchip, value, MsrOrigin::Guest)
            }
            (MSR_IA32_APICBASE, false) => {
                read(self.vcpu, irqchip.apic_base());
                Ok(())
            }
            (_, true) => {
                let guest_tsc = self.host.tsc.wrapping_add(self.state.msrs.tsc_offset);
                irqchip.msr_write(number, value, guest_tsc)
            }
            (_, false) => irqchip
                .msr_read(number)
                .map(|value| read(self.vcpu, value)),
        })
    }

    fn msr(&mut self, exit: &Exit, write: bool) -> Step {
        let number = self.vcpu.gpr(Gpr::Rcx) as u32;
        let value =
            (self.vcpu.gpr(Gpr::Rdx) & 0xffff_ffff) << 32 | self.vcpu.gpr(Gpr::Rax) & 0xffff_ffff;
        if let Some(result) = self.irqchip_msr(number, write, value) {
            return self.msr_done(exit, result);
        }
        if crate::pv::is_pv_msr(number) {
            let result = if write {
                let reference = crate::pv::ClockReference::at_exit(&self.host, self.state.msrs.tsc_offset);
                let pv = &mut self.state.pv;
                crate::pv::write_msr(pv, self.guest, number, value, &reference, MsrOrigin::Guest)
            } else {
                crate::pv::read_msr(&self.state.pv, number).map(|value| {
                    self.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
                    self.vcpu.set_gpr(Gpr::Rdx, value >> 32);
                })
            };
            return self.msr_done(exit, result);
        }
        let result = if write {
            let features = self.state.msr_features(self.vcpu);
            msr::write_msr(
                self.vcpu,
                &mut self.state.msrs,
                &features,
                number,
                value,
                self.host.tsc,
                MsrOrigin::Guest,
            )
        } else {
            msr::read_msr(self.vcpu, &self.state.msrs, number, self.host.tsc).map(|value| {
                self.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
                self.vcpu.set_gpr(Gpr::Rdx, value >> 32);
            })
        };
        self.msr_done(exit, result)
    }

    /// Retires the RDMSR/WRMSR, or injects #GP(0) for a refusal.
    fn msr_done(&mut self, exit: &Exit, result: Result<(), MsrError>) -> Step {
        match result {
            Ok(()) => {
                self.skip(exit);
                Step::Resume
            }
            Err(error) => {
                self.state.reject(match error {
                    MsrError::Unknown(_) => Rejection::UnknownMsr,
                    MsrError::InvalidValue { .. } => Rejection::InvalidMsrValue,
                });
                self.inject_exception(VECTOR_GP, Some(0))
            }
        }
    }

    fn hypercall(&mut self, exit: &Exit) -> Step {
        bump(&mut self.state.counters.hypercalls);
        let long_mode = code_size(self.vcpu) == CodeSize::Bits64;
        let [nr, a0, a1, a2, a3] = [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx, Gpr::Rsi]
            .map(|register| self.vcpu.gpr(register));
        let call = crate::pv::decode_hypercall(nr, a0, a1, a2, a3, self.vcpu.cpl(), long_mode);
        if call == crate::pv::Hypercall::Privileged {
            self.state.reject(Rejection::PrivilegedHypercall);
        }
        let reference = crate::pv::ClockReference::at_exit(&self.host, self.state.msrs.tsc_offset);
        let irqchip = self.irqchip.as_deref_mut();
        let pv = &mut self.state.pv;
        let result = crate::pv::handle_hypercall(pv, self.guest, &call, &reference, irqchip);
        self.vcpu
            .set_gpr(Gpr::Rax, crate::pv::hypercall_result(result, long_mode));
        self.skip(exit);
        Step::Resume
    }

    /// XSETBV (`kvm_emulate_xsetbv`): XCR0 only, from CPL 0, with a
    /// value `is_valid_xcr0` accepts for this guest; anything else is
    /// #GP(0).  The #UD without CR4.OSXSAVE is the processor's, before
    /// the intercept.
    fn xsetbv(&mut self, exit: &Exit) -> Step {
        let index = self.vcpu.gpr(Gpr::Rcx) as u32;
        let value = (self.vcpu.gpr(Gpr::Rdx) << 32) | (self.vcpu.gpr(Gpr::Rax) & 0xffff_ffff);
        let supported = self.state.supported_xcr0(self.host.xcr0_mask);
        if self.vcpu.cpl() != 0 || index != 0 || !is_valid_xcr0(value, supported) {
            self.state.reject(Rejection::InvalidXsetbv);
            return self.inject_exception(VECTOR_GP, Some(0));
        }
        self.state.xcr0 = value;
        self.skip(exit);
        Step::Resume
    }

    fn pend(&mut self, kind: CompletionKind) {
        self.state.completion = Some(Completion {
            rip: self.vcpu.rip(),
            kind,
        });
    }

    // -------------------------------------------------------- port I/O

    fn io(&mut self, io: IoExit) -> Step {
        bump_at(
            &mut self.state.counters.ports,
            PortClass::of(io.port) as usize,
        );
        if !matches!(io.size, 1 | 2 | 4) {
            return self.unexpected_exit();
        }
        // EXITINFO2 must lie 1-15 bytes after RIP (in the IP's width).
        let mask = ip_mask(code_size(self.vcpu));
        let length = io.next_rip.wrapping_sub(self.vcpu.rip()) & mask;
        if io.next_rip & !mask != 0 || !(1..=MAX_INSTRUCTION_LENGTH as u64).contains(&length) {
            return self.emulation_failure(EmulationFailureKind::NextRip, None);
        }
        if io.string {
            bump(&mut self.state.counters.string_io);
            return self.string_io(io);
        }
        let size = usize::from(io.size);
        if let Some(step) = self.irqchip_io(io, size) {
            return step;
        }
        let direction = match io.direction {
            IoDirection::Out => {
                let value = self.vcpu.gpr(Gpr::Rax).to_le_bytes();
                match (self.state.pio_data.get_mut(..size), value.get(..size)) {
                    (Some(target), Some(source)) => target.copy_from_slice(source),
                    _ => return self.emulation_failure(EmulationFailureKind::InvalidState, None),
                }
                self.pend(CompletionKind::PortOut {
                    next_rip: io.next_rip,
                });
                RunIoDirection::Out
            }
            IoDirection::In => {
                self.pend(CompletionKind::PortIn {
                    size: io.size,
                    next_rip: io.next_rip,
                });
                RunIoDirection::In
            }
        };
        Step::ToUser(UserExit::Io {
            direction,
            size: io.size,
            port: io.port,
            count: 1,
        })
    }

    /// IN/OUT the in-kernel irqchip claims (PIC, PIT): done here, RIP
    /// moves at once.  String I/O to these ports still goes to userspace.
    fn irqchip_io(&mut self, io: IoExit, size: usize) -> Option<Step> {
        let irqchip = self.irqchip.as_deref_mut()?;
        let mut data = [0u8; 8];
        let claimed = match io.direction {
            IoDirection::Out => {
                let value = self.vcpu.gpr(Gpr::Rax).to_le_bytes();
                irqchip.pio_write(io.port, value.get(..size)?)
            }
            IoDirection::In => irqchip.pio_read(io.port, data.get_mut(..size)?),
        };
        if !claimed {
            return None;
        }
        bump(&mut self.state.counters.irqchip_pio);
        if io.direction == IoDirection::In {
            let mut registers = load_registers(self.vcpu);
            registers.write(gpr_operand(RAX), io.size, u64::from_le_bytes(data));
            store_registers(self.vcpu, &registers);
        }
        self.vcpu.retire_instruction(io.next_rip);
        Some(Step::Resume)
    }

    /// INS/OUTS: the exit does not say where the data is, so the
    /// instruction is decoded (see the module docs).
    fn string_io(&mut self, io: IoExit) -> Step {
        let context = match self.context() {
            Ok(context) => context,
            Err(kind) => return self.emulation_failure(kind, None),
        };
        let registers = load_registers(self.vcpu);
        let fetched = match fetch_instruction(&context, &registers, self.guest) {
            Ok(fetched) => fetched,
            Err(failure) => return self.fetch_failure(failure),
        };
        let instruction = fetched.instruction;
        let expected = match io.direction {
            IoDirection::In => Mnemonic::Ins,
            IoDirection::Out => Mnemonic::Outs,
        };
        let next_rip = registers.next_rip(context.code_size, instruction.length);
        let agrees = instruction.mnemonic == expected
            && instruction.operand_size == io.size
            && next_rip == io.next_rip
            && io
                .address_size
                .map_or(true, |bits| bits / 8 == instruction.address_size);
        if !agrees {
            self.state.reject(Rejection::StaleInstruction);
            return self.emulation_failure(EmulationFailureKind::StringIo, Some(fetched.bytes));
        }
        let address_size = instruction.address_size;
        let rep = instruction.rep.is_some();
        let remaining = if rep {
            truncate(registers.gprs[usize::from(RCX)], address_size)
        } else {
            1
        };
        if remaining == 0 {
            self.vcpu.retire_instruction(next_rip);
            return Step::Resume;
        }
        let (segment, index_register) = match io.direction {
            IoDirection::In => (Segment::Es, RDI),
            IoDirection::Out => (instruction.segment_override.unwrap_or(Segment::Ds), RSI),
        };
        let size = u64::from(io.size);
        let offset = truncate(registers.gprs[usize::from(index_register)], address_size);
        let backwards = registers.rflags & RFLAGS_DF != 0;
        let linear = linear_address(&context, segment, offset);
        let page_offset = linear & (LINEAR_PAGE - 1);
        if page_offset + size > LINEAR_PAGE {
            // An element across a page boundary would need two
            // translations; Linux never does unaligned string I/O.
            return self.emulation_failure(EmulationFailureKind::StringIo, Some(fetched.bytes));
        }
        // Elements that stay in this page, in the offset space, within
        // the segment limit and in the data page.
        let mut count = if backwards {
            (page_offset / size + 1).min(offset / size + 1)
        } else {
            let in_page = (LINEAR_PAGE - page_offset) / size;
            let in_offsets = (address_mask(address_size) - offset).saturating_add(1) / size;
            in_page.min(in_offsets)
        };
        if context.code_size != CodeSize::Bits64 {
            let limit = u64::from(context.segment(segment).limit);
            // Expand-up limits bound the top: forwards every element,
            // backwards only the first.
            let first_end = offset.wrapping_add(size - 1);
            if first_end < offset || first_end > limit {
                return self.inject(if segment == Segment::Ss {
                    Exception::StackFault
                } else {
                    Exception::GeneralProtection
                });
            }
            if !backwards {
                count = count.min((limit - offset + 1) / size);
            }
        }
        count = count.min(remaining).min(PIO_DATA_CAPACITY as u64 / size);
        if count == 0 {
            return self.emulation_failure(EmulationFailureKind::StringIo, Some(fetched.bytes));
        }
        let kind = match io.direction {
            IoDirection::In => AccessKind::Write,
            IoDirection::Out => AccessKind::Read,
        };
        let access = Access::explicit(kind, context.cpl, registers.rflags);
        let translation = match translate(
            self.guest,
            &context.paging,
            &context.features,
            linear,
            access,
        ) {
            Ok(translation) => translation,
            Err(WalkError::PageFault(fault)) => return self.inject(Exception::PageFault(fault)),
            Err(WalkError::NonCanonical { .. }) => {
                return self.inject(if segment == Segment::Ss {
                    Exception::StackFault
                } else {
                    Exception::GeneralProtection
                })
            }
            Err(WalkError::Memory { error, .. }) => {
                return self.emulation_failure(memory_failure(error, false), Some(fetched.bytes))
            }
            Err(WalkError::InvalidPagingState) => {
                return self
                    .emulation_failure(EmulationFailureKind::InvalidState, Some(fetched.bytes))
            }
        };
        match translation.accessed_dirty.apply(self.guest) {
            Ok(true) => {}
            // The entry changed under us: let the guest run it again.
            Ok(false) => return Step::Resume,
            Err(error) => {
                return self.emulation_failure(memory_failure(error, false), Some(fetched.bytes))
            }
        }
        // OUTS reads any RAM, INS writes only writable RAM.
        let ram_ok = matches!(
            (self.map.backing(translation.gpa), io.direction),
            (Backing::Ram { writable: true }, _)
                | (Backing::Ram { writable: false }, IoDirection::Out)
        );
        if !ram_ok {
            return self.emulation_failure(EmulationFailureKind::StringIo, Some(fetched.bytes));
        }
        let pending = StringIo {
            direction: io.direction,
            size: io.size,
            count: count as u32,
            first_gpa: translation.gpa,
            backwards,
            address_size,
            rep,
            next_rip,
        };
        if io.direction == IoDirection::Out {
            for element in 0..pending.count {
                let gpa = element_gpa(&pending, element);
                let start = element as usize * usize::from(io.size);
                let Some(target) = self
                    .state
                    .pio_data
                    .get_mut(start..start + usize::from(io.size))
                else {
                    return self.emulation_failure(EmulationFailureKind::InvalidState, None);
                };
                if let Err(error) = self.guest.read_bytes(gpa, target) {
                    return self
                        .emulation_failure(memory_failure(error, false), Some(fetched.bytes));
                }
            }
        }
        self.pend(CompletionKind::StringIo(pending));
        Step::ToUser(UserExit::Io {
            direction: match io.direction {
                IoDirection::In => RunIoDirection::In,
                IoDirection::Out => RunIoDirection::Out,
            },
            size: io.size,
            port: io.port,
            count: pending.count,
        })
    }

    // -------------------------------------------------------- NPF / MMIO

    fn npf(&mut self, npf: NpfExit, delivering: bool) -> Step {
        if npf.is_reserved_bit_fault() {
            // pvrs never sets reserved bits in its NPT: a broken table.
            return self.unexpected_exit();
        }
        match self.map.backing(npf.gpa) {
            Backing::Ram { writable } if writable || !npf.is_write() => {
                bump(&mut self.state.counters.map_page);
                return Step::MapPage {
                    gpa: npf.gpa,
                    write: npf.is_write(),
                };
            }
            _ => {}
        }
        // MMIO: no slot, or a write to a read-only slot.
        if npf.is_page_table_walk() {
            return self.emulation_failure(EmulationFailureKind::PageTableInMmio, None);
        }
        if npf.is_fetch() {
            return self.emulation_failure(EmulationFailureKind::FetchFromMmio, None);
        }
        if delivering {
            // The access belongs to the event's delivery (IDT, stack), not
            // to the instruction at RIP.
            return self.delivery_error();
        }
        let context = match self.context() {
            Ok(context) => context,
            Err(kind) => return self.emulation_failure(kind, None),
        };
        let mut registers = load_registers(self.vcpu);
        let fetched = match fetch_instruction(&context, &registers, self.guest) {
            Ok(fetched) => fetched,
            Err(failure) => return self.fetch_failure(failure),
        };
        let result = {
            let cell = RefCell::new(&mut *self.guest);
            let mut memory = SharedGuest(&cell);
            let mut bus = Bus {
                guest: SharedGuest(&cell),
                map: self.map,
                irqchip: self.irqchip.as_deref_mut(),
                in_irqchip: 0,
            };
            let result = emulate::begin(
                &context,
                &mut registers,
                &fetched.instruction,
                &mut memory,
                &mut bus,
            );
            let counter = &mut self.state.counters.irqchip_mmio;
            *counter = counter.wrapping_add(bus.in_irqchip);
            result
        };
        self.emulation_result(result, registers, Some(fetched.bytes))
    }

    /// Acts on what the emulator did.
    fn emulation_result(
        &mut self,
        result: Result<emulate::Step, EmulateError>,
        registers: Registers,
        bytes: Option<InstructionBytes>,
    ) -> Step {
        match result {
            Ok(emulate::Step::Done(Outcome::Completed)) => {
                bump(&mut self.state.counters.mmio_in_kernel);
                store_registers(self.vcpu, &registers);
                self.vcpu.retire_instruction(registers.rip);
                Step::Resume
            }
            Ok(emulate::Step::Done(Outcome::Repeat)) => {
                bump(&mut self.state.counters.mmio_in_kernel);
                store_registers(self.vcpu, &registers);
                Step::Resume
            }
            Ok(emulate::Step::Done(Outcome::System { .. })) => {
                // A control-register instruction makes no memory access:
                // the bytes changed since the exit.  Running it again is
                // what the guest asked for.
                self.state.reject(Rejection::StaleInstruction);
                Step::Resume
            }
            Ok(emulate::Step::NeedsMmio { request, pending }) => {
                let counters = &mut self.state.counters;
                bump(if request.write {
                    &mut counters.mmio_writes
                } else {
                    &mut counters.mmio_reads
                });
                self.pend(CompletionKind::Mmio { pending, request });
                Step::ToUser(UserExit::Mmio {
                    gpa: request.gpa,
                    len: request.size,
                    write: request.write.then(|| request.data.to_le_bytes()),
                })
            }
            Err(EmulateError::Exception(exception)) => self.inject(exception),
            Err(EmulateError::Retry) => Step::Resume,
            Err(EmulateError::Memory { error, .. }) => {
                self.emulation_failure(memory_failure(error, false), bytes)
            }
            Err(EmulateError::Unsupported) => {
                self.emulation_failure(EmulationFailureKind::Unsupported, bytes)
            }
            Err(EmulateError::InvalidState) => {
                self.emulation_failure(EmulationFailureKind::InvalidState, bytes)
            }
        }
    }

    // -------------------------------------------------------- completion

    fn complete(
        &mut self,
        kind: CompletionKind,
        run: &[u8],
        pio_page: &[u8],
    ) -> Result<Step, RunPageError> {
        // Read userspace's data before dropping the completion, so a short
        // buffer leaves it pending.
        let step = match kind {
            CompletionKind::PortOut { next_rip } => {
                self.state.completion = None;
                self.vcpu.retire_instruction(next_rip);
                Step::Resume
            }
            CompletionKind::PortIn { size, next_rip } => {
                let data = run::read_pio_in_data(pio_page, size, 1)?;
                let mut value = [0u8; 8];
                if let (Some(target), Some(source)) = (
                    value.get_mut(..usize::from(size)),
                    data.get(..usize::from(size)),
                ) {
                    target.copy_from_slice(source);
                }
                self.state.completion = None;
                let mut registers = load_registers(self.vcpu);
                registers.write(gpr_operand(RAX), size, u64::from_le_bytes(value));
                store_registers(self.vcpu, &registers);
                self.vcpu.retire_instruction(next_rip);
                Step::Resume
            }
            CompletionKind::StringIo(string) => {
                let data = match string.direction {
                    IoDirection::In => {
                        Some(run::read_pio_in_data(pio_page, string.size, string.count)?)
                    }
                    IoDirection::Out => None,
                };
                self.state.completion = None;
                self.complete_string_io(&string, data)
            }
            CompletionKind::Mmio { pending, request } => {
                let value = if request.write {
                    0
                } else {
                    u64::from_le_bytes(run::read_mmio_completion(run, u32::from(request.size))?)
                };
                self.state.completion = None;
                let mut registers = load_registers(self.vcpu);
                let result = {
                    let cell = RefCell::new(&mut *self.guest);
                    let mut bus = Bus {
                        guest: SharedGuest(&cell),
                        map: self.map,
                        irqchip: self.irqchip.as_deref_mut(),
                        in_irqchip: 0,
                    };
                    emulate::complete(&pending, &mut registers, &mut bus, value)
                };
                self.emulation_result(result, registers, None)
            }
        };
        Ok(step)
    }

    fn complete_string_io(&mut self, string: &StringIo, data: Option<&[u8]>) -> Step {
        let size = usize::from(string.size);
        let mut registers = load_registers(self.vcpu);
        // Userspace may have changed RCX during the exit (api.rst does not
        // forbid it; KVM's emulator re-reads it): complete no more
        // elements than it now asks for, so that a smaller count cannot
        // make RCX wrap and the instruction run on past the buffer
        // (userspace_io_test).
        let count = if string.rep {
            let remaining = registers.read(gpr_operand(RCX), string.address_size);
            u32::try_from(remaining).map_or(string.count, |rcx| rcx.min(string.count))
        } else {
            string.count
        };
        if let Some(data) = data {
            for element in 0..count {
                let start = element as usize * size;
                let Some(bytes) = data.get(start..start + size) else {
                    return self.emulation_failure(EmulationFailureKind::InvalidState, None);
                };
                if let Err(error) = self.guest.write_bytes(element_gpa(string, element), bytes) {
                    return self.emulation_failure(memory_failure(error, false), None);
                }
            }
        }
        let moved = u64::from(count).wrapping_mul(u64::from(string.size));
        let step = if string.backwards {
            moved.wrapping_neg()
        } else {
            moved
        };
        let index = match string.direction {
            IoDirection::In => RDI,
            IoDirection::Out => RSI,
        };
        let advance = |registers: &mut Registers, index: u8, by: u64| {
            let register = gpr_operand(index);
            let value = registers
                .read(register, string.address_size)
                .wrapping_add(by);
            registers.write(register, string.address_size, value);
        };
        advance(&mut registers, index, step);
        let mut done = true;
        if string.rep {
            advance(&mut registers, RCX, u64::from(count).wrapping_neg());
            done = registers.read(gpr_operand(RCX), string.address_size) == 0;
        }
        store_registers(self.vcpu, &registers);
        if done {
            self.vcpu.retire_instruction(string.next_rip);
        }
        // Otherwise RIP stays: the guest runs the instruction again for
        // the next elements, as an interrupted REP INS/OUTS resumes.
        Step::Resume
    }
}

/// The GPA of element `element` of a string I/O exit.
fn element_gpa(string: &StringIo, element: u32) -> u64 {
    let distance = u64::from(element).wrapping_mul(u64::from(string.size));
    if string.backwards {
        string.first_gpa.wrapping_sub(distance)
    } else {
        string.first_gpa.wrapping_add(distance)
    }
}

#[cfg(test)]
pub(crate) mod tests;
