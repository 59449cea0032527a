//! Fuzzes descriptor chains and the available/used rings (virtio 1.2 §2.7); see pvrs_vmm::fuzzing::virtqueue.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvrs_vmm::fuzzing::virtqueue(data));
