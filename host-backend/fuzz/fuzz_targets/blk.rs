//! Fuzzes virtio-blk requests (virtio 1.2 §5.2.6); see pvrs_vmm::fuzzing::blk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvrs_vmm::fuzzing::blk(data));
