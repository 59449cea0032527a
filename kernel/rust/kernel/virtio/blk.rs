// SPDX-License-Identifier: GPL-2.0

//! Block requests on a virtqueue, in the virtio-blk request format.
//!
//! C header: [`include/uapi/linux/virtio_blk.h`](srctree/include/uapi/linux/virtio_blk.h).
//! Specification: virtio 1.2, section 5.2.6 (device operation: a request is
//! a device-readable header, data, and a device-writable status byte).
//!
//! A blk-mq driver sets [`Operations::RequestData`] to [`Command`]: each
//! request then carries, in its PDU, the memory the device reads (header,
//! discard/write-zeroes range) and writes (status), and the scatter-gather
//! table of its data. [`Virtqueue::add_request`] builds the descriptor chain
//! from the request itself and keeps an [`ARef`] to it while the device owns
//! it, so the request's pages and PDU provably outlive the device's access;
//! [`Virtqueue::get_used`] gives the request back with the status the device
//! wrote. The driver decides the command (it knows the protocol); the
//! direction of the data comes from the request's operation, never from the
//! driver.
//!
//! The device is not trusted: a used length larger than what the chain let
//! the device write is counted and logged (the status byte lives in the
//! driver's memory either way), and a status the device never wrote reads
//! as [`STATUS_NOT_WRITTEN`].

use super::{private::Sealed, Buffer, Virtqueue};
use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    block::mq::{Operations, Request},
    error::{code::*, Error, Result},
    pr_warn,
    types::{ARef, Opaque},
};
use core::{
    ffi::c_void,
    mem::size_of,
    ptr::{addr_of_mut, NonNull},
    sync::atomic::{AtomicU32, Ordering},
};

/// Data segments one request may have (its inline scatter-gather table);
/// a driver sets its disk's segment limit to at most this.
pub const MAX_SEGMENTS: usize = 64;

/// The bytes of a device's serial number (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = bindings::VIRTIO_BLK_ID_BYTES as usize;

/// What the status byte holds when the device did not write it: not one of
/// the `VIRTIO_BLK_S_*` values, so it reads as an error.
pub const STATUS_NOT_WRITTEN: u8 = 0xff;

const HEADER_BYTES: usize = size_of::<bindings::virtio_blk_outhdr>();
const RANGE_BYTES: usize = size_of::<bindings::virtio_blk_discard_write_zeroes>();
const _: () = assert!(HEADER_BYTES == 16 && RANGE_BYTES == 16);

/// The request header (`struct virtio_blk_outhdr`), in CPU byte order.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// The command (`VIRTIO_BLK_T_*`).
    pub kind: u32,
    /// The I/O priority.
    pub ioprio: u32,
    /// The first sector (512 bytes) of a read or write.
    pub sector: u64,
}

impl Header {
    fn to_le_bytes(self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.ioprio.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.sector.to_le_bytes());
        bytes
    }
}

/// What follows the header in a request's chain.
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    /// Nothing (flush).
    None,
    /// The request's data pages: device-readable for writes, device-writable
    /// for reads (by the request's operation).
    Data,
    /// One discard or write-zeroes range
    /// (`struct virtio_blk_discard_write_zeroes`).
    Range {
        /// The first sector.
        sector: u64,
        /// The number of sectors.
        num_sectors: u32,
        /// `VIRTIO_BLK_WRITE_ZEROES_FLAG_*`.
        flags: u32,
    },
}

/// The memory the device reads and writes for one request.
#[repr(C)]
struct DeviceArea {
    header: [u8; HEADER_BYTES],
    range: [u8; RANGE_BYTES],
    status: u8,
}

/// The virtio-blk part of a request: use it as [`Operations::RequestData`].
pub struct Command {
    /// Shared with the device while the request is in the queue.
    area: Opaque<DeviceArea>,
    /// The data's scatter-gather table, filled when the request is added.
    sg: Opaque<[bindings::scatterlist; MAX_SEGMENTS]>,
    /// How many bytes the chain lets the device write.
    writable: AtomicU32,
}

// SAFETY: `area` and `sg` are only accessed by `Virtqueue::add_request` and
// `Virtqueue::get_used`, with the queue borrowed mutably and the request's
// only driver reference moved into or out of the queue; the device accesses
// `area` only in between.
unsafe impl Send for Command {}
// SAFETY: As above.
unsafe impl Sync for Command {}

impl Command {
    /// The command area of a new request.
    pub fn new() -> Self {
        Self {
            area: Opaque::new(DeviceArea {
                header: [0; HEADER_BYTES],
                range: [0; RANGE_BYTES],
                status: STATUS_NOT_WRITTEN,
            }),
            sg: Opaque::uninit(),
            writable: AtomicU32::new(0),
        }
    }
}

impl Command {
    /// The status byte of the last request the device completed with this
    /// command ([`STATUS_NOT_WRITTEN`] if it did not write one); meaningful
    /// once [`Virtqueue::get_used`] gave the request back.
    pub fn status(&self) -> u8 {
        // SAFETY: The area is initialized by `add_request` before the device
        // sees it; a volatile read takes whatever byte is there.
        unsafe { addr_of_mut!((*self.area.get()).status).read_volatile() }
    }
}

impl Default for Command {
    fn default() -> Self {
        Self::new()
    }
}

/// A GET_ID query (the device's serial number), sent outside blk-mq.
#[repr(C, align(8))]
pub struct IdQuery {
    header: [u8; HEADER_BYTES],
    id: [u8; ID_BYTES],
    status: u8,
}

impl IdQuery {
    /// A new query.
    pub fn new() -> Result<KBox<Self>> {
        let header = Header {
            kind: bindings::VIRTIO_BLK_T_GET_ID,
            ioprio: 0,
            sector: 0,
        };
        Ok(KBox::new(
            Self {
                header: header.to_le_bytes(),
                id: [0; ID_BYTES],
                status: STATUS_NOT_WRITTEN,
            },
            GFP_KERNEL,
        )?)
    }
}

/// A buffer of a virtio-blk queue: a block request or a GET_ID query.
pub enum BlkBuffer<T: Operations<RequestData = Command>> {
    /// A request from blk-mq.
    Request(ARef<Request<T>>),
    /// A serial-number query.
    Id(KBox<IdQuery>),
}

/// Tokens of [`BlkBuffer::Id`] have this bit set; request and query
/// pointers are at least 8-byte aligned, so it is free.
const ID_TOKEN: usize = 1;

impl<T: Operations<RequestData = Command>> Sealed for BlkBuffer<T> {
    unsafe fn from_token(token: *mut c_void) -> Self {
        let raw = token as usize;
        if raw & ID_TOKEN != 0 {
            // SAFETY: Tokens with the bit set are `KBox::into_raw` of queries
            // (see `add_get_id`), turned back once per this function's
            // contract.
            Self::Id(unsafe { KBox::from_raw((raw & !ID_TOKEN) as *mut IdQuery) })
        } else {
            // SAFETY: Other tokens are `ARef::into_raw` of requests (see
            // `add_request`), non-null, turned back once.
            Self::Request(unsafe { ARef::from_raw(NonNull::new_unchecked(token.cast())) })
        }
    }

    fn abandon(self) {
        // The device was reset with the request in its queue: fail it rather
        // than leave blk-mq waiting for it.
        if let Self::Request(rq) = self {
            if Request::end(rq, Err(EIO)).is_err() {
                pr_warn!("virtio_blk: an abandoned request is still referenced\n");
            }
        }
    }
}

impl<T: Operations<RequestData = Command>> Buffer for BlkBuffer<T> {}

/// A buffer the device has used.
pub enum Used<T: Operations<RequestData = Command>> {
    /// A request, with the status byte the device wrote
    /// ([`STATUS_NOT_WRITTEN`] if it did not).
    Request {
        /// The request, to be ended by the driver.
        rq: ARef<Request<T>>,
        /// `VIRTIO_BLK_S_*`.
        status: u8,
    },
    /// A GET_ID query's answer.
    Id {
        /// The serial number, NUL-padded (not NUL-terminated when 20 bytes
        /// long).
        id: [u8; ID_BYTES],
        /// `VIRTIO_BLK_S_*`.
        status: u8,
    },
}

/// An initialized one-entry scatterlist over `len` bytes at `buf`.
///
/// # Safety
///
/// `buf` must be valid for `len` bytes for as long as the device may access
/// the chain the entry goes into.
unsafe fn one_entry(entry: &Opaque<bindings::scatterlist>, buf: *const u8, len: usize) {
    // SAFETY: `entry` is a local scatterlist; per the safety requirements
    // `buf` is valid for `len` bytes (at most 4 KiB here).
    unsafe {
        bindings::sg_init_table(entry.get(), 1);
        bindings::sg_set_buf(entry.get(), buf.cast(), len as u32);
    }
}

impl<T: Operations<RequestData = Command>> Virtqueue<BlkBuffer<T>> {
    /// Hands request `rq` to the device: `header`, then `payload`, then the
    /// status byte. On failure (`ENOSPC`: the queue is full; `EINVAL`: more
    /// data segments than [`MAX_SEGMENTS`]) the request comes back with the
    /// error.
    pub fn add_request(
        &mut self,
        rq: ARef<Request<T>>,
        header: Header,
        payload: Payload,
    ) -> core::result::Result<(), (Error, ARef<Request<T>>)> {
        let command = rq.data();
        let area = command.area.get();
        let device_writes_data = rq.op().device_writes_data();

        if let Payload::Data = payload {
            let segments = usize::from(rq.nr_phys_segments());
            if segments == 0 || segments > MAX_SEGMENTS {
                return Err((EINVAL, rq));
            }
            let table = command.sg.get().cast::<bindings::scatterlist>();
            // SAFETY: The table has `MAX_SEGMENTS >= segments` entries and
            // is only used here (the request is not in the queue); the
            // request is live and owned by the driver; `blk_rq_map_sg` fills
            // at most `nr_phys_segments` entries and marks the last one.
            let mapped = unsafe {
                bindings::sg_init_table(table, segments as u32);
                bindings::blk_rq_map_sg(rq.as_raw(), table)
            };
            if mapped <= 0 || mapped as usize > segments {
                return Err((EINVAL, rq));
            }
        }

        // SAFETY: The device does not access `area` (the request is not in
        // the queue), and `add_request` is its only writer.
        unsafe {
            addr_of_mut!((*area).header).write(header.to_le_bytes());
            if let Payload::Range {
                sector,
                num_sectors,
                flags,
            } = payload
            {
                let mut range = [0u8; RANGE_BYTES];
                range[0..8].copy_from_slice(&sector.to_le_bytes());
                range[8..12].copy_from_slice(&num_sectors.to_le_bytes());
                range[12..16].copy_from_slice(&flags.to_le_bytes());
                addr_of_mut!((*area).range).write(range);
            }
            addr_of_mut!((*area).status).write(STATUS_NOT_WRITTEN);
        }

        let header_sg = Opaque::<bindings::scatterlist>::uninit();
        let range_sg = Opaque::<bindings::scatterlist>::uninit();
        let status_sg = Opaque::<bindings::scatterlist>::uninit();
        // SAFETY: The header, range and status live in the request's PDU,
        // which lives while the queue holds the request's `ARef`.
        unsafe {
            one_entry(
                &header_sg,
                addr_of_mut!((*area).header).cast(),
                HEADER_BYTES,
            );
            one_entry(&range_sg, addr_of_mut!((*area).range).cast(), RANGE_BYTES);
            one_entry(&status_sg, addr_of_mut!((*area).status).cast(), 1);
        }
        let data_sg = command.sg.get().cast::<bindings::scatterlist>();

        // Device-readable lists first, then device-writable ones.
        let mut lists: [*mut bindings::scatterlist; 4] = [core::ptr::null_mut(); 4];
        let mut count = 0usize;
        let mut push = |list: *mut bindings::scatterlist| {
            if let Some(slot) = lists.get_mut(count) {
                *slot = list;
                count += 1;
            }
        };
        push(header_sg.get());
        let mut readable_lists = 1u32;
        let mut writable_bytes = 1u32;
        match payload {
            Payload::None => {}
            Payload::Range { .. } => {
                push(range_sg.get());
                readable_lists += 1;
            }
            Payload::Data if !device_writes_data => {
                push(data_sg);
                readable_lists += 1;
            }
            Payload::Data => {}
        }
        if let (Payload::Data, true) = (payload, device_writes_data) {
            push(data_sg);
            writable_bytes = writable_bytes.saturating_add(rq.bytes());
        }
        push(status_sg.get());
        let writable_lists = count as u32 - readable_lists;
        command.writable.store(writable_bytes, Ordering::Relaxed);

        let token = ARef::into_raw(rq).as_ptr();
        // SAFETY: `lists` holds `count` initialized scatterlists, used only
        // during the call (the data table's entries point into the
        // request's pages, which stay allocated until the request ends);
        // `token` is turned back into the `ARef` exactly once: by
        // `get_used`, by the queue's `drop`, or below.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq.as_ptr(),
                lists.as_mut_ptr(),
                readable_lists,
                writable_lists,
                token.cast(),
                crate::alloc::flags::GFP_ATOMIC.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The queue did not take the request.
            let rq = unsafe { ARef::from_raw(NonNull::new_unchecked(token)) };
            return Err((Error::from_errno(ret), rq));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Hands a GET_ID query to the device. On failure the query comes back
    /// with the error.
    pub fn add_get_id(
        &mut self,
        query: KBox<IdQuery>,
    ) -> core::result::Result<(), (Error, KBox<IdQuery>)> {
        let raw = KBox::into_raw(query);
        let header_sg = Opaque::<bindings::scatterlist>::uninit();
        let id_sg = Opaque::<bindings::scatterlist>::uninit();
        let status_sg = Opaque::<bindings::scatterlist>::uninit();
        // SAFETY: The query is a live kmalloc'd allocation that the queue
        // owns until it gives the token back.
        unsafe {
            one_entry(&header_sg, addr_of_mut!((*raw).header).cast(), HEADER_BYTES);
            one_entry(&id_sg, addr_of_mut!((*raw).id).cast(), ID_BYTES);
            one_entry(&status_sg, addr_of_mut!((*raw).status).cast(), 1);
        }
        let mut lists = [header_sg.get(), id_sg.get(), status_sg.get()];
        // SAFETY: As in `add_request`; the token carries `ID_TOKEN`, which
        // the query's 8-byte alignment leaves free.
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq.as_ptr(),
                lists.as_mut_ptr(),
                1,
                2,
                (raw as usize | ID_TOKEN) as *mut c_void,
                crate::alloc::flags::GFP_ATOMIC.as_raw(),
            )
        };
        if ret != 0 {
            // SAFETY: The queue did not take the query.
            return Err((Error::from_errno(ret), unsafe { KBox::from_raw(raw) }));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// A buffer the device has used, if any.
    pub fn get_used(&mut self) -> Option<Used<T>> {
        let mut len = 0u32;
        // SAFETY: The queue is live; `len` is a valid output location. The
        // virtio core checks that the id the device returned is one it was
        // given (else it marks the queue broken and returns NULL).
        let token = unsafe { bindings::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        if token.is_null() {
            return None;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        // SAFETY: Every token of this queue is a `BlkBuffer` given by
        // `add_request` or `add_get_id`, and the queue just gave this one
        // back.
        let used = match unsafe { BlkBuffer::<T>::from_token(token) } {
            BlkBuffer::Request(rq) => {
                let command = rq.data();
                self.check_used_length(len, command.writable.load(Ordering::Relaxed));
                // SAFETY: The device is done with the area; the volatile read
                // takes whatever byte it left.
                let status = unsafe { addr_of_mut!((*command.area.get()).status).read_volatile() };
                Used::Request { rq, status }
            }
            BlkBuffer::Id(query) => {
                self.check_used_length(len, (ID_BYTES + 1) as u32);
                Used::Id {
                    id: query.id,
                    status: query.status,
                }
            }
        };
        Some(used)
    }

    fn check_used_length(&self, len: u32, writable: u32) {
        if len > writable {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            pr_warn!(
                "virtio_blk: used length {} exceeds the {} bytes the device may write\n",
                len,
                writable
            );
        }
    }
}
