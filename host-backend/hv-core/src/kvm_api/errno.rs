//! The errno values `/dev/pvrs` returns, and the typed errors of the
//! parsers that map to them.
//!
//! Each [`Error`] names the rule that failed (tests match on it) and maps
//! to the errno KVM returns for the same input ([`Error::errno`]), which
//! is what the kernel module hands back to userspace, negated.

/// The errno values of `include/uapi/asm-generic/errno-base.h` and
/// `errno.h` (x86 uses the generic ones) that KVM's ioctls return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted (1).
    EPERM = 1,
    /// No such entry (e.g. no matching ioeventfd or PIC) (2).
    ENOENT = 2,
    /// Interrupted by a signal (4).
    EINTR = 4,
    /// I/O error (5).
    EIO = 5,
    /// No such device or address (6).
    ENXIO = 6,
    /// Argument list too long (too many entries) (7).
    E2BIG = 7,
    /// Bad file descriptor (9).
    EBADF = 9,
    /// Try again (not ready yet) (11).
    EAGAIN = 11,
    /// Out of memory (12).
    ENOMEM = 12,
    /// Bad address (a user copy failed) (14).
    EFAULT = 14,
    /// Device or resource busy (16).
    EBUSY = 16,
    /// Already exists (17).
    EEXIST = 17,
    /// No such device (19).
    ENODEV = 19,
    /// Invalid argument (22).
    EINVAL = 22,
    /// Inappropriate ioctl for the file (25).
    ENOTTY = 25,
    /// No space left (e.g. no free slot or route) (28).
    ENOSPC = 28,
    /// Operation not supported (95).
    EOPNOTSUPP = 95,
}

impl Errno {
    /// Every variant with its C name, for the header test and for logs.
    pub const ALL: [(&'static str, Errno); 17] = [
        ("EPERM", Errno::EPERM),
        ("ENOENT", Errno::ENOENT),
        ("EINTR", Errno::EINTR),
        ("EIO", Errno::EIO),
        ("ENXIO", Errno::ENXIO),
        ("E2BIG", Errno::E2BIG),
        ("EBADF", Errno::EBADF),
        ("EAGAIN", Errno::EAGAIN),
        ("ENOMEM", Errno::ENOMEM),
        ("EFAULT", Errno::EFAULT),
        ("EBUSY", Errno::EBUSY),
        ("EEXIST", Errno::EEXIST),
        ("ENODEV", Errno::ENODEV),
        ("EINVAL", Errno::EINVAL),
        ("ENOTTY", Errno::ENOTTY),
        ("ENOSPC", Errno::ENOSPC),
        ("EOPNOTSUPP", Errno::EOPNOTSUPP),
    ];

    /// The positive errno number.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// What an ioctl handler returns for this error: the negated number.
    pub const fn to_kernel_return(self) -> i32 {
        -(self as i32)
    }
}

/// Why a request from userspace was refused.  Each variant documents the
/// KVM check it mirrors; [`Error::errno`] gives the errno KVM returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The argument buffer is shorter than what the request needs: the
    /// module copied too few bytes, or userspace passed a bad pointer
    /// (`copy_from_user` failing is EFAULT in KVM).
    ShortBuffer,
    /// The ioctl number is not one KVM answers on this kind of file, or not
    /// one this mirror knows.  The errno depends on the file, see
    /// [`super::ioctl::unknown_ioctl_errno`].
    UnknownIoctl(super::ioctl::FdKind),
    /// KVM_GET_API_VERSION, KVM_GET_VCPU_MMAP_SIZE and KVM_RUN take no
    /// argument and fail with EINVAL when one is passed.
    ArgumentNotZero,
    /// `nent` above `KVM_MAX_CPUID_ENTRIES` for KVM_SET_CPUID2 (E2BIG).
    TooManyCpuidEntries,
    /// KVM_GET_SUPPORTED_CPUID with `nent` 0 (E2BIG), or a CPUID/MSR list
    /// output larger than the room userspace gave (E2BIG).
    OutputTooLarge,
    /// `nmsrs` of KVM_GET_MSRS/KVM_SET_MSRS at or above `MAX_IO_MSRS`
    /// (E2BIG).
    TooManyMsrs,
    /// Flag bits KVM does not define (or does not allow for this request)
    /// are set (EINVAL).
    UnknownFlags,
    /// A field must be zero (reserved or padding KVM checks) and is not
    /// (EINVAL).
    ReservedNotZero,
    /// KVM_IOEVENTFD length other than 0, 1, 2, 4 or 8 (EINVAL).
    IoeventfdLength,
    /// KVM_IOEVENTFD address range wraps around (EINVAL).
    IoeventfdRangeWraps,
    /// KVM_IOEVENTFD with length 0 and DATAMATCH (EINVAL).
    IoeventfdDatamatchWithoutLength,
    /// A memory slot number at or above `KVM_USER_MEM_SLOTS` (EINVAL).
    MemorySlotOutOfRange,
    /// KVM_INTERRUPT vector at or above `KVM_NR_INTERRUPTS` (EINVAL).
    InterruptVectorOutOfRange,
    /// A value outside the set KVM accepts for the field (an MP state,
    /// an exception vector, a routing entry type or pin, a register with
    /// reserved bits set...) (EINVAL).
    InvalidValue,
    /// KVM_SET_SREGS contents KVM's `kvm_is_valid_sregs` refuses (EINVAL).
    InvalidSregs(super::decode::SregsError),
    /// KVM_ENABLE_CAP of a capability that cannot be enabled on this file,
    /// or with arguments KVM refuses (EINVAL).
    InvalidCapability,
    /// KVM_SET_SIGNAL_MASK whose `len` is not the size of the kernel's
    /// `sigset_t` (EINVAL).
    SignalMaskLength,
    /// KVM_SET_GSI_ROUTING with more than `KVM_MAX_IRQ_ROUTES` entries or a
    /// GSI at or above it (EINVAL).
    TooManyRoutes,
    /// KVM_SET_GSI_ROUTING routing one GSI twice to the same irqchip, or a
    /// GSI with a non-irqchip route to anything else as well
    /// (`setup_routing_entry`) (EINVAL).
    RouteConflict,
    /// More routes than a fixed-capacity table of this crate holds: where
    /// KVM allocates each route, a failed allocation is ENOMEM.
    TableFull,
    /// A `kvm_run` exit that cannot be described in the shared page (a PIO
    /// transfer larger than the data page, too many data words...): a bug
    /// of the caller, refused instead of writing a truncated exit.
    ExitDoesNotFit,
    /// A device that exists once per VM is created again (KVM_CREATE_PIT2
    /// twice, KVM_CREATE_IRQCHIP twice) (EEXIST).
    AlreadyExists,
    /// A request for an in-kernel device the VM does not have (no PIT for
    /// KVM_GET_PIT2, no in-kernel LAPIC for KVM_GET_LAPIC) (ENXIO).
    NoDevice,
}

impl Error {
    /// The errno KVM returns in the same situation.
    pub const fn errno(self) -> Errno {
        match self {
            Error::ShortBuffer => Errno::EFAULT,
            Error::UnknownIoctl(fd) => super::ioctl::unknown_ioctl_errno(fd),
            Error::TooManyCpuidEntries | Error::OutputTooLarge | Error::TooManyMsrs => Errno::E2BIG,
            Error::ArgumentNotZero
            | Error::UnknownFlags
            | Error::ReservedNotZero
            | Error::IoeventfdLength
            | Error::IoeventfdRangeWraps
            | Error::IoeventfdDatamatchWithoutLength
            | Error::MemorySlotOutOfRange
            | Error::InterruptVectorOutOfRange
            | Error::InvalidValue
            | Error::InvalidSregs(_)
            | Error::InvalidCapability
            | Error::SignalMaskLength
            | Error::TooManyRoutes
            | Error::RouteConflict
            | Error::ExitDoesNotFit => Errno::EINVAL,
            Error::TableFull => Errno::ENOMEM,
            Error::AlreadyExists => Errno::EEXIST,
            Error::NoDevice => Errno::ENXIO,
        }
    }
}

impl From<Error> for Errno {
    fn from(error: Error) -> Self {
        error.errno()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_return_is_negated() {
        assert_eq!(Errno::EINVAL.code(), 22);
        assert_eq!(Errno::EINVAL.to_kernel_return(), -22);
        assert_eq!(Errno::from(Error::TooManyMsrs), Errno::E2BIG);
        assert_eq!(Error::ShortBuffer.errno(), Errno::EFAULT);
    }

    #[test]
    fn names_are_unique() {
        for (index, (name, errno)) in Errno::ALL.iter().enumerate() {
            for (other_name, other) in &Errno::ALL[index + 1..] {
                assert_ne!(name, other_name);
                assert_ne!(errno, other);
            }
        }
    }
}
