//! Allocates and touches memory: `pvrs-alloc MIB [HOLD_SECONDS]` takes MIB
//! mebibytes in 1 MiB pieces, writes every page (so the kernel must really
//! provide them), prints `alloc ok mib=N`, and holds them for HOLD_SECONDS
//! (default 1) before exiting. A test uses it to push a guest past its free
//! memory.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: pvrs-alloc MIB [HOLD_SECONDS]");
        std::process::exit(2)
    });
    let hold: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for i in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = (i & 0xff) as u8 | 1;
        }
        chunks.push(chunk);
        if (i + 1) % 64 == 0 {
            println!("alloc progress mib={}", i + 1);
        }
    }
    let touched: usize = chunks
        .iter()
        .map(|c| c.iter().step_by(4096).filter(|&&b| b != 0).count())
        .sum();
    println!("alloc ok mib={} pages={}", mib, touched);
    std::thread::sleep(std::time::Duration::from_secs(hold));
}
