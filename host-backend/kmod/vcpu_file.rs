// SPDX-License-Identifier: GPL-2.0

//! A vCPU and its file (`anon_inode:kvm-vcpu`): the register ioctls, the
//! `kvm_run` page (mmap), and KVM_RUN (api.rst 4.10), the loop that enters
//! the guest with VMRUN and handles exits until one needs userspace.
//!
//! What an exit means is decided by hv-core (`vcpu::handle_exit`); this
//! file does what needs the kernel: the world switch with preemption off,
//! mapping guest pages on nested page faults, signals and rescheduling, and
//! copying the exit into the page the VMM mapped.

use crate::{
    irqchip::TimerId,
    kmem::{SvmVcpuBox, UserGuestMemory},
    kvm_api::wire::Wire,
    kvm_api::{self, decode, ioctl::Ioctl, layout, run},
    pv, regs, svm, svm_hw,
    user_copy::{read_user, read_user_bytes, read_user_entries, read_user_header, write_user},
    vcpu,
    vm_file::{classify_ioctl, kvm_error, now_ns, Vm, MAX_VCPUS},
};
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use kernel::{
    alloc::{flags, KBox, KVec},
    cpu,
    file_ops::FileOps,
    mm::virt::VmaNew,
    new_mutex, new_spinlock,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, CondVarTimeoutResult, Mutex, SpinLock},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerMode, HrTimerPointer, HrTimerRestart,
        },
        Ktime,
    },
    uaccess::UserSlice,
    x86::{read_xcr0, write_xcr0, GuestFpu},
};

/// The state of a vCPU that only its ioctls touch (KVM's `vcpu->mutex`).
struct VcpuInner {
    svm: SvmVcpuBox,
    /// hv-core's view: CPUID table, MSRs, the pending userspace
    /// completion, counters.
    state: KBox<vcpu::VcpuState>,
    /// The VM's TLB generation this vCPU last flushed for.
    seen_tlb_generation: u64,
    /// Private copies of the run and PIO pages: exits are written here,
    /// then copied out in one go; userspace's requests are copied in once
    /// and parsed from here, so a VMM changing the page meanwhile cannot
    /// make us read two different values.
    run_copy: KVec<u8>,
    pio_copy: KVec<u8>,
    /// The guest's x87/SSE/AVX state, the task's own while KVM_RUN runs.
    fpu: GuestFpu,
    /// KVM_RUN was called: the CPUID may no longer change (KVM refuses a
    /// different KVM_SET_CPUID2 after the first run).
    has_run: bool,
    /// The thread that last entered the guest and its run delay then
    /// (steal time is the growth of the run delay).
    last_run_delay: Option<(i32, u64)>,
    /// How long the next halt spins before it sleeps.
    halt_poll_ns: u64,
    /// Exits since the debugfs copy of the counters was refreshed.
    exits_since_snapshot: u32,
}

/// A vCPU.
#[pin_data]
pub(crate) struct Vcpu {
    pub(crate) vm: Arc<Vm>,
    pub(crate) id: u32,
    #[pin]
    inner: Mutex<VcpuInner>,
    /// Page 0 of the vCPU mmap: `struct kvm_run`.
    run_page: Page,
    /// Page 1 (KVM_PIO_PAGE_OFFSET): port I/O data.
    pio_page: Page,
    /// The LAPIC timer, and the handle that keeps it armed.
    #[pin]
    lapic_timer: HrTimer<Vcpu>,
    #[pin]
    lapic_handle: Mutex<Option<ArcHrTimerHandle<Vcpu>>>,
    /// Set by the LAPIC timer; the vCPU calls its LAPIC before entering.
    lapic_timer_fired: AtomicBool,
    /// Set by a kick: an event for this vCPU (ends a halt).
    wake_pending: AtomicBool,
    /// A copy of the exit counters for the debugfs reader, refreshed
    /// every `COUNTER_SNAPSHOT_EXITS` exits, before a halt and at each
    /// return to userspace: the live ones are under `inner`, which
    /// KVM_RUN holds for as long as it runs (a halt included).
    #[pin]
    counters_snapshot: SpinLock<vcpu::ExitCounters>,
}

/// Exits between two refreshes of `Vcpu::counters_snapshot`.
const COUNTER_SNAPSHOT_EXITS: u32 = 256;

kernel::impl_has_hr_timer! { impl HasHrTimer<Vcpu> for Vcpu { self.lapic_timer } }

impl HrTimerCallback for Vcpu {
    fn run(this: ArcBorrow<'_, Self>) -> HrTimerRestart {
        this.lapic_timer_fired.store(true, Ordering::Release);
        // Hard interrupt context: no lock. A halted vCPU wakes (a wakeup
        // lost between its check and its sleep costs at most its bounded
        // sleep); one in the guest on another CPU is sent out of it (on
        // this CPU, this interrupt already made it exit).
        this.vm.halt_wait.notify_all();
        this.send_out_of_guest();
        HrTimerRestart::NoRestart
    }
}

/// The longest a halted vCPU spins for an event before it sleeps (KVM's
/// default `halt_poll_ns` on x86), and the first spin after a halt that
/// a short spin would have caught.
const HALT_POLL_MAX_NS: u64 = 200_000;
const HALT_POLL_START_NS: u64 = 10_000;

/// The spin of the next halt after one that lasted `halt_ns` (KVM's
/// `grow_halt_poll_ns`/`shrink_halt_poll_ns`): a halt that slept but
/// ended within the maximum spin doubles it; one longer than that halves
/// it (below the start value: no spin).
fn next_halt_poll_ns(poll_ns: u64, halt_ns: u64, slept: bool) -> u64 {
    if !slept {
        poll_ns
    } else if halt_ns <= HALT_POLL_MAX_NS {
        (poll_ns * 2).clamp(HALT_POLL_START_NS, HALT_POLL_MAX_NS)
    } else if poll_ns / 2 < HALT_POLL_START_NS {
        0
    } else {
        poll_ns / 2
    }
}

/// The longest a halted vCPU sleeps before it looks again: bounds what a
/// wakeup from hard-interrupt context (which cannot take `halt_lock`) may
/// lose, and is when the IOAPIC's deferred EOI re-injection is checked.
const HALT_RECHECK_MS: u32 = 10;

/// CR4.OSXSAVE (SDM vol. 3, 2.5): XSETBV and XGETBV are enabled.
const CR4_OSXSAVE: u64 = 1 << 18;

/// The bytes of `struct kvm_run` this backend reads and writes: the
/// header and the 256-byte exit union (sync_regs are not supported).
const RUN_HEADER_BYTES: usize = 512;
// The exit union, then kvm_valid_regs and kvm_dirty_regs (8 bytes each).
const _: () = assert!(run::EXIT_UNION + run::EXIT_UNION_SIZE + 16 <= RUN_HEADER_BYTES);

fn zeroed_page() -> Result<Page> {
    Ok(Page::alloc_page(flags::GFP_KERNEL | flags::__GFP_ZERO)?)
}

fn zeroed_buffer() -> Result<KVec<u8>> {
    let mut v = KVec::with_capacity(PAGE_SIZE, flags::GFP_KERNEL)?;
    v.extend_with(PAGE_SIZE, 0, flags::GFP_KERNEL)?;
    Ok(v)
}

impl Vcpu {
    pub(crate) fn new(vm: Arc<Vm>, id: u32) -> Result<Arc<Self>> {
        let mut svm = SvmVcpuBox::new(svm_hw::svm_features(), vm.iopm.pa(), vm.nested_cr3)?;
        let mut state = crate::kmem::new_vcpu_state()?;
        // The guest's TSC counts from the VM's creation, on every vCPU.
        state.msrs.tsc_offset = vm.initial_tsc_offset();
        crate::vendor::VendorVcpu::set_tsc_offset(&mut *svm, vm.initial_tsc_offset());
        let inner = VcpuInner {
            svm,
            state,
            seen_tlb_generation: vm.tlb_generation.load(Ordering::SeqCst),
            run_copy: zeroed_buffer()?,
            pio_copy: zeroed_buffer()?,
            fpu: GuestFpu::new()?,
            has_run: false,
            last_run_delay: None,
            halt_poll_ns: 0,
            exits_since_snapshot: 0,
        };
        let run_page = zeroed_page()?;
        let pio_page = zeroed_page()?;
        Arc::pin_init(
            pin_init!(Self {
                vm,
                id,
                inner <- new_mutex!(inner),
                run_page,
                pio_page,
                lapic_timer <- HrTimer::new(HrTimerMode::Absolute),
                lapic_handle <- new_mutex!(None),
                lapic_timer_fired: AtomicBool::new(false),
                wake_pending: AtomicBool::new(false),
                counters_snapshot <- new_spinlock!(vcpu::ExitCounters::ZERO),
            }),
            GFP_KERNEL,
        )
    }

    /// What hv-core's exit handling knows of the host after an exit at
    /// host TSC `tsc` on `cpu`.
    fn host_state(&self, tsc: u64, cpu: u32) -> vcpu::HostState {
        vcpu::HostState {
            tsc,
            cpu,
            xcr0_mask: crate::system::guest_xcr0_mask(),
            kvmclock_ns: self.vm.kvmclock_ns(tsc),
            tsc_khz: kernel::x86::tsc_khz(),
            tsc_stable: self.vm.host_tsc_clock.load(Ordering::Relaxed),
            wall_clock_ns: kernel::x86::realtime_ns(),
        }
    }

    /// The host CPU this vCPU is in the guest on, or -1.
    fn running_on(&self) -> &AtomicI32 {
        &self.vm.running_on[self.id as usize]
    }

    /// Makes the vCPU leave the guest if it is in it, and returns once it
    /// has (the IPI is an INTR intercept there).
    pub(crate) fn kick(&self) {
        let cpu = self.running_on().load(Ordering::SeqCst);
        if cpu >= 0 {
            let _ = cpu::run_on(cpu as u32, &|| {});
        }
    }

    /// Makes the vCPU notice new irqchip events: wakes it from a halt, or
    /// sends it out of the guest (without waiting, unlike `kick`).
    pub(crate) fn wake(&self) {
        {
            let _guard = self.vm.halt_lock.lock();
            self.wake_pending.store(true, Ordering::Release);
        }
        self.vm.halt_wait.notify_all();
        self.send_out_of_guest();
    }

    /// If the vCPU is in the guest, sends its CPU a reschedule IPI (an
    /// INTR intercept there) without waiting. Any context.
    fn send_out_of_guest(&self) {
        let cpu = self.running_on().load(Ordering::SeqCst);
        if cpu >= 0 {
            cpu::send_reschedule(cpu as u32);
        }
    }

    /// Arms the LAPIC timer for `deadline` (ns of `now_ns`'s clock), or
    /// cancels it.
    pub(crate) fn set_lapic_timer(self: &Arc<Self>, deadline: Option<u64>) {
        let mut handle = self.lapic_handle.lock();
        // Dropping the old handle cancels the old expiry.
        *handle = None;
        if let Some(deadline) = deadline {
            *handle = Some(self.clone().start(Ktime::from_raw(deadline as i64)));
        }
    }

    /// KVM_CREATE_VCPU of an AP with an in-kernel irqchip: it waits for
    /// INIT and SIPI.
    pub(crate) fn set_mp_state(&self, mp_state: decode::MpState) -> Result {
        self.inner
            .lock()
            .state
            .set_mp_state(mp_state)
            .map_err(kvm_error)
    }

    /// Runs `f` on this vCPU's view of the in-kernel irqchip, first giving
    /// the irqchip the timers that fired, then applies the effects; `None`
    /// without an irqchip.
    fn with_irqchip<T>(
        &self,
        f: impl FnOnce(&mut crate::irqchip::vm::VcpuIrqchip<'_, MAX_VCPUS>) -> T,
    ) -> Option<T> {
        let now = now_ns();
        let (value, effects) = {
            let mut guard = self.vm.irqchip.lock();
            let chip = guard.as_mut()?;
            let mut effects = crate::irqchip::vm::Effects::NONE;
            if self.lapic_timer_fired.swap(false, Ordering::AcqRel) {
                effects.merge(&chip.timer_fired(now, TimerId::Lapic(self.id)));
            }
            if self.vm.pit_fired.swap(false, Ordering::AcqRel) {
                effects.merge(&chip.timer_fired(now, TimerId::PitChannel0));
            }
            self.vm.irqfd_pending.drain(|gsi| {
                // An irqfd pulses its GSI (KVM's `irqfd_inject`).
                effects.merge(&chip.set_gsi(now, gsi, true).1);
                effects.merge(&chip.set_gsi(now, gsi, false).1);
            });
            let eoi_deadline = self.vm.ioapic_eoi_deadline.load(Ordering::Acquire);
            if eoi_deadline != 0 && now >= eoi_deadline {
                self.vm.ioapic_eoi_deadline.store(0, Ordering::Release);
                effects.merge(&chip.timer_fired(now, TimerId::IoapicEoiInject));
            }
            let mut view = crate::irqchip::vm::VcpuIrqchip::new(
                chip,
                self.id as usize,
                now,
                kernel::x86::tsc_khz(),
            );
            let value = f(&mut view);
            effects.merge(&view.effects);
            (value, effects)
        };
        self.vm.as_arc_borrow().apply_effects(&effects);
        Some(value)
    }

    /// A halted vCPU (HLT, or an AP waiting for INIT/SIPI): sleeps until
    /// an event ends the halt (true) or a signal arrives (false).
    fn halt(&self, inner: &mut VcpuInner) -> bool {
        let start = now_ns();
        let mut polled = false;
        let mut slept = false;
        loop {
            let woken = self
                .with_irqchip(|view| vcpu::wakeup_pending(&*inner.svm, &inner.state, view))
                .unwrap_or(true);
            if woken {
                inner.halt_poll_ns =
                    next_halt_poll_ns(inner.halt_poll_ns, now_ns().saturating_sub(start), slept);
                return true;
            }
            if kernel::current!().signal_pending() {
                return false;
            }
            if !polled && inner.halt_poll_ns > 0 {
                // Spin first (KVM's halt polling): most halts of a busy
                // guest end within microseconds, and a wake-up from sleep
                // costs a scheduler round trip.
                polled = true;
                let deadline = now_ns().saturating_add(inner.halt_poll_ns);
                while !self.event_flagged() && !cpu::should_stop_spinning() && now_ns() < deadline {
                    core::hint::spin_loop();
                }
                continue;
            }
            let mut guard = self.vm.halt_lock.lock();
            if self.wake_pending.swap(false, Ordering::AcqRel) || self.event_flagged() {
                continue;
            }
            slept = true;
            let waited = self.vm.halt_wait.wait_interruptible_timeout(
                &mut guard,
                kernel::time::msecs_to_jiffies(HALT_RECHECK_MS),
            );
            drop(guard);
            if matches!(waited, CondVarTimeoutResult::Timeout) {
                self.recover_overdue_lapic_timer();
            }
        }
    }

    /// After a halt recheck period with no wake-up: a LAPIC timer whose
    /// deadline passed without its hrtimer firing is delivered now
    /// instead of stopping the vCPU for good, and logged. (Seen about once
    /// in ten 2-vCPU hackbench boots before this existed: both vCPUs
    /// halted with no exits at all for 100 s; the cause of the lost
    /// expiry is not found yet.)
    fn recover_overdue_lapic_timer(&self) {
        if self.lapic_timer_fired.load(Ordering::Acquire) {
            // The expiry was seen; only its wake-up was lost (it came
            // between the check of the flags and the sleep: the hrtimer's
            // hard-interrupt callback cannot take `halt_lock`). Counted.
            self.vm.lost_timer_wakeups.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = now_ns();
        let overdue = self
            .vm
            .irqchip
            .lock()
            .as_mut()
            .is_some_and(|chip| chip.lapic_timer_overdue(self.id as usize, now));
        if overdue {
            self.vm.lost_timer_expiries.fetch_add(1, Ordering::Relaxed);
            pr_warn!(
                "vCPU {}: LAPIC timer overdue with no expiry seen; delivering it\n",
                self.id
            );
            self.lapic_timer_fired.store(true, Ordering::Release);
        }
    }

    /// Whether something may have ended a halt: a kick, a timer, an irqfd.
    fn event_flagged(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire)
            || self.lapic_timer_fired.load(Ordering::Acquire)
            || self.vm.pit_fired.load(Ordering::Acquire)
            || self.vm.irqfd_pending.any()
    }

    /// Copies the part of the run page KVM_RUN reads (the header and the
    /// exit union), and the PIO page when an IN waits for its data. Whole
    /// pages would cost two 4 KiB copies per round trip, which doubled the
    /// cost of a port-I/O exit to userspace on the nested host.
    fn copy_run_page_in(&self, inner: &mut VcpuInner) -> Result {
        // SAFETY: The buffer holds PAGE_SIZE bytes; the page is ours. The
        // VMM may write the page concurrently: the copy is a snapshot of
        // untrusted bytes, parsed afterwards from the private buffer.
        unsafe {
            self.run_page
                .read_raw(inner.run_copy.as_mut_ptr(), 0, RUN_HEADER_BYTES)
        }?;
        if inner.state.has_pending_completion() {
            // SAFETY: As above.
            unsafe {
                self.pio_page
                    .read_raw(inner.pio_copy.as_mut_ptr(), 0, PAGE_SIZE)
            }?;
        }
        Ok(())
    }

    /// Copies the run page's header and exit union out, and the first
    /// `pio_bytes` of the PIO page (the data of an I/O exit: usually 1 to
    /// 4 bytes, at most a page for string I/O).
    fn copy_run_page_out(&self, inner: &VcpuInner, pio_bytes: usize) -> Result {
        // SAFETY: The buffer holds PAGE_SIZE bytes; the page is ours (the
        // VMM reads it after KVM_RUN returns).
        unsafe {
            self.run_page
                .write_raw(inner.run_copy.as_ptr(), 0, RUN_HEADER_BYTES)
        }?;
        let pio_bytes = pio_bytes.min(PAGE_SIZE);
        if pio_bytes > 0 {
            // SAFETY: As above; `pio_bytes` is at most a page.
            unsafe {
                self.pio_page
                    .write_raw(inner.pio_copy.as_ptr(), 0, pio_bytes)
            }?;
        }
        Ok(())
    }

    /// KVM_RUN, with the guest's FPU state loaded for its whole duration
    /// (as KVM's `kvm_load_guest_fpu`/`kvm_put_guest_fpu`).
    fn run(&self) -> Result<isize> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.has_run = true;
        inner.fpu.load()?;
        let result = self.run_loaded(inner);
        inner.fpu.put();
        result
    }

    fn run_loaded(&self, inner: &mut VcpuInner) -> Result<isize> {
        self.copy_run_page_in(inner)?;
        let request = run::read_run_request(&inner.run_copy, 0, false).map_err(kvm_error)?;
        inner.state.begin_run(&request);
        // Finish what userspace handled (IN data, an MMIO read), even with
        // immediate_exit, so that nothing is lost.
        let mut step = {
            let mut guest = UserGuestMemory { mem: &self.vm.mem };
            vcpu::complete_user_exit(
                &mut *inner.svm,
                &mut inner.state,
                &mut guest,
                &self.vm.mem,
                &inner.run_copy,
                &inner.pio_copy,
            )
            .map_err(|_| EINVAL)?
        };
        if request.immediate_exit && matches!(step, vcpu::Step::Resume) {
            // As KVM: EINTR, with the run page's exit reason left alone.
            return Err(EINTR);
        }
        loop {
            inner.exits_since_snapshot += 1;
            if inner.exits_since_snapshot >= COUNTER_SNAPSHOT_EXITS
                || matches!(step, vcpu::Step::Halt | vcpu::Step::ToUser(_))
            {
                self.publish_counters(inner);
            }
            match step {
                vcpu::Step::Resume => {}
                vcpu::Step::Halt => {
                    if !self.halt(inner) {
                        self.exit_interrupted(inner)?;
                        return Err(EINTR);
                    }
                }
                vcpu::Step::MapPage { gpa, write } => {
                    if let Err(e) = self.vm.map_guest_page(gpa, write) {
                        pr_warn!(
                            "vCPU {}: cannot map guest page {:#x}: {:?}\n",
                            self.id,
                            gpa,
                            e
                        );
                        return Err(EFAULT);
                    }
                }
                vcpu::Step::ToUser(exit) => {
                    self.exit_to_user(inner, &exit)?;
                    return Ok(0);
                }
            }
            if kernel::current!().signal_pending() {
                self.exit_interrupted(inner)?;
                return Err(EINTR);
            }
            cpu::cond_resched();
            if self.vm.has_irqchip.load(Ordering::Acquire) {
                // Events first (re-injection, NMI, the next interrupt or
                // a window); an AP waiting for SIPI or a HLT with nothing
                // to deliver halts here.
                let injected = self.with_irqchip(|view| {
                    vcpu::inject_pending_events(&mut *inner.svm, &mut inner.state, view)
                });
                if let Some(vcpu::Step::Halt) = injected {
                    step = vcpu::Step::Halt;
                    continue;
                }
            }
            self.update_pv_areas(inner);
            let host = self.enter_guest(inner);
            let with_chip = if self.vm.has_irqchip.load(Ordering::Acquire) {
                self.with_irqchip(|view| {
                    let mut guest = UserGuestMemory { mem: &self.vm.mem };
                    vcpu::handle_exit_with_irqchip(
                        &mut *inner.svm,
                        &mut inner.state,
                        &mut guest,
                        &self.vm.mem,
                        host,
                        view,
                    )
                })
            } else {
                None
            };
            step = match with_chip {
                Some(step) => step,
                None => {
                    let mut guest = UserGuestMemory { mem: &self.vm.mem };
                    vcpu::handle_exit(
                        &mut *inner.svm,
                        &mut inner.state,
                        &mut guest,
                        &self.vm.mem,
                        host,
                    )
                }
            };
        }
    }

    /// Publishes the kvmclock area when the guest (re)enabled it, and
    /// adds the time the vCPU thread waited for a host CPU since the last
    /// entry to the steal-time area (hv-core `pv::before_entry`). Every
    /// vCPU publishes the VM's one clock reference, so a move to another
    /// host CPU needs no update. In thread context, before preemption is
    /// turned off: the guest's page may have to be faulted in.
    fn update_pv_areas(&self, inner: &mut VcpuInner) {
        let now = (kernel::current!().pid(), cpu::current_run_delay_ns());
        // The counter is per thread: after KVM_RUN from another thread
        // the difference is not this vCPU's steal, and counting restarts.
        let steal = match inner.last_run_delay.replace(now) {
            Some((thread, last)) if thread == now.0 && inner.state.pv.steal_time_enabled() => {
                now.1.saturating_sub(last)
            }
            _ => 0,
        };
        if steal == 0 && !inner.state.pv.entry_work_pending() {
            return;
        }
        let reference = self.vm.clock_reference(inner.state.msrs.tsc_offset);
        let mut guest = UserGuestMemory { mem: &self.vm.mem };
        let outcome = pv::before_entry(&mut inner.state.pv, &mut guest, &reference, steal, false);
        if outcome.flush_tlb {
            crate::vendor::VendorVcpu::request_tlb_flush(&mut *inner.svm);
        }
    }

    /// One VMRUN, with preemption off from the ASID choice to the exit.
    fn enter_guest(&self, inner: &mut VcpuInner) -> vcpu::HostState {
        let guard = cpu::PreemptGuard::new();
        let cpu = guard.cpu();
        let host = &self.vm.host;
        let Some(host_vmsave) = host.cpu_pages.host_vmsave_pa(cpu) else {
            return self.host_state(0, cpu);
        };
        vcpu::prepare_entry(&mut *inner.svm, &inner.state);
        // Publish where we run before reading the TLB generation: a zapper
        // bumps the generation before reading `running_on`, so either it
        // kicks us or we see its generation (both are SeqCst).
        self.running_on().store(cpu as i32, Ordering::SeqCst);
        let generation = self.vm.tlb_generation.load(Ordering::SeqCst);
        if generation != inner.seen_tlb_generation {
            inner.seen_tlb_generation = generation;
            <svm::SvmVcpu as crate::vendor::VendorVcpu>::request_tlb_flush(&mut inner.svm);
        }
        if let Some(asids) = host.cpu_asids.get(cpu as usize) {
            inner.svm.prepare_entry(&mut asids.lock(), cpu);
        }
        let vmcb_pa = inner.svm.vmcb_pa();
        // As KVM (`kvm_load_guest_xsave_state`): the guest's XCR0 only
        // matters once it has set CR4.OSXSAVE; before that it cannot run
        // XSETBV (#UD), and XSETBV is slow enough on the nested host to
        // double the cost of an exit.
        let guest_xsave = crate::vendor::VendorVcpu::cr4(&*inner.svm) & CR4_OSXSAVE != 0;
        let host_xcr0 = read_xcr0();
        let guest_xcr0 = inner.state.xcr0();
        if guest_xsave && guest_xcr0 != host_xcr0 {
            // SAFETY: hv-core accepted the value (XSETBV exit or
            // KVM_SET_XCRS) only if it is a subset of the host's own
            // XCR0 with valid combinations; it is replaced right after
            // the exit, with preemption off, before any FPU use.
            unsafe { write_xcr0(guest_xcr0) };
        }
        // SAFETY: The VMCB was reset by hv-core and only changed through
        // its checked interfaces; its NPT maps only pinned pages of the
        // VM's memslots; SVM is on on this CPU (the module keeps it on
        // while loaded) and `host_vmsave` is this CPU's area; preemption
        // is off, so we stay on this CPU.
        unsafe { svm_hw::run_guest(vmcb_pa, &mut inner.svm.gprs, host_vmsave) };
        let tsc = kernel::x86::rdtsc_ordered();
        if guest_xsave && guest_xcr0 != host_xcr0 {
            // SAFETY: The host's own value, read above on this CPU.
            unsafe { write_xcr0(host_xcr0) };
        }
        self.running_on().store(-1, Ordering::SeqCst);
        inner.svm.complete_exit();
        drop(guard);
        self.host_state(tsc, cpu)
    }

    /// KVM_EXIT_INTR: KVM_RUN returns EINTR for a signal (or
    /// `immediate_exit`), with the guest state complete.
    fn exit_interrupted(&self, inner: &mut VcpuInner) -> Result {
        let state = vcpu::exit_state(&*inner.svm, &inner.state);
        run::write_exit(
            &mut inner.run_copy,
            &mut inner.pio_copy,
            &state,
            &run::Exit::Intr,
        )
        .map_err(kvm_error)?;
        self.copy_run_page_out(inner, 0)
    }

    fn exit_to_user(&self, inner: &mut VcpuInner, exit: &vcpu::UserExit) -> Result {
        vcpu::write_user_exit(
            &*inner.svm,
            &inner.state,
            exit,
            &mut inner.run_copy,
            &mut inner.pio_copy,
        )
        .map_err(|_| EINVAL)?;
        let pio_bytes = match exit {
            // An IN's data page is cleared for userspace to fill, an OUT's
            // holds the data: either way `size * count` bytes.
            vcpu::UserExit::Io { size, count, .. } => usize::from(*size) * (*count as usize),
            _ => 0,
        };
        self.copy_run_page_out(inner, pio_bytes)
    }
}

impl Vcpu {
    /// KVM_GET_CPUID2: the table KVM_SET_CPUID2 set (E2BIG if `nent` is
    /// too small, with nothing written, as in KVM).
    fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let header_bytes = read_user_header(arg)?;
        let room = decode::decode_cpuid2_header(decode::CpuidCall::GetVcpu, &header_bytes)
            .map_err(kvm_error)?;
        let inner = self.inner.lock();
        let mut entries =
            KVec::with_capacity(inner.state.cpuid().entries().len(), flags::GFP_KERNEL)?;
        for entry in inner.state.cpuid().entries() {
            entries.push(*entry, flags::GFP_KERNEL)?;
        }
        drop(inner);
        crate::system::write_cpuid2(arg, room, &entries)
    }

    /// KVM_SET_CPUID2 (api.rst 4.73): the guest's CPUID table.
    fn set_cpuid2(&self, arg: usize) -> Result<isize> {
        let header_bytes = read_user_header(arg)?;
        let nent = decode::decode_cpuid2_header(decode::CpuidCall::Set, &header_bytes)
            .map_err(kvm_error)?;
        let entry_size = <layout::kvm_cpuid_entry2 as kvm_api::wire::Wire>::SIZE;
        let bytes = read_user_entries(arg, header_bytes.len(), entry_size, nent)?;
        let mut entries = KVec::with_capacity(nent as usize, flags::GFP_KERNEL)?;
        for entry in decode::entries::<layout::kvm_cpuid_entry2>(&bytes, nent).map_err(kvm_error)? {
            entries.push(crate::cpuid::CpuidEntry::from(&entry), flags::GFP_KERNEL)?;
        }
        let mut inner = self.inner.lock();
        if inner.has_run {
            // `kvm_cpuid_check_equal`: after KVM_RUN only the same table
            // is accepted (and changes nothing).
            return if inner.state.cpuid().entries() == &entries[..] {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        inner.state.set_cpuid(&entries).map_err(|_| E2BIG)?;
        // The LAPIC's timer modes follow the CPUID (KVM's
        // `kvm_apic_set_version` / `timer_mode_mask`).
        let tsc_deadline = inner
            .state
            .cpuid()
            .find(1, None)
            .is_some_and(|leaf| leaf.ecx & (1 << 24) != 0);
        if let Some(chip) = self.vm.irqchip.lock().as_mut() {
            chip.set_tsc_deadline_supported(self.id as usize, tsc_deadline);
        }
        Ok(0)
    }

    /// Writes this vCPU's non-zero exit counters as `vcpuN group.name=value`
    /// lines (debugfs `exits`).
    pub(crate) fn show_counters(&self, out: &mut kernel::debugfs::TextBuffer) -> Result {
        use core::fmt::Write;
        let counters = *self.counters_snapshot.lock();
        let mut result = Ok(());
        counters.for_each(|group, name, value| {
            if value != 0 && result.is_ok() {
                result = writeln!(out, "vcpu{} {group}.{name}={value}", self.id);
            }
        });
        result.map_err(|_| ENOMEM)
    }

    /// Refreshes the debugfs copy of the exit counters.
    fn publish_counters(&self, inner: &mut VcpuInner) {
        inner.exits_since_snapshot = 0;
        *self.counters_snapshot.lock() = *inner.state.counters();
    }

    /// KVM_GET_FPU / KVM_SET_FPU (api.rst 4.22, 4.23): the x87 and SSE
    /// part of the guest's XSAVE state, converted by hv-core.
    fn fpu(&self, arg: usize, write: bool) -> Result<isize> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let size = inner.fpu.uabi_size();
        let mut xsave = KVec::with_capacity(size, flags::GFP_KERNEL)?;
        xsave.extend_with(size, 0, flags::GFP_KERNEL)?;
        let xcr0 = read_xcr0();
        inner.fpu.to_uabi(&mut xsave, xcr0)?;
        if write {
            let fpu: layout::kvm_fpu = read_user(arg)?;
            if !regs::fpu_into_xsave(&fpu, &mut xsave) {
                return Err(EINVAL);
            }
            inner.fpu.from_uabi(&xsave, xcr0)?;
            Ok(0)
        } else {
            let fpu = regs::fpu_from_xsave(&xsave).ok_or(EINVAL)?;
            drop(guard);
            write_user(arg, &fpu).map(|()| 0)
        }
    }

    /// KVM_GET_MSRS / KVM_SET_MSRS (api.rst 4.18, 4.19): returns how many
    /// entries were processed, stopping at the first MSR refused, as KVM
    /// does; for GET the entries are written back.
    fn msrs(&self, arg: usize, write: bool) -> Result<isize> {
        let header_bytes = read_user_header(arg)?;
        let n = decode::decode_msrs_header(&header_bytes).map_err(kvm_error)?;
        let entry_size = <layout::kvm_msr_entry as kvm_api::wire::Wire>::SIZE;
        let mut bytes = read_user_entries(arg, header_bytes.len(), entry_size, n)?;
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let tsc = kernel::x86::rdtsc_ordered();
        let mut done = 0usize;
        for i in 0..n as usize {
            let slot = &mut bytes[i * entry_size..(i + 1) * entry_size];
            let mut entry: layout::kvm_msr_entry = decode::decode(slot).map_err(kvm_error)?;
            let irqchip = self.vm.has_irqchip.load(Ordering::Acquire);
            let in_irqchip = irqchip
                && (entry.index == crate::msr::MSR_IA32_APICBASE
                    || crate::irqchip::vm::is_irqchip_msr(entry.index));
            // Each kind of MSR answers with the value read or written.
            let result = if in_irqchip {
                // The LAPIC's MSRs (APIC_BASE, whose authoritative copy is
                // the LAPIC's, x2APIC and TSC_DEADLINE), as a VMM saves and
                // restores them.
                let features = inner.state.msr_features(&*inner.svm);
                let guest_tsc = tsc.wrapping_add(inner.state.msrs.tsc_offset);
                self.with_irqchip(|view| {
                    use crate::vcpu::InKernelIrqchip;
                    if entry.index == crate::msr::MSR_IA32_APICBASE {
                        if write {
                            vcpu::write_apic_base(
                                &mut inner.state,
                                &features,
                                view,
                                entry.data,
                                crate::msr::MsrOrigin::Host,
                            )
                            .map(|()| entry.data)
                        } else {
                            Ok(view.apic_base())
                        }
                    } else if write {
                        view.msr_write(entry.index, entry.data, guest_tsc)
                            .map(|()| entry.data)
                    } else {
                        view.msr_read(entry.index)
                    }
                })
                .unwrap_or(Err(crate::msr::MsrError::Unknown(entry.index)))
            } else if crate::pv::is_pv_msr(entry.index) {
                // kvmclock and the other paravirtual MSRs, as a VMM saves
                // and restores them (a write may publish the wall clock).
                if write {
                    let reference = pv::ClockReference {
                        kvmclock_ns: self.vm.kvmclock_ns(tsc),
                        ..self.vm.clock_reference(inner.state.msrs.tsc_offset)
                    };
                    let mut guest = UserGuestMemory { mem: &self.vm.mem };
                    pv::write_msr(
                        &mut inner.state.pv,
                        &mut guest,
                        entry.index,
                        entry.data,
                        &reference,
                        crate::msr::MsrOrigin::Host,
                    )
                    .map(|()| entry.data)
                } else {
                    pv::read_msr(&inner.state.pv, entry.index)
                }
            } else if write {
                let features = inner.state.msr_features(&*inner.svm);
                crate::msr::write_msr(
                    &mut *inner.svm,
                    &mut inner.state.msrs,
                    &features,
                    entry.index,
                    entry.data,
                    tsc,
                    crate::msr::MsrOrigin::Host,
                )
                .map(|()| entry.data)
            } else {
                crate::msr::read_msr(&*inner.svm, &inner.state.msrs, entry.index, tsc)
            };
            let Ok(value) = result else {
                break;
            };
            if !write {
                entry.data = value;
                decode::encode(&entry, slot).map_err(kvm_error)?;
            }
            done += 1;
        }
        drop(guard);
        if !write {
            let start = arg.checked_add(header_bytes.len()).ok_or(EFAULT)?;
            UserSlice::new(start, bytes.len())
                .writer()
                .write_slice(&bytes)?;
        }
        Ok(done as isize)
    }
}

/// A vCPU file (`anon_inode:kvm-vcpu`).
pub(crate) struct VcpuFile;

#[vtable]
impl FileOps for VcpuFile {
    type Ptr = Arc<Vcpu>;

    fn ioctl(vcpu: ArcBorrow<'_, Vcpu>, cmd: u32, arg: usize) -> Result<isize> {
        match classify_ioctl(kvm_api::ioctl::FdKind::Vcpu, cmd, arg)? {
            Ioctl::Run => vcpu.run(),
            Ioctl::GetRegs => {
                let regs = regs::get_regs(&*vcpu.inner.lock().svm);
                write_user(arg, &regs).map(|()| 0)
            }
            Ioctl::SetRegs => {
                let new: layout::kvm_regs = read_user(arg)?;
                regs::set_regs(&mut *vcpu.inner.lock().svm, &new);
                Ok(0)
            }
            Ioctl::GetSregs => {
                let inner = vcpu.inner.lock();
                let sregs = regs::get_sregs(&*inner.svm, inner.state.msrs.apic_base);
                write_user(arg, &sregs).map(|()| 0)
            }
            Ioctl::SetSregs => {
                let new: layout::kvm_sregs = read_user(arg)?;
                let mut inner = vcpu.inner.lock();
                let mut limits = inner.state.sregs_limits();
                limits.cr4_reserved |= vcpu.vm.host.cr4_reserved;
                // The APIC base is checked as a host-initiated WRMSR would
                // be (`kvm_apic_set_base` in `__set_sregs_common`).
                let features = inner.state.msr_features(&*inner.svm);
                crate::msr::validate_apic_base_write(
                    inner.state.msrs.apic_base,
                    new.apic_base,
                    &features,
                    crate::msr::MsrOrigin::Host,
                )
                .map_err(|_| EINVAL)?;
                regs::set_sregs(&mut *inner.svm, &new, &limits)
                    .map_err(|e| Error::from_errno(-e.errno()))?;
                if vcpu.vm.has_irqchip.load(Ordering::Acquire) {
                    // The LAPIC holds the authoritative copy.
                    let inner = &mut *inner;
                    let written = vcpu.with_irqchip(|view| {
                        vcpu::write_apic_base(
                            &mut inner.state,
                            &features,
                            view,
                            new.apic_base,
                            crate::msr::MsrOrigin::Host,
                        )
                    });
                    if !matches!(written, Some(Ok(()))) {
                        return Err(EINVAL);
                    }
                } else {
                    inner.state.msrs.apic_base = new.apic_base;
                }
                <svm::SvmVcpu as crate::vendor::VendorVcpu>::request_tlb_flush(&mut inner.svm);
                Ok(0)
            }
            Ioctl::SetCpuid2 => vcpu.set_cpuid2(arg),
            Ioctl::GetFpu => vcpu.fpu(arg, false),
            Ioctl::SetFpu => vcpu.fpu(arg, true),
            Ioctl::GetMsrs => vcpu.msrs(arg, false),
            Ioctl::SetMsrs => vcpu.msrs(arg, true),
            Ioctl::GetCpuid2 => vcpu.get_cpuid2(arg),
            Ioctl::GetXcrs => {
                let xcr0 = vcpu.inner.lock().state.xcr0();
                let mut xcrs = layout::kvm_xcrs::ZERO;
                xcrs.nr_xcrs = 1;
                xcrs.xcrs[0] = layout::kvm_xcr {
                    xcr: 0,
                    reserved: 0,
                    value: xcr0,
                };
                write_user(arg, &xcrs).map(|()| 0)
            }
            Ioctl::SetXcrs => {
                let bytes: [u8; layout::kvm_xcrs::SIZE] = read_user_bytes(arg)?;
                let mut inner = vcpu.inner.lock();
                // The states the guest's CPUID leaf 0xD lists, of those
                // this host lets a guest have (`guest_supported_xcr0`).
                let supported = inner.state.supported_xcr0(crate::system::guest_xcr0_mask());
                if let Some(xcr0) = decode::decode_xcrs(&bytes, supported).map_err(kvm_error)? {
                    inner.state.set_xcr0(xcr0);
                }
                Ok(0)
            }
            // Without the in-kernel LAPIC a vCPU is always runnable (HLT
            // is an exit to userspace, there is no INIT/SIPI); with it,
            // hv-core keeps the state.
            Ioctl::GetMpState => {
                let mp_state = vcpu.inner.lock().state.mp_state();
                let state = layout::kvm_mp_state {
                    mp_state: mp_state.to_raw(),
                };
                write_user(arg, &state).map(|()| 0)
            }
            Ioctl::SetMpState => {
                let bytes: [u8; layout::kvm_mp_state::SIZE] = read_user_bytes(arg)?;
                let lapic = vcpu.vm.has_irqchip.load(Ordering::Acquire);
                let mp_state = decode::decode_mp_state(&bytes, lapic).map_err(kvm_error)?;
                vcpu.set_mp_state(mp_state)?;
                Ok(0)
            }
            Ioctl::GetLapic => {
                let now = now_ns();
                let regs = {
                    let guard = vcpu.vm.irqchip.lock();
                    // KVM: EINVAL without an in-kernel LAPIC.
                    let chip = guard.as_ref().ok_or(EINVAL)?;
                    chip.get_lapic(vcpu.id as usize, now).map_err(kvm_error)?
                };
                crate::user_copy::write_user_bytes(arg, &regs)?;
                Ok(0)
            }
            Ioctl::SetLapic => {
                let regs: [u8; crate::irqchip::lapic::KVM_APIC_REG_SIZE] = read_user_bytes(arg)?;
                let now = now_ns();
                let effects = {
                    let mut guard = vcpu.vm.irqchip.lock();
                    let chip = guard.as_mut().ok_or(EINVAL)?;
                    chip.set_lapic(vcpu.id as usize, now, &regs)
                        .map_err(kvm_error)?
                };
                vcpu.vm.as_arc_borrow().apply_effects(&effects);
                let mut inner = vcpu.inner.lock();
                if let Some(base) = vcpu
                    .vm
                    .irqchip
                    .lock()
                    .as_ref()
                    .and_then(|c| c.apic_base(vcpu.id as usize))
                {
                    inner.state.msrs.apic_base = base;
                }
                Ok(0)
            }
            // The guest's TSC runs at the host's rate (offset only).
            Ioctl::GetTscKhz => Ok(kernel::x86::tsc_khz() as isize),
            _ => Err(EINVAL),
        }
    }

    fn release(vcpu: Arc<Vcpu>) {
        // An armed LAPIC timer's handle holds the vCPU: cancel it, so that
        // the vCPU (and its VM) can go.
        let handle = vcpu.lapic_handle.lock().take();
        drop(handle);
    }

    fn mmap(vcpu: ArcBorrow<'_, Vcpu>, vma: &VmaNew) -> Result {
        // The run page at offset 0 and the PIO page after it, and nothing
        // else (KVM_GET_VCPU_MMAP_SIZE says two pages).
        let pages = [&vcpu.run_page, &vcpu.pio_page];
        let len = vma.end() - vma.start();
        let first = vma.pgoff();
        if len % PAGE_SIZE != 0 || first + len / PAGE_SIZE > pages.len() {
            return Err(EINVAL);
        }
        let mixed = vma.set_mixedmap();
        for i in 0..len / PAGE_SIZE {
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, pages[first + i])?;
        }
        Ok(())
    }
}
