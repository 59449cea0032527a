//! Loading the real guest kernel (build/guest/bzImage, when it has been
//! built) into guest memory, without running it: entry point, boot_params,
//! command line, initrd and ACPI pointer. An ELF vmlinux with a PVH note is
//! tried too when `PVRS_TEST_VMLINUX` names one.

use std::path::PathBuf;

use pvrs_vmm::boot::{self, BootSpec, MmioAnnouncement};
use pvrs_vmm::cpu::regs::EntryPoint;
use pvrs_vmm::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: u64 = 256 << 20;

fn bzimage() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/guest/bzImage");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} not built", p.display());
        None
    }
}

fn read_u32(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

fn load(kernel: &std::path::Path) -> (GuestMemoryMmap, EntryPoint, u64) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(MEM)).unwrap();
    let initrd = std::env::temp_dir().join(format!("pvrs-vmm-initrd-{}", std::process::id()));
    std::fs::write(&initrd, vec![0x42u8; 12345]).unwrap();
    let rsdp = boot::acpi::write_tables(&mem, 2).unwrap();
    let devices = [MmioAnnouncement {
        base: GuestAddress(0xd000_0000),
        irq: 5,
    }];
    let spec = BootSpec {
        kernel,
        initrd: Some(&initrd),
        cmdline: "console=ttyS0 quiet",
        mem_bytes: MEM,
        devices: &devices,
        rsdp,
    };
    let entry = boot::load(&mem, &spec).unwrap();
    std::fs::remove_file(&initrd).unwrap();
    (mem, entry, rsdp.0)
}

fn cmdline_at(mem: &GuestMemoryMmap, addr: u64) -> String {
    let mut buf = vec![0u8; 256];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

#[test]
fn bzimage_boot_params() {
    let Some(kernel) = bzimage() else {
        return;
    };
    let (mem, entry, rsdp) = load(&kernel);
    assert_eq!(
        entry,
        EntryPoint::Linux64 {
            rip: layout::HIMEM_START + 0x200,
            zero_page: layout::ZERO_PAGE_START
        }
    );
    let zp = layout::ZERO_PAGE_START;
    // setup_header at 0x1f1: "HdrS" at 0x202, loader type at 0x210,
    // ramdisk at 0x218/0x21c, cmd_line_ptr at 0x228.
    assert_eq!(read_u32(&mem, zp + 0x202), 0x5372_6448);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(zp + 0x210)).unwrap(), 0xff);
    let ramdisk = u64::from(read_u32(&mem, zp + 0x218));
    assert_eq!(read_u32(&mem, zp + 0x21c), 12345);
    assert_eq!(ramdisk % 4096, 0);
    assert!(ramdisk + 12345 <= MEM);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(ramdisk)).unwrap(), 0x42);
    assert_eq!(u64::from(read_u32(&mem, zp + 0x228)), layout::CMDLINE_START);
    assert_eq!(
        cmdline_at(&mem, layout::CMDLINE_START),
        "console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5:0"
    );
    // acpi_rsdp_addr at 0x70, e820_entries at 0x1e8, table at 0x2d0.
    assert_eq!(mem.read_obj::<u64>(GuestAddress(zp + 0x70)).unwrap(), rsdp);
    let entries = mem.read_obj::<u8>(GuestAddress(zp + 0x1e8)).unwrap();
    assert_eq!(usize::from(entries), layout::e820_map(MEM).len());
    let last = zp + 0x2d0 + 20 * (u64::from(entries) - 1);
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(last)).unwrap(),
        layout::HIMEM_START
    );
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(last + 8)).unwrap(),
        MEM - layout::HIMEM_START
    );
    // The protected-mode kernel is in place (its first bytes are code, not zero).
    let mut head = [0u8; 16];
    mem.read_slice(&mut head, GuestAddress(layout::HIMEM_START))
        .unwrap();
    assert_ne!(head, [0; 16]);
}

#[test]
fn pvh_start_info() {
    let Some(vmlinux) = std::env::var_os("PVRS_TEST_VMLINUX").map(PathBuf::from) else {
        eprintln!("skipped: PVRS_TEST_VMLINUX not set");
        return;
    };
    let (mem, entry, rsdp) = load(&vmlinux);
    let EntryPoint::Pvh { start_info, .. } = entry else {
        panic!("{entry:?}");
    };
    // hvm_start_info: magic, version, flags, nr_modules, modlist_paddr,
    // cmdline_paddr, rsdp_paddr, memmap_paddr, memmap_entries.
    assert_eq!(read_u32(&mem, start_info), 0x336e_c578);
    assert_eq!(read_u32(&mem, start_info + 12), 1);
    let modlist: u64 = mem.read_obj(GuestAddress(start_info + 16)).unwrap();
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(modlist + 8)).unwrap(),
        12345
    );
    let cmdline: u64 = mem.read_obj(GuestAddress(start_info + 24)).unwrap();
    assert!(cmdline_at(&mem, cmdline).starts_with("console=ttyS0 quiet"));
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(start_info + 32)).unwrap(),
        rsdp
    );
    assert_eq!(
        usize::try_from(read_u32(&mem, start_info + 48)).unwrap(),
        layout::e820_map(MEM).len()
    );
}
