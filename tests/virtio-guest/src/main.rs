//! pvrs-virtio-guest: a bare-metal guest that checks pvrs-vmm's virtio
//! devices with an independent driver implementation, the rcore-os
//! `virtio-drivers` crate, instead of Linux's drivers or our own.
//!
//! pvrs-vmm boots it as a PVH ELF (`boot`). It finds the devices the way
//! Linux does with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`: from the
//! `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` entries that pvrs-vmm
//! appends to the command line, which PVH passes in
//! `hvm_start_info.cmdline_paddr`. Each device goes through virtio-mmio
//! version 2 (virtio 1.2 §4.2.2) initialisation by the crate (§3.1.1),
//! then the checks of `blk` (virtio-blk, §5.2) or `net` (virtio-net,
//! §5.1). Interrupts stay off: the drivers poll the used rings.
//!
//! Output goes to the serial console, each line prefixed `VIRTIO-GUEST: `;
//! the last is `RESULT pass ...` or `RESULT fail ...`. The guest then
//! powers off (pvrs-vmm exits 0) on success or triple-faults (pvrs-vmm
//! exits 1) on failure. tests/integration/test_virtio_guest.py runs it.

#![no_std]
#![no_main]

mod blk;
mod boot;
mod console;
mod hal;
mod net;

use core::ptr::NonNull;

use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// `hvm_start_info.magic` (Xen `public/arch-x86/hvm/start_info.h`).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Byte offset of `cmdline_paddr` in `hvm_start_info`.
const START_INFO_CMDLINE: usize = 24;
/// The longest command line read.
const CMDLINE_MAX: usize = 4096;

/// One `virtio_mmio.device=` entry.
struct MmioDevice {
    base: u64,
    size: usize,
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `<size>@<base>:<irq>[:<id>]`, size with an optional K/M/G suffix, as
/// Linux's `vm_cmdline_set` (drivers/virtio/virtio_mmio.c) reads it.
fn parse_device(spec: &str) -> Option<MmioDevice> {
    let (size, rest) = spec.split_once('@')?;
    let (base, _irq_and_id) = rest.split_once(':')?;
    let (digits, shift) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    Some(MmioDevice {
        base: parse_number(base)?,
        size: usize::try_from(parse_number(digits)? << shift).ok()?,
    })
}

/// The command line from PVH's `hvm_start_info` at `start_info`.
fn command_line(start_info: u32) -> Option<&'static str> {
    let info = start_info as usize as *const u8;
    // SAFETY: pvrs-vmm put a `hvm_start_info` at `start_info` (identity
    // mapped); the fields are read unaligned-safe.
    let (magic, paddr) = unsafe {
        (
            info.cast::<u32>().read_unaligned(),
            info.add(START_INFO_CMDLINE).cast::<u64>().read_unaligned(),
        )
    };
    if magic != XEN_HVM_START_MAGIC {
        say!("FAIL: no hvm_start_info at {start_info:#x} (magic {magic:#x})");
        return None;
    }
    if paddr == 0 {
        return Some("");
    }
    let ptr = paddr as usize as *const u8;
    // SAFETY: the VMM wrote a NUL-terminated command line at `paddr`, in
    // RAM; the scan stops at CMDLINE_MAX bytes.
    let len = (0..CMDLINE_MAX)
        .find(|&i| unsafe { ptr.add(i).read() } == 0)
        .unwrap_or(CMDLINE_MAX);
    // SAFETY: `len` bytes from `ptr` were just read; the VMM does not
    // change them while the guest runs.
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(ptr, len) }).ok()
}

#[no_mangle]
extern "C" fn guest_main(start_info: u32) -> ! {
    console::init_logger();
    say!("started in 64-bit mode from the PVH entry; start_info at {start_info:#x}");
    let Some(cmdline) = command_line(start_info) else {
        finish(false, 0, 0)
    };
    say!("cmdline: {cmdline}");

    let (mut ok, mut n_blk, mut n_net) = (true, 0, 0);
    for spec in cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("virtio_mmio.device="))
    {
        let Some(dev) = parse_device(spec) else {
            say!("FAIL: cannot parse virtio_mmio.device={spec}");
            ok = false;
            continue;
        };
        let Some(header) = NonNull::new(dev.base as usize as *mut VirtIOHeader) else {
            ok = false;
            continue;
        };
        // SAFETY: the VMM announced a virtio-mmio register window of
        // `size` bytes at `base`; it is identity-mapped and used by this
        // transport only.
        let transport = match unsafe { MmioTransport::<'static>::new(header, dev.size) } {
            Ok(t) => t,
            Err(e) => {
                say!("FAIL: virtio-mmio at {:#x}: {e:?}", dev.base);
                ok = false;
                continue;
            }
        };
        say!(
            "virtio-mmio at {:#x}: version {:?}, device type {:?}, vendor {:#x}",
            dev.base,
            transport.version(),
            transport.device_type(),
            transport.vendor_id()
        );
        match transport.device_type() {
            DeviceType::Block => {
                ok &= match VirtIOBlk::new(transport) {
                    Ok(b) => blk::test(n_blk, b),
                    Err(e) => {
                        say!("blk{n_blk}: FAIL initialisation: {e:?}");
                        false
                    }
                };
                n_blk += 1;
            }
            DeviceType::Network => {
                ok &= match VirtIONetRaw::new(transport) {
                    Ok(n) => net::test(n_net, n),
                    Err(e) => {
                        say!("net{n_net}: FAIL initialisation: {e:?}");
                        false
                    }
                };
                n_net += 1;
            }
            other => say!("{other:?} at {:#x}: not checked", dev.base),
        }
    }
    if n_blk + n_net == 0 {
        say!("FAIL: no virtio-blk or virtio-net device announced");
        ok = false;
    }
    finish(ok, n_blk, n_net)
}

fn finish(ok: bool, n_blk: usize, n_net: usize) -> ! {
    say!(
        "RESULT {} blk={n_blk} net={n_net}",
        if ok { "pass" } else { "fail" }
    );
    if ok {
        console::power_off()
    } else {
        console::crash()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("PANIC: {info}");
    say!("RESULT fail (panic)");
    console::crash()
}
