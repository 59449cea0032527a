//! The vCPU exit handler never panics: a proptest over the input of the
//! `vcpu_exit` fuzz target (with an interesting instruction placed at RIP
//! more often than chance would), and a replay of that target's corpus
//! (host-backend/fuzz/corpus/vcpu_exit/).

#[path = "common/vcpu_exit_driver.rs"]
mod vcpu_exit_driver;

use proptest::prelude::*;
use vcpu_exit_driver::{run, HEADER, RIP_OFFSET};

/// Instructions that reach the handler's decode paths.
const INSTRUCTIONS: &[&[u8]] = &[
    &[0x89, 0x08],       // mov [rax], ecx
    &[0x44, 0x8b, 0x00], // mov r8d, [rax]
    &[0x0f, 0xb7, 0x08], // movzx ecx, word [rax]
    &[0x01, 0x08],       // add [rax], ecx
    &[0xf3, 0xa4],       // rep movsb
    &[0xf3, 0xab],       // rep stosd
    &[0xf3, 0x6e],       // rep outsb
    &[0x66, 0xf3, 0x6d], // rep insw
    &[0x6c],             // insb
    &[0xee],             // out dx, al
    &[0xed],             // in eax, dx
    &[0x0f, 0xa2],       // cpuid
    &[0x2e, 0x0f, 0xa2], // cs cpuid
    &[0x0f, 0x30],       // wrmsr
    &[0x0f, 0x32],       // rdmsr
    &[0x0f, 0x01, 0xd9], // vmmcall
    &[0xf4],             // hlt
    &[0x0f, 0x22, 0xc0], // mov cr0, rax
    &[0x0f, 0x0b],       // ud2
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_exits_and_memory_never_panic(
        header in prop::collection::vec(any::<u8>(), HEADER),
        small_rip in any::<bool>(),
        instruction in prop::sample::select(INSTRUCTIONS),
        memory in prop::collection::vec(any::<u8>(), 0..8192),
    ) {
        let mut data = header;
        let mut memory = memory;
        if small_rip && !memory.is_empty() {
            // RIP inside the memory, with an instruction there: in real
            // and unpaged modes linear addresses are physical.
            let rip = u64::from_le_bytes(data[RIP_OFFSET..RIP_OFFSET + 8].try_into().unwrap())
                % memory.len() as u64;
            data[RIP_OFFSET..RIP_OFFSET + 8].copy_from_slice(&rip.to_le_bytes());
            for (offset, byte) in instruction.iter().enumerate() {
                let index = (rip as usize + offset) % memory.len();
                memory[index] = *byte;
            }
        }
        data.extend_from_slice(&memory);
        run(&data);
    }
}

#[test]
fn fuzz_corpus_replays() {
    let directory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vcpu_exit");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", directory.display());
}
