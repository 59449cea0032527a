//! The VM-level irqchip (`irqchip::vm::VmIrqchip`) with 2-4 vCPUs, driven
//! by arbitrary sequences of guest accesses (xAPIC page, IOAPIC window,
//! PIC/PIT ports, x2APIC and TSC-deadline MSRs, IA32_APIC_BASE), GSI
//! changes, MSIs, routing tables, timer expiries, interrupt acknowledges,
//! NMI/INIT/SIPI takes and KVM state round trips.  Shared by the
//! `irqchip_vm` fuzz target and its stable replay
//! (hv-core/tests/irqchip_corpus.rs).
//!
//! Checked after every step, besides "no panic": kicks name only vCPUs
//! that exist; an acknowledged LAPIC interrupt is the one that was
//! pending; a timer request names an existing timer; a restored chip
//! reads back; the event queue drops rather than loops (each step
//! returns).
//!
//! Input: one header byte (vCPU count 2 + h % 3, bit 7 TSC-deadline
//! offered, bit 6 a PIT, bit 5 its speaker port), then 8-byte
//! operations: a kind byte and seven argument bytes.

#![allow(dead_code)]

use hv_core::irqchip::pit::PitConfig;
use hv_core::irqchip::vm::{Effects, PendingInterrupt, VmIrqchip};
use hv_core::irqchip::TimerId;
use hv_core::kvm_api::layout::kvm_irqchip;
use hv_core::msr::{MsrFeatures, MsrOrigin};

type Chip = VmIrqchip<4>;

const APIC: u64 = 0xfee0_0000;
const IOAPIC: u64 = 0xfec0_0000;
/// Registers guests touch most, so that random offsets meet them often.
const APIC_REGISTERS: [u64; 16] = [
    0x20, 0x80, 0xb0, 0xd0, 0xe0, 0xf0, 0x280, 0x300, 0x310, 0x320, 0x350, 0x360, 0x370, 0x380,
    0x390, 0x3e0,
];
const PORTS: [u16; 12] = [
    0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x80,
];
const FEATURES: MsrFeatures = MsrFeatures {
    long_mode: true,
    nx: true,
    ffxsr: false,
    tsc_aux: false,
    x2apic: true,
    physical_address_bits: 48,
    virtual_address_bits: 48,
};

struct Vm {
    chip: Box<Chip>,
    vcpus: usize,
    now: u64,
    /// Armed deadlines: LAPIC timers 0-3, PIT channel 0, IOAPIC EOI.
    timers: [Option<u64>; 6],
}

fn timer_slot(timer: TimerId) -> usize {
    match timer {
        TimerId::Lapic(index) => {
            assert!(index < 4, "timer of a vCPU that does not exist");
            index as usize
        }
        TimerId::PitChannel0 => 4,
        TimerId::IoapicEoiInject => 5,
    }
}

fn timer_of(slot: usize) -> TimerId {
    match slot {
        0..=3 => TimerId::Lapic(slot as u32),
        4 => TimerId::PitChannel0,
        _ => TimerId::IoapicEoiInject,
    }
}

impl Vm {
    fn apply(&mut self, effects: Effects<4>) {
        assert_eq!(effects.kick >> self.vcpus, 0, "kick of a missing vCPU");
        for (timer, deadline) in effects.timers() {
            if let TimerId::Lapic(index) = timer {
                assert!((index as usize) < self.vcpus);
            }
            self.timers[timer_slot(timer)] = deadline;
        }
    }

    fn apply_some(&mut self, effects: Option<Effects<4>>) {
        if let Some(effects) = effects {
            self.apply(effects);
        }
    }

    fn step(&mut self, op: [u8; 8]) {
        let [kind, a, b, c, d, e, f, g] = op;
        let value = u32::from_le_bytes([d, e, f, g]);
        let vcpu = usize::from(a) % self.vcpus;
        let now = self.now;
        let apic_offset = if b & 0x80 != 0 {
            APIC_REGISTERS[usize::from(b) % APIC_REGISTERS.len()]
        } else {
            u64::from(b) << 4
        };
        match kind % 16 {
            0 => {
                let effects =
                    self.chip
                        .mmio_write(vcpu, now, APIC + apic_offset, &value.to_le_bytes());
                self.apply_some(effects);
            }
            1 => {
                let len = usize::from(c % 9);
                let mut data = [0u8; 8];
                let addr = APIC + apic_offset + u64::from(c >> 4);
                let effects = self.chip.mmio_read(vcpu, now, addr, &mut data[..len]);
                self.apply_some(effects);
            }
            2 => {
                let effects = self.chip.mmio_write(vcpu, now, IOAPIC, &[b]);
                self.apply_some(effects);
                let effects = self
                    .chip
                    .mmio_write(vcpu, now, IOAPIC + 0x10, &value.to_le_bytes());
                self.apply_some(effects);
            }
            3 => {
                let mut data = [0u8; 4];
                let addr = IOAPIC + u64::from(b);
                let len = 1 + usize::from(c % 4);
                let effects = self.chip.mmio_read(vcpu, now, addr, &mut data[..len]);
                self.apply_some(effects);
            }
            4 | 5 => {
                let port = if b & 0x80 != 0 {
                    u16::from(b) << 3
                } else {
                    PORTS[usize::from(b) % PORTS.len()]
                };
                let len = [1, 1, 2, 4][usize::from(c % 4)];
                let mut data = value.to_le_bytes();
                let effects = if kind % 16 == 4 {
                    self.chip.pio_write(now, port, &data[..len])
                } else {
                    self.chip.pio_read(now, port, &mut data[..len])
                };
                self.apply_some(effects);
            }
            6 => {
                let (status, effects) = self.chip.set_gsi(now, u32::from(b % 32), c & 1 != 0);
                assert!(status >= -1);
                self.apply(effects);
            }
            7 => {
                let address = 0xfee0_0000 | u32::from(b) << 12 | u32::from(c & 0xc);
                let (status, effects) = self.chip.signal_msi(now, address, 0, value & 0xffff);
                assert!(status >= -1 && status <= self.vcpus as i32);
                self.apply(effects);
            }
            8 => {
                // Time passes; every timer due fires, in slot order.
                self.now = self
                    .now
                    .saturating_add(u64::from(u32::from_le_bytes([b, c, d, 0])));
                for slot in 0..self.timers.len() {
                    if let Some(deadline) = self.timers[slot] {
                        if deadline <= self.now {
                            self.timers[slot] = None;
                            let effects = self.chip.timer_fired(self.now, timer_of(slot));
                            self.apply(effects);
                        }
                    }
                }
            }
            9 => {
                // A spurious or early callback.
                let effects = self.chip.timer_fired(now, timer_of(usize::from(b) % 6));
                self.apply(effects);
            }
            10 => {
                let pending = self.chip.pending_interrupt(vcpu);
                let acked = self.chip.acknowledge_interrupt(vcpu);
                assert!(acked.is_none() || pending.is_some());
                if let (Some(PendingInterrupt::Lapic(vector)), Some(got)) = (pending, acked) {
                    assert_eq!(vector, got);
                }
                if c & 1 != 0 {
                    let effects = self.chip.mmio_write(vcpu, now, APIC + 0xb0, &[0; 4]);
                    self.apply_some(effects);
                }
            }
            11 => {
                let _ = self.chip.take_nmi(vcpu);
                let (_, effects) = self.chip.take_init(vcpu, now);
                self.apply(effects);
                let _ = self.chip.take_sipi(vcpu);
                let _ = self.chip.has_wakeup_event(vcpu, c & 1 != 0, c & 2 != 0);
                let _ = self.chip.cr8(vcpu);
                self.chip.set_cr8(vcpu, u64::from(d));
            }
            12 => {
                let wide = u64::from(value) | u64::from(c) << 40;
                match b % 4 {
                    0 => {
                        let base = self.chip.apic_base(vcpu).unwrap_or(0);
                        let new = base ^ (u64::from(c & 0x3) << 10);
                        let _ = self
                            .chip
                            .set_apic_base(vcpu, new, &FEATURES, MsrOrigin::Guest);
                    }
                    1 => {
                        if let Some((_, effects)) =
                            self.chip
                                .msr_write(vcpu, now, 0x6e0, wide, u64::from(e), 1_000_000)
                        {
                            self.apply(effects);
                        }
                    }
                    _ => {
                        let msr = 0x800 + u32::from(c);
                        let value = if b & 0x80 != 0 {
                            wide
                        } else {
                            u64::from(value)
                        };
                        if let Some((_, effects)) = self.chip.msr_write(vcpu, now, msr, value, 0, 0)
                        {
                            self.apply(effects);
                        }
                    }
                }
            }
            13 => {
                let msr = if b & 1 != 0 {
                    0x6e0
                } else {
                    0x800 + u32::from(c)
                };
                let _ = self.chip.msr_read(vcpu, now, msr);
            }
            14 => {
                // A routing table of up to three entries.
                let nr = u32::from(b % 4);
                let mut bytes = Vec::new();
                bytes.extend_from_slice(&nr.to_le_bytes());
                bytes.extend_from_slice(&[0; 4]);
                for index in 0..nr as u8 {
                    let seed = value.rotate_left(u32::from(index) * 8);
                    let gsi = u32::from(c.wrapping_add(index) % 32);
                    let msi = seed & 1 != 0;
                    for word in [gsi, if msi { 2 } else { 1 }, 0, 0] {
                        bytes.extend_from_slice(&word.to_le_bytes());
                    }
                    let union = if msi {
                        [0xfee0_0000 | (seed & 0x3000), 0, seed >> 8 & 0xffff, 0]
                    } else {
                        [(seed >> 1) % 3, (seed >> 3) % 24, 0, 0]
                    };
                    for word in union {
                        bytes.extend_from_slice(&word.to_le_bytes());
                    }
                    bytes.extend_from_slice(&[0; 16]);
                }
                let _ = self.chip.set_routing(&bytes);
            }
            _ => self.state_round_trip(vcpu, b, value),
        }
    }

    fn state_round_trip(&mut self, vcpu: usize, b: u8, value: u32) {
        let now = self.now;
        match b % 3 {
            0 => {
                let chip_id = u32::from(b >> 2) % 4;
                let Ok(state) = self.chip.get_irqchip(chip_id) else {
                    assert_eq!(chip_id, 3);
                    return;
                };
                let mut bytes = state.chip_bytes();
                // Perturb one byte of the image: the restore must cope.
                let index = (value as usize) % bytes.len();
                bytes[index] ^= (value >> 24) as u8;
                let changed = kvm_irqchip::with_chip_bytes(chip_id, &bytes);
                if let Ok(effects) = self.chip.set_irqchip(now, &changed) {
                    self.apply(effects);
                }
                // Not an identity: loading a PIC recomputes the cascade
                // request, as KVM does.  It must read back, though.
                assert!(self.chip.get_irqchip(chip_id).is_ok());
            }
            1 => {
                let mut regs = self.chip.get_lapic(vcpu, now).unwrap();
                let index = (value as usize) % regs.len();
                regs[index] ^= (value >> 24) as u8;
                let effects = self.chip.set_lapic(vcpu, now, &regs).unwrap();
                self.apply(effects);
            }
            _ => {
                if let Ok(mut state) = self.chip.get_pit2() {
                    state.channels[usize::from(b >> 2) % 3].count = value;
                    state.channels[0].mode = (value >> 8) as u8;
                    let effects = self.chip.set_pit2(now, &state).unwrap();
                    self.apply(effects);
                }
            }
        }
    }
}

/// Runs one input (see the module documentation).
pub fn run(data: &[u8]) {
    let Some((&header, ops)) = data.split_first() else {
        return;
    };
    let vcpus = 2 + usize::from(header % 3);
    let mut chip = Box::new(Chip::default());
    for vcpu in 0..vcpus {
        chip.add_vcpu(vcpu, header & 0x80 != 0).unwrap();
    }
    if header & 0x40 != 0 {
        let config = PitConfig {
            speaker_dummy: header & 0x20 != 0,
        };
        chip.create_pit(config, 0).unwrap();
    }
    let mut vm = Vm {
        chip,
        vcpus,
        now: 0,
        timers: [None; 6],
    };
    for op in ops.chunks(8) {
        let mut bytes = [0u8; 8];
        bytes[..op.len()].copy_from_slice(op);
        vm.step(bytes);
    }
}
