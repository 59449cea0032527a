//! The vendor interface: what generic exit handling needs from SVM (now)
//! or VMX (later), and the vendor-neutral types it speaks in.
//!
//! A backend's exit loop is: run the guest, [`VendorVcpu::exit_info`] to
//! learn why it stopped (already decoded into [`Exit`]), re-inject the
//! event whose delivery the exit interrupted, handle the exit with the
//! register, segment and control-register accessors, [`skip_instruction`]
//! when an intercepted instruction was emulated, then queue the next
//! event ([`inject_event`]) or open a window to wait for the guest to
//! accept one.  Everything here is per vCPU and touches only the vendor's
//! control structure (the VMCB, or later the VMCS) and the registers the
//! world switch saves beside it; it never reaches hardware.
//!
//! References: AMD APM vol. 2 15.7 (exit information), 15.20 (event
//! injection), 15.21 (interrupt control); Intel SDM vol. 3 ch. 27 for the
//! VMX side later.
//!
//! [`skip_instruction`]: VendorVcpu::skip_instruction
//! [`inject_event`]: VendorVcpu::inject_event

/// The sixteen general-purpose registers, in x86 encoding order (the
/// ModRM/REX register number is the discriminant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gpr {
    /// Accumulator: CPUID leaf, low half of RDMSR/WRMSR data, IN/OUT data;
    /// SVM keeps it in the VMCB save area.
    Rax = 0,
    /// Counter: CPUID subleaf, MSR number, REP count.
    Rcx = 1,
    /// High half of RDMSR/WRMSR and RDTSC results; the port of IN/OUT DX.
    Rdx = 2,
    /// Base register (CPUID output, otherwise general).
    Rbx = 3,
    /// Stack pointer; SVM keeps it in the VMCB save area.
    Rsp = 4,
    /// Frame pointer.
    Rbp = 5,
    /// Source index of string instructions (OUTS, MOVS).
    Rsi = 6,
    /// Destination index of string instructions (INS, MOVS, STOS).
    Rdi = 7,
    /// First REX-extended register (64-bit mode only).
    R8 = 8,
    /// REX-extended register 9.
    R9 = 9,
    /// REX-extended register 10.
    R10 = 10,
    /// REX-extended register 11.
    R11 = 11,
    /// REX-extended register 12.
    R12 = 12,
    /// REX-extended register 13.
    R13 = 13,
    /// REX-extended register 14.
    R14 = 14,
    /// REX-extended register 15.
    R15 = 15,
}

impl Gpr {
    /// All registers in encoding order.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding `number` (0-15), if any.
    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.get(usize::from(number)).copied()
    }
}

/// Segment and descriptor-table registers: every register with hidden
/// descriptor state that the vCPU saves and restores.
///
/// Not the same set as [`x86::decode::Segment`](crate::x86::decode::Segment),
/// the six registers an instruction operand can name: LDTR, TR, GDTR and
/// IDTR are never operands' segments, so the decoder's type leaves them
/// out and converts into this one with `From`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentRegister {
    /// Extra data segment; the destination of string stores (INS, STOS).
    Es,
    /// Code segment; its DPL is the CPL and its L/D bits the code size.
    Cs,
    /// Stack segment.
    Ss,
    /// Default data segment.
    Ds,
    /// FS; in 64-bit mode only its base (MSR FS_BASE) matters.
    Fs,
    /// GS; in 64-bit mode only its base (MSR GS_BASE) matters, swapped
    /// with KernelGSbase by SWAPGS.
    Gs,
    /// The local descriptor table register (a system segment).
    Ldtr,
    /// The task register (a system segment: the TSS).
    Tr,
    /// Only `base` and `limit` are meaningful.
    Gdtr,
    /// Only `base` and `limit` are meaningful.
    Idtr,
}

impl From<crate::x86::decode::Segment> for SegmentRegister {
    fn from(segment: crate::x86::decode::Segment) -> Self {
        use crate::x86::decode::Segment as Operand;
        match segment {
            Operand::Es => Self::Es,
            Operand::Cs => Self::Cs,
            Operand::Ss => Self::Ss,
            Operand::Ds => Self::Ds,
            Operand::Fs => Self::Fs,
            Operand::Gs => Self::Gs,
        }
    }
}

/// A segment register's hidden state.
///
/// `attributes` uses the compressed 12-bit layout of the VMCB (descriptor
/// bits 40-47 in bits 0-7, bits 52-55 in bits 8-11: type, S, DPL, P, AVL,
/// L, D/B, G); VMX's access-rights format converts to it by moving bits
/// 12-15 down to 8-11.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The visible selector (index, TI, RPL); 0 for GDTR/IDTR.
    pub selector: u16,
    /// Descriptor attributes in the 12-bit VMCB layout described above.
    pub attributes: u16,
    /// The expanded limit in bytes (already scaled by G), inclusive.
    pub limit: u32,
    /// The linear base address.
    pub base: u64,
}

/// MSRs whose guest value lives in the vendor's control structure (SVM:
/// the VMCB's save area, loaded by VMRUN/VMLOAD; VMX: guest-state fields
/// or MSR load lists), so that generic MSR emulation can reach them.
/// FS and GS bases are segment state ([`SegmentRegister`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContextMsr {
    /// STAR (0xc000_0081): SYSCALL/SYSRET selectors and legacy target.
    Star,
    /// LSTAR (0xc000_0082): the 64-bit SYSCALL target RIP.
    Lstar,
    /// CSTAR (0xc000_0083): the compatibility-mode SYSCALL target RIP.
    Cstar,
    /// SFMASK (0xc000_0084): RFLAGS bits SYSCALL clears.
    Sfmask,
    /// KernelGSbase (0xc000_0102): the GS base SWAPGS exchanges.
    KernelGsBase,
    /// SYSENTER_CS (0x174): the SYSENTER code selector.
    SysenterCs,
    /// SYSENTER_ESP (0x175): the SYSENTER stack pointer.
    SysenterEsp,
    /// SYSENTER_EIP (0x176): the SYSENTER target.
    SysenterEip,
    /// The guest PAT that nested paging combines with the host's.
    Pat,
}

/// How an event is delivered (APM 15.20 "TYPE").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A maskable external interrupt (from the PIC, IOAPIC or LAPIC).
    ExternalInterrupt,
    /// The non-maskable interrupt; the vector is always 2.
    Nmi,
    /// A processor exception (fault, trap or abort), vectors 0-30 except 2.
    Exception,
    /// An `INTn` instruction's interrupt.
    SoftwareInterrupt,
}

/// An event to deliver through the guest's IDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// How it is delivered (and so what the vector may be).
    pub kind: EventKind,
    /// The IDT vector (0-255).
    pub vector: u8,
    /// Pushed on the guest's stack; only exceptions that define one
    /// ([`exception_has_error_code`]) may carry it.
    pub error_code: Option<u32>,
}

/// Why an event cannot be injected as it is.  VMRUN would refuse each of
/// these with VMEXIT_INVALID (or, for the error-code cases, deliver
/// something the guest's handler does not expect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// The type field holds a reserved value (1, 5, 6 or 7).
    ReservedType(u8),
    /// Reserved bits 12-30 of the event word are set.
    ReservedBits(u32),
    /// An exception with vector 2 (that is the NMI) or above 30 (reserved
    /// or not an exception at all; QEMU rejects 31 too).
    InvalidExceptionVector(u8),
    /// An NMI whose vector is not 2.
    InvalidNmiVector(u8),
    /// An error code on an event that has none: not an exception, or an
    /// exception vector that pushes no error code.
    UnexpectedErrorCode {
        /// The offending event's kind.
        kind: EventKind,
        /// The offending event's vector.
        vector: u8,
    },
    /// An event is already queued for the next entry.
    InjectionPending,
}

/// The exception vectors that push an error code in protected mode (SDM
/// vol. 3 table 6-1, APM 8.2): #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP,
/// #VC, #SX.  In real mode nothing is pushed, so an injection of these
/// may omit it.
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The NMI vector.
pub const NMI_VECTOR: u8 = 2;
/// The highest vector an exception may have; 31 is reserved, and QEMU's
/// TCG SVM fails VMRUN for an injected exception with vector 31.
pub const MAX_EXCEPTION_VECTOR: u8 = 30;

impl Event {
    /// An exception, with an error code where the vector defines one.
    pub fn exception(vector: u8, error_code: Option<u32>) -> Self {
        Self {
            kind: EventKind::Exception,
            vector,
            error_code,
        }
    }

    /// A maskable interrupt.
    pub fn interrupt(vector: u8) -> Self {
        Self {
            kind: EventKind::ExternalInterrupt,
            vector,
            error_code: None,
        }
    }

    /// The NMI.
    pub fn nmi() -> Self {
        Self {
            kind: EventKind::Nmi,
            vector: NMI_VECTOR,
            error_code: None,
        }
    }

    /// The architectural checks every vendor applies before injecting.
    pub fn validate(&self) -> Result<(), EventError> {
        match self.kind {
            EventKind::Exception
                if self.vector == NMI_VECTOR || self.vector > MAX_EXCEPTION_VECTOR =>
            {
                return Err(EventError::InvalidExceptionVector(self.vector));
            }
            EventKind::Nmi if self.vector != NMI_VECTOR => {
                return Err(EventError::InvalidNmiVector(self.vector));
            }
            _ => {}
        }
        let error_code_allowed =
            self.kind == EventKind::Exception && exception_has_error_code(self.vector);
        if self.error_code.is_some() && !error_code_allowed {
            return Err(EventError::UnexpectedErrorCode {
                kind: self.kind,
                vector: self.vector,
            });
        }
        Ok(())
    }
}

/// What to do with an event whose delivery an exit interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reinjection {
    /// Inject it again at the next entry.
    Inject(Event),
    /// Do not inject: RIP still points at the instruction that raised it
    /// (INTn, INT3, INTO), and running that instruction again raises it
    /// again with the right return address.  Re-injecting would need the
    /// instruction's length, which nothing provides without NRIPS.
    Reexecute,
}

impl Reinjection {
    /// The rule for an interrupted event (KVM `svm_complete_interrupts`):
    /// software interrupts and the software exceptions #BP (3) and #OF
    /// (4) are re-executed, everything else is injected again.
    pub fn for_interrupted(event: Event) -> Self {
        match event.kind {
            EventKind::SoftwareInterrupt => Self::Reexecute,
            EventKind::Exception if matches!(event.vector, 3 | 4) => Self::Reexecute,
            _ => Self::Inject(event),
        }
    }
}

/// Direction of a port I/O access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDirection {
    /// IN/INS: the guest reads the port.
    In,
    /// OUT/OUTS: the guest writes the port.
    Out,
}

/// An intercepted IN/OUT/INS/OUTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    /// The I/O port number.
    pub port: u16,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Whether the guest reads (IN) or writes (OUT) the port.
    pub direction: IoDirection,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// Address size in bits (16, 32, 64) of a string instruction, when the
    /// hardware reports it; QEMU TCG 7.2 leaves it out, so string I/O must
    /// then decode the instruction.
    pub address_size: Option<u8>,
    /// The RIP of the next instruction (SVM always provides it for IOIO,
    /// even without NRIPS).
    pub next_rip: u64,
}

/// A nested page fault: the guest touched a GPA the nested page tables
/// do not map (or map with fewer rights).  The error bits follow the #PF
/// error code (APM 15.25.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpfExit {
    /// The faulting guest physical address (SVM EXITINFO2).
    pub gpa: u64,
    /// The fault's error bits (SVM EXITINFO1): the associated constants.
    pub error_code: u64,
}

impl NpfExit {
    /// The nested entry was present (a rights violation, not a miss).
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access was at CPL 3 (nested walks count as user accesses).
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in a nested entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
    /// The fault happened translating the final guest physical address.
    pub const FINAL_TRANSLATION: u64 = 1 << 32;
    /// The fault happened on a guest page-table access during the
    /// guest's own walk.
    pub const PAGE_TABLE_WALK: u64 = 1 << 33;

    /// [`Self::PRESENT`]: a rights violation on a mapped page, not a miss.
    pub fn is_present(&self) -> bool {
        self.error_code & Self::PRESENT != 0
    }
    /// [`Self::WRITE`]: the access was a write.
    pub fn is_write(&self) -> bool {
        self.error_code & Self::WRITE != 0
    }
    /// [`Self::FETCH`]: the access was an instruction fetch.
    pub fn is_fetch(&self) -> bool {
        self.error_code & Self::FETCH != 0
    }
    /// [`Self::RESERVED`]: a nested entry had a reserved bit set (a host
    /// page-table bug, or an MMIO marker where one is used).
    pub fn is_reserved_bit_fault(&self) -> bool {
        self.error_code & Self::RESERVED != 0
    }
    /// [`Self::PAGE_TABLE_WALK`]: the fault hit the guest's own page
    /// tables during its walk, not the final data access.
    pub fn is_page_table_walk(&self) -> bool {
        self.error_code & Self::PAGE_TABLE_WALK != 0
    }
}

/// Why the guest stopped, vendor-neutrally.  Only what pvrs intercepts or
/// must recognise gets its own variant; the SVM decoding lives in
/// `svm::exit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID (leaf in RAX, subleaf in RCX).
    Cpuid,
    /// RDMSR (`write == false`) or WRMSR; the MSR number is in RCX.
    Msr {
        /// WRMSR (data in EDX:EAX) rather than RDMSR.
        write: bool,
    },
    /// Port I/O (IN, OUT, INS, OUTS).
    Io(IoExit),
    /// A nested page fault: MMIO, or a page not (yet) mapped.
    Npf(NpfExit),
    /// HLT: the vCPU waits for an interrupt.
    Hlt,
    /// The hypercall instruction (VMMCALL; VMCALL on VMX).
    Hypercall,
    /// A physical interrupt arrived; the host handles it after the exit.
    ExternalInterrupt,
    /// A physical NMI arrived.
    Nmi,
    /// A physical SMI arrived (the host's SMM handles it).
    Smi,
    /// An INIT signal arrived while INIT is intercepted.
    Init,
    /// The guest can now take a maskable interrupt (the window requested
    /// with [`VendorVcpu::set_interrupt_window`] opened).
    InterruptWindow,
    /// The guest executed IRET: with an NMI window requested, NMIs are
    /// unblocked once it retires.
    Iret,
    /// The guest triple-faulted (or otherwise shut down).
    Shutdown,
    /// An intercepted exception.  `error_code` is only meaningful for
    /// vectors that have one; `fault_address` is CR2 for #PF.
    Exception {
        /// The exception vector (0-31).
        vector: u8,
        /// The error code pushed, where the vector defines one.
        error_code: u32,
        /// CR2 for a #PF; otherwise 0.
        fault_address: u64,
    },
    /// MOV to/from CRn (CLTS/LMSW included).  `gpr` is the register
    /// operand when the hardware decoded it (SVM DecodeAssists, which
    /// QEMU TCG lacks).
    ControlRegister {
        /// The control register number (0-15).
        cr: u8,
        /// MOV to CRn (and CLTS/LMSW) rather than MOV from CRn.
        write: bool,
        /// The general-purpose register operand, if decoded.
        gpr: Option<Gpr>,
    },
    /// MOV to/from DRn.
    DebugRegister {
        /// The debug register number (0-7; 4 and 5 alias 6 and 7).
        dr: u8,
        /// MOV to DRn rather than MOV from DRn.
        write: bool,
    },
    /// INVLPG; the linear address when the hardware provides it.
    Invlpg {
        /// The linear address to invalidate (SVM DecodeAssists EXITINFO1).
        address: Option<u64>,
    },
    /// RDTSC: the guest reads the (offset) TSC.
    Rdtsc,
    /// RDTSCP: RDTSC plus TSC_AUX in ECX.
    Rdtscp,
    /// RDPMC: read a performance counter (ECX selects it).
    Rdpmc,
    /// PAUSE while intercepted (with a pause filter: after its count ran
    /// out), a sign that the guest spins on a lock.
    Pause,
    /// INVD: invalidate caches without writing back.
    Invd,
    /// WBINVD: write back and invalidate caches.
    Wbinvd,
    /// MONITOR: arm address monitoring (RAX = address).
    Monitor,
    /// MWAIT: wait for a write to the monitored range or an interrupt.
    Mwait,
    /// XSETBV: write the extended control register XCR\[ECX\] (XCR0).
    Xsetbv,
    /// A hardware task switch (CALL/JMP/IRET through a TSS, or a task
    /// gate); only legacy 32-bit guests use them.
    TaskSwitch,
    /// A virtualization instruction the guest may not use (SVM: VMRUN,
    /// VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA); the usual answer is
    /// #UD, since pvrs does not offer nested virtualization.
    VirtualizationInstruction,
    /// Entry failed: the control structure or guest state was invalid.
    Invalid,
    /// A known exit that pvrs never requests (seeing one is a host bug).
    Unexpected(u64),
    /// An exit code the headers do not define, or one whose exit
    /// information is malformed.
    Unknown(u64),
}

impl Exit {
    /// The length of the intercepted instruction when it has only one
    /// encoding in practice (APM vol. 3 opcode tables): what a vCPU adds
    /// to RIP when the hardware gives no next RIP (SVM without NRIPS).
    /// A redundant prefix would make the real instruction longer; Linux
    /// never emits one on these.
    pub fn fixed_instruction_length(&self) -> Option<u8> {
        match self {
            Exit::Hlt => Some(1),
            Exit::Cpuid
            | Exit::Msr { .. }
            | Exit::Rdtsc
            | Exit::Rdpmc
            | Exit::Pause
            | Exit::Invd
            | Exit::Wbinvd => Some(2),
            Exit::Hypercall | Exit::Rdtscp | Exit::Monitor | Exit::Mwait | Exit::Xsetbv => Some(3),
            _ => None,
        }
    }
}

/// An exit together with the event it interrupted, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// Why the guest stopped.
    pub exit: Exit,
    /// The event being delivered when the exit happened (SVM EXITINTINFO):
    /// it was not delivered and must be dealt with first
    /// ([`Reinjection::for_interrupted`]).  `Err` when the vendor reported
    /// something that cannot be injected again.
    pub interrupted_event: Result<Option<Event>, EventError>,
}

/// The raw exit information of the last exit, as KVM's `get_exit_info`
/// reports it to userspace in KVM_EXIT_INTERNAL_ERROR and
/// KVM_EXIT_FAIL_ENTRY (SVM: EXITCODE, EXITINFO1, EXITINFO2, EXITINTINFO
/// and, when EXITINTINFO has one, its error code; APM vol. 2 15.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardwareExitInfo {
    /// The whole exit code (SVM: both 32-bit halves).
    pub reason: u64,
    /// EXITINFO1: the exit's first information word.
    pub info1: u64,
    /// EXITINFO2: the exit's second information word.
    pub info2: u64,
    /// EXITINTINFO: the event whose delivery the exit interrupted (EVENTINJ format).
    pub interrupt_info: u32,
    /// 0 unless `interrupt_info` is valid and carries an error code.
    pub interrupt_error_code: u32,
}

/// Why [`VendorVcpu::skip_instruction`] could not advance RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipError {
    /// The exit has no known instruction length and the hardware gave no
    /// next RIP: the instruction must be decoded.
    LengthUnknown,
}

/// Why an MSR's interception cannot be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrInterceptError {
    /// The MSR lies outside the permission map's ranges: it is always
    /// intercepted.
    NotMappable(u32),
}

/// The vendor operations generic exit handling uses.  SVM implements it
/// on `svm::SvmVcpu`; VMX will implement it on its vCPU.
pub trait VendorVcpu {
    /// Reads a general-purpose register, wherever the vendor keeps it.
    fn gpr(&self, register: Gpr) -> u64;
    /// Writes a general-purpose register.
    fn set_gpr(&mut self, register: Gpr, value: u64);
    /// The guest's instruction pointer (at the exit: the intercepted
    /// instruction, or the next one for traps).
    fn rip(&self) -> u64;
    /// Sets the instruction pointer the guest resumes at.
    fn set_rip(&mut self, rip: u64);
    /// The guest's RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS (the caller keeps reserved bit 1 set).
    fn set_rflags(&mut self, rflags: u64);

    /// CR0 as the guest sees it (PE, PG, WP, CD/NW...).
    fn cr0(&self) -> u64;
    /// Sets the guest's CR0; the caller validated it.
    fn set_cr0(&mut self, value: u64);
    /// CR2, the guest's last page-fault linear address.
    fn cr2(&self) -> u64;
    /// Sets CR2 (before injecting a #PF).
    fn set_cr2(&mut self, value: u64);
    /// CR3, the guest's page-table root (a guest physical address).
    fn cr3(&self) -> u64;
    /// Sets the guest's CR3.
    fn set_cr3(&mut self, value: u64);
    /// CR4 as the guest sees it (PAE, PSE, PGE, OSXSAVE...).
    fn cr4(&self) -> u64;
    /// Sets the guest's CR4; the caller validated it.
    fn set_cr4(&mut self, value: u64);
    /// The guest-visible EFER (SVM hides the SVME bit the hardware needs).
    fn efer(&self) -> u64;
    /// Sets the guest-visible EFER; the caller validated it
    /// (`msr::validate_efer_write`).
    fn set_efer(&mut self, value: u64);

    /// A segment or descriptor-table register's hidden state.
    fn segment(&self, register: SegmentRegister) -> Segment;
    /// Loads a segment or descriptor-table register's hidden state as is
    /// (no descriptor-table read, no checks).
    fn set_segment(&mut self, register: SegmentRegister, segment: Segment);
    /// The current privilege level.
    fn cpl(&self) -> u8;

    /// A guest MSR kept in the control structure.
    fn context_msr(&self, msr: ContextMsr) -> u64;
    /// Sets a guest MSR kept in the control structure.
    fn set_context_msr(&mut self, msr: ContextMsr, value: u64);
    /// The value added to the host TSC for the guest's RDTSC(P).
    fn set_tsc_offset(&mut self, offset: u64);

    /// The guest's task priority as CR8 reads it (bits 3:0).  SVM keeps
    /// it in V_TPR, which a guest MOV to CR8 changes without an exit
    /// under V_INTR_MASKING; an in-kernel LAPIC syncs its TPR with it.
    fn cr8(&self) -> u64;
    /// Sets the task priority CR8 reads (bits 3:0 are kept).
    fn set_cr8(&mut self, cr8: u64);

    /// Whether the guest is in an interrupt shadow (after STI or MOV SS):
    /// no maskable interrupt or NMI may be injected.
    fn interrupt_shadow(&self) -> bool;

    /// The last exit, decoded.
    fn exit_info(&self) -> ExitInfo;
    /// Moves RIP past the instruction that caused `exit` (which must be
    /// the last exit) and ends any interrupt shadow, as retiring the
    /// instruction would.
    fn skip_instruction(&mut self, exit: &Exit) -> Result<(), SkipError>;

    /// The last exit's raw exit information, for reports to userspace.
    fn hardware_exit_info(&self) -> HardwareExitInfo;
    /// Sets RIP to `next_rip` after software emulated the instruction at
    /// RIP (MMIO, string I/O, or an intercept whose bytes were decoded),
    /// and ends any interrupt shadow, as retiring the instruction would.
    fn retire_instruction(&mut self, next_rip: u64);

    /// Queues `event` for delivery at the next entry, after validating it.
    fn inject_event(&mut self, event: Event) -> Result<(), EventError>;
    /// Whether an event is queued for the next entry.
    fn injection_pending(&self) -> bool;
    /// Asks for an [`Exit::InterruptWindow`] as soon as the guest can take
    /// a maskable interrupt (`true`), or stops asking (`false`).
    fn set_interrupt_window(&mut self, open: bool);
    /// Asks for an exit when NMIs are unblocked again (the guest's IRET
    /// after an injected NMI), or stops asking.
    fn set_nmi_window(&mut self, open: bool);

    /// Intercepts (or passes through) guest reads and writes of `msr`.
    fn set_msr_intercept(
        &mut self,
        msr: u32,
        intercept_read: bool,
        intercept_write: bool,
    ) -> Result<(), MsrInterceptError>;
    /// Flushes this guest's TLB entries before the next entry.
    fn request_tlb_flush(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_numbers_are_the_encoding() {
        for (number, register) in Gpr::ALL.iter().enumerate() {
            assert_eq!(*register as usize, number);
            assert_eq!(Gpr::from_number(number as u8), Some(*register));
        }
        assert_eq!(Gpr::from_number(16), None);
    }

    #[test]
    fn operand_segments_convert() {
        use crate::x86::decode::Segment as Operand;
        let pairs = [
            (Operand::Es, SegmentRegister::Es),
            (Operand::Cs, SegmentRegister::Cs),
            (Operand::Ss, SegmentRegister::Ss),
            (Operand::Ds, SegmentRegister::Ds),
            (Operand::Fs, SegmentRegister::Fs),
            (Operand::Gs, SegmentRegister::Gs),
        ];
        for (operand, register) in pairs {
            assert_eq!(SegmentRegister::from(operand), register);
        }
    }

    #[test]
    fn exceptions_with_error_codes() {
        let with: std::vec::Vec<u8> = (0..32).filter(|&v| exception_has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }

    #[test]
    fn validation_rejects_what_vmrun_would() {
        assert_eq!(
            Event::exception(2, None).validate(),
            Err(EventError::InvalidExceptionVector(2))
        );
        assert_eq!(
            Event::exception(31, None).validate(),
            Err(EventError::InvalidExceptionVector(31))
        );
        assert_eq!(
            Event::exception(32, None).validate(),
            Err(EventError::InvalidExceptionVector(32))
        );
        let mut nmi = Event::nmi();
        assert_eq!(nmi.validate(), Ok(()));
        nmi.vector = 3;
        assert_eq!(nmi.validate(), Err(EventError::InvalidNmiVector(3)));
        assert_eq!(Event::exception(14, Some(2)).validate(), Ok(()));
        // Real mode: the error code may be left out.
        assert_eq!(Event::exception(13, None).validate(), Ok(()));
        assert!(matches!(
            Event::exception(6, Some(0)).validate(),
            Err(EventError::UnexpectedErrorCode { vector: 6, .. })
        ));
        let mut irq = Event::interrupt(0x30);
        assert_eq!(irq.validate(), Ok(()));
        irq.error_code = Some(0);
        assert!(irq.validate().is_err());
        // Real-mode BIOS timer: IRQ0 on vector 8 is a legal interrupt.
        assert_eq!(Event::interrupt(8).validate(), Ok(()));
    }

    #[test]
    fn soft_events_are_reexecuted() {
        let int80 = Event {
            kind: EventKind::SoftwareInterrupt,
            vector: 0x80,
            error_code: None,
        };
        assert_eq!(Reinjection::for_interrupted(int80), Reinjection::Reexecute);
        assert_eq!(
            Reinjection::for_interrupted(Event::exception(3, None)),
            Reinjection::Reexecute
        );
        assert_eq!(
            Reinjection::for_interrupted(Event::exception(4, None)),
            Reinjection::Reexecute
        );
        let pf = Event::exception(14, Some(0));
        assert_eq!(Reinjection::for_interrupted(pf), Reinjection::Inject(pf));
        let irq = Event::interrupt(0xec);
        assert_eq!(Reinjection::for_interrupted(irq), Reinjection::Inject(irq));
    }

    #[test]
    fn fixed_lengths() {
        assert_eq!(Exit::Hlt.fixed_instruction_length(), Some(1));
        assert_eq!(Exit::Cpuid.fixed_instruction_length(), Some(2));
        assert_eq!(
            Exit::Msr { write: true }.fixed_instruction_length(),
            Some(2)
        );
        assert_eq!(Exit::Hypercall.fixed_instruction_length(), Some(3));
        assert_eq!(Exit::Xsetbv.fixed_instruction_length(), Some(3));
        assert_eq!(Exit::Invalid.fixed_instruction_length(), None);
        assert_eq!(
            Exit::Npf(NpfExit {
                gpa: 0,
                error_code: 0
            })
            .fixed_instruction_length(),
            None
        );
    }

    #[test]
    fn npf_bits() {
        let npf = NpfExit {
            gpa: 0xfee0_0000,
            error_code: NpfExit::WRITE | NpfExit::USER | NpfExit::FINAL_TRANSLATION,
        };
        assert!(npf.is_write());
        assert!(!npf.is_present());
        assert!(!npf.is_fetch());
        assert!(!npf.is_page_table_walk());
        assert!(!npf.is_reserved_bit_fault());
    }
}
