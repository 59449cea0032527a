//! How the VM ends, and the process exit status each ending maps to.
//!
//! Every thread that can end the VM (a vCPU thread on a triple fault, the
//! ACPI power-management device on a guest power-off, the event thread on a
//! fatal device error) reports through one [`ExitNotifier`]. The first
//! report wins; the main thread waits for it and turns it into the
//! process's exit status ([`ExitReason::status`]).

use std::fmt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The exit status of a guest that powered off or rebooted.
pub const EXIT_OK: i32 = 0;
/// The exit status of a guest that crashed: a triple fault, a kernel panic
/// followed by a reboot, or a KVM crash event.
pub const EXIT_GUEST_CRASH: i32 = 1;
/// The exit status for a command line the VMM cannot use.
pub const EXIT_USAGE: i32 = 2;
/// The exit status for a failure of the VMM itself or of KVM (setup errors,
/// KVM internal errors, failed VM entries, unexpected exits).
pub const EXIT_VMM_ERROR: i32 = 3;

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (ACPI reset register, i8042 reset line,
    /// KVM reset event). pvrs-vmm does not restart guests: it exits.
    Reboot,
    /// The guest kernel printed a panic and then asked for a reset.
    PanicReboot,
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault {
        /// The vCPU.
        vcpu: usize,
    },
    /// KVM reported a guest crash event.
    CrashEvent {
        /// The vCPU.
        vcpu: usize,
    },
    /// KVM could not run the vCPU (internal error, failed entry, unexpected
    /// exit reason).
    KvmFailure {
        /// The vCPU.
        vcpu: usize,
        /// What KVM said.
        detail: String,
    },
    /// The VMM itself failed at run time.
    VmmError(String),
    /// Stopped by the control command `quit`.
    Stopped,
}

impl ExitReason {
    /// The process exit status for this ending.
    pub fn status(&self) -> i32 {
        match self {
            ExitReason::PowerOff | ExitReason::Reboot | ExitReason::Stopped => EXIT_OK,
            ExitReason::PanicReboot
            | ExitReason::TripleFault { .. }
            | ExitReason::CrashEvent { .. } => EXIT_GUEST_CRASH,
            ExitReason::KvmFailure { .. } | ExitReason::VmmError(_) => EXIT_VMM_ERROR,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::PowerOff => write!(f, "guest powered off"),
            ExitReason::Reboot => write!(f, "guest requested a reboot; exiting"),
            ExitReason::PanicReboot => {
                write!(f, "guest crashed: the kernel panicked and then rebooted")
            }
            ExitReason::TripleFault { vcpu } => {
                write!(
                    f,
                    "guest crashed: triple fault (KVM_EXIT_SHUTDOWN) on vCPU {vcpu}"
                )
            }
            ExitReason::CrashEvent { vcpu } => {
                write!(f, "guest crashed: KVM system event 'crash' on vCPU {vcpu}")
            }
            ExitReason::KvmFailure { vcpu, detail } => {
                write!(f, "KVM failure on vCPU {vcpu}: {detail}")
            }
            ExitReason::VmmError(msg) => write!(f, "VMM error: {msg}"),
            ExitReason::Stopped => write!(f, "stopped by the control command 'quit'"),
        }
    }
}

/// The place where the first [`ExitReason`] is recorded, with an event fd
/// that becomes readable once it is.
pub struct ExitNotifier {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
    /// Set once the guest console showed a kernel panic, so that the reset
    /// that follows (`panic=N`) is reported as a crash.
    panic_seen: AtomicBool,
}

impl ExitNotifier {
    /// A notifier with nothing recorded yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitNotifier {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
            panic_seen: AtomicBool::new(false),
        })
    }

    /// Records `reason` unless an earlier one was recorded, and wakes the
    /// waiter. A reboot after a console panic is recorded as
    /// [`ExitReason::PanicReboot`].
    pub fn exit(&self, reason: ExitReason) {
        let reason = if reason == ExitReason::Reboot && self.panic_seen.load(Ordering::SeqCst) {
            ExitReason::PanicReboot
        } else {
            reason
        };
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            // A full eventfd counter is the only failure and still wakes
            // the waiter.
            let _ = self.evt.write(1);
        }
    }

    /// Notes that the guest kernel panicked.
    pub fn note_panic(&self) {
        self.panic_seen.store(true, Ordering::SeqCst);
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The event fd that becomes readable when a reason is recorded.
    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }

    /// Waits up to `timeout_ms` for a reason to be recorded and returns it,
    /// if any. A signal (the vCPU kick) ends the wait early. Several
    /// threads may wait at once: the event fd is only polled, never read.
    pub fn wait(&self, timeout_ms: i32) -> Option<ExitReason> {
        let mut pfd = libc::pollfd {
            fd: self.evt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and
        // the count is 1. Errors (EINTR) and timeouts need no handling:
        // the recorded reason is looked at either way.
        let _ = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        self.reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let n = ExitNotifier::new().unwrap();
        assert_eq!(n.reason(), None);
        n.exit(ExitReason::PowerOff);
        n.exit(ExitReason::TripleFault { vcpu: 1 });
        assert_eq!(n.reason(), Some(ExitReason::PowerOff));
        assert_eq!(n.event_fd().read().unwrap(), 1);
    }

    #[test]
    fn wait_returns_the_reason() {
        let n = ExitNotifier::new().unwrap();
        assert_eq!(n.wait(0), None);
        n.exit(ExitReason::Reboot);
        assert_eq!(n.wait(1000), Some(ExitReason::Reboot));
        assert_eq!(n.wait(-1), Some(ExitReason::Reboot), "never consumed");
    }

    #[test]
    fn reboot_after_panic_is_a_crash() {
        let n = ExitNotifier::new().unwrap();
        n.note_panic();
        n.exit(ExitReason::Reboot);
        assert_eq!(n.reason(), Some(ExitReason::PanicReboot));
        assert_eq!(n.reason().unwrap().status(), EXIT_GUEST_CRASH);
    }

    #[test]
    fn statuses() {
        assert_eq!(ExitReason::PowerOff.status(), EXIT_OK);
        assert_eq!(ExitReason::Reboot.status(), EXIT_OK);
        assert_eq!(
            ExitReason::TripleFault { vcpu: 0 }.status(),
            EXIT_GUEST_CRASH
        );
        let kvm = ExitReason::KvmFailure {
            vcpu: 0,
            detail: "x".into(),
        };
        assert_eq!(kvm.status(), EXIT_VMM_ERROR);
        assert!(kvm.to_string().contains("KVM failure"));
    }
}
