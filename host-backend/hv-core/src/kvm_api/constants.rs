//! Numbers of the KVM userspace API: exit reasons and their sub-codes,
//! capabilities, flags, and the page layout of a vCPU's mmap.
//!
//! Sources: `include/uapi/linux/kvm.h` and
//! `arch/x86/include/uapi/asm/kvm.h` of Linux 6.12 for [`LINUX_CONSTANTS`]
//! (whole families: every `KVM_CAP_*`, `KVM_EXIT_*`, ... of the headers is
//! here, `tests/kvm_uapi_header.rs` checks both directions), and KVM's own
//! sources for the limits in [`KERNEL_CONSTANTS`], which are not uapi but
//! decide which requests KVM refuses.  Meanings: `Documentation/virt/kvm/
//! api.rst` section 5 (`struct kvm_run`: exit reasons, internal error
//! sub-codes, system events), section 4.4 and sections 6-8 (capabilities).

pinned_constants! {
    /// The C name and value of every uapi constant of this module.
    table LINUX_CONSTANTS;

    /// What KVM_GET_API_VERSION returns (api.rst 4.1); anything else means
    /// an incompatible API.
    KVM_API_VERSION: u32 = 12;
    /// The ioctl type byte of every KVM ioctl.
    KVMIO: u32 = 0xae;

    /// The page of the vCPU mmap holding KVM_EXIT_IO data: `io.data_offset`
    /// is this times the page size (api.rst 4.5).
    KVM_PIO_PAGE_OFFSET: u32 = 1;
    /// The page of the vCPU mmap holding the coalesced MMIO ring.
    KVM_COALESCED_MMIO_PAGE_OFFSET: u32 = 2;
    /// The first page of the vCPU mmap holding the dirty ring.
    KVM_DIRTY_LOG_PAGE_OFFSET: u32 = 64;

    /// The number of interrupt vectors (bits of `kvm_sregs::interrupt_bitmap`).
    KVM_NR_INTERRUPTS: u32 = 256;
    /// The size of `kvm_lapic_state::regs`.
    KVM_APIC_REG_SIZE: u32 = 0x400;
    /// The room for XCRs in `kvm_xcrs`.
    KVM_MAX_XCRS: u32 = 16;
    /// The pins of the in-kernel IOAPIC.
    KVM_IOAPIC_NUM_PINS: u32 = 24;
    /// The size of the union `kvm_run::s` that holds the synced registers.
    SYNC_REGS_SIZE_BYTES: u32 = 2048;

    // Exit reasons: `kvm_run::exit_reason` (api.rst 5).
    /// No other reason applies; `hw.hardware_exit_reason` holds the hardware's exit code.
    KVM_EXIT_UNKNOWN: u32 = 0;
    /// The guest raised an exception for userspace (`ex`); x86 KVM does not use it.
    KVM_EXIT_EXCEPTION: u32 = 1;
    /// The guest accessed an I/O port (`io`; the data are in the PIO page).
    KVM_EXIT_IO: u32 = 2;
    /// A hypercall userspace handles (`hypercall`; KVM_CAP_EXIT_HYPERCALL on x86).
    KVM_EXIT_HYPERCALL: u32 = 3;
    /// A debug event for the guest debugger (`debug`; KVM_SET_GUEST_DEBUG).
    KVM_EXIT_DEBUG: u32 = 4;
    /// The guest executed HLT and there is no in-kernel local APIC to wait on.
    KVM_EXIT_HLT: u32 = 5;
    /// The guest accessed a physical address no writable slot backs (`mmio`).
    KVM_EXIT_MMIO: u32 = 6;
    /// The guest can take the interrupt asked for with `request_interrupt_window`.
    KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
    /// The guest shut down (on x86: a triple fault).
    KVM_EXIT_SHUTDOWN: u32 = 8;
    /// The hardware refused the VM entry (`fail_entry`).
    KVM_EXIT_FAIL_ENTRY: u32 = 9;
    /// A pending signal (or `immediate_exit`) ended KVM_RUN before or during guest execution.
    KVM_EXIT_INTR: u32 = 10;
    /// Never used (reserved for TPR writes).
    KVM_EXIT_SET_TPR: u32 = 11;
    /// A TPR access with KVM_TPR_ACCESS_REPORTING on (`tpr_access`).
    KVM_EXIT_TPR_ACCESS: u32 = 12;
    /// s390: an SIE intercept the kernel left to userspace.
    KVM_EXIT_S390_SIEIC: u32 = 13;
    /// s390: the guest asked for a reset.
    KVM_EXIT_S390_RESET: u32 = 14;
    /// Never used (PowerPC DCR accesses, removed).
    KVM_EXIT_DCR: u32 = 15;
    /// Never used.
    KVM_EXIT_NMI: u32 = 16;
    /// KVM could not go on (`internal`, sub-code `KVM_INTERNAL_ERROR_*`).
    KVM_EXIT_INTERNAL_ERROR: u32 = 17;
    /// PowerPC: a Mac-on-Linux OSI hypercall (KVM_CAP_PPC_OSI).
    KVM_EXIT_OSI: u32 = 18;
    /// PowerPC: a PAPR hypercall for userspace.
    KVM_EXIT_PAPR_HCALL: u32 = 19;
    /// s390: a translation fault in a user-controlled VM.
    KVM_EXIT_S390_UCONTROL: u32 = 20;
    /// PowerPC BookE: the watchdog timer expired.
    KVM_EXIT_WATCHDOG: u32 = 21;
    /// s390: TEST SUBCHANNEL left to userspace.
    KVM_EXIT_S390_TSCH: u32 = 22;
    /// PowerPC: the guest read the external proxy register.
    KVM_EXIT_EPR: u32 = 23;
    /// The guest asked for a shutdown, reset, crash or wakeup (`system_event`).
    KVM_EXIT_SYSTEM_EVENT: u32 = 24;
    /// s390: STORE SYSTEM INFORMATION left to userspace.
    KVM_EXIT_S390_STSI: u32 = 25;
    /// Split irqchip: the guest ended a level-triggered interrupt (`eoi.vector`).
    KVM_EXIT_IOAPIC_EOI: u32 = 26;
    /// A Hyper-V SynIC, hypercall or SynDbg event for userspace (`hyperv`).
    KVM_EXIT_HYPERV: u32 = 27;
    /// Arm: a data abort without valid syndrome (KVM_CAP_ARM_NISV_TO_USER).
    KVM_EXIT_ARM_NISV: u32 = 28;
    /// An RDMSR userspace handles (`msr`; KVM_CAP_X86_USER_SPACE_MSR).
    KVM_EXIT_X86_RDMSR: u32 = 29;
    /// A WRMSR userspace handles (`msr`; KVM_CAP_X86_USER_SPACE_MSR).
    KVM_EXIT_X86_WRMSR: u32 = 30;
    /// The vCPU's dirty ring is full; userspace must harvest it.
    KVM_EXIT_DIRTY_RING_FULL: u32 = 31;
    /// SEV-ES: an AP entered the AP reset hold state.
    KVM_EXIT_AP_RESET_HOLD: u32 = 32;
    /// The guest took a bus lock (KVM_CAP_X86_BUS_LOCK_EXIT).
    KVM_EXIT_X86_BUS_LOCK: u32 = 33;
    /// A Xen hypercall for userspace (`xen`; KVM_CAP_XEN_HVM).
    KVM_EXIT_XEN: u32 = 34;
    /// RISC-V: an SBI call for userspace.
    KVM_EXIT_RISCV_SBI: u32 = 35;
    /// RISC-V: a CSR access for userspace.
    KVM_EXIT_RISCV_CSR: u32 = 36;
    /// The guest stayed in a non-interruptible window too long (KVM_CAP_X86_NOTIFY_VMEXIT).
    KVM_EXIT_NOTIFY: u32 = 37;
    /// LoongArch: an IOCSR access for userspace.
    KVM_EXIT_LOONGARCH_IOCSR: u32 = 38;
    /// A guest access KVM could not resolve (`memory_fault`: gpa, size, flags).
    KVM_EXIT_MEMORY_FAULT: u32 = 39;

    /// `kvm_run::io.direction`: the guest reads the port.
    KVM_EXIT_IO_IN: u8 = 0;
    /// `kvm_run::io.direction`: the guest writes the port.
    KVM_EXIT_IO_OUT: u8 = 1;
    // `kvm_hyperv_exit::type` and `kvm_xen_exit::type`.
    /// `kvm_hyperv_exit::type`: the guest changed a SynIC MSR.
    KVM_EXIT_HYPERV_SYNIC: u32 = 1;
    /// `kvm_hyperv_exit::type`: a Hyper-V hypercall.
    KVM_EXIT_HYPERV_HCALL: u32 = 2;
    /// `kvm_hyperv_exit::type`: the guest used the synthetic debugger MSRs.
    KVM_EXIT_HYPERV_SYNDBG: u32 = 3;
    /// `kvm_xen_exit::type`: a Xen hypercall.
    KVM_EXIT_XEN_HCALL: u32 = 1;
    /// `kvm_run::hypercall.flags` on x86: the guest was in long mode.
    KVM_EXIT_HYPERCALL_LONG_MODE: u64 = 1 << 0;

    // `kvm_run::internal.suberror` of KVM_EXIT_INTERNAL_ERROR.
    /// The instruction emulator failed; `kvm_run::emulation_failure`
    /// describes the instruction.
    KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
    /// An exception arrived while another was being delivered.
    KVM_INTERNAL_ERROR_SIMUL_EX: u32 = 2;
    /// A VM exit happened while an event was being delivered, of a kind
    /// that cannot be resumed.
    KVM_INTERNAL_ERROR_DELIVERY_EV: u32 = 3;
    /// The hardware reported an exit reason the hypervisor does not handle
    /// (data[0]: the exit code, data[1]: the CPU of the last entry).
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: u32 = 4;
    /// `kvm_run::emulation_failure.flags`: `insn_size` and `insn_bytes`
    /// are valid.
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES: u64 = 1 << 0;

    // `kvm_run::system_event.type` of KVM_EXIT_SYSTEM_EVENT.
    /// `system_event.type`: the guest asked to power off.
    KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
    /// `system_event.type`: the guest asked for a reset.
    KVM_SYSTEM_EVENT_RESET: u32 = 2;
    /// `system_event.type`: the guest reported a crash.
    KVM_SYSTEM_EVENT_CRASH: u32 = 3;
    /// `system_event.type`: a suspended vCPU should wake (Arm).
    KVM_SYSTEM_EVENT_WAKEUP: u32 = 4;
    /// `system_event.type`: the guest asked to suspend the VM (Arm).
    KVM_SYSTEM_EVENT_SUSPEND: u32 = 5;
    /// `system_event.type`: an SEV-ES guest asked to terminate.
    KVM_SYSTEM_EVENT_SEV_TERM: u32 = 6;

    // `kvm_run::flags` on x86, set by KVM on every exit.
    /// The vCPU is in System Management Mode.
    KVM_RUN_X86_SMM: u16 = 1 << 0;
    /// The exit follows a bus lock (with KVM_CAP_X86_BUS_LOCK_EXIT).
    KVM_RUN_X86_BUS_LOCK: u16 = 1 << 1;
    /// The vCPU runs a nested guest (with KVM_CAP_X86_GUEST_MODE).
    KVM_RUN_X86_GUEST_MODE: u16 = 1 << 2;

    // `kvm_run::kvm_valid_regs` / `kvm_dirty_regs` bits (KVM_CAP_SYNC_REGS).
    /// `kvm_sync_regs::regs` (the general registers) is valid or dirty.
    KVM_SYNC_X86_REGS: u64 = 1 << 0;
    /// `kvm_sync_regs::sregs` (the special registers) is valid or dirty.
    KVM_SYNC_X86_SREGS: u64 = 1 << 1;
    /// `kvm_sync_regs::events` (the vCPU events) is valid or dirty.
    KVM_SYNC_X86_EVENTS: u64 = 1 << 2;
    /// Every sync-regs bit x86 knows; KVM_RUN refuses others with EINVAL.
    KVM_SYNC_X86_VALID_FIELDS: u64 = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;

    // `kvm_mp_state::mp_state` (api.rst 4.38); x86 uses RUNNABLE to
    // SIPI_RECEIVED, AP_RESET_HOLD and SUSPENDED.
    /// The vCPU runs (x86: the BSP, or an AP after SIPI).
    KVM_MP_STATE_RUNNABLE: u32 = 0;
    /// An AP waiting for INIT.
    KVM_MP_STATE_UNINITIALIZED: u32 = 1;
    /// An AP that got INIT and waits for SIPI.
    KVM_MP_STATE_INIT_RECEIVED: u32 = 2;
    /// The vCPU executed HLT and waits for an interrupt.
    KVM_MP_STATE_HALTED: u32 = 3;
    /// An AP that got SIPI (a transient state).
    KVM_MP_STATE_SIPI_RECEIVED: u32 = 4;
    /// s390: the vCPU is stopped.
    KVM_MP_STATE_STOPPED: u32 = 5;
    /// s390: the vCPU is in check-stop.
    KVM_MP_STATE_CHECK_STOP: u32 = 6;
    /// s390: the vCPU runs.
    KVM_MP_STATE_OPERATING: u32 = 7;
    /// s390: the vCPU is in the load state.
    KVM_MP_STATE_LOAD: u32 = 8;
    /// SEV-ES: the AP waits in the AP reset hold state.
    KVM_MP_STATE_AP_RESET_HOLD: u32 = 9;
    /// Arm: the vCPU is suspended until a wakeup event.
    KVM_MP_STATE_SUSPENDED: u32 = 10;

    // `kvm_userspace_memory_region::flags` (api.rst 4.35, 4.140).
    /// Track writes to the slot for KVM_GET_DIRTY_LOG.
    KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
    /// Guest writes to the slot exit to userspace as MMIO.
    KVM_MEM_READONLY: u32 = 1 << 1;
    /// Private memory comes from `guest_memfd` (region2 only; not offered by pvrs).
    KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;

    // `kvm_ioeventfd::flags` (api.rst 4.59).
    /// Signal only when the written value equals `datamatch`.
    KVM_IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;
    /// `addr` is an I/O port, not a guest physical address.
    KVM_IOEVENTFD_FLAG_PIO: u32 = 1 << 1;
    /// Remove the matching ioeventfd instead of adding one.
    KVM_IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;
    /// s390 virtio-ccw notification (accepted on x86, where nothing uses
    /// that bus).
    KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
    /// Every flag bit KVM accepts, including the unnamed `fast_mmio` bit 4
    /// of the header's enum, which KVM ignores.
    KVM_IOEVENTFD_VALID_FLAG_MASK: u32 = (1 << 5) - 1;

    // `kvm_irqfd::flags` (api.rst 4.75).
    /// Remove the irqfd for `fd` and `gsi` instead of adding one.
    KVM_IRQFD_FLAG_DEASSIGN: u32 = 1 << 0;
    /// Level-triggered mode: `resamplefd` is signalled on EOI.
    KVM_IRQFD_FLAG_RESAMPLE: u32 = 1 << 1;

    // `kvm_clock_data::flags` (api.rst 4.29).
    /// The clock is the same on every vCPU (KVM_GET_CLOCK output).
    KVM_CLOCK_TSC_STABLE: u32 = 2;
    /// `realtime` is valid.
    KVM_CLOCK_REALTIME: u32 = 1 << 2;
    /// `host_tsc` is valid.
    KVM_CLOCK_HOST_TSC: u32 = 1 << 3;

    // `kvm_vcpu_events::flags` (api.rst 4.32): which optional fields
    // KVM_SET_VCPU_EVENTS applies.
    /// Apply `nmi.pending` too.
    KVM_VCPUEVENT_VALID_NMI_PENDING: u32 = 0x0000_0001;
    /// Apply `sipi_vector` too.
    KVM_VCPUEVENT_VALID_SIPI_VECTOR: u32 = 0x0000_0002;
    /// Apply `interrupt.shadow` too.
    KVM_VCPUEVENT_VALID_SHADOW: u32 = 0x0000_0004;
    /// Apply the `smi` fields too.
    KVM_VCPUEVENT_VALID_SMM: u32 = 0x0000_0008;
    /// `exception_has_payload` and `exception_payload` are valid (KVM_CAP_EXCEPTION_PAYLOAD).
    KVM_VCPUEVENT_VALID_PAYLOAD: u32 = 0x0000_0010;
    /// Apply `triple_fault.pending` too (KVM_CAP_X86_TRIPLE_FAULT_EVENT).
    KVM_VCPUEVENT_VALID_TRIPLE_FAULT: u32 = 0x0000_0020;
    // `kvm_vcpu_events::interrupt.shadow`.
    /// Interrupts are blocked for one instruction after MOV SS / POP SS.
    KVM_X86_SHADOW_INT_MOV_SS: u8 = 0x01;
    /// Interrupts are blocked for one instruction after STI.
    KVM_X86_SHADOW_INT_STI: u8 = 0x02;

    // `kvm_cpuid_entry2::flags`.
    /// `index` selects a subleaf (the header's spelling).
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1 << 0;
    /// Obsolete: the leaf returned different values on successive reads.
    KVM_CPUID_FLAG_STATEFUL_FUNC: u32 = 1 << 1;
    /// Obsolete: this entry is the next one a stateful leaf returns.
    KVM_CPUID_FLAG_STATE_READ_NEXT: u32 = 1 << 2;

    // The in-kernel interrupt controllers (`kvm_irq_routing_irqchip`).
    /// The master 8259 PIC (pins 0-7).
    KVM_IRQCHIP_PIC_MASTER: u32 = 0;
    /// The slave 8259 PIC (pins 8-15).
    KVM_IRQCHIP_PIC_SLAVE: u32 = 1;
    /// The IOAPIC.
    KVM_IRQCHIP_IOAPIC: u32 = 2;
    /// The number of in-kernel interrupt controllers.
    KVM_NR_IRQCHIPS: u32 = 3;

    // `kvm_irq_routing_entry::type` (api.rst 4.52).
    /// The route drives a pin of an in-kernel irqchip (`u.irqchip`).
    KVM_IRQ_ROUTING_IRQCHIP: u32 = 1;
    /// The route sends an MSI (`u.msi`).
    KVM_IRQ_ROUTING_MSI: u32 = 2;
    /// s390: the route sets adapter indicators (`u.adapter`).
    KVM_IRQ_ROUTING_S390_ADAPTER: u32 = 3;
    /// The route raises a Hyper-V synthetic interrupt (`u.hv_sint`).
    KVM_IRQ_ROUTING_HV_SINT: u32 = 4;
    /// The route delivers a Xen event channel (`u.xen_evtchn`).
    KVM_IRQ_ROUTING_XEN_EVTCHN: u32 = 5;
    /// `kvm_irq_routing_xen_evtchn::priority`: deliver as a 2-level event channel.
    KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL: u32 = u32::MAX;
    /// `kvm_msi::flags` / MSI route flags: `devid` is valid.
    KVM_MSI_VALID_DEVID: u32 = 1 << 0;

    // KVM_CAP_X86_DISABLE_EXITS argument (api.rst 7.13).
    /// Let the guest run MWAIT/MONITOR without exits.
    KVM_X86_DISABLE_EXITS_MWAIT: u64 = 1 << 0;
    /// Let the guest run HLT without exits.
    KVM_X86_DISABLE_EXITS_HLT: u64 = 1 << 1;
    /// Let the guest run PAUSE without exits (no pause-loop exiting).
    KVM_X86_DISABLE_EXITS_PAUSE: u64 = 1 << 2;
    /// Let the guest enter C-states (with MWAIT) without exits.
    KVM_X86_DISABLE_EXITS_CSTATE: u64 = 1 << 3;
    /// Every KVM_X86_DISABLE_EXITS_* bit.
    KVM_X86_DISABLE_VALID_EXITS: u64 = KVM_X86_DISABLE_EXITS_MWAIT
        | KVM_X86_DISABLE_EXITS_HLT
        | KVM_X86_DISABLE_EXITS_PAUSE
        | KVM_X86_DISABLE_EXITS_CSTATE;
    // KVM_CAP_X2APIC_API argument (api.rst 7.7).
    /// Use 32-bit APIC ids in x2APIC mode (LAPIC state and MSI routes).
    KVM_X2APIC_API_USE_32BIT_IDS: u64 = 1 << 0;
    /// Do not treat APIC id 0xff as broadcast in x2APIC mode.
    KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK: u64 = 1 << 1;

    /// `kvm_pit_config::flags`: emulate the PC speaker port as a dummy.
    KVM_PIT_SPEAKER_DUMMY: u32 = 1;
    // `kvm_pit_state2::flags`.
    /// The HPET's legacy replacement mode disables the PIT's output.
    KVM_PIT_FLAGS_HPET_LEGACY: u32 = 0x0000_0001;
    /// The PC speaker data bit (port 0x61 bit 1) is set.
    KVM_PIT_FLAGS_SPEAKER_DATA_ON: u32 = 0x0000_0002;

    // Capabilities: the argument of KVM_CHECK_EXTENSION and
    // KVM_ENABLE_CAP (api.rst 4.4, 6, 7, 8).
    /// KVM_CREATE_IRQCHIP: an in-kernel PIC, IOAPIC and local APICs.
    KVM_CAP_IRQCHIP: u32 = 0;
    /// HLT is handled in the kernel.
    KVM_CAP_HLT: u32 = 1;
    /// KVM_SET_NR_MMU_PAGES / KVM_GET_NR_MMU_PAGES (shadow MMU size).
    KVM_CAP_MMU_SHADOW_CACHE_CONTROL: u32 = 2;
    /// KVM_SET_USER_MEMORY_REGION: slots backed by userspace memory.
    KVM_CAP_USER_MEMORY: u32 = 3;
    /// KVM_SET_TSS_ADDR.
    KVM_CAP_SET_TSS_ADDR: u32 = 4;
    /// KVM_TPR_ACCESS_REPORTING and KVM_SET_VAPIC_ADDR.
    KVM_CAP_VAPIC: u32 = 6;
    /// KVM_SET_CPUID2, KVM_GET_CPUID2 and KVM_GET_SUPPORTED_CPUID.
    KVM_CAP_EXT_CPUID: u32 = 7;
    /// The pvclock (kvmclock) MSRs.
    KVM_CAP_CLOCKSOURCE: u32 = 8;
    /// The recommended number of vCPUs per VM.
    KVM_CAP_NR_VCPUS: u32 = 9;
    /// The number of memory slots per address space.
    KVM_CAP_NR_MEMSLOTS: u32 = 10;
    /// An in-kernel i8254 PIT (KVM_CREATE_PIT).
    KVM_CAP_PIT: u32 = 11;
    /// The port 0x80 delay is handled in the kernel.
    KVM_CAP_NOP_IO_DELAY: u32 = 12;
    /// Obsolete paravirtual MMU hypercalls (always 0).
    KVM_CAP_PV_MMU: u32 = 13;
    /// KVM_GET_MP_STATE and KVM_SET_MP_STATE.
    KVM_CAP_MP_STATE: u32 = 14;
    /// Coalesced MMIO zones; the value is the page offset of the ring.
    KVM_CAP_COALESCED_MMIO: u32 = 15;
    /// Changes to userspace mappings reach the guest (MMU notifiers).
    KVM_CAP_SYNC_MMU: u32 = 16;
    /// Obsolete device assignment.
    KVM_CAP_IOMMU: u32 = 18;
    /// A zero-sized KVM_SET_USER_MEMORY_REGION deletes a slot.
    KVM_CAP_DESTROY_MEMORY_REGION_WORKS: u32 = 21;
    /// KVM_NMI.
    KVM_CAP_USER_NMI: u32 = 22;
    /// KVM_SET_GUEST_DEBUG.
    KVM_CAP_SET_GUEST_DEBUG: u32 = 23;
    /// KVM_REINJECT_CONTROL (PIT interrupt reinjection).
    KVM_CAP_REINJECT_CONTROL: u32 = 24;
    /// KVM_SET_GSI_ROUTING; the value is the most routes.
    KVM_CAP_IRQ_ROUTING: u32 = 25;
    /// KVM_IRQ_LINE_STATUS.
    KVM_CAP_IRQ_INJECT_STATUS: u32 = 26;
    /// Obsolete device assignment interrupts.
    KVM_CAP_ASSIGN_DEV_IRQ: u32 = 29;
    /// Adjacent slots can be merged (always 1).
    KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: u32 = 30;
    /// KVM_X86_SETUP_MCE and friends; the value is the most MCE banks.
    KVM_CAP_MCE: u32 = 31;
    /// KVM_IRQFD.
    KVM_CAP_IRQFD: u32 = 32;
    /// KVM_CREATE_PIT2.
    KVM_CAP_PIT2: u32 = 33;
    /// KVM_SET_BOOT_CPU_ID.
    KVM_CAP_SET_BOOT_CPU_ID: u32 = 34;
    /// KVM_GET_PIT2 and KVM_SET_PIT2.
    KVM_CAP_PIT_STATE2: u32 = 35;
    /// KVM_IOEVENTFD.
    KVM_CAP_IOEVENTFD: u32 = 36;
    /// KVM_SET_IDENTITY_MAP_ADDR.
    KVM_CAP_SET_IDENTITY_MAP_ADDR: u32 = 37;
    /// Xen HVM emulation (KVM_XEN_HVM_CONFIG); the value is a bitmap of features.
    KVM_CAP_XEN_HVM: u32 = 38;
    /// KVM_GET_CLOCK / KVM_SET_CLOCK; the value is the `KVM_CLOCK_*` flags supported.
    KVM_CAP_ADJUST_CLOCK: u32 = 39;
    /// KVM_EXIT_INTERNAL_ERROR fills `internal.ndata` and `data`.
    KVM_CAP_INTERNAL_ERROR_DATA: u32 = 40;
    /// KVM_GET_VCPU_EVENTS and KVM_SET_VCPU_EVENTS.
    KVM_CAP_VCPU_EVENTS: u32 = 41;
    /// s390: the PSW in `kvm_run`.
    KVM_CAP_S390_PSW: u32 = 42;
    /// PowerPC: segment state in the sregs.
    KVM_CAP_PPC_SEGSTATE: u32 = 43;
    /// Basic Hyper-V emulation.
    KVM_CAP_HYPERV: u32 = 44;
    /// Hyper-V virtual APIC MSRs.
    KVM_CAP_HYPERV_VAPIC: u32 = 45;
    /// Hyper-V spinlock hints.
    KVM_CAP_HYPERV_SPIN: u32 = 46;
    /// Obsolete device assignment across PCI segments.
    KVM_CAP_PCI_SEGMENT: u32 = 47;
    /// PowerPC: paired-single floating point.
    KVM_CAP_PPC_PAIRED_SINGLES: u32 = 48;
    /// KVM_GET/SET_VCPU_EVENTS carry the interrupt shadow.
    KVM_CAP_INTR_SHADOW: u32 = 49;
    /// KVM_GET_DEBUGREGS and KVM_SET_DEBUGREGS.
    KVM_CAP_DEBUGREGS: u32 = 50;
    /// Single-stepping works across emulated instructions and interrupts.
    KVM_CAP_X86_ROBUST_SINGLESTEP: u32 = 51;
    /// PowerPC: OSI hypercalls exit to userspace (KVM_EXIT_OSI).
    KVM_CAP_PPC_OSI: u32 = 52;
    /// PowerPC: KVM_INTERRUPT can lower the interrupt.
    KVM_CAP_PPC_UNSET_IRQ: u32 = 53;
    /// KVM_ENABLE_CAP on vCPU fds.
    KVM_CAP_ENABLE_CAP: u32 = 54;
    /// KVM_GET_XSAVE and KVM_SET_XSAVE.
    KVM_CAP_XSAVE: u32 = 55;
    /// KVM_GET_XCRS and KVM_SET_XCRS.
    KVM_CAP_XCRS: u32 = 56;
    /// PowerPC: KVM_PPC_GET_PVINFO.
    KVM_CAP_PPC_GET_PVINFO: u32 = 57;
    /// PowerPC: level-triggered KVM_INTERRUPT.
    KVM_CAP_PPC_IRQ_LEVEL: u32 = 58;
    /// Asynchronous page faults for the guest (MSR_KVM_ASYNC_PF_EN).
    KVM_CAP_ASYNC_PF: u32 = 59;
    /// KVM_SET_TSC_KHZ on vCPU fds (TSC scaling).
    KVM_CAP_TSC_CONTROL: u32 = 60;
    /// KVM_GET_TSC_KHZ.
    KVM_CAP_GET_TSC_KHZ: u32 = 61;
    /// PowerPC BookE: the BookE sregs.
    KVM_CAP_PPC_BOOKE_SREGS: u32 = 62;
    /// PowerPC: KVM_CREATE_SPAPR_TCE.
    KVM_CAP_SPAPR_TCE: u32 = 63;
    /// PowerPC: threads per core.
    KVM_CAP_PPC_SMT: u32 = 64;
    /// PowerPC: KVM_ALLOCATE_RMA (obsolete).
    KVM_CAP_PPC_RMA: u32 = 65;
    /// The most vCPUs per VM.
    KVM_CAP_MAX_VCPUS: u32 = 66;
    /// PowerPC: the HIOR register as a ONE_REG.
    KVM_CAP_PPC_HIOR: u32 = 67;
    /// PowerPC: PAPR mode.
    KVM_CAP_PPC_PAPR: u32 = 68;
    /// PowerPC BookE: a software-managed TLB shared with userspace.
    KVM_CAP_SW_TLB: u32 = 69;
    /// KVM_GET_ONE_REG and KVM_SET_ONE_REG.
    KVM_CAP_ONE_REG: u32 = 70;
    /// s390: guest mappings independent of the host's.
    KVM_CAP_S390_GMAP: u32 = 71;
    /// The local APIC's TSC-deadline timer mode.
    KVM_CAP_TSC_DEADLINE_TIMER: u32 = 72;
    /// s390: user-controlled VMs.
    KVM_CAP_S390_UCONTROL: u32 = 73;
    /// Registers synced through `kvm_run::s` (`kvm_valid_regs`, `kvm_dirty_regs`).
    KVM_CAP_SYNC_REGS: u32 = 74;
    /// Obsolete device assignment with PCI 2.3 interrupt masking.
    KVM_CAP_PCI_2_3: u32 = 75;
    /// KVM_KVMCLOCK_CTRL.
    KVM_CAP_KVMCLOCK_CTRL: u32 = 76;
    /// KVM_SIGNAL_MSI.
    KVM_CAP_SIGNAL_MSI: u32 = 77;
    /// PowerPC: KVM_PPC_GET_SMMU_INFO.
    KVM_CAP_PPC_GET_SMMU_INFO: u32 = 78;
    /// s390: copy-on-write guest memory.
    KVM_CAP_S390_COW: u32 = 79;
    /// PowerPC: KVM_PPC_ALLOCATE_HTAB.
    KVM_CAP_PPC_ALLOC_HTAB: u32 = 80;
    /// Read-only slots (KVM_MEM_READONLY).
    KVM_CAP_READONLY_MEM: u32 = 81;
    /// KVM_IRQFD_FLAG_RESAMPLE.
    KVM_CAP_IRQFD_RESAMPLE: u32 = 82;
    /// PowerPC BookE: the watchdog exits to userspace.
    KVM_CAP_PPC_BOOKE_WATCHDOG: u32 = 83;
    /// PowerPC: KVM_PPC_GET_HTAB_FD.
    KVM_CAP_PPC_HTAB_FD: u32 = 84;
    /// s390: channel I/O in userspace.
    KVM_CAP_S390_CSS_SUPPORT: u32 = 85;
    /// PowerPC: the external proxy exits to userspace.
    KVM_CAP_PPC_EPR: u32 = 86;
    /// Arm: PSCI 0.1 in the kernel.
    KVM_CAP_ARM_PSCI: u32 = 87;
    /// Arm: KVM_ARM_SET_DEVICE_ADDR.
    KVM_CAP_ARM_SET_DEVICE_ADDR: u32 = 88;
    /// KVM_CREATE_DEVICE and the device attribute ioctls.
    KVM_CAP_DEVICE_CTRL: u32 = 89;
    /// PowerPC: the in-kernel MPIC.
    KVM_CAP_IRQ_MPIC: u32 = 90;
    /// PowerPC: in-kernel RTAS calls.
    KVM_CAP_PPC_RTAS: u32 = 91;
    /// PowerPC: the in-kernel XICS.
    KVM_CAP_IRQ_XICS: u32 = 92;
    /// Arm: 32-bit EL1 guests.
    KVM_CAP_ARM_EL1_32BIT: u32 = 93;
    /// PowerPC: multi-entry TCE hypercalls.
    KVM_CAP_SPAPR_MULTITCE: u32 = 94;
    /// KVM_GET_EMULATED_CPUID.
    KVM_CAP_EXT_EMUL_CPUID: u32 = 95;
    /// Hyper-V reference TSC page.
    KVM_CAP_HYPERV_TIME: u32 = 96;
    /// The IOAPIC ignores the polarity bit of a route.
    KVM_CAP_IOAPIC_POLARITY_IGNORED: u32 = 97;
    /// KVM_ENABLE_CAP on VM fds.
    KVM_CAP_ENABLE_CAP_VM: u32 = 98;
    /// s390: the in-kernel FLIC.
    KVM_CAP_S390_IRQCHIP: u32 = 99;
    /// Zero-length ioeventfds (match any write).
    KVM_CAP_IOEVENTFD_NO_LENGTH: u32 = 100;
    /// KVM_GET/SET/HAS_DEVICE_ATTR on VM fds.
    KVM_CAP_VM_ATTRIBUTES: u32 = 101;
    /// Arm: PSCI 0.2.
    KVM_CAP_ARM_PSCI_0_2: u32 = 102;
    /// PowerPC: unknown hypercalls exit to userspace.
    KVM_CAP_PPC_FIXUP_HCALL: u32 = 103;
    /// PowerPC: hypercalls can be enabled one by one.
    KVM_CAP_PPC_ENABLE_HCALL: u32 = 104;
    /// KVM_CHECK_EXTENSION on VM fds.
    KVM_CAP_CHECK_EXTENSION_VM: u32 = 105;
    /// s390: SIGP orders in userspace.
    KVM_CAP_S390_USER_SIGP: u32 = 106;
    /// s390: the vector registers.
    KVM_CAP_S390_VECTOR_REGISTERS: u32 = 107;
    /// s390: KVM_S390_MEM_OP.
    KVM_CAP_S390_MEM_OP: u32 = 108;
    /// s390: STSI exits to userspace.
    KVM_CAP_S390_USER_STSI: u32 = 109;
    /// s390: storage keys ioctls.
    KVM_CAP_S390_SKEYS: u32 = 110;
    /// MIPS: the guest FPU.
    KVM_CAP_MIPS_FPU: u32 = 111;
    /// MIPS: the guest MSA vector unit.
    KVM_CAP_MIPS_MSA: u32 = 112;
    /// s390: KVM_S390_IRQ.
    KVM_CAP_S390_INJECT_IRQ: u32 = 113;
    /// s390: KVM_S390_GET/SET_IRQ_STATE.
    KVM_CAP_S390_IRQ_STATE: u32 = 114;
    /// PowerPC: the hardware RNG hypercall in the kernel.
    KVM_CAP_PPC_HWRNG: u32 = 115;
    /// KVM_ENABLE_CAP to turn off KVM_X86_QUIRK_* behaviours.
    KVM_CAP_DISABLE_QUIRKS: u32 = 116;
    /// System Management Mode (KVM_SMI, SMM in the vCPU events).
    KVM_CAP_X86_SMM: u32 = 117;
    /// The number of memory address spaces (2 with SMM).
    KVM_CAP_MULTI_ADDRESS_SPACE: u32 = 118;
    /// Arm: the hardware breakpoints KVM_SET_GUEST_DEBUG offers.
    KVM_CAP_GUEST_DEBUG_HW_BPS: u32 = 119;
    /// Arm: the hardware watchpoints KVM_SET_GUEST_DEBUG offers.
    KVM_CAP_GUEST_DEBUG_HW_WPS: u32 = 120;
    /// Local APICs in the kernel with the PIC and IOAPIC in userspace.
    KVM_CAP_SPLIT_IRQCHIP: u32 = 121;
    /// ioeventfds of any length.
    KVM_CAP_IOEVENTFD_ANY_LENGTH: u32 = 122;
    /// The Hyper-V SynIC.
    KVM_CAP_HYPERV_SYNIC: u32 = 123;
    /// s390: runtime instrumentation.
    KVM_CAP_S390_RI: u32 = 124;
    /// PowerPC: KVM_CREATE_SPAPR_TCE_64.
    KVM_CAP_SPAPR_TCE_64: u32 = 125;
    /// Arm: a PMUv3 for the guest.
    KVM_CAP_ARM_PMU_V3: u32 = 126;
    /// KVM_GET/SET/HAS_DEVICE_ATTR on vCPU fds.
    KVM_CAP_VCPU_ATTRIBUTES: u32 = 127;
    /// The largest vCPU id plus one.
    KVM_CAP_MAX_VCPU_ID: u32 = 128;
    /// KVM_X2APIC_API_* behaviours for KVM_ENABLE_CAP.
    KVM_CAP_X2APIC_API: u32 = 129;
    /// s390: the 0x0000 instruction exits to userspace.
    KVM_CAP_S390_USER_INSTR0: u32 = 130;
    /// MSIs carry a device id (KVM_MSI_VALID_DEVID).
    KVM_CAP_MSI_DEVID: u32 = 131;
    /// PowerPC: hardware transactional memory.
    KVM_CAP_PPC_HTM: u32 = 132;
    /// PowerPC: resizing the hashed page table.
    KVM_CAP_SPAPR_RESIZE_HPT: u32 = 133;
    /// PowerPC: the radix MMU.
    KVM_CAP_PPC_MMU_RADIX: u32 = 134;
    /// PowerPC: the ISA 3.0 hashed MMU.
    KVM_CAP_PPC_MMU_HASH_V3: u32 = 135;
    /// `kvm_run::immediate_exit`.
    KVM_CAP_IMMEDIATE_EXIT: u32 = 136;
    /// MIPS: the VZ virtualization extension.
    KVM_CAP_MIPS_VZ: u32 = 137;
    /// MIPS: trap-and-emulate.
    KVM_CAP_MIPS_TE: u32 = 138;
    /// MIPS: 64-bit guests.
    KVM_CAP_MIPS_64BIT: u32 = 139;
    /// s390: guarded storage.
    KVM_CAP_S390_GS: u32 = 140;
    /// s390: adapter interruption suppression.
    KVM_CAP_S390_AIS: u32 = 141;
    /// PowerPC: TCE tables attached to VFIO groups.
    KVM_CAP_SPAPR_TCE_VFIO: u32 = 142;
    /// KVM_ENABLE_CAP to stop intercepting HLT, MWAIT, PAUSE or C-states.
    KVM_CAP_X86_DISABLE_EXITS: u32 = 143;
    /// Arm: timer and PMU interrupt levels reported to userspace.
    KVM_CAP_ARM_USER_IRQ: u32 = 144;
    /// s390: migration of collaborative memory management state.
    KVM_CAP_S390_CMMA_MIGRATION: u32 = 145;
    /// PowerPC: firmware-assisted NMI delivery.
    KVM_CAP_PPC_FWNMI: u32 = 146;
    /// PowerPC: the possible threads-per-core modes.
    KVM_CAP_PPC_SMT_POSSIBLE: u32 = 147;
    /// The Hyper-V SynIC, without the message-page zeroing of KVM_CAP_HYPERV_SYNIC.
    KVM_CAP_HYPERV_SYNIC2: u32 = 148;
    /// The Hyper-V VP index MSR.
    KVM_CAP_HYPERV_VP_INDEX: u32 = 149;
    /// s390: migration of the AIS state.
    KVM_CAP_S390_AIS_MIGRATION: u32 = 150;
    /// PowerPC: KVM_PPC_GET_CPU_CHAR.
    KVM_CAP_PPC_GET_CPU_CHAR: u32 = 151;
    /// s390: the branch prediction blocking facility.
    KVM_CAP_S390_BPB: u32 = 152;
    /// KVM_GET_MSR_FEATURE_INDEX_LIST and KVM_GET_MSRS on /dev/kvm.
    KVM_CAP_GET_MSR_FEATURES: u32 = 153;
    /// KVM_HYPERV_EVENTFD.
    KVM_CAP_HYPERV_EVENTFD: u32 = 154;
    /// Hyper-V TLB flush hypercalls.
    KVM_CAP_HYPERV_TLBFLUSH: u32 = 155;
    /// s390: 1 MB huge pages for guest memory.
    KVM_CAP_S390_HPAGE_1M: u32 = 156;
    /// KVM_GET/SET_NESTED_STATE; the value is the largest state size.
    KVM_CAP_NESTED_STATE: u32 = 157;
    /// Arm: injecting an SError with a syndrome.
    KVM_CAP_ARM_INJECT_SERROR_ESR: u32 = 158;
    /// Userspace can turn off guest access to MSR_PLATFORM_INFO.
    KVM_CAP_MSR_PLATFORM_INFO: u32 = 159;
    /// PowerPC: nested hypervisors.
    KVM_CAP_PPC_NESTED_HV: u32 = 160;
    /// Hyper-V send-IPI hypercalls.
    KVM_CAP_HYPERV_SEND_IPI: u32 = 161;
    /// Coalesced port I/O zones.
    KVM_CAP_COALESCED_PIO: u32 = 162;
    /// Hyper-V enlightened VMCS (VMX only).
    KVM_CAP_HYPERV_ENLIGHTENED_VMCS: u32 = 163;
    /// Exception payloads (CR2, DR6) delivered apart from the exception.
    KVM_CAP_EXCEPTION_PAYLOAD: u32 = 164;
    /// Arm: the largest guest IPA size.
    KVM_CAP_ARM_VM_IPA_SIZE: u32 = 165;
    /// Obsolete name of KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT: u32 = 166;
    /// KVM_GET_SUPPORTED_HV_CPUID on vCPU fds.
    KVM_CAP_HYPERV_CPUID: u32 = 167;
    /// KVM_CLEAR_DIRTY_LOG: reading the dirty log does not re-protect pages.
    KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u32 = 168;
    /// PowerPC: the XIVE interrupt controller.
    KVM_CAP_PPC_IRQ_XIVE: u32 = 169;
    /// Arm: SVE for the guest.
    KVM_CAP_ARM_SVE: u32 = 170;
    /// Arm: address pointer authentication.
    KVM_CAP_ARM_PTRAUTH_ADDRESS: u32 = 171;
    /// Arm: generic pointer authentication.
    KVM_CAP_ARM_PTRAUTH_GENERIC: u32 = 172;
    /// KVM_SET_PMU_EVENT_FILTER.
    KVM_CAP_PMU_EVENT_FILTER: u32 = 173;
    /// Arm: the vCPU index of KVM_IRQ_LINE has more bits.
    KVM_CAP_ARM_IRQ_LINE_LAYOUT_2: u32 = 174;
    /// Hyper-V direct TLB flush for nested guests.
    KVM_CAP_HYPERV_DIRECT_TLBFLUSH: u32 = 175;
    /// PowerPC: single-stepping with KVM_SET_GUEST_DEBUG.
    KVM_CAP_PPC_GUEST_DEBUG_SSTEP: u32 = 176;
    /// Arm: aborts without syndrome exit to userspace (KVM_EXIT_ARM_NISV).
    KVM_CAP_ARM_NISV_TO_USER: u32 = 177;
    /// Arm: injecting an external data abort.
    KVM_CAP_ARM_INJECT_EXT_DABT: u32 = 178;
    /// s390: the vCPU reset ioctls.
    KVM_CAP_S390_VCPU_RESETS: u32 = 179;
    /// s390: protected virtualization.
    KVM_CAP_S390_PROTECTED: u32 = 180;
    /// PowerPC: secure guests (ultravisor).
    KVM_CAP_PPC_SECURE_GUEST: u32 = 181;
    /// KVM_ENABLE_CAP to set the VM's halt-polling time.
    KVM_CAP_HALT_POLL: u32 = 182;
    /// Asynchronous page fault notification by interrupt.
    KVM_CAP_ASYNC_PF_INT: u32 = 183;
    /// `internal.data` of KVM_EXIT_INTERNAL_ERROR ends with the last CPU the vCPU ran on.
    KVM_CAP_LAST_CPU: u32 = 184;
    /// A guest MAXPHYADDR smaller than the host's.
    KVM_CAP_SMALLER_MAXPHYADDR: u32 = 185;
    /// s390: DIAGNOSE 0x318.
    KVM_CAP_S390_DIAG318: u32 = 186;
    /// Steal-time accounting for the guest.
    KVM_CAP_STEAL_TIME: u32 = 187;
    /// MSR accesses exit to userspace (KVM_EXIT_X86_RDMSR/WRMSR).
    KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
    /// KVM_X86_SET_MSR_FILTER.
    KVM_CAP_X86_MSR_FILTER: u32 = 189;
    /// KVM_ENABLE_CAP to offer only the PV features in CPUID.
    KVM_CAP_ENFORCE_PV_FEATURE_CPUID: u32 = 190;
    /// KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm.
    KVM_CAP_SYS_HYPERV_CPUID: u32 = 191;
    /// Per-vCPU dirty rings; the value is the largest ring in bytes.
    KVM_CAP_DIRTY_LOG_RING: u32 = 192;
    /// KVM_ENABLE_CAP to exit (or throttle) on guest bus locks.
    KVM_CAP_X86_BUS_LOCK_EXIT: u32 = 193;
    /// PowerPC: the second DAWR.
    KVM_CAP_PPC_DAWR1: u32 = 194;
    /// The KVM_GUESTDBG_* flags KVM_SET_GUEST_DEBUG accepts.
    KVM_CAP_SET_GUEST_DEBUG2: u32 = 195;
    /// KVM_ENABLE_CAP to allow restricted SGX attributes.
    KVM_CAP_SGX_ATTRIBUTE: u32 = 196;
    /// SEV: share another VM's encryption context.
    KVM_CAP_VM_COPY_ENC_CONTEXT_FROM: u32 = 197;
    /// Arm: the PTP_KVM hypercall.
    KVM_CAP_PTP_KVM: u32 = 198;
    /// Hyper-V features limited to those in the guest's CPUID.
    KVM_CAP_HYPERV_ENFORCE_CPUID: u32 = 199;
    /// KVM_GET_SREGS2 and KVM_SET_SREGS2.
    KVM_CAP_SREGS2: u32 = 200;
    /// The hypercalls that exit to userspace (KVM_EXIT_HYPERCALL), as a mask.
    KVM_CAP_EXIT_HYPERCALL: u32 = 201;
    /// PowerPC: the H_RPT_INVALIDATE hypercall.
    KVM_CAP_PPC_RPT_INVALIDATE: u32 = 202;
    /// KVM_GET_STATS_FD.
    KVM_CAP_BINARY_STATS_FD: u32 = 203;
    /// Emulation failures exit with the instruction bytes.
    KVM_CAP_EXIT_ON_EMULATION_FAILURE: u32 = 204;
    /// Arm: the memory tagging extension.
    KVM_CAP_ARM_MTE: u32 = 205;
    /// SEV: move another VM's encryption context here.
    KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM: u32 = 206;
    /// RISC-V: the guest physical address width.
    KVM_CAP_VM_GPA_BITS: u32 = 207;
    /// KVM_GET_XSAVE2; the value is the XSAVE buffer size.
    KVM_CAP_XSAVE2: u32 = 208;
    /// KVM_GET/HAS_DEVICE_ATTR on /dev/kvm.
    KVM_CAP_SYS_ATTRIBUTES: u32 = 209;
    /// PowerPC: AIL mode 3.
    KVM_CAP_PPC_AIL_MODE_3: u32 = 210;
    /// s390: extensions of KVM_S390_MEM_OP.
    KVM_CAP_S390_MEM_OP_EXTENSION: u32 = 211;
    /// KVM_ENABLE_CAP to turn off the vPMU.
    KVM_CAP_PMU_CAPABILITY: u32 = 212;
    /// Like KVM_CAP_DISABLE_QUIRKS, with the supported quirks as the value.
    KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
    /// KVM_SET_TSC_KHZ on VM fds (the default of new vCPUs).
    KVM_CAP_VM_TSC_CONTROL: u32 = 214;
    /// KVM_EXIT_SYSTEM_EVENT fills `system_event.ndata` and `data`.
    KVM_CAP_SYSTEM_EVENT_DATA: u32 = 215;
    /// Arm: PSCI SYSTEM_SUSPEND exits to userspace.
    KVM_CAP_ARM_SYSTEM_SUSPEND: u32 = 216;
    /// s390: dumping protected guests.
    KVM_CAP_S390_PROTECTED_DUMP: u32 = 217;
    /// KVM_VCPUEVENT_VALID_TRIPLE_FAULT.
    KVM_CAP_X86_TRIPLE_FAULT_EVENT: u32 = 218;
    /// KVM_ENABLE_CAP for notify VM exits (VMX).
    KVM_CAP_X86_NOTIFY_VMEXIT: u32 = 219;
    /// KVM_ENABLE_CAP to turn off the NX huge pages mitigation.
    KVM_CAP_VM_DISABLE_NX_HUGE_PAGES: u32 = 220;
    /// s390: KVM_S390_ZPCI_OP.
    KVM_CAP_S390_ZPCI_OP: u32 = 221;
    /// s390: CPU topology.
    KVM_CAP_S390_CPU_TOPOLOGY: u32 = 222;
    /// Dirty rings with acquire/release ordering.
    KVM_CAP_DIRTY_LOG_RING_ACQ_REL: u32 = 223;
    /// s390: asynchronous teardown of protected guests.
    KVM_CAP_S390_PROTECTED_ASYNC_DISABLE: u32 = 224;
    /// Dirty rings together with a dirty bitmap.
    KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: u32 = 225;
    /// Masked events in KVM_SET_PMU_EVENT_FILTER.
    KVM_CAP_PMU_EVENT_MASKED_EVENTS: u32 = 226;
    /// Arm: KVM_ARM_SET_COUNTER_OFFSET.
    KVM_CAP_COUNTER_OFFSET: u32 = 227;
    /// Arm: the chunk size of eager huge page splitting.
    KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: u32 = 228;
    /// Arm: the stage-2 block sizes.
    KVM_CAP_ARM_SUPPORTED_BLOCK_SIZES: u32 = 229;
    /// Arm: KVM_ARM_GET_REG_WRITABLE_MASKS.
    KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES: u32 = 230;
    /// KVM_SET_USER_MEMORY_REGION2.
    KVM_CAP_USER_MEMORY2: u32 = 231;
    /// Failed guest accesses exit with KVM_EXIT_MEMORY_FAULT.
    KVM_CAP_MEMORY_FAULT_INFO: u32 = 232;
    /// KVM_SET_MEMORY_ATTRIBUTES; the value is the attributes supported.
    KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
    /// KVM_CREATE_GUEST_MEMFD.
    KVM_CAP_GUEST_MEMFD: u32 = 234;
    /// The VM types KVM_CREATE_VM accepts, as a bitmap.
    KVM_CAP_VM_TYPES: u32 = 235;
    /// KVM_PRE_FAULT_MEMORY.
    KVM_CAP_PRE_FAULT_MEMORY: u32 = 236;
    /// KVM_ENABLE_CAP to set the APIC bus cycle length in ns.
    KVM_CAP_X86_APIC_BUS_CYCLES_NS: u32 = 237;
    /// KVM_RUN_X86_GUEST_MODE in `kvm_run::flags`.
    KVM_CAP_X86_GUEST_MODE: u32 = 238;
}

pinned_constants! {
    /// Limits and masks of KVM's implementation (not uapi) that decide
    /// which requests it refuses; the header test finds each `#define` in
    /// the file named by [`KERNEL_CONSTANT_SOURCES`] and evaluates it.
    table KERNEL_CONSTANTS;

    /// The most CPUID entries KVM_SET_CPUID2 takes and
    /// KVM_GET_SUPPORTED_CPUID returns.
    KVM_MAX_CPUID_ENTRIES: u32 = 256;
    /// KVM_GET_MSRS / KVM_SET_MSRS refuse `nmsrs` at or above this (so at
    /// most 255 MSRs per call).
    MAX_IO_MSRS: u32 = 256;
    /// The most GSI routes, and the bound on a route's GSI.
    KVM_MAX_IRQ_ROUTES: u32 = 4096;
    /// All memory slot ids of an address space (ids are 16 bits, capped at `SHRT_MAX`).
    KVM_MEM_SLOTS_NUM: u32 = i16::MAX as u32;
    /// The slot ids x86 KVM keeps for its own slots (TSS, identity map, APIC access page).
    KVM_INTERNAL_MEM_SLOTS: u32 = 3;
    /// Memory slot ids userspace may use: 0 to this value minus 1.
    KVM_USER_MEM_SLOTS: u32 = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS;
    /// The flags KVM_SET_CLOCK accepts.
    KVM_CLOCK_VALID_FLAGS: u32 = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
    /// The flags KVM_SET_USER_MEMORY_REGION (the first version) accepts.
    KVM_SET_USER_MEMORY_REGION_V1_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;
    /// The flags KVM_ENABLE_CAP(KVM_CAP_X2APIC_API) accepts.
    KVM_X2APIC_API_VALID_FLAGS: u64 =
        KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK;
    /// The most IOAPIC pins KVM_CAP_SPLIT_IRQCHIP may reserve.
    MAX_NR_RESERVED_IOAPIC_PINS: u32 = KVM_MAX_IRQ_ROUTES;
    /// The pins of the two cascaded in-kernel PICs together.
    PIC_NUM_PINS: u32 = 16;
    /// CR8 bits other than the task priority: KVM_RUN fails with EINVAL
    /// when `kvm_run::cr8` sets one (no in-kernel local APIC).
    CR8_RESERVED_BITS: u64 = !0xf;
}

/// The kernel file defining each of [`KERNEL_CONSTANTS`], relative to the
/// source tree.
pub const KERNEL_CONSTANT_SOURCES: &[(&str, &str)] = &[
    ("KVM_MAX_CPUID_ENTRIES", "arch/x86/include/asm/kvm_host.h"),
    ("MAX_IO_MSRS", "arch/x86/kvm/x86.c"),
    ("KVM_MAX_IRQ_ROUTES", "include/linux/kvm_host.h"),
    ("KVM_MEM_SLOTS_NUM", "include/linux/kvm_host.h"),
    ("KVM_INTERNAL_MEM_SLOTS", "arch/x86/include/asm/kvm_host.h"),
    ("KVM_USER_MEM_SLOTS", "include/linux/kvm_host.h"),
    ("KVM_CLOCK_VALID_FLAGS", "arch/x86/include/asm/kvm_host.h"),
    ("KVM_SET_USER_MEMORY_REGION_V1_FLAGS", "virt/kvm/kvm_main.c"),
    ("KVM_X2APIC_API_VALID_FLAGS", "arch/x86/kvm/x86.c"),
    ("MAX_NR_RESERVED_IOAPIC_PINS", "arch/x86/kvm/ioapic.h"),
    ("PIC_NUM_PINS", "arch/x86/kvm/irq.h"),
    ("CR8_RESERVED_BITS", "arch/x86/include/asm/kvm_host.h"),
];

/// The page size of x86, in which the vCPU mmap is laid out.
pub const PAGE_SIZE: usize = 4096;

/// What KVM_GET_VCPU_MMAP_SIZE returns on x86: the `kvm_run` page, the
/// PIO data page and the coalesced MMIO ring page (`kvm_dev_ioctl` in
/// `virt/kvm/kvm_main.c`).  The dirty ring pages at
/// [`KVM_DIRTY_LOG_PAGE_OFFSET`] are beyond it and only exist with
/// KVM_CAP_DIRTY_LOG_RING.
pub const KVM_VCPU_MMAP_SIZE: usize = 3 * PAGE_SIZE;

/// What a page of the vCPU mmap shows, by page offset
/// (`kvm_vcpu_fault` in `virt/kvm/kvm_main.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuMmapPage {
    /// Page 0: `struct kvm_run`.
    Run,
    /// Page [`KVM_PIO_PAGE_OFFSET`]: the data of KVM_EXIT_IO.
    PioData,
    /// Page [`KVM_COALESCED_MMIO_PAGE_OFFSET`]: the coalesced MMIO ring.
    CoalescedMmio,
}

impl VcpuMmapPage {
    /// The page at `page_offset` of the vCPU mmap, or `None` where KVM
    /// delivers SIGBUS (the dirty ring pages are not offered).
    pub const fn at(page_offset: u64) -> Option<Self> {
        if page_offset == 0 {
            Some(VcpuMmapPage::Run)
        } else if page_offset == KVM_PIO_PAGE_OFFSET as u64 {
            Some(VcpuMmapPage::PioData)
        } else if page_offset == KVM_COALESCED_MMIO_PAGE_OFFSET as u64 {
            Some(VcpuMmapPage::CoalescedMmio)
        } else {
            None
        }
    }
}

/// The C name of a capability number, for logs; `None` for numbers the
/// 6.12 headers do not define.
pub fn capability_name(capability: u32) -> Option<&'static str> {
    LINUX_CONSTANTS
        .iter()
        .find(|&&(name, value, _)| name.starts_with("KVM_CAP_") && value == u64::from(capability))
        .map(|&(name, _, _)| name)
}

/// The C name of an exit reason, for logs.
pub fn exit_reason_name(exit_reason: u32) -> Option<&'static str> {
    LINUX_CONSTANTS
        .iter()
        .find(|&&(name, value, _)| {
            name.starts_with("KVM_EXIT_")
                && !name.starts_with("KVM_EXIT_IO_")
                && !name.starts_with("KVM_EXIT_HYPERV_")
                && !name.starts_with("KVM_EXIT_XEN_")
                && !name.starts_with("KVM_EXIT_HYPERCALL_")
                && value == u64::from(exit_reason)
        })
        .map(|&(name, _, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_in_each_table() {
        for table in [LINUX_CONSTANTS, KERNEL_CONSTANTS] {
            for (index, (name, _, _)) in table.iter().enumerate() {
                assert!(
                    table[index + 1..].iter().all(|(other, _, _)| other != name),
                    "{name} twice"
                );
            }
        }
    }

    #[test]
    fn every_kernel_constant_has_a_source() {
        assert_eq!(KERNEL_CONSTANTS.len(), KERNEL_CONSTANT_SOURCES.len());
        for ((name, _, _), (source_name, _)) in KERNEL_CONSTANTS.iter().zip(KERNEL_CONSTANT_SOURCES)
        {
            assert_eq!(name, source_name);
        }
    }

    #[test]
    fn derived_limits() {
        assert_eq!(KVM_USER_MEM_SLOTS, 32764);
        assert_eq!(KVM_SYNC_X86_VALID_FIELDS, 7);
        assert_eq!(KVM_IOEVENTFD_VALID_FLAG_MASK, 0x1f);
        assert_eq!(CR8_RESERVED_BITS, 0xffff_ffff_ffff_fff0);
        assert_eq!(KVM_VCPU_MMAP_SIZE, 12288);
    }

    #[test]
    fn mmap_pages() {
        assert_eq!(VcpuMmapPage::at(0), Some(VcpuMmapPage::Run));
        assert_eq!(VcpuMmapPage::at(1), Some(VcpuMmapPage::PioData));
        assert_eq!(VcpuMmapPage::at(2), Some(VcpuMmapPage::CoalescedMmio));
        assert_eq!(VcpuMmapPage::at(3), None);
        assert_eq!(VcpuMmapPage::at(64), None);
        assert_eq!(VcpuMmapPage::at(u64::MAX), None);
    }

    #[test]
    fn names_for_logs() {
        assert_eq!(capability_name(KVM_CAP_IRQCHIP), Some("KVM_CAP_IRQCHIP"));
        assert_eq!(
            capability_name(KVM_CAP_X86_GUEST_MODE),
            Some("KVM_CAP_X86_GUEST_MODE")
        );
        assert_eq!(capability_name(5), None);
        assert_eq!(exit_reason_name(KVM_EXIT_IO), Some("KVM_EXIT_IO"));
        assert_eq!(exit_reason_name(1), Some("KVM_EXIT_EXCEPTION"));
        assert_eq!(
            exit_reason_name(KVM_EXIT_MEMORY_FAULT),
            Some("KVM_EXIT_MEMORY_FAULT")
        );
        assert_eq!(exit_reason_name(40), None);
    }
}
