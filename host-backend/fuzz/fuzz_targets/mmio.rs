//! Fuzzes virtio-mmio register accesses (virtio 1.2 §4.2.2); see pvrs_vmm::fuzzing::mmio.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvrs_vmm::fuzzing::mmio(data));
