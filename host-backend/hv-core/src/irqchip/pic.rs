//! The cascaded pair of 8259A programmable interrupt controllers of a PC,
//! as KVM emulates them (`arch/x86/kvm/i8259.c`, Linux 6.12).
//!
//! Wiring: the master decodes ports 20h/21h and drives the CPU's INTR pin;
//! the slave decodes A0h/A1h and its output is the master's IRQ 2.  Ports
//! 4D0h/4D1h are the PIIX edge/level control registers (ELCR) of master
//! and slave.  IRQ 0-7 are the master's pins, 8-15 the slave's.
//!
//! Programming model (8259A datasheet, "Programming the 8259A"):
//! - A write to the even port with bit 4 set is ICW1: it starts the
//!   initialization sequence, whose next writes to the odd port are ICW2
//!   (vector base, bits 7:3), ICW3 (cascade wiring; ignored, the wiring is
//!   fixed) and, if ICW1 bit 0 asked for it, ICW4 (bit 1 auto-EOI, bit 4
//!   special fully nested mode).
//! - Afterwards the odd port is OCW1, the interrupt mask (IMR).
//! - An even-port write with bits 4:3 = 00 is OCW2: non-specific EOI (001),
//!   specific EOI (011), rotate on non-specific EOI (101), rotate on
//!   specific EOI (111), set priority (110), and set/clear rotate in
//!   auto-EOI mode (100/000).
//! - An even-port write with bits 4:3 = 01 is OCW3: read IRR or ISR
//!   (bits 1:0 = 10/11), poll (bit 2), set/clear special mask mode
//!   (bits 6:5 = 11/10).
//!
//! Priorities rotate: `priority_add` is the pin of highest priority.  An
//! interrupt reaches the CPU when its IRR bit is set, its IMR bit is clear
//! and its priority is higher than that of every in-service pin (in
//! special fully nested mode the master ignores its in-service cascade
//! pin, so a higher slave pin can nest; in special mask mode masked pins
//! in service do not block).  The INTA cycle ([`Pic::acknowledge`]) moves
//! the winner from IRR to ISR (a level-triggered pin stays requested) and
//! returns its vector; auto-EOI clears the ISR bit at once.  With nothing
//! to deliver it returns IRQ 7's vector (of the slave if the cascade pin
//! won), the 8259A's spurious interrupt.
//!
//! Where this follows KVM rather than the datasheet (so that guests see
//! what they see under KVM): ICW1's single mode and level-triggered mode
//! bits are ignored (counted in [`PicCounters::unsupported_modes`]); ICW1
//! keeps the ISR; an edge pin latches a request on a rising level and the
//! ELCR (masked by `elcr_mask`: master pins 0-2 and slave pins 8 and 13
//! are always edge) makes a pin level-triggered; accesses of other than
//! one byte are ignored and read as zeros (counted in
//! [`PicCounters::non_byte_accesses`]).  Where it follows the datasheet:
//! special mask mode is honoured (KVM stores it but ignores it), and
//! [`Pic::output`] is recomputed after every write, not only after those
//! KVM recomputes it for.
//!
//! Not modelled: KVM's ack and mask notifiers (PIT reinjection, assigned
//! devices) and the per-source OR of a line (`irq_states`): the caller
//! combines sources before [`Pic::set_irq`].
//!
//! State: KVM_GET_IRQCHIP/KVM_SET_IRQCHIP carry one [`PicState`] (`struct
//! kvm_pic_state` of `arch/x86/include/uapi/asm/kvm.h`) per chip.
//!
//! The VM polls [`Pic::output`] after every call that may change it (port
//! accesses, [`Pic::set_irq`], [`Pic::set_state`], [`Pic::acknowledge`])
//! and, when it is high, kicks the vCPU that accepts PIC interrupts
//! (vCPU 0, as KVM's `pic_unlock`), which calls [`Pic::acknowledge`] when it
//! can take an external interrupt.

use super::{DeviceEnv, IoDevice, IoError, IoSpace};
use crate::kvm_api::wire::{Reader, Wire, Writer};

/// The pins of the pair: IRQ 0-7 on the master, 8-15 on the slave.
pub const PIC_NUM_PINS: u32 = 16;

/// The master's command (even) port.
pub const MASTER_PORT: u16 = 0x20;
/// The slave's command (even) port.
pub const SLAVE_PORT: u16 = 0xa0;
/// The master's ELCR; the slave's is the next port.
pub const ELCR_PORT: u16 = 0x4d0;

/// The ELCR bits a guest may set on the master: IRQ 0 (PIT), 1 (keyboard)
/// and 2 (cascade) are always edge-triggered (KVM's `kvm_pic_init`).
pub const MASTER_ELCR_MASK: u8 = 0xf8;
/// The ELCR bits a guest may set on the slave: IRQ 8 (RTC) and 13 (FPU
/// error) are always edge-triggered.
pub const SLAVE_ELCR_MASK: u8 = 0xde;

/// The master pin the slave's output is wired to.
const CASCADE_PIN: u8 = 2;
/// The pin the 8259A reports for a spurious interrupt.
const SPURIOUS_PIN: u8 = 7;

// Command-port (even) write decoding (8259A datasheet, figures 7 and 8).
const ICW1: u8 = 1 << 4;
const ICW1_IC4: u8 = 1 << 0;
const ICW1_SNGL: u8 = 1 << 1;
const ICW1_LTIM: u8 = 1 << 3;
const OCW3: u8 = 1 << 3;
const OCW3_POLL: u8 = 1 << 2;
const OCW3_READ_REGISTER: u8 = 1 << 1;
const OCW3_READ_ISR: u8 = 1 << 0;
const OCW3_SPECIAL_MASK: u8 = 1 << 6;
const OCW3_SET_SPECIAL_MASK: u8 = 1 << 5;
const ICW4_MICROPROCESSOR_8086: u8 = 1 << 0;
const ICW4_AUTO_EOI: u8 = 1 << 1;
const ICW4_SPECIAL_FULLY_NESTED: u8 = 1 << 4;
/// ICW2 holds the vector base in bits 7:3; the pin number fills bits 2:0.
const VECTOR_BASE_MASK: u8 = 0xf8;
/// The poll word's "an interrupt was pending" bit.
const POLL_PENDING: u8 = 0x80;

/// Which of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PicChip {
    /// Ports 20h/21h, IRQ 0-7, drives INTR.
    Master = 0,
    /// Ports A0h/A1h, IRQ 8-15, cascaded into the master's IRQ 2.
    Slave = 1,
}

/// What [`Pic::set_irq`] did, as KVM_IRQ_LINE_STATUS reports it (KVM's
/// `pic_set_irq1` return value: -1, 0, 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// The pin is masked in the IMR (-1).
    Masked,
    /// A request was already pending, this one merged with it (0).
    Coalesced,
    /// Delivered to the IRR, or a level change that needs no delivery (1).
    Delivered,
}

/// Where the initialization sequence is: what the next odd-port write is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum InitState {
    /// Initialized: odd-port writes are OCW1 (the IMR).
    #[default]
    Ready,
    /// After ICW1: ICW2 (the vector base) comes next.
    ExpectIcw2,
    /// After ICW2: ICW3 (cascade wiring) comes next.
    ExpectIcw3,
    /// After ICW3 when ICW1 asked for ICW4.
    ExpectIcw4,
}

impl InitState {
    /// KVM's `init_state` number.
    fn number(self) -> u8 {
        match self {
            Self::Ready => 0,
            Self::ExpectIcw2 => 1,
            Self::ExpectIcw3 => 2,
            Self::ExpectIcw4 => 3,
        }
    }

    /// From KVM's `init_state` number.  KVM would leave a chip with any
    /// other number deaf to odd-port writes until the next ICW1; it is
    /// taken as initialized here instead.
    fn from_number(number: u8) -> Self {
        match number {
            1 => Self::ExpectIcw2,
            2 => Self::ExpectIcw3,
            3 => Self::ExpectIcw4,
            _ => Self::Ready,
        }
    }
}

/// One 8259A (KVM's `struct kvm_kpic_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Chip {
    /// The pin levels last seen, for edge detection.
    last_irr: u8,
    /// Interrupt request register.
    irr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// In-service register.
    isr: u8,
    /// The pin of highest priority (0-7).
    priority_add: u8,
    /// ICW2: the vector of pin 0.
    irq_base: u8,
    /// OCW3: the even port reads the ISR instead of the IRR.
    read_isr: bool,
    /// OCW3: the next read is a poll.
    poll: bool,
    /// OCW3: special mask mode.
    special_mask: bool,
    init: InitState,
    /// ICW4: auto-EOI at the INTA cycle.
    auto_eoi: bool,
    /// OCW2: rotate priorities on auto-EOI.
    rotate_on_auto_eoi: bool,
    /// ICW4: special fully nested mode.
    special_fully_nested: bool,
    /// ICW1: an ICW4 follows.
    init4: bool,
    /// Edge (0) / level (1) trigger of each pin.
    elcr: u8,
    /// The ELCR bits the guest may set.
    elcr_mask: u8,
}

/// The highest priority set in `mask` under rotation `priority_add`: 0
/// is the highest, `None` when `mask` is empty (KVM's 8).
fn highest_priority(priority_add: u8, mask: u8) -> Option<u8> {
    (0..8u8).find(|priority| mask & pin_bit(priority.wrapping_add(priority_add)) != 0)
}

/// The bit of `pin` (taken modulo 8) in a chip register.
fn pin_bit(pin: u8) -> u8 {
    1 << (pin & 7)
}

/// The pin that has priority `priority` under rotation `priority_add`.
fn pin_of_priority(priority: u8, priority_add: u8) -> u8 {
    priority.wrapping_add(priority_add) & 7
}

impl Chip {
    const fn with_elcr_mask(elcr_mask: u8) -> Self {
        Self {
            last_irr: 0,
            irr: 0,
            imr: 0,
            isr: 0,
            priority_add: 0,
            irq_base: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init: InitState::Ready,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            init4: false,
            elcr: 0,
            elcr_mask,
        }
    }

    /// A level change on `pin` (KVM's `pic_set_irq1`).
    fn set_pin(&mut self, pin: u8, level: bool) -> LineStatus {
        let bit = pin_bit(pin);
        let mut delivered = true;
        if level {
            // A level pin requests while high; an edge pin on the rising
            // edge only.
            if self.elcr & bit != 0 || self.last_irr & bit == 0 {
                delivered = self.irr & bit == 0;
                self.irr |= bit;
            }
            self.last_irr |= bit;
        } else {
            if self.elcr & bit != 0 {
                self.irr &= !bit;
            }
            self.last_irr &= !bit;
        }
        if self.imr & bit != 0 {
            LineStatus::Masked
        } else if delivered {
            LineStatus::Delivered
        } else {
            LineStatus::Coalesced
        }
    }

    /// The pin this chip presents to its output, if any (KVM's
    /// `pic_get_irq`).
    fn pending_pin(&self, is_master: bool) -> Option<u8> {
        let requested = highest_priority(self.priority_add, self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_fully_nested && is_master {
            in_service &= !pin_bit(CASCADE_PIN);
        }
        if self.special_mask {
            in_service &= !self.imr;
        }
        match highest_priority(self.priority_add, in_service) {
            Some(current) if current <= requested => None,
            _ => Some(pin_of_priority(requested, self.priority_add)),
        }
    }

    /// The INTA cycle's effect on this chip for `pin` (KVM's
    /// `pic_intack`).
    fn intack(&mut self, pin: u8) {
        let bit = pin_bit(pin);
        self.isr |= bit;
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (pin + 1) & 7;
            }
            self.isr &= !bit;
        }
    }

    /// ICW1: start the initialization sequence (KVM's `kvm_pic_reset`).
    fn start_init(&mut self, icw1: u8) {
        self.init4 = icw1 & ICW1_IC4 != 0;
        self.last_irr = 0;
        // A pending edge request is forgotten; a level one persists while
        // its line is high.
        self.irr &= self.elcr;
        self.imr = 0;
        self.priority_add = 0;
        self.special_mask = false;
        self.read_isr = false;
        if !self.init4 {
            self.special_fully_nested = false;
            self.auto_eoi = false;
        }
        self.init = InitState::ExpectIcw2;
    }

    /// OCW2: end of interrupt, rotation, priority.
    fn ocw2(&mut self, value: u8) {
        let specific_pin = value & 7;
        match value >> 5 {
            // Clear / set rotate in auto-EOI mode.
            0b000 | 0b100 => self.rotate_on_auto_eoi = value & 0x80 != 0,
            // Non-specific EOI, optionally rotating: end the in-service
            // pin of highest priority.
            command @ (0b001 | 0b101) => {
                if let Some(priority) = highest_priority(self.priority_add, self.isr) {
                    let pin = pin_of_priority(priority, self.priority_add);
                    if command == 0b101 {
                        self.priority_add = (pin + 1) & 7;
                    }
                    self.isr &= !pin_bit(pin);
                }
            }
            // Specific EOI.
            0b011 => self.isr &= !pin_bit(specific_pin),
            // Set priority: the named pin becomes the lowest.
            0b110 => self.priority_add = (specific_pin + 1) & 7,
            // Rotate on specific EOI.
            0b111 => {
                self.priority_add = (specific_pin + 1) & 7;
                self.isr &= !pin_bit(specific_pin);
            }
            // 010: no operation.
            _ => {}
        }
    }

    /// OCW3.
    fn ocw3(&mut self, value: u8) {
        if value & OCW3_POLL != 0 {
            self.poll = true;
        }
        if value & OCW3_READ_REGISTER != 0 {
            self.read_isr = value & OCW3_READ_ISR != 0;
        }
        if value & OCW3_SPECIAL_MASK != 0 {
            self.special_mask = value & OCW3_SET_SPECIAL_MASK != 0;
        }
    }

    /// An odd-port write: an ICW during initialization, else OCW1.
    fn write_data(&mut self, value: u8, counters: &mut PicCounters) {
        match self.init {
            InitState::Ready => self.imr = value,
            InitState::ExpectIcw2 => {
                self.irq_base = value & VECTOR_BASE_MASK;
                self.init = InitState::ExpectIcw3;
            }
            // ICW3 describes the board's cascade wiring, which is fixed.
            InitState::ExpectIcw3 => {
                self.init = if self.init4 {
                    InitState::ExpectIcw4
                } else {
                    InitState::Ready
                };
            }
            InitState::ExpectIcw4 => {
                if value & ICW4_MICROPROCESSOR_8086 == 0 {
                    // 8080/8085 mode (CALL opcodes on INTA) has no meaning
                    // on x86; the vector is delivered regardless.
                    bump(&mut counters.unsupported_modes);
                }
                self.special_fully_nested = value & ICW4_SPECIAL_FULLY_NESTED != 0;
                self.auto_eoi = value & ICW4_AUTO_EOI != 0;
                self.init = InitState::Ready;
            }
        }
    }

    fn state(&self) -> PicState {
        PicState {
            last_irr: self.last_irr,
            irr: self.irr,
            imr: self.imr,
            isr: self.isr,
            priority_add: self.priority_add,
            irq_base: self.irq_base,
            read_reg_select: self.read_isr.into(),
            poll: self.poll.into(),
            special_mask: self.special_mask.into(),
            init_state: self.init.number(),
            auto_eoi: self.auto_eoi.into(),
            rotate_on_auto_eoi: self.rotate_on_auto_eoi.into(),
            special_fully_nested_mode: self.special_fully_nested.into(),
            init4: self.init4.into(),
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
        }
    }

    fn from_state(state: &PicState) -> Self {
        Self {
            last_irr: state.last_irr,
            irr: state.irr,
            imr: state.imr,
            isr: state.isr,
            priority_add: state.priority_add & 7,
            irq_base: state.irq_base,
            read_isr: state.read_reg_select != 0,
            poll: state.poll != 0,
            special_mask: state.special_mask != 0,
            init: InitState::from_number(state.init_state),
            auto_eoi: state.auto_eoi != 0,
            rotate_on_auto_eoi: state.rotate_on_auto_eoi != 0,
            special_fully_nested: state.special_fully_nested_mode != 0,
            init4: state.init4 != 0,
            elcr: state.elcr,
            elcr_mask: state.elcr_mask,
        }
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Guest accesses the PIC ignored, for a debugfs file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicCounters {
    /// Port accesses of other than one byte (ignored; reads give zeros).
    pub non_byte_accesses: u64,
    /// ICW1 single mode or level-triggered mode, or ICW4 8080 mode: not
    /// emulated (as in KVM), the chip carries on as cascaded, edge and
    /// 8086.
    pub unsupported_modes: u64,
    /// [`Pic::set_irq`] calls for a pin above 15.
    pub bad_pins: u64,
}

/// The master/slave pair (KVM's `struct kvm_pic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    chips: [Chip; 2],
    /// The master's INTR output.
    output: bool,
    counters: PicCounters,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair as KVM_CREATE_IRQCHIP leaves it: all registers zero (so
    /// nothing masked, vector base 0, initialized), KVM's ELCR masks.
    /// A `const fn`, so that a VM's irqchip can be built at compile time
    /// and copied into its allocation.
    pub const fn new() -> Self {
        Self {
            chips: [
                Chip::with_elcr_mask(MASTER_ELCR_MASK),
                Chip::with_elcr_mask(SLAVE_ELCR_MASK),
            ],
            output: false,
            counters: PicCounters {
                non_byte_accesses: 0,
                unsupported_modes: 0,
                bad_pins: 0,
            },
        }
    }

    /// The master's INTR pin: an interrupt is waiting for
    /// [`Pic::acknowledge`].
    pub fn output(&self) -> bool {
        self.output
    }

    /// What the guest did that was ignored.
    pub fn counters(&self) -> &PicCounters {
        &self.counters
    }

    /// Drives pin `irq` (0-15) to `level`; `None` (counted) for a pin that
    /// does not exist.  Edge pins latch a request on a rising level.
    pub fn set_irq(&mut self, irq: u32, level: bool) -> Option<LineStatus> {
        if irq >= PIC_NUM_PINS {
            bump(&mut self.counters.bad_pins);
            return None;
        }
        let chip = &mut self.chips[(irq / 8) as usize];
        let status = chip.set_pin((irq % 8) as u8, level);
        self.update();
        Some(status)
    }

    /// Recomputes the slave's request on the cascade pin and the master's
    /// output (KVM's `pic_update_irq`).
    fn update(&mut self) {
        let [master, slave] = &mut self.chips;
        if slave.pending_pin(false).is_some() {
            // The slave's INT is an edge on the master's cascade pin.
            master.set_pin(CASCADE_PIN, true);
            master.set_pin(CASCADE_PIN, false);
        }
        self.output = master.pending_pin(true).is_some();
    }

    /// The INTA cycle: the vector of the interrupt the CPU takes, with the
    /// chips' IRR/ISR updated; IRQ 7's vector of the master (or, if the
    /// cascade pin won, of the slave) when nothing is pending (KVM's
    /// `kvm_pic_read_irq`).
    pub fn acknowledge(&mut self) -> u8 {
        let [master, slave] = &mut self.chips;
        let vector = match master.pending_pin(true) {
            Some(CASCADE_PIN) => {
                master.intack(CASCADE_PIN);
                let pin = match slave.pending_pin(false) {
                    Some(pin) => {
                        slave.intack(pin);
                        pin
                    }
                    None => SPURIOUS_PIN,
                };
                slave.irq_base.wrapping_add(pin)
            }
            Some(pin) => {
                master.intack(pin);
                master.irq_base.wrapping_add(pin)
            }
            None => master.irq_base.wrapping_add(SPURIOUS_PIN),
        };
        self.update();
        vector
    }

    /// A poll-mode read (OCW3 bit 2): acknowledges and ends the pending
    /// interrupt at once and returns 80h | pin, or 07h if none (KVM's
    /// `pic_poll_read`).
    fn poll_read(&mut self, index: usize) -> u8 {
        let is_master = index == 0;
        let Some(pin) = self.chips[index].pending_pin(is_master) else {
            self.update();
            return SPURIOUS_PIN;
        };
        if !is_master {
            // The slave's request reached the master through the cascade
            // pin, which this read services too.
            let master = &mut self.chips[0];
            master.isr &= !pin_bit(CASCADE_PIN);
            master.irr &= !pin_bit(CASCADE_PIN);
        }
        let chip = &mut self.chips[index];
        chip.irr &= !pin_bit(pin);
        chip.isr &= !pin_bit(pin);
        // KVM leaves the output alone after a master poll of the cascade
        // pin: the slave still presents its request.
        if !is_master || pin != CASCADE_PIN {
            self.update();
        }
        POLL_PENDING | pin
    }

    fn read_port(&mut self, port: u16) -> Option<u8> {
        let value = match port {
            MASTER_PORT | 0x21 | SLAVE_PORT | 0xa1 => {
                let index = usize::from(port >= SLAVE_PORT);
                let chip = &mut self.chips[index];
                if chip.poll {
                    chip.poll = false;
                    self.poll_read(index)
                } else if port & 1 == 1 {
                    chip.imr
                } else if chip.read_isr {
                    chip.isr
                } else {
                    chip.irr
                }
            }
            ELCR_PORT | 0x4d1 => self.chips[usize::from(port & 1)].elcr,
            _ => return None,
        };
        Some(value)
    }

    fn write_port(&mut self, port: u16, value: u8) -> Option<()> {
        match port {
            MASTER_PORT | 0x21 | SLAVE_PORT | 0xa1 => {
                let chip = &mut self.chips[usize::from(port >= SLAVE_PORT)];
                if port & 1 == 1 {
                    chip.write_data(value, &mut self.counters);
                } else if value & ICW1 != 0 {
                    if value & (ICW1_SNGL | ICW1_LTIM) != 0 {
                        bump(&mut self.counters.unsupported_modes);
                    }
                    chip.start_init(value);
                } else if value & OCW3 != 0 {
                    chip.ocw3(value);
                } else {
                    chip.ocw2(value);
                }
            }
            ELCR_PORT | 0x4d1 => {
                let chip = &mut self.chips[usize::from(port & 1)];
                chip.elcr = value & chip.elcr_mask;
            }
            _ => return None,
        }
        self.update();
        Some(())
    }

    /// One chip's KVM_GET_IRQCHIP state.
    pub fn state(&self, chip: PicChip) -> PicState {
        self.chips[chip as usize].state()
    }

    /// KVM_SET_IRQCHIP for one chip, then the output is recomputed.  The
    /// flags become 0 or 1, `priority_add` is taken modulo 8 and an
    /// `init_state` above 3 as 0 (initialized); the rest is taken as
    /// given, as KVM does (including `elcr_mask`).
    pub fn set_state(&mut self, chip: PicChip, state: &PicState) {
        self.chips[chip as usize] = Chip::from_state(state);
        self.update();
    }
}

/// The port ranges KVM registers: each pair of two ports.
fn claimed_range(addr: u64) -> Option<u64> {
    [MASTER_PORT, SLAVE_PORT, ELCR_PORT]
        .into_iter()
        .map(u64::from)
        .find(|base| (*base..*base + 2).contains(&addr))
}

impl IoDevice for Pic {
    /// Claims accesses inside 20h-21h, A0h-A1h or 4D0h-4D1h, of any width
    /// that fits (KVM's bus decodes the range; the chip then ignores
    /// wider accesses).
    fn claims(&self, space: IoSpace, addr: u64, len: usize) -> bool {
        let Some(base) = claimed_range(addr) else {
            return false;
        };
        space == IoSpace::Port
            && len != 0
            && addr.saturating_add(len as u64) <= base + 2
    }

    /// A one-byte read of a register; wider reads give zeros (counted), as
    /// in KVM.
    fn read(
        &mut self,
        _env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &mut [u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        data.fill(0);
        if data.len() != 1 {
            bump(&mut self.counters.non_byte_accesses);
            return Ok(());
        }
        let port = u16::try_from(addr).map_err(|_| IoError::Unclaimed)?;
        data[0] = self.read_port(port).ok_or(IoError::Unclaimed)?;
        Ok(())
    }

    /// A one-byte write; wider writes are dropped (counted), as in KVM.
    fn write(
        &mut self,
        _env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        if !self.claims(space, addr, data.len()) {
            return Err(IoError::Unclaimed);
        }
        let [value] = data else {
            bump(&mut self.counters.non_byte_accesses);
            return Ok(());
        };
        let port = u16::try_from(addr).map_err(|_| IoError::Unclaimed)?;
        self.write_port(port, *value).ok_or(IoError::Unclaimed)
    }
}

/// `struct kvm_pic_state` (`arch/x86/include/uapi/asm/kvm.h`): one chip
/// in KVM_GET_IRQCHIP/KVM_SET_IRQCHIP (`chip_id` 0 master, 1 slave).  16
/// bytes, no padding; the flags are 0 or 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicState {
    /// The pin levels last seen (edge detection).
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register.
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The pin of highest priority (0-7).
    pub priority_add: u8,
    /// The vector of pin 0 (ICW2).
    pub irq_base: u8,
    /// 1: the command port reads the ISR, 0: the IRR (OCW3).
    pub read_reg_select: u8,
    /// 1: the next read is a poll (OCW3).
    pub poll: u8,
    /// 1: special mask mode (OCW3).
    pub special_mask: u8,
    /// 0 initialized, 1-3: ICW2, ICW3 or ICW4 comes next.
    pub init_state: u8,
    /// 1: auto-EOI (ICW4).
    pub auto_eoi: u8,
    /// 1: rotate priorities on auto-EOI (OCW2).
    pub rotate_on_auto_eoi: u8,
    /// 1: special fully nested mode (ICW4).
    pub special_fully_nested_mode: u8,
    /// 1: the last ICW1 announced an ICW4.
    pub init4: u8,
    /// Edge (0) / level (1) trigger of each pin (PIIX ELCR).
    pub elcr: u8,
    /// The ELCR bits the guest may set.
    pub elcr_mask: u8,
}

impl PicState {
    /// The header's field order.
    fn to_array(self) -> [u8; 16] {
        [
            self.last_irr,
            self.irr,
            self.imr,
            self.isr,
            self.priority_add,
            self.irq_base,
            self.read_reg_select,
            self.poll,
            self.special_mask,
            self.init_state,
            self.auto_eoi,
            self.rotate_on_auto_eoi,
            self.special_fully_nested_mode,
            self.init4,
            self.elcr,
            self.elcr_mask,
        ]
    }

    const fn from_array(bytes: [u8; 16]) -> Self {
        let [last_irr, irr, imr, isr, priority_add, irq_base, read_reg_select, poll, special_mask, init_state, auto_eoi, rotate_on_auto_eoi, special_fully_nested_mode, init4, elcr, elcr_mask] =
            bytes;
        Self {
            last_irr,
            irr,
            imr,
            isr,
            priority_add,
            irq_base,
            read_reg_select,
            poll,
            special_mask,
            init_state,
            auto_eoi,
            rotate_on_auto_eoi,
            special_fully_nested_mode,
            init4,
            elcr,
            elcr_mask,
        }
    }
}

/// The byte image of the C struct (`Wire::from_bytes` / `to_bytes`).
impl Wire for PicState {
    const SIZE: usize = 16;
    const ZERO: Self = Self::from_array([0; 16]);

    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        reader.take::<16>().map(Self::from_array)
    }

    fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
        writer.put(self.to_array())
    }
}

#[cfg(test)]
mod tests;
