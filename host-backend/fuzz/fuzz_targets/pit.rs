//! Fuzzes hv-core's 8254 PIT: random port accesses, clock steps, timer callbacks
//! and KVM state images; the input format and the checked properties are in
//! hv-core/tests/common/irqchip_harness.rs (shared with the stable corpus
//! replay, hv-core/tests/irqchip_corpus.rs).
#![no_main]

#[path = "../../hv-core/tests/common/irqchip_harness.rs"]
mod irqchip_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| irqchip_harness::run_pit(data));
