//! virtio-blk (virtio 1.2 §5.2) on a file.
//!
//! One request queue. A request (§5.2.6) is a 16-byte header
//! `{type: le32, reserved: le32, sector: le64}` the device reads, data, and
//! a status byte the device writes last. The framing is taken from the
//! validated chain as two byte streams (§2.7.4: devices must not assume a
//! descriptor layout): the readable stream is header + data-out, the
//! writable stream is data-in + status.
//!
//! | type | action on the file |
//! |------|--------------------|
//! | `IN` | `pread` into the guest buffers |
//! | `OUT` | `pwrite` (IOERR on a read-only disk) |
//! | `FLUSH` | `fdatasync` |
//! | `GET_ID` | the 20-byte serial (the file name, truncated) |
//! | `DISCARD` | `fallocate(PUNCH_HOLE)` per segment (§5.2.6.2) |
//! | `WRITE_ZEROES` | `fallocate(ZERO_RANGE)`, or `PUNCH_HOLE` with the unmap flag |
//!
//! The capacity is the file size in 512-byte sectors (a partial last sector
//! is not exposed). Requests outside it, with a data length that is not a
//! multiple of 512, with data in the wrong direction or with unknown flags
//! get `IOERR` or `UNSUPP`; chains without any writable byte cannot carry a
//! status and are returned with length 0. Everything is counted.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_blk::{
    virtio_blk_config, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::write_zeroes::{PunchHole, WriteZeroesAt};

use super::chain::{split_at, Chain, ChainLimits, Segment};
use super::queue::Popped;
use super::{read_config_bytes, DeviceCounters, DeviceCtx, VirtioDevice, COMMON_FEATURES};

/// The sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// The size of the request header.
pub const HEADER_SIZE: u64 = 16;
/// The size of one discard / write-zeroes segment.
pub const DISCARD_SEGMENT_SIZE: u64 = 16;
/// The queue size.
pub const QUEUE_SIZE: u16 = 256;
/// `seg_max`: data buffers per request (the header and status take two
/// more descriptors).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Segments per discard / write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Sectors per discard / write-zeroes segment (just under 4 GiB).
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX / SECTOR_SIZE as u32;
/// The most bytes one request may move; larger requests are refused as
/// oversized chains.
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;
/// Bytes copied per step between the file and guest memory.
const CHUNK: usize = 128 << 10;

/// The storage behind a disk.
pub trait DiskBackend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Deallocates a range (reads return zeroes afterwards).
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Zeroes a range, deallocating it if `unmap`.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

/// A disk backed by a host file.
pub struct FileDisk {
    file: File,
    size: u64,
}

impl FileDisk {
    /// Opens `path` (read-only if `read_only`).
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::new(file)
    }

    /// Wraps an open file.
    pub fn new(mut file: File) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        // Seeking to the end works for block devices too.
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileDisk { file, size })
    }
}

impl DiskBackend for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.file.punch_hole(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        if unmap && self.file.punch_hole(offset, len).is_ok() {
            return Ok(());
        }
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.file.write_all_zeroes_at(offset, len)
    }
}

/// A disk in memory, for tests and fuzzing.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    /// The contents.
    pub data: Vec<u8>,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl MemDisk {
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.data.len() as u64);
        match end {
            Some(end) => Ok(offset as usize..end as usize),
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

impl DiskBackend for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len() as u64)?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.range(offset, len)?;
        self.data[r].fill(0);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.discard(offset, len)
    }
}

/// The kind of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors.
    In,
    /// Write sectors.
    Out,
    /// Flush the write cache.
    Flush,
    /// Read the device ID string.
    GetId,
    /// Discard ranges.
    Discard,
    /// Zero ranges.
    WriteZeroes,
}

/// A parsed request, ready to execute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestKind,
    /// The first sector (In/Out).
    pub sector: u64,
    /// The data buffers: device-writable for In and GetId, device-readable
    /// for Out, Discard and WriteZeroes.
    pub data: Vec<Segment>,
    /// Their total length.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a request cannot be executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The chain has no device-writable byte, so there is nowhere to put a
    /// status: it goes back with length 0.
    NoStatusByte,
    /// The request is invalid; `status` gets `code`.
    Invalid {
        /// The status byte's address.
        status: GuestAddress,
        /// `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`.
        code: u8,
        /// Why, for the log.
        reason: String,
    },
}

fn invalid(status: GuestAddress, code: u32, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        status,
        code: code as u8,
        reason: reason.into(),
    }
}

/// Copies the start of a buffer list into `out`; false if the list is
/// shorter or memory cannot be read.
fn gather(mem: &GuestMemoryMmap, segs: &[Segment], out: &mut [u8]) -> bool {
    let mut done = 0;
    for s in segs {
        if done == out.len() {
            break;
        }
        let n = (s.len as usize).min(out.len() - done);
        if mem.read_slice(&mut out[done..done + n], s.addr).is_err() {
            return false;
        }
        done += n;
    }
    done == out.len()
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Parses the request carried by a validated chain, for a disk of
/// `capacity` sectors.
pub fn parse_request(
    chain: &Chain,
    mem: &GuestMemoryMmap,
    capacity: u64,
) -> Result<Request, RequestError> {
    let writable_len = chain.writable_len();
    if writable_len == 0 {
        return Err(RequestError::NoStatusByte);
    }
    let (data_in, status_seg) = split_at(&chain.writable, writable_len - 1);
    // The chain validator guarantees non-empty, in-memory buffers.
    let status = status_seg[0].addr;

    let mut header = [0u8; HEADER_SIZE as usize];
    if chain.readable_len() < HEADER_SIZE || !gather(mem, &chain.readable, &mut header) {
        return Err(invalid(
            status,
            VIRTIO_BLK_S_IOERR,
            "request header shorter than 16 bytes",
        ));
    }
    let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let (_, data_out) = split_at(&chain.readable, HEADER_SIZE);
    let out_len = total(&data_out);
    let in_len = total(&data_in);

    let (kind, data, data_len) = match kind {
        VIRTIO_BLK_T_IN => {
            if out_len != 0 {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "read request with device-readable data",
                ));
            }
            (RequestKind::In, data_in, in_len)
        }
        VIRTIO_BLK_T_OUT => {
            if in_len != 0 {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "write request with device-writable data",
                ));
            }
            (RequestKind::Out, data_out, out_len)
        }
        VIRTIO_BLK_T_FLUSH => {
            if in_len != 0 || out_len != 0 {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "flush request with data",
                ));
            }
            (RequestKind::Flush, Vec::new(), 0)
        }
        VIRTIO_BLK_T_GET_ID => {
            if out_len != 0 || in_len == 0 {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "get-id request without an ID buffer",
                ));
            }
            (RequestKind::GetId, data_in, in_len)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let k = if kind == VIRTIO_BLK_T_DISCARD {
                RequestKind::Discard
            } else {
                RequestKind::WriteZeroes
            };
            if in_len != 0 || out_len == 0 || out_len % DISCARD_SEGMENT_SIZE != 0 {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "malformed discard/write-zeroes segments",
                ));
            }
            if out_len / DISCARD_SEGMENT_SIZE > u64::from(MAX_DISCARD_SEG) {
                return Err(invalid(
                    status,
                    VIRTIO_BLK_S_IOERR,
                    "too many discard/write-zeroes segments",
                ));
            }
            (k, data_out, out_len)
        }
        other => {
            return Err(invalid(
                status,
                VIRTIO_BLK_S_UNSUPP,
                format!("unsupported request type {other}"),
            ));
        }
    };

    if matches!(kind, RequestKind::In | RequestKind::Out) {
        if data_len % SECTOR_SIZE != 0 {
            return Err(invalid(
                status,
                VIRTIO_BLK_S_IOERR,
                format!("data length {data_len} is not whole sectors"),
            ));
        }
        let end = sector.checked_add(data_len / SECTOR_SIZE);
        if end.is_none_or(|e| e > capacity) {
            return Err(invalid(
                status,
                VIRTIO_BLK_S_IOERR,
                format!(
                    "sectors {sector}+{} beyond capacity {capacity}",
                    data_len / SECTOR_SIZE
                ),
            ));
        }
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

/// The result of executing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status byte.
    pub status: u8,
    /// Bytes written into device-writable buffers before the status byte.
    pub written: u64,
}

/// A block device.
pub struct Block<D: DiskBackend> {
    name: String,
    disk: D,
    read_only: bool,
    capacity: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: Vec<u8>,
    features: u64,
    acked: u64,
    counters: Arc<DeviceCounters>,
    queue_sizes: [u16; 1],
}

impl<D: DiskBackend> Block<D> {
    /// A device named `name` on `disk`, reporting `serial` as its ID.
    pub fn new(name: String, disk: D, read_only: bool, serial: &str) -> Self {
        let capacity = disk.size() / SECTOR_SIZE;
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(id.len());
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        let mut features = COMMON_FEATURES | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_FLUSH;
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        Block {
            name,
            disk,
            read_only,
            capacity,
            id,
            config: Self::config_image(capacity),
            features,
            acked: 0,
            counters: Arc::default(),
            queue_sizes: [QUEUE_SIZE],
        }
    }

    fn config_image(capacity: u64) -> Vec<u8> {
        let mut c = vec![0u8; size_of::<virtio_blk_config>()];
        let mut put = |off: usize, bytes: &[u8]| c[off..off + bytes.len()].copy_from_slice(bytes);
        put(
            offset_of!(virtio_blk_config, capacity),
            &capacity.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, seg_max),
            &SEG_MAX.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, num_queues),
            &1u16.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_discard_seg),
            &MAX_DISCARD_SEG.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, discard_sector_alignment),
            &1u32.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_sectors),
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, max_write_zeroes_seg),
            &MAX_DISCARD_SEG.to_le_bytes(),
        );
        put(offset_of!(virtio_blk_config, write_zeroes_may_unmap), &[1]);
        c
    }

    /// The disk capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The backend.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The limits chains on the request queue must respect.
    pub fn chain_limits() -> ChainLimits {
        ChainLimits {
            max_descriptors: QUEUE_SIZE as usize,
            max_bytes: MAX_REQUEST_BYTES + HEADER_SIZE + 1,
        }
    }

    fn copy_in(&mut self, mem: &GuestMemoryMmap, req: &Request) -> io::Result<u64> {
        let mut offset = req.sector * SECTOR_SIZE;
        let mut buf = vec![0u8; CHUNK.min(req.data_len as usize)];
        let mut written = 0;
        for seg in &req.data {
            let mut done = 0u64;
            while done < u64::from(seg.len) {
                let n = (u64::from(seg.len) - done).min(CHUNK as u64) as usize;
                self.disk.read_at(&mut buf[..n], offset)?;
                mem.write_slice(&buf[..n], seg.addr.unchecked_add(done))
                    .map_err(|e| io::Error::other(e.to_string()))?;
                done += n as u64;
                offset += n as u64;
                written += n as u64;
            }
        }
        Ok(written)
    }

    fn copy_out(&mut self, mem: &GuestMemoryMmap, req: &Request) -> io::Result<()> {
        let mut offset = req.sector * SECTOR_SIZE;
        let mut buf = vec![0u8; CHUNK.min(req.data_len as usize)];
        for seg in &req.data {
            let mut done = 0u64;
            while done < u64::from(seg.len) {
                let n = (u64::from(seg.len) - done).min(CHUNK as u64) as usize;
                mem.read_slice(&mut buf[..n], seg.addr.unchecked_add(done))
                    .map_err(|e| io::Error::other(e.to_string()))?;
                self.disk.write_at(&buf[..n], offset)?;
                done += n as u64;
                offset += n as u64;
            }
        }
        Ok(())
    }

    /// Executes discard / write-zeroes segments; `Err(code)` for a status.
    fn ranges(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Result<(), u32> {
        let mut raw = vec![0u8; req.data_len as usize];
        if !gather(mem, &req.data, &mut raw) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        for seg in raw.chunks_exact(DISCARD_SEGMENT_SIZE as usize) {
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
            let count = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
            let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
            // §5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
            if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
                || (req.kind == RequestKind::Discard && unmap)
            {
                return Err(VIRTIO_BLK_S_UNSUPP);
            }
            if count > MAX_DISCARD_SECTORS
                || sector
                    .checked_add(u64::from(count))
                    .is_none_or(|e| e > self.capacity)
            {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let (off, len) = (sector * SECTOR_SIZE, u64::from(count) * SECTOR_SIZE);
            let r = match req.kind {
                RequestKind::Discard => self.disk.discard(off, len),
                _ => self.disk.write_zeroes(off, len, unmap),
            };
            if let Err(e) = r {
                if DeviceCounters::bump(&self.counters.io_errors) {
                    log::warn!(
                        "{}: discard/write-zeroes at sector {sector}: {e}",
                        self.name
                    );
                }
                return Err(VIRTIO_BLK_S_IOERR);
            }
        }
        Ok(())
    }

    /// Executes a parsed request.
    pub fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Outcome {
        let ok = |written| Outcome {
            status: VIRTIO_BLK_S_OK as u8,
            written,
        };
        let fail = |code: u32| Outcome {
            status: code as u8,
            written: 0,
        };
        let writes = matches!(
            req.kind,
            RequestKind::Out | RequestKind::Discard | RequestKind::WriteZeroes
        );
        if writes && self.read_only {
            if DeviceCounters::bump(&self.counters.bad_requests) {
                log::warn!("{}: {:?} refused on a read-only disk", self.name, req.kind);
            }
            return fail(VIRTIO_BLK_S_IOERR);
        }
        let io_result = match req.kind {
            RequestKind::In => self.copy_in(mem, req).map(ok),
            RequestKind::Out => self.copy_out(mem, req).map(|()| ok(0)),
            RequestKind::Flush => self.disk.flush().map(|()| ok(0)),
            RequestKind::GetId => {
                let n = (req.data_len as usize).min(self.id.len());
                let mut done = 0;
                for seg in &req.data {
                    if done == n {
                        break;
                    }
                    let k = (seg.len as usize).min(n - done);
                    if mem.write_slice(&self.id[done..done + k], seg.addr).is_err() {
                        break;
                    }
                    done += k;
                }
                Ok(ok(done as u64))
            }
            RequestKind::Discard | RequestKind::WriteZeroes => {
                return match self.ranges(mem, req) {
                    Ok(()) => ok(0),
                    Err(code) => fail(code),
                };
            }
        };
        io_result.unwrap_or_else(|e| {
            if DeviceCounters::bump(&self.counters.io_errors) {
                log::warn!(
                    "{}: {:?} at sector {}: {e}",
                    self.name,
                    req.kind,
                    req.sector
                );
            }
            fail(VIRTIO_BLK_S_IOERR)
        })
    }

    /// Handles one popped chain; returns the used length.
    pub fn handle_chain(&mut self, mem: &GuestMemoryMmap, popped: Popped) -> u32 {
        let Ok(chain) = popped else {
            return 0;
        };
        let (status_addr, outcome) = match parse_request(&chain, mem, self.capacity) {
            Ok(req) => (req.status, self.execute(mem, &req)),
            Err(RequestError::NoStatusByte) => {
                if DeviceCounters::bump(&self.counters.bad_requests) {
                    log::warn!(
                        "{}: request without a status byte (head {})",
                        self.name,
                        chain.head
                    );
                }
                return 0;
            }
            Err(RequestError::Invalid {
                status,
                code,
                reason,
            }) => {
                if DeviceCounters::bump(&self.counters.bad_requests) {
                    log::warn!("{}: bad request (head {}): {reason}", self.name, chain.head);
                }
                (
                    status,
                    Outcome {
                        status: code,
                        written: 0,
                    },
                )
            }
        };
        self.counters
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if mem.write_obj(outcome.status, status_addr).is_err() {
            return 0;
        }
        u32::try_from(outcome.written + 1).unwrap_or(u32::MAX)
    }
}

impl<D: DiskBackend> VirtioDevice for Block<D> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, ctx: &mut DeviceCtx) {
        let Some(q) = ctx.queues.get_mut(index) else {
            return;
        };
        let mem = ctx.mem;
        let name = self.name.clone();
        let counters = Arc::clone(&self.counters);
        q.process(mem, &name, &counters, |popped| {
            self.handle_chain(mem, popped)
        });
        ctx.notify_queue(index);
    }

    fn reset(&mut self) {
        self.acked = 0;
    }

    fn counters(&self) -> &DeviceCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::chain::tests::{mem, queue_with, N, R, W};
    use crate::virtio::queue::VirtQueue;
    use crate::virtio::Interrupt;
    use std::sync::atomic::Ordering::Relaxed;
    use virtio_queue::QueueT;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const HDR: u64 = 0x8000;
    const DATA: u64 = 0x9000;
    const STATUS: u64 = 0xc000;

    fn disk(sectors: usize) -> MemDisk {
        MemDisk {
            data: (0..sectors * 512).map(|i| (i / 512) as u8).collect(),
            flushes: 0,
        }
    }

    fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        m.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Runs the chain `descs` through a fresh device; returns the device,
    /// the used length and the status byte.
    fn run(
        m: &GuestMemoryMmap,
        blk: &mut Block<MemDisk>,
        descs: &[(u64, u32, u16, u16)],
    ) -> (u32, u8) {
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut vq = VirtQueue::new(16, Block::<MemDisk>::chain_limits());
        vq.queue = queue_with(m, descs, 0);
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut queues = [vq];
        let mut ctx = DeviceCtx {
            mem: m,
            queues: &mut queues,
            interrupt: &irq,
        };
        blk.process_queue(0, &mut ctx);
        let used_len: u32 = m
            .read_obj(GuestAddress(queues[0].queue.used_ring() + 8))
            .unwrap();
        (used_len, m.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn dev(sectors: usize, ro: bool) -> Block<MemDisk> {
        Block::new(
            "blk-test".into(),
            disk(sectors),
            ro,
            "serial-number-that-is-long",
        )
    }

    #[test]
    fn read_sectors() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_IN, 2);
        let (len, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 1024, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!((len, st), (1025, 0));
        let mut buf = [0u8; 1024];
        m.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 2) && buf[512..].iter().all(|&b| b == 3));
        assert_eq!(b.counters().requests.load(Relaxed), 1);
    }

    #[test]
    fn write_then_read_back_with_odd_framing() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_OUT, 1);
        m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        // Header and data in one descriptor would need them adjacent: put
        // the header right before the data and use a single 528-byte buffer.
        m.write_slice(&[0xab; 512], GuestAddress(HDR + 16)).unwrap();
        let (len, st) = run(&m, &mut b, &[(HDR, 528, R | N, 1), (STATUS, 1, W, 0)]);
        assert_eq!((len, st), (1, 0));
        assert!(b.disk().data[512..1024].iter().all(|&x| x == 0xab));
        assert_eq!(b.disk().data[1024], 2);
    }

    #[test]
    fn read_only_refuses_writes() {
        let m = mem();
        let mut b = dev(8, true);
        assert_ne!(b.device_features() & 1 << VIRTIO_BLK_F_RO, 0);
        assert_eq!(b.device_features() & 1 << VIRTIO_BLK_F_DISCARD, 0);
        header(&m, VIRTIO_BLK_T_OUT, 0);
        let (len, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 512, R | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!((len, st), (1, VIRTIO_BLK_S_IOERR as u8));
        assert_eq!(b.disk().data[0], 0);
        // Reads still work.
        header(&m, VIRTIO_BLK_T_IN, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 512, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, 0);
    }

    #[test]
    fn out_of_range_and_partial_sectors() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_IN, 7);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 1024, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        header(&m, VIRTIO_BLK_T_IN, u64::MAX);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 512, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        header(&m, VIRTIO_BLK_T_IN, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 100, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(b.counters().bad_requests.load(Relaxed), 3);
    }

    #[test]
    fn wrong_directions() {
        let m = mem();
        let mut b = dev(8, false);
        // A read whose data buffer is device-readable.
        header(&m, VIRTIO_BLK_T_IN, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 512, R | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        // A write whose data buffer is device-writable.
        header(&m, VIRTIO_BLK_T_OUT, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[
                (HDR, 16, R | N, 1),
                (DATA, 512, W | N, 2),
                (STATUS, 1, W, 0),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        // A header in a device-writable buffer: no readable header at all.
        let (_, st) = run(&m, &mut b, &[(HDR, 16, W | N, 1), (STATUS, 1, W, 0)]);
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        // No writable byte: returned with length 0, status untouched.
        let (len, st) = run(&m, &mut b, &[(HDR, 16, R, 0)]);
        assert_eq!((len, st), (0, 0xff));
    }

    #[test]
    fn bad_chain_is_returned_empty() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_IN, 0);
        let (len, st) = run(&m, &mut b, &[(HDR, 16, R | N, 1), (DATA, 512, W | N, 0)]);
        assert_eq!((len, st), (0, 0xff));
        assert_eq!(b.counters().bad_chains.load(Relaxed), 1);
    }

    #[test]
    fn flush_get_id_unsupported() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_FLUSH, 0);
        let (len, st) = run(&m, &mut b, &[(HDR, 16, R | N, 1), (STATUS, 1, W, 0)]);
        assert_eq!((len, st), (1, 0));
        assert_eq!(b.disk().flushes, 1);

        header(&m, VIRTIO_BLK_T_GET_ID, 0);
        let (len, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 20, W | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!((len, st), (21, 0));
        let mut id = [0u8; 20];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"serial-number-that-i");

        header(&m, 99, 0);
        let (_, st) = run(&m, &mut b, &[(HDR, 16, R | N, 1), (STATUS, 1, W, 0)]);
        assert_eq!(st, VIRTIO_BLK_S_UNSUPP as u8);
    }

    fn discard_seg(m: &GuestMemoryMmap, at: u64, sector: u64, count: u32, flags: u32) {
        let mut s = [0u8; 16];
        s[0..8].copy_from_slice(&sector.to_le_bytes());
        s[8..12].copy_from_slice(&count.to_le_bytes());
        s[12..16].copy_from_slice(&flags.to_le_bytes());
        m.write_slice(&s, GuestAddress(at)).unwrap();
    }

    #[test]
    fn discard_and_write_zeroes() {
        let m = mem();
        let mut b = dev(8, false);
        header(&m, VIRTIO_BLK_T_DISCARD, 0);
        discard_seg(&m, DATA, 1, 2, 0);
        discard_seg(&m, DATA + 16, 6, 1, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 32, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, 0);
        let d = &b.disk().data;
        assert!(
            d[512..1536].iter().all(|&x| x == 0)
                && d[1536] == 3
                && d[3072..3584].iter().all(|&x| x == 0)
        );

        // Unmap on a discard is unsupported; unknown flags too.
        discard_seg(&m, DATA, 1, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 16, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, VIRTIO_BLK_S_UNSUPP as u8);
        header(&m, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        discard_seg(&m, DATA, 4, 1, 0x2);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 16, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, VIRTIO_BLK_S_UNSUPP as u8);
        discard_seg(&m, DATA, 4, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 16, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, 0);
        assert!(b.disk().data[2048..2560].iter().all(|&x| x == 0));
        // Out of range, and a segment list that is not whole segments.
        discard_seg(&m, DATA, 7, 2, 0);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 16, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        let (_, st) = run(
            &m,
            &mut b,
            &[(HDR, 16, R | N, 1), (DATA, 15, R | N, 2), (STATUS, 1, W, 0)],
        );
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
    }

    #[test]
    fn config_space() {
        let b = dev(8, false);
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        let mut seg = [0u8; 4];
        b.read_config(12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
    }

    #[test]
    fn file_disk_punches_holes() {
        let path = std::env::temp_dir().join(format!("pvrs-vmm-blk-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let mut d = FileDisk::open(&path, false).unwrap();
        assert_eq!(d.size(), 8192);
        d.discard(0, 4096).unwrap();
        d.write_zeroes(4096, 512, false).unwrap();
        d.flush().unwrap();
        let mut buf = [1u8; 8192];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf[..4608].iter().all(|&b| b == 0) && buf[4608] == 7);
        std::fs::remove_file(&path).unwrap();
    }
}
