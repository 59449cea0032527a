//! 4 KiB random reads at a fixed queue depth, for comparing virtio-blk
//! devices: a small stand-in for `fio --rw=randread --direct=1
//! --ioengine=libaio`, static so that it runs in the guest initramfs
//! (Debian's fio needs 64 shared libraries, 84 MB with Ceph and ICU).
//!
//! ```text
//! pvrs-blkbench fill FILE MIB
//!     writes a MIB-MiB image whose 4 KiB block i starts with "PVRSBLK\0"
//!     and i (le64), the rest zero
//! pvrs-blkbench read DEV [--qd N] [--seconds S]
//!     keeps N O_DIRECT reads of random 4 KiB blocks in flight through
//!     Linux AIO (io_submit/io_getevents) for S seconds, checks the
//!     header of every block read (an image made by `fill`), and prints
//!     `blkbench qd=N ios=... iops=... lat_us_mean=... bad=...`
//! ```
//!
//! Exits 1 if any read failed or returned the wrong block.

use std::alloc::{alloc_zeroed, Layout};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"PVRSBLK\0";

/// `struct iocb` of `<linux/aio_abi.h>` (x86_64, little endian).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of `<linux/aio_abi.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PREAD: u16 = 0;

fn die(msg: String) -> ! {
    eprintln!("pvrs-blkbench: {msg}");
    std::process::exit(1);
}

fn fill(path: &str, mib: u64) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| die(format!("{path}: {e}")));
    let mut block = vec![0u8; BLOCK];
    block[..8].copy_from_slice(MAGIC);
    let mut out = Vec::with_capacity(1 << 20);
    for i in 0..mib * (1 << 20) / BLOCK as u64 {
        block[8..16].copy_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&block);
        if out.len() == out.capacity() {
            f.write_all(&out)
                .unwrap_or_else(|e| die(format!("{path}: {e}")));
            out.clear();
        }
    }
    f.write_all(&out)
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| die(format!("{path}: {e}")));
    println!("blkbench filled {path} with {mib} MiB");
}

/// xorshift64*: enough randomness for picking blocks, and reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn read(dev: &str, qd: usize, seconds: f64) {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .unwrap_or_else(|e| die(format!("{dev}: {e}")));
    let fd = file.as_raw_fd();
    // SAFETY: lseek on an open fd; SEEK_END gives the size of a block
    // device or a file.
    let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
    if size < BLOCK as i64 {
        die(format!("{dev}: too small ({size} bytes)"));
    }
    let blocks = size as u64 / BLOCK as u64;

    // O_DIRECT needs buffers aligned to the logical block size; one page
    // each covers every device.
    let layout = Layout::from_size_align(BLOCK * qd, BLOCK).expect("buffer layout");
    // SAFETY: the layout has a non-zero size; the buffer is never freed
    // (the process exits after the run).
    let bufs = unsafe { alloc_zeroed(layout) };
    assert!(!bufs.is_null(), "out of memory");
    let buf = |slot: usize| -> *mut u8 {
        // SAFETY: slot < qd, so the offset stays inside the allocation.
        unsafe { bufs.add(slot * BLOCK) }
    };

    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the new context id to `ctx`.
    if unsafe { libc::syscall(libc::SYS_io_setup, qd as libc::c_long, &mut ctx) } != 0 {
        die(format!("io_setup: {}", std::io::Error::last_os_error()));
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut iocbs = vec![Iocb::default(); qd];
    let mut expected = vec![0u64; qd];
    let mut issued_at = vec![Instant::now(); qd];
    let submit = |slot: usize,
                  iocbs: &mut [Iocb],
                  expected: &mut [u64],
                  issued_at: &mut [Instant],
                  rng: &mut Rng| {
        let block = rng.below(blocks);
        expected[slot] = block;
        iocbs[slot] = Iocb {
            aio_data: slot as u64,
            aio_lio_opcode: IOCB_CMD_PREAD,
            aio_fildes: fd as u32,
            aio_buf: buf(slot) as u64,
            aio_nbytes: BLOCK as u64,
            aio_offset: (block * BLOCK as u64) as i64,
            ..Default::default()
        };
        issued_at[slot] = Instant::now();
        let mut one: *mut Iocb = &mut iocbs[slot];
        // SAFETY: `one` points to a live iocb whose buffer (slot `slot`)
        // is not in use by another request until its event is reaped.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1 as libc::c_long, &mut one) };
        if n != 1 {
            die(format!("io_submit: {}", std::io::Error::last_os_error()));
        }
    };

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    for slot in 0..qd {
        submit(slot, &mut iocbs, &mut expected, &mut issued_at, &mut rng);
    }
    let mut events = vec![IoEvent::default(); qd];
    let (mut ios, mut bad, mut lat_ns, mut in_flight) = (0u64, 0u64, 0u128, qd);
    while in_flight > 0 {
        // SAFETY: `events` has room for `qd` events; no timeout.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                1 as libc::c_long,
                qd as libc::c_long,
                events.as_mut_ptr(),
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            die(format!("io_getevents: {e}"));
        }
        let now = Instant::now();
        for ev in &events[..n as usize] {
            let slot = ev.data as usize;
            in_flight -= 1;
            ios += 1;
            lat_ns += (now - issued_at[slot]).as_nanos();
            // SAFETY: the request of `slot` completed, so its buffer holds
            // the data read and nothing else writes to it now.
            let data = unsafe { std::slice::from_raw_parts(buf(slot), 16) };
            if ev.res != BLOCK as i64
                || &data[..8] != MAGIC
                || data[8..16] != expected[slot].to_le_bytes()
            {
                if bad < 5 {
                    eprintln!(
                        "pvrs-blkbench: block {} read wrong (res {}, header {:02x?})",
                        expected[slot], ev.res, data
                    );
                }
                bad += 1;
            }
            if now < deadline {
                submit(slot, &mut iocbs, &mut expected, &mut issued_at, &mut rng);
                in_flight += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: no request is in flight any more.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    println!(
        "blkbench qd={qd} bs={BLOCK} ios={ios} seconds={secs:.2} iops={:.0} lat_us_mean={:.1} bad={bad}",
        ios as f64 / secs,
        lat_ns as f64 / ios.max(1) as f64 / 1000.0
    );
    if bad > 0 {
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fill") if args.len() == 3 => fill(
            &args[1],
            args[2]
                .parse()
                .unwrap_or_else(|_| die("MIB: a number".into())),
        ),
        Some("read") if args.len() >= 2 => {
            let (mut qd, mut seconds) = (16usize, 5.0f64);
            let mut it = args[2..].iter();
            while let Some(opt) = it.next() {
                let v = it
                    .next()
                    .unwrap_or_else(|| die(format!("{opt} needs a value")));
                match opt.as_str() {
                    "--qd" => qd = v.parse().unwrap_or_else(|_| die("--qd: a number".into())),
                    "--seconds" => {
                        seconds = v
                            .parse()
                            .unwrap_or_else(|_| die("--seconds: a number".into()))
                    }
                    _ => die(format!("unknown option {opt}")),
                }
            }
            read(&args[1], qd.clamp(1, 256), seconds);
        }
        _ => {
            eprintln!("usage: pvrs-blkbench fill FILE MIB | read DEV [--qd N] [--seconds S]");
            std::process::exit(2);
        }
    }
}
