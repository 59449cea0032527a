//! Replays the fuzz corpus (host-backend/fuzz/corpus/<target>/) through
//! the fuzz entry points on the stable toolchain, so that every input the
//! fuzzer ever kept, and every crash it found and that was fixed, stays a
//! regression test.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}

#[test]
fn virtqueue_corpus() {
    replay("virtqueue", pvrs_vmm::fuzzing::virtqueue);
}

#[test]
fn blk_corpus() {
    replay("blk", pvrs_vmm::fuzzing::blk);
}

#[test]
fn net_corpus() {
    replay("net", pvrs_vmm::fuzzing::net);
}

#[test]
fn balloon_corpus() {
    replay("balloon", pvrs_vmm::fuzzing::balloon);
}

#[test]
fn mmio_corpus() {
    replay("mmio", pvrs_vmm::fuzzing::mmio);
}

#[test]
fn short_and_empty_inputs() {
    for data in [&[][..], &[0], &[0xff, 0xff, 0xff], &[4, 0, 0, 1]] {
        pvrs_vmm::fuzzing::virtqueue(data);
        pvrs_vmm::fuzzing::blk(data);
        pvrs_vmm::fuzzing::net(data);
        pvrs_vmm::fuzzing::balloon(data);
        pvrs_vmm::fuzzing::mmio(data);
    }
}
