//! The VM-level in-kernel irqchip (KVM_CREATE_IRQCHIP): the local APICs
//! of the vCPUs, the 8259 PIC pair, the IOAPIC, the optional 8254 PIT
//! (KVM_CREATE_PIT2) and the GSI routing table, wired together as KVM
//! wires them (`arch/x86/kvm/irq.c`, `irq_comm.c`, `lapic.c`
//! `kvm_irq_delivery_to_apic`, Linux 6.12).
//!
//! # Locking
//!
//! [`VmIrqchip`] is one value behind one VM-wide lock in the kernel
//! module.  Every device reaches the others only through messages routed
//! here, so a single lock makes each operation (an MMIO access, a
//! KVM_IRQ_LINE, a timer callback) atomic across all chips, with no lock
//! ordering to get wrong.  The cost: vCPUs serialize on the lock for
//! every APIC access, EOI, IPI and interrupt acknowledge, and a timer
//! callback waits for a vCPU's access to finish.  Each operation is short
//! (a few register updates and at most [`MAX_EVENTS_PER_OPERATION`]
//! routed events) and pvrs VMs have at most a handful of vCPUs
//! ([`MAX_IRQCHIP_VCPUS`]), so contention stays small beside the cost of
//! a nested exit; KVM's per-device locks and lock-free IRR updates would
//! be the next step if it did not.
//!
//! # Operations and their effects
//!
//! Every operation that can change what a vCPU should see takes the
//! current time (`now_ns`, the backend's monotonic clock) and returns an
//! [`Effects`] value: the vCPUs to kick (make exit from the guest, or
//! wake from a halt) and the timers to arm or cancel ([`TimerId`], the
//! latest request per timer).  The backend applies them after dropping
//! the lock.  A kick of the vCPU that made the call is harmless; the
//! backend may skip it.
//!
//! Inside an operation, what a device causes (an IPI from a LAPIC's ICR,
//! an IOAPIC message, the PIT's GSI 0 pulse, a LAPIC's EOI broadcast) is
//! queued ([`QUEUE_CAPACITY`]) and handled after the device call returns,
//! in order: a message goes to the matching LAPICs, a GSI change through
//! the routing table to the PIC and/or IOAPIC (which may queue a
//! message), an EOI to the IOAPIC (which may re-deliver, queueing a
//! message).  A full queue drops the event and an operation handles at
//! most [`MAX_EVENTS_PER_OPERATION`] events; both are counted in
//! [`VmIrqchipCounters::dropped_events`], so a guest that builds a loop
//! (a level-triggered line re-delivered at every EOI) cannot keep the
//! lock forever.
//!
//! # Delivery (KVM `kvm_irq_delivery_to_apic`)
//!
//! - Fixed, NMI, INIT, SIPI, ExtINT: every LAPIC that
//!   [`Lapic::matches_destination`] accepts it.
//! - Lowest priority: among the matching LAPICs that are software
//!   enabled, the one of lowest [`Lapic::arbitration_priority`], ties to
//!   the lowest vCPU index.  KVM compares a rotating `apic_arb_prio`
//!   counter or hashes the vector instead; the SDM's arbitration priority
//!   is what the guest can reason about, and a fixed tie rule keeps tests
//!   and fuzzing deterministic.
//! - The count of accepting LAPICs is the delivery status (-1 when none
//!   matched; 0 when the matching ones refused, e.g. software-disabled),
//!   as KVM_SIGNAL_MSI and KVM_IRQ_LINE_STATUS report it.
//!
//! # The vCPU side
//!
//! The exit handler reaches the irqchip through
//! [`crate::vcpu::InKernelIrqchip`], one vCPU's view of it;
//! [`VcpuIrqchip`] implements it over a `&mut VmIrqchip` and collects
//! the effects.  A kernel module that locks per call implements the
//! trait on its own vCPU type with the same bodies, taking the VM-wide
//! lock around each.  The IOAPIC's interrupt-storm deferral is the timer
//! [`TimerId::IoapicEoiInject`], like the devices' own timers.
//!
//! NMI, INIT and SIPI are taken out of the LAPIC as they arrive and kept
//! per vCPU here, so that an INIT followed by a SIPI before the target
//! vCPU ran keeps both, in order (a LAPIC's own INIT reset, done when the
//! vCPU takes the INIT, would clear the SIPI).
//!
//! # PIC interrupts
//!
//! The master PIC's output reaches every vCPU whose LAPIC
//! [`Lapic::accepts_pic_interrupts`] (hardware-disabled, or LINT0
//! unmasked in ExtINT mode: the BSP after reset); the first one to
//! acknowledge takes it, as in KVM.  The PIC has priority over the LAPIC
//! (`kvm_cpu_get_interrupt`).  Each line of the PIC is the OR of its
//! sources (KVM_IRQ_LINE is [`USERSPACE_IRQ_SOURCE_ID`], the PIT
//! [`PIT_IRQ_SOURCE_ID`]), as the IOAPIC keeps it per pin.
//!
//! # Not modelled
//!
//! The PIT's NMI watchdog path (`kvm_apic_nmi_wd_deliver`), PIT tick
//! reinjection (KVM_REINJECT_CONTROL), irqfd and its resampler, the RTC
//! coalescing report, the split irqchip (KVM_CAP_SPLIT_IRQCHIP), AVIC,
//! and KVM_CAP_X2APIC_API's 32-bit MSI destinations.

use super::ioapic::{EoiFollowUp, Ioapic, IOAPIC_EOI_INJECT_DELAY_NS};
use super::lapic::{
    delivery_mode_of, Lapic, KVM_APIC_REG_SIZE, MSR_IA32_TSC_DEADLINE, X2APIC_MSR_FIRST, X2APIC_MSR_LAST,
};
use super::pic::{LineStatus, Pic, PicChip, PicState, PIC_NUM_PINS};
use super::pit::{Pit, PitConfig, PitState2};
use super::routing::{msi_message, GsiRoutingTable, RouteTarget, RoutingOptions};
use super::{ApicMessage, DeliveryMode, DestMode, DeviceEnv, IoDevice, IoSpace, Shorthand, TimerId};
use crate::kvm_api::constants::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};
use crate::kvm_api::errno::Error;
use crate::kvm_api::layout::kvm_irqchip;
use crate::kvm_api::wire::Wire;
use crate::msr::{MsrError, MsrFeatures, MsrOrigin};
use crate::pv::PvSendIpi;
use crate::pvrs_abi::hypercall::KVM_EINVAL;
use crate::vcpu::InKernelIrqchip;

pub use super::ioapic::USERSPACE_IRQ_SOURCE_ID;

/// The irq source id of the PIT's GSI 0 pulses (KVM allocates the first
/// free id after userspace's 0 and the irqfd resampler's 1).
pub const PIT_IRQ_SOURCE_ID: u32 = 2;

/// The most vCPUs an irqchip serves: the kick mask is a `u64`.
pub const MAX_IRQCHIP_VCPUS: usize = 64;

/// Events (messages, GSI changes, EOIs) one operation can hold queued.
pub const QUEUE_CAPACITY: usize = 64;

/// Events one operation handles at most; the rest are dropped and
/// counted.  A level-triggered line re-delivered at every EOI makes one
/// event per EOI, so this bounds nothing a guest needs.
pub const MAX_EVENTS_PER_OPERATION: u32 = 256;

/// What a timer should do after an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerRequest {
    Unchanged,
    Set(Option<u64>),
}

/// What the backend must do after an operation: kick vCPUs and arm or
/// cancel timers.  Only the last request per timer is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Effects<const MAX_VCPUS: usize> {
    /// Bit `i`: make vCPU `i` notice new events (IPI it out of the guest,
    /// or wake it from a halt).
    pub kick: u64,
    lapic_timers: [TimerRequest; MAX_VCPUS],
    pit_timer: TimerRequest,
    ioapic_timer: TimerRequest,
}

impl<const MAX_VCPUS: usize> Default for Effects<MAX_VCPUS> {
    fn default() -> Self {
        Self::NONE
    }
}

impl<const MAX_VCPUS: usize> Effects<MAX_VCPUS> {
    /// Nothing to do.
    pub const NONE: Self = Self {
        kick: 0,
        lapic_timers: [TimerRequest::Unchanged; MAX_VCPUS],
        pit_timer: TimerRequest::Unchanged,
        ioapic_timer: TimerRequest::Unchanged,
    };

    fn slot(&mut self, timer: TimerId) -> Option<&mut TimerRequest> {
        match timer {
            TimerId::Lapic(index) => self.lapic_timers.get_mut(usize::try_from(index).ok()?),
            TimerId::PitChannel0 => Some(&mut self.pit_timer),
            TimerId::IoapicEoiInject => Some(&mut self.ioapic_timer),
        }
    }

    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>) {
        if let Some(slot) = self.slot(timer) {
            *slot = TimerRequest::Set(deadline_ns);
        }
    }

    /// The request for `timer`: `None` if unchanged, `Some(None)` to
    /// cancel it, `Some(Some(deadline_ns))` to arm it.
    pub fn timer(&self, timer: TimerId) -> Option<Option<u64>> {
        let request = match timer {
            TimerId::Lapic(index) => *self.lapic_timers.get(usize::try_from(index).ok()?)?,
            TimerId::PitChannel0 => self.pit_timer,
            TimerId::IoapicEoiInject => self.ioapic_timer,
        };
        match request {
            TimerRequest::Unchanged => None,
            TimerRequest::Set(deadline) => Some(deadline),
        }
    }

    /// Every timer request: `(timer, Some(deadline_ns))` arms (replacing
    /// an earlier deadline; one in the past fires at once), `(timer,
    /// None)` cancels.  The backend calls [`VmIrqchip::timer_fired`] when
    /// an armed timer expires.
    pub fn timers(&self) -> impl Iterator<Item = (TimerId, Option<u64>)> + '_ {
        let lapics = (0..MAX_VCPUS).map(|index| TimerId::Lapic(index as u32));
        lapics
            .chain([TimerId::PitChannel0, TimerId::IoapicEoiInject])
            .filter_map(|timer| self.timer(timer).map(|deadline| (timer, deadline)))
    }

    /// Whether vCPU `vcpu` is to be kicked.
    pub fn kicks(&self, vcpu: usize) -> bool {
        vcpu < 64 && self.kick & (1 << vcpu) != 0
    }

    /// Adds `other`'s kicks and timer requests (`other`'s win).
    pub fn merge(&mut self, other: &Self) {
        self.kick |= other.kick;
        for (mine, theirs) in self.lapic_timers.iter_mut().zip(other.lapic_timers) {
            if theirs != TimerRequest::Unchanged {
                *mine = theirs;
            }
        }
        if other.pit_timer != TimerRequest::Unchanged {
            self.pit_timer = other.pit_timer;
        }
        if other.ioapic_timer != TimerRequest::Unchanged {
            self.ioapic_timer = other.ioapic_timer;
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.kick == 0 && self.timers().next().is_none()
    }
}

/// Something a device caused, handled after its call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queued {
    Message(ApicMessage),
    Gsi { gsi: u32, level: bool, source: u32 },
    Eoi(u8),
}

/// A fixed-capacity FIFO of [`Queued`] events.
struct Queue {
    items: [Option<Queued>; QUEUE_CAPACITY],
    head: usize,
    len: usize,
}

impl Queue {
    const fn new() -> Self {
        Self {
            items: [None; QUEUE_CAPACITY],
            head: 0,
            len: 0,
        }
    }

    /// Appends `event`; false (nothing stored) when full.
    fn push(&mut self, event: Queued) -> bool {
        if self.len >= QUEUE_CAPACITY {
            return false;
        }
        let slot = (self.head + self.len) % QUEUE_CAPACITY;
        self.items[slot] = Some(event);
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<Queued> {
        if self.len == 0 {
            return None;
        }
        let event = self.items[self.head].take();
        self.head = (self.head + 1) % QUEUE_CAPACITY;
        self.len -= 1;
        event
    }
}

/// The [`DeviceEnv`] of one operation: the clock, the queue and the
/// effects collected so far.
struct VmEnv<const MAX_VCPUS: usize> {
    now_ns: u64,
    queue: Queue,
    effects: Effects<MAX_VCPUS>,
    /// Events dropped because the queue was full.
    dropped: u64,
    /// The PIC's inputs or state changed: kick its vCPU if its output is
    /// high at the end.
    pic_touched: bool,
}

impl<const MAX_VCPUS: usize> VmEnv<MAX_VCPUS> {
    fn new(now_ns: u64) -> Self {
        Self {
            now_ns,
            queue: Queue::new(),
            effects: Effects::NONE,
            dropped: 0,
            pic_touched: false,
        }
    }

    fn push(&mut self, event: Queued) {
        if !self.queue.push(event) {
            self.dropped = self.dropped.wrapping_add(1);
        }
    }

    fn kick(&mut self, vcpu: usize) {
        if vcpu < 64 {
            self.effects.kick |= 1 << vcpu;
        }
    }
}

impl<const MAX_VCPUS: usize> DeviceEnv for VmEnv<MAX_VCPUS> {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>) {
        self.effects.set_timer(timer, deadline_ns);
    }
    fn send_apic_message(&mut self, message: ApicMessage) {
        self.push(Queued::Message(message));
    }
    /// Only the PIT drives a GSI from inside an operation.
    fn set_gsi(&mut self, gsi: u32, level: bool) {
        self.push(Queued::Gsi {
            gsi,
            level,
            source: PIT_IRQ_SOURCE_ID,
        });
    }
    fn eoi_broadcast(&mut self, vector: u8) {
        self.push(Queued::Eoi(vector));
    }
}

/// Events of one vCPU that are not vectors, taken out of its LAPIC as
/// they arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VcpuEvents {
    nmi: bool,
    init: bool,
    sipi: Option<u8>,
    /// An ExtINT message: acknowledge the PIC.
    extint: bool,
    /// A KVM_HC_KICK_CPU arrived (KVM's `pv_unhalted`): the next or
    /// current halt ends; cleared when the vCPU leaves its halt.
    pv_unhalt: bool,
}

impl VcpuEvents {
    const NONE: Self = Self {
        nmi: false,
        init: false,
        sipi: None,
        extint: false,
        pv_unhalt: false,
    };
}

/// Where the interrupt a vCPU should take next comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingInterrupt {
    /// The 8259 PIC: its vector is known only at the acknowledge.
    Pic,
    /// The LAPIC's highest deliverable vector.
    Lapic(u8),
}

/// VM-wide counters, for a debugfs file.  Every counter wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmIrqchipCounters {
    /// Messages routed to the LAPICs.
    pub messages: u64,
    /// Messages no LAPIC accepted (no match, disabled, illegal vector).
    pub messages_undelivered: u64,
    /// Events dropped: queue full or over [`MAX_EVENTS_PER_OPERATION`].
    pub dropped_events: u64,
    /// GSI changes (KVM_IRQ_LINE and the PIT).
    pub gsi_changes: u64,
    /// MSIs (KVM_SIGNAL_MSI and MSI routes).
    pub msis: u64,
    /// MSIs with the reserved delivery mode.
    pub bad_msis: u64,
    /// EOI broadcasts handed to the IOAPIC.
    pub eoi_broadcasts: u64,
    /// IOAPIC interrupt storms deferred.
    pub eoi_storms_deferred: u64,
    /// Interrupts acknowledged from the PIC.
    pub pic_acknowledges: u64,
    /// Accesses or events naming a vCPU without a LAPIC.
    pub bad_vcpu: u64,
}

fn bump(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// The PIC of KVM_IRQCHIP_PIC_MASTER or (any other id) the slave.
fn pic_chip(chip_id: u32) -> PicChip {
    if chip_id == KVM_IRQCHIP_PIC_MASTER {
        PicChip::Master
    } else {
        PicChip::Slave
    }
}

/// Whether `msr` is served by the irqchip: the x2APIC registers and
/// IA32_TSC_DEADLINE.
pub fn is_irqchip_msr(msr: u32) -> bool {
    (X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) || msr == MSR_IA32_TSC_DEADLINE
}

/// The in-kernel irqchip of a VM with up to `MAX_VCPUS` vCPUs (at most
/// [`MAX_IRQCHIP_VCPUS`]).  About 30 KiB (mostly the routing table): the
/// kernel builds it once at compile time ([`VmIrqchip::new`] is a `const
/// fn`), copies it into a heap allocation and calls
/// [`VmIrqchip::set_default_routing`] there.
#[derive(Clone, Debug)]
pub struct VmIrqchip<const MAX_VCPUS: usize> {
    lapics: [Option<Lapic>; MAX_VCPUS],
    events: [VcpuEvents; MAX_VCPUS],
    pic: Pic,
    ioapic: Ioapic,
    pit: Option<Pit>,
    routing: GsiRoutingTable,
    /// Per PIC input, the irq source ids holding it up.
    pic_sources: [u64; PIC_NUM_PINS as usize],
    counters: VmIrqchipCounters,
}

impl<const MAX_VCPUS: usize> Default for VmIrqchip<MAX_VCPUS> {
    fn default() -> Self {
        let mut chip = Self::new();
        chip.set_default_routing();
        chip
    }
}

const NO_LAPIC: Option<Lapic> = None;

impl<const MAX_VCPUS: usize> VmIrqchip<MAX_VCPUS> {
    /// Compile-time check of `MAX_VCPUS`.
    const FITS_KICK_MASK: () = assert!(
        MAX_VCPUS <= MAX_IRQCHIP_VCPUS,
        "more vCPUs than the kick mask has bits"
    );

    /// The chips as KVM_CREATE_IRQCHIP makes them, without vCPUs and, so
    /// that this can be a `const fn`, without routes: call
    /// [`VmIrqchip::set_default_routing`] next ([`Default`] does both).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS_KICK_MASK;
        Self {
            lapics: [NO_LAPIC; MAX_VCPUS],
            events: [VcpuEvents::NONE; MAX_VCPUS],
            pic: Pic::new(),
            ioapic: Ioapic::new(),
            pit: None,
            routing: GsiRoutingTable::new(),
            pic_sources: [0; PIC_NUM_PINS as usize],
            counters: VmIrqchipCounters {
                messages: 0,
                messages_undelivered: 0,
                dropped_events: 0,
                gsi_changes: 0,
                msis: 0,
                bad_msis: 0,
                eoi_broadcasts: 0,
                eoi_storms_deferred: 0,
                pic_acknowledges: 0,
                bad_vcpu: 0,
            },
        }
    }

    /// KVM's default routing (`routing::GsiRoutingTable::set_default`).
    pub fn set_default_routing(&mut self) {
        self.routing.set_default();
    }

    /// The VM-wide counters.
    pub fn counters(&self) -> &VmIrqchipCounters {
        &self.counters
    }

    /// The routing table.
    pub fn routing(&self) -> &GsiRoutingTable {
        &self.routing
    }

    /// The PIC pair.
    pub fn pic(&self) -> &Pic {
        &self.pic
    }

    /// The IOAPIC.
    pub fn ioapic(&self) -> &Ioapic {
        &self.ioapic
    }

    /// The PIT, once created.
    pub fn pit(&self) -> Option<&Pit> {
        self.pit.as_ref()
    }

    /// The LAPIC of vCPU `vcpu`, once added.
    pub fn lapic(&self, vcpu: usize) -> Option<&Lapic> {
        self.lapics.get(vcpu)?.as_ref()
    }

    /// Whether vCPU `vcpu` is the bootstrap processor (index 0, KVM's
    /// default `bsp_vcpu_id`).  A new AP starts in wait-for-INIT
    /// (KVM_MP_STATE_UNINITIALIZED), the BSP runnable.
    pub fn is_bsp(vcpu: usize) -> bool {
        vcpu == 0
    }

    /// KVM_CREATE_VCPU on a VM with this irqchip: gives vCPU `vcpu` its
    /// LAPIC at power-on state.  `tsc_deadline` offers the LVT timer's
    /// TSC-deadline mode (guest CPUID 1 ECX bit 24; the backend passes what
    /// it will advertise).  Errors: an index past `MAX_VCPUS`
    /// (`InvalidValue`), a vCPU added twice (`AlreadyExists`).
    pub fn add_vcpu(&mut self, vcpu: usize, tsc_deadline: bool) -> Result<(), Error> {
        let slot = self.lapics.get_mut(vcpu).ok_or(Error::InvalidValue)?;
        if slot.is_some() {
            return Err(Error::AlreadyExists);
        }
        *slot = Some(Lapic::new(vcpu as u32, Self::is_bsp(vcpu), tsc_deadline));
        self.events[vcpu] = VcpuEvents::NONE;
        Ok(())
    }

    /// Whether vCPU `vcpu`'s LAPIC timer is overdue at `now_ns` (see
    /// [`Lapic::timer_overdue`]).
    pub fn lapic_timer_overdue(&mut self, vcpu: usize, now_ns: u64) -> bool {
        self.lapic_mut(vcpu).is_some_and(|lapic| lapic.timer_overdue(now_ns))
    }

    /// KVM_SET_CPUID2 of vCPU `vcpu`: whether its CPUID offers the
    /// TSC-deadline timer.  A vCPU without a LAPIC is ignored.
    pub fn set_tsc_deadline_supported(&mut self, vcpu: usize, supported: bool) {
        if let Some(lapic) = self.lapic_mut(vcpu) {
            lapic.set_tsc_deadline_supported(supported);
        }
    }

    /// KVM_CREATE_PIT2 with `config` at `now_ns`.  A second PIT is
    /// `AlreadyExists` (EEXIST).
    pub fn create_pit(&mut self, config: PitConfig, now_ns: u64) -> Result<(), Error> {
        if self.pit.is_some() {
            return Err(Error::AlreadyExists);
        }
        self.pit = Some(Pit::new(config, now_ns));
        Ok(())
    }

    // -------------------------------------------------------- operations

    /// Runs the queued events and collects the kicks (KVM kicks every
    /// vCPU that accepted something, and the PIC's vCPU when its output
    /// is high).
    fn finish(&mut self, mut env: VmEnv<MAX_VCPUS>) -> Effects<MAX_VCPUS> {
        let mut handled = 0u32;
        while let Some(event) = env.queue.pop() {
            handled += 1;
            if handled > MAX_EVENTS_PER_OPERATION {
                // The bound: drop this and everything queued behind it.
                env.dropped = env.dropped.wrapping_add(1);
                while env.queue.pop().is_some() {
                    env.dropped = env.dropped.wrapping_add(1);
                }
                break;
            }
            match event {
                Queued::Message(message) => {
                    let _ = self.deliver(&mut env, &message);
                }
                Queued::Gsi { gsi, level, source } => {
                    let _ = self.route_gsi(&mut env, gsi, level, source);
                }
                Queued::Eoi(vector) => {
                    bump(&mut self.counters.eoi_broadcasts);
                    if self.ioapic.eoi(&mut env, vector) == EoiFollowUp::InjectLater {
                        bump(&mut self.counters.eoi_storms_deferred);
                        let deadline = env.now_ns.saturating_add(IOAPIC_EOI_INJECT_DELAY_NS);
                        env.set_timer(TimerId::IoapicEoiInject, Some(deadline));
                    }
                }
            }
        }
        self.counters.dropped_events = self.counters.dropped_events.wrapping_add(env.dropped);
        for index in 0..MAX_VCPUS {
            if self.harvest(index) {
                env.kick(index);
            }
        }
        if env.pic_touched && self.pic.output() {
            for (index, lapic) in self.lapics.iter().enumerate() {
                if lapic.as_ref().is_some_and(Lapic::accepts_pic_interrupts) {
                    env.kick(index);
                }
            }
        }
        env.effects
    }

    /// Moves NMI, INIT, SIPI and ExtINT out of vCPU `index`'s LAPIC;
    /// whether there was any.
    fn harvest(&mut self, index: usize) -> bool {
        let (Some(Some(lapic)), Some(events)) =
            (self.lapics.get_mut(index), self.events.get_mut(index))
        else {
            return false;
        };
        let mut any = false;
        if lapic.take_nmi() {
            events.nmi = true;
            any = true;
        }
        if lapic.take_init() {
            events.init = true;
            events.sipi = None;
            any = true;
        }
        if let Some(vector) = lapic.take_sipi() {
            events.sipi = Some(vector);
            any = true;
        }
        if lapic.take_extint() {
            events.extint = true;
            any = true;
        }
        any
    }

    /// Routes `message` to the LAPICs; the number that accepted it, or -1
    /// when none matched.
    fn deliver(&mut self, env: &mut VmEnv<MAX_VCPUS>, message: &ApicMessage) -> i32 {
        bump(&mut self.counters.messages);
        let mut matched = false;
        let mut accepted = 0i32;
        if message.delivery == DeliveryMode::LowestPriority {
            let mut best: Option<(u8, usize)> = None;
            for (index, lapic) in self.lapics.iter().enumerate() {
                let Some(lapic) = lapic else { continue };
                // Only software-enabled APICs take part; with none, the
                // message matched nothing (-1), as in KVM.
                if !lapic.matches_destination(message) || !lapic.software_enabled() {
                    continue;
                }
                matched = true;
                let priority = lapic.arbitration_priority();
                if best.map_or(true, |(lowest, _)| priority < lowest) {
                    best = Some((priority, index));
                }
            }
            if let Some((_, index)) = best {
                if let Some(Some(lapic)) = self.lapics.get_mut(index) {
                    if lapic.accept(message) {
                        accepted = 1;
                        env.kick(index);
                    }
                }
            }
        } else {
            for (index, lapic) in self.lapics.iter_mut().enumerate() {
                let Some(lapic) = lapic else { continue };
                if !lapic.matches_destination(message) {
                    continue;
                }
                matched = true;
                if lapic.accept(message) {
                    accepted += 1;
                    env.kick(index);
                }
            }
        }
        if accepted == 0 {
            bump(&mut self.counters.messages_undelivered);
        }
        if matched {
            accepted
        } else {
            -1
        }
    }

    /// Drives `gsi` to `level` for irq source `source` through the
    /// routing table (KVM `kvm_set_irq`): the status KVM_IRQ_LINE_STATUS
    /// reports, the sum of the non-negative statuses of the routes, or -1
    /// if all were negative or there is no route.
    fn route_gsi(&mut self, env: &mut VmEnv<MAX_VCPUS>, gsi: u32, level: bool, source: u32) -> i32 {
        bump(&mut self.counters.gsi_changes);
        // At most one route per irqchip, or one MSI.
        let mut targets = [None; 4];
        for (slot, route) in targets.iter_mut().zip(self.routing.targets(gsi)) {
            *slot = Some(route.target);
        }
        let mut status = -1i32;
        for target in targets.into_iter().flatten() {
            let result = match target {
                RouteTarget::Msi(msi) => {
                    if level {
                        self.send_msi(env, msi.address_lo, msi.address_hi, msi.data)
                    } else {
                        -1
                    }
                }
                RouteTarget::Irqchip { .. } => match (target.pic_irq(), target.ioapic_pin()) {
                    (Some(irq), _) => self.set_pic_line(env, irq, level, source),
                    (None, Some(pin)) => self
                        .ioapic
                        .set_irq_from_source(env, pin, source, level)
                        .kvm_status(),
                    (None, None) => -1,
                },
            };
            if result >= 0 {
                status = result.saturating_add(status.max(0));
            }
        }
        status
    }

    /// One source's level of PIC input `irq` (0-15).
    fn set_pic_line(&mut self, env: &mut VmEnv<MAX_VCPUS>, irq: u32, level: bool, source: u32) -> i32 {
        let Some(sources) = self.pic_sources.get_mut(irq as usize) else {
            return -1;
        };
        if source < 64 {
            if level {
                *sources |= 1 << source;
            } else {
                *sources &= !(1 << source);
            }
        }
        env.pic_touched = true;
        match self.pic.set_irq(irq, *sources != 0) {
            Some(LineStatus::Delivered) => 1,
            Some(LineStatus::Coalesced) => 0,
            Some(LineStatus::Masked) | None => -1,
        }
    }

    fn send_msi(&mut self, env: &mut VmEnv<MAX_VCPUS>, address_lo: u32, address_hi: u32, data: u32) -> i32 {
        bump(&mut self.counters.msis);
        match msi_message(address_lo, address_hi, data, false) {
            Some(message) => self.deliver(env, &message),
            None => {
                bump(&mut self.counters.bad_msis);
                -1
            }
        }
    }

    fn lapic_mut(&mut self, vcpu: usize) -> Option<&mut Lapic> {
        match self.lapics.get_mut(vcpu) {
            Some(Some(lapic)) => Some(lapic),
            _ => {
                bump(&mut self.counters.bad_vcpu);
                None
            }
        }
    }

    // -------------------------------------------------------- guest accesses

    /// The device that decodes an MMIO access of vCPU `vcpu`: its own
    /// xAPIC page first, then the IOAPIC window.
    fn mmio_device(&mut self, vcpu: usize, gpa: u64, len: usize) -> Option<&mut dyn IoDevice> {
        let lapic = self.lapics.get_mut(vcpu).and_then(Option::as_mut);
        match lapic {
            Some(lapic) if lapic.claims(IoSpace::Mmio, gpa, len) => Some(lapic),
            _ if self.ioapic.claims(IoSpace::Mmio, gpa, len) => Some(&mut self.ioapic),
            _ => None,
        }
    }

    /// The device that decodes a port access, and whether it is the PIC.
    fn port_device(&mut self, port: u16, len: usize) -> Option<(&mut dyn IoDevice, bool)> {
        let addr = u64::from(port);
        if self.pic.claims(IoSpace::Port, addr, len) {
            return Some((&mut self.pic, true));
        }
        match self.pit.as_mut() {
            Some(pit) if pit.claims(IoSpace::Port, addr, len) => Some((pit, false)),
            _ => None,
        }
    }

    /// A guest MMIO read by vCPU `vcpu`: its own xAPIC page first, then
    /// the IOAPIC window.  `None` when neither claims it (the access goes
    /// to userspace).  A claimed access the device refuses reads all ones.
    pub fn mmio_read(
        &mut self,
        vcpu: usize,
        now_ns: u64,
        gpa: u64,
        data: &mut [u8],
    ) -> Option<Effects<MAX_VCPUS>> {
        let mut env = VmEnv::new(now_ns);
        let device = self.mmio_device(vcpu, gpa, data.len())?;
        if device.read(&mut env, IoSpace::Mmio, gpa, data).is_err() {
            data.fill(0xff);
        }
        Some(self.finish(env))
    }

    /// A guest MMIO write by vCPU `vcpu` (see [`VmIrqchip::mmio_read`]);
    /// a refused write is dropped.
    pub fn mmio_write(
        &mut self,
        vcpu: usize,
        now_ns: u64,
        gpa: u64,
        data: &[u8],
    ) -> Option<Effects<MAX_VCPUS>> {
        let mut env = VmEnv::new(now_ns);
        let device = self.mmio_device(vcpu, gpa, data.len())?;
        let _ = device.write(&mut env, IoSpace::Mmio, gpa, data);
        Some(self.finish(env))
    }

    /// A guest IN: the PIC (20h-21h, A0h-A1h, 4D0h-4D1h) and, once
    /// created, the PIT (40h-43h, 61h with the dummy speaker).  `None`
    /// when unclaimed.  A refused read gives all ones.
    pub fn pio_read(
        &mut self,
        now_ns: u64,
        port: u16,
        data: &mut [u8],
    ) -> Option<Effects<MAX_VCPUS>> {
        let mut env = VmEnv::new(now_ns);
        let (device, pic) = self.port_device(port, data.len())?;
        env.pic_touched = pic;
        if device
            .read(&mut env, IoSpace::Port, u64::from(port), data)
            .is_err()
        {
            data.fill(0xff);
        }
        Some(self.finish(env))
    }

    /// A guest OUT (see [`VmIrqchip::pio_read`]).
    pub fn pio_write(&mut self, now_ns: u64, port: u16, data: &[u8]) -> Option<Effects<MAX_VCPUS>> {
        let mut env = VmEnv::new(now_ns);
        let (device, pic) = self.port_device(port, data.len())?;
        env.pic_touched = pic;
        let _ = device.write(&mut env, IoSpace::Port, u64::from(port), data);
        Some(self.finish(env))
    }

    /// RDMSR of an x2APIC register or IA32_TSC_DEADLINE by vCPU `vcpu`;
    /// `None` for other MSRs or a vCPU without a LAPIC.  `Err` is #GP.
    pub fn msr_read(&mut self, vcpu: usize, now_ns: u64, msr: u32) -> Option<Result<u64, MsrError>> {
        if !is_irqchip_msr(msr) {
            return None;
        }
        let env = VmEnv::<MAX_VCPUS>::new(now_ns);
        let lapic = self.lapic_mut(vcpu)?;
        Some(if msr == MSR_IA32_TSC_DEADLINE {
            Ok(lapic.tsc_deadline())
        } else {
            lapic.read_msr(&env, msr)
        })
    }

    /// WRMSR of an x2APIC register or IA32_TSC_DEADLINE by vCPU `vcpu`
    /// (see [`VmIrqchip::msr_read`]).  `guest_tsc_now` is the guest's TSC
    /// at the write and `tsc_khz` its frequency, for the TSC deadline.
    pub fn msr_write(
        &mut self,
        vcpu: usize,
        now_ns: u64,
        msr: u32,
        value: u64,
        guest_tsc_now: u64,
        tsc_khz: u32,
    ) -> Option<(Result<(), MsrError>, Effects<MAX_VCPUS>)> {
        if !is_irqchip_msr(msr) {
            return None;
        }
        let mut env = VmEnv::new(now_ns);
        let lapic = self.lapic_mut(vcpu)?;
        let result = if msr == MSR_IA32_TSC_DEADLINE {
            lapic.write_tsc_deadline(&mut env, value, guest_tsc_now, tsc_khz);
            Ok(())
        } else {
            lapic.write_msr(&mut env, msr, value)
        };
        Some((result, self.finish(env)))
    }

    /// IA32_APIC_BASE of vCPU `vcpu` (`None` without a LAPIC).  With an
    /// in-kernel irqchip the LAPIC's copy is the authoritative one.
    pub fn apic_base(&self, vcpu: usize) -> Option<u64> {
        self.lapic(vcpu).map(Lapic::apic_base)
    }

    /// WRMSR / KVM_SET_MSRS of IA32_APIC_BASE for vCPU `vcpu`
    /// ([`Lapic::set_apic_base`]); `Err` is #GP for the guest, EINVAL-ish
    /// for the host.  A vCPU without a LAPIC is `MsrError::Unknown`.
    pub fn set_apic_base(
        &mut self,
        vcpu: usize,
        value: u64,
        features: &MsrFeatures,
        origin: MsrOrigin,
    ) -> Result<(), MsrError> {
        match self.lapic_mut(vcpu) {
            Some(lapic) => lapic.set_apic_base(value, features, origin),
            None => Err(MsrError::Unknown(crate::msr::MSR_IA32_APICBASE)),
        }
    }

    // -------------------------------------------------------- VM ioctls and timers

    /// KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS: drives `gsi` from userspace
    /// (source [`USERSPACE_IRQ_SOURCE_ID`]).  The status: > 0 delivered,
    /// 0 coalesced, < 0 masked or not routed.
    pub fn set_gsi(&mut self, now_ns: u64, gsi: u32, level: bool) -> (i32, Effects<MAX_VCPUS>) {
        let mut env = VmEnv::new(now_ns);
        let status = self.route_gsi(&mut env, gsi, level, USERSPACE_IRQ_SOURCE_ID);
        (status, self.finish(env))
    }

    /// KVM_SIGNAL_MSI (without KVM_CAP_X2APIC_API): the number of vCPUs
    /// that accepted it, 0 if the guest blocked it, -1 if it matched none
    /// or its delivery mode is reserved.
    pub fn signal_msi(
        &mut self,
        now_ns: u64,
        address_lo: u32,
        address_hi: u32,
        data: u32,
    ) -> (i32, Effects<MAX_VCPUS>) {
        let mut env = VmEnv::new(now_ns);
        let status = self.send_msi(&mut env, address_lo, address_hi, data);
        (status, self.finish(env))
    }

    /// KVM_SET_GSI_ROUTING with its argument bytes (header and entries);
    /// nothing changes on error.  Levels already latched stay as they are.
    pub fn set_routing(&mut self, argument: &[u8]) -> Result<(), Error> {
        self.routing
            .set_from_bytes(argument, RoutingOptions::default())
    }

    /// The backend's timer `timer` expired at `now_ns`.
    pub fn timer_fired(&mut self, now_ns: u64, timer: TimerId) -> Effects<MAX_VCPUS> {
        let mut env = VmEnv::new(now_ns);
        match timer {
            TimerId::Lapic(index) => {
                let index = index as usize;
                if let Some(lapic) = self.lapic_mut(index) {
                    lapic.timer_fired(&mut env);
                    if lapic.highest_deliverable_vector().is_some() {
                        env.kick(index);
                    }
                }
            }
            TimerId::PitChannel0 => {
                if let Some(pit) = self.pit.as_mut() {
                    pit.timer_fired(&mut env);
                }
            }
            TimerId::IoapicEoiInject => self.ioapic.deferred_eoi_inject(&mut env),
        }
        self.finish(env)
    }

    // -------------------------------------------------------- the vCPU loop

    /// What vCPU `vcpu` should take next: the PIC's interrupt (if its
    /// LAPIC accepts PIC interrupts and the PIC's output is high, or an
    /// ExtINT message arrived), else the LAPIC's highest deliverable
    /// vector.  Nothing is taken: see [`VmIrqchip::acknowledge_interrupt`].
    pub fn pending_interrupt(&self, vcpu: usize) -> Option<PendingInterrupt> {
        let lapic = self.lapic(vcpu)?;
        let extint = self.events.get(vcpu).is_some_and(|events| events.extint);
        if extint || (lapic.accepts_pic_interrupts() && self.pic.output()) {
            return Some(PendingInterrupt::Pic);
        }
        lapic.highest_deliverable_vector().map(PendingInterrupt::Lapic)
    }

    /// The interrupt acknowledge cycle of vCPU `vcpu`, once it injects:
    /// the PIC's INTA (its vector) or the LAPIC's IRR-to-ISR move.  `None`
    /// when nothing is pending any more (another vCPU took the PIC's).
    pub fn acknowledge_interrupt(&mut self, vcpu: usize) -> Option<u8> {
        match self.pending_interrupt(vcpu)? {
            PendingInterrupt::Pic => {
                if let Some(events) = self.events.get_mut(vcpu) {
                    events.extint = false;
                }
                bump(&mut self.counters.pic_acknowledges);
                Some(self.pic.acknowledge())
            }
            PendingInterrupt::Lapic(vector) => {
                let lapic = self.lapic_mut(vcpu)?;
                lapic.acknowledge(vector).then_some(vector)
            }
        }
    }

    /// Takes vCPU `vcpu`'s pending NMI.
    pub fn take_nmi(&mut self, vcpu: usize) -> bool {
        self.events
            .get_mut(vcpu)
            .is_some_and(|events| core::mem::take(&mut events.nmi))
    }

    /// Takes vCPU `vcpu`'s pending INIT and resets its LAPIC for it
    /// ([`Lapic::init`], which cancels its timer: apply the effects).
    /// A SIPI that arrived after the INIT stays pending.
    pub fn take_init(&mut self, vcpu: usize, now_ns: u64) -> (bool, Effects<MAX_VCPUS>) {
        let taken = self
            .events
            .get_mut(vcpu)
            .is_some_and(|events| core::mem::take(&mut events.init));
        if !taken {
            return (false, Effects::NONE);
        }
        let mut env = VmEnv::new(now_ns);
        if let Some(lapic) = self.lapic_mut(vcpu) {
            lapic.init(&mut env);
        }
        (true, self.finish(env))
    }

    /// Takes vCPU `vcpu`'s pending SIPI vector; the vCPU loop drops it
    /// unless the vCPU waits for SIPI.
    pub fn take_sipi(&mut self, vcpu: usize) -> Option<u8> {
        self.events.get_mut(vcpu)?.sipi.take()
    }

    /// Whether a halted vCPU should run again (KVM
    /// `kvm_vcpu_has_events`): an INIT or SIPI; unless it waits for SIPI,
    /// also an NMI, and an interrupt if `interrupts_enabled` (RFLAGS.IF
    /// and no interrupt shadow: `cli; hlt` waits for an NMI).
    pub fn has_wakeup_event(&self, vcpu: usize, interrupts_enabled: bool, waiting_for_sipi: bool) -> bool {
        let Some(events) = self.events.get(vcpu) else {
            return false;
        };
        if events.init || events.sipi.is_some() {
            return true;
        }
        if waiting_for_sipi {
            return false;
        }
        events.nmi
            || events.pv_unhalt
            || (interrupts_enabled && self.pending_interrupt(vcpu).is_some())
    }

    // -------------------------------------------------------- PV hypercalls

    /// The vCPU whose LAPIC has APIC id `apic_id` and would accept a
    /// physical-destination message to it (hardware-enabled), as KVM's
    /// `phys_map` finds it: an exact id, never a broadcast.
    fn vcpu_with_apic_id(&self, apic_id: u32) -> Option<usize> {
        let probe = ApicMessage {
            dest: apic_id,
            dest_mode: DestMode::Physical,
            delivery: DeliveryMode::Fixed,
            vector: 0,
            level_triggered: false,
            assert: true,
            shorthand: Shorthand::None,
            source: Some(apic_id),
        };
        self.lapics.iter().position(|lapic| {
            lapic
                .as_ref()
                .is_some_and(|lapic| lapic.apic_id() == apic_id && lapic.matches_destination(&probe))
        })
    }

    /// KVM_HC_KICK_CPU (KVM `kvm_pv_kick_cpu_op`, delivery mode REMRD):
    /// the vCPU with APIC id `apic_id` gets `pv_unhalt`, which
    /// [`VmIrqchip::has_wakeup_event`] reports until
    /// [`VmIrqchip::clear_pv_unhalt`], and is kicked.  Whether it exists.
    pub fn pv_kick(&mut self, now_ns: u64, apic_id: u32) -> (bool, Effects<MAX_VCPUS>) {
        let Some(index) = self.vcpu_with_apic_id(apic_id) else {
            return (false, Effects::NONE);
        };
        if let Some(events) = self.events.get_mut(index) {
            events.pv_unhalt = true;
        }
        let mut env = VmEnv::new(now_ns);
        env.kick(index);
        (true, self.finish(env))
    }

    /// vCPU `vcpu` left its halt: a kick that came before is used up
    /// (KVM clears `pv_unhalted` in `vcpu_block`).
    pub fn clear_pv_unhalt(&mut self, vcpu: usize) {
        if let Some(events) = self.events.get_mut(vcpu) {
            events.pv_unhalt = false;
        }
    }

    /// KVM_HC_SEND_IPI from vCPU `vcpu` (KVM `kvm_pv_send_ipi`): the IPI
    /// `ipi.icr` describes goes to every vCPU whose APIC id the bitmaps
    /// select, through [`Lapic::accept`] like any IPI.  Returns how many
    /// accepted it, or `-KVM_EINVAL` for a logical destination or a
    /// shorthand; the reserved delivery mode is accepted by none (0), as
    /// KVM's `__apic_accept_irq` refuses it.
    pub fn pv_send_ipi(
        &mut self,
        vcpu: usize,
        now_ns: u64,
        ipi: &PvSendIpi,
    ) -> (i64, Effects<MAX_VCPUS>) {
        if ipi.icr_is_invalid() {
            return (-KVM_EINVAL, Effects::NONE);
        }
        let icr = ipi.icr as u32;
        let Some(delivery) = delivery_mode_of(icr) else {
            return (0, Effects::NONE);
        };
        let source = self.lapic(vcpu).map(Lapic::apic_id);
        let mut env = VmEnv::new(now_ns);
        let mut accepted = 0i64;
        for index in 0..MAX_VCPUS {
            let Some(Some(lapic)) = self.lapics.get_mut(index) else {
                continue;
            };
            let apic_id = lapic.apic_id();
            if !ipi.selects(apic_id) {
                continue;
            }
            let message = ApicMessage {
                dest: apic_id,
                dest_mode: DestMode::Physical,
                delivery,
                vector: icr as u8,
                level_triggered: icr & (1 << 15) != 0,
                assert: icr & (1 << 14) != 0,
                shorthand: Shorthand::None,
                source,
            };
            // An xAPIC id of 0xff is the broadcast address: only the LAPIC
            // that has it is meant (the id check above), and only if it
            // takes physical messages at all.
            if !lapic.matches_destination(&message) {
                continue;
            }
            bump(&mut self.counters.messages);
            if lapic.accept(&message) {
                accepted += 1;
                env.kick(index);
            } else {
                bump(&mut self.counters.messages_undelivered);
            }
        }
        (accepted, self.finish(env))
    }

    /// CR8 of vCPU `vcpu` from its LAPIC's TPR.
    pub fn cr8(&self, vcpu: usize) -> Option<u64> {
        self.lapic(vcpu).map(Lapic::cr8)
    }

    /// MOV to CR8 (or the VMCB's V_TPR after an exit) into vCPU `vcpu`'s
    /// TPR; a higher TPR may only hide interrupts, so nothing is kicked.
    pub fn set_cr8(&mut self, vcpu: usize, cr8: u64) {
        if let Some(lapic) = self.lapic_mut(vcpu) {
            lapic.set_cr8(cr8);
        }
    }

    // -------------------------------------------------------- state ioctls

    /// KVM_GET_IRQCHIP for `chip_id` (0 PIC master, 1 slave, 2 IOAPIC);
    /// another id is `InvalidValue` (EINVAL).
    pub fn get_irqchip(&self, chip_id: u32) -> Result<kvm_irqchip, Error> {
        let mut pic = [0u8; PicState::SIZE];
        let state = match chip_id {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                self.pic
                    .state(pic_chip(chip_id))
                    .to_bytes(&mut pic)
                    .ok_or(Error::InvalidValue)?;
                kvm_irqchip::with_chip_bytes(chip_id, &pic)
            }
            KVM_IRQCHIP_IOAPIC => kvm_irqchip::with_chip_bytes(chip_id, &self.ioapic.to_kvm_state()),
            _ => return Err(Error::InvalidValue),
        };
        Ok(state)
    }

    /// KVM_SET_IRQCHIP: loads one chip's state (see [`Pic::set_state`],
    /// [`Ioapic::set_from_kvm_state`]).
    pub fn set_irqchip(&mut self, now_ns: u64, state: &kvm_irqchip) -> Result<Effects<MAX_VCPUS>, Error> {
        let mut env = VmEnv::new(now_ns);
        match state.chip_id {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                let pic_state =
                    PicState::from_bytes(&state.chip_bytes()).ok_or(Error::ShortBuffer)?;
                self.pic.set_state(pic_chip(state.chip_id), &pic_state);
                env.pic_touched = true;
            }
            KVM_IRQCHIP_IOAPIC => self
                .ioapic
                .set_from_kvm_state(&mut env, &state.chip_bytes())?,
            _ => return Err(Error::InvalidValue),
        }
        Ok(self.finish(env))
    }

    /// KVM_GET_LAPIC of vCPU `vcpu` at `now_ns`.
    pub fn get_lapic(&self, vcpu: usize, now_ns: u64) -> Result<[u8; KVM_APIC_REG_SIZE], Error> {
        Ok(self.lapic(vcpu).ok_or(Error::NoDevice)?.to_kvm_state(now_ns))
    }

    /// KVM_SET_LAPIC of vCPU `vcpu` (restore IA32_APIC_BASE first).
    pub fn set_lapic(
        &mut self,
        vcpu: usize,
        now_ns: u64,
        regs: &[u8; KVM_APIC_REG_SIZE],
    ) -> Result<Effects<MAX_VCPUS>, Error> {
        let mut env = VmEnv::new(now_ns);
        let lapic = self.lapic_mut(vcpu).ok_or(Error::NoDevice)?;
        lapic.set_from_kvm_state(&mut env, regs);
        env.kick(vcpu);
        Ok(self.finish(env))
    }

    /// KVM_GET_PIT2; `NoDevice` (ENXIO) without a PIT.
    pub fn get_pit2(&self) -> Result<PitState2, Error> {
        Ok(self.pit.as_ref().ok_or(Error::NoDevice)?.state())
    }

    /// KVM_SET_PIT2 at `now_ns`; `NoDevice` (ENXIO) without a PIT.
    pub fn set_pit2(&mut self, now_ns: u64, state: &PitState2) -> Result<Effects<MAX_VCPUS>, Error> {
        let mut env = VmEnv::new(now_ns);
        self.pit
            .as_mut()
            .ok_or(Error::NoDevice)?
            .set_state(&mut env, state);
        Ok(self.finish(env))
    }
}

/// One vCPU's view of a [`VmIrqchip`]: the [`InKernelIrqchip`] the exit
/// handler takes, collecting the effects of every call in `effects`.
/// A kernel module holding the VM-wide lock around a whole exit can use
/// it as is (then apply `effects` after the unlock); one that locks per
/// call implements the trait itself with the same bodies.
pub struct VcpuIrqchip<'a, const MAX_VCPUS: usize> {
    /// The VM's irqchip.
    pub chip: &'a mut VmIrqchip<MAX_VCPUS>,
    /// This vCPU's index.
    pub vcpu: usize,
    /// The time of the exit (the backend's monotonic clock).
    pub now_ns: u64,
    /// The guest's TSC frequency, for IA32_TSC_DEADLINE.
    pub tsc_khz: u32,
    /// The effects of the calls so far.
    pub effects: Effects<MAX_VCPUS>,
}

impl<'a, const MAX_VCPUS: usize> VcpuIrqchip<'a, MAX_VCPUS> {
    /// vCPU `vcpu`'s view of `chip` at `now_ns`, with no effects yet.
    pub fn new(chip: &'a mut VmIrqchip<MAX_VCPUS>, vcpu: usize, now_ns: u64, tsc_khz: u32) -> Self {
        Self {
            chip,
            vcpu,
            now_ns,
            tsc_khz,
            effects: Effects::NONE,
        }
    }

    fn claimed(&mut self, effects: Option<Effects<MAX_VCPUS>>) -> bool {
        match effects {
            Some(effects) => {
                self.effects.merge(&effects);
                true
            }
            None => false,
        }
    }
}

impl<const MAX_VCPUS: usize> InKernelIrqchip for VcpuIrqchip<'_, MAX_VCPUS> {
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) -> bool {
        let effects = self.chip.mmio_read(self.vcpu, self.now_ns, gpa, data);
        self.claimed(effects)
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let effects = self.chip.mmio_write(self.vcpu, self.now_ns, gpa, data);
        self.claimed(effects)
    }
    fn pio_read(&mut self, port: u16, data: &mut [u8]) -> bool {
        let effects = self.chip.pio_read(self.now_ns, port, data);
        self.claimed(effects)
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) -> bool {
        let effects = self.chip.pio_write(self.now_ns, port, data);
        self.claimed(effects)
    }
    fn msr_read(&mut self, msr: u32) -> Result<u64, MsrError> {
        self.chip
            .msr_read(self.vcpu, self.now_ns, msr)
            .unwrap_or(Err(MsrError::Unknown(msr)))
    }
    fn msr_write(&mut self, msr: u32, value: u64, guest_tsc: u64) -> Result<(), MsrError> {
        let (vcpu, now, khz) = (self.vcpu, self.now_ns, self.tsc_khz);
        match self.chip.msr_write(vcpu, now, msr, value, guest_tsc, khz) {
            Some((result, effects)) => {
                self.effects.merge(&effects);
                result
            }
            None => Err(MsrError::Unknown(msr)),
        }
    }
    fn apic_base(&mut self) -> u64 {
        self.chip.apic_base(self.vcpu).unwrap_or(0)
    }
    fn set_apic_base(
        &mut self,
        value: u64,
        features: &MsrFeatures,
        origin: MsrOrigin,
    ) -> Result<(), MsrError> {
        self.chip.set_apic_base(self.vcpu, value, features, origin)
    }
    fn has_interrupt(&mut self) -> bool {
        self.chip.pending_interrupt(self.vcpu).is_some()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.chip.acknowledge_interrupt(self.vcpu)
    }
    fn take_nmi(&mut self) -> bool {
        self.chip.take_nmi(self.vcpu)
    }
    fn take_init(&mut self) -> bool {
        let (taken, effects) = self.chip.take_init(self.vcpu, self.now_ns);
        self.effects.merge(&effects);
        taken
    }
    fn take_sipi(&mut self) -> Option<u8> {
        self.chip.take_sipi(self.vcpu)
    }
    fn has_wakeup_event(&mut self, interrupts_enabled: bool, waiting_for_sipi: bool) -> bool {
        self.chip
            .has_wakeup_event(self.vcpu, interrupts_enabled, waiting_for_sipi)
    }
    fn is_bsp(&self) -> bool {
        VmIrqchip::<MAX_VCPUS>::is_bsp(self.vcpu)
    }
    fn cr8(&mut self) -> u64 {
        self.chip.cr8(self.vcpu).unwrap_or(0)
    }
    fn set_cr8(&mut self, cr8: u64) {
        self.chip.set_cr8(self.vcpu, cr8);
    }
    fn pv_kick(&mut self, apic_id: u32) -> bool {
        let (found, effects) = self.chip.pv_kick(self.now_ns, apic_id);
        self.effects.merge(&effects);
        found
    }
    fn pv_send_ipi(&mut self, ipi: &PvSendIpi) -> i64 {
        let (result, effects) = self.chip.pv_send_ipi(self.vcpu, self.now_ns, ipi);
        self.effects.merge(&effects);
        result
    }
    fn clear_pv_unhalt(&mut self) {
        self.chip.clear_pv_unhalt(self.vcpu);
    }
}

#[cfg(test)]
mod tests;
