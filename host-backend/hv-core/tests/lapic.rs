//! The local APIC never panics and keeps its invariants (see
//! `common/lapic_driver.rs`): a proptest over the input of the `lapic`
//! fuzz target, with steps built from opcodes so that most inputs get
//! deep, and a replay of that target's corpus
//! (host-backend/fuzz/corpus/lapic/).

#[path = "common/lapic_driver.rs"]
mod lapic_driver;

use proptest::prelude::*;

/// One step: an opcode and enough operand bytes for any opcode.
fn step() -> impl Strategy<Value = Vec<u8>> {
    (0u8..17, prop::collection::vec(any::<u8>(), 20)).prop_map(|(opcode, operands)| {
        let mut bytes = vec![opcode];
        // Most MMIO offsets at a register, most vectors legal.
        bytes.extend_from_slice(&operands);
        if opcode < 2 {
            bytes[1] &= 0xf0;
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_sequences_keep_invariants(
        index in any::<u8>(),
        flags in any::<u8>(),
        steps in prop::collection::vec(step(), 0..60),
    ) {
        // Steps are padded to a fixed size and so misread as several
        // steps; that is fine, it is all input.  Enable the APIC first
        // (SVR = 0x1ff) so fixed interrupts get in.
        let mut data = vec![index, flags, 0, 0xf0, 0x00, 0xff, 0x01, 0, 0];
        for step in steps {
            data.extend_from_slice(&step);
        }
        lapic_driver::run(&data);
    }
}

#[test]
fn fuzz_corpus_replays() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/lapic");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&directory).unwrap() {
        lapic_driver::run(&std::fs::read(entry.unwrap().path()).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", directory.display());
}
