//! The per-vCPU steal-time area, through which the host reports how long a
//! vCPU was runnable but not running and whether it is preempted right now.
//!
//! Sources: `Documentation/virt/kvm/x86/msr.rst` (`MSR_KVM_STEAL_TIME`) and
//! `arch/x86/include/uapi/asm/kvm_para.h`.  The area is registered with
//! [`super::msr::MSR_KVM_STEAL_TIME`] if
//! [`super::cpuid::KVM_FEATURE_STEAL_TIME`] is offered.

use core::mem::align_of;

linux_constants! {
    /// The C name and value of every constant of this module that Linux
    /// defines, for checking against the headers and for logging.
    table LINUX_CONSTANTS;

    /// [`KvmStealTime::preempted`] bit: the host descheduled this vCPU, so
    /// spinning on a lock it holds is pointless.
    KVM_VCPU_PREEMPTED: u8 = 1 << 0;
    /// [`KvmStealTime::preempted`] bit: another vCPU asks the host to flush
    /// this (preempted) vCPU's TLB before it runs again, instead of sending
    /// an IPI (needs `KVM_FEATURE_PV_TLB_FLUSH`).
    KVM_VCPU_FLUSH_TLB: u8 = 1 << 1;
}

abi_struct! {
    /// The steal-time area of one vCPU (Linux `struct kvm_steal_time`, 64
    /// bytes).
    ///
    /// The guest zeroes it and places it 64-byte aligned.  The host updates it
    /// like the pvclock areas: `version` is odd while an update is under way,
    /// so a reader retries until it sees the same even version before and
    /// after reading.
    #[derive(Default)]
    pub struct KvmStealTime {
        /// Nanoseconds this vCPU was runnable but not running, since the area
        /// was registered; idle time does not count.
        pub steal: u64,
        /// The update sequence counter.
        pub version: u32,
        /// Zero; reserved for future extensions.
        pub flags: u32,
        /// `KVM_VCPU_PREEMPTED` / `KVM_VCPU_FLUSH_TLB`; always zero on hosts
        /// that do not support preemption reporting.
        pub preempted: u8,
        /// Reserved.
        pub u8_pad: [u8; 3],
        /// Reserved.
        pub pad: [u32; 11],
    }
}

impl KvmStealTime {
    /// An all-zero area, as the guest must register it; usable in `static`
    /// initialisers.
    pub const fn zeroed() -> Self {
        Self {
            steal: 0,
            version: 0,
            flags: 0,
            preempted: 0,
            u8_pad: [0; 3],
            pad: [0; 11],
        }
    }

    /// Whether the host reported this vCPU as preempted.
    pub const fn is_preempted(&self) -> bool {
        self.preempted & KVM_VCPU_PREEMPTED != 0
    }
}

const _: () = assert!(align_of::<KvmStealTime>() == 8);
assert_layout!(KvmStealTime, size 64, { steal: 0, version: 8, flags: 12, preempted: 16, u8_pad: 17, pad: 20 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_default_and_not_preempted() {
        assert_eq!(KvmStealTime::zeroed(), KvmStealTime::default());
        assert!(!KvmStealTime::zeroed().is_preempted());
    }

    #[test]
    fn flush_request_alone_is_not_preemption() {
        let area = KvmStealTime {
            preempted: KVM_VCPU_FLUSH_TLB,
            ..KvmStealTime::zeroed()
        };
        assert!(!area.is_preempted());
        let area = KvmStealTime {
            preempted: KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB,
            ..area
        };
        assert!(area.is_preempted());
    }
}
