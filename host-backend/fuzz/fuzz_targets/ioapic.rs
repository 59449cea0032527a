//! Fuzzes hv-core's IOAPIC model (irqchip::ioapic) with arbitrary
//! sequences of guest MMIO accesses, device line changes, EOIs, deferred
//! injections and KVM_SET_IRQCHIP images.  Nothing may panic, and after
//! every step: the version register reads 0x0017_0011, every message sent
//! is one an unmasked entry describes, and (until an image was loaded,
//! which may set any bit) remote IRR is only set on level-triggered
//! entries.
//!
//! Input: a sequence of 8-byte operations: a kind byte, then up to seven
//! argument bytes.  A restore takes the next 216 bytes as the image.
#![no_main]

use hv_core::irqchip::ioapic::*;
use hv_core::irqchip::{ApicMessage, DeviceEnv, IoDevice, IoSpace, TimerId};

/// Keeps the messages of the current step.
#[derive(Default)]
struct Env {
    messages: Vec<ApicMessage>,
}

impl DeviceEnv for Env {
    fn now_ns(&self) -> u64 {
        0
    }
    fn set_timer(&mut self, _timer: TimerId, _deadline_ns: Option<u64>) {
        panic!("the IOAPIC has no timer");
    }
    fn send_apic_message(&mut self, message: ApicMessage) {
        self.messages.push(message);
    }
    fn set_gsi(&mut self, _gsi: u32, _level: bool) {
        panic!("the IOAPIC drives no GSI");
    }
    fn eoi_broadcast(&mut self, _vector: u8) {
        panic!("the IOAPIC broadcasts no EOI");
    }
}

fn step(ioapic: &mut Ioapic, env: &mut Env, op: &[u8; 8], image: Option<&[u8]>) -> bool {
    let [kind, a, b, c, d, e, f, g] = *op;
    let value = u32::from_le_bytes([d, e, f, g]);
    let base = ioapic.base_address();
    match kind % 8 {
        // Select a register, then write or read the window: what guests do.
        0 => {
            let _ = ioapic.write(env, IoSpace::Mmio, base, &[a]);
            let _ = ioapic.write(
                env,
                IoSpace::Mmio,
                base.wrapping_add(0x10),
                &value.to_le_bytes(),
            );
        }
        1 => {
            let _ = ioapic.write(env, IoSpace::Mmio, base, &[a]);
            let mut data = [0u8; 4];
            let _ = ioapic.read(env, IoSpace::Mmio, base.wrapping_add(0x10), &mut data);
        }
        // Any access of any width at any offset near the window.
        2 => {
            let addr = base.wrapping_add(u64::from(a)).wrapping_sub(8);
            let len = usize::from(b % 10);
            let mut data = [0u8; 9];
            data[..4].copy_from_slice(&value.to_le_bytes());
            let data = &mut data[..len];
            if c & 1 == 0 {
                let _ = ioapic.write(env, IoSpace::Mmio, addr, data);
            } else {
                let _ = ioapic.read(env, IoSpace::Mmio, addr, data);
            }
        }
        3 | 4 => {
            let pin = u32::from(a % 26);
            let source = u32::from(b % 66);
            let outcome = ioapic.set_irq_from_source(env, pin, source, c & 1 != 0);
            assert!(outcome.kvm_status() >= -1 && outcome.kvm_status() <= 1);
        }
        5 => {
            // Vectors from a few values so that EOIs meet entries.
            let vector = if b & 1 == 0 { a & 0x3 | 0x30 } else { a };
            let _ = ioapic.eoi(env, vector);
        }
        6 => ioapic.deferred_eoi_inject(env),
        _ => match image {
            Some(image) => {
                ioapic.set_from_kvm_state(env, image).expect("a full image");
                return true;
            }
            None => ioapic.reset(),
        },
    }
    false
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut ioapic = Ioapic::new();
    let mut env = Env::default();
    let mut restored = false;
    let mut rest = data;
    while let Some((op, tail)) = rest.split_first_chunk::<8>() {
        rest = tail;
        let image = if op[0] % 8 == 7 && rest.len() >= KVM_IOAPIC_STATE_SIZE {
            let (image, tail) = rest.split_at(KVM_IOAPIC_STATE_SIZE);
            rest = tail;
            Some(image)
        } else {
            None
        };
        restored |= step(&mut ioapic, &mut env, op, image);

        assert!(env.messages.len() <= IOAPIC_NUM_PINS);
        for message in env.messages.drain(..) {
            let described = (0..IOAPIC_NUM_PINS)
                .filter_map(|pin| ioapic.entry(pin))
                .any(|entry| !entry.masked() && entry.message() == Some(message));
            assert!(described, "{message:?} matches no unmasked entry");
        }
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = ioapic.entry(pin).unwrap();
            assert!(restored || !entry.remote_irr() || entry.level_triggered());
        }
        let base = ioapic.base_address();
        let mut select = [0u8; 4];
        ioapic
            .read(&mut env, IoSpace::Mmio, base, &mut select)
            .unwrap();
        if u32::from_le_bytes(select) == IOAPIC_REG_VERSION
            && base.checked_add(IOAPIC_MEM_LENGTH).is_some()
        {
            let mut version = [0u8; 4];
            ioapic
                .read(
                    &mut env,
                    IoSpace::Mmio,
                    base.wrapping_add(0x10),
                    &mut version,
                )
                .unwrap();
            assert_eq!(u32::from_le_bytes(version), IOAPIC_VERSION_REGISTER);
        }
        // The saved image always loads back.
        let image = ioapic.to_kvm_state();
        assert_eq!(image.len(), KVM_IOAPIC_STATE_SIZE);
    }
});
