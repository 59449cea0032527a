//! The I/O APIC as KVM emulates it: an 82093AA-style IOAPIC with 24
//! input pins, reached through a two-register MMIO window.
//!
//! Sources: the Intel 82093AA I/O APIC datasheet (section 3: IOREGSEL,
//! IOWIN, IOAPICID, IOAPICVER, IOAPICARB and the redirection table), and
//! KVM's model of it in `arch/x86/kvm/ioapic.c` and `ioapic.h` of Linux
//! 6.12, whose observable behaviour this module follows (KVM, not the
//! datasheet, is what guests and VMMs have been tested against):
//!
//! - The window is [`IOAPIC_MEM_LENGTH`] bytes at the base address
//!   ([`IOAPIC_DEFAULT_BASE_ADDRESS`] after reset).  IOREGSEL (offset 0)
//!   holds 8 bits and selects the register IOWIN (offset 0x10) shows.
//!   Other offsets read 0 and ignore writes.
//! - The version register reads 0x0017_0011: version 0x11 (no EOI
//!   register, unlike version 0x20), 24 entries.  The id register keeps
//!   bits 27:24; the arbitration register reads like the id and ignores
//!   writes.
//! - A redirection entry ([`RedirectionEntry`]) is written half by half.
//!   Remote IRR and delivery status are read-only; remote IRR is cleared
//!   when the entry is made edge-triggered (Linux and Xen use that as an
//!   EOI on IOAPICs without an EOI register).  The reserved bits keep what
//!   the guest wrote, as in KVM.
//! - The polarity bit is stored but not applied: the level a caller
//!   passes to [`Ioapic::set_irq`] means "asserted"
//!   (KVM_CAP_IOAPIC_POLARITY_IGNORED).
//! - Edge-triggered pins deliver on a rising edge of the line; raising a
//!   line that is already up is "coalesced".  Level-triggered pins deliver
//!   while the line is up and remote IRR is clear, and delivering sets
//!   remote IRR until the EOI of the vector ([`Ioapic::eoi`]), after which
//!   a line still up delivers again.  Unmasking a level-triggered entry
//!   whose line is up, or making an entry level-triggered while its line
//!   is up, delivers at once.
//! - A level-triggered interrupt that is still asserted at its 10000th
//!   successive EOI ([`IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`]) is not
//!   re-delivered at once: KVM defers it by 10 ms so that a guest that
//!   never silences a device still makes progress.  Here [`Ioapic::eoi`]
//!   reports [`EoiFollowUp::InjectLater`] and the backend calls
//!   [`Ioapic::deferred_eoi_inject`] after [`IOAPIC_EOI_INJECT_DELAY_NS`].
//!
//! Each input line is the OR of up to 64 sources (KVM's `irq_states`
//! bitmaps and irq source ids: userspace's KVM_IRQ_LINE is source 0, the
//! irqfd resampler 1, the PIT its own).
//!
//! Not modelled, with the reason: the RTC (GSI 8) coalescing report and
//! AVIC's lazy EOI need per-vCPU LAPIC state and are the VM router's;
//! mask notifiers and the irqfd resampler live with the GSI router, so
//! unmasking an asserted level-triggered line always re-delivers (KVM's
//! behaviour when no resampler is registered); the "scan IOAPIC" requests
//! that keep APICv's EOI-exit bitmaps in sync have no use without APICv.
//!
//! Bad guest input (an IOREGSEL naming no register, a write to a read-only
//! register, an odd width or offset) is counted in [`IoapicCounters`] and
//! answered as KVM answers it; nothing here panics on any input.

use super::{
    ApicMessage, DeliveryMode, DestMode, DeviceEnv, IoDevice, IoError, IoSpace, Shorthand,
};
use crate::kvm_api::errno::Error;
use crate::kvm_api::layout::kvm_ioapic_state;
use crate::kvm_api::wire::Wire;

pinned_constants! {
    /// KVM's IOAPIC numbers (not uapi); `tests/kvm_uapi_header.rs` finds
    /// each `#define` in the file [`IOAPIC_CONSTANT_SOURCES`] names and
    /// compares.
    table IOAPIC_CONSTANTS;

    /// The input pins (`KVM_IOAPIC_NUM_PINS` of the uapi).
    IOAPIC_NUM_PINS: usize = 24;
    /// The version KVM reports: 0x11, the 82093AA's, without the EOI
    /// register of version 0x20.
    IOAPIC_VERSION_ID: u32 = 0x11;
    /// Where the MMIO window is after reset.
    IOAPIC_DEFAULT_BASE_ADDRESS: u64 = 0xfec0_0000;
    /// The bytes of the MMIO window.
    IOAPIC_MEM_LENGTH: u64 = 0x100;
    /// Offset of IOREGSEL in the window.
    IOAPIC_REG_SELECT: u64 = 0x00;
    /// Offset of IOWIN in the window.
    IOAPIC_REG_WINDOW: u64 = 0x10;
    /// IOREGSEL value of the id register.
    IOAPIC_REG_APIC_ID: u32 = 0x00;
    /// IOREGSEL value of the version register.
    IOAPIC_REG_VERSION: u32 = 0x01;
    /// IOREGSEL value of the arbitration register.
    IOAPIC_REG_ARB_ID: u32 = 0x02;
    /// Successive EOIs of a still-asserted level-triggered pin after which
    /// re-delivery is deferred.
    IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT: u32 = 10000;
}

/// The kernel file defining each of [`IOAPIC_CONSTANTS`].
pub const IOAPIC_CONSTANT_SOURCES: &[(&str, &str)] = &[
    ("IOAPIC_NUM_PINS", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_VERSION_ID", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_DEFAULT_BASE_ADDRESS", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_MEM_LENGTH", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_REG_SELECT", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_REG_WINDOW", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_REG_APIC_ID", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_REG_VERSION", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_REG_ARB_ID", "arch/x86/kvm/ioapic.h"),
    ("IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT", "arch/x86/kvm/ioapic.c"),
];

/// How long KVM defers the re-delivery of an interrupt storm's next
/// interrupt: `HZ / 100` jiffies, i.e. 10 ms whatever HZ is.
pub const IOAPIC_EOI_INJECT_DELAY_NS: u64 = 10_000_000;

/// What the version register reads: the highest entry index in bits
/// 23:16, the version in bits 7:0.
pub const IOAPIC_VERSION_REGISTER: u32 = ((IOAPIC_NUM_PINS as u32 - 1) << 16) | IOAPIC_VERSION_ID;

/// The IOREGSEL value of the low half of redirection entry 0; entry `n`
/// is at `0x10 + 2n` (low) and `0x11 + 2n` (high).
pub const IOAPIC_REG_REDIRECTION_BASE: u32 = 0x10;

/// The size of `struct kvm_ioapic_state`, the byte image of
/// [`Ioapic::to_kvm_state`].
pub const KVM_IOAPIC_STATE_SIZE: usize = kvm_ioapic_state::SIZE;

/// The irq source id of KVM_IRQ_LINE (`KVM_USERSPACE_IRQ_SOURCE_ID`).
pub const USERSPACE_IRQ_SOURCE_ID: u32 = 0;

/// Irq source ids are bits of a `u64` per pin.
pub const IRQ_SOURCE_IDS: u32 = 64;

/// The bits of a redirection entry that only the IOAPIC changes: delivery
/// status (12) and remote IRR (14).
const READ_ONLY_BITS: u64 = RedirectionEntry::DELIVERY_STATUS | RedirectionEntry::REMOTE_IRR;

/// One 64-bit redirection table entry (82093AA section 3.2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectionEntry(pub u64);

impl RedirectionEntry {
    /// Bit 11: the destination is a logical mask, not an APIC id.
    pub const DEST_MODE_LOGICAL: u64 = 1 << 11;
    /// Bit 12 (read-only): a message is waiting to be sent.  KVM sends at
    /// once, so it always reads 0 unless KVM_SET_IRQCHIP set it.
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Bit 13: the input is active low (stored, not applied).
    pub const POLARITY_LOW: u64 = 1 << 13;
    /// Bit 14 (read-only): a level-triggered interrupt was delivered and
    /// its EOI has not come yet.
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Bit 15: level-triggered (else edge).
    pub const LEVEL_TRIGGERED: u64 = 1 << 15;
    /// Bit 16: the pin is masked.
    pub const MASKED: u64 = 1 << 16;

    /// Bits 7:0.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    /// The delivery mode field, bits 10:8.
    pub const fn delivery_mode_bits(self) -> u32 {
        ((self.0 >> 8) & 7) as u32
    }
    /// Bit 11.
    pub const fn dest_mode(self) -> DestMode {
        if self.0 & Self::DEST_MODE_LOGICAL != 0 {
            DestMode::Logical
        } else {
            DestMode::Physical
        }
    }
    /// Bit 12.
    pub const fn delivery_status(self) -> bool {
        self.0 & Self::DELIVERY_STATUS != 0
    }
    /// Bit 13.
    pub const fn polarity_low(self) -> bool {
        self.0 & Self::POLARITY_LOW != 0
    }
    /// Bit 14.
    pub const fn remote_irr(self) -> bool {
        self.0 & Self::REMOTE_IRR != 0
    }
    /// Bit 15.
    pub const fn level_triggered(self) -> bool {
        self.0 & Self::LEVEL_TRIGGERED != 0
    }
    /// Bit 16.
    pub const fn masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }
    /// Bits 63:56: an APIC id (physical) or a logical mask.
    pub const fn destination(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// The message this entry sends, or `None` for the reserved delivery
    /// mode 3 (see [`delivery_mode_from_bits`]).
    pub fn message(self) -> Option<ApicMessage> {
        Some(ApicMessage {
            dest: u32::from(self.destination()),
            dest_mode: self.dest_mode(),
            delivery: delivery_mode_from_bits(self.delivery_mode_bits())?,
            vector: self.vector(),
            level_triggered: self.level_triggered(),
            assert: true,
            shorthand: Shorthand::None,
            source: None,
        })
    }

    fn with(self, bits: u64, set: bool) -> Self {
        if set {
            Self(self.0 | bits)
        } else {
            Self(self.0 & !bits)
        }
    }
}

/// The delivery mode of a 3-bit field as the IOAPIC, MSI data and the
/// ICR encode it (SDM vol. 3 11.6.1, 11.11.2): 0 fixed, 1 lowest priority,
/// 2 SMI, 4 NMI, 5 INIT, 6 start-up, 7 ExtINT.  Mode 3 is reserved; KVM
/// passes it on as its internal "remote read" mode, which only unhalts the
/// target vCPU, so here it is refused (`None`) and its sender counts it.
/// Mode 6 is reserved in the 82093AA datasheet, but KVM delivers it as a
/// start-up IPI, and so does this model.  Bits above 2 are ignored.
pub const fn delivery_mode_from_bits(bits: u32) -> Option<DeliveryMode> {
    match bits & 7 {
        0 => Some(DeliveryMode::Fixed),
        1 => Some(DeliveryMode::LowestPriority),
        2 => Some(DeliveryMode::Smi),
        4 => Some(DeliveryMode::Nmi),
        5 => Some(DeliveryMode::Init),
        6 => Some(DeliveryMode::StartUp),
        7 => Some(DeliveryMode::ExtInt),
        _ => None,
    }
}

/// What became of a change of an input line (KVM's return value of
/// `kvm_ioapic_set_irq`, which KVM_IRQ_LINE_STATUS reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqOutcome {
    /// An interrupt message was sent.
    Delivered,
    /// The line went (or stayed) low.
    Lowered,
    /// An edge-triggered line that was already up: nothing new to send.
    Coalesced,
    /// Not sent: the entry is masked, a level-triggered interrupt is
    /// waiting for its EOI (remote IRR), the delivery mode is reserved, or
    /// the pin or source id does not exist.
    Ignored,
}

impl IrqOutcome {
    /// Whether an interrupt message was sent.
    pub const fn delivered(self) -> bool {
        matches!(self, IrqOutcome::Delivered)
    }

    /// KVM's status value: > 0 delivered (or lowered), 0 coalesced, < 0
    /// ignored.  KVM counts the vCPUs that accepted the message; a device
    /// model cannot see that, so a sent message is 1.
    pub const fn kvm_status(self) -> i32 {
        match self {
            IrqOutcome::Delivered | IrqOutcome::Lowered => 1,
            IrqOutcome::Coalesced => 0,
            IrqOutcome::Ignored => -1,
        }
    }
}

/// What the backend must do after [`Ioapic::eoi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum EoiFollowUp {
    /// Nothing.
    None,
    /// An interrupt storm was detected: call
    /// [`Ioapic::deferred_eoi_inject`] in [`IOAPIC_EOI_INJECT_DELAY_NS`]
    /// (KVM's delayed `eoi_inject` work).
    InjectLater,
}

/// Events worth a debugfs line: guest mistakes and storm guards.  Counters
/// wrap; they survive [`Ioapic::reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoapicCounters {
    /// IOWIN reads with IOREGSEL naming no register (read all ones).
    pub bad_register_reads: u64,
    /// IOWIN writes with IOREGSEL naming no register (ignored).
    pub bad_register_writes: u64,
    /// IOWIN writes to the version or arbitration register (ignored).
    pub read_only_writes: u64,
    /// Accesses to window offsets other than IOREGSEL and IOWIN (read 0,
    /// writes ignored).
    pub unknown_offset_accesses: u64,
    /// Accesses of 1, 2 or 8 bytes: served as KVM serves them (narrower
    /// reads return the low bytes, writes are zero-extended, 8-byte
    /// accesses use the low 32 bits).
    pub odd_width_accesses: u64,
    /// Accesses of another width (refused with [`IoError::BadWidth`]).
    pub bad_width_accesses: u64,
    /// Deliveries not made because the entry's delivery mode is reserved.
    pub reserved_delivery_mode: u64,
    /// `set_irq` calls with a pin or irq source id out of range (a bug
    /// of the caller; KVM would `BUG_ON`).
    pub bad_lines: u64,
    /// Interrupt messages sent.
    pub messages_sent: u64,
    /// Times the successive-EOI guard deferred a re-delivery.
    pub eoi_storms: u64,
}

/// Counts one event; counters wrap rather than overflow.
fn count(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// The IOAPIC: KVM's `struct kvm_ioapic` without the locking and
/// notifier plumbing.
#[derive(Clone, Debug)]
pub struct Ioapic {
    base_address: u64,
    ioregsel: u32,
    id: u32,
    /// Asserted lines, bit per pin.
    irr: u32,
    /// Edge-triggered pins whose current assertion was delivered; hidden
    /// from the saved `irr` so that a restore does not deliver them again.
    irr_delivered: u32,
    redirtbl: [RedirectionEntry; IOAPIC_NUM_PINS],
    /// Per pin, the irq source ids holding the line up.
    line_sources: [u64; IOAPIC_NUM_PINS],
    /// Per pin, successive EOIs after which the line was still up.
    successive_eois: [u32; IOAPIC_NUM_PINS],
    counters: IoapicCounters,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// An IOAPIC as KVM_CREATE_IRQCHIP makes it: every entry masked and
    /// otherwise zero, at the default base.
    pub const fn new() -> Self {
        Self {
            base_address: IOAPIC_DEFAULT_BASE_ADDRESS,
            ioregsel: 0,
            id: 0,
            irr: 0,
            irr_delivered: 0,
            redirtbl: [RedirectionEntry(RedirectionEntry::MASKED); IOAPIC_NUM_PINS],
            line_sources: [0; IOAPIC_NUM_PINS],
            successive_eois: [0; IOAPIC_NUM_PINS],
            counters: IoapicCounters {
                bad_register_reads: 0,
                bad_register_writes: 0,
                read_only_writes: 0,
                unknown_offset_accesses: 0,
                odd_width_accesses: 0,
                bad_width_accesses: 0,
                reserved_delivery_mode: 0,
                bad_lines: 0,
                messages_sent: 0,
                eoi_storms: 0,
            },
        }
    }

    /// KVM's `kvm_ioapic_reset`: masks every entry (their other bits
    /// stay), moves the window back to the default base and clears the
    /// select, id and pending lines.  The sources' line levels are kept, as
    /// in KVM; a pending deferred injection becomes a no-op.
    pub fn reset(&mut self) {
        for entry in self.redirtbl.iter_mut() {
            *entry = entry.with(RedirectionEntry::MASKED, true);
        }
        self.base_address = IOAPIC_DEFAULT_BASE_ADDRESS;
        self.ioregsel = 0;
        self.irr = 0;
        self.irr_delivered = 0;
        self.id = 0;
        self.successive_eois = [0; IOAPIC_NUM_PINS];
    }

    /// The guest-physical address of the MMIO window.
    pub const fn base_address(&self) -> u64 {
        self.base_address
    }

    /// The asserted input lines, bit per pin.
    pub const fn irr(&self) -> u32 {
        self.irr
    }

    /// Redirection entry `pin`, or `None` past the last pin.
    pub fn entry(&self, pin: usize) -> Option<RedirectionEntry> {
        self.redirtbl.get(pin).copied()
    }

    /// The event counters.
    pub const fn counters(&self) -> &IoapicCounters {
        &self.counters
    }

    /// Sets input line `pin` from KVM_IRQ_LINE (source 0): `level` true
    /// asserts it.  Delivers as the module documentation describes.
    pub fn set_irq(&mut self, env: &mut dyn DeviceEnv, pin: u32, level: bool) -> IrqOutcome {
        self.set_irq_from_source(env, pin, USERSPACE_IRQ_SOURCE_ID, level)
    }

    /// Sets source `source`'s level of input line `pin`; the line is up
    /// while any source holds it up (KVM's `__kvm_irq_line_state`).
    pub fn set_irq_from_source(
        &mut self,
        env: &mut dyn DeviceEnv,
        pin: u32,
        source: u32,
        level: bool,
    ) -> IrqOutcome {
        let Some(sources) = usize::try_from(pin)
            .ok()
            .and_then(|pin| self.line_sources.get_mut(pin))
            .filter(|_| source < IRQ_SOURCE_IDS)
        else {
            count(&mut self.counters.bad_lines);
            return IrqOutcome::Ignored;
        };
        if level {
            *sources |= 1 << source;
        } else {
            *sources &= !(1 << source);
        }
        let line_up = *sources != 0;
        self.line_changed(env, pin as usize, line_up)
    }

    /// Drops source `source` from every line without re-evaluating them
    /// (KVM's `kvm_ioapic_clear_all`, when an irq source id is freed).
    pub fn clear_source(&mut self, source: u32) {
        if source < IRQ_SOURCE_IDS {
            for sources in self.line_sources.iter_mut() {
                *sources &= !(1 << source);
            }
        }
    }

    /// KVM's `ioapic_set_irq`: the line of `pin` (< 24) is now `line_up`.
    fn line_changed(&mut self, env: &mut dyn DeviceEnv, pin: usize, line_up: bool) -> IrqOutcome {
        let bit = 1u32 << pin;
        if !line_up {
            self.irr &= !bit;
            return IrqOutcome::Lowered;
        }
        let was_up = self.irr & bit != 0;
        self.irr |= bit;
        if !self.redirtbl[pin].level_triggered() {
            self.irr_delivered &= !bit;
            if was_up {
                return IrqOutcome::Coalesced;
            }
        }
        self.service(env, pin)
    }

    /// KVM's `ioapic_service`: sends the message of `pin` (< 24) unless it
    /// is masked or a level-triggered interrupt waits for its EOI.
    fn service(&mut self, env: &mut dyn DeviceEnv, pin: usize) -> IrqOutcome {
        let entry = self.redirtbl[pin];
        if entry.masked() || (entry.level_triggered() && entry.remote_irr()) {
            return IrqOutcome::Ignored;
        }
        let Some(message) = entry.message() else {
            count(&mut self.counters.reserved_delivery_mode);
            return IrqOutcome::Ignored;
        };
        if entry.level_triggered() {
            self.redirtbl[pin] = entry.with(RedirectionEntry::REMOTE_IRR, true);
        } else {
            self.irr_delivered |= 1 << pin;
        }
        count(&mut self.counters.messages_sent);
        env.send_apic_message(message);
        IrqOutcome::Delivered
    }

    /// The EOI of a level-triggered `vector` reached the IOAPIC (a LAPIC's
    /// EOI broadcast, [`DeviceEnv::eoi_broadcast`]; with directed EOI the
    /// LAPIC does not broadcast).  Every entry with that vector has remote
    /// IRR cleared and, if its line is still up and it is unmasked,
    /// delivers again, up to the interrupt-storm guard.  As in KVM the
    /// entry's own trigger mode is not checked: the LAPIC saw the vector
    /// as level-triggered.
    pub fn eoi(&mut self, env: &mut dyn DeviceEnv, vector: u8) -> EoiFollowUp {
        let mut follow_up = EoiFollowUp::None;
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = self.redirtbl[pin];
            if entry.vector() != vector {
                continue;
            }
            let entry = entry.with(RedirectionEntry::REMOTE_IRR, false);
            self.redirtbl[pin] = entry;
            if entry.masked() || self.irr & (1 << pin) == 0 {
                self.successive_eois[pin] = 0;
                continue;
            }
            self.successive_eois[pin] += 1;
            if self.successive_eois[pin] >= IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT {
                self.successive_eois[pin] = 0;
                count(&mut self.counters.eoi_storms);
                follow_up = EoiFollowUp::InjectLater;
            } else {
                let _ = self.service(env, pin);
            }
        }
        follow_up
    }

    /// The deferred work of the storm guard (KVM's
    /// `kvm_ioapic_eoi_inject_work`): every level-triggered pin whose line
    /// is up and whose remote IRR is clear delivers.  Harmless when
    /// nothing is pending.
    pub fn deferred_eoi_inject(&mut self, env: &mut dyn DeviceEnv) {
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = self.redirtbl[pin];
            if entry.level_triggered() && self.irr & (1 << pin) != 0 && !entry.remote_irr() {
                let _ = self.service(env, pin);
            }
        }
    }

    /// The redirection entry and half (true: bits 63:32) IOREGSEL selects,
    /// if it selects one.
    fn selected_entry(&self) -> Option<(usize, bool)> {
        let index = self.ioregsel.checked_sub(IOAPIC_REG_REDIRECTION_BASE)? >> 1;
        let index = usize::try_from(index).ok().filter(|&i| i < IOAPIC_NUM_PINS)?;
        Some((index, self.ioregsel & 1 != 0))
    }

    /// What IOWIN reads (KVM's `ioapic_read_indirect`).
    fn read_window(&mut self) -> u32 {
        match self.ioregsel {
            IOAPIC_REG_VERSION => IOAPIC_VERSION_REGISTER,
            IOAPIC_REG_APIC_ID | IOAPIC_REG_ARB_ID => (self.id & 0xf) << 24,
            _ => match self.selected_entry() {
                Some((pin, high)) => {
                    let bits = self.redirtbl[pin].0;
                    if high {
                        (bits >> 32) as u32
                    } else {
                        bits as u32
                    }
                }
                None => {
                    count(&mut self.counters.bad_register_reads);
                    u32::MAX
                }
            },
        }
    }

    /// A write to IOWIN (KVM's `ioapic_write_indirect`).
    fn write_window(&mut self, env: &mut dyn DeviceEnv, value: u32) -> Result<(), IoError> {
        match self.ioregsel {
            IOAPIC_REG_APIC_ID => {
                self.id = (value >> 24) & 0xf;
                Ok(())
            }
            IOAPIC_REG_VERSION | IOAPIC_REG_ARB_ID => {
                count(&mut self.counters.read_only_writes);
                Err(IoError::Refused)
            }
            _ => match self.selected_entry() {
                Some((pin, high)) => {
                    self.write_entry(env, pin, high, value);
                    Ok(())
                }
                None => {
                    count(&mut self.counters.bad_register_writes);
                    Err(IoError::Refused)
                }
            },
        }
    }

    /// Writes half of redirection entry `pin` (< 24).
    fn write_entry(&mut self, env: &mut dyn DeviceEnv, pin: usize, high: bool, value: u32) {
        let old = self.redirtbl[pin].0;
        let written = if high {
            (old & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        };
        let mut entry = RedirectionEntry((written & !READ_ONLY_BITS) | (old & READ_ONLY_BITS));
        if !entry.level_triggered() {
            // The implicit EOI of version-0x11 IOAPICs that Linux and Xen
            // rely on: switching to edge clears remote IRR.
            entry = entry.with(RedirectionEntry::REMOTE_IRR, false);
        }
        self.redirtbl[pin] = entry;
        // An unmask or a switch to level while the line is up: deliver now
        // rather than wait for an edge that will not come.
        if entry.level_triggered()
            && self.irr & (1 << pin) != 0
            && !entry.masked()
            && !entry.remote_irr()
        {
            let _ = self.service(env, pin);
        }
    }

    /// The byte image of `struct kvm_ioapic_state` for KVM_GET_IRQCHIP.
    /// As in KVM, edge-triggered lines already delivered are left out of
    /// `irr`, so that restoring the image does not deliver them again.
    pub fn to_kvm_state(&self) -> [u8; KVM_IOAPIC_STATE_SIZE] {
        let mut redirtbl = [0u64; IOAPIC_NUM_PINS];
        for (raw, entry) in redirtbl.iter_mut().zip(self.redirtbl.iter()) {
            *raw = entry.0;
        }
        let state = kvm_ioapic_state {
            base_address: self.base_address,
            ioregsel: self.ioregsel,
            id: self.id,
            irr: self.irr & !self.irr_delivered,
            pad: 0,
            redirtbl,
        };
        let mut image = [0u8; KVM_IOAPIC_STATE_SIZE];
        // The image is exactly the struct's size, so this cannot fail.
        let _ = state.to_bytes(&mut image);
        image
    }

    /// Loads a `struct kvm_ioapic_state` image from KVM_SET_IRQCHIP (the
    /// first [`KVM_IOAPIC_STATE_SIZE`] bytes of `image`; shorter is
    /// [`Error::ShortBuffer`] and changes nothing).  Like KVM, everything
    /// is taken as is (the base, any IOREGSEL and id, read-only and
    /// reserved entry bits); then the lines of `irr` are raised again,
    /// which delivers the ones their entries let through.  The sources'
    /// line levels are not part of the image and stay as they were.
    pub fn set_from_kvm_state(
        &mut self,
        env: &mut dyn DeviceEnv,
        image: &[u8],
    ) -> Result<(), Error> {
        let state = kvm_ioapic_state::from_bytes(image).ok_or(Error::ShortBuffer)?;
        self.base_address = state.base_address;
        self.ioregsel = state.ioregsel;
        self.id = state.id;
        for (entry, raw) in self.redirtbl.iter_mut().zip(state.redirtbl) {
            *entry = RedirectionEntry(raw);
        }
        self.irr = 0;
        self.irr_delivered = 0;
        for pin in 0..IOAPIC_NUM_PINS {
            if state.irr & (1 << pin) != 0 {
                let _ = self.line_changed(env, pin, true);
            }
        }
        Ok(())
    }

    /// The window offset of an access, if the window holds all of it.
    fn window_offset(&self, space: IoSpace, addr: u64, len: usize) -> Option<u64> {
        if space != IoSpace::Mmio {
            return None;
        }
        let offset = addr.checked_sub(self.base_address)?;
        let end = offset.checked_add(u64::try_from(len).ok()?)?;
        (len != 0 && end <= IOAPIC_MEM_LENGTH).then_some(offset)
    }

    /// Counts the width of an access: Ok for the widths KVM serves.
    fn check_width(&mut self, len: usize) -> Result<(), IoError> {
        match len {
            4 => Ok(()),
            1 | 2 | 8 => {
                count(&mut self.counters.odd_width_accesses);
                Ok(())
            }
            _ => {
                count(&mut self.counters.bad_width_accesses);
                Err(IoError::BadWidth)
            }
        }
    }
}

/// The MMIO window.  Accesses of 4 bytes are the architected ones; 1, 2
/// and 8 bytes are served as KVM serves them (counted), other widths are
/// [`IoError::BadWidth`].  Only offsets 0x00 (IOREGSEL) and 0x10 (IOWIN)
/// exactly are registers: an unaligned access reads 0 and writes nothing,
/// as in KVM.  The window follows the base KVM_SET_IRQCHIP loads (KVM
/// keeps its bus registration at the old base, so after a move its IOAPIC
/// answers at neither; a VMM restores the default base in practice).
impl IoDevice for Ioapic {
    fn claims(&self, space: IoSpace, addr: u64, len: usize) -> bool {
        self.window_offset(space, addr, len).is_some()
    }

    fn read(
        &mut self,
        _env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &mut [u8],
    ) -> Result<(), IoError> {
        let offset = self
            .window_offset(space, addr, data.len())
            .ok_or(IoError::Unclaimed)?;
        self.check_width(data.len())?;
        let value = match offset {
            IOAPIC_REG_SELECT => self.ioregsel,
            IOAPIC_REG_WINDOW => self.read_window(),
            _ => {
                count(&mut self.counters.unknown_offset_accesses);
                0
            }
        };
        // An 8-byte read returns the register zero-extended.
        super::u64_to_bytes(u64::from(value), data);
        Ok(())
    }

    fn write(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        let offset = self
            .window_offset(space, addr, data.len())
            .ok_or(IoError::Unclaimed)?;
        self.check_width(data.len())?;
        // An 8-byte write uses its low 32 bits.
        let value = super::bytes_to_u64(data) as u32;
        match offset {
            IOAPIC_REG_SELECT => {
                self.ioregsel = value & 0xff;
                Ok(())
            }
            IOAPIC_REG_WINDOW => self.write_window(env, value),
            _ => {
                count(&mut self.counters.unknown_offset_accesses);
                Err(IoError::Refused)
            }
        }
    }
}

#[cfg(test)]
mod tests;
