"""Boots a guest kernel with a workload initramfs and reports the result.

Hosts:

* ``tcg``: QEMU with the TCG accelerator; there is no KVM underneath, so the
  guest sees no KVM paravirtual interface.
* ``kvm``: the machine's /dev/kvm when the CPU has vmx or svm. Otherwise the
  nested KVM host: QEMU TCG with ``-cpu max`` (which emulates SVM with
  nested paging) boots an L1 Linux with kvm_amd, whose init runs QEMU with
  ``-enable-kvm`` to boot the guest (L2).

The guest's console is streamed as it comes. A run ends when the guest
prints its result marker (its init then powers off), or on a kernel panic,
a KVM emulation failure, a QEMU exit or the timeout, each with a clear
message. The QEMU process group is killed in every case, also when the
runner is interrupted or killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import initramfs, paths

QEMU = "qemu-system-x86_64"

# Exit statuses of the runner itself, when the script's status is unknown.
EXIT_TIMEOUT = 124
EXIT_GUEST_FAILED = 125     # kernel panic, or QEMU ended without a result
EXIT_KVM_FAILURE = 126      # KVM internal error / emulation failure

PANIC_RE = re.compile(r"Kernel panic - not syncing|---\[ end Kernel panic")
KVM_FAILURE_RE = re.compile(r"KVM internal error|emulation failure|KVM: entry failed")


def host_has_hw_virt() -> bool:
    """True when this CPU exposes VT-x or AMD-V and /dev/kvm exists."""
    if not os.path.exists("/dev/kvm"):
        return False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line.split()
                return "vmx" in flags or "svm" in flags
    return False


@dataclass
class Disk:
    """A raw image as a virtio-blk disk, with options. A plain path in
    `GuestConfig.disks` is a `Disk` with none. `drive_opts` and
    `device_opts` are QEMU's (`-drive`, `-device virtio-blk-pci`), e.g.
    "discard=unmap,detect-zeroes=off" and "serial=abc,num-queues=2"."""
    path: Path
    read_only: bool = False
    drive_opts: str = ""
    device_opts: str = ""


def _disk(d: "Path | str | Disk") -> Disk:
    return d if isinstance(d, Disk) else Disk(Path(d))


@dataclass
class GuestConfig:
    host: str = "tcg"                      # "tcg" or "kvm"
    script: Path | None = None
    kernel: Path = paths.GUEST_KERNEL
    l1_kernel: Path | None = None          # nested L1 kernel (default: kernel)
    append: str = ""
    smp: int = 2
    mem: int = 512                         # MiB
    disks: list[Path | Disk] = field(default_factory=list)
    qemu_args: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # Host programs copied into the guest's /usr/local/bin with the shared
    # libraries they need. The guest's busybox sh runs its own applets
    # ahead of PATH: call one that busybox also has by its full path.
    binaries: list[Path] = field(default_factory=list)
    load_modules: list[str] | None = None  # None: every pvrs_*.ko built
    timeout: float = 300.0
    # A guest that prints nothing for this long is hung (nested TCG guests
    # occasionally stall): stop early instead of waiting for the timeout.
    silence_timeout: float = 180.0
    quiet: bool = False                    # less console output
    vmm: str = "qemu"                      # the KVM guest's VMM: "qemu" or "pvrs" (pvrs-vmm)
    vmm_args: list[str] = field(default_factory=list)  # extra pvrs-vmm arguments
    # Nested KVM host only: shell code that the L1 runs instead of the one
    # VMM command, for benchmarks that boot several guests in one L1. It
    # finds the L2 kernel and initramfs in /l2, QEMU and (with vmm "pvrs")
    # /usr/bin/pvrs-vmm on its PATH, and `l1_files` in /usr/bin. "@NONCE@"
    # in it becomes the run's nonce: the script prints the result marker
    # `PVRS-RESULT-@NONCE@: exit=N` itself. The L2 initramfs then marks its
    # own results with "@NONCE@-l2", so that they do not end the run.
    l1_script: str | None = None
    l1_files: list[Path] = field(default_factory=list)
    # Nested KVM host only: the hypervisor the L1 loads before it starts the
    # VMM. "kvm_amd" (kvm.ko + kvm-amd.ko, modules of our L1 kernel) or
    # "none" (SVM left off, for a script that loads its own hypervisor
    # module; /dev/kvm is then not required).
    backend: str = "kvm_amd"
    l1_smp: int = 2                        # the L1's CPUs
    # Nested KVM host only: how often a run is repeated whose L1 (or L2
    # kernel) died before the guest script started: the TCG-emulated L1
    # occasionally faults or stalls in its own boot. Said in the log.
    l1_retries: int = 2
    # TCG host only: run QEMU in this network namespace (`ip netns exec`),
    # where the test made the tap devices its -netdev tap options name.
    netns: str | None = None


@dataclass
class GuestResult:
    status: int            # the script's exit status, or one of EXIT_*
    reason: str            # "ok", "timeout", "panic", "kvm-failure", "no-result"
    host_mode: str         # "tcg", "kvm", "nested-kvm"
    seconds: float
    console: str
    # (host wall-clock time when the line arrived, line), for tests that
    # compare guest output with the host's clock.
    timed_lines: list = field(default_factory=list)


class GuestSession:
    """A guest running in the background, for tests that act on it from the
    host while it runs: wait for console lines, talk QMP to its QEMU (host
    tcg only: the socket is `self.qmp_path`).

        with GuestSession(cfg) as g:
            g.expect(r"READY")
            g.qmp().execute("balloon", value=...)
            ...
        g.result  # the GuestResult once the guest has ended
    """

    def __init__(self, cfg: GuestConfig, echo=lambda line: None):
        import queue
        import threading
        if cfg.host != "tcg":
            raise ValueError("GuestSession drives QEMU over QMP: host tcg only")
        self.tmp = tempfile.TemporaryDirectory(prefix="pvrs-session-")
        self.qmp_path = str(Path(self.tmp.name) / "qmp.sock")
        self.pid_path = Path(self.tmp.name) / "qemu.pid"
        cfg.qemu_args = [*cfg.qemu_args, "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                         "-pidfile", str(self.pid_path)]
        self.lines = queue.Queue()
        self.history = []
        self.result = None
        self._qmp = None

        def feed(line):
            self.lines.put(line)
            echo(line)

        def run():
            try:
                self.result = run_guest(cfg, echo=feed)
            finally:
                self.lines.put(None)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def expect(self, pattern: str, timeout: float = 120.0):
        """The first match of `pattern` in a console line from now on."""
        import queue
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no console line matching {pattern!r} within {timeout} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the guest ended before a line matching {pattern!r}")
            self.history.append(line)
            if m := rx.search(line):
                return m

    def qmp(self):
        from .qmp import Qmp
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_path)
        return self._qmp

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to the guest's QEMU (by default SIGKILL: the guest
        stops at once, with no chance to write anything more)."""
        os.kill(int(self.pid_path.read_text()), sig)

    def wait(self, timeout: float = 300.0):
        self.thread.join(timeout)
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None and self.thread.is_alive():
            # The test failed while the guest runs: end it now rather than
            # waiting for its script or its timeout.
            try:
                self.qmp().execute("quit")
            except Exception:  # noqa: BLE001 - best effort, the guest may be gone
                pass
        if self._qmp is not None:
            try:
                self._qmp.close()
            except OSError:
                pass
        self.wait()
        self.tmp.cleanup()


def run_guest_retrying_hangs(cfg: GuestConfig, **kwargs) -> GuestResult:
    """run_guest for tests on the nested KVM host, whose TCG-emulated L1
    occasionally stalls: a run whose script started but that ends without
    any result marker (a hang, or QEMU dying) is retried once, and says so.
    (run_guest itself repeats runs that died before the script started.) A
    script that reported a status, even a failing one, is never retried."""
    log = kwargs.get("log", lambda msg: print(f"run-guest: {msg}", file=sys.stderr, flush=True))
    result = run_guest(cfg, **kwargs)
    if (result.reason in ("hang", "no-result") and result.host_mode == "nested-kvm"
            and SCRIPT_STARTED in result.console):
        log(f"retrying once: the nested guest ended without a result ({result.reason}); "
            "its console is in build/logs/guests/")
        result = run_guest(cfg, **kwargs)
    return result


# Drivers for devices that also have a C driver: never loaded by default, so
# that a test says which of the two drives its disk or NIC.
DEVICE_DRIVERS = {"pvrs_virtio_blk", "pvrs_virtio_net"}
# Host modules: the hypervisor (pvrs-kvm) is loaded in the nested L1 by the
# runner (--backend pvrs) or by a test, never in a guest.
HOST_MODULES = {"pvrs_kvm"}


def default_modules(append: str = "", modules_dir: Path = paths.GUEST_MODULES) -> list[str]:
    """The pvrs modules in load order (the hypercall core first), without
    the virtio block and network drivers (DEVICE_DRIVERS) and the host
    modules (HOST_MODULES). The Rust
    clocksource only when the C kvm-clock is off (`no-kvmclock`): otherwise
    the C driver owns the MSRs and pvrs_pvclock refuses to load."""
    names = sorted(p.stem for p in modules_dir.glob("pvrs_*.ko") if p.stem not in DEVICE_DRIVERS | HOST_MODULES)
    if "no-kvmclock" not in append.split():
        names = [n for n in names if n != "pvrs_pvclock"]
    order = {"pvrs_hypercall": 0}
    return sorted(names, key=lambda n: (order.get(n, 1), n))


def _pdeathsig_kill() -> None:
    """In the child before exec: its own process group, and SIGKILL when
    the runner dies, so that no QEMU outlives it."""
    os.setpgrp()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def key_values(text: str) -> dict[str, str]:
    """The `key=value` words of a line of guest output (the form the pvrs
    modules, guest tools and guest scripts print)."""
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def _kernel_cmdline(cfg: GuestConfig) -> str:
    """The guest kernel command line, the same under every VMM."""
    return ("console=ttyS0 panic=-1 " + ("quiet " if cfg.quiet else "") + cfg.append).strip()


def _qemu_opts(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def _guest_qemu_argv(cfg: GuestConfig, kernel: str, initrd: str, disks: list,
                     accel: list[str], qemu: list[str] | None = None) -> list[str]:
    """QEMU's command line for `cfg`; `qemu` is the binary with its own
    options (default: the QEMU on the PATH, as inside the nested L1)."""
    argv = [*(qemu or [QEMU]), *accel, "-m", str(cfg.mem), "-smp", str(cfg.smp),
            "-kernel", kernel, "-initrd", initrd, "-append", _kernel_cmdline(cfg),
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-no-reboot"]
    for i, disk in enumerate(map(_disk, disks)):
        argv += ["-drive", _qemu_opts(f"file={disk.path},format=raw,if=none,id=disk{i}",
                                      "readonly=on" if disk.read_only else "", disk.drive_opts),
                 "-device", _qemu_opts(f"virtio-blk-pci,drive=disk{i}", disk.device_opts)]
    return argv + cfg.qemu_args


def _guest_pvrs_argv(cfg: GuestConfig, vmm: str, kernel: str, initrd: str,
                     disks: list) -> list[str]:
    """pvrs-vmm booting the guest: the same kernel command line as QEMU gets."""
    argv = [vmm, "--kernel", kernel, "--initrd", initrd, "--cmdline", _kernel_cmdline(cfg),
            "--cpus", str(cfg.smp), "--mem", str(cfg.mem)]
    for disk in map(_disk, disks):
        if disk.drive_opts or disk.device_opts:
            raise ValueError("QEMU disk options do not apply to --vmm pvrs")
        argv += ["--blk", f"{disk.path},ro" if disk.read_only else str(disk.path)]
    if BACKEND_DEVICE.get(cfg.backend) not in (None, "/dev/kvm"):
        argv += ["--kvm-dev", BACKEND_DEVICE[cfg.backend]]
    return argv + cfg.vmm_args


class _Console:
    """Collects console output, echoes it, and spots the end conditions."""

    def __init__(self, nonce: str, echo) -> None:
        self.result_re = re.compile(rf"PVRS-RESULT-{nonce}: exit=(\d+)")
        self.l1_result_re = re.compile(rf"PVRS-L1-RESULT-{nonce}: qemu=(\S+)")
        self.echo = echo
        self.text = []
        self.timed = []
        self.partial = b""
        self.status: int | None = None
        self.l1_qemu: str | None = None
        self.panic = False
        self.kvm_failure = False

    def feed(self, data: bytes) -> None:
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self.text.append(line)
            self.timed.append((time.time(), line))
            self.echo(line)
            if m := self.result_re.search(line):
                self.status = int(m.group(1))
            if m := self.l1_result_re.search(line):
                self.l1_qemu = m.group(1)
            if PANIC_RE.search(line):
                self.panic = True
            if KVM_FAILURE_RE.search(line):
                self.kvm_failure = True

    def finish(self) -> None:
        if self.partial:
            self.feed(b"\n")


# The module each nested-host backend loads in L1 (a file name in the guest
# kernel's module directory, without .ko), after its dependencies.
BACKEND_MODULE = {"kvm_amd": "kvm-amd", "pvrs": "pvrs_kvm", "none": None}
# The device file each backend's VMM opens in L1.
BACKEND_DEVICE = {"kvm_amd": "/dev/kvm", "pvrs": "/dev/pvrs", "none": None}
BACKENDS = tuple(BACKEND_MODULE)
# The backends that run guests: the hypervisors a suite compares.
KVM_BACKENDS = ("kvm_amd", "pvrs")


def module_load_order(module: str, modules_dir: Path = paths.GUEST_MODULES) -> list[str]:
    """`module` after the modules it depends on (the `depends=` of its
    .modinfo), for an init whose busybox insmod resolves nothing: kvm-amd
    needs kvm, which needs irqbypass."""
    data = (modules_dir / f"{module}.ko").read_bytes()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    deps = [d for d in (m.group(1).decode().split(",") if m else []) if d]
    order = []
    for d in deps:
        order += [x for x in module_load_order(d, modules_dir) if x not in order]
    return order + [module]


SCRIPT_STARTED = "PVRS-INIT: running the script"


def run_guest(cfg: GuestConfig, echo=lambda line: print(line, flush=True),
              log=lambda msg: print(f"run-guest: {msg}", file=sys.stderr, flush=True)) -> GuestResult:
    """Boots the guest described by `cfg`, runs its script, returns the result.
    On the nested KVM host, a run whose L1 died before the guest script
    started is repeated up to `cfg.l1_retries` times."""
    attempt = 0
    while True:
        result = _run_guest_once(cfg, echo, log)
        died_early = (result.host_mode == "nested-kvm" and result.reason != "ok"
                      and SCRIPT_STARTED not in result.console)
        if not died_early or attempt >= cfg.l1_retries:
            return result
        attempt += 1
        log(f"the nested host died before the guest script started ({result.reason}); "
            f"retry {attempt} of {cfg.l1_retries} (console in build/logs/guests/)")


def _run_guest_once(cfg: GuestConfig, echo, log) -> GuestResult:
    if cfg.script is None:
        raise ValueError("a script is required")
    if not cfg.kernel.exists():
        raise FileNotFoundError(f"{cfg.kernel} does not exist: run `make guest` first")
    if cfg.vmm not in ("qemu", "pvrs"):
        raise ValueError(f"unknown vmm {cfg.vmm!r}")
    if cfg.vmm_args and cfg.vmm != "pvrs":
        raise ValueError("--vmm-arg needs --vmm pvrs")
    if cfg.vmm == "pvrs":
        if cfg.host != "kvm":
            raise ValueError("--vmm pvrs needs --host kvm")
        if cfg.qemu_args:
            raise ValueError("--qemu-arg does not apply to --vmm pvrs (use --vmm-arg)")
        if not paths.VMM.exists():
            raise FileNotFoundError(f"{paths.VMM} does not exist: run tests/build-vmm first")
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r} (one of {', '.join(BACKENDS)})")
    if cfg.l1_script is not None and (cfg.host != "kvm" or host_has_hw_virt()):
        raise ValueError("l1_script needs the nested KVM host (host kvm on a CPU without vmx/svm)")
    nonce = secrets.token_hex(6)
    l2_nonce = f"{nonce}-l2" if cfg.l1_script is not None else nonce
    load = default_modules(cfg.append) if cfg.load_modules is None else cfg.load_modules
    if cfg.disks and cfg.load_modules is None:
        # --disk without a driver choice: the C virtio_blk (a module).
        load = ["virtio_blk"] + load
    with tempfile.TemporaryDirectory(prefix="pvrs-run-") as tmp:
        tmp = Path(tmp)
        initrd = tmp / "initrd.gz"
        initramfs.build_workload_image(initrd, cfg.script, l2_nonce, load, cfg.files,
                                       binaries=cfg.binaries)

        if cfg.host == "tcg":
            mode = "tcg"
            log("host tcg: QEMU TCG, no KVM")
            argv = _guest_qemu_argv(cfg, str(cfg.kernel), str(initrd),
                                    cfg.disks, ["-accel", "tcg", "-cpu", "max"], paths.l0_qemu())
            if cfg.netns:
                argv = ["ip", "netns", "exec", cfg.netns, *argv]
        elif cfg.host == "kvm" and host_has_hw_virt():
            mode = "kvm"
            log(f"host kvm: this machine's /dev/kvm (the CPU has vmx/svm), VMM {cfg.vmm}")
            if cfg.vmm == "pvrs":
                argv = _guest_pvrs_argv(cfg, str(paths.VMM), str(cfg.kernel), str(initrd),
                                        cfg.disks)
            else:
                argv = _guest_qemu_argv(cfg, str(cfg.kernel), str(initrd),
                                        cfg.disks, ["-enable-kvm", "-cpu", "host"])
        elif cfg.host == "kvm":
            mode = "nested-kvm"
            l2_vmm = "pvrs-vmm" if cfg.vmm == "pvrs" else "QEMU -enable-kvm"
            l0_qemu = paths.l0_qemu()
            log("host kvm: nested, since this CPU has no vmx/svm: QEMU TCG -cpu max "
                f"({l0_qemu[0]}) runs an L1 Linux with {cfg.backend}, and {l2_vmm} "
                "in L1 boots the guest")
            # Inside L1 the disks are L1's virtio disks, in order: /dev/vda, ...
            # (with the options of the images they stand for).
            l1_disks = [dataclasses.replace(_disk(d), path=Path(f"/dev/vd{chr(ord('a') + i)}"))
                        for i, d in enumerate(cfg.disks)]
            if cfg.vmm == "pvrs":
                l2_argv = _guest_pvrs_argv(cfg, "/usr/bin/pvrs-vmm", "/l2/bzImage", "/l2/initrd.gz",
                                           l1_disks)
            elif cfg.backend == "pvrs":
                raise ValueError("--backend pvrs runs the guest with --vmm pvrs (QEMU on /dev/pvrs "
                                 "is not supported yet)")
            else:
                l2_argv = _guest_qemu_argv(cfg, "/l2/bzImage", "/l2/initrd.gz", l1_disks,
                                           ["-enable-kvm", "-cpu", "host"])
            l1_initrd = tmp / "l1-initrd.gz"
            # L1 passes --disk images on as its own virtio disks: it needs
            # the C virtio_blk (a module) for them.
            l1_modules = ["virtio_blk"] if cfg.disks else []
            # KVM is a module in our L1 kernel; a kernel with it built in
            # (an older build, or a foreign --l1-kernel) has no .ko to load.
            top = BACKEND_MODULE[cfg.backend]
            if top and (paths.GUEST_MODULES / f"{top}.ko").exists():
                l1_modules += module_load_order(top)
            l1_script = None
            if cfg.l1_script is not None:
                l1_script = cfg.l1_script.replace("@NONCE@", nonce)
            initramfs.nested_host_image(l1_initrd, nonce, cfg.kernel, initrd, l2_argv, l1_modules,
                                        backend=cfg.backend, log=log,
                                        vmm_binary=paths.VMM if cfg.vmm == "pvrs" else None,
                                        l1_script=l1_script, l1_files=cfg.l1_files)
            # tsc=reliable: under TCG, L1's clocksource watchdog can find the
            # TSC "unstable" when this machine is loaded; L1 then leaves the
            # TSC clocksource, KVM drops its master clock, and the guest's
            # kvmclock crawls (seen: CLOCK_PAIRING tsc=0, a `sleep 2` taking
            # 16, 29, 58, 117 s). TCG's TSC follows the host clock: trust it.
            # L1 is our kernel unless told otherwise: a foreign guest kernel
            # (--kernel) need not have KVM at all.
            l1_cfg = GuestConfig(host="tcg", kernel=cfg.l1_kernel or paths.GUEST_KERNEL,
                                 smp=cfg.l1_smp, mem=cfg.mem + 1024, append="quiet tsc=reliable",
                                 quiet=True)
            argv = _guest_qemu_argv(l1_cfg, str(l1_cfg.kernel), str(l1_initrd),
                                    [Disk(_disk(d).path, read_only=_disk(d).read_only) for d in cfg.disks],
                                    ["-accel", "tcg", "-cpu", "max"], l0_qemu)
        else:
            raise ValueError(f"unknown host {cfg.host!r}")

        result = _supervise(argv, cfg.timeout, nonce, mode, echo, log, cfg.silence_timeout)
        _save_console(result)
        return result


def _save_console(result: "GuestResult") -> None:
    """Keeps each guest's console in build/logs/guests/ (the newest 200),
    so that a failure in CI can be read afterwards."""
    logs = paths.BUILD / "logs" / "guests"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        name = time.strftime("%Y%m%d-%H%M%S") + f"-{result.host_mode}-{result.reason}-{result.status}.log"
        (logs / name).write_text(result.console + "\n")
        for old in sorted(logs.glob("*.log"))[:-200]:
            old.unlink()
    except OSError:
        pass


def _supervise(argv, timeout, nonce, mode, echo, log, silence_timeout=180.0) -> GuestResult:
    console = _Console(nonce, echo)
    start = time.monotonic()
    last_output = start
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_pdeathsig_kill)

    def kill_guest(*_):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # Signal handlers can only be set in the main thread; a guest run from
    # another thread (GuestSession) relies on PR_SET_PDEATHSIG and on its
    # owner for cleanup.
    import threading
    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if in_main else ()
    old_handlers = {s: signal.getsignal(s) for s in signals}

    def on_signal(signum, _frame):
        kill_guest()
        log(f"interrupted by signal {signum}; QEMU killed")
        raise KeyboardInterrupt

    for s in old_handlers:
        signal.signal(s, on_signal)
    reason = "no-result"
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                reason = "timeout"
                break
            if time.monotonic() - last_output > silence_timeout:
                reason = "hang"
                break
            if sel.select(timeout=min(left, 1.0)):
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                last_output = time.monotonic()
                console.feed(data)
                if console.status is not None or console.panic or console.kvm_failure:
                    # Read what follows the result for a little longer: the
                    # power-off, and on the nested host everything up to L1's
                    # own result marker (L1 prints the VMM's messages after
                    # the VMM exits).
                    nested = mode == "nested-kvm" and console.status is not None
                    deadline = time.monotonic() + (30 if nested else 5 if console.status is not None else 2)
                    quiet_gap = 5.0 if nested else 0.2
                    while time.monotonic() < deadline and console.l1_qemu is None:
                        if not sel.select(timeout=quiet_gap):
                            break
                        more = os.read(proc.stdout.fileno(), 65536)
                        if not more:
                            break
                        console.feed(more)
                    break
            elif proc.poll() is not None:
                break
    finally:
        kill_guest()
        proc.wait()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        console.finish()

    seconds = time.monotonic() - start
    if console.status is not None:
        status, reason = console.status, "ok"
        log(f"guest script exited with status {status} ({mode}, {seconds:.1f} s)")
    elif console.kvm_failure:
        status, reason = EXIT_KVM_FAILURE, "kvm-failure"
        log(f"stopped: KVM internal error / emulation failure in the guest ({mode}, {seconds:.1f} s)")
    elif console.panic:
        status, reason = EXIT_GUEST_FAILED, "panic"
        log(f"stopped: the guest kernel panicked ({mode}, {seconds:.1f} s)")
    elif reason == "timeout":
        status = EXIT_TIMEOUT
        log(f"stopped: timeout after {timeout:.0f} s without a result ({mode})")
    elif reason == "hang":
        status = EXIT_TIMEOUT
        log(f"stopped: no console output for {silence_timeout:.0f} s: the guest hangs ({mode})")
    else:
        status = EXIT_GUEST_FAILED
        extra = f"; the L1 QEMU ended with {console.l1_qemu}" if console.l1_qemu else ""
        log(f"stopped: QEMU ended (status {proc.returncode}) before the guest reported a result{extra} ({mode})")
    return GuestResult(status, reason, mode, seconds, "\n".join(console.text), console.timed)
