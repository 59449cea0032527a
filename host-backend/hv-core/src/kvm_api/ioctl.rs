//! KVM's ioctl numbers, which file answers each, and how its argument is
//! passed; [`classify`] turns a command number into a [`Request`].
//!
//! Numbers are built like `include/uapi/asm-generic/ioctl.h` builds them
//! (x86 uses the generic encoding): direction in bits 30-31, argument size
//! in bits 16-29, type in bits 8-15, number in bits 0-7.  The size comes
//! from the Rust struct, so a layout mistake would show as a number
//! mismatch in `tests/kvm_uapi_header.rs` and in the rust-vmm cross-check.
//!
//! Which file answers what, and what an unanswered command returns, follow
//! `kvm_dev_ioctl`, `kvm_vm_ioctl` and `kvm_vcpu_ioctl` of
//! `virt/kvm/kvm_main.c` and their x86 defaults in `arch/x86/kvm/x86.c`
//! (api.rst section 2 describes the three kinds of file).

#![allow(non_snake_case)]

use super::constants::KVMIO;
use super::errno::{Errno, Error};
use super::layout::*;

/// `_IOC_NONE`: no argument is transferred.
pub const IOC_NONE: u32 = 0;
/// `_IOC_WRITE`: userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: the kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// `_IOC(dir, type, nr, size)`.  Meant for constants: a size that does
/// not fit the 14-bit field stops the build (as `_IOC_TYPECHECK` does).
pub const fn _IOC(direction: u32, ioctl_type: u32, number: u32, size: usize) -> u32 {
    assert!(
        size < 1 << IOC_SIZEBITS,
        "ioctl argument too large to encode"
    );
    assert!(ioctl_type < 1 << IOC_TYPEBITS && number < 1 << IOC_NRBITS);
    (direction << IOC_DIRSHIFT)
        | (ioctl_type << IOC_TYPESHIFT)
        | (number << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IO(type, nr)`: no argument struct.
pub const fn _IO(ioctl_type: u32, number: u32) -> u32 {
    _IOC(IOC_NONE, ioctl_type, number, 0)
}

/// `_IOR(type, nr, T)`.
pub const fn _IOR<T>(ioctl_type: u32, number: u32) -> u32 {
    _IOC(IOC_READ, ioctl_type, number, core::mem::size_of::<T>())
}

/// `_IOW(type, nr, T)`.
pub const fn _IOW<T>(ioctl_type: u32, number: u32) -> u32 {
    _IOC(IOC_WRITE, ioctl_type, number, core::mem::size_of::<T>())
}

/// `_IOWR(type, nr, T)`.
pub const fn _IOWR<T>(ioctl_type: u32, number: u32) -> u32 {
    _IOC(
        IOC_READ | IOC_WRITE,
        ioctl_type,
        number,
        core::mem::size_of::<T>(),
    )
}

/// `_IOC_DIR(cmd)`.
pub const fn _IOC_DIR(command: u32) -> u32 {
    command >> IOC_DIRSHIFT
}

/// `_IOC_TYPE(cmd)`.
pub const fn _IOC_TYPE(command: u32) -> u32 {
    (command >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_NR(cmd)`.
pub const fn _IOC_NR(command: u32) -> u32 {
    (command >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// `_IOC_SIZE(cmd)`.
pub const fn _IOC_SIZE(command: u32) -> u32 {
    (command >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)
}

/// The kind of file an ioctl arrives on (api.rst section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdKind {
    /// `/dev/pvrs` itself (KVM's `/dev/kvm`).
    System,
    /// A file returned by KVM_CREATE_VM.
    Vm,
    /// A file returned by KVM_CREATE_VCPU.
    Vcpu,
}

/// What KVM returns on `fd` for a command it does not answer there, known
/// elsewhere or not at all: `kvm_arch_dev_ioctl` and `kvm_arch_vcpu_ioctl`
/// end in `-EINVAL` on x86, `kvm_arch_vm_ioctl` in `-ENOTTY` (and
/// `kvm_vcpu_ioctl` refuses a foreign ioctl type with `-EINVAL` first).
pub const fn unknown_ioctl_errno(fd: FdKind) -> Errno {
    match fd {
        FdKind::System | FdKind::Vcpu => Errno::EINVAL,
        FdKind::Vm => Errno::ENOTTY,
    }
}

/// How an ioctl's `arg` is used, as KVM's handler uses it.  This is not
/// always what the number's direction bits say (KVM_SET_TSS_ADDR is `_IO`
/// but takes a value; KVM_IRQ_LINE_STATUS is `_IOWR` for its status), so
/// the module copies what this says, not what the bits say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argument {
    /// `arg` must be 0; anything else is EINVAL
    /// ([`Error::ArgumentNotZero`], see [`check_zero_argument`]).
    MustBeZero,
    /// `arg` is ignored.
    Ignored,
    /// `arg` is an integer (a VM type, vCPU id, capability, address, kHz).
    Value,
    /// `arg` points to a struct of this size that KVM reads.
    In(usize),
    /// `arg` points to a struct of this size that KVM writes.
    Out(usize),
    /// `arg` points to a struct of this size that KVM reads and writes back.
    InOut(usize),
    /// `arg` points to a header followed by a counted array; decode the
    /// header first to learn the count (see [`super::decode`]).
    Array(ArrayArgument),
    /// KVM_SET_SIGNAL_MASK: `arg` may be NULL (no mask), or point to a
    /// `kvm_signal_mask` header and `len` bytes of signal set.
    SignalMask,
}

/// The shape of a header-plus-entries argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayArgument {
    /// The size of the header struct holding the count, in bytes.
    pub header_size: usize,
    /// The size of one entry, in bytes.
    pub entry_size: usize,
    /// KVM reads the entries userspace passes (SET_CPUID2, SET_MSRS,
    /// GET_MSRS: the indices).
    pub entries_in: bool,
    /// KVM writes entries and the count back.
    pub entries_out: bool,
}

const fn array<Header, Entry>(entries_in: bool, entries_out: bool) -> Argument {
    Argument::Array(ArrayArgument {
        header_size: core::mem::size_of::<Header>(),
        entry_size: core::mem::size_of::<Entry>(),
        entries_in,
        entries_out,
    })
}

/// The files an ioctl is answered on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdKinds {
    /// Answered on `/dev/pvrs`.
    pub system: bool,
    /// Answered on VM fds.
    pub vm: bool,
    /// Answered on vCPU fds.
    pub vcpu: bool,
}

impl FdKinds {
    /// Whether the ioctl is answered on a file of kind `fd`.
    pub const fn contains(self, fd: FdKind) -> bool {
        match fd {
            FdKind::System => self.system,
            FdKind::Vm => self.vm,
            FdKind::Vcpu => self.vcpu,
        }
    }
}

const SYSTEM: FdKinds = FdKinds {
    system: true,
    vm: false,
    vcpu: false,
};
const VM: FdKinds = FdKinds {
    system: false,
    vm: true,
    vcpu: false,
};
const VCPU: FdKinds = FdKinds {
    system: false,
    vm: false,
    vcpu: true,
};
const SYSTEM_VM: FdKinds = FdKinds {
    system: true,
    vm: true,
    vcpu: false,
};
const SYSTEM_VCPU: FdKinds = FdKinds {
    system: true,
    vm: false,
    vcpu: true,
};
const VM_VCPU: FdKinds = FdKinds {
    system: false,
    vm: true,
    vcpu: true,
};

/// One KVM ioctl: its number, where KVM answers it and how it passes its
/// argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlInfo {
    /// Which ioctl.
    pub ioctl: Ioctl,
    /// The C macro name.
    pub name: &'static str,
    /// The ioctl number (`_IOC` encoding).
    pub command: u32,
    /// The files that answer it.
    pub fds: FdKinds,
    /// How its `arg` is used.
    pub argument: Argument,
}

/// Declares the ioctl number constants, the [`Ioctl`] enum and the
/// [`IOCTLS`] table from one list, so they cannot drift apart.
macro_rules! kvm_ioctls {
    ($(
        $(#[$attr:meta])*
        $variant:ident = $name:ident: $command:expr, $fds:expr, $argument:expr;
    )+) => {
        $(
            $(#[$attr])*
            pub const $name: u32 = $command;
        )+

        /// Every KVM ioctl `/dev/pvrs` knows, by its C name in CamelCase.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Ioctl {
            $(
                $(#[$attr])*
                $variant,
            )+
        }

        /// Every ioctl `/dev/pvrs` knows, with the C name, number, files and
        /// argument; [`classify`] searches it.
        pub const IOCTLS: &[IoctlInfo] = &[$(
            IoctlInfo {
                ioctl: Ioctl::$variant,
                name: stringify!($name),
                command: $name,
                fds: $fds,
                argument: $argument,
            },
        )+];
    };
}

kvm_ioctls! {
    // /dev/kvm (api.rst 4.1-4.5, 4.46, 4.88, 4.118).
    /// Returns [`super::constants::KVM_API_VERSION`].
    GetApiVersion = KVM_GET_API_VERSION: _IO(KVMIO, 0x00), SYSTEM, Argument::MustBeZero;
    /// Returns a VM fd; `arg` is the VM type (0 on x86 by default).
    CreateVm = KVM_CREATE_VM: _IO(KVMIO, 0x01), SYSTEM, Argument::Value;
    /// Lists the MSRs KVM_GET_MSRS / KVM_SET_MSRS save and restore (api.rst 4.3).
    GetMsrIndexList = KVM_GET_MSR_INDEX_LIST: _IOWR::<kvm_msr_list>(KVMIO, 0x02), SYSTEM,
        array::<kvm_msr_list, u32>(false, true);
    /// On /dev/kvm and (with KVM_CAP_CHECK_EXTENSION_VM) on VM fds.
    CheckExtension = KVM_CHECK_EXTENSION: _IO(KVMIO, 0x03), SYSTEM_VM, Argument::Value;
    /// Returns the size of the vCPU mmap ([`super::constants::KVM_VCPU_MMAP_SIZE`]).
    GetVcpuMmapSize = KVM_GET_VCPU_MMAP_SIZE: _IO(KVMIO, 0x04), SYSTEM, Argument::MustBeZero;
    /// Lists the CPUID leaves KVM can offer a guest (api.rst 4.46).
    GetSupportedCpuid = KVM_GET_SUPPORTED_CPUID: _IOWR::<kvm_cpuid2>(KVMIO, 0x05), SYSTEM,
        array::<kvm_cpuid2, kvm_cpuid_entry2>(false, true);
    /// Lists the CPUID bits KVM emulates in software (api.rst 4.88).
    GetEmulatedCpuid = KVM_GET_EMULATED_CPUID: _IOWR::<kvm_cpuid2>(KVMIO, 0x09), SYSTEM,
        array::<kvm_cpuid2, kvm_cpuid_entry2>(false, true);
    /// Lists the feature MSRs readable with KVM_GET_MSRS on /dev/kvm.
    GetMsrFeatureIndexList = KVM_GET_MSR_FEATURE_INDEX_LIST: _IOWR::<kvm_msr_list>(KVMIO, 0x0a),
        SYSTEM, array::<kvm_msr_list, u32>(false, true);

    // VM fd (api.rst 4.7, 4.8, 4.24-4.30, 4.35-4.37, 4.40, 4.52, 4.55,
    // 4.56, 4.59, 4.71, 4.75, 4.116, 4.140).
    /// Returns a vCPU fd; `arg` is the vCPU id (the APIC id on x86).
    CreateVcpu = KVM_CREATE_VCPU: _IO(KVMIO, 0x41), VM, Argument::Value;
    /// Copies out and clears a slot's dirty bitmap (api.rst 4.8).
    GetDirtyLog = KVM_GET_DIRTY_LOG: _IOW::<kvm_dirty_log>(KVMIO, 0x42), VM,
        Argument::In(core::mem::size_of::<kvm_dirty_log>());
    /// Creates, moves, changes or deletes a memory slot (api.rst 4.35).
    SetUserMemoryRegion = KVM_SET_USER_MEMORY_REGION:
        _IOW::<kvm_userspace_memory_region>(KVMIO, 0x46), VM,
        Argument::In(core::mem::size_of::<kvm_userspace_memory_region>());
    /// `arg` is the guest physical address of three pages for the TSS.
    SetTssAddr = KVM_SET_TSS_ADDR: _IO(KVMIO, 0x47), VM, Argument::Value;
    /// Sets the guest physical address of the identity map page (VMX real mode; api.rst 4.40).
    SetIdentityMapAddr = KVM_SET_IDENTITY_MAP_ADDR: _IOW::<u64>(KVMIO, 0x48), VM,
        Argument::In(core::mem::size_of::<u64>());
    /// KVM_SET_USER_MEMORY_REGION with `guest_memfd` fields (api.rst 4.140).
    SetUserMemoryRegion2 = KVM_SET_USER_MEMORY_REGION2:
        _IOW::<kvm_userspace_memory_region2>(KVMIO, 0x49), VM,
        Argument::In(core::mem::size_of::<kvm_userspace_memory_region2>());
    /// Creates the in-kernel PIC, IOAPIC and local APICs (api.rst 4.24).
    CreateIrqchip = KVM_CREATE_IRQCHIP: _IO(KVMIO, 0x60), VM, Argument::Ignored;
    /// Sets the level of a GSI of the in-kernel irqchip (api.rst 4.25).
    IrqLine = KVM_IRQ_LINE: _IOW::<kvm_irq_level>(KVMIO, 0x61), VM,
        Argument::In(core::mem::size_of::<kvm_irq_level>());
    /// Reads one in-kernel interrupt controller's state, chosen by
    /// `chip_id` (api.rst 4.26).
    GetIrqchip = KVM_GET_IRQCHIP: _IOWR::<kvm_irqchip>(KVMIO, 0x62), VM,
        Argument::InOut(core::mem::size_of::<kvm_irqchip>());
    /// Writes one in-kernel interrupt controller's state (api.rst 4.27);
    /// `_IOR` in the header although userspace writes.
    SetIrqchip = KVM_SET_IRQCHIP: _IOR::<kvm_irqchip>(KVMIO, 0x63), VM,
        Argument::In(core::mem::size_of::<kvm_irqchip>());
    /// KVM_IRQ_LINE that also returns whether the interrupt was delivered.
    IrqLineStatus = KVM_IRQ_LINE_STATUS: _IOWR::<kvm_irq_level>(KVMIO, 0x67), VM,
        Argument::InOut(core::mem::size_of::<kvm_irq_level>());
    /// Adds a coalesced MMIO zone (api.rst 4.116).  Same number as KVM_IRQ_LINE_STATUS but `_IOW` of a 16-byte struct:
    /// a different command.
    RegisterCoalescedMmio = KVM_REGISTER_COALESCED_MMIO:
        _IOW::<kvm_coalesced_mmio_zone>(KVMIO, 0x67), VM,
        Argument::In(core::mem::size_of::<kvm_coalesced_mmio_zone>());
    /// Removes a coalesced MMIO zone (api.rst 4.116).
    UnregisterCoalescedMmio = KVM_UNREGISTER_COALESCED_MMIO:
        _IOW::<kvm_coalesced_mmio_zone>(KVMIO, 0x68), VM,
        Argument::In(core::mem::size_of::<kvm_coalesced_mmio_zone>());
    /// Replaces the whole GSI routing table (api.rst 4.52).
    SetGsiRouting = KVM_SET_GSI_ROUTING: _IOW::<kvm_irq_routing>(KVMIO, 0x6a), VM,
        array::<kvm_irq_routing, kvm_irq_routing_entry>(true, false);
    /// Attaches an eventfd to a GSI, or detaches it (api.rst 4.75).
    Irqfd = KVM_IRQFD: _IOW::<kvm_irqfd>(KVMIO, 0x76), VM,
        Argument::In(core::mem::size_of::<kvm_irqfd>());
    /// Creates the in-kernel i8254 PIT (api.rst 4.71).
    CreatePit2 = KVM_CREATE_PIT2: _IOW::<kvm_pit_config>(KVMIO, 0x77), VM,
        Argument::In(core::mem::size_of::<kvm_pit_config>());
    /// Reads the in-kernel PIT's state (api.rst 4.72).
    GetPit2 = KVM_GET_PIT2: _IOR::<crate::irqchip::pit::PitState2>(KVMIO, 0x9f), VM,
        Argument::Out(core::mem::size_of::<crate::irqchip::pit::PitState2>());
    /// Writes the in-kernel PIT's state (api.rst 4.73).
    SetPit2 = KVM_SET_PIT2: _IOW::<crate::irqchip::pit::PitState2>(KVMIO, 0xa0), VM,
        Argument::In(core::mem::size_of::<crate::irqchip::pit::PitState2>());
    /// Attaches an eventfd to writes to a port or MMIO address (api.rst 4.59).
    Ioeventfd = KVM_IOEVENTFD: _IOW::<kvm_ioeventfd>(KVMIO, 0x79), VM,
        Argument::In(core::mem::size_of::<kvm_ioeventfd>());
    /// Sets the kvmclock time of the VM (api.rst 4.30).
    SetClock = KVM_SET_CLOCK: _IOW::<kvm_clock_data>(KVMIO, 0x7b), VM,
        Argument::In(core::mem::size_of::<kvm_clock_data>());
    /// Reads the kvmclock time of the VM (api.rst 4.29).
    GetClock = KVM_GET_CLOCK: _IOR::<kvm_clock_data>(KVMIO, 0x7c), VM,
        Argument::Out(core::mem::size_of::<kvm_clock_data>());
    /// On a vCPU (KVM_CAP_TSC_CONTROL) or, as the default for new vCPUs, on
    /// the VM (KVM_CAP_VM_TSC_CONTROL); `arg` is the frequency in kHz.
    SetTscKhz = KVM_SET_TSC_KHZ: _IO(KVMIO, 0xa2), VM_VCPU, Argument::Value;
    /// Returns the frequency in kHz.
    GetTscKhz = KVM_GET_TSC_KHZ: _IO(KVMIO, 0xa3), VM_VCPU, Argument::Ignored;
    /// Injects one MSI (api.rst 4.71).
    SignalMsi = KVM_SIGNAL_MSI: _IOW::<kvm_msi>(KVMIO, 0xa5), VM,
        Argument::In(core::mem::size_of::<kvm_msi>());

    // vCPU fd (api.rst 4.10-4.23, 4.31-4.34, 4.37-4.39, 4.44, 4.45, 4.57,
    // 4.58, 4.64, 4.70).
    /// Runs the vCPU until an exit userspace must see; `arg` must be 0.
    Run = KVM_RUN: _IO(KVMIO, 0x80), VCPU, Argument::MustBeZero;
    /// Reads the general registers, RIP and RFLAGS (api.rst 4.11).
    GetRegs = KVM_GET_REGS: _IOR::<kvm_regs>(KVMIO, 0x81), VCPU,
        Argument::Out(core::mem::size_of::<kvm_regs>());
    /// Writes the general registers, RIP and RFLAGS (api.rst 4.12).
    SetRegs = KVM_SET_REGS: _IOW::<kvm_regs>(KVMIO, 0x82), VCPU,
        Argument::In(core::mem::size_of::<kvm_regs>());
    /// Reads segments, descriptor tables, control registers, EFER and APIC base (api.rst 4.13).
    GetSregs = KVM_GET_SREGS: _IOR::<kvm_sregs>(KVMIO, 0x83), VCPU,
        Argument::Out(core::mem::size_of::<kvm_sregs>());
    /// Writes what KVM_GET_SREGS reads (api.rst 4.14).
    SetSregs = KVM_SET_SREGS: _IOW::<kvm_sregs>(KVMIO, 0x84), VCPU,
        Argument::In(core::mem::size_of::<kvm_sregs>());
    /// Queues an external interrupt without an in-kernel irqchip (api.rst 4.16).
    Interrupt = KVM_INTERRUPT: _IOW::<kvm_interrupt>(KVMIO, 0x86), VCPU,
        Argument::In(core::mem::size_of::<kvm_interrupt>());
    /// On a vCPU; on /dev/kvm, reads the feature MSRs of
    /// KVM_GET_MSR_FEATURE_INDEX_LIST.
    GetMsrs = KVM_GET_MSRS: _IOWR::<kvm_msrs>(KVMIO, 0x88), SYSTEM_VCPU,
        array::<kvm_msrs, kvm_msr_entry>(true, true);
    /// Writes MSRs; returns how many were written (api.rst 4.19).
    SetMsrs = KVM_SET_MSRS: _IOW::<kvm_msrs>(KVMIO, 0x89), VCPU,
        array::<kvm_msrs, kvm_msr_entry>(true, false);
    /// Sets the signals blocked while the vCPU runs (api.rst 4.21).
    SetSignalMask = KVM_SET_SIGNAL_MASK: _IOW::<kvm_signal_mask>(KVMIO, 0x8b), VCPU,
        Argument::SignalMask;
    /// Reads the x87 and SSE state (api.rst 4.22).
    GetFpu = KVM_GET_FPU: _IOR::<kvm_fpu>(KVMIO, 0x8c), VCPU,
        Argument::Out(core::mem::size_of::<kvm_fpu>());
    /// Writes the x87 and SSE state (api.rst 4.23).
    SetFpu = KVM_SET_FPU: _IOW::<kvm_fpu>(KVMIO, 0x8d), VCPU,
        Argument::In(core::mem::size_of::<kvm_fpu>());
    /// Reads the in-kernel local APIC's registers (api.rst 4.57).
    GetLapic = KVM_GET_LAPIC: _IOR::<kvm_lapic_state>(KVMIO, 0x8e), VCPU,
        Argument::Out(core::mem::size_of::<kvm_lapic_state>());
    /// Writes the in-kernel local APIC's registers (api.rst 4.58).
    SetLapic = KVM_SET_LAPIC: _IOW::<kvm_lapic_state>(KVMIO, 0x8f), VCPU,
        Argument::In(core::mem::size_of::<kvm_lapic_state>());
    /// Sets the CPUID the guest sees (the successor of KVM_SET_CPUID, api.rst 4.20).
    SetCpuid2 = KVM_SET_CPUID2: _IOW::<kvm_cpuid2>(KVMIO, 0x90), VCPU,
        array::<kvm_cpuid2, kvm_cpuid_entry2>(true, false);
    /// Reads back the CPUID set with KVM_SET_CPUID2.
    GetCpuid2 = KVM_GET_CPUID2: _IOWR::<kvm_cpuid2>(KVMIO, 0x91), VCPU,
        array::<kvm_cpuid2, kvm_cpuid_entry2>(false, true);
    /// Reads the vCPU's multiprocessor state (api.rst 4.38).
    GetMpState = KVM_GET_MP_STATE: _IOR::<kvm_mp_state>(KVMIO, 0x98), VCPU,
        Argument::Out(core::mem::size_of::<kvm_mp_state>());
    /// Sets the vCPU's multiprocessor state (api.rst 4.39).
    SetMpState = KVM_SET_MP_STATE: _IOW::<kvm_mp_state>(KVMIO, 0x99), VCPU,
        Argument::In(core::mem::size_of::<kvm_mp_state>());
    /// Queues an NMI without an in-kernel irqchip (api.rst 4.64).
    Nmi = KVM_NMI: _IO(KVMIO, 0x9a), VCPU, Argument::Ignored;
    /// Reads pending exceptions, interrupts, NMIs and SMIs (api.rst 4.31).
    GetVcpuEvents = KVM_GET_VCPU_EVENTS: _IOR::<kvm_vcpu_events>(KVMIO, 0x9f), VCPU,
        Argument::Out(core::mem::size_of::<kvm_vcpu_events>());
    /// Writes what KVM_GET_VCPU_EVENTS reads (api.rst 4.32).
    SetVcpuEvents = KVM_SET_VCPU_EVENTS: _IOW::<kvm_vcpu_events>(KVMIO, 0xa0), VCPU,
        Argument::In(core::mem::size_of::<kvm_vcpu_events>());
    /// Reads DR0-3, DR6 and DR7 (api.rst 4.33).
    GetDebugregs = KVM_GET_DEBUGREGS: _IOR::<kvm_debugregs>(KVMIO, 0xa1), VCPU,
        Argument::Out(core::mem::size_of::<kvm_debugregs>());
    /// Writes DR0-3, DR6 and DR7 (api.rst 4.34).
    SetDebugregs = KVM_SET_DEBUGREGS: _IOW::<kvm_debugregs>(KVMIO, 0xa2), VCPU,
        Argument::In(core::mem::size_of::<kvm_debugregs>());
    /// On VM fds (KVM_CAP_ENABLE_CAP_VM) and vCPU fds (KVM_CAP_ENABLE_CAP).
    EnableCap = KVM_ENABLE_CAP: _IOW::<kvm_enable_cap>(KVMIO, 0xa3), VM_VCPU,
        Argument::In(core::mem::size_of::<kvm_enable_cap>());
    /// Reads the extended control registers (XCR0; api.rst 4.44).
    GetXcrs = KVM_GET_XCRS: _IOR::<kvm_xcrs>(KVMIO, 0xa6), VCPU,
        Argument::Out(core::mem::size_of::<kvm_xcrs>());
    /// Writes the extended control registers (XCR0; api.rst 4.45).
    SetXcrs = KVM_SET_XCRS: _IOW::<kvm_xcrs>(KVMIO, 0xa7), VCPU,
        Argument::In(core::mem::size_of::<kvm_xcrs>());
    /// Tells the guest's kvmclock that the VM was paused.
    KvmclockCtrl = KVM_KVMCLOCK_CTRL: _IO(KVMIO, 0xad), VCPU, Argument::Ignored;
    /// On /dev/kvm (KVM_CAP_SYS_HYPERV_CPUID) and vCPU fds.
    GetSupportedHvCpuid = KVM_GET_SUPPORTED_HV_CPUID: _IOWR::<kvm_cpuid2>(KVMIO, 0xc1),
        SYSTEM_VCPU, array::<kvm_cpuid2, kvm_cpuid_entry2>(false, true);
}

/// A command recognised on the file it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Which ioctl the command is.
    pub ioctl: Ioctl,
    /// How to treat `arg` (copy sizes, directions).
    pub argument: Argument,
}

/// The table entry of `command`, whatever the file.
pub fn lookup(command: u32) -> Option<&'static IoctlInfo> {
    IOCTLS.iter().find(|info| info.command == command)
}

/// The table entry of `ioctl` (every variant has one: the macro builds
/// both from the same list).
pub fn info(ioctl: Ioctl) -> Option<&'static IoctlInfo> {
    IOCTLS.iter().find(|info| info.ioctl == ioctl)
}

/// Recognises `command` on a file of kind `fd`.  A command KVM answers
/// only on another kind of file, or not at all, fails with
/// [`Error::UnknownIoctl`], whose errno is what KVM returns on that file
/// ([`unknown_ioctl_errno`]).  Because the argument size is part of the
/// number, a command whose size bits differ from the struct size is an
/// unknown command, as it is for KVM.
pub fn classify(fd: FdKind, command: u32) -> Result<Request, Error> {
    match lookup(command) {
        Some(info) if info.fds.contains(fd) => Ok(Request {
            ioctl: info.ioctl,
            argument: info.argument,
        }),
        _ => Err(Error::UnknownIoctl(fd)),
    }
}

/// For [`Argument::MustBeZero`] requests: KVM fails them with EINVAL when
/// `arg` is not 0.
pub fn check_zero_argument(argument: Argument, arg: u64) -> Result<(), Error> {
    if argument == Argument::MustBeZero && arg != 0 {
        return Err(Error::ArgumentNotZero);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm_api::wire::Wire;

    #[test]
    fn encoding_matches_known_numbers() {
        // Numbers as strace and the rust-vmm crates print them.
        assert_eq!(KVM_GET_API_VERSION, 0xae00);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_SET_REGS, 0x4090_ae82);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_IRQ_LINE_STATUS, 0xc008_ae67);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
    }

    #[test]
    fn decoding_inverts_encoding() {
        let command = _IOWR::<kvm_cpuid2>(KVMIO, 0x91);
        assert_eq!(_IOC_DIR(command), IOC_READ | IOC_WRITE);
        assert_eq!(_IOC_TYPE(command), KVMIO);
        assert_eq!(_IOC_NR(command), 0x91);
        assert_eq!(_IOC_SIZE(command) as usize, kvm_cpuid2::SIZE);
        assert_eq!(_IOC_DIR(KVM_RUN), IOC_NONE);
        assert_eq!(_IOC_SIZE(KVM_GET_LAPIC), 0x400);
    }

    #[test]
    fn every_size_bit_field_is_the_argument_struct_size() {
        for info in IOCTLS {
            let encoded = _IOC_SIZE(info.command) as usize;
            match info.argument {
                Argument::In(size) | Argument::Out(size) | Argument::InOut(size) => {
                    assert_eq!(encoded, size, "{}", info.name)
                }
                Argument::Array(array) => assert_eq!(encoded, array.header_size, "{}", info.name),
                Argument::SignalMask => assert_eq!(encoded, kvm_signal_mask::SIZE),
                Argument::MustBeZero | Argument::Ignored | Argument::Value => {
                    if info.ioctl != Ioctl::SetIdentityMapAddr {
                        assert_eq!(encoded, 0, "{}", info.name)
                    }
                }
            }
            assert_eq!(_IOC_TYPE(info.command), KVMIO, "{}", info.name);
        }
    }

    #[test]
    fn numbers_and_variants_are_unique() {
        for (index, info) in IOCTLS.iter().enumerate() {
            for other in &IOCTLS[index + 1..] {
                assert_ne!(info.command, other.command, "{} {}", info.name, other.name);
                assert_ne!(info.ioctl, other.ioctl);
                assert_ne!(info.name, other.name);
            }
            assert_eq!(super::info(info.ioctl), Some(info));
            assert_eq!(lookup(info.command), Some(info));
        }
    }

    #[test]
    fn classify_by_file() {
        let run = classify(FdKind::Vcpu, KVM_RUN).unwrap();
        assert_eq!(run.ioctl, Ioctl::Run);
        assert_eq!(run.argument, Argument::MustBeZero);
        assert_eq!(
            classify(FdKind::System, KVM_CREATE_VM).unwrap().ioctl,
            Ioctl::CreateVm
        );
        assert_eq!(
            classify(FdKind::Vm, KVM_CHECK_EXTENSION).unwrap().ioctl,
            Ioctl::CheckExtension
        );
        assert_eq!(
            classify(FdKind::System, KVM_GET_MSRS).unwrap().ioctl,
            Ioctl::GetMsrs
        );
        assert_eq!(
            classify(FdKind::Vm, KVM_ENABLE_CAP).unwrap().ioctl,
            Ioctl::EnableCap
        );
        assert_eq!(
            classify(FdKind::Vcpu, KVM_ENABLE_CAP).unwrap().ioctl,
            Ioctl::EnableCap
        );
    }

    #[test]
    fn wrong_file_gives_what_kvm_gives() {
        // KVM_RUN on /dev/kvm: kvm_arch_dev_ioctl's default, EINVAL.
        let error = classify(FdKind::System, KVM_RUN).unwrap_err();
        assert_eq!(error, Error::UnknownIoctl(FdKind::System));
        assert_eq!(error.errno(), Errno::EINVAL);
        // KVM_GET_REGS on a VM fd: kvm_arch_vm_ioctl's default, ENOTTY.
        assert_eq!(
            classify(FdKind::Vm, KVM_GET_REGS).unwrap_err().errno(),
            Errno::ENOTTY
        );
        // KVM_CREATE_VCPU on a vCPU fd: kvm_arch_vcpu_ioctl's default, EINVAL.
        assert_eq!(
            classify(FdKind::Vcpu, KVM_CREATE_VCPU).unwrap_err().errno(),
            Errno::EINVAL
        );
        // CHECK_EXTENSION is not a vCPU ioctl.
        assert!(classify(FdKind::Vcpu, KVM_CHECK_EXTENSION).is_err());
        // SET_MSRS is only a vCPU ioctl (GET_MSRS also answers on /dev/kvm).
        assert!(classify(FdKind::System, KVM_SET_MSRS).is_err());
    }

    #[test]
    fn unknown_numbers() {
        // A foreign ioctl type, a KVM number KVM_GET_REGS's with another
        // size, and a direction change are all unknown.
        assert!(classify(FdKind::Vcpu, 0x5401).is_err());
        let wrong_size = _IOC(IOC_READ, KVMIO, 0x81, 0x88);
        assert_eq!(
            classify(FdKind::Vcpu, wrong_size),
            Err(Error::UnknownIoctl(FdKind::Vcpu))
        );
        let wrong_direction = _IOC(IOC_WRITE, KVMIO, 0x81, kvm_regs::SIZE);
        assert!(classify(FdKind::Vcpu, wrong_direction).is_err());
        assert_eq!(
            classify(FdKind::Vm, u32::MAX).unwrap_err().errno(),
            Errno::ENOTTY
        );
        assert_eq!(
            classify(FdKind::System, 0).unwrap_err().errno(),
            Errno::EINVAL
        );
    }

    #[test]
    fn zero_arguments() {
        assert_eq!(check_zero_argument(Argument::MustBeZero, 0), Ok(()));
        assert_eq!(
            check_zero_argument(Argument::MustBeZero, 1),
            Err(Error::ArgumentNotZero)
        );
        assert_eq!(check_zero_argument(Argument::Value, 7), Ok(()));
        assert_eq!(Error::ArgumentNotZero.errno(), Errno::EINVAL);
    }

    #[test]
    fn array_arguments_describe_headers_and_entries() {
        let Argument::Array(cpuid) = classify(FdKind::Vcpu, KVM_SET_CPUID2).unwrap().argument
        else {
            panic!("SET_CPUID2 takes an array")
        };
        assert_eq!((cpuid.header_size, cpuid.entry_size), (8, 40));
        assert!(cpuid.entries_in && !cpuid.entries_out);
        let Argument::Array(msrs) = classify(FdKind::Vcpu, KVM_GET_MSRS).unwrap().argument else {
            panic!("GET_MSRS takes an array")
        };
        assert_eq!((msrs.header_size, msrs.entry_size), (8, 16));
        assert!(msrs.entries_in && msrs.entries_out);
    }
}
