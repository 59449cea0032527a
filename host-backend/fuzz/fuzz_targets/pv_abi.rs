//! Fuzzes hv-core's PV ABI (pv.rs): MSR writes and reads, hypercalls with
//! and without an in-kernel irqchip, entry hooks and preemption marks
//! against a fake guest RAM.  The input format and the checked properties
//! are in hv-core/tests/common/pv_abi_harness.rs (shared with the stable
//! corpus replay, hv-core/tests/pv_abi_corpus.rs).
#![no_main]

#[path = "../../hv-core/tests/common/pv_abi_harness.rs"]
mod pv_abi_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_abi_harness::run(data));
