// SPDX-License-Identifier: GPL-2.0

//! Network packets on a virtqueue, in the virtio-net format.
//!
//! C header: [`include/linux/virtio_net.h`](srctree/include/linux/virtio_net.h).
//! Specification: virtio 1.2, section 5.1.6 (device operation: each packet
//! is preceded by a `struct virtio_net_hdr`, 12 bytes with
//! `VIRTIO_NET_F_MRG_RXBUF` or a modern device).
//!
//! Transmit: a transmit queue carries [`SkBuff`]s. [`Virtqueue::add_skb`]
//! writes the header for the packet's offloads (checksum, segmentation)
//! into the skb's control block and hands the header and the packet's data
//! to the device; the queue owns the skb until [`Virtqueue::get_sent`]
//! gives it back.
//!
//! Receive: drivers post plain buffers (`KBox<T>`) and build skbs from
//! them; [`apply_rx_header`] applies the offload part of a received header
//! to the skb, refusing inconsistent ones.

use super::{private::Sealed, Buffer, Virtqueue};
use crate::{
    bindings,
    error::{code::*, Error, Result},
    net::dev::SkBuff,
    types::Opaque,
};
use core::{ffi::c_void, mem::size_of};

/// The bytes of the header before each packet (`struct
/// virtio_net_hdr_mrg_rxbuf`).
pub const HEADER_BYTES: usize = size_of::<bindings::virtio_net_hdr_mrg_rxbuf>();
const _: () = assert!(HEADER_BYTES == 12);
const _: () = assert!(HEADER_BYTES <= 48);

/// Data entries of one transmitted packet at most: the linear part and the
/// page fragments.
const MAX_TX_ENTRIES: usize = bindings::MAX_SKB_FRAGS as usize + 1;

impl Sealed for SkBuff {
    unsafe fn from_token(token: *mut c_void) -> Self {
        // SAFETY: Tokens of `SkBuff` buffers are owned skbs (see `add_skb`),
        // non-null, turned back once per this function's contract.
        unsafe { SkBuff::from_raw(token.cast()).unwrap_unchecked() }
    }
}
impl Buffer for SkBuff {}

impl Virtqueue<SkBuff> {
    /// Hands `skb` to the device, after its header. On failure (`ENOSPC`:
    /// the queue is full; `EINVAL`: an offload the header cannot express)
    /// the skb comes back with the error.
    pub fn add_skb(&mut self, skb: SkBuff) -> core::result::Result<(), (Error, SkBuff)> {
        let raw = skb.as_raw();
        // SAFETY: `raw` is an owned skb; its control block (48 bytes) is the
        // driver's while the driver owns the skb, and holds the header while
        // the device does.
        let header = unsafe { bindings::skb_cb(raw) }.cast::<bindings::virtio_net_hdr_mrg_rxbuf>();
        // SAFETY: As above; `hdr` is the first member of the header.
        let ret = unsafe {
            header.write_bytes(0, 1);
            bindings::virtio_net_hdr_from_skb(raw, core::ptr::addr_of_mut!((*header).hdr))
        };
        if ret != 0 {
            return Err((EINVAL, skb));
        }
        let table = Opaque::<[bindings::scatterlist; MAX_TX_ENTRIES + 1]>::uninit();
        let entries = table.get().cast::<bindings::scatterlist>();
        // SAFETY: `entries` has `MAX_TX_ENTRIES + 1` scatterlists; entry 0
        // is the header, the others the skb's data (at most
        // `MAX_SKB_FRAGS + 1` entries without a frag list, which
        // `skb_to_sgvec` checks, returning an error beyond the table).
        let count = unsafe {
            bindings::sg_init_table(entries, (MAX_TX_ENTRIES + 1) as u32);
            bindings::sg_set_buf(entries, header.cast(), HEADER_BYTES as u32);
            bindings::skb_to_sgvec(raw, entries.add(1), 0, (*raw).len as i32)
        };
        if count <= 0 || count as usize > MAX_TX_ENTRIES {
            return Err((EINVAL, skb));
        }
        let token = skb.into_raw();
        // SAFETY: The `count + 1` entries are initialized and used only
        // during the call; they point into the skb (header in its control
        // block), which the queue owns until it gives the token back.
        let ret = unsafe {
            bindings::virtqueue_add_outbuf(
                self.vq.as_ptr(),
                entries,
                count as u32 + 1,
                token.cast(),
                crate::alloc::flags::GFP_ATOMIC.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The queue did not take the skb.
            let skb = unsafe { SkBuff::from_token(token.cast()) };
            return Err((Error::from_errno(ret), skb));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// A packet the device has sent, if any.
    pub fn get_sent(&mut self) -> Option<SkBuff> {
        let mut len = 0u32;
        // SAFETY: The queue is live; the virtio core checks the id.
        let token = unsafe { bindings::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        if token.is_null() {
            return None;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        // SAFETY: Every token of this queue is an skb given by `add_skb`.
        Some(unsafe { SkBuff::from_token(token) })
    }
}

impl<B: Buffer> Virtqueue<B> {
    /// Free descriptors in the ring.
    pub fn free_descriptors(&self) -> u32 {
        // SAFETY: The queue is live; `num_free` is updated under the
        // caller's serialization (`&self` of a queue kept behind a lock).
        unsafe { (*self.vq.as_ptr()).num_free }
    }
}

/// Applies the offload part of a received `header` (checksum state,
/// segmentation) to `skb`, whose data is the packet after the header.
/// `EINVAL` if the header is inconsistent with the packet.
pub fn apply_rx_header(skb: &mut SkBuff, header: &[u8; HEADER_BYTES]) -> Result {
    let hdr = bindings::virtio_net_hdr {
        flags: header[0],
        gso_type: header[1],
        hdr_len: u16::from_le_bytes([header[2], header[3]]),
        gso_size: u16::from_le_bytes([header[4], header[5]]),
        csum_start: u16::from_le_bytes([header[6], header[7]]),
        csum_offset: u16::from_le_bytes([header[8], header[9]]),
    };
    // SAFETY: `skb` is owned; `hdr` is a valid header; the C function checks
    // the offsets against the packet.
    let ret = unsafe { bindings::virtio_net_hdr_to_skb(skb.as_raw(), &hdr) };
    if ret != 0 {
        return Err(EINVAL);
    }
    Ok(())
}
