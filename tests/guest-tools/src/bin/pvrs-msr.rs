//! Reads a model-specific register on one CPU through /dev/cpu/N/msr
//! (CONFIG_X86_MSR): `pvrs-msr CPU MSR` prints `msr=0x... cpu=N value=0x...`.

use std::os::unix::fs::FileExt;

fn parse(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {text}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: pvrs-msr CPU MSR");
        std::process::exit(2);
    }
    let cpu = parse(&args[1]);
    let msr = parse(&args[2]);
    let file = std::fs::File::open(format!("/dev/cpu/{cpu}/msr"))
        .unwrap_or_else(|e| panic!("/dev/cpu/{cpu}/msr: {e}"));
    let mut value = [0u8; 8];
    match file.read_exact_at(&mut value, msr) {
        Ok(()) => println!(
            "msr={msr:#x} cpu={cpu} value={:#x}",
            u64::from_le_bytes(value)
        ),
        Err(e) => {
            println!("msr={msr:#x} cpu={cpu} error={e}");
            std::process::exit(1);
        }
    }
}
