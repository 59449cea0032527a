// SPDX-License-Identifier: GPL-2.0

//! pvrs_virtio_blk: a virtio block driver in Rust (virtio 1.2, 5.2), on
//! blk-mq.
//!
//! - One request queue per vCPU, up to the device's `num_queues`
//!   (`VIRTIO_BLK_F_MQ`); completions end requests in the queue's interrupt.
//! - Reads and writes carry the request's pages as a scatter-gather list
//!   (`VIRTIO_BLK_F_SEG_MAX`, `VIRTIO_BLK_F_SIZE_MAX` limit it); block size
//!   and topology from `VIRTIO_BLK_F_BLK_SIZE` / `VIRTIO_BLK_F_TOPOLOGY`.
//! - `VIRTIO_BLK_F_FLUSH`: the disk announces a write-back cache; the block
//!   layer sends flushes for `REQ_PREFLUSH` and turns FUA writes into a
//!   write plus a flush (no FUA in the protocol).
//! - `VIRTIO_BLK_F_DISCARD` / `VIRTIO_BLK_F_WRITE_ZEROES`: one range per
//!   request. `VIRTIO_BLK_F_RO`: a read-only disk.
//! - GET_ID at start: the serial number in `/sys/block/vdX/serial`.
//! - Capacity changes (configuration change interrupt) resize the live disk.
//! - Device status IOERR fails a request with `-EIO`, UNSUPP with
//!   `-EOPNOTSUPP`; any other status (or none) with `-EIO`, counted and
//!   logged. Used lengths beyond what the device may write are counted and
//!   logged by the queue; ids the driver never posted are refused by the
//!   virtio core, which marks the queue broken.

use kernel::{c_str, prelude::*, virtio};

#[path = "../abi/src/modules.rs"]
/// The guest/host ABI, compiled from the same files as the `pvrs-abi` crate.
pub mod abi;
pub mod driver;

module! {
    type: PvrsVirtioBlkModule,
    name: "pvrs_virtio_blk",
    author: "pvrs maintainers",
    description: "virtio block driver, in Rust",
    license: "GPL",
}

struct PvrsVirtioBlkModule {
    _registration: virtio::Registration<driver::VirtioBlk>,
}

impl kernel::Module for PvrsVirtioBlkModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registration = virtio::Registration::register(module)?;
        pr_info!(
            "pvrs: virtio_blk: driver {:?} registered\n",
            c_str!("pvrs_virtio_blk")
        );
        Ok(Self {
            _registration: registration,
        })
    }
}
