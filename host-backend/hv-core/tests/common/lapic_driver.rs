//! The driver shared by the `lapic` fuzz target and `tests/lapic.rs`:
//! hv-core's local APIC (`irqchip/lapic.rs`) under an arbitrary sequence
//! of MMIO and x2APIC MSR accesses, IA32_APIC_BASE writes, interrupt
//! messages, acknowledges and EOIs, timer callbacks and clock jumps,
//! TSC-deadline writes, LINT changes, CR8 writes, KVM state images,
//! INIT and RESET.  Nothing may panic, and after every step:
//! - PPR is what TPR and the highest in-service vector make it;
//! - the deliverable vector is requested and above PPR's class;
//! - while ISR only ever grows by acknowledging the deliverable vector,
//!   it holds at most one vector per priority class (each acknowledge
//!   nests above everything in service);
//! - KVM_GET_LAPIC then KVM_SET_LAPIC on a copy gives the same image
//!   back (the current count aside: the copy restarts from it).
//!
//! Input: byte 0 the vCPU index, byte 1 flags (bit 0 BSP, bit 1
//! TSC-deadline supported, bit 2 no x2APIC, bits 7:4 MAXPHYADDR - 32),
//! then steps: one opcode byte and its operands,
//! little-endian; a step cut short by the end of the input is dropped.

#![allow(dead_code)]

use hv_core::irqchip::lapic::{Lapic, LintPin, KVM_APIC_REG_SIZE};
use hv_core::irqchip::{
    ApicMessage, DeliveryMode, DestMode, DeviceEnv, IoDevice, IoSpace, Shorthand, TimerId,
};
use hv_core::msr::{MsrFeatures, MsrOrigin};

/// The environment: a clock the input moves and the armed deadline.
#[derive(Default)]
struct Env {
    now_ns: u64,
    deadline_ns: Option<u64>,
    messages: u64,
    eois: u64,
}

impl DeviceEnv for Env {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }
    fn set_timer(&mut self, timer: TimerId, deadline_ns: Option<u64>) {
        assert!(matches!(timer, TimerId::Lapic(_)));
        self.deadline_ns = deadline_ns;
    }
    fn send_apic_message(&mut self, message: ApicMessage) {
        assert!(message.source.is_some(), "an IPI names its sender");
        self.messages += 1;
    }
    fn set_gsi(&mut self, _gsi: u32, _level: bool) {
        panic!("a LAPIC drives no GSI");
    }
    fn eoi_broadcast(&mut self, _vector: u8) {
        self.eois += 1;
    }
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

const BASE: u64 = 0xfee0_0000;

/// The guest's CPUID as far as IA32_APIC_BASE cares: x2APIC offered
/// unless flags bit 2, MAXPHYADDR 32 + flags bits 7:4.
fn features(flags: u8) -> MsrFeatures {
    MsrFeatures {
        x2apic: flags & 0x4 == 0,
        physical_address_bits: 32 + (flags >> 4),
        long_mode: true,
        nx: true,
        ffxsr: true,
        tsc_aux: true,
        virtual_address_bits: 48,
    }
}

fn message(input: &mut Input) -> Option<ApicMessage> {
    let [dest_byte, kind, vector, flags] = input.take::<4>()?;
    let delivery = match kind & 0x7 {
        0 => DeliveryMode::Fixed,
        1 => DeliveryMode::LowestPriority,
        2 => DeliveryMode::Smi,
        3 => DeliveryMode::Nmi,
        4 => DeliveryMode::Init,
        5 => DeliveryMode::StartUp,
        _ => DeliveryMode::ExtInt,
    };
    let shorthand = match (kind >> 3) & 0x3 {
        0 => Shorthand::None,
        1 => Shorthand::ToSelf,
        2 => Shorthand::AllIncludingSelf,
        _ => Shorthand::AllExcludingSelf,
    };
    let dest = match flags >> 5 {
        0 => 0xffff_ffff,
        1 => u32::from(dest_byte) << 8,
        _ => u32::from(dest_byte),
    };
    Some(ApicMessage {
        dest,
        dest_mode: if flags & 1 != 0 {
            DestMode::Logical
        } else {
            DestMode::Physical
        },
        delivery,
        vector,
        level_triggered: flags & 2 != 0,
        assert: flags & 4 != 0,
        shorthand,
        source: (flags & 8 != 0).then_some(u32::from(dest_byte >> 1)),
    })
}

fn register(state: &[u8; KVM_APIC_REG_SIZE], offset: usize) -> u32 {
    u32::from_le_bytes(state[offset..offset + 4].try_into().unwrap())
}

/// Checks the invariants of the module documentation.
fn check(lapic: &Lapic, env: &Env, isr_nests: bool) {
    let state = lapic.to_kvm_state(env.now_ns);
    let tpr = register(&state, 0x80);
    let isr_class = u32::from(lapic.isr().highest().unwrap_or(0) & 0xf0);
    let ppr = if tpr & 0xf0 >= isr_class {
        tpr
    } else {
        isr_class
    };
    assert_eq!(register(&state, 0xa0), ppr, "PPR");
    assert_eq!(u32::from(lapic.processor_priority()), ppr);
    if let Some(vector) = lapic.highest_deliverable_vector() {
        assert!(lapic.irr().contains(vector));
        assert!(u32::from(vector & 0xf0) > ppr);
    }
    if isr_nests {
        for class in 0..16u8 {
            let in_class = (0..16u8)
                .filter(|low| lapic.isr().contains(class << 4 | low))
                .count();
            assert!(in_class <= 1, "two vectors of class {class} in service");
        }
        assert!(lapic.isr().count() <= 15);
    }
    for word in 0..8 {
        assert_eq!(
            register(&state, 0x100 + 0x10 * word),
            lapic.isr().word(word)
        );
        assert_eq!(
            register(&state, 0x200 + 0x10 * word),
            lapic.irr().word(word)
        );
    }

    let mut copy = lapic.clone();
    let mut scratch = Env {
        now_ns: env.now_ns,
        ..Env::default()
    };
    copy.set_from_kvm_state(&mut scratch, &state);
    let mut again = copy.to_kvm_state(env.now_ns);
    let mut expected = state;
    again[0x390..0x394].fill(0);
    expected[0x390..0x394].fill(0);
    assert!(again == expected, "KVM state round trip");
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input { bytes: data };
    let (Some(index), Some(flags)) = (input.u8(), input.u8()) else {
        return;
    };
    let mut env = Env::default();
    let mut lapic = Lapic::new(u32::from(index), flags & 1 != 0, flags & 2 != 0);
    let features = features(flags);
    // False once ISR was loaded from an arbitrary image.
    let mut isr_nests = true;
    while let Some(opcode) = input.u8() {
        if step(
            opcode,
            &mut input,
            &mut lapic,
            &mut env,
            &features,
            &mut isr_nests,
        )
        .is_none()
        {
            break;
        }
        check(&lapic, &env, isr_nests);
    }
}

fn step(
    opcode: u8,
    input: &mut Input,
    lapic: &mut Lapic,
    env: &mut Env,
    features: &MsrFeatures,
    isr_nests: &mut bool,
) -> Option<()> {
    match opcode % 17 {
        0 => {
            // MMIO write: offset (12 bits), width selector, value.
            let offset = input.u16()?;
            let value = input.u32()?;
            let len = [4, 4, 4, 1, 2, 8][usize::from(offset >> 13) % 6];
            let bytes = u64::from(value).to_le_bytes();
            let addr = lapic.mmio_base() + u64::from(offset & 0xfff);
            if lapic.claims(IoSpace::Mmio, addr, len) {
                let _ = lapic.write(env, IoSpace::Mmio, addr, &bytes[..len]);
            }
        }
        1 => {
            let offset = input.u16()?;
            let len = [4, 4, 1, 2, 8, 3][usize::from(offset >> 13) % 6];
            let mut data = [0u8; 8];
            let addr = lapic.mmio_base() + u64::from(offset & 0xfff);
            let _ = lapic.read(env, IoSpace::Mmio, addr, &mut data[..len]);
        }
        2 => {
            let msr = 0x800 + u32::from(input.u8()?);
            let value = input.u64()?;
            let _ = lapic.write_msr(env, msr, value);
        }
        3 => {
            let msr = 0x7f0 + u32::from(input.u16()? % 0x120);
            let _ = lapic.read_msr(env, msr);
        }
        4 => {
            let selector = input.u8()?;
            let value = match selector & 0x3 {
                0 => BASE,
                1 => BASE | 1 << 11,
                2 => BASE | 3 << 10,
                _ => input.u64()?,
            };
            let origin = if selector & 0x4 != 0 {
                MsrOrigin::Host
            } else {
                MsrOrigin::Guest
            };
            let _ = lapic.set_apic_base(value | u64::from(selector & 0x8) << 5, features, origin);
        }
        5 => {
            let message = message(input)?;
            if lapic.matches_destination(&message) {
                lapic.accept(&message);
            }
        }
        6 => {
            let message = message(input)?;
            lapic.accept(&message);
        }
        7 => {
            if let Some(vector) = lapic.highest_deliverable_vector() {
                assert!(lapic.acknowledge(vector));
            }
        }
        8 => lapic.eoi(env),
        9 => {
            // The clock moves on; the backend's timer fires if due.
            env.now_ns = env.now_ns.saturating_add(u64::from(input.u32()?));
            if env
                .deadline_ns
                .is_some_and(|deadline| deadline <= env.now_ns)
            {
                env.deadline_ns = None;
                lapic.timer_fired(env);
            }
        }
        10 => lapic.timer_fired(env),
        11 => {
            let deadline = input.u64()?;
            let guest_tsc = input.u64()?;
            let khz = input.u32()?;
            lapic.write_tsc_deadline(env, deadline, guest_tsc, khz);
            let _ = lapic.tsc_deadline();
        }
        12 => {
            let selector = input.u8()?;
            let pin = if selector & 1 != 0 {
                LintPin::Lint1
            } else {
                LintPin::Lint0
            };
            lapic.set_lint(pin, selector & 2 != 0);
        }
        13 => lapic.set_cr8(u64::from(input.u8()?)),
        14 => {
            // An arbitrary image: 16 register dwords patched into the
            // current one (offset, value).
            let mut state = lapic.to_kvm_state(env.now_ns);
            for _ in 0..4 {
                let offset = usize::from(input.u8()? >> 2) * 16;
                let value = input.u32()?;
                state[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            }
            lapic.set_from_kvm_state(env, &state);
            *isr_nests = false;
        }
        15 => {
            if input.u8()? & 1 != 0 {
                lapic.init(env);
            } else {
                lapic.reset(env, false);
            }
            *isr_nests = true;
        }
        _ => {
            let _ = (
                lapic.take_nmi(),
                lapic.take_init(),
                lapic.take_sipi(),
                lapic.take_extint(),
            );
            let _ = (
                lapic.cr8(),
                lapic.arbitration_priority(),
                lapic.accepts_pic_interrupts(),
            );
        }
    }
    Some(())
}
