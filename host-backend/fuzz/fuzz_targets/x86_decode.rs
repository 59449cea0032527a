//! Differential fuzzing of hv-core's x86 decoder against iced-x86: the
//! first byte picks the code size (16/32/64-bit), the rest (up to 16
//! bytes) is decoded by both; the rules are in
//! hv-core/tests/common/iced_oracle.rs (shared with the proptest).
#![no_main]

#[path = "../../hv-core/tests/common/iced_oracle.rs"]
mod iced_oracle;

use hv_core::x86::decode::CodeSize;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let code_size = match selector % 3 {
        0 => CodeSize::Bits16,
        1 => CodeSize::Bits32,
        _ => CodeSize::Bits64,
    };
    let bytes = bytes.get(..bytes.len().min(16)).unwrap_or(bytes);
    if let Err(disagreement) = iced_oracle::check(bytes, code_size) {
        panic!("{disagreement}");
    }
});
