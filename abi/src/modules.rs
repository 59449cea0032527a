// The module list of the ABI.  This file is shared verbatim by the `pvrs_abi`
// crate (through `include!` in lib.rs) and by the guest kernel modules
// (through `#[path = "../abi/src/modules.rs"] pub mod abi;`), so it must not
// contain crate-level attributes or inner doc comments.

#[macro_use]
mod macros;

pub mod cpuid;
pub mod hypercall;
pub mod msr;
pub mod pvclock;
pub mod steal_time;
pub mod virtio;
pub mod virtio_balloon;
pub mod virtio_blk;
pub mod virtio_net;
