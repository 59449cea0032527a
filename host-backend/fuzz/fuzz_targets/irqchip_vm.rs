//! Fuzzes hv-core's VM-level irqchip (irqchip::vm): random sequences of
//! guest accesses, GSIs, MSIs, routing tables, timers, acknowledges and
//! KVM state round trips across 2-4 vCPUs.  The input format and the
//! checked properties are in hv-core/tests/common/irqchip_vm_harness.rs
//! (shared with the stable corpus replay, hv-core/tests/irqchip_corpus.rs).
#![no_main]

#[path = "../../hv-core/tests/common/irqchip_vm_harness.rs"]
mod irqchip_vm_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| irqchip_vm_harness::run(data));
