//! Which KVM device the VMM drives, and what that device offers beyond the
//! base API.
//!
//! pvrs-vmm runs on the machine's `/dev/kvm` and on any other device that
//! speaks the KVM ioctl API (`--kvm-dev`), such as pvrs-kvm's `/dev/pvrs`,
//! whose first version has no in-kernel irqchip and no ioeventfd. Rather than
//! assume the full KVM feature set, [`Vm::build`](crate::vmm::Vm::build)
//! asks `KVM_CHECK_EXTENSION` about every optional feature it would use and
//! takes a documented fallback where one is missing:
//!
//! | feature | used for | without it |
//! | --- | --- | --- |
//! | `KVM_CAP_IRQCHIP` | `KVM_CREATE_IRQCHIP`, `KVM_GET/SET_LAPIC` | no PIC, IOAPIC or local APIC: interrupts are not delivered (logged once); the CPUID hides the local APIC; a halted vCPU stays halted; one vCPU only |
//! | `KVM_CAP_PIT2` | `KVM_CREATE_PIT2` | no PIT (logged) |
//! | `KVM_CAP_IRQFD` | device interrupt lines | interrupts are not delivered (logged once) |
//! | `KVM_CAP_IOEVENTFD` | virtqueue notifications inside the kernel | QueueNotify writes reach the VMM as MMIO exits and go to the same per-queue eventfd |
//! | `KVM_CAP_SET_TSS_ADDR` | `KVM_SET_TSS_ADDR` | not called (only Intel without unrestricted guest needs it) |
//! | `KVM_CAP_SET_IDENTITY_MAP_ADDR` | `KVM_SET_IDENTITY_MAP_ADDR` | not called (same) |
//! | `KVM_CAP_EXT_CPUID` | `KVM_GET_SUPPORTED_CPUID` | the guest CPUID is [`cpuid::minimal_table`](crate::cpu::cpuid::minimal_table) |
//!
//! The base API (`KVM_CREATE_VM`, `KVM_SET_USER_MEMORY_REGION`,
//! `KVM_CREATE_VCPU`, `KVM_RUN`, `KVM_GET/SET_REGS`, `KVM_GET/SET_SREGS`)
//! is required and not asked about. What the vCPU setup does when
//! `KVM_SET_CPUID2`, `KVM_SET_MSRS` or `KVM_SET_FPU` are missing is
//! described in [`cpu::configure_vcpu`](crate::cpu::configure_vcpu).
//!
//! For testing the fallbacks on a device that has everything,
//! [`FeatureSet`] names capabilities to treat as missing
//! (`--kvm-without`).

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm, VmFd};

/// The device opened when none is named.
pub const DEFAULT_KVM_DEV: &str = "/dev/kvm";

/// An optional KVM feature that pvrs-vmm asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The in-kernel PIC, IOAPIC and local APICs.
    Irqchip,
    /// The in-kernel PIT.
    Pit2,
    /// Raising interrupt lines through eventfds.
    Irqfd,
    /// Completing guest writes to a register inside the kernel by
    /// signalling an eventfd.
    Ioeventfd,
    /// `KVM_SET_TSS_ADDR`.
    SetTssAddr,
    /// `KVM_SET_IDENTITY_MAP_ADDR`.
    SetIdentityMapAddr,
    /// `KVM_GET_SUPPORTED_CPUID`.
    ExtCpuid,
}

impl Feature {
    /// Every feature, in the order they are reported.
    pub const ALL: [Feature; 7] = [
        Feature::Irqchip,
        Feature::Pit2,
        Feature::Irqfd,
        Feature::Ioeventfd,
        Feature::SetTssAddr,
        Feature::SetIdentityMapAddr,
        Feature::ExtCpuid,
    ];

    /// The name used on the command line (`--kvm-without`).
    pub fn name(self) -> &'static str {
        match self {
            Feature::Irqchip => "irqchip",
            Feature::Pit2 => "pit2",
            Feature::Irqfd => "irqfd",
            Feature::Ioeventfd => "ioeventfd",
            Feature::SetTssAddr => "set-tss-addr",
            Feature::SetIdentityMapAddr => "set-identity-map-addr",
            Feature::ExtCpuid => "ext-cpuid",
        }
    }

    /// The feature with command-line name `name`.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The `KVM_CAP_*` that announces the feature.
    pub fn cap(self) -> Cap {
        match self {
            Feature::Irqchip => Cap::Irqchip,
            Feature::Pit2 => Cap::Pit2,
            Feature::Irqfd => Cap::Irqfd,
            Feature::Ioeventfd => Cap::Ioeventfd,
            Feature::SetTssAddr => Cap::SetTssAddr,
            Feature::SetIdentityMapAddr => Cap::SetIdentityMapAddr,
            Feature::ExtCpuid => Cap::ExtCpuid,
        }
    }

    /// The capability's name in the KVM headers, for messages.
    pub fn cap_name(self) -> &'static str {
        match self {
            Feature::Irqchip => "KVM_CAP_IRQCHIP",
            Feature::Pit2 => "KVM_CAP_PIT2",
            Feature::Irqfd => "KVM_CAP_IRQFD",
            Feature::Ioeventfd => "KVM_CAP_IOEVENTFD",
            Feature::SetTssAddr => "KVM_CAP_SET_TSS_ADDR",
            Feature::SetIdentityMapAddr => "KVM_CAP_SET_IDENTITY_MAP_ADDR",
            Feature::ExtCpuid => "KVM_CAP_EXT_CPUID",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of [`Feature`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureSet(u32);

impl FeatureSet {
    /// No feature.
    pub const EMPTY: FeatureSet = FeatureSet(0);

    /// Every feature.
    pub fn all() -> FeatureSet {
        Feature::ALL.into_iter().collect()
    }

    /// Whether `f` is in the set.
    pub fn contains(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    /// Adds `f`.
    pub fn insert(&mut self, f: Feature) {
        self.0 |= f.bit();
    }

    /// The features in the set, in [`Feature::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// Parses a comma-separated list of feature names, or `all`.
    pub fn parse(list: &str) -> Result<FeatureSet, String> {
        let mut set = FeatureSet::EMPTY;
        for name in list.split(',') {
            match name {
                "all" => set = FeatureSet::all(),
                _ => match Feature::from_name(name) {
                    Some(f) => set.insert(f),
                    None => {
                        let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                        return Err(format!(
                            "unknown KVM feature {name:?} (known: {}, all)",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
        Ok(set)
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        let mut set = FeatureSet::EMPTY;
        for f in iter {
            set.insert(f);
        }
        set
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Feature::cap_name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(" "))
        }
    }
}

/// What one KVM device offers, as far as pvrs-vmm uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmCapabilities {
    available: FeatureSet,
    /// Present on the device but treated as missing (`--kvm-without`).
    ignored: FeatureSet,
}

impl KvmCapabilities {
    /// Asks the device about every [`Feature`], on the VM fd where the
    /// device answers `KVM_CHECK_EXTENSION` there (KVM_CAP_CHECK_EXTENSION_VM:
    /// the answer can depend on the VM type), otherwise on the system fd.
    /// Features in `without` are then treated as missing.
    pub fn probe(kvm: &Kvm, vm: Option<&VmFd>, without: FeatureSet) -> KvmCapabilities {
        let vm = vm.filter(|_| kvm.check_extension(Cap::CheckExtensionVm));
        let present = Feature::ALL
            .into_iter()
            .filter(|f| match vm {
                Some(vm) => vm.check_extension(f.cap()),
                None => kvm.check_extension(f.cap()),
            })
            .collect::<FeatureSet>();
        KvmCapabilities::from_sets(present, without)
    }

    /// The capabilities of a device offering `present`, less `without`.
    pub fn from_sets(present: FeatureSet, without: FeatureSet) -> KvmCapabilities {
        KvmCapabilities {
            available: FeatureSet(present.0 & !without.0),
            ignored: FeatureSet(present.0 & without.0),
        }
    }

    /// Whether `f` may be used.
    pub fn has(&self, f: Feature) -> bool {
        self.available.contains(f)
    }

    /// The features that may not be used: missing on the device or ignored.
    pub fn missing(&self) -> FeatureSet {
        FeatureSet(FeatureSet::all().0 & !self.available.0)
    }

    /// Whether devices can raise interrupts in the guest: that needs the
    /// in-kernel interrupt controllers and irqfds to reach them.
    pub fn delivers_interrupts(&self) -> bool {
        self.has(Feature::Irqchip) && self.has(Feature::Irqfd)
    }

    /// The features, out of `needed`, that may not be used.
    pub fn lacking(&self, needed: &[Feature]) -> FeatureSet {
        needed.iter().copied().filter(|f| !self.has(*f)).collect()
    }
}

impl fmt::Display for KvmCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "has {}; lacks {}", self.available, self.missing())?;
        if self.ignored != FeatureSet::EMPTY {
            write!(f, " (of which {} only by --kvm-without)", self.ignored)?;
        }
        Ok(())
    }
}

/// A KVM device that cannot be opened.
#[derive(Debug)]
pub struct OpenError {
    /// The device.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opening {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for OpenError {}

/// Opens the KVM device at `path` and checks that it speaks the one KVM
/// API version there is (12), so that a wrong path (a file, another
/// character device) fails here with a clear message rather than on some
/// later ioctl.
pub fn open_device(path: &Path) -> Result<Kvm, OpenError> {
    let fail = |reason: String| OpenError {
        path: path.to_path_buf(),
        reason,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| fail("the path contains a NUL byte".into()))?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| fail(e.to_string()))?;
    match kvm.get_api_version() {
        12 => Ok(kvm),
        -1 => Err(fail(format!(
            "KVM_GET_API_VERSION failed ({}); not a KVM device",
            std::io::Error::last_os_error()
        ))),
        v => Err(fail(format!("KVM API version {v}, expected 12"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("IRQCHIP"), None);
    }

    #[test]
    fn parse_lists() {
        let s = FeatureSet::parse("irqchip,ioeventfd").unwrap();
        assert!(s.contains(Feature::Irqchip) && s.contains(Feature::Ioeventfd));
        assert!(!s.contains(Feature::Irqfd));
        assert_eq!(FeatureSet::parse("all").unwrap(), FeatureSet::all());
        assert!(FeatureSet::parse("irqchip,bogus").is_err());
        assert!(FeatureSet::parse("").is_err());
        assert_eq!(s.to_string(), "KVM_CAP_IRQCHIP KVM_CAP_IOEVENTFD");
    }

    #[test]
    fn ignored_features_count_as_missing() {
        let present: FeatureSet = [Feature::Irqchip, Feature::Irqfd, Feature::ExtCpuid]
            .into_iter()
            .collect();
        let caps = KvmCapabilities::from_sets(present, [Feature::Irqfd].into_iter().collect());
        assert!(caps.has(Feature::Irqchip) && !caps.has(Feature::Irqfd));
        assert!(!caps.delivers_interrupts());
        assert!(caps.missing().contains(Feature::Irqfd));
        assert!(caps.missing().contains(Feature::Ioeventfd));
        assert_eq!(
            caps.lacking(&[Feature::Irqchip, Feature::Irqfd]),
            [Feature::Irqfd].into_iter().collect()
        );
        assert!(caps.to_string().contains("only by --kvm-without"));

        let full = KvmCapabilities::from_sets(FeatureSet::all(), FeatureSet::EMPTY);
        assert!(full.delivers_interrupts());
        assert_eq!(full.missing(), FeatureSet::EMPTY);
    }

    #[test]
    fn bad_device_paths_are_errors() {
        let nul = Path::new(std::ffi::OsStr::from_bytes(b"/dev/k\0vm"));
        assert!(open_device(nul).unwrap_err().to_string().contains("NUL"));
        let missing = Path::new("/nonexistent/pvrs-kvm-device");
        assert!(open_device(missing).is_err());
        // A character device that is not KVM: the API version ioctl fails.
        let err = open_device(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a KVM device"), "{err}");
    }
}
