//! The local APIC of one vCPU: registers, interrupt acceptance and
//! priority, EOI, IPIs, the APIC timer and the IA32_APIC_BASE modes, as
//! KVM's emulated LAPIC (`arch/x86/kvm/lapic.c`) behaves.
//!
//! References: Intel SDM vol. 3 ch. 11 (11.4 xAPIC registers and
//! IA32_APIC_BASE, 11.5 LVT, timer and ESR, 11.6 IPIs and logical
//! destinations, 11.8 priorities, IRR/ISR/TMR and EOI, 11.12 x2APIC);
//! Linux `arch/x86/include/asm/apicdef.h` for the register offsets;
//! `Documentation/virt/kvm/api.rst` 4.57 for the KVM_GET/SET_LAPIC image.
//!
//! # Model
//!
//! The register file is kept as fields, not as a 1 KiB page: the page is
//! only built for KVM_GET_LAPIC ([`Lapic::to_kvm_state`]).  PPR is
//! computed whenever it is read, so it cannot go stale.  Three access
//! paths share one register decoder: the xAPIC MMIO page ([`IoDevice`]),
//! the x2APIC MSRs 0x800-0x8ff ([`Lapic::read_msr`], [`Lapic::write_msr`])
//! and the KVM state image.
//!
//! Events that are not vectors (NMI, INIT, SIPI, ExtINT) are flags the
//! vCPU loop takes ([`Lapic::take_nmi`] ...); vectors go through IRR and
//! are taken with [`Lapic::highest_deliverable_vector`] and
//! [`Lapic::acknowledge`].  Nothing here kicks a vCPU: the caller checks
//! the LAPIC after every call that can raise something.
//!
//! # Who calls what
//!
//! - The VM's router, for each message (an IPI a [`DeviceEnv`] got from
//!   `send_apic_message` because of an ICR write, an IOAPIC entry, an
//!   MSI): [`Lapic::matches_destination`] on every LAPIC, then
//!   [`Lapic::accept`] on the matching one(s); for lowest priority it
//!   picks one by [`Lapic::arbitration_priority`].  The env must queue a
//!   message sent during a call and route it after the call returns: the
//!   sender may be among the destinations.
//! - The vCPU loop, before each entry: [`Lapic::take_init`],
//!   [`Lapic::take_sipi`], [`Lapic::take_nmi`], [`Lapic::take_extint`]
//!   (then the PIC's vector), [`Lapic::highest_deliverable_vector`] and,
//!   once injected, [`Lapic::acknowledge`]; CR8 through [`Lapic::cr8`] /
//!   [`Lapic::set_cr8`]; RDMSR/WRMSR of IA32_APIC_BASE
//!   ([`Lapic::set_apic_base`]), 0x800-0x8ff and IA32_TSC_DEADLINE; the
//!   xAPIC page through [`IoDevice`].
//! - The backend's timer for `TimerId::Lapic(index)`:
//!   [`Lapic::timer_fired`].  KVM_GET/SET_LAPIC: [`Lapic::to_kvm_state`],
//!   [`Lapic::set_from_kvm_state`].
//!
//! # Choices and differences from KVM
//!
//! - Version 0x14 with six LVT entries (no CMCI), so the version register
//!   reads 0x0005_0014.  Directed EOI is not offered (version bit 24
//!   clear, SVR bit 12 reads 0): KVM offers it only without an in-kernel
//!   IOAPIC, and the IOAPIC here is in-kernel, so every EOI of a
//!   level-triggered vector is broadcast.
//! - MMIO: reads of 1, 2 or 4 bytes inside the first dword of a
//!   register are answered as KVM does; any other read, and any write
//!   that is not 4 bytes at a 16-byte boundary, is [`IoError::BadWidth`]
//!   (KVM leaves the read buffer untouched and drops the write).  A read
//!   of a reserved or write-only register gives 0 and is counted.  A
//!   hardware-disabled or x2APIC-mode LAPIC still claims the page at its
//!   base, as a hole: reads give all-ones, writes are dropped (KVM's
//!   default `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`).
//! - ESR: the SDM's write-then-read latch.  KVM never records an error;
//!   this model records the two it can see: a fixed or lowest-priority
//!   vector below 16 sent from the ICR (bit 5, the IPI is not sent) or
//!   received (bit 6, the vector is not accepted), and signals them
//!   through the LVT error entry.
//! - The ARBPRI register reads 0, as KVM's does; lowest-priority
//!   delivery uses the SDM's arbitration priority
//!   ([`Lapic::arbitration_priority`]).
//! - A spent one-shot timer stays spent when the divide configuration is
//!   changed or the state is restored with current count 0 (KVM fires it
//!   once more in both cases).
//! - SELF_IPI is accepted directly, without a round trip through the
//!   router: the destination is known.
//! - At reset the BSP's LINT0 is ExtINT and unmasked, as KVM's default
//!   `KVM_X86_QUIRK_LINT0_REENABLED` leaves it; every other LVT entry is
//!   masked.
//! - Leaving x2APIC mode clears the LDR and the ICR destination bits
//!   xAPIC does not have (KVM keeps the x2APIC values in the page).
//! - [`Lapic::highest_deliverable_vector`] offers nothing while the APIC
//!   is software-disabled (SDM 11.4.7.2 holds pending interrupts); KVM
//!   still delivers what IRR held when SVR was cleared.
//! - Pending SIPIs are recorded whatever the vCPU's state: whether it
//!   waits for SIPI is the vCPU loop's to know, and it drops the SIPI
//!   otherwise (as `kvm_apic_accept_events`).

use super::{
    ApicMessage, DeliveryMode, DestMode, DeviceEnv, IoDevice, IoError, IoSpace, Shorthand, TimerId,
};
use crate::msr::{
    validate_apic_base_write, MsrError, MsrFeatures, MsrOrigin, APIC_BASE_X2APIC_ENABLE,
    MSR_IA32_APICBASE_BSP, MSR_IA32_APICBASE_ENABLE,
};

/// The architectural default base of the xAPIC page.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// IA32_APIC_BASE bits 63:12: the page's guest-physical address.
const APIC_BASE_ADDRESS_MASK: u64 = !0xfff;
/// The size of the xAPIC MMIO page.
pub const APIC_MMIO_LENGTH: u64 = 0x1000;
/// The first x2APIC register MSR (the xAPIC offset is `(msr - 0x800) << 4`).
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// The last x2APIC register MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;
/// IA32_TSC_DEADLINE, the TSC-deadline timer's target.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// The size of `struct kvm_lapic_state`.
pub const KVM_APIC_REG_SIZE: usize = 1024;
/// KVM's `min_timer_period_us` (200 us): a shorter periodic timer is
/// stretched to it, since each period costs a host hrtimer interrupt.
pub const MIN_PERIODIC_TIMER_NS: u64 = 200_000;
/// The version register: version 0x14, max LVT entry 5 (six entries).
pub const APIC_VERSION_VALUE: u32 = 0x0005_0014;

// Register offsets in the xAPIC page (apicdef.h).
const APIC_ID: u32 = 0x20;
const APIC_LVR: u32 = 0x30;
const APIC_TASKPRI: u32 = 0x80;
const APIC_ARBPRI: u32 = 0x90;
const APIC_PROCPRI: u32 = 0xa0;
const APIC_EOI: u32 = 0xb0;
const APIC_LDR: u32 = 0xd0;
const APIC_DFR: u32 = 0xe0;
const APIC_SPIV: u32 = 0xf0;
const APIC_ISR: u32 = 0x100;
const APIC_TMR: u32 = 0x180;
const APIC_IRR: u32 = 0x200;
const APIC_ESR: u32 = 0x280;
const APIC_ICR: u32 = 0x300;
const APIC_ICR2: u32 = 0x310;
const APIC_LVTT: u32 = 0x320;
const APIC_LVTERR: u32 = 0x370;
const APIC_TMICT: u32 = 0x380;
const APIC_TMCCT: u32 = 0x390;
const APIC_TDCR: u32 = 0x3e0;
const APIC_SELF_IPI: u32 = 0x3f0;

// Register bits.
const LVT_VECTOR: u32 = 0xff;
const LVT_DELIVERY_STATUS: u32 = 1 << 12;
const LVT_MASKED: u32 = 1 << 16;
const LVT_MODE_MASK: u32 = 0x700;
const LVT_MODE_EXTINT: u32 = 0x700;
const LVT_INPUT_POLARITY: u32 = 1 << 13;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL_TRIGGER: u32 = 1 << 15;
/// The bits every LVT entry keeps (KVM's `LVT_MASK`).
const LVT_COMMON_BITS: u32 = LVT_MASKED | LVT_DELIVERY_STATUS | LVT_VECTOR;
/// LINT0/LINT1 also keep mode, polarity, remote IRR and trigger mode.
const LVT_LINT_BITS: u32 =
    LVT_COMMON_BITS | LVT_MODE_MASK | LVT_INPUT_POLARITY | LVT_REMOTE_IRR | LVT_LEVEL_TRIGGER;
/// The timer's mode field, bits 18:17.
const LVT_TIMER_MODE_SHIFT: u32 = 17;
const SPIV_APIC_ENABLED: u32 = 1 << 8;
/// SVR bits 9:0 (vector, software enable, focus checking); bit 12
/// (suppress EOI broadcast) is not writable since directed EOI is not
/// offered.
const SPIV_WRITABLE: u32 = 0x3ff;
const LDR_XAPIC_MASK: u32 = 0xff00_0000;
const DFR_FLAT: u32 = 0xffff_ffff;
const DFR_CLUSTER: u32 = 0x0fff_ffff;
const ICR_BUSY: u32 = 1 << 12;
const ICR_DEST_LOGICAL: u32 = 1 << 11;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL_TRIGGER: u32 = 1 << 15;
const ICR2_XAPIC_MASK: u32 = 0xff00_0000;
/// x2APIC ICR bits that #GP when set: 31:20, 17:16 and 13 (KVM's
/// `X2APIC_ICR_RESERVED_BITS`).
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | 0x3_0000 | 0x2000;
const TDCR_WRITABLE: u32 = 0xb;
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
const XAPIC_BROADCAST: u32 = 0xff;
const X2APIC_BROADCAST: u32 = 0xffff_ffff;
/// Vectors 0-15 are reserved for exceptions: an APIC never accepts them.
const FIRST_LEGAL_VECTOR: u8 = 16;

/// The LAPIC's operating mode, from IA32_APIC_BASE bits 11:10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// Globally disabled (EN = 0): no MMIO, no MSRs, no interrupts.
    Disabled,
    /// xAPIC: registers in the MMIO page, 8-bit IDs.
    XApic,
    /// x2APIC: registers as MSRs 0x800-0x8ff, 32-bit IDs.
    X2Apic,
}

/// A local interrupt input pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LintPin {
    /// LINT0, the 8259 PIC's INTR in the usual wiring.
    Lint0,
    /// LINT1, NMI in the usual wiring.
    Lint1,
}

/// The LVT entries, in register order from 0x320.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lvt {
    Timer,
    Thermal,
    PerfCounter,
    Lint0,
    Lint1,
    Error,
}

impl Lvt {
    /// The entry at xAPIC offset `offset` (0x320-0x370).
    fn at(offset: u32) -> Option<Self> {
        Some(match offset {
            0x320 => Self::Timer,
            0x330 => Self::Thermal,
            0x340 => Self::PerfCounter,
            0x350 => Self::Lint0,
            0x360 => Self::Lint1,
            0x370 => Self::Error,
            _ => return None,
        })
    }

    /// The bits a write keeps, besides the timer mode (KVM's
    /// `apic_lvt_mask`).
    fn writable_bits(self) -> u32 {
        match self {
            Self::Timer | Self::Error => LVT_COMMON_BITS,
            Self::Thermal | Self::PerfCounter => LVT_COMMON_BITS | LVT_MODE_MASK,
            Self::Lint0 | Self::Lint1 => LVT_LINT_BITS,
        }
    }
}

const ALL_LVTS: [Lvt; 6] = [
    Lvt::Timer,
    Lvt::Thermal,
    Lvt::PerfCounter,
    Lvt::Lint0,
    Lvt::Lint1,
    Lvt::Error,
];

/// The timer mode of LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
    /// Mode 3 is reserved: the timer does nothing.
    Reserved,
}

/// A 256-bit vector register (IRR, ISR, TMR) as eight 32-bit words, the
/// layout of the register page (word `i` at offset `0x10 * i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet([u32; 8]);

impl VectorSet {
    /// Whether `vector` is set.
    pub fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }
    fn insert(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }
    fn remove(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }
    /// The highest vector set, if any.
    pub fn highest(&self) -> Option<u8> {
        (0..8u8).rev().find_map(|word| {
            let bits = self.0[usize::from(word)];
            (bits != 0).then(|| word * 32 + (31 - bits.leading_zeros() as u8))
        })
    }
    /// How many vectors are set.
    pub fn count(&self) -> u32 {
        self.0.iter().map(|word| word.count_ones()).sum()
    }
    /// Word `index` (0-7) as the register page holds it; 0 past the end.
    pub fn word(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }
    fn set_word(&mut self, index: usize, value: u32) {
        if let Some(word) = self.0.get_mut(index) {
            *word = value;
        }
    }
}

/// Accesses and events the LAPIC refused or dropped, for the debugfs
/// counters.  None of them is fatal: each is a guest (or VMM) doing
/// something the architecture ignores or faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicCounters {
    /// MMIO accesses of a width or alignment the APIC does not decode.
    pub mmio_bad_width: u64,
    /// MMIO reads of reserved or write-only registers and MMIO writes to
    /// reserved or read-only ones.
    pub mmio_refused: u64,
    /// MMIO accesses to the page outside xAPIC mode (the hole: all-ones
    /// reads, dropped writes).
    pub mmio_hole: u64,
    /// x2APIC MSR accesses that faulted (#GP for the guest).
    pub msr_refused: u64,
    /// IA32_APIC_BASE writes refused (reserved bits, illegal transition).
    pub apic_base_refused: u64,
    /// Fixed and lowest-priority interrupts dropped because the APIC was
    /// disabled, and de-assert messages of level-triggered ones.
    pub interrupts_dropped: u64,
    /// Vectors 0-15 sent or received (recorded in ESR).
    pub illegal_vectors: u64,
    /// SMIs and ICR writes of the reserved delivery mode 3: not emulated.
    pub unsupported_delivery: u64,
    /// Timer callbacks that came with no timer armed.
    pub spurious_timer_callbacks: u64,
}

/// The local APIC of one vCPU.
#[derive(Clone, Debug)]
pub struct Lapic {
    /// The vCPU's index: its x2APIC id, its initial xAPIC id and its timer.
    vcpu_index: u32,
    /// Guest CPUID 1 ECX[24]: LVT timer mode 2 (TSC-deadline) exists.
    tsc_deadline_supported: bool,
    /// Whether the last power-on reset made this the BSP (for INIT's
    /// LINT0 quirk).
    reset_as_bsp: bool,
    apic_base: u64,
    xapic_id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// ESR as the guest reads it (latched by the last ESR write).
    esr: u32,
    /// Errors since the last ESR write.
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt_timer: u32,
    lvt_thermal: u32,
    lvt_perf: u32,
    lvt_lint0: u32,
    lvt_lint1: u32,
    lvt_error: u32,
    initial_count: u32,
    divide_config: u32,
    /// One-shot/periodic: the initial count in ns (after the periodic
    /// minimum); 0 when the timer is stopped.
    timer_period_ns: u64,
    /// The armed backend deadline: the next expiry of the counting modes,
    /// or the TSC deadline in ns.
    timer_deadline_ns: Option<u64>,
    /// IA32_TSC_DEADLINE as the guest reads it.
    tsc_deadline: u64,
    lint_level: [bool; 2],
    nmi_pending: bool,
    init_pending: bool,
    sipi_vector: Option<u8>,
    extint_pending: bool,
    counters: LapicCounters,
}

/// The bus cycle is 1 ns (KVM's `APIC_BUS_CYCLE_NS`), divided by 1-128.
fn divide_value(divide_config: u32) -> u32 {
    let code = (divide_config & 0x3) | ((divide_config & 0x8) >> 1);
    1 << ((code + 1) & 0x7)
}

/// `value * multiplier / divisor`, saturating, without 128-bit
/// arithmetic (the kernel's Rust has no 128-bit division): the remainder
/// times a 32-bit multiplier cannot overflow.  `divisor` must not be 0.
fn scale(value: u64, multiplier: u32, divisor: u32) -> u64 {
    let (multiplier, divisor) = (u64::from(multiplier), u64::from(divisor.max(1)));
    let whole = (value / divisor).saturating_mul(multiplier);
    whole.saturating_add(value % divisor * multiplier / divisor)
}

/// The delivery mode of ICR/LVT bits 10:8; mode 3 is reserved.
pub(crate) fn delivery_mode_of(register: u32) -> Option<DeliveryMode> {
    Some(match (register >> 8) & 0x7 {
        0 => DeliveryMode::Fixed,
        1 => DeliveryMode::LowestPriority,
        2 => DeliveryMode::Smi,
        4 => DeliveryMode::Nmi,
        5 => DeliveryMode::Init,
        6 => DeliveryMode::StartUp,
        7 => DeliveryMode::ExtInt,
        _ => return None,
    })
}

/// Whether an LINT entry passes the 8259's INTR through (ExtINT, unmasked).
fn is_unmasked_extint(lvt: u32) -> bool {
    lvt & LVT_MASKED == 0 && lvt & LVT_MODE_MASK == LVT_MODE_EXTINT
}

/// The x2APIC logical id: cluster (id bits 19:4) in 31:16, one bit of
/// 16 for id bits 3:0 (SDM 11.12.10.2).
fn x2apic_ldr(x2apic_id: u32) -> u32 {
    ((x2apic_id >> 4) << 16) | (1 << (x2apic_id & 0xf))
}

fn register_at(regs: &[u8; KVM_APIC_REG_SIZE], offset: u32) -> u32 {
    let start = offset as usize;
    regs.get(start..start + 4)
        .map_or(0, bytes_u32)
}

fn bytes_u32(bytes: &[u8]) -> u32 {
    super::bytes_to_u64(bytes) as u32
}

fn put_register(regs: &mut [u8; KVM_APIC_REG_SIZE], offset: u32, value: u32) {
    let start = offset as usize;
    if let Some(bytes) = regs.get_mut(start..start + 4) {
        bytes.copy_from_slice(&value.to_le_bytes());
    }
}

/// Why a register write was not done; the MMIO path drops it, the MSR
/// path turns it into #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteRefused {
    /// No writable register there in this mode.
    NotWritable,
    /// A value with reserved bits set.
    Reserved,
}

impl Lapic {
    /// The LAPIC of vCPU `vcpu_index` after power-on (see
    /// [`Lapic::reset`]).  `tsc_deadline_supported` is guest CPUID 1
    /// ECX[24]: without it the LVT timer's mode is one bit wide, as KVM
    /// does.
    pub fn new(vcpu_index: u32, bsp: bool, tsc_deadline_supported: bool) -> Self {
        let mut lapic = Self {
            vcpu_index,
            tsc_deadline_supported,
            reset_as_bsp: bsp,
            apic_base: 0,
            xapic_id: 0,
            tpr: 0,
            ldr: 0,
            dfr: DFR_FLAT,
            svr: 0xff,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt_timer: LVT_MASKED,
            lvt_thermal: LVT_MASKED,
            lvt_perf: LVT_MASKED,
            lvt_lint0: LVT_MASKED,
            lvt_lint1: LVT_MASKED,
            lvt_error: LVT_MASKED,
            initial_count: 0,
            divide_config: 0,
            timer_period_ns: 0,
            timer_deadline_ns: None,
            tsc_deadline: 0,
            lint_level: [false; 2],
            nmi_pending: false,
            init_pending: false,
            sipi_vector: None,
            extint_pending: false,
            counters: LapicCounters::default(),
        };
        lapic.reset_registers(bsp, true);
        lapic
    }

    /// Power-on / RESET (SDM 11.4.7.1; KVM `kvm_lapic_reset` with
    /// `init_event` false): IA32_APIC_BASE = 0xfee00000 | EN | (BSP), the
    /// xAPIC id = the vCPU index, everything else as after INIT.
    pub fn reset(&mut self, env: &mut dyn DeviceEnv, bsp: bool) {
        self.cancel_timer(env);
        self.reset_registers(bsp, true);
    }

    /// INIT (SDM 11.4.7.3): every register to its power-on value except
    /// IA32_APIC_BASE, the APIC id and (in x2APIC mode) the LDR.
    pub fn init(&mut self, env: &mut dyn DeviceEnv) {
        self.cancel_timer(env);
        self.reset_registers(self.reset_as_bsp, false);
    }

    fn reset_registers(&mut self, bsp: bool, power_on: bool) {
        if power_on {
            self.reset_as_bsp = bsp;
            let bsp_bit = if bsp { MSR_IA32_APICBASE_BSP } else { 0 };
            self.apic_base = APIC_DEFAULT_BASE | MSR_IA32_APICBASE_ENABLE | bsp_bit;
            self.xapic_id = self.vcpu_index as u8;
        }
        for lvt in ALL_LVTS {
            *self.lvt_mut(lvt) = LVT_MASKED;
        }
        if self.reset_as_bsp {
            self.lvt_lint0 = LVT_MODE_EXTINT;
        }
        self.dfr = DFR_FLAT;
        self.svr = 0xff;
        self.tpr = 0;
        if self.mode() != ApicMode::X2Apic {
            self.ldr = 0;
        }
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.divide_config = 0;
        self.initial_count = 0;
        self.timer_period_ns = 0;
        self.timer_deadline_ns = None;
        self.tsc_deadline = 0;
        self.irr = VectorSet::default();
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.nmi_pending = false;
        self.init_pending = false;
        self.sipi_vector = None;
        self.extint_pending = false;
    }

    /// The vCPU index this LAPIC belongs to.
    pub fn vcpu_index(&self) -> u32 {
        self.vcpu_index
    }

    /// The refusal counters.
    pub fn counters(&self) -> &LapicCounters {
        &self.counters
    }

    /// The mode IA32_APIC_BASE selects.
    pub fn mode(&self) -> ApicMode {
        if self.apic_base & MSR_IA32_APICBASE_ENABLE == 0 {
            ApicMode::Disabled
        } else if self.apic_base & APIC_BASE_X2APIC_ENABLE != 0 {
            ApicMode::X2Apic
        } else {
            ApicMode::XApic
        }
    }

    fn hardware_enabled(&self) -> bool {
        self.mode() != ApicMode::Disabled
    }

    /// SVR bit 8: the guest's software enable.
    pub fn software_enabled(&self) -> bool {
        self.svr & SPIV_APIC_ENABLED != 0
    }

    /// Hardware- and software-enabled: fixed interrupts are accepted.
    fn enabled(&self) -> bool {
        self.hardware_enabled() && self.software_enabled()
    }

    /// The APIC id in the current mode: the 32-bit x2APIC id (the vCPU
    /// index, read-only) in x2APIC mode, the 8-bit xAPIC id otherwise.
    pub fn apic_id(&self) -> u32 {
        if self.mode() == ApicMode::X2Apic {
            self.vcpu_index
        } else {
            u32::from(self.xapic_id)
        }
    }

    // ---- IA32_APIC_BASE -------------------------------------------------

    /// IA32_APIC_BASE as RDMSR reads it.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// The guest-physical address of the xAPIC page.
    pub fn mmio_base(&self) -> u64 {
        self.apic_base & APIC_BASE_ADDRESS_MASK
    }

    /// A write of IA32_APIC_BASE (KVM `kvm_apic_set_base`): reserved bits
    /// and the illegal transitions (x2APIC straight to xAPIC, disabled
    /// straight to x2APIC, x2APIC without EN; the first two allowed for
    /// the VMM) are refused, which the caller turns into #GP.  Entering
    /// xAPIC mode from disabled or x2APIC sets the xAPIC id to the vCPU
    /// index; entering x2APIC mode derives the LDR from the x2APIC id.
    pub fn set_apic_base(
        &mut self,
        value: u64,
        features: &MsrFeatures,
        origin: MsrOrigin,
    ) -> Result<(), MsrError> {
        if let Err(error) = validate_apic_base_write(self.apic_base, value, features, origin) {
            self.counters.apic_base_refused += 1;
            return Err(error);
        }
        let old_mode = self.mode();
        self.apic_base = value;
        let new_mode = self.mode();
        if new_mode != old_mode {
            if old_mode == ApicMode::X2Apic {
                // The x2APIC LDR and ICR destination mean nothing in
                // xAPIC format; drop what does not fit it.
                self.ldr = 0;
                self.icr_high &= ICR2_XAPIC_MASK;
            }
            match new_mode {
                ApicMode::X2Apic => self.ldr = x2apic_ldr(self.vcpu_index),
                ApicMode::XApic => self.xapic_id = self.vcpu_index as u8,
                ApicMode::Disabled => {}
            }
        }
        Ok(())
    }

    // ---- priorities -----------------------------------------------------

    /// The processor priority (SDM 11.8.3.1): TPR if its class is at
    /// least the highest in-service class, else that class.
    pub fn processor_priority(&self) -> u8 {
        let isr_class = self.isr.highest().unwrap_or(0) & 0xf0;
        if self.tpr & 0xf0 >= isr_class {
            self.tpr
        } else {
            isr_class
        }
    }

    /// The arbitration priority (SDM 11.6.2.4) the router compares for
    /// lowest-priority delivery: TPR if its class is at least the
    /// highest requested one and above the highest in-service one, else
    /// the highest of the three classes.
    pub fn arbitration_priority(&self) -> u8 {
        let tpr_class = self.tpr & 0xf0;
        let isr_class = self.isr.highest().unwrap_or(0) & 0xf0;
        let irr_class = self.irr.highest().unwrap_or(0) & 0xf0;
        if tpr_class >= irr_class && tpr_class > isr_class {
            self.tpr
        } else {
            tpr_class.max(isr_class).max(irr_class)
        }
    }

    /// CR8 as MOV from CR8 reads it: TPR bits 7:4.
    pub fn cr8(&self) -> u64 {
        u64::from(self.tpr >> 4)
    }

    /// MOV to CR8 (the caller has refused bits 63:4): TPR = CR8 << 4.
    pub fn set_cr8(&mut self, cr8: u64) {
        self.tpr = ((cr8 & 0xf) << 4) as u8;
    }

    /// The vector the vCPU should take now: the highest in IRR whose
    /// class is above PPR's, while the APIC is enabled.
    pub fn highest_deliverable_vector(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        (vector & 0xf0 > self.processor_priority()).then_some(vector)
    }

    /// The vCPU took `vector` (an interrupt acknowledge cycle): IRR to
    /// ISR, raising PPR.  Returns false, changing nothing, if `vector` was
    /// not requested.
    pub fn acknowledge(&mut self, vector: u8) -> bool {
        if !self.irr.contains(vector) {
            return false;
        }
        self.irr.remove(vector);
        self.isr.insert(vector);
        true
    }

    /// The in-service register.
    pub fn isr(&self) -> &VectorSet {
        &self.isr
    }

    /// The interrupt request register.
    pub fn irr(&self) -> &VectorSet {
        &self.irr
    }

    /// The trigger mode register.
    pub fn tmr(&self) -> &VectorSet {
        &self.tmr
    }

    // ---- events for the vCPU loop ---------------------------------------

    /// Takes a pending NMI.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// Takes a pending INIT (the vCPU resets into wait-for-SIPI, or runs
    /// on as the BSP).
    pub fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.init_pending)
    }

    /// Takes a pending SIPI's vector; the vCPU loop drops it unless the
    /// vCPU waits for SIPI.
    pub fn take_sipi(&mut self) -> Option<u8> {
        self.sipi_vector.take()
    }

    /// Whether the vCPU should acknowledge the 8259 PIC now: an ExtINT
    /// message arrived (taken by this call), or a LINT pin in ExtINT mode
    /// is asserted and unmasked, or LINT0 is asserted while the APIC is
    /// hardware-disabled (it is then the processor's INTR).  The pins are
    /// level-sensitive: they stay pending until the PIC lowers its
    /// output.
    pub fn take_extint(&mut self) -> bool {
        let message = core::mem::take(&mut self.extint_pending);
        message || self.extint_line_asserted()
    }

    fn extint_line_asserted(&self) -> bool {
        if !self.hardware_enabled() {
            return self.lint_level[0];
        }
        (self.lint_level[0] && is_unmasked_extint(self.lvt_lint0))
            || (self.lint_level[1] && is_unmasked_extint(self.lvt_lint1))
    }

    /// Whether the PIC's interrupts reach this vCPU at all (KVM
    /// `kvm_apic_accept_pic_intr`): hardware-disabled, or LINT0 unmasked
    /// in ExtINT mode.
    pub fn accepts_pic_interrupts(&self) -> bool {
        !self.hardware_enabled() || is_unmasked_extint(self.lvt_lint0)
    }

    // ---- acceptance -----------------------------------------------------

    /// Whether `message` is for this LAPIC (KVM `kvm_apic_match_dest`).
    /// The shorthands compare `message.source` with this LAPIC's
    /// [`Lapic::apic_id`].  A hardware-disabled LAPIC matches nothing.
    /// As KVM without `KVM_CAP_X2APIC_API`, a non-IPI (no source) with
    /// destination 0xff is a broadcast to x2APIC-mode LAPICs too.
    pub fn matches_destination(&self, message: &ApicMessage) -> bool {
        if !self.hardware_enabled() {
            return false;
        }
        let own_id = Some(self.apic_id());
        match message.shorthand {
            Shorthand::ToSelf => message.source == own_id,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => message.source != own_id,
            Shorthand::None => {
                let x2apic = self.mode() == ApicMode::X2Apic;
                let destination =
                    if x2apic && message.source.is_none() && message.dest == XAPIC_BROADCAST {
                        X2APIC_BROADCAST
                    } else {
                        message.dest
                    };
                match message.dest_mode {
                    DestMode::Physical => self.matches_physical(destination),
                    DestMode::Logical => self.matches_logical(destination),
                }
            }
        }
    }

    fn is_broadcast(&self, destination: u32) -> bool {
        let broadcast = if self.mode() == ApicMode::X2Apic {
            X2APIC_BROADCAST
        } else {
            XAPIC_BROADCAST
        };
        destination == broadcast
    }

    fn matches_physical(&self, destination: u32) -> bool {
        if self.is_broadcast(destination) {
            return true;
        }
        // KVM's hotplug rule: an id that does not fit 8 bits is matched
        // against the x2APIC id even in xAPIC mode.
        if self.mode() == ApicMode::X2Apic || destination > 0xff {
            destination == self.vcpu_index
        } else {
            destination == u32::from(self.xapic_id)
        }
    }

    fn matches_logical(&self, destination: u32) -> bool {
        if self.is_broadcast(destination) {
            return true;
        }
        if self.mode() == ApicMode::X2Apic {
            return self.ldr >> 16 == destination >> 16 && self.ldr & destination & 0xffff != 0;
        }
        let logical_id = self.ldr >> 24;
        match self.dfr {
            DFR_FLAT => logical_id & destination != 0,
            DFR_CLUSTER => {
                logical_id >> 4 == destination >> 4 && logical_id & destination & 0xf != 0
            }
            _ => false,
        }
    }

    /// Accepts a message the router found this LAPIC to match.  Returns
    /// whether it was accepted (a fixed interrupt to a disabled APIC, a
    /// de-assert, an SMI or an illegal vector is not).
    pub fn accept(&mut self, message: &ApicMessage) -> bool {
        self.accept_interrupt(
            message.delivery,
            message.vector,
            message.level_triggered,
            message.assert,
        )
    }

    /// KVM `__apic_accept_irq`.
    fn accept_interrupt(
        &mut self,
        delivery: DeliveryMode,
        vector: u8,
        level_triggered: bool,
        assert: bool,
    ) -> bool {
        match delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if (level_triggered && !assert) || !self.enabled() {
                    self.counters.interrupts_dropped += 1;
                    return false;
                }
                if vector < FIRST_LEGAL_VECTOR {
                    self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
                    return false;
                }
                self.irr.insert(vector);
                if level_triggered {
                    self.tmr.insert(vector);
                } else {
                    self.tmr.remove(vector);
                }
            }
            DeliveryMode::Smi => {
                self.counters.unsupported_delivery += 1;
                return false;
            }
            DeliveryMode::Nmi => self.nmi_pending = true,
            DeliveryMode::Init => {
                if level_triggered && !assert {
                    return false;
                }
                // A new INIT supersedes a SIPI not yet taken.
                self.init_pending = true;
                self.sipi_vector = None;
            }
            DeliveryMode::StartUp => self.sipi_vector = Some(vector),
            DeliveryMode::ExtInt => self.extint_pending = true,
        }
        true
    }

    /// Records `errors` in ESR and raises the LVT error interrupt for
    /// each new one (an error LVT with an illegal vector records the
    /// receive error once and stops there).
    fn record_error(&mut self, errors: u32) {
        self.counters.illegal_vectors += 1;
        let new = errors & !self.esr_pending;
        self.esr_pending |= errors;
        if new != 0 {
            self.local_deliver(Lvt::Error);
        }
    }

    /// Delivers a local interrupt through its LVT entry (KVM
    /// `kvm_apic_local_deliver`).
    fn local_deliver(&mut self, lvt: Lvt) -> bool {
        let entry = self.lvt(lvt);
        if !self.hardware_enabled() || entry & LVT_MASKED != 0 {
            return false;
        }
        match delivery_mode_of(entry) {
            Some(delivery) => self.accept_interrupt(
                delivery,
                (entry & LVT_VECTOR) as u8,
                entry & LVT_LEVEL_TRIGGER != 0,
                true,
            ),
            None => false,
        }
    }

    /// A LINT pin changed level.  A rising edge delivers through the
    /// pin's LVT entry (fixed, NMI, INIT or ExtINT; masked entries
    /// deliver nothing); ExtINT is level-sensitive (see
    /// [`Lapic::take_extint`]).  With the APIC hardware-disabled, LINT0
    /// is INTR and LINT1 is NMI (SDM 11.4.3).
    pub fn set_lint(&mut self, pin: LintPin, level: bool) {
        let (index, lvt) = match pin {
            LintPin::Lint0 => (0, Lvt::Lint0),
            LintPin::Lint1 => (1, Lvt::Lint1),
        };
        let rising = level && !self.lint_level[index];
        self.lint_level[index] = level;
        if !rising {
            return;
        }
        if !self.hardware_enabled() {
            if pin == LintPin::Lint1 {
                self.nmi_pending = true;
            }
            return;
        }
        if self.lvt(lvt) & LVT_MODE_MASK != LVT_MODE_EXTINT {
            self.local_deliver(lvt);
        }
    }

    // ---- EOI and IPIs ---------------------------------------------------

    /// EOI (KVM `apic_set_eoi`): the highest in-service vector is done;
    /// a level-triggered one is broadcast to the IOAPIC.
    pub fn eoi(&mut self, env: &mut dyn DeviceEnv) {
        let Some(vector) = self.isr.highest() else {
            return;
        };
        self.isr.remove(vector);
        if self.tmr.contains(vector) {
            env.eoi_broadcast(vector);
        }
    }

    /// Sends the IPI that ICR (`low`, `high`) describes.
    fn send_ipi(&mut self, env: &mut dyn DeviceEnv, low: u32, high: u32) {
        let Some(delivery) = delivery_mode_of(low) else {
            self.counters.unsupported_delivery += 1;
            return;
        };
        let vector = (low & LVT_VECTOR) as u8;
        if matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
            && vector < FIRST_LEGAL_VECTOR
        {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return;
        }
        let shorthand = match (low >> 18) & 0x3 {
            0 => Shorthand::None,
            1 => Shorthand::ToSelf,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        let dest = if self.mode() == ApicMode::X2Apic {
            high
        } else {
            high >> 24
        };
        env.send_apic_message(ApicMessage {
            dest,
            dest_mode: if low & ICR_DEST_LOGICAL != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            delivery,
            vector,
            level_triggered: low & ICR_LEVEL_TRIGGER != 0,
            assert: low & ICR_ASSERT != 0,
            shorthand,
            source: Some(self.apic_id()),
        });
    }

    // ---- registers ------------------------------------------------------

    fn lvt(&self, lvt: Lvt) -> u32 {
        match lvt {
            Lvt::Timer => self.lvt_timer,
            Lvt::Thermal => self.lvt_thermal,
            Lvt::PerfCounter => self.lvt_perf,
            Lvt::Lint0 => self.lvt_lint0,
            Lvt::Lint1 => self.lvt_lint1,
            Lvt::Error => self.lvt_error,
        }
    }

    fn lvt_mut(&mut self, lvt: Lvt) -> &mut u32 {
        match lvt {
            Lvt::Timer => &mut self.lvt_timer,
            Lvt::Thermal => &mut self.lvt_thermal,
            Lvt::PerfCounter => &mut self.lvt_perf,
            Lvt::Lint0 => &mut self.lvt_lint0,
            Lvt::Lint1 => &mut self.lvt_lint1,
            Lvt::Error => &mut self.lvt_error,
        }
    }

    /// KVM_SET_CPUID2 changed whether the guest's CPUID offers the
    /// TSC-deadline timer (leaf 1 ECX bit 24; KVM's `timer_mode_mask`):
    /// later writes of the LVT timer may select that mode only with it.
    /// (VMMs set the CPUID before the guest runs; KVM does not rewrite
    /// the LVT either.)
    pub fn set_tsc_deadline_supported(&mut self, supported: bool) {
        self.tsc_deadline_supported = supported;
    }

    /// The bits an LVT write keeps; the timer's mode field is one bit
    /// without TSC-deadline support.
    fn lvt_writable_bits(&self, lvt: Lvt) -> u32 {
        let timer_modes = if self.tsc_deadline_supported { 3 } else { 1 };
        match lvt {
            Lvt::Timer => lvt.writable_bits() | timer_modes << LVT_TIMER_MODE_SHIFT,
            _ => lvt.writable_bits(),
        }
    }

    /// A 32-bit register read at xAPIC offset `offset` (16-byte aligned);
    /// `None` for a reserved or write-only register, or one that does not
    /// exist in this mode (KVM `kvm_lapic_readable_reg_mask`).  The
    /// x2APIC ICR is read by the MSR path.
    fn read_register(&self, offset: u32, now_ns: u64) -> Option<u32> {
        let xapic = self.mode() != ApicMode::X2Apic;
        let vector_word = |base: u32| ((offset - base) >> 4) as usize;
        Some(match offset {
            APIC_ID if xapic => u32::from(self.xapic_id) << 24,
            APIC_ID => self.vcpu_index,
            APIC_LVR => APIC_VERSION_VALUE,
            APIC_TASKPRI => u32::from(self.tpr),
            // KVM reads 0 (it never implemented the P6-era register);
            // the router still uses `arbitration_priority`.
            APIC_ARBPRI if xapic => 0,
            APIC_PROCPRI => u32::from(self.processor_priority()),
            APIC_LDR => self.ldr,
            APIC_DFR if xapic => self.dfr,
            APIC_SPIV => self.svr,
            0x100..=0x170 => self.isr.word(vector_word(APIC_ISR)),
            0x180..=0x1f0 => self.tmr.word(vector_word(APIC_TMR)),
            0x200..=0x270 => self.irr.word(vector_word(APIC_IRR)),
            APIC_ESR => self.esr,
            APIC_ICR => self.icr_low,
            APIC_ICR2 if xapic => self.icr_high,
            0x320..=0x370 => self.lvt(Lvt::at(offset)?),
            APIC_TMICT => self.initial_count,
            APIC_TMCCT => self.current_count(now_ns),
            APIC_TDCR => self.divide_config,
            _ => return None,
        })
    }

    /// A 32-bit register write at xAPIC offset `offset` (KVM
    /// `kvm_lapic_reg_write`); the x2APIC ICR is written by the MSR path.
    fn write_register(
        &mut self,
        env: &mut dyn DeviceEnv,
        offset: u32,
        value: u32,
    ) -> Result<(), WriteRefused> {
        let xapic = self.mode() != ApicMode::X2Apic;
        match offset {
            APIC_ID if xapic => self.xapic_id = (value >> 24) as u8,
            APIC_TASKPRI => self.tpr = value as u8,
            APIC_EOI => self.eoi(env),
            APIC_LDR if xapic => self.ldr = value & LDR_XAPIC_MASK,
            APIC_DFR if xapic => self.dfr = value | DFR_CLUSTER,
            APIC_SPIV => self.write_svr(env, value),
            APIC_ESR if !xapic && value != 0 => return Err(WriteRefused::Reserved),
            APIC_ESR => self.esr = core::mem::take(&mut self.esr_pending),
            APIC_ICR => {
                self.icr_low = value & !ICR_BUSY;
                self.send_ipi(env, self.icr_low, self.icr_high);
            }
            APIC_ICR2 if xapic => self.icr_high = value & ICR2_XAPIC_MASK,
            APIC_LVTT => {
                let mut value = value;
                if !self.software_enabled() {
                    value |= LVT_MASKED;
                }
                let old_mode = self.timer_mode();
                self.lvt_timer = value & self.lvt_writable_bits(Lvt::Timer);
                self.timer_mode_changed(env, old_mode);
            }
            0x330..=APIC_LVTERR => {
                let lvt = Lvt::at(offset).ok_or(WriteRefused::NotWritable)?;
                let masked = if self.software_enabled() { 0 } else { LVT_MASKED };
                *self.lvt_mut(lvt) = (value | masked) & lvt.writable_bits();
            }
            APIC_TMICT => self.write_initial_count(env, value),
            APIC_TDCR => self.write_divide_config(env, value),
            APIC_SELF_IPI if !xapic => {
                if value & !LVT_VECTOR != 0 {
                    return Err(WriteRefused::Reserved);
                }
                self.accept_interrupt(DeliveryMode::Fixed, value as u8, false, true);
            }
            _ => return Err(WriteRefused::NotWritable),
        }
        Ok(())
    }

    /// SVR: clearing the software enable masks every LVT entry, and they
    /// stay masked while it is clear (SDM 11.4.7.2).
    fn write_svr(&mut self, env: &mut dyn DeviceEnv, value: u32) {
        self.svr = value & SPIV_WRITABLE;
        if !self.software_enabled() {
            let old_mode = self.timer_mode();
            for lvt in ALL_LVTS {
                *self.lvt_mut(lvt) |= LVT_MASKED;
            }
            self.timer_mode_changed(env, old_mode);
        }
    }

    // ---- x2APIC MSRs ----------------------------------------------------

    /// RDMSR of an x2APIC register (0x800-0x8ff).  Every access faults
    /// outside x2APIC mode, as do the write-only (EOI, SELF_IPI) and
    /// reserved registers and the xAPIC-only ARBPRI, DFR and ICR2.
    pub fn read_msr(&mut self, env: &dyn DeviceEnv, msr: u32) -> Result<u64, MsrError> {
        let result = self.x2apic_offset(msr).and_then(|offset| {
            if offset == APIC_ICR {
                return Some(u64::from(self.icr_high) << 32 | u64::from(self.icr_low));
            }
            self.read_register(offset, env.now_ns()).map(u64::from)
        });
        result.ok_or_else(|| {
            self.counters.msr_refused += 1;
            MsrError::Unknown(msr)
        })
    }

    /// WRMSR of an x2APIC register: the ICR is 64 bits and sends the IPI;
    /// the others take 32 bits (bits 63:32 set faults).  Writes to
    /// read-only registers (ID and LDR included), reserved bits of the
    /// ICR and SELF_IPI and a non-zero ESR fault.
    pub fn write_msr(
        &mut self,
        env: &mut dyn DeviceEnv,
        msr: u32,
        value: u64,
    ) -> Result<(), MsrError> {
        let result = match self.x2apic_offset(msr) {
            None => Err(MsrError::Unknown(msr)),
            Some(APIC_ICR) => {
                if value & X2APIC_ICR_RESERVED != 0 {
                    Err(MsrError::InvalidValue { msr, value })
                } else {
                    self.icr_low = value as u32 & !ICR_BUSY;
                    self.icr_high = (value >> 32) as u32;
                    self.send_ipi(env, self.icr_low, self.icr_high);
                    Ok(())
                }
            }
            Some(_) if value >> 32 != 0 => Err(MsrError::InvalidValue { msr, value }),
            Some(offset) => self
                .write_register(env, offset, value as u32)
                .map_err(|refused| match refused {
                    WriteRefused::NotWritable => MsrError::Unknown(msr),
                    WriteRefused::Reserved => MsrError::InvalidValue { msr, value },
                }),
        };
        if result.is_err() {
            self.counters.msr_refused += 1;
        }
        result
    }

    /// The xAPIC offset of x2APIC MSR `msr`, if x2APIC mode is on.
    fn x2apic_offset(&self, msr: u32) -> Option<u32> {
        let in_range = (X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr);
        (in_range && self.mode() == ApicMode::X2Apic).then(|| (msr - X2APIC_MSR_FIRST) << 4)
    }

    // ---- timer ----------------------------------------------------------

    fn timer_id(&self) -> TimerId {
        TimerId::Lapic(self.vcpu_index)
    }

    fn timer_mode(&self) -> TimerMode {
        match (self.lvt_timer >> LVT_TIMER_MODE_SHIFT) & 0x3 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }

    fn arm_timer(&mut self, env: &mut dyn DeviceEnv, deadline_ns: u64) {
        self.timer_deadline_ns = Some(deadline_ns);
        env.set_timer(self.timer_id(), Some(deadline_ns));
    }

    fn cancel_timer(&mut self, env: &mut dyn DeviceEnv) {
        if self.timer_deadline_ns.take().is_some() {
            env.set_timer(self.timer_id(), None);
        }
    }

    /// KVM `apic_update_lvtt`: switching between TSC-deadline and the
    /// counting modes stops the timer and clears both its counts (SDM
    /// 11.5.4.1); one-shot and periodic switch without a restart.
    fn timer_mode_changed(&mut self, env: &mut dyn DeviceEnv, old_mode: TimerMode) {
        let new_mode = self.timer_mode();
        if new_mode == old_mode {
            return;
        }
        if (old_mode == TimerMode::TscDeadline) != (new_mode == TimerMode::TscDeadline) {
            self.cancel_timer(env);
            self.initial_count = 0;
            self.timer_period_ns = 0;
            self.tsc_deadline = 0;
        }
        self.limit_periodic_timer();
    }

    /// Ns for `count` ticks of the divided bus clock; cannot overflow
    /// (32 bits times at most 128).
    fn count_to_ns(&self, count: u32) -> u64 {
        u64::from(count) * u64::from(divide_value(self.divide_config))
    }

    fn limit_periodic_timer(&mut self) {
        if self.timer_mode() == TimerMode::Periodic && self.timer_period_ns != 0 {
            self.timer_period_ns = self.timer_period_ns.max(MIN_PERIODIC_TIMER_NS);
        }
    }

    fn write_initial_count(&mut self, env: &mut dyn DeviceEnv, count: u32) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.cancel_timer(env);
        self.initial_count = count;
        self.start_counting(env, None);
    }

    /// Starts the one-shot or periodic count from the initial count, or
    /// from `current_count` (a restored state).
    fn start_counting(&mut self, env: &mut dyn DeviceEnv, current_count: Option<u32>) {
        self.timer_period_ns = self.count_to_ns(self.initial_count);
        self.limit_periodic_timer();
        let period = self.timer_period_ns;
        let periodic = match self.timer_mode() {
            TimerMode::OneShot => false,
            TimerMode::Periodic => true,
            TimerMode::TscDeadline | TimerMode::Reserved => return,
        };
        if period == 0 {
            return;
        }
        let first = match current_count.map(|count| self.count_to_ns(count)) {
            None => period,
            Some(0) if periodic => period,
            Some(0) => return,
            Some(ns) => ns.min(period),
        };
        let deadline = env.now_ns().saturating_add(first);
        self.arm_timer(env, deadline);
    }

    /// A new divide configuration scales the time left of a running count
    /// (KVM `update_target_expiration`).
    fn write_divide_config(&mut self, env: &mut dyn DeviceEnv, value: u32) {
        let old_divide = divide_value(self.divide_config);
        self.divide_config = value & TDCR_WRITABLE;
        let new_divide = divide_value(self.divide_config);
        let counting = matches!(self.timer_mode(), TimerMode::OneShot | TimerMode::Periodic);
        if new_divide == old_divide || !counting || self.timer_period_ns == 0 {
            return;
        }
        self.timer_period_ns = self.count_to_ns(self.initial_count);
        self.limit_periodic_timer();
        if let Some(deadline) = self.timer_deadline_ns {
            let now = env.now_ns();
            let remaining = deadline.saturating_sub(now);
            let scaled = scale(remaining, new_divide, old_divide);
            self.arm_timer(env, now.saturating_add(scaled));
        }
    }

    /// The current count register: the time left to the next expiry in
    /// divided bus ticks; 0 when stopped or in TSC-deadline mode.
    fn current_count(&self, now_ns: u64) -> u32 {
        let counting = matches!(self.timer_mode(), TimerMode::OneShot | TimerMode::Periodic);
        let period = self.timer_period_ns;
        let running = counting && self.initial_count != 0 && period != 0;
        let (true, Some(deadline)) = (running, self.timer_deadline_ns) else {
            return 0;
        };
        let remaining = deadline.saturating_sub(now_ns);
        let remaining = if remaining > period {
            remaining % period
        } else {
            remaining
        };
        let ticks = remaining / u64::from(divide_value(self.divide_config));
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// The backend's timer for this LAPIC fired: raise the LVT timer
    /// interrupt (unless masked) and re-arm a periodic timer one period
    /// after the previous deadline, so periods do not drift; a deadline
    /// already past is moved to now rather than caught up (KVM
    /// `advance_periodic_target_expiration`).  An early callback re-arms
    /// the same deadline.
    pub fn timer_fired(&mut self, env: &mut dyn DeviceEnv) {
        let Some(deadline) = self.timer_deadline_ns else {
            self.counters.spurious_timer_callbacks += 1;
            return;
        };
        let now = env.now_ns();
        if now < deadline {
            env.set_timer(self.timer_id(), Some(deadline));
            return;
        }
        self.local_deliver(Lvt::Timer);
        match self.timer_mode() {
            TimerMode::Periodic if self.timer_period_ns != 0 => {
                let next = deadline.saturating_add(self.timer_period_ns).max(now);
                self.arm_timer(env, next);
            }
            TimerMode::TscDeadline => {
                self.tsc_deadline = 0;
                self.timer_deadline_ns = None;
            }
            _ => self.timer_deadline_ns = None,
        }
    }

    /// Whether the timer is armed with a deadline at or before `now_ns`:
    /// its expiry is due and has not been delivered (the kernel's timer
    /// for it is late or was lost).
    pub fn timer_overdue(&self, now_ns: u64) -> bool {
        self.timer_deadline_ns.is_some_and(|deadline| deadline <= now_ns)
    }

    /// RDMSR IA32_TSC_DEADLINE: the armed deadline, 0 once it fired or
    /// outside TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.hardware_enabled() && self.timer_mode() == TimerMode::TscDeadline {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR IA32_TSC_DEADLINE (KVM `kvm_set_lapic_tscdeadline_msr`):
    /// ignored outside TSC-deadline mode; 0 disarms; a deadline not
    /// after `guest_tsc_now` fires at once.  `tsc_khz` is the guest's TSC
    /// frequency; with 0 the deadline is kept but never fires, as KVM.
    pub fn write_tsc_deadline(
        &mut self,
        env: &mut dyn DeviceEnv,
        deadline_tsc: u64,
        guest_tsc_now: u64,
        tsc_khz: u32,
    ) {
        if !self.hardware_enabled() || self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.cancel_timer(env);
        self.tsc_deadline = deadline_tsc;
        if deadline_tsc == 0 || tsc_khz == 0 {
            return;
        }
        if deadline_tsc <= guest_tsc_now {
            self.local_deliver(Lvt::Timer);
            self.tsc_deadline = 0;
            return;
        }
        let ns = scale(deadline_tsc - guest_tsc_now, 1_000_000, tsc_khz);
        let deadline = env.now_ns().saturating_add(ns);
        self.arm_timer(env, deadline);
    }

    // ---- KVM_GET/SET_LAPIC ----------------------------------------------

    /// The KVM_GET_LAPIC image (`struct kvm_lapic_state`): the xAPIC
    /// register page with the current count computed at `now_ns`.  The
    /// ID is in xAPIC format (id << 24) in both modes, as KVM without
    /// `KVM_CAP_X2APIC_API`; in x2APIC mode ICR2 holds the ICR's upper
    /// 32 bits.
    pub fn to_kvm_state(&self, now_ns: u64) -> [u8; KVM_APIC_REG_SIZE] {
        let mut regs = [0u8; KVM_APIC_REG_SIZE];
        let mut put = |offset: u32, value: u32| put_register(&mut regs, offset, value);
        put(APIC_ID, self.apic_id() << 24);
        put(APIC_LVR, APIC_VERSION_VALUE);
        put(APIC_TASKPRI, u32::from(self.tpr));
        put(APIC_PROCPRI, u32::from(self.processor_priority()));
        put(APIC_LDR, self.ldr);
        put(APIC_DFR, self.dfr);
        put(APIC_SPIV, self.svr);
        for word in 0..8 {
            let step = 0x10 * word as u32;
            put(APIC_ISR + step, self.isr.word(word));
            put(APIC_TMR + step, self.tmr.word(word));
            put(APIC_IRR + step, self.irr.word(word));
        }
        put(APIC_ESR, self.esr);
        put(APIC_ICR, self.icr_low);
        put(APIC_ICR2, self.icr_high);
        for (index, lvt) in ALL_LVTS.iter().enumerate() {
            put(APIC_LVTT + 0x10 * index as u32, self.lvt(*lvt));
        }
        put(APIC_TMICT, self.initial_count);
        put(APIC_TMCCT, self.current_count(now_ns));
        put(APIC_TDCR, self.divide_config);
        regs
    }

    /// KVM_SET_LAPIC: installs the image (IA32_APIC_BASE is restored
    /// separately, before) and restarts the timer from the image's
    /// current count.  Values go through the masks of guest writes (LVT
    /// entries are not forced masked under a software-disabled SVR); in
    /// x2APIC mode the ID and LDR of the image are ignored, as KVM
    /// without `KVM_CAP_X2APIC_API`.  A TSC-deadline timer keeps its
    /// deadline (restored through the MSR).  Pending NMI/INIT/SIPI are
    /// not part of the image (KVM_SET_VCPU_EVENTS) and are left alone.
    pub fn set_from_kvm_state(
        &mut self,
        env: &mut dyn DeviceEnv,
        regs: &[u8; KVM_APIC_REG_SIZE],
    ) {
        let get = |offset: u32| register_at(regs, offset);
        let old_mode = self.timer_mode();
        let old_deadline = self.timer_deadline_ns;
        self.cancel_timer(env);
        self.svr = get(APIC_SPIV) & SPIV_WRITABLE;
        if self.mode() == ApicMode::X2Apic {
            self.ldr = x2apic_ldr(self.vcpu_index);
            self.icr_high = get(APIC_ICR2);
        } else {
            self.xapic_id = (get(APIC_ID) >> 24) as u8;
            self.ldr = get(APIC_LDR) & LDR_XAPIC_MASK;
            self.icr_high = get(APIC_ICR2) & ICR2_XAPIC_MASK;
        }
        self.tpr = get(APIC_TASKPRI) as u8;
        self.dfr = get(APIC_DFR) | DFR_CLUSTER;
        for word in 0..8 {
            let step = 0x10 * word as u32;
            self.isr.set_word(word, get(APIC_ISR + step));
            self.tmr.set_word(word, get(APIC_TMR + step));
            self.irr.set_word(word, get(APIC_IRR + step));
        }
        self.esr = get(APIC_ESR);
        self.esr_pending = 0;
        self.icr_low = get(APIC_ICR) & !ICR_BUSY;
        // Not forced masked while software-disabled: KVM restores the
        // entries as they are, and its own reset leaves the BSP's LINT0
        // unmasked under SVR 0xff.
        for (index, lvt) in ALL_LVTS.iter().enumerate() {
            let offset = APIC_LVTT + 0x10 * index as u32;
            *self.lvt_mut(*lvt) = get(offset) & self.lvt_writable_bits(*lvt);
        }
        self.divide_config = get(APIC_TDCR) & TDCR_WRITABLE;
        self.initial_count = get(APIC_TMICT);
        match self.timer_mode() {
            TimerMode::TscDeadline if old_mode == TimerMode::TscDeadline => {
                if let Some(deadline) = old_deadline {
                    self.arm_timer(env, deadline);
                }
            }
            TimerMode::TscDeadline => {
                self.tsc_deadline = 0;
                self.initial_count = 0;
                self.timer_period_ns = 0;
            }
            _ => {
                self.tsc_deadline = 0;
                self.start_counting(env, Some(get(APIC_TMCCT)));
            }
        }
    }
}

impl IoDevice for Lapic {
    /// The 4 KiB page at the APIC base (a hole outside xAPIC mode).
    fn claims(&self, space: IoSpace, addr: u64, len: usize) -> bool {
        let base = self.mmio_base();
        space == IoSpace::Mmio
            && addr >= base
            && addr - base < APIC_MMIO_LENGTH
            && (1..=8).contains(&len)
    }

    fn read(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &mut [u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        if self.mode() != ApicMode::XApic {
            self.counters.mmio_hole += 1;
            data.fill(0xff);
            return Ok(());
        }
        let offset = (addr - self.mmio_base()) as u32;
        let within = offset & 0xf;
        if !matches!(data.len(), 1 | 2 | 4) || within as usize + data.len() > 4 {
            self.counters.mmio_bad_width += 1;
            return Err(IoError::BadWidth);
        }
        let value = match self.read_register(offset & !0xf, env.now_ns()) {
            Some(value) => value,
            None => {
                self.counters.mmio_refused += 1;
                0
            }
        };
        super::u64_to_bytes(u64::from(value >> (8 * within)), data);
        Ok(())
    }

    fn write(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        if self.mode() != ApicMode::XApic {
            self.counters.mmio_hole += 1;
            return Ok(());
        }
        let offset = (addr - self.mmio_base()) as u32;
        if data.len() != 4 || offset & 0xf != 0 {
            self.counters.mmio_bad_width += 1;
            return Err(IoError::BadWidth);
        }
        if self.write_register(env, offset, bytes_u32(data)).is_err() {
            self.counters.mmio_refused += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
