//! Fuzzes hv-core's 8259A PIC pair: random port accesses, pin levels, INTA cycles
//! and KVM state images; the input format and the checked properties are in
//! hv-core/tests/common/irqchip_harness.rs (shared with the stable corpus
//! replay, hv-core/tests/irqchip_corpus.rs).
#![no_main]

#[path = "../../hv-core/tests/common/irqchip_harness.rs"]
mod irqchip_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| irqchip_harness::run_pic(data));
