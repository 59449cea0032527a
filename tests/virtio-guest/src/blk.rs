//! Checks of a virtio-blk device (virtio 1.2 §5.2) through virtio-drivers'
//! `VirtIOBlk`.
//!
//! The host prepares the image (tests/integration/test_virtio_guest.py):
//! 512-byte sector `i` starts with [`SECTOR_MAGIC`] and `i` (le64) and the
//! rest is `i as u8`. The guest then
//!
//! * reads and checks single sectors, a 64 KiB request, and five reads in
//!   flight at once (several chains per notification, completed in any
//!   order: §2.7.13, the device may use buffers out of order);
//! * writes [`WRITE_SECTORS`] sectors from [`WRITE_AT`] with its own
//!   pattern, reads them back, compares and flushes (§5.2.6 `OUT`,
//!   `FLUSH`); the host checks the file afterwards;
//! * reads past the capacity, which must fail (`IOERR`, §5.2.6.1);
//! * on a read-only disk (`VIRTIO_BLK_F_RO`, §5.2.3), writes, which must
//!   fail and change nothing;
//! * reads the device ID (`GET_ID`, §5.2.6), printed for the host to check.

use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::Error;

use crate::hal::IdentityHal;
use crate::say;

/// The first 8 bytes of every sector of the host's image.
pub const SECTOR_MAGIC: &[u8; 8] = b"PVRSSECT";
/// The first 8 bytes of every sector the guest writes.
pub const WRITE_MAGIC: &[u8; 8] = b"GUESTWRT";
/// Where the guest writes, in sectors.
pub const WRITE_AT: usize = 256;
/// How many sectors it writes.
pub const WRITE_SECTORS: usize = 8;

type Blk = VirtIOBlk<IdentityHal, MmioTransport<'static>>;

fn host_sector_ok(i: usize, s: &[u8]) -> bool {
    s[..8] == *SECTOR_MAGIC
        && s[8..16] == (i as u64).to_le_bytes()
        && s[16..].iter().all(|&b| b == i as u8)
}

fn guest_sector(i: usize, s: &mut [u8]) {
    s[..8].copy_from_slice(WRITE_MAGIC);
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16..].fill(0xa5);
}

/// Checks that `buf`, read from sector `first`, is the host's pattern.
fn check_host_sectors(first: usize, buf: &[u8], what: &str) -> bool {
    for (k, s) in buf.chunks(SECTOR_SIZE).enumerate() {
        if !host_sector_ok(first + k, s) {
            say!(
                "blk: FAIL {what}: sector {} has {:02x?}",
                first + k,
                &s[..16]
            );
            return false;
        }
    }
    true
}

static mut BIG: [u8; 64 * 1024] = [0; 64 * 1024];

/// Runs the checks on one device; true if all passed.
pub fn test(index: usize, mut blk: Blk) -> bool {
    let capacity = blk.capacity() as usize;
    let read_only = blk.readonly();
    let mut id = [0u8; 20];
    let id_len = match blk.device_id(&mut id) {
        Ok(n) => n,
        Err(e) => {
            say!("blk{index}: FAIL GET_ID: {e:?}");
            return false;
        }
    };
    let id = core::str::from_utf8(&id[..id_len]).unwrap_or("?");
    say!("blk{index}: capacity={capacity} sectors read_only={read_only} id={id}");
    if capacity < WRITE_AT + WRITE_SECTORS {
        say!("blk{index}: FAIL the image is too small for the checks");
        return false;
    }
    let mut ok = true;

    // Single sectors at the start, in the middle and at the end.
    let mut one = [0u8; SECTOR_SIZE];
    for i in [0, 1, capacity / 2, capacity - 1] {
        ok &= match blk.read_blocks(i, &mut one) {
            Ok(()) => check_host_sectors(i, &one, "single-sector read"),
            Err(e) => {
                say!("blk{index}: FAIL read of sector {i}: {e:?}");
                false
            }
        };
    }

    // One 64 KiB request.
    // A static, not a local: the boot stack is only 64 KiB.
    let big_ptr = &raw mut BIG;
    // SAFETY: the only reference to BIG; the guest is single-threaded.
    let big = unsafe { &mut *big_ptr };
    let first = (capacity / 3).min(capacity - big.len() / SECTOR_SIZE);
    ok &= match blk.read_blocks(first, big) {
        Ok(()) => check_host_sectors(first, big, "64 KiB read"),
        Err(e) => {
            say!("blk{index}: FAIL 64 KiB read at {first}: {e:?}");
            false
        }
    };

    ok &= reads_in_flight(index, &mut blk, capacity);

    // Past the end: IOERR, nothing read.
    match blk.read_blocks(capacity, &mut one) {
        Err(Error::IoError) => say!("blk{index}: read past the end refused (IOERR), as it must be"),
        other => {
            say!("blk{index}: FAIL read past the end gave {other:?}");
            ok = false;
        }
    }

    // Write, read back, flush.
    let mut data = [0u8; WRITE_SECTORS * SECTOR_SIZE];
    for (k, s) in data.chunks_mut(SECTOR_SIZE).enumerate() {
        guest_sector(WRITE_AT + k, s);
    }
    let write = blk.write_blocks(WRITE_AT, &data);
    let mut back = [0u8; WRITE_SECTORS * SECTOR_SIZE];
    let read_back = blk.read_blocks(WRITE_AT, &mut back);
    if read_only {
        ok &= match (write, read_back) {
            (Err(Error::IoError), Ok(()))
                if check_host_sectors(WRITE_AT, &back, "read-only disk") =>
            {
                say!("blk{index}: write refused (IOERR) on the read-only disk, data unchanged");
                true
            }
            (w, r) => {
                say!("blk{index}: FAIL read-only disk: write {w:?}, read back {r:?}");
                false
            }
        };
    } else {
        ok &= match (write, read_back, blk.flush()) {
            (Ok(()), Ok(()), Ok(())) if back == data => {
                say!("blk{index}: wrote, read back and flushed {WRITE_SECTORS} sectors at {WRITE_AT}");
                true
            }
            (w, r, f) => {
                say!(
                    "blk{index}: FAIL write {w:?}, read back {r:?} (equal: {}), flush {f:?}",
                    back == data
                );
                false
            }
        };
    }
    say!("blk{index}: {}", if ok { "ok" } else { "FAILED" });
    ok
}

/// Five requests of three descriptors each fit the driver's 16-entry queue
/// whether or not indirect descriptors are negotiated.
const IN_FLIGHT: usize = 5;

/// Single-sector reads submitted before any completes, then reaped in
/// whatever order the device used them.
fn reads_in_flight(index: usize, blk: &mut Blk, capacity: usize) -> bool {
    let mut reqs: [BlkReq; IN_FLIGHT] = core::array::from_fn(|_| BlkReq::default());
    let mut resps: [BlkResp; IN_FLIGHT] = core::array::from_fn(|_| BlkResp::default());
    let mut bufs = [[0u8; SECTOR_SIZE]; IN_FLIGHT];
    let mut tokens = [0u16; IN_FLIGHT];
    let sector = |k: usize| (k * 37 + 11) % capacity;
    for k in 0..IN_FLIGHT {
        // SAFETY: reqs[k], bufs[k] and resps[k] are not touched again until
        // their request is completed below.
        match unsafe { blk.read_blocks_nb(sector(k), &mut reqs[k], &mut bufs[k], &mut resps[k]) } {
            Ok(t) => tokens[k] = t,
            Err(e) => {
                say!("blk{index}: FAIL submitting read {k}: {e:?}");
                return false;
            }
        }
    }
    let mut done = [false; IN_FLIGHT];
    let mut ok = true;
    for _ in 0..IN_FLIGHT {
        let token = loop {
            if let Some(t) = blk.peek_used() {
                break t;
            }
            core::hint::spin_loop();
        };
        let Some(k) = (0..IN_FLIGHT).find(|&k| !done[k] && tokens[k] == token) else {
            say!("blk{index}: FAIL the device used unknown token {token}");
            return false;
        };
        done[k] = true;
        // SAFETY: the same buffers as at submission, now completed.
        let r = unsafe { blk.complete_read_blocks(token, &reqs[k], &mut bufs[k], &mut resps[k]) };
        ok &= match r {
            Ok(()) => check_host_sectors(sector(k), &bufs[k], "read in flight"),
            Err(e) => {
                say!("blk{index}: FAIL read {k} in flight: {e:?}");
                false
            }
        };
    }
    if ok {
        say!("blk{index}: {IN_FLIGHT} reads in flight completed and checked");
    }
    ok
}
