// SPDX-License-Identifier: GPL-2.0

//! CPUs: the current CPU with preemption disabled, and CPU hotplug callbacks.
//!
//! C headers: [`include/linux/preempt.h`](srctree/include/linux/preempt.h),
//! [`include/linux/cpuhotplug.h`](srctree/include/linux/cpuhotplug.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Error, Result},
    str::CStr,
    types::Opaque,
};
use core::{ffi::c_int, ffi::c_uint, marker::PhantomData, pin::Pin};

/// Keeps the current task on its CPU: preemption is disabled while it lives.
///
/// It uses the `notrace` variants, so that it may be used in code that the
/// function tracer calls, such as a clocksource's `read`.
pub struct PreemptGuard {
    // Preemption is per CPU: the guard must be dropped where it was made.
    _not_send: PhantomData<*mut ()>,
}

impl PreemptGuard {
    /// Disables preemption until the guard is dropped.
    #[inline]
    pub fn new() -> Self {
        // SAFETY: Always safe; paired with the enable in `drop`.
        unsafe { bindings::preempt_disable_notrace() };
        Self {
            _not_send: PhantomData,
        }
    }

    /// The CPU this code runs on, which cannot change while `self` lives.
    #[inline]
    pub fn cpu(&self) -> u32 {
        // SAFETY: Always safe; with preemption disabled the answer stays true.
        unsafe { bindings::raw_smp_processor_id() }
    }
}

impl Default for PreemptGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PreemptGuard {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: Paired with the disable in `new`, on the same CPU.
        unsafe { bindings::preempt_enable_notrace() };
    }
}

/// The number of possible CPU ids (`nr_cpu_ids`): every CPU id is below it.
pub fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set in early boot and only read afterwards.
    unsafe { bindings::nr_cpu_ids }
}

/// The number of online CPUs, at the moment of the call.
pub fn num_online_cpus() -> u32 {
    // SAFETY: Always safe.
    unsafe { bindings::num_online_cpus() }
}

/// Runs `f` on CPU `cpu`, with interrupts disabled there, and returns when
/// it has finished (`smp_call_function_single(..., wait = 1)`). Getting
/// there takes an IPI, which also makes a CPU leave a guest it is running.
///
/// `f` must not sleep. Must be called from a context that may sleep.
pub fn run_on<F: Fn() + Sync>(cpu: u32, f: &F) -> Result {
    /// # Safety
    ///
    /// `info` must point to an `F` that is alive for the call.
    unsafe extern "C" fn call<F: Fn() + Sync>(info: *mut core::ffi::c_void) {
        // SAFETY: `info` is the `&F` given below, alive until the waiting
        // call returns.
        let f = unsafe { &*info.cast::<F>() };
        f();
    }
    // SAFETY: `call::<F>` matches `smp_call_func_t` and gets `f`, which
    // outlives the waiting call.
    to_result(unsafe {
        bindings::smp_call_function_single(
            cpu as _,
            Some(call::<F>),
            (f as *const F).cast_mut().cast(),
            1,
        )
    })
}

/// Sends CPU `cpu` a reschedule IPI without waiting (`smp_send_reschedule`):
/// a CPU running a guest leaves it (an INTR intercept) and re-checks its
/// work. Callable from any context, hard interrupts included, unlike
/// [`run_on`]; `cpu` must be an online CPU other than the caller's.
pub fn send_reschedule(cpu: u32) {
    if cpu >= nr_cpu_ids() {
        return;
    }
    // SAFETY: `cpu` is a valid CPU number (checked above); the IPI only
    // sets the target's reschedule flag.
    unsafe { bindings::smp_send_reschedule(cpu as _) }
}

/// How long the current task has waited runnable for a CPU since it
/// started, in nanoseconds (`sched_info.run_delay`; 0 without
/// `CONFIG_SCHED_INFO`): for a vCPU thread, the time its guest was ready
/// to run but did not, which a hypervisor reports as steal time.
pub fn current_run_delay_ns() -> u64 {
    // SAFETY: Reads a counter of the current task, which is valid while it
    // runs; only the scheduler updates it, on this CPU.
    unsafe { bindings::current_run_delay() }
}

/// Whether a busy-wait on this CPU should stop: the scheduler wants to
/// run something else (`need_resched`), or another task is runnable
/// here (`!single_task_running`), which the wait would delay.
pub fn should_stop_spinning() -> bool {
    // SAFETY: Both read scheduler state of the current CPU and task;
    // always safe, a stale answer only ends a spin early or late.
    unsafe { bindings::need_resched() || !bindings::single_task_running() }
}

/// Gives the CPU to another task if a reschedule is due (`cond_resched`);
/// a kernel loop that may run long calls it, which also reports an RCU
/// quiescent state.
pub fn cond_resched() {
    // SAFETY: Always safe in a context that may sleep, which the caller is.
    unsafe { bindings::cond_resched() };
}

/// What to do when a CPU comes online or goes offline.
///
/// Both run on the CPU concerned, in its hotplug thread, so per-CPU state
/// (an MSR, for instance) can be set up directly.
pub trait HotplugCallbacks: Send + Sync {
    /// `cpu` is coming online (also called for every online CPU when the
    /// registration is made). An error aborts bringing it up.
    fn online(&self, cpu: u32) -> Result;
    /// `cpu` is going offline (also called for every online CPU when the
    /// registration is dropped).
    fn offline(&self, cpu: u32) -> Result;
}

/// A dynamic CPU hotplug state (in the `CPUHP_AP_ONLINE_DYN` range) whose
/// callbacks are those of `T`.
///
/// Dropping it runs `offline` on every online CPU and removes the state.
pub struct HotplugRegistration<T: HotplugCallbacks> {
    inner: Pin<KBox<HotplugInner<T>>>,
}

struct HotplugInner<T> {
    node: Opaque<bindings::hlist_node>,
    state: c_int,
    data: T,
}

// SAFETY: The hotplug node is only touched by the hotplug core, under its
// own locking, between `register` and `drop`; `T` is `Send + Sync`.
unsafe impl<T: HotplugCallbacks> Send for HotplugRegistration<T> {}
// SAFETY: `&HotplugRegistration` only gives access to `&T`, and `T` is `Sync`.
unsafe impl<T: HotplugCallbacks> Sync for HotplugRegistration<T> {}

impl<T: HotplugCallbacks> HotplugRegistration<T> {
    /// Registers the state `name` and runs `online` on each online CPU.
    pub fn register(name: &'static CStr, data: T) -> Result<Self> {
        // SAFETY: `name` is a static string; the callbacks match the types
        // the hotplug core expects and are only given nodes of
        // `HotplugInner<T>` (added below).
        let state = unsafe {
            bindings::cpuhp_setup_state_multi(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                Some(Self::startup),
                Some(Self::teardown),
            )
        };
        if state < 0 {
            return Err(Error::from_errno(state));
        }
        let inner = match KBox::pin(
            HotplugInner {
                node: Opaque::uninit(),
                state,
                data,
            },
            GFP_KERNEL,
        ) {
            Ok(inner) => inner,
            Err(e) => {
                // SAFETY: `state` was set up above and has no instance.
                unsafe { bindings::cpuhp_remove_multi_state(state) };
                return Err(e.into());
            }
        };
        // SAFETY: The node is pinned in `inner` and stays valid until it is
        // removed in `drop`; the hotplug core initializes it.
        let ret = unsafe { bindings::cpuhp_state_add_instance(state, inner.node.get()) };
        if let Err(e) = to_result(ret) {
            // SAFETY: `state` was set up above; its instance was not added.
            unsafe { bindings::cpuhp_remove_multi_state(state) };
            return Err(e);
        }
        Ok(Self { inner })
    }

    /// The data given to [`Self::register`].
    pub fn data(&self) -> &T {
        &self.inner.data
    }

    /// # Safety
    ///
    /// `node` must be the node of a live `HotplugInner<T>`.
    unsafe fn data_of<'a>(node: *mut bindings::hlist_node) -> &'a T {
        // SAFETY: The caller guarantees that `node` is the `node` field of
        // a live `HotplugInner<T>`; `Opaque` has the layout of its content.
        let inner = unsafe { &*crate::container_of!(node, HotplugInner<T>, node) };
        &inner.data
    }

    /// # Safety
    ///
    /// Called by the hotplug core with a node added in `register`.
    unsafe extern "C" fn startup(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: The node was added in `register` and is removed before
        // the `HotplugInner<T>` is freed.
        let data = unsafe { Self::data_of(node) };
        match data.online(cpu) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the hotplug core with a node added in `register`.
    unsafe extern "C" fn teardown(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
        // SAFETY: As in `startup`.
        let data = unsafe { Self::data_of(node) };
        match data.offline(cpu) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

impl<T: HotplugCallbacks> Drop for HotplugRegistration<T> {
    fn drop(&mut self) {
        let state = self.inner.state;
        // SAFETY: The node was added to `state` in `register`; removing it
        // runs the teardown callbacks and returns when they are done.
        unsafe { bindings::cpuhp_state_remove_instance(state, self.inner.node.get()) };
        // SAFETY: `state` has no instance left.
        unsafe { bindings::cpuhp_remove_multi_state(state) };
    }
}
