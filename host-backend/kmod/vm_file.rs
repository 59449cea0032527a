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
//! The in-kernel irqchip (KVM_CREATE_IRQCHIP, api.rst 4.24-4.27, 4.52,
//! 4.71-4.75): hv-core's `irqchip::vm::VmIrqchip` under one VM-wide lock;
//! what an operation causes comes back as effects applied after the
//! unlock: vCPUs to wake or send out of the guest (a reschedule IPI), and
//! the LAPIC and PIT hrtimers to arm. A timer's callback (hard interrupt)
//! only sets a flag and wakes; the vCPU calls the irqchip before its next
//! entry.
//!
//! Irqfds (KVM_IRQFD) are in `irqfd.rs`.
//!
//! Not done yet: MMU notifiers (a page the VMM remaps stays mapped to the
//! guest, pinned, until its slot changes), dirty logging, 2 MiB mappings,
//! ioeventfd.

use crate::{
    irqchip::TimerId,
    irqfd::{IrqfdSlots, PendingGsis},
    kmem::{IopmBox, Irqchip, NptPages, PlainState},
    kvm_api::{self, decode, ioctl::Ioctl, layout, wire::Wire},
    memslot, npt, pv,
    pvrs_abi::pvclock,
    svm_hw,
    system::check_extension,
    user_copy::{read_user, read_user_bytes, write_user},
    vcpu,
    vcpu_file::Vcpu,
    Host,
};
use core::{
    fmt::Write,
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
};
use kernel::{
    alloc::{flags, KVec},
    anon_inode, c_str, debugfs,
    file_ops::FileOps,
    fmt,
    mm::PinnedUserPage,
    mmu_notifier::{InvalidatedRange, MmuNotifier, MmuNotifierHandler},
    new_condvar, new_mutex,
    prelude::*,
    rbtree::RBTree,
    str::CString,
    sync::{Arc, ArcBorrow, CondVar, Mutex},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerMode, HrTimerPointer, HrTimerRestart,
        },
        Ktime,
    },
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
    /// The in-kernel LAPICs, IOAPIC, PIC and PIT (KVM_CREATE_IRQCHIP), one
    /// lock for all of them: a vCPU takes it around the irqchip part of an
    /// exit and of each entry. With at most 8 vCPUs the contention is
    /// small, and a message can be routed to every LAPIC under it.
    #[pin]
    pub(crate) irqchip: Mutex<Option<KBox<Irqchip>>>,
    /// Whether `irqchip` is set (read without the lock on every entry).
    pub(crate) has_irqchip: AtomicBool,
    /// Halted vCPUs wait here; every event that may end a halt (a kick,
    /// a timer, an IRQ line) notifies it.
    #[pin]
    pub(crate) halt_wait: CondVar,
    /// The lock `halt_wait` is used with: a waker from thread context
    /// takes it to set its flag, so a waiter cannot miss it between its
    /// check and its sleep.
    #[pin]
    pub(crate) halt_lock: Mutex<()>,
    /// PIT channel 0's timer, and the handle that keeps it armed.
    #[pin]
    pit_timer: HrTimer<Vm>,
    #[pin]
    pit_handle: Mutex<Option<ArcHrTimerHandle<Vm>>>,
    /// Set by the PIT timer; the next vCPU to enter calls the PIT.
    pub(crate) pit_fired: AtomicBool,
    /// When the IOAPIC wants its deferred EOI re-injection (ns, 0: never).
    pub(crate) ioapic_eoi_deadline: AtomicU64,
    /// The VM file was released: the PIT is not armed again (its handle
    /// would hold the VM).
    released: AtomicBool,
    /// The MMU notifier on the VMM's address space (it holds the VM,
    /// dropped when the VM file is released).
    #[pin]
    memory_notifier: Mutex<Option<MmuNotifier<VmMemoryNotifier>>>,
    /// The irqfds (KVM_IRQFD); each holds a reference to the VM, dropped
    /// when the VM file is released.
    #[pin]
    pub(crate) irqfds: Mutex<IrqfdSlots>,
    /// GSIs irqfds signalled, pulsed by the next vCPU that takes the
    /// irqchip.
    pub(crate) irqfd_pending: PendingGsis,
    /// The host CPU each vCPU (by id) is in the guest on, or -1: read
    /// without a lock to send it out of the guest, also from atomic
    /// context.
    pub(crate) running_on: [AtomicI32; MAX_VCPUS],
    /// kvmclock's parameters, the same for every vCPU (KVM's master
    /// clock): the clock reads 0 ns at the host TSC of the VM's creation
    /// and runs at the host's TSC frequency from there. A vCPU's time
    /// area is this, shifted by its own TSC offset.
    pub(crate) clock: pvclock::PvclockVcpuTimeInfo,
    /// The host TSC at the VM's creation.
    creation_tsc: u64,
    /// LAPIC timers found overdue by a halted vCPU's recheck (their
    /// hrtimer expiry was lost), shown in debugfs.
    pub(crate) lost_timer_expiries: AtomicU64,
    /// Timer expiries whose wake-up of a halted vCPU was lost (found at
    /// the end of a recheck period), shown in debugfs.
    pub(crate) lost_timer_wakeups: AtomicU64,
    /// Whether the host's clocksource was the TSC when last looked
    /// (at each kvmclock reference): the stable bit and CLOCK_PAIRING
    /// need it, as KVM's master clock does.
    pub(crate) host_tsc_clock: AtomicBool,
}

kernel::impl_has_hr_timer! { impl HasHrTimer<Vm> for Vm { self.pit_timer } }

impl HrTimerCallback for Vm {
    fn run(this: ArcBorrow<'_, Self>) -> HrTimerRestart {
        this.pit_fired.store(true, Ordering::Release);
        // A halted vCPU wakes; a running one sees the flag at its next
        // exit (at the latest the host's next tick).
        this.halt_wait.notify_all();
        HrTimerRestart::NoRestart
    }
}

/// The current time on the clock the irqchip's deadlines use.
pub(crate) fn now_ns() -> u64 {
    Ktime::ktime_get().to_ns() as u64
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
        let lost = self.vm.lost_timer_expiries.load(Ordering::Relaxed);
        let late = self.vm.lost_timer_wakeups.load(Ordering::Relaxed);
        writeln!(
            out,
            "vm mapped_pages={pages} npt_table_pages={tables} lost_timer_expiries={lost} \
             lost_timer_wakeups={late}"
        )
        .map_err(|_| ENOMEM)?;
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

impl Zapped {
    const EMPTY: Self = Self {
        pins: KVec::new(),
        tables: KVec::new(),
    };

    /// `Some(self)` if anything was zapped (the vCPUs must then be
    /// kicked before it is freed).
    fn into_nonempty(self) -> Option<Self> {
        (!self.pins.is_empty() || !self.tables.is_empty()).then_some(self)
    }
}

/// The guest-physical memory of a VM.
pub(crate) struct GuestMemoryState {
    pub(crate) slots: memslot::MemslotTable<MAX_MEMSLOTS>,
    npt: npt::NestedPageTable,
    npt_pages: NptPages,
    /// The pinned page behind each mapped guest frame.
    pinned: RBTree<u64, PinnedUserPage>,
    invalidations: Invalidations,
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

    /// Maps guest frame `gfn` to the pinned `page` in the NPT, unless it
    /// is mapped already (another vCPU faulted on it meanwhile).
    fn map_pinned(&mut self, gfn: u64, page: PinnedUserPage, writable: bool) -> Result {
        if self.pinned.get(&gfn).is_some() {
            return Ok(());
        }
        let access = npt::Access {
            writable,
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
    /// the pages, and the table pages that became empty. `None` if nothing
    /// in the range was mapped.
    fn zap(&mut self, start_gfn: u64, end_gfn: u64) -> Option<Zapped> {
        let mut zapped = Zapped::EMPTY;
        self.zap_into(start_gfn, end_gfn, &mut zapped);
        zapped.into_nonempty()
    }

    /// [`Self::zap`], adding what is to free to `zapped`.
    fn zap_into(&mut self, start_gfn: u64, end_gfn: u64, zapped: &mut Zapped) {
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
        let mut cursor = self.pinned.cursor_lower_bound(&start_gfn);
        while let Some(current) = cursor {
            let gfn = *current.current().0;
            if gfn >= end_gfn {
                break;
            }
            let (next, node) = current.remove_current();
            // If this push fails the pin is dropped right here, before the
            // kick: the NPT entry is gone already, so only a stale TLB
            // entry of a running vCPU could still reach the page.
            let _ = zapped.pins.push(node.to_key_value().1, flags::GFP_KERNEL);
            // `remove_current` moves to the previous node when there is no
            // next one: that one is below the range.
            cursor = next.filter(|next| *next.current().0 > gfn);
        }
    }

    /// Zaps the guest frames whose VMM pages lie in user addresses
    /// `[start, end)`, in every memslot.
    fn zap_user_range(&mut self, start: u64, end: u64) -> Option<Zapped> {
        let mut ranges = [(0u64, 0u64); MAX_MEMSLOTS];
        let mut count = 0;
        for slot in self.slots.iter() {
            let slot_start = slot.userspace_addr;
            let slot_end = slot_start.saturating_add(slot.npages << 12);
            if slot_end <= start || end <= slot_start || count == ranges.len() {
                continue;
            }
            let first = slot.base_gfn + ((start.max(slot_start) - slot_start) >> 12);
            let last = slot.base_gfn + ((end.min(slot_end) - slot_start + 0xfff) >> 12);
            ranges[count] = (first, last);
            count += 1;
        }
        let mut zapped = Zapped::EMPTY;
        for (first, last) in ranges.iter().take(count) {
            self.zap_into(*first, *last, &mut zapped);
        }
        zapped.into_nonempty()
    }
}

/// The MMU-notifier invalidations in progress (KVM's
/// `mmu_invalidate_in_progress`, `_range_start/_end` and `_seq`): a page
/// pinned while one covering it runs, or pinned before one that has
/// ended since, may already be stale and is not mapped.
#[derive(Default)]
struct Invalidations {
    in_progress: u32,
    start: u64,
    end: u64,
    sequence: u64,
}

impl Invalidations {
    fn begin(&mut self, start: u64, end: u64) {
        if self.in_progress == 0 {
            (self.start, self.end) = (start, end);
        } else {
            (self.start, self.end) = (self.start.min(start), self.end.max(end));
        }
        self.in_progress += 1;
    }

    fn end(&mut self) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// Whether a page of user address `hva` pinned at `sequence` may be
    /// stale.
    fn must_retry(&self, hva: u64, sequence: u64) -> bool {
        sequence != self.sequence || (self.in_progress > 0 && (self.start..self.end).contains(&hva))
    }
}

/// The guest-physical memory as hv-core's exit handler sees it, taking
/// the lock for each question.
impl vcpu::MemoryMap for Mutex<GuestMemoryState> {
    fn backing(&self, gpa: u64) -> vcpu::Backing {
        vcpu::MemoryMap::backing(&*self.lock(), gpa)
    }
}

/// What the MMU notifier on the VMM's address space calls.
pub(crate) struct VmMemoryNotifier {
    vm: Arc<Vm>,
}

impl MmuNotifierHandler for VmMemoryNotifier {
    fn invalidate_range_start(&self, range: &InvalidatedRange) -> Result {
        if !range.blockable {
            // Only the OOM reaper, tearing down a process that is being
            // killed, does this; our lock may sleep. The pages stay
            // pinned (not freed under the guest) until the VM goes, and
            // nothing else sees them: safe, if not thrifty. (An error
            // would be a WARN: a notifier with `invalidate_range_end` may
            // not fail.)
            return Ok(());
        }
        let zapped = {
            let mut mem = self.vm.mem.lock();
            mem.invalidations
                .begin(range.start as u64, range.end as u64);
            mem.zap_user_range(range.start as u64, range.end as u64)
        };
        if let Some(zapped) = zapped {
            self.vm.finish_zap(zapped);
        }
        Ok(())
    }

    fn invalidate_range_end(&self, range: &InvalidatedRange) {
        if range.blockable {
            self.vm.mem.lock().invalidations.end();
        }
    }

    fn release(&self) {
        // The VMM exits: nothing of its address space may stay mapped.
        let zapped = self.vm.mem.lock().zap_user_range(0, u64::MAX);
        if let Some(zapped) = zapped {
            self.vm.finish_zap(zapped);
        }
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
        let creation_tsc = kernel::x86::rdtsc_ordered();
        let clock = pv::time_info(
            &pv::ClockReference {
                guest_tsc: creation_tsc,
                tsc_khz: kernel::x86::tsc_khz(),
                ..Default::default()
            },
            false,
        );
        Arc::pin_init(
            pin_init!(Self {
                host,
                mem <- new_mutex!(GuestMemoryState {
                    slots: memslot::MemslotTable::new(),
                    npt,
                    npt_pages,
                    pinned: RBTree::new(),
                    invalidations: Invalidations::default(),
                }),
                vcpus <- new_mutex!(KVec::new()),
                tlb_generation: AtomicU64::new(0),
                iopm,
                nested_cr3,
                debugfs <- new_mutex!(None),
                irqchip <- new_mutex!(None),
                has_irqchip: AtomicBool::new(false),
                halt_wait <- new_condvar!(),
                halt_lock <- new_mutex!(()),
                pit_timer <- HrTimer::new(HrTimerMode::Absolute),
                pit_handle <- new_mutex!(None),
                pit_fired: AtomicBool::new(false),
                ioapic_eoi_deadline: AtomicU64::new(0),
                released: AtomicBool::new(false),
                irqfds <- new_mutex!(KVec::new()),
                memory_notifier <- new_mutex!(None),
                irqfd_pending: PendingGsis::new(),
                running_on: [const { AtomicI32::new(-1) }; MAX_VCPUS],
                clock,
                creation_tsc,
                host_tsc_clock: AtomicBool::new(kernel::x86::clocksource_is_tsc()),
                lost_timer_expiries: AtomicU64::new(0),
                lost_timer_wakeups: AtomicU64::new(0),
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
                    mem.zap(old.base_gfn, old.end_gfn())
                }
                memslot::MemslotChange::Created(_) | memslot::MemslotChange::Unchanged => None,
            }
        };
        if let Some(zapped) = zapped {
            self.finish_zap(zapped);
        }
        Ok(0)
    }

    /// After a zap: makes every vCPU flush its TLB before it enters the
    /// guest again and waits until none runs with the old translations,
    /// then releases the pins and frees the table pages.
    fn finish_zap(&self, zapped: Zapped) {
        self.tlb_generation.fetch_add(1, Ordering::SeqCst);
        self.kick_all();
        // No vCPU runs with the old translations any more.
        drop(zapped.pins);
        let mut mem = self.mem.lock();
        for table in zapped.tables.iter() {
            mem.npt_pages.free(*table);
        }
    }

    /// A nested page fault on RAM: pins the VMM's page of `gpa` and maps
    /// it. The pin (which may fault the page in, take the VMM's
    /// `mmap_lock` and run MMU notifiers) happens without the memory lock,
    /// which the notifier takes; the page is mapped only if no
    /// invalidation of it started or ended meanwhile and the memslot is
    /// unchanged. Otherwise nothing is mapped, and the guest's access
    /// faults again.
    pub(crate) fn map_guest_page(&self, gpa: u64, write: bool) -> Result {
        let gfn = gpa >> 12;
        let (hva, writable, sequence) = {
            let mem = self.mem.lock();
            if mem.pinned.get(&gfn).is_some() {
                return Ok(());
            }
            let t = mem.slots.translate(0, gpa).ok_or(EFAULT)?;
            if write && !t.writable {
                return Err(EFAULT);
            }
            (t.hva & !0xfff, t.writable, mem.invalidations.sequence)
        };
        let page = PinnedUserPage::pin(hva as usize, writable)?;
        let mut mem = self.mem.lock();
        let unchanged = mem
            .slots
            .translate(0, gpa)
            .is_some_and(|t| t.hva & !0xfff == hva && t.writable == writable);
        if !unchanged || mem.invalidations.must_retry(hva, sequence) {
            return Ok(());
        }
        mem.map_pinned(gfn, page, writable)
    }

    /// The TSC offset every new vCPU starts with: the guest's TSC counts
    /// from 0 at the VM's creation, the same on every vCPU (KVM's
    /// `kvm_synchronize_tsc` at vCPU creation).
    pub(crate) fn initial_tsc_offset(&self) -> u64 {
        self.creation_tsc.wrapping_neg()
    }

    /// Drops the MMU notifier (and with it the reference it holds).
    pub(crate) fn stop_watching_vmm_memory(&self) {
        let notifier = self.memory_notifier.lock().take();
        drop(notifier);
    }

    /// Watches the VMM's address space (the creating process's) for
    /// changes to the pages the guest has mapped.
    pub(crate) fn watch_vmm_memory(self: &Arc<Self>) -> Result {
        let notifier = MmuNotifier::register_current(VmMemoryNotifier { vm: self.clone() })?;
        *self.memory_notifier.lock() = Some(notifier);
        Ok(())
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
        if let Some(chip) = self.irqchip.lock().as_mut() {
            // The TSC-deadline timer is offered (the supported CPUID lists
            // it with the LAPIC).
            chip.add_vcpu(id, true).map_err(kvm_error)?;
            if id != 0 {
                // An AP waits for INIT and SIPI.
                vcpu.set_mp_state(decode::MpState::Uninitialized)?;
            }
        }
        // Room first, so that the push after the file exists cannot fail:
        // a vCPU missing from the list could not be kicked.
        vcpus.reserve(1, GFP_KERNEL)?;
        let fd = anon_inode::new_fd(c_str!("kvm-vcpu"), &self.host.vcpu_fops, vcpu.clone())?;
        vcpus.push(vcpu, GFP_KERNEL)?;
        Ok(fd as isize)
    }
}

impl Vm {
    /// KVM_CREATE_IRQCHIP (api.rst 4.24): the LAPICs, IOAPIC and PIC, with
    /// KVM's default GSI routing; before any vCPU, once.
    fn create_irqchip(&self) -> Result<isize> {
        let vcpus = self.vcpus.lock();
        let mut irqchip = self.irqchip.lock();
        if irqchip.is_some() {
            return Err(EEXIST);
        }
        if !vcpus.is_empty() {
            return Err(EINVAL);
        }
        let mut chip = Irqchip::boxed()?;
        chip.set_default_routing();
        *irqchip = Some(chip);
        self.has_irqchip.store(true, Ordering::Release);
        Ok(0)
    }

    /// Runs `f` on the irqchip under its lock, then applies the effects
    /// it returns (after the unlock): ENXIO without an irqchip, as KVM.
    pub(crate) fn with_irqchip<T>(
        self: ArcBorrow<'_, Self>,
        f: impl FnOnce(&mut Irqchip) -> Result<(T, crate::irqchip::vm::Effects<MAX_VCPUS>)>,
    ) -> Result<T> {
        let (value, effects) = {
            let mut guard = self.irqchip.lock();
            let chip = guard.as_mut().ok_or(ENXIO)?;
            f(chip)?
        };
        self.apply_effects(&effects);
        Ok(value)
    }

    /// What an irqchip operation asked for: vCPUs to wake or kick out of
    /// the guest, and timers to arm or cancel.
    /// The kvmclock reference for a vCPU whose TSC offset is `tsc_offset`,
    /// with the wall clock now: the same instant (the VM's creation) for
    /// every vCPU, so that every vCPU's time area describes one clock
    /// and the stable bit holds. Without a stable TSC the bit is not set,
    /// and the guest keeps its readings monotonic itself.
    pub(crate) fn clock_reference(&self, tsc_offset: u64) -> pv::ClockReference {
        pv::ClockReference {
            guest_tsc: self.creation_tsc.wrapping_add(tsc_offset),
            kvmclock_ns: 0,
            tsc_khz: kernel::x86::tsc_khz(),
            tsc_stable: self.refresh_host_tsc_clock(),
            wall_clock_ns: kernel::x86::realtime_ns(),
        }
    }

    /// Whether the host's clocksource is the TSC, looked up again (the
    /// copy in `host_tsc_clock` serves the exits in between).
    fn refresh_host_tsc_clock(&self) -> bool {
        let tsc = kernel::x86::clocksource_is_tsc();
        self.host_tsc_clock.store(tsc, Ordering::Relaxed);
        tsc
    }

    /// kvmclock nanoseconds at host TSC `host_tsc`, as the guest computes
    /// them from its time area.
    pub(crate) fn kvmclock_ns(&self, host_tsc: u64) -> u64 {
        self.clock.nsec_at(host_tsc)
    }

    /// An irqchip event from any context (an irqfd's signal): wakes the
    /// halted vCPUs and sends one vCPU that is in the guest out of it, so
    /// that one of them takes the irqchip soon.
    pub(crate) fn notify_irqchip_event(&self) {
        self.halt_wait.notify_all();
        if let Some(cpu) = self
            .running_on
            .iter()
            .map(|cpu| cpu.load(Ordering::SeqCst))
            .find(|cpu| *cpu >= 0)
        {
            kernel::cpu::send_reschedule(cpu as u32);
        }
    }

    pub(crate) fn apply_effects(
        self: ArcBorrow<'_, Self>,
        effects: &crate::irqchip::vm::Effects<MAX_VCPUS>,
    ) {
        if effects.is_empty() {
            return;
        }
        // The vCPUs to act on, collected first: the list's lock is not
        // held while a vCPU's own locks are taken (the debugfs reader
        // takes them in the other order).
        let mut targets: KVec<(Arc<Vcpu>, Option<Option<u64>>, bool)> = KVec::new();
        {
            let vcpus = self.vcpus.lock();
            for vcpu in vcpus.iter() {
                let timer = effects.timer(TimerId::Lapic(vcpu.id));
                let kick = effects.kicks(vcpu.id as usize);
                if (timer.is_some() || kick)
                    && targets
                        .push((vcpu.clone(), timer, kick), GFP_KERNEL)
                        .is_err()
                {
                    pr_warn!(
                        "irqchip: no memory to deliver an event to vCPU {}\n",
                        vcpu.id
                    );
                }
            }
        }
        for (vcpu, timer, kick) in targets.iter() {
            if let Some(deadline) = timer {
                vcpu.set_lapic_timer(*deadline);
            }
            if *kick {
                vcpu.wake();
            }
        }
        if let Some(deadline) = effects.timer(TimerId::PitChannel0) {
            let mut handle = self.pit_handle.lock();
            // Dropping the old handle cancels the old expiry.
            *handle = None;
            if let Some(deadline) = deadline.filter(|_| !self.released.load(Ordering::Acquire)) {
                let vm: Arc<Vm> = self.into();
                *handle = Some(vm.start(Ktime::from_raw(deadline as i64)));
            }
        }
        if let Some(deadline) = effects.timer(TimerId::IoapicEoiInject) {
            self.ioapic_eoi_deadline
                .store(deadline.unwrap_or(0), Ordering::Release);
        }
    }

    /// KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS (api.rst 4.25, 4.64).
    fn irq_line(self: ArcBorrow<'_, Self>, arg: usize, with_status: bool) -> Result<isize> {
        let bytes: [u8; core::mem::size_of::<layout::kvm_irq_level>()] = read_user_bytes(arg)?;
        let line = crate::irqchip::routing::decode_irq_line(&bytes).map_err(kvm_error)?;
        let now = now_ns();
        let status = self.with_irqchip(|chip| Ok(chip.set_gsi(now, line.gsi, line.level)))?;
        if with_status {
            let mut out = layout::kvm_irq_level::ZERO;
            out.irq = status as u32;
            out.level = u32::from(line.level);
            write_user(arg, &out)?;
        }
        Ok(0)
    }

    /// KVM_SIGNAL_MSI (api.rst 4.71): 1 delivered, 0 blocked, as KVM.
    fn signal_msi(self: ArcBorrow<'_, Self>, arg: usize) -> Result<isize> {
        let msi: layout::kvm_msi = read_user(arg)?;
        // KVM: EINVAL for unknown flags and without an in-kernel irqchip.
        if msi.flags != 0 || !self.has_irqchip.load(Ordering::Acquire) {
            return Err(EINVAL);
        }
        let now = now_ns();
        let status = self.with_irqchip(|chip| {
            Ok(chip.signal_msi(now, msi.address_lo, msi.address_hi, msi.data))
        })?;
        Ok(status.max(0) as isize)
    }

    /// KVM_SET_GSI_ROUTING (api.rst 4.52): the whole table, checked by
    /// hv-core before anything changes.
    fn set_gsi_routing(&self, arg: usize) -> Result<isize> {
        let header = crate::user_copy::read_user_header(arg)?;
        let nr = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if nr > crate::kvm_api::constants::KVM_MAX_IRQ_ROUTES {
            return Err(EINVAL);
        }
        let entry_size = <layout::kvm_irq_routing_entry as Wire>::SIZE;
        let entries = crate::user_copy::read_user_entries(arg, header.len(), entry_size, nr)?;
        let mut bytes = KVec::with_capacity(header.len() + entries.len(), GFP_KERNEL)?;
        bytes.extend_from_slice(&header, GFP_KERNEL)?;
        bytes.extend_from_slice(&entries, GFP_KERNEL)?;
        let mut guard = self.irqchip.lock();
        let chip = guard.as_mut().ok_or(EINVAL)?;
        chip.set_routing(&bytes).map_err(kvm_error)?;
        Ok(0)
    }

    /// KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (api.rst 4.26, 4.27).
    fn irqchip_state(self: ArcBorrow<'_, Self>, arg: usize, write: bool) -> Result<isize> {
        let request: layout::kvm_irqchip = read_user(arg)?;
        if write {
            let now = now_ns();
            self.with_irqchip(|chip| {
                Ok(((), chip.set_irqchip(now, &request).map_err(kvm_error)?))
            })?;
            return Ok(0);
        }
        let state = {
            let guard = self.irqchip.lock();
            let chip = guard.as_ref().ok_or(ENXIO)?;
            chip.get_irqchip(request.chip_id).map_err(kvm_error)?
        };
        write_user(arg, &state)?;
        Ok(0)
    }

    /// KVM_CREATE_PIT2 (api.rst 4.71).
    fn create_pit2(&self, arg: usize) -> Result<isize> {
        let bytes: [u8; core::mem::size_of::<layout::kvm_pit_config>()] = read_user_bytes(arg)?;
        let config = decode::decode_pit_config(&bytes).map_err(kvm_error)?;
        let mut guard = self.irqchip.lock();
        let chip = guard.as_mut().ok_or(ENOENT)?;
        chip.create_pit(config, now_ns()).map_err(kvm_error)?;
        Ok(0)
    }

    /// KVM_GET_PIT2 / KVM_SET_PIT2 (api.rst 4.74, 4.75).
    fn pit_state(self: ArcBorrow<'_, Self>, arg: usize, write: bool) -> Result<isize> {
        if write {
            let state: crate::irqchip::pit::PitState2 = read_user(arg)?;
            let now = now_ns();
            self.with_irqchip(|chip| Ok(((), chip.set_pit2(now, &state).map_err(kvm_error)?)))?;
            return Ok(0);
        }
        let state = {
            let guard = self.irqchip.lock();
            let chip = guard.as_ref().ok_or(ENXIO)?;
            chip.get_pit2().map_err(kvm_error)?
        };
        write_user(arg, &state)?;
        Ok(0)
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
                let bytes: [u8; core::mem::size_of::<layout::kvm_enable_cap>()] =
                    read_user_bytes(arg)?;
                decode::decode_enable_cap(decode::CapTarget::Vm, &bytes).map_err(kvm_error)?;
                Err(EINVAL)
            }
            // New vCPUs' TSC runs at the host's rate (offset only).
            Ioctl::GetTscKhz => Ok(kernel::x86::tsc_khz() as isize),
            Ioctl::CreateIrqchip => vm.create_irqchip(),
            Ioctl::IrqLine => vm.irq_line(arg, false),
            Ioctl::IrqLineStatus => vm.irq_line(arg, true),
            Ioctl::SignalMsi => vm.signal_msi(arg),
            Ioctl::SetGsiRouting => vm.set_gsi_routing(arg),
            Ioctl::Irqfd => {
                let bytes: [u8; core::mem::size_of::<layout::kvm_irqfd>()] = read_user_bytes(arg)?;
                crate::irqfd::irqfd_ioctl(vm, &bytes)
            }
            Ioctl::GetIrqchip => vm.irqchip_state(arg, false),
            Ioctl::SetIrqchip => vm.irqchip_state(arg, true),
            Ioctl::CreatePit2 => vm.create_pit2(arg),
            Ioctl::GetPit2 => vm.pit_state(arg, false),
            Ioctl::SetPit2 => vm.pit_state(arg, true),
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
        // The armed PIT timer's handle holds the VM, and the VM holds its
        // vCPUs, which hold the VM: cancel the one and drop the others,
        // so that the VM goes once its vCPU files are closed too.
        vm.released.store(true, Ordering::Release);
        let pit = vm.pit_handle.lock().take();
        drop(pit);
        let vcpus = core::mem::take(&mut *vm.vcpus.lock());
        drop(vcpus);
        // Irqfds hold the VM too; dropping them leaves their eventfds'
        // wait queues.
        let irqfds = core::mem::take(&mut *vm.irqfds.lock());
        drop(irqfds);
        // And the MMU notifier: unregistering waits for its callbacks.
        vm.stop_watching_vmm_memory();
    }
}
