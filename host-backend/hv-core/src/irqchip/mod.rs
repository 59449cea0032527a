//! The in-kernel interrupt controllers and timers: LAPIC, IOAPIC, the 8259
//! PIC pair and the 8254 PIT, behind one I/O-device trait.
//!
//! KVM gives its emulated chips one ops table (`struct kvm_io_device_ops`
//! in `include/kvm/iodev.h`: read and write of an address range on a bus);
//! [`IoDevice`] is that table here.  A device never reaches the rest of the
//! VM directly: everything it causes (an interrupt message for the local
//! APICs, a changed interrupt line, a timer to arm) goes through the
//! [`DeviceEnv`] the backend passes to each call.  That keeps each model a
//! plain state machine that unit tests drive with a recording environment,
//! and leaves locking, hrtimers and vCPU kicks to the kernel module.
//!
//! Time is nanoseconds of a monotonic clock chosen by the backend
//! (`ktime_get_ns()` in the module, a counter in tests).  A device that
//! needs a callback later asks for one with [`DeviceEnv::set_timer`] and is
//! called back through its own `timer_fired` method.
//!
//! References: Intel SDM vol. 3 ch. 11 (APIC), 82093AA IOAPIC datasheet,
//! 8259A and 8254 datasheets; Linux `Documentation/virt/kvm/api.rst` 4.24
//! (KVM_CREATE_IRQCHIP), 4.25 (KVM_IRQ_LINE), 4.57 (KVM_GET/SET_LAPIC).

pub mod ioapic;
pub mod routing;

/// The address space an access arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoSpace {
    /// Port I/O (IN/OUT): the PIC (20h/A0h, 4D0h/4D1h ELCR) and the PIT
    /// (40h-43h, 61h).
    Port,
    /// Guest-physical MMIO: the xAPIC page and the IOAPIC window.
    Mmio,
}

/// Why a device refused an access.  The caller counts and logs it; a
/// refused read returns all ones to the guest and a refused write is
/// dropped, as on a real bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The address is not one this device decodes.
    Unclaimed,
    /// A width or alignment the device does not support (e.g. a 1-byte
    /// access to a 32-bit APIC register).
    BadWidth,
    /// A write of a value the hardware would ignore or that KVM refuses
    /// (a reserved bit, a read-only register).
    Refused,
}

/// One of the devices' timers, so that one backend timer can serve each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerId {
    /// The LAPIC timer of the vCPU with this index.
    Lapic(u32),
    /// PIT channel 0, the one wired to an interrupt line.
    PitChannel0,
    /// The IOAPIC's deferred re-delivery after an interrupt storm
    /// (`ioapic::EoiFollowUp::InjectLater`), armed by the VM's irqchip
    /// (`vm::VmIrqchip`) [`ioapic::IOAPIC_EOI_INJECT_DELAY_NS`] ahead.
    IoapicEoiInject,
}

/// How an interrupt message selects its destination (SDM vol. 3 11.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestMode {
    /// `dest` is an APIC id (0xff, or 0xffff_ffff in x2APIC, broadcasts).
    Physical,
    /// `dest` is matched against each LAPIC's LDR under its DFR model.
    Logical,
}

/// The delivery mode of an interrupt message (ICR bits 10:8, IOAPIC
/// redirection entry bits 10:8, MSI data bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Deliver `vector` to every destination.
    Fixed,
    /// Deliver `vector` to the one destination of lowest priority.
    LowestPriority,
    /// System management interrupt (not emulated; counted and dropped).
    Smi,
    /// Non-maskable interrupt; the vector is ignored.
    Nmi,
    /// INIT: reset the destination into wait-for-SIPI (level assert), or
    /// nothing (level de-assert).
    Init,
    /// Start-up IPI: a vCPU waiting for SIPI starts in real mode at
    /// `vector << 12`.
    StartUp,
    /// External interrupt: the destination acknowledges the 8259 PIC for
    /// the vector.
    ExtInt,
}

/// The destination shorthand of an IPI (ICR bits 19:18); messages from
/// the IOAPIC and MSIs always use [`Shorthand::None`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use `dest` and `dest_mode`.
    None,
    /// Only the sending LAPIC.
    ToSelf,
    /// Every LAPIC, the sender included.
    AllIncludingSelf,
    /// Every LAPIC but the sender.
    AllExcludingSelf,
}

/// An interrupt message on the APIC bus: an IPI from a LAPIC's ICR, a
/// redirection entry of the IOAPIC, or a decoded MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicMessage {
    /// Destination APIC id or logical mask (8 bits in xAPIC mode, 32 in
    /// x2APIC mode).
    pub dest: u32,
    /// How `dest` is interpreted.
    pub dest_mode: DestMode,
    /// What to deliver.
    pub delivery: DeliveryMode,
    /// The vector (Fixed, LowestPriority, StartUp).
    pub vector: u8,
    /// Level-triggered: the receiving LAPIC sets the vector's TMR bit, and
    /// its EOI is broadcast back to the IOAPIC.
    pub level_triggered: bool,
    /// Assert (true) or de-assert; matters for INIT only.
    pub assert: bool,
    /// Destination shorthand (IPIs only).
    pub shorthand: Shorthand,
    /// The APIC id of the sending LAPIC (for the self shorthands), or
    /// `None` for the IOAPIC and MSIs.
    pub source: Option<u32>,
}

/// What a device may cause outside itself.  The backend implements it
/// over the VM (route, kick vCPUs, arm hrtimers); tests implement it with
/// a recorder.
pub trait DeviceEnv {
    /// The current time in nanoseconds (monotonic).
    fn now_ns(&self) -> u64;
    /// Arms `timer` to call the device back at `deadline_ns`, replacing an
    /// earlier deadline; `None` cancels.  A deadline in the past fires as
    /// soon as possible.
    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>);
    /// Sends an interrupt message to the local APICs.
    fn send_apic_message(&mut self, message: ApicMessage);
    /// A device output changed level on global system interrupt `gsi`
    /// (the PIT's output is GSI 0, routed to PIC IRQ 0 and IOAPIC pin 2 by
    /// the default routing).
    fn set_gsi(&mut self, gsi: u32, level: bool);
    /// A LAPIC accepted the EOI of a level-triggered `vector`; the IOAPIC
    /// clears remote IRR of the matching entries (EOI broadcast).
    fn eoi_broadcast(&mut self, vector: u8);
}

/// KVM's `kvm_io_device_ops` for one emulated chip: reads and writes of
/// the ranges it decodes.  Data is little-endian, of the access's width
/// (1, 2, 4 or 8 bytes).
pub trait IoDevice {
    /// Whether the device decodes `len` bytes at `addr` in `space`.
    fn claims(&self, space: IoSpace, addr: u64, len: usize) -> bool;
    /// A guest read of `data.len()` bytes at `addr`.
    fn read(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &mut [u8],
    ) -> Result<(), IoError>;
    /// A guest write of `data` at `addr`.
    fn write(
        &mut self,
        env: &mut dyn DeviceEnv,
        space: IoSpace,
        addr: u64,
        data: &[u8],
    ) -> Result<(), IoError>;
}

/// Little-endian value of an access's bytes (at most 8).
pub fn bytes_to_u64(data: &[u8]) -> u64 {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(*byte) << (8 * i);
    }
    value
}

/// Fills an access's bytes with the low bytes of `value`, little-endian.
pub fn u64_to_bytes(value: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().take(8).enumerate() {
        *byte = (value >> (8 * i)) as u8;
    }
}

pub mod lapic;
pub mod pic;
pub mod pit;
pub mod vm;

#[cfg(test)]
pub(crate) mod testenv;

#[cfg(test)]
mod tests {
    use super::testenv::{Effect, RecordingEnv};
    use super::*;

    #[test]
    fn access_bytes_are_little_endian() {
        let mut data = [0u8; 4];
        u64_to_bytes(0x1122_3344_5566, &mut data);
        assert_eq!(data, [0x66, 0x55, 0x44, 0x33]);
        assert_eq!(bytes_to_u64(&data), 0x3344_5566);
        assert_eq!(bytes_to_u64(&[0xff; 9]), u64::MAX);
    }

    #[test]
    fn recording_env_keeps_effects_in_order() {
        let mut env = RecordingEnv::default();
        let env_dyn: &mut dyn DeviceEnv = &mut env;
        env_dyn.set_gsi(0, true);
        env_dyn.set_timer(TimerId::PitChannel0, Some(5));
        env_dyn.eoi_broadcast(0x30);
        assert_eq!(
            env.take(),
            [Effect::Gsi(0, true), Effect::Timer(TimerId::PitChannel0, Some(5)), Effect::Eoi(0x30)]
        );
        assert!(env.take().is_empty());
    }
}
