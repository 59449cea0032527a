//! Loading the guest kernel, its initrd and command line, and the boot
//! information the kernel reads (Linux `boot_params` or PVH
//! `hvm_start_info`), with the rust-vmm `linux-loader` crate.
//!
//! A bzImage is loaded at its `code32_start` (1 MiB) and entered through the
//! 64-bit boot protocol (`Documentation/arch/x86/boot.rst`); an ELF vmlinux
//! must carry a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`) and is entered through
//! PVH. The initrd goes at the top of RAM below 3 GiB (and below the
//! kernel's `initrd_addr_max`), page-aligned.

pub mod acpi;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{self, load_cmdline, BzImage, Elf, KernelLoader, KernelLoaderResult};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::cpu::regs::EntryPoint;
use crate::layout::{
    e820_map, low_ram_end, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PVH_INFO_START,
    VIRTIO_MMIO_SIZE, ZERO_PAGE_START,
};

/// `boot_params.hdr.boot_flag`.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `boot_params.hdr.header` ("HdrS").
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: an unregistered boot loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `loadflags` bit: the heap above the setup code may be used.
const CAN_USE_HEAP: u8 = 0x80;
/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Page size used to align the initrd.
const PAGE_SIZE: u64 = 4096;

/// A failure to prepare the guest for boot.
#[derive(Debug)]
pub enum BootError {
    /// Opening or reading a file.
    Io(String, std::io::Error),
    /// linux-loader rejected the kernel image.
    Kernel(loader::Error),
    /// The image is an ELF without a PVH entry point.
    NoPvhEntry,
    /// The command line is invalid or too long.
    Cmdline(String),
    /// The initrd does not fit in guest memory.
    InitrdTooLarge {
        /// The initrd size.
        size: u64,
        /// The room there is.
        room: u64,
    },
    /// Writing boot information to guest memory.
    Memory(String),
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootError::Io(what, e) => write!(f, "{what}: {e}"),
            BootError::Kernel(e) => write!(f, "loading the kernel: {e}"),
            BootError::NoPvhEntry => {
                write!(
                    f,
                    "the kernel is an ELF image without a PVH entry point (CONFIG_PVH)"
                )
            }
            BootError::Cmdline(e) => write!(f, "kernel command line: {e}"),
            BootError::InitrdTooLarge { size, room } => {
                write!(
                    f,
                    "initrd of {size} bytes does not fit ({room} bytes free below the limit)"
                )
            }
            BootError::Memory(e) => write!(f, "writing boot data: {e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// A virtio-mmio device to announce on the command line.
#[derive(Clone, Copy, Debug)]
pub struct MmioAnnouncement {
    /// Base address of the 4 KiB window.
    pub base: GuestAddress,
    /// Its IRQ.
    pub irq: u32,
}

/// Builds the final command line: the user's, then one
/// `virtio_mmio.device=4K@0x...:IRQ` per device.
pub fn build_cmdline(
    user: &str,
    devices: &[MmioAnnouncement],
    capacity: usize,
) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(capacity).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !user.trim().is_empty() {
        cmdline
            .insert_str(user.trim())
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    for (id, d) in devices.iter().enumerate() {
        cmdline
            .add_virtio_mmio_device(VIRTIO_MMIO_SIZE, d.base, d.irq, Some(id as u32))
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    Ok(cmdline)
}

/// Where an initrd of `size` bytes goes: the highest page-aligned address
/// whose end is at most `limit` and whose start is at least `floor`.
pub fn initrd_address(size: u64, floor: u64, limit: u64) -> Result<u64, BootError> {
    let room = limit.saturating_sub(floor);
    if size > room {
        return Err(BootError::InitrdTooLarge { size, room });
    }
    let addr = (limit - size) & !(PAGE_SIZE - 1);
    if addr < floor {
        return Err(BootError::InitrdTooLarge { size, room });
    }
    Ok(addr)
}

/// What [`load`] needs.
pub struct BootSpec<'a> {
    /// The kernel image.
    pub kernel: &'a Path,
    /// The initrd.
    pub initrd: Option<&'a Path>,
    /// The user's command line.
    pub cmdline: &'a str,
    /// Guest memory size in bytes.
    pub mem_bytes: u64,
    /// The virtio-mmio devices to announce.
    pub devices: &'a [MmioAnnouncement],
    /// The RSDP address, already written.
    pub rsdp: GuestAddress,
}

fn mem_err(e: impl std::fmt::Display) -> BootError {
    BootError::Memory(e.to_string())
}

/// Loads kernel, initrd and command line into `mem` and writes the boot
/// information. Returns where the boot vCPU starts.
pub fn load(mem: &GuestMemoryMmap, spec: &BootSpec) -> Result<EntryPoint, BootError> {
    let io = |what: &str| {
        let what = format!("{what} {}", spec.kernel.display());
        move |e| BootError::Io(what, e)
    };
    let mut kernel = File::open(spec.kernel).map_err(io("opening kernel"))?;

    let (result, is_bzimage) =
        match BzImage::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START))) {
            Ok(r) => (r, true),
            Err(loader::Error::Bzimage(_)) => {
                kernel
                    .seek(SeekFrom::Start(0))
                    .map_err(io("seeking kernel"))?;
                let r = Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIMEM_START)))
                    .map_err(BootError::Kernel)?;
                (r, false)
            }
            Err(e) => return Err(BootError::Kernel(e)),
        };

    let (cmdline_cap, initrd_max) = match (&result.setup_header, is_bzimage) {
        (Some(hdr), true) => {
            let cap = if hdr.cmdline_size > 0 {
                hdr.cmdline_size as usize + 1
            } else {
                256
            };
            (cap.min(CMDLINE_MAX_SIZE), u64::from(hdr.initrd_addr_max))
        }
        _ => (CMDLINE_MAX_SIZE, u64::from(u32::MAX)),
    };
    let cmdline = build_cmdline(spec.cmdline, spec.devices, cmdline_cap)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    log::info!(
        "kernel command line: {}",
        cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    );

    let initrd = match spec.initrd {
        Some(path) => Some(load_initrd(mem, path, &result, spec.mem_bytes, initrd_max)?),
        None => None,
    };

    if is_bzimage {
        write_boot_params(mem, &result, spec, cmdline_len, initrd)?;
        Ok(EntryPoint::Linux64 {
            rip: result.kernel_load.raw_value() + 0x200,
            zero_page: ZERO_PAGE_START,
        })
    } else {
        let PvhBootCapability::PvhEntryPresent(entry) = result.pvh_boot_cap else {
            return Err(BootError::NoPvhEntry);
        };
        write_pvh_info(mem, spec, initrd)?;
        Ok(EntryPoint::Pvh {
            rip: entry.raw_value(),
            start_info: PVH_INFO_START,
        })
    }
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &KernelLoaderResult,
    mem_bytes: u64,
    initrd_max: u64,
) -> Result<(u64, u64), BootError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e| BootError::Io(what, e)
    };
    let mut f = File::open(path).map_err(io("opening initrd"))?;
    let size = f.metadata().map_err(io("reading initrd"))?.len();
    let limit = low_ram_end(mem_bytes).min(initrd_max.saturating_add(1));
    let floor = kernel.kernel_end.max(HIMEM_START);
    let addr = initrd_address(size, floor, limit)?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(mem_err)?;
    log::info!("initrd: {size} bytes at {addr:#x}");
    Ok((addr, size))
}

fn write_boot_params(
    mem: &GuestMemoryMmap,
    result: &KernelLoaderResult,
    spec: &BootSpec,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = result.setup_header {
        params.hdr = hdr;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    params.acpi_rsdp_addr = spec.rsdp.raw_value();
    let map = e820_map(spec.mem_bytes);
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(mem_err)
}

fn write_pvh_info(
    mem: &GuestMemoryMmap,
    spec: &BootSpec,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let map: Vec<hvm_memmap_table_entry> = e820_map(spec.mem_bytes)
        .into_iter()
        .map(|(addr, size, kind)| hvm_memmap_table_entry {
            addr,
            size,
            type_: kind as u32,
            reserved: 0,
        })
        .collect();
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let map_addr = PVH_INFO_START + info_size.next_multiple_of(64);
    let map_size = (map.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
    let modlist_addr = map_addr + map_size.next_multiple_of(64);
    // start_info, memory map and module list must stay below the zero page.
    if modlist_addr + std::mem::size_of::<hvm_modlist_entry>() as u64 > ZERO_PAGE_START {
        return Err(BootError::Memory(
            "PVH boot information does not fit".into(),
        ));
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: spec.rsdp.raw_value(),
        memmap_paddr: map_addr,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_START));
    if let Some((paddr, size)) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
        params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_START));
        params.set_modules(
            &[hvm_modlist_entry {
                paddr,
                size,
                ..Default::default()
            }],
            GuestAddress(modlist_addr),
        );
    }
    params.set_sections(&map, GuestAddress(map_addr));
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem).map_err(mem_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_announces_devices() {
        let devs = [
            MmioAnnouncement {
                base: GuestAddress(0xd000_0000),
                irq: 5,
            },
            MmioAnnouncement {
                base: GuestAddress(0xd000_1000),
                irq: 6,
            },
        ];
        let c = build_cmdline("console=ttyS0 panic=-1", &devs, 512).unwrap();
        let s = c.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(
            s,
            "console=ttyS0 panic=-1 virtio_mmio.device=4K@0xd0000000:5:0 virtio_mmio.device=4K@0xd0001000:6:1"
        );
    }

    #[test]
    fn cmdline_too_long_is_an_error() {
        assert!(build_cmdline(&"x".repeat(300), &[], 256).is_err());
    }

    #[test]
    fn initrd_goes_high_and_aligned() {
        assert_eq!(
            initrd_address(0x1234, 0x200000, 0x2000_0000).unwrap(),
            0x1fff_e000
        );
        assert_eq!(initrd_address(0x1000, 0x1000, 0x2000).unwrap(), 0x1000);
        assert!(initrd_address(0x2000, 0x1000, 0x2000).is_err());
        assert!(initrd_address(10, 0x3000, 0x2000).is_err());
    }

    #[test]
    fn non_kernel_is_rejected() {
        let dir = std::env::temp_dir().join(format!("pvrs-vmm-boot-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let spec = BootSpec {
            kernel: &dir,
            initrd: None,
            cmdline: "",
            mem_bytes: 64 << 20,
            devices: &[],
            rsdp: GuestAddress(0xe0000),
        };
        assert!(load(&mem, &spec).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
