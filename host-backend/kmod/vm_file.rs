// SPDX-License-Identifier: GPL-2.0

//! A VM and its file (`anon_inode:kvm-vm`): guest memory (memslots, nested
//! page tables, pinned pages) and vCPU creation.
//!
//! Guest memory: `KVM_SET_USER_MEMORY_REGION` (api.rst 4.35) only updates
//! the memslot table (hv-core `memslot`). Pages are mapped lazily: a
//! nested page fault on a memslot GPA pins the page of the VMM's mapping
//! (`pin_user_pages_fast`) and maps it in the NPT (hv-core `npt`). Deleting
//! or moving a slot zaps its range, makes every running vCPU leave the
//! guest (an IPI, which the INTR intercept turns into a #VMEXIT) and bumps
//! the TLB generation that vCPUs check before each entry, and only then
//! drops the pins: a guest can never reach a page the VMM no longer maps.
//!
//! Not done yet: MMU notifiers (a page the VMM remaps stays mapped to the
//! guest, pinned, until its slot changes), dirty logging, 2 MiB mappings.

use crate::{
    kmem::{IopmBox, NptPages},
    kvm_api::{self, decode, ioctl::Ioctl, layout},
    memslot, npt, svm_hw,
    system::check_extension,
    vcpu,
    vcpu_file::Vcpu,
    Host,
};
use core::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};
use kernel::{
    alloc::{flags, KVec},
    anon_inode, c_str, debugfs,
    file_ops::FileOps,
    fmt,
    mm::PinnedUserPage,
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    str::CString,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSlice,
};

/// Memslots per VM (KVM allows 32764 on x86; VMMs use a handful).
pub(crate) const MAX_MEMSLOTS: usize = 32;
/// vCPUs per VM.
pub(crate) const MAX_VCPUS: usize = 8;

/// A VM.
#[pin_data]
pub(crate) struct Vm {
    pub(crate) host: Arc<Host>,
    #[pin]
    pub(crate) mem: Mutex<GuestMemoryState>,
    #[pin]
    vcpus: Mutex<KVec<Arc<Vcpu>>>,
    /// Bumped after NPT entries are removed; a vCPU that sees a new value
    /// flushes its TLB before entering the guest.
    pub(crate) tlb_generation: AtomicU64,
    /// The I/O permission map, shared by the vCPUs (every port exits).
    pub(crate) iopm: IopmBox,
    /// The NPT root, fixed for the VM's life.
    pub(crate) nested_cr3: u64,
    /// `/sys/kernel/debug/pvrs_kvm-<pid>-<n>/`, removed when the VM file
    /// is released (its file holds a reference to the VM).
    #[pin]
    debugfs: Mutex<Option<debugfs::Dir>>,
}

/// VMs created since the module loaded, for debugfs names.
static VM_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// `exits`: every vCPU's exit counters (hv-core `vcpu::ExitCounters`),
/// the ones that are not 0, and the VM's mapped pages.
struct ExitsFile {
    vm: Arc<Vm>,
}

impl debugfs::TextAttribute for ExitsFile {
    fn show(&self, out: &mut debugfs::TextBuffer) -> Result {
        let (pages, tables) = {
            let mem = self.vm.mem.lock();
            (mem.pinned.iter().count(), mem.npt_pages.count())
        };
        writeln!(out, "vm mapped_pages={pages} npt_table_pages={tables}").map_err(|_| ENOMEM)?;
        let vcpus = self.vm.vcpus.lock();
        for vcpu in vcpus.iter() {
            vcpu.show_counters(out)?;
        }
        Ok(())
    }
}

/// The memslots as hv-core's exit handler sees them.
impl vcpu::MemoryMap for GuestMemoryState {
    fn backing(&self, gpa: u64) -> vcpu::Backing {
        match self.slots.translate(0, gpa) {
            Some(t) => vcpu::Backing::Ram {
                writable: t.writable,
            },
            None => vcpu::Backing::Unbacked,
        }
    }
}

/// What a zap leaves to free after the vCPUs have been kicked.
struct Zapped {
    pins: KVec<PinnedUserPage>,
    tables: KVec<u64>,
}

/// The guest-physical memory of a VM.
pub(crate) struct GuestMemoryState {
    pub(crate) slots: memslot::MemslotTable<MAX_MEMSLOTS>,
    npt: npt::NestedPageTable,
    npt_pages: NptPages,
    /// The pinned page behind each mapped guest frame.
    pinned: RBTree<u64, PinnedUserPage>,
}

impl GuestMemoryState {
    /// The user address of `gpa`, if a memslot covers it (and allows
    /// writes, if `write`).
    pub(crate) fn hva(&self, gpa: u64, write: bool) -> Option<u64> {
        self.slots
            .translate(0, gpa)
            .filter(|t| t.writable || !write)
            .map(|t| t.hva)
    }

    /// Maps the guest page of `gpa` (which must be in a memslot), pinning
    /// the VMM's page. A page already mapped is left alone.
    pub(crate) fn map_page(&mut self, gpa: u64, write: bool) -> Result {
        let gfn = gpa >> 12;
        if self.pinned.get(&gfn).is_some() {
            return Ok(());
        }
        let t = self.slots.translate(0, gpa).ok_or(EFAULT)?;
        if write && !t.writable {
            return Err(EFAULT);
        }
        let page = PinnedUserPage::pin((t.hva & !0xfff) as usize, t.writable)?;
        let access = npt::Access {
            writable: t.writable,
            executable: true,
        };
        self.npt
            .map(
                &mut self.npt_pages,
                gfn << 12,
                page.phys_addr(),
                npt::PageSize::Size4K,
                access,
            )
            .map_err(|_| ENOMEM)?;
        self.pinned
            .try_create_and_insert(gfn, page, flags::GFP_KERNEL)?;
        Ok(())
    }

    /// Unmaps `[start_gfn, end_gfn)` from the NPT and returns what the
    /// caller frees once no vCPU can use the old translations: the pins of
    /// the pages, and the table pages that became empty.
    fn zap(&mut self, start_gfn: u64, end_gfn: u64) -> Zapped {
        let mut zapped = Zapped {
            pins: KVec::new(),
            tables: KVec::new(),
        };
        let mut table_alloc_failed = false;
        let tables = &mut zapped.tables;
        self.npt.zap_range(
            &mut self.npt_pages,
            start_gfn << 12,
            end_gfn << 12,
            &mut |table| {
                // A table page we cannot remember stays allocated (leaked
                // until the VM goes) rather than freed too early.
                table_alloc_failed |= tables.push(table, flags::GFP_KERNEL).is_err();
            },
        );
        if table_alloc_failed {
            pr_warn!("NPT zap: some empty table pages kept until the VM is destroyed\n");
        }
        loop {
            let next = self
                .pinned
                .iter()
                .map(|(gfn, _)| *gfn)
                .find(|gfn| (start_gfn..end_gfn).contains(gfn));
            let Some(gfn) = next else { break };
            if let Some(page) = self.pinned.remove(&gfn) {
                // If this push fails the pin is dropped right here, before
                // the kick: the NPT entry is gone already, so only a stale
                // TLB entry of a running vCPU could still reach the page.
                let _ = zapped.pins.push(page, flags::GFP_KERNEL);
            }
        }
        zapped
    }
}

impl Vm {
    pub(crate) fn new(host: Arc<Host>) -> Result<Arc<Self>> {
        let mut npt_pages = NptPages::new();
        let phys_bits = svm_hw::host_phys_bits();
        let npt = npt::NestedPageTable::new(
            &mut npt_pages,
            npt::NptConfig {
                levels: svm_hw::host_paging_levels(),
                guest_phys_bits: phys_bits,
                host_phys_bits: phys_bits,
            },
        )
        .map_err(|_| ENOMEM)?;
        let nested_cr3 = npt.root();
        let iopm = IopmBox::new()?;
        Arc::pin_init(
            pin_init!(Self {
                host,
                mem <- new_mutex!(GuestMemoryState {
                    slots: memslot::MemslotTable::new(),
                    npt,
                    npt_pages,
                    pinned: RBTree::new(),
                }),
                vcpus <- new_mutex!(KVec::new()),
                tlb_generation: AtomicU64::new(0),
                iopm,
                nested_cr3,
                debugfs <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )
        .inspect(|vm| vm.add_debugfs())
    }

    /// Creates the VM's debugfs directory. Statistics are optional: a
    /// failure (no debugfs, no memory) is logged, not fatal.
    fn add_debugfs(self: &Arc<Self>) {
        let seq = VM_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let pid = kernel::current!().pid();
        let made = CString::try_from_fmt(fmt!("pvrs_kvm-{pid}-{seq}")).and_then(|name| {
            let mut dir = debugfs::Dir::new(&name)?;
            dir.add_text_file(
                c_str!("exits"),
                0o400,
                Arc::new(ExitsFile { vm: self.clone() }, GFP_KERNEL)?,
            )?;
            Ok(dir)
        });
        match made {
            Ok(dir) => *self.debugfs.lock() = Some(dir),
            Err(e) => pr_info!("no debugfs statistics for this VM: {:?}\n", e),
        }
    }

    /// KVM_SET_USER_MEMORY_REGION and, with the same semantics and
    /// without guest_memfd, KVM_SET_USER_MEMORY_REGION2 (api.rst 4.35,
    /// 4.140).
    fn set_user_memory_region(
        &self,
        arg: usize,
        version: decode::MemoryRegionVersion,
    ) -> Result<isize> {
        let mut buffer = [0u8; core::mem::size_of::<layout::kvm_userspace_memory_region2>()];
        let size = match version {
            decode::MemoryRegionVersion::V1 => {
                core::mem::size_of::<layout::kvm_userspace_memory_region>()
            }
            decode::MemoryRegionVersion::V2 => buffer.len(),
        };
        let bytes = buffer.get_mut(..size).ok_or(EINVAL)?;
        UserSlice::new(arg, bytes.len())
            .reader()
            .read_slice(bytes)?;
        let region = decode::decode_memory_region(
            version,
            bytes,
            decode::MemoryRegionSupport {
                readonly: true,
                guest_memfd: false,
            },
        )
        .map_err(kvm_error)?;
        let mut flags_bits = 0;
        if region.flags.log_dirty_pages {
            // Accepted by the table, but nothing logs dirty pages yet: say
            // so instead of returning an empty bitmap later.
            return Err(EINVAL);
        }
        if region.flags.readonly {
            flags_bits |= memslot::KVM_MEM_READONLY;
        }
        let request = memslot::MemoryRegion {
            slot: (u32::from(region.address_space) << 16) | u32::from(region.slot),
            flags: flags_bits,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.userspace_addr,
        };
        let limits = memslot::MemslotLimits {
            address_spaces: 1,
            user_address_max: kernel::mm::task_size_max() as u64,
            readonly_allowed: true,
            // Nested paging maps guest frames below the host's MAXPHYADDR.
            max_gfn: (1u64 << (crate::svm_hw::host_phys_bits().clamp(32, 52) - 12)) - 1,
        };
        let zapped = {
            let mut mem = self.mem.lock();
            let change = mem
                .slots
                .set_user_memory_region(&request, &limits)
                .map_err(|e| Error::from_errno(-e.errno()))?;
            match change {
                memslot::MemslotChange::Deleted(old)
                | memslot::MemslotChange::Moved { old, .. }
                | memslot::MemslotChange::FlagsChanged { old, .. } => {
                    Some(mem.zap(old.base_gfn, old.end_gfn()))
                }
                memslot::MemslotChange::Created(_) | memslot::MemslotChange::Unchanged => None,
            }
        };
        if let Some(zapped) = zapped {
            self.tlb_generation.fetch_add(1, Ordering::SeqCst);
            self.kick_all();
            // No vCPU runs with the old translations any more.
            drop(zapped.pins);
            let mut mem = self.mem.lock();
            for table in zapped.tables.iter() {
                mem.npt_pages.free(*table);
            }
        }
        Ok(0)
    }

    /// Makes every vCPU that is in the guest leave it, and waits until it
    /// has: after this, no vCPU uses a translation removed before the call.
    fn kick_all(&self) {
        let vcpus = self.vcpus.lock();
        for vcpu in vcpus.iter() {
            vcpu.kick();
        }
    }

    fn create_vcpu(self: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        let mut vcpus = self.vcpus.lock();
        if id >= MAX_VCPUS || vcpus.len() >= MAX_VCPUS {
            return Err(EINVAL);
        }
        if vcpus.iter().any(|v| v.id as usize == id) {
            return Err(EEXIST);
        }
        let vcpu = Vcpu::new(self.into(), id as u32)?;
        // Room first, so that the push after the file exists cannot fail:
        // a vCPU missing from the list could not be kicked.
        vcpus.reserve(1, GFP_KERNEL)?;
        let fd = anon_inode::new_fd(c_str!("kvm-vcpu"), &self.host.vcpu_fops, vcpu.clone())?;
        vcpus.push(vcpu, GFP_KERNEL)?;
        Ok(fd as isize)
    }
}

/// Recognizes ioctl `cmd` on a file of kind `fd` and checks an argument
/// that must be zero, returning the errno KVM returns otherwise (hv-core's
/// `kvm_api::ioctl`): the first step of every file's `ioctl`.
pub(crate) fn classify_ioctl(fd: kvm_api::ioctl::FdKind, cmd: u32, arg: usize) -> Result<Ioctl> {
    let request = kvm_api::ioctl::classify(fd, cmd).map_err(kvm_error)?;
    kvm_api::ioctl::check_zero_argument(request.argument, arg as u64).map_err(kvm_error)?;
    Ok(request.ioctl)
}

/// A kvm_api error as the errno KVM returns.
pub(crate) fn kvm_error(e: kvm_api::Error) -> Error {
    Error::from_errno(-e.errno().code())
}

/// A VM file (`anon_inode:kvm-vm`).
pub(crate) struct VmFile;

#[vtable]
impl FileOps for VmFile {
    type Ptr = Arc<Vm>;

    fn ioctl(vm: ArcBorrow<'_, Vm>, cmd: u32, arg: usize) -> Result<isize> {
        match classify_ioctl(kvm_api::ioctl::FdKind::Vm, cmd, arg)? {
            Ioctl::CheckExtension => Ok(check_extension(arg)),
            Ioctl::SetUserMemoryRegion => {
                vm.set_user_memory_region(arg, decode::MemoryRegionVersion::V1)
            }
            Ioctl::SetUserMemoryRegion2 => {
                vm.set_user_memory_region(arg, decode::MemoryRegionVersion::V2)
            }
            Ioctl::CreateVcpu => vm.create_vcpu(arg),
            // The TSS and identity-map pages matter only for VMX real mode
            // (api.rst 4.39, 4.57); an SVM guest never uses them. KVM takes
            // them on AMD too, so VMMs call them unconditionally.
            Ioctl::SetTssAddr | Ioctl::SetIdentityMapAddr => Ok(0),
            // No capability can be enabled yet: flags or an unsupported
            // capability are EINVAL, as in KVM.
            Ioctl::EnableCap => {
                let mut bytes = [0u8; core::mem::size_of::<layout::kvm_enable_cap>()];
                UserSlice::new(arg, bytes.len())
                    .reader()
                    .read_slice(&mut bytes)?;
                decode::decode_enable_cap(decode::CapTarget::Vm, &bytes).map_err(kvm_error)?;
                Err(EINVAL)
            }
            // New vCPUs' TSC runs at the host's rate (offset only).
            Ioctl::GetTscKhz => Ok(kernel::x86::tsc_khz() as isize),
            // Known to the KVM API but not implemented here (yet): the
            // capabilities that announce them answer 0.
            _ => Err(ENOTTY),
        }
    }

    fn release(vm: Arc<Vm>) {
        // The statistics file holds a reference to the VM: removing it
        // breaks that cycle (vCPU files may keep the VM alive a little
        // longer, without statistics).
        let dir = vm.debugfs.lock().take();
        drop(dir);
    }
}
