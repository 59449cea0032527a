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
    kmem::{SvmVcpuBox, UserGuestMemory},
    kvm_api::{self, decode, ioctl::Ioctl, layout, run},
    regs, svm, svm_hw, vcpu,
    vm_file::{kvm_error, Vm},
};
use core::sync::atomic::{AtomicI32, Ordering};
use kernel::{
    alloc::{flags, KBox, KVec},
    cpu,
    file_ops::FileOps,
    mm::virt::VmaNew,
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSlice,
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
}

/// A vCPU.
#[pin_data]
pub(crate) struct Vcpu {
    pub(crate) vm: Arc<Vm>,
    pub(crate) id: u32,
    #[pin]
    inner: Mutex<VcpuInner>,
    /// The CPU this vCPU is in the guest on, or -1 (see `kick`).
    running_on: AtomicI32,
    /// Page 0 of the vCPU mmap: `struct kvm_run`.
    run_page: Page,
    /// Page 1 (KVM_PIO_PAGE_OFFSET): port I/O data.
    pio_page: Page,
}

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
        let svm = SvmVcpuBox::new(svm::SvmFeatures::TCG, vm.iopm.pa(), vm.nested_cr3)?;
        let inner = VcpuInner {
            svm,
            state: crate::kmem::new_vcpu_state()?,
            seen_tlb_generation: vm.tlb_generation.load(Ordering::SeqCst),
            run_copy: zeroed_buffer()?,
            pio_copy: zeroed_buffer()?,
        };
        let run_page = zeroed_page()?;
        let pio_page = zeroed_page()?;
        Arc::pin_init(
            pin_init!(Self {
                vm,
                id,
                inner <- new_mutex!(inner),
                running_on: AtomicI32::new(-1),
                run_page,
                pio_page,
            }),
            GFP_KERNEL,
        )
    }

    /// Makes the vCPU leave the guest if it is in it, and returns once it
    /// has (the IPI is an INTR intercept there).
    pub(crate) fn kick(&self) {
        let cpu = self.running_on.load(Ordering::SeqCst);
        if cpu >= 0 {
            let _ = cpu::run_on(cpu as u32, &|| {});
        }
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

    fn copy_run_page_out(&self, inner: &VcpuInner, with_pio: bool) -> Result {
        // SAFETY: The buffer holds PAGE_SIZE bytes; the page is ours (the
        // VMM reads it after KVM_RUN returns).
        unsafe {
            self.run_page
                .write_raw(inner.run_copy.as_ptr(), 0, RUN_HEADER_BYTES)
        }?;
        if with_pio {
            // SAFETY: As above.
            unsafe {
                self.pio_page
                    .write_raw(inner.pio_copy.as_ptr(), 0, PAGE_SIZE)
            }?;
        }
        Ok(())
    }

    /// KVM_RUN.
    fn run(&self) -> Result<isize> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        self.copy_run_page_in(inner)?;
        let request = run::read_run_request(&inner.run_copy, 0, false).map_err(kvm_error)?;
        inner.state.begin_run(&request);
        // Finish what userspace handled (IN data, an MMIO read), even with
        // immediate_exit, so that nothing is lost.
        let mut step = {
            let mem = self.vm.mem.lock();
            let translate = |gpa: u64, write: bool| mem.hva(gpa, write);
            let mut guest = UserGuestMemory {
                translate: &translate,
            };
            vcpu::complete_user_exit(
                &mut *inner.svm,
                &mut inner.state,
                &mut guest,
                &*mem,
                &inner.run_copy,
                &inner.pio_copy,
            )
            .map_err(|_| EINVAL)?
        };
        if request.immediate_exit && matches!(step, vcpu::Step::Resume) {
            self.exit_interrupted(inner)?;
            return Err(EINTR);
        }
        loop {
            match step {
                vcpu::Step::Resume => {}
                vcpu::Step::MapPage { gpa, write } => {
                    if let Err(e) = self.vm.mem.lock().map_page(gpa, write) {
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
            let host = self.enter_guest(inner);
            step = {
                let mem = self.vm.mem.lock();
                let translate = |gpa: u64, write: bool| mem.hva(gpa, write);
                let mut guest = UserGuestMemory {
                    translate: &translate,
                };
                vcpu::handle_exit(&mut *inner.svm, &mut inner.state, &mut guest, &*mem, host)
            };
        }
    }

    /// One VMRUN, with preemption off from the ASID choice to the exit.
    fn enter_guest(&self, inner: &mut VcpuInner) -> vcpu::HostState {
        let guard = cpu::PreemptGuard::new();
        let cpu = guard.cpu();
        let host = &self.vm.host;
        let Some(host_vmsave) = host.cpu_pages.host_vmsave_pa(cpu) else {
            return vcpu::HostState { tsc: 0, cpu };
        };
        vcpu::prepare_entry(&mut *inner.svm, &inner.state);
        // Publish where we run before reading the TLB generation: a zapper
        // bumps the generation before reading `running_on`, so either it
        // kicks us or we see its generation (both are SeqCst).
        self.running_on.store(cpu as i32, Ordering::SeqCst);
        let generation = self.vm.tlb_generation.load(Ordering::SeqCst);
        if generation != inner.seen_tlb_generation {
            inner.seen_tlb_generation = generation;
            <svm::SvmVcpu as crate::vendor::VendorVcpu>::request_tlb_flush(&mut inner.svm);
        }
        if let Some(asids) = host.cpu_asids.get(cpu as usize) {
            inner.svm.prepare_entry(&mut asids.lock(), cpu);
        }
        let vmcb_pa = inner.svm.vmcb_pa();
        // SAFETY: The VMCB was reset by hv-core and only changed through
        // its checked interfaces; its NPT maps only pinned pages of the
        // VM's memslots; SVM is on on this CPU (the module keeps it on
        // while loaded) and `host_vmsave` is this CPU's area; preemption
        // is off, so we stay on this CPU.
        unsafe { svm_hw::run_guest(vmcb_pa, &mut inner.svm.gprs, host_vmsave) };
        let tsc = kernel::x86::rdtsc_ordered();
        self.running_on.store(-1, Ordering::SeqCst);
        inner.svm.complete_exit();
        drop(guard);
        vcpu::HostState { tsc, cpu }
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
        self.copy_run_page_out(inner, false)
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
        self.copy_run_page_out(inner, matches!(exit, vcpu::UserExit::Io { .. }))
    }
}

/// Reads a `T` from user address `arg`.
fn read_user<T: kvm_api::wire::Wire>(arg: usize) -> Result<T> {
    let mut bytes = [0u8; 512];
    let bytes = bytes.get_mut(..T::SIZE).ok_or(EINVAL)?;
    UserSlice::new(arg, T::SIZE).reader().read_slice(bytes)?;
    decode::decode(bytes).map_err(kvm_error)
}

/// Writes `value` to user address `arg`.
fn write_user<T: kvm_api::wire::Wire>(arg: usize, value: &T) -> Result {
    let mut bytes = [0u8; 512];
    let bytes = bytes.get_mut(..T::SIZE).ok_or(EINVAL)?;
    decode::encode(value, bytes).map_err(kvm_error)?;
    UserSlice::new(arg, T::SIZE).writer().write_slice(bytes)
}

/// A vCPU file (`anon_inode:kvm-vcpu`).
pub(crate) struct VcpuFile;

#[vtable]
impl FileOps for VcpuFile {
    type Ptr = Arc<Vcpu>;

    fn ioctl(vcpu: ArcBorrow<'_, Vcpu>, cmd: u32, arg: usize) -> Result<isize> {
        let request =
            kvm_api::ioctl::classify(kvm_api::ioctl::FdKind::Vcpu, cmd).map_err(kvm_error)?;
        kvm_api::ioctl::check_zero_argument(request.argument, arg as u64).map_err(kvm_error)?;
        match request.ioctl {
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
                regs::set_sregs(&mut *inner.svm, &new)
                    .map_err(|e| Error::from_errno(-e.errno()))?;
                <svm::SvmVcpu as crate::vendor::VendorVcpu>::request_tlb_flush(&mut inner.svm);
                Ok(0)
            }
            _ => Err(EINVAL),
        }
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
