// SPDX-License-Identifier: GPL-2.0

//! KVM_IRQFD (`Documentation/virt/kvm/api.rst` 4.75): an eventfd whose
//! signals pulse a GSI of the in-kernel irqchip, so that a device model
//! raises a guest interrupt with one write(2) instead of a KVM_IRQ_LINE
//! round trip through the VM file.
//!
//! The signal arrives in the signaller's context with the eventfd's
//! wait-queue lock held (`kernel::eventfd`), where the irqchip's mutex
//! cannot be taken. It only marks the GSI in the VM's pending set and
//! makes a vCPU look: halted vCPUs are woken, and one vCPU in the guest,
//! if any, is sent out of it. That vCPU drives the GSI high and low again
//! (KVM's `irqfd_inject`, with the user-space source id) the next time it
//! takes the irqchip, before its next entry.
//!
//! Not done: KVM_IRQFD_FLAG_RESAMPLE (level-triggered irqfds whose
//! acknowledgement signals a second eventfd; KVM_CAP_IRQFD_RESAMPLE is not
//! offered), and KVM's immediate MSI delivery from the signaller's context.

use crate::{
    kvm_api::decode::{self, IrqfdRequest},
    vm_file::{kvm_error, Vm},
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    eventfd::{EventFdCtx, EventFdHandler, EventFdWatch},
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// The GSIs an irqfd may raise: 0 to `MAX_GSI - 1`. KVM accepts any u32
/// and drops the signals of GSIs that have no route.
pub(crate) const MAX_GSI: u32 = 1024;
/// The irqfds one VM may hold (KVM has no fixed limit; one per device
/// queue is usual).
const MAX_IRQFDS: usize = 256;
const PENDING_WORDS: usize = (MAX_GSI / 64) as usize;

/// The GSIs signalled through irqfds and not yet pulsed.
pub(crate) struct PendingGsis([AtomicU64; PENDING_WORDS]);

impl PendingGsis {
    pub(crate) const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PENDING_WORDS])
    }

    fn mark(&self, gsi: u32) {
        if let Some(word) = self.0.get((gsi / 64) as usize) {
            word.fetch_or(1 << (gsi % 64), Ordering::AcqRel);
        }
    }

    /// Whether any GSI is pending (checked before a vCPU sleeps).
    pub(crate) fn any(&self) -> bool {
        self.0.iter().any(|word| word.load(Ordering::Acquire) != 0)
    }

    /// Takes the pending GSIs, calling `pulse` for each.
    pub(crate) fn drain(&self, mut pulse: impl FnMut(u32)) {
        for (index, word) in self.0.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                pulse(index as u32 * 64 + bit);
            }
        }
    }
}

/// What an irqfd's eventfd calls.
pub(crate) struct IrqfdSignal {
    vm: Arc<Vm>,
    gsi: u32,
    /// The VMM closed the eventfd: the irqfd is dropped at the next
    /// KVM_IRQFD (KVM tears it down right away, from a work item).
    hung_up: AtomicBool,
}

impl EventFdHandler for IrqfdSignal {
    fn signalled(&self, _count: u64) {
        self.vm.irqfd_pending.mark(self.gsi);
        self.vm.notify_irqchip_event();
    }

    fn hung_up(&self) {
        self.hung_up.store(true, Ordering::Release);
    }
}

/// An irqfd.
pub(crate) type Irqfd = Pin<KBox<EventFdWatch<IrqfdSignal>>>;

/// The VM's irqfds, in slots that deassigned and hung-up ones leave free.
pub(crate) type IrqfdSlots = KVec<Option<Irqfd>>;

/// KVM_IRQFD on `vm`, with the ioctl's argument.
pub(crate) fn irqfd_ioctl(vm: ArcBorrow<'_, Vm>, bytes: &[u8]) -> Result<isize> {
    match decode::decode_irqfd(bytes).map_err(kvm_error)? {
        IrqfdRequest::Assign {
            fd,
            gsi,
            resample_fd,
        } => {
            // KVM: irqfds need the in-kernel irqchip (EINVAL without
            // one); resampling is not offered.
            if !vm.has_irqchip.load(Ordering::Acquire) || resample_fd.is_some() || gsi >= MAX_GSI {
                return Err(EINVAL);
            }
            let irqfd = KBox::pin_init(
                EventFdWatch::new(
                    fd,
                    IrqfdSignal {
                        vm: vm.into(),
                        gsi,
                        hung_up: AtomicBool::new(false),
                    },
                ),
                GFP_KERNEL,
            )?;
            let mut irqfds = vm.irqfds.lock();
            // Irqfds whose eventfd is gone are dropped here (under the
            // lock, which their wake functions never take).
            for slot in irqfds.iter_mut() {
                if slot
                    .as_ref()
                    .is_some_and(|old| old.handler().hung_up.load(Ordering::Acquire))
                {
                    *slot = None;
                }
            }
            if irqfds.iter().flatten().any(|old| old.ctx() == irqfd.ctx()) {
                return Err(EBUSY);
            }
            if let Some(free) = irqfds.iter_mut().find(|slot| slot.is_none()) {
                *free = Some(irqfd);
            } else if irqfds.len() < MAX_IRQFDS {
                irqfds.push(Some(irqfd), GFP_KERNEL)?;
            } else {
                return Err(ENOSPC);
            }
            Ok(0)
        }
        IrqfdRequest::Deassign { fd, gsi } => {
            let ctx = EventFdCtx::from_fd(fd)?;
            let mut irqfds = vm.irqfds.lock();
            for slot in irqfds.iter_mut() {
                if slot
                    .as_ref()
                    .is_some_and(|irqfd| *irqfd.ctx() == ctx && irqfd.handler().gsi == gsi)
                {
                    // Leaves the eventfd's wait queue: no signal of it
                    // reaches the VM afterwards.
                    *slot = None;
                }
            }
            // KVM answers 0 even if none matched.
            Ok(0)
        }
    }
}
