//! The command line of `pvrs-vmm`.
//!
//! ```text
//! pvrs-vmm --kernel bzImage [--initrd F] [--cmdline S] [--cpus N] [--mem MiB]
//!          [--blk path[,ro]]... [--net tap=NAME[,mac=M]]... [--balloon[=OPTS]]
//!          [--control SOCKET] [--kvm-dev PATH] [--kvm-without FEATURES]
//! pvrs-vmm control SOCKET COMMAND...
//! ```
//!
//! `--kvm-dev` names the KVM device (default `/dev/kvm`), for example
//! pvrs-kvm's `/dev/pvrs`; see [`crate::capabilities`] for what the VMM
//! does when that device lacks optional features, and `--kvm-without` to
//! try those fallbacks on a device that has everything.
//!
//! Options take their value either as the next argument or after `=`.

use std::fmt;
use std::path::PathBuf;

use crate::capabilities::{FeatureSet, DEFAULT_KVM_DEV};

/// The most vCPUs a VM may have (ACPI MADT processor entries use 8-bit
/// APIC IDs; the guest kernel config has `NR_CPUS=8`, this leaves room).
pub const MAX_CPUS: u8 = 64;
/// The least guest memory accepted, in MiB.
pub const MIN_MEM_MIB: u64 = 32;
/// The most guest memory accepted, in MiB (1 TiB).
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// The guest command line when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// One virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    /// The backing file (a regular file or a block device).
    pub path: PathBuf,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// One virtio-net interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The name of an existing tap interface (or one the VMM may create).
    pub tap: String,
    /// The guest MAC address; without it the device offers none and the
    /// guest picks a random one.
    pub mac: Option<[u8; 6]>,
}

/// The virtio-balloon device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Initial balloon size (pages the guest should give back), in MiB.
    pub target_mib: u64,
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// If set, request and print the guest's memory statistics every this
    /// many seconds.
    pub stats_interval_s: Option<u64>,
}

/// Everything needed to build and run one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// The guest kernel: a bzImage, or an ELF vmlinux with a PVH note.
    pub kernel: PathBuf,
    /// The initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// The guest command line, before the VMM adds its device entries.
    pub cmdline: String,
    /// The number of vCPUs.
    pub cpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// Disks, in order (the guest's vda, vdb, ...).
    pub blk: Vec<BlkConfig>,
    /// Network interfaces, in order.
    pub net: Vec<NetConfig>,
    /// The balloon, if wanted.
    pub balloon: Option<BalloonConfig>,
    /// A UNIX socket on which the VMM accepts control commands.
    pub control: Option<PathBuf>,
    /// The log level, overriding `PVRS_VMM_LOG`.
    pub log_level: Option<log::LevelFilter>,
    /// Test fault injection: every Nth used-ring entry claims more bytes
    /// than the device wrote (0: off). See `virtio::queue::set_hostile_used_len`.
    pub hostile_used_len: u32,
    /// The KVM device: `/dev/kvm`, or another device with the KVM ioctl
    /// API such as pvrs-kvm's `/dev/pvrs`.
    pub kvm_dev: PathBuf,
    /// Optional KVM features to treat as missing even where the device has
    /// them, to exercise the fallbacks (see [`crate::capabilities`]).
    pub kvm_without: FeatureSet,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Boot a VM.
    Run(Box<VmConfig>),
    /// Send one command to a running VMM's control socket and print the
    /// answer.
    Control {
        /// The socket path.
        socket: PathBuf,
        /// The command words, joined by spaces.
        command: String,
    },
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
}

/// A command line that cannot be used, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage_err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// The usage text.
pub const USAGE: &str = "\
usage: pvrs-vmm --kernel IMAGE [options]
       pvrs-vmm control SOCKET COMMAND...

Boots a Linux bzImage (or a PVH-capable ELF vmlinux) on /dev/kvm (or
another device with the KVM API, --kvm-dev) with a 16550 serial console on
stdin/stdout and virtio-mmio devices.

options:
  --kernel IMAGE          guest kernel (bzImage, or ELF vmlinux with a PVH note)
  --initrd FILE           initial ramdisk
  --cmdline STRING        kernel command line (default: console=ttyS0)
  --cpus N                vCPUs (default 1)
  --mem MIB               guest memory in MiB (default 512)
  --blk PATH[,ro]         virtio-blk disk backed by PATH (repeatable)
  --net tap=NAME[,mac=M]  virtio-net on the tap interface NAME (repeatable)
  --balloon[=OPTS]        virtio-balloon; OPTS: target=MIB,deflate_on_oom,stats=SECS
  --control SOCKET        accept control commands on this UNIX socket
  --log LEVEL             error|warn|info|debug|trace (default: $PVRS_VMM_LOG or warn)
  --kvm-dev PATH          the KVM device to use (default: /dev/kvm), e.g. /dev/pvrs;
                          optional features it lacks (KVM_CHECK_EXTENSION) are done
                          without: no irqchip means no interrupts reach the guest
                          and one vCPU only, no ioeventfd means queue notifications
                          come as MMIO exits, no KVM_GET_SUPPORTED_CPUID means a
                          minimal guest CPUID; `--log info` shows which
  --kvm-without LIST      treat these KVM features as missing (testing the fallbacks):
                          comma-separated irqchip, pit2, irqfd, ioeventfd,
                          set-tss-addr, set-identity-map-addr, ext-cpuid, or all
  --hostile-used-len N    testing guest drivers: every Nth used-ring entry claims
                          64 KiB more than was written (a lying device)
  --help, --version

control commands: status | balloon MIB | balloon-stats | quit

exit status: 0 guest powered off or rebooted, 1 guest crashed (triple
fault, kernel panic), 2 usage error, 3 VMM or KVM failure.
";

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    if args.first().map(String::as_str) == Some("control") {
        let Some(socket) = args.get(1) else {
            return usage_err("control: missing SOCKET");
        };
        if args.len() < 3 {
            return usage_err("control: missing COMMAND");
        }
        return Ok(Command::Control {
            socket: PathBuf::from(socket),
            command: args[2..].join(" "),
        });
    }

    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut cpus: u8 = 1;
    let mut mem_mib: u64 = 512;
    let mut blk = Vec::new();
    let mut net = Vec::new();
    let mut balloon = None;
    let mut control = None;
    let mut log_level = None;
    let mut hostile_used_len = 0;
    let mut kvm_dev = PathBuf::from(DEFAULT_KVM_DEV);
    let mut kvm_without = FeatureSet::EMPTY;

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut std::vec::IntoIter<String>| -> Result<String, UsageError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .ok_or_else(|| UsageError(format!("{name} needs a value"))),
            }
        };
        match name.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--kernel" => kernel = Some(PathBuf::from(value(&mut it)?)),
            "--initrd" => initrd = Some(PathBuf::from(value(&mut it)?)),
            "--cmdline" => cmdline = Some(value(&mut it)?),
            "--cpus" => {
                let v = value(&mut it)?;
                cpus = match v.parse::<u8>() {
                    Ok(n) if (1..=MAX_CPUS).contains(&n) => n,
                    _ => return usage_err(format!("--cpus {v}: expected 1..={MAX_CPUS}")),
                };
            }
            "--mem" => {
                let v = value(&mut it)?;
                mem_mib = match v.parse::<u64>() {
                    Ok(n) if (MIN_MEM_MIB..=MAX_MEM_MIB).contains(&n) => n,
                    _ => {
                        return usage_err(format!(
                            "--mem {v}: expected MiB in {MIN_MEM_MIB}..={MAX_MEM_MIB}"
                        ))
                    }
                };
            }
            "--blk" => blk.push(parse_blk(&value(&mut it)?)?),
            "--net" => net.push(parse_net(&value(&mut it)?)?),
            "--balloon" => balloon = Some(parse_balloon(inline.as_deref().unwrap_or(""))?),
            "--control" => control = Some(PathBuf::from(value(&mut it)?)),
            "--kvm-dev" => {
                let v = value(&mut it)?;
                if v.is_empty() || v.contains('\0') {
                    return usage_err(format!("--kvm-dev {v:?}: expected a device path"));
                }
                kvm_dev = PathBuf::from(v);
            }
            "--kvm-without" => {
                let v = value(&mut it)?;
                kvm_without = FeatureSet::parse(&v)
                    .map_err(|e| UsageError(format!("--kvm-without {v}: {e}")))?;
            }
            "--hostile-used-len" => {
                let v = value(&mut it)?;
                hostile_used_len = match v.parse::<u32>() {
                    Ok(n) if n > 0 => n,
                    _ => return usage_err(format!("--hostile-used-len {v}: expected N > 0")),
                };
            }
            "--log" => {
                let v = value(&mut it)?;
                log_level = Some(
                    crate::logger::parse_level(&v)
                        .ok_or_else(|| UsageError(format!("--log {v}: unknown level")))?,
                );
            }
            other => return usage_err(format!("unknown argument {other:?}")),
        }
    }
    let Some(kernel) = kernel else {
        return usage_err("--kernel is required");
    };
    let cfg = VmConfig {
        kernel,
        initrd,
        cmdline: cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
        cpus,
        mem_mib,
        blk,
        net,
        balloon,
        control,
        log_level,
        hostile_used_len,
        kvm_dev,
        kvm_without,
    };
    let devices = cfg.blk.len() + cfg.net.len() + usize::from(cfg.balloon.is_some());
    if devices > crate::layout::MAX_VIRTIO_DEVICES {
        return usage_err(format!(
            "{devices} virtio devices requested; at most {} are supported",
            crate::layout::MAX_VIRTIO_DEVICES
        ));
    }
    Ok(Command::Run(Box::new(cfg)))
}

fn parse_blk(spec: &str) -> Result<BlkConfig, UsageError> {
    let mut parts = spec.split(',');
    let path = parts.next().unwrap_or("");
    if path.is_empty() {
        return usage_err(format!("--blk {spec:?}: missing path"));
    }
    let mut read_only = false;
    for opt in parts {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => return usage_err(format!("--blk {spec:?}: unknown option {opt:?}")),
        }
    }
    Ok(BlkConfig {
        path: PathBuf::from(path),
        read_only,
    })
}

/// Parses a MAC address written as six colon-separated hex bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_net(spec: &str) -> Result<NetConfig, UsageError> {
    let mut tap = None;
    let mut mac = None;
    for opt in spec.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) if !name.is_empty() && name.len() < libc::IFNAMSIZ => {
                tap = Some(name.to_string())
            }
            Some(("mac", m)) => match parse_mac(m) {
                Some(m) if m[0] & 1 == 0 => mac = Some(m),
                _ => return usage_err(format!("--net {spec:?}: bad unicast MAC {m:?}")),
            },
            _ => return usage_err(format!("--net {spec:?}: expected tap=NAME[,mac=M]")),
        }
    }
    let Some(tap) = tap else {
        return usage_err(format!("--net {spec:?}: tap=NAME is required"));
    };
    Ok(NetConfig { tap, mac })
}

fn parse_balloon(spec: &str) -> Result<BalloonConfig, UsageError> {
    let mut cfg = BalloonConfig::default();
    for opt in spec.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            None if opt == "deflate_on_oom" => cfg.deflate_on_oom = true,
            Some(("target", v)) => {
                cfg.target_mib = v
                    .parse()
                    .map_err(|_| UsageError(format!("--balloon: bad target {v:?}")))?
            }
            Some(("stats", v)) => match v.parse::<u64>() {
                Ok(s) if s > 0 => cfg.stats_interval_s = Some(s),
                _ => return usage_err(format!("--balloon: bad stats interval {v:?}")),
            },
            _ => return usage_err(format!("--balloon: unknown option {opt:?}")),
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> VmConfig {
        match parse_args(args.iter().copied()).unwrap() {
            Command::Run(cfg) => *cfg,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let cfg = run(&["--kernel", "bz"]);
        assert_eq!(cfg.kernel, PathBuf::from("bz"));
        assert_eq!(cfg.cpus, 1);
        assert_eq!(cfg.mem_mib, 512);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
        assert!(cfg.blk.is_empty() && cfg.net.is_empty() && cfg.balloon.is_none());
        assert_eq!(cfg.kvm_dev, PathBuf::from("/dev/kvm"));
        assert_eq!(cfg.kvm_without, FeatureSet::EMPTY);
    }

    #[test]
    fn kvm_device_options() {
        let cfg = run(&[
            "--kernel",
            "bz",
            "--kvm-dev",
            "/dev/pvrs",
            "--kvm-without=irqchip,ioeventfd",
        ]);
        assert_eq!(cfg.kvm_dev, PathBuf::from("/dev/pvrs"));
        use crate::capabilities::Feature;
        assert!(cfg.kvm_without.contains(Feature::Irqchip));
        assert!(cfg.kvm_without.contains(Feature::Ioeventfd));
        assert!(!cfg.kvm_without.contains(Feature::ExtCpuid));
        assert_eq!(
            run(&["--kernel", "bz", "--kvm-without", "all"]).kvm_without,
            FeatureSet::all()
        );
    }

    #[test]
    fn full_command_line() {
        let cfg = run(&[
            "--kernel=bz",
            "--initrd",
            "rd",
            "--cmdline",
            "console=ttyS0 quiet",
            "--cpus",
            "4",
            "--mem=2048",
            "--blk",
            "a.img",
            "--blk",
            "b.img,ro",
            "--net",
            "tap=tap0,mac=52:54:00:12:34:56",
            "--balloon=target=64,stats=5,deflate_on_oom",
            "--log",
            "debug",
        ]);
        assert_eq!(cfg.log_level, Some(log::LevelFilter::Debug));
        assert_eq!(cfg.initrd, Some(PathBuf::from("rd")));
        assert_eq!(cfg.cmdline, "console=ttyS0 quiet");
        assert_eq!((cfg.cpus, cfg.mem_mib), (4, 2048));
        assert_eq!(
            cfg.blk,
            vec![
                BlkConfig {
                    path: "a.img".into(),
                    read_only: false
                },
                BlkConfig {
                    path: "b.img".into(),
                    read_only: true
                },
            ]
        );
        assert_eq!(cfg.net[0].tap, "tap0");
        assert_eq!(cfg.net[0].mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        let b = cfg.balloon.unwrap();
        assert_eq!(
            (b.target_mib, b.stats_interval_s, b.deflate_on_oom),
            (64, Some(5), true)
        );
    }

    #[test]
    fn plain_balloon_flag() {
        assert_eq!(
            run(&["--kernel", "k", "--balloon"]).balloon,
            Some(BalloonConfig::default())
        );
    }

    #[test]
    fn errors() {
        for bad in [
            &[][..],
            &["--kernel"],
            &["--kernel", "k", "--cpus", "0"],
            &["--kernel", "k", "--cpus", "many"],
            &["--kernel", "k", "--mem", "1"],
            &["--kernel", "k", "--blk", ",ro"],
            &["--kernel", "k", "--blk", "x,rx"],
            &["--kernel", "k", "--net", "mac=52:54:00:12:34:56"],
            &["--kernel", "k", "--net", "tap=t,mac=01:00:00:00:00:00"],
            &["--kernel", "k", "--balloon=stats=0"],
            &["--kernel", "k", "--bogus"],
            &["--kernel", "k", "--log", "loud"],
            &["--kernel", "k", "--kvm-dev"],
            &["--kernel", "k", "--kvm-dev", ""],
            &["--kernel", "k", "--kvm-dev", "/dev/k\0vm"],
            &["--kernel", "k", "--kvm-without", "irqchip,lapic"],
            &["--kernel", "k", "--kvm-without="],
            &["control", "sock"],
        ] {
            assert!(parse_args(bad.iter().copied()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn too_many_devices() {
        let mut args = vec!["--kernel", "k"];
        for _ in 0..=crate::layout::MAX_VIRTIO_DEVICES {
            args.extend(["--blk", "d"]);
        }
        assert!(parse_args(args).is_err());
    }

    #[test]
    fn control_subcommand() {
        assert_eq!(
            parse_args(["control", "/s", "balloon", "64"]).unwrap(),
            Command::Control {
                socket: "/s".into(),
                command: "balloon 64".into()
            }
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("00:11:22:33:44:ff"),
            Some([0, 0x11, 0x22, 0x33, 0x44, 0xff])
        );
        assert_eq!(parse_mac("00:11:22:33:44"), None);
        assert_eq!(parse_mac("00:11:22:33:44:55:66"), None);
        assert_eq!(parse_mac("0:11:22:33:44:55"), None);
        assert_eq!(parse_mac("zz:11:22:33:44:55"), None);
    }
}
