//! x86 instruction handling that SVM without NRIPS and DecodeAssists leaves
//! to the hypervisor: decoding the instruction at the guest's RIP
//! ([`decode`]) and emulating the forms that touch MMIO ([`emulate`]).

pub mod decode;
pub mod emulate;
