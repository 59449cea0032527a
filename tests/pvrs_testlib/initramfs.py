"""Builds the gzip'd cpio initramfs images that the guests boot.

Two kinds:

* the workload image (`build_workload_image`): busybox, hackbench and the
  libraries they need, the pvrs guest tools, the kernel modules, `--file`
  payloads under /files, extra host programs in /usr/local/bin, and an
  /init that loads the modules, runs the script, prints a result marker
  carrying the script's exit status and powers off;
* the nested-host image (`nested_host_image`): busybox and qemu-system-x86_64
  with its libraries and firmware, for the L1 of the nested KVM host. Its big
  part is cached in the cache directory; the per-run part (the L2 kernel,
  its initramfs and the QEMU command line) is a second, small cpio archive
  appended to it, which the kernel unpacks after the first.
"""

import gzip
import hashlib
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import paths

BUSYBOX = Path("/bin/busybox")
HACKBENCH = Path("/usr/bin/hackbench")
QEMU = Path("/usr/bin/qemu-system-x86_64")
QEMU_DATA_DIRS = [Path("/usr/share/qemu"), Path("/usr/share/seabios")]

# The init of the workload guest. The marker line includes a per-run nonce so
# that nothing the script prints can be mistaken for it.
WORKLOAD_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin:/pvrs/tools
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
hostname pvrs-guest
echo "PVRS-INIT: kernel $(uname -r), $(nproc) cpus, cmdline: $(cat /proc/cmdline)"
for m in $(cat /pvrs/load-modules); do
    if insmod "/modules/$m.ko"; then
        echo "PVRS-INIT: loaded $m"
    else
        echo "PVRS-INIT: insmod $m failed"
    fi
done
echo "PVRS-INIT: running the script"
cd /tmp
sh /pvrs/script
rc=$?
echo "PVRS-RESULT-@NONCE@: exit=$rc"
sync
poweroff -f
sleep 5
"""

# The init of the nested L1 host: it checks that KVM is usable, then runs the
# QEMU that boots the workload guest, and reports how that QEMU ended.
NESTED_HOST_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
for m in $(cat /l2/load-modules 2>/dev/null); do
    insmod "/modules/$m.ko" || echo "PVRS-L1: insmod $m failed"
done
backend=$(cat /l2/backend)
device=/dev/kvm; [ "$backend" = pvrs ] && device=/dev/pvrs
if [ "$backend" != none ] && [ ! -c $device ]; then
    echo "PVRS-L1: no $device in L1 (did the $backend module load? dmesg follows)"
    dmesg | grep -i -E 'kvm|svm|pvrs' | tail -n 20
    echo "PVRS-L1-RESULT-@NONCE@: qemu=none"
    poweroff -f
fi
echo "PVRS-L1: $(grep -c ^processor /proc/cpuinfo) cpus, $(grep -m1 -o -w -E 'svm|vmx' /proc/cpuinfo) present, backend $(cat /l2/backend); starting the guest"
# The VMM's own messages go to a file and are shown after it ends: on the
# shared console they could split the guest's lines (its result marker).
sh /l2/run-qemu.sh </dev/null 2>/tmp/vmm-stderr
rc=$?
sed 's/^/PVRS-L1-VMM: /' /tmp/vmm-stderr
echo "PVRS-L1-RESULT-@NONCE@: qemu=$rc"
poweroff -f
sleep 5
"""


def _shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries `binary` loads, as ldd resolves them here (none
    for a static executable)."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    proc.check_returncode()
    out = proc.stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libs.append(Path(parts[0]))
    return libs


def _copy_into(root: Path, src: Path, dest: Path | None = None) -> None:
    """Copies `src` to the same absolute path (or `dest`) under `root`."""
    target = root / (dest or src).relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, target, symlinks=False, dirs_exist_ok=True)
    else:
        shutil.copy2(src, target, follow_symlinks=True)


def _copy_binary(root: Path, binary: Path, dest: Path | None = None) -> None:
    """Copies `binary` (to `dest`, if given) and the shared libraries it
    loads, which keep their paths."""
    _copy_into(root, binary, dest)
    for lib in _shared_libraries(binary):
        _copy_into(root, lib)


def _write_cpio_gz(root: Path, out: Path, level: int = 6) -> None:
    """Packs `root` as a newc cpio archive owned by root, gzip'd."""
    names = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                          cwd=root, input=names, check=True, capture_output=True).stdout
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=level) as f:
        f.write(cpio)
    tmp.replace(out)


def _skeleton(root: Path) -> None:
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")


def build_workload_image(out: Path, script: Path, nonce: str, load_modules: list[str],
                         files: list[Path], modules_dir: Path = paths.GUEST_MODULES,
                         tools_dir: Path = paths.GUEST_TOOLS, binaries: list[Path] = ()) -> None:
    """The initramfs of the guest that runs `script`. `binaries` are host
    programs put into /usr/local/bin under their own names, with their
    libraries."""
    with tempfile.TemporaryDirectory(prefix="pvrs-initramfs-") as tmp:
        root = Path(tmp)
        _skeleton(root)
        _copy_binary(root, HACKBENCH)
        (root / "pvrs").mkdir()
        init = root / "init"
        init.write_text(WORKLOAD_INIT.replace("@NONCE@", nonce))
        init.chmod(0o755)
        shutil.copy2(script, root / "pvrs" / "script")
        (root / "pvrs" / "load-modules").write_text("\n".join(load_modules) + "\n")
        if modules_dir.is_dir():
            shutil.copytree(modules_dir, root / "modules")
        if tools_dir.is_dir():
            shutil.copytree(tools_dir, root / "pvrs" / "tools")
        for b in binaries:
            _copy_binary(root, Path(b), Path("/usr/local/bin") / Path(b).name)
        if files:
            (root / "files").mkdir()
            for f in files:
                _copy_into(root, f, Path("/files") / f.name)
        _write_cpio_gz(root, out)


def _nested_base_key() -> str:
    """Identifies the cached L1 base image: QEMU's version and our init."""
    h = hashlib.sha256()
    h.update(NESTED_HOST_INIT.encode())
    h.update(subprocess.run([str(QEMU), "--version"], check=True, capture_output=True).stdout)
    h.update(str(QEMU.stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def nested_host_base(log=print) -> tuple[Path, str]:
    """The cached L1 base image (busybox, QEMU, firmware) and its init's nonce
    placeholder-free key. Built on first use (about 30 s), then reused."""
    key = _nested_base_key()
    out = paths.CACHE / "nested-l1" / f"base-{key}.cpio.gz"
    if out.exists():
        return out, key
    log(f"building the nested L1 base image (QEMU and firmware) into {out} ...")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvrs-l1-") as tmp:
        root = Path(tmp)
        _skeleton(root)
        _copy_binary(root, QEMU)
        for d in QEMU_DATA_DIRS:
            _copy_into(root, d)
        _write_cpio_gz(root, out, level=1)
    log(f"nested L1 base image: {out.stat().st_size // (1 << 20)} MiB")
    return out, key


def nested_host_image(out: Path, nonce: str, l2_kernel: Path, l2_initrd: Path,
                      qemu_argv: list[str], l1_load_modules: list[str],
                      backend: str = "kvm_amd",
                      modules_dir: Path = paths.GUEST_MODULES, log=print,
                      vmm_binary: Path | None = None, l1_script: str | None = None,
                      l1_files: list[Path] = ()) -> None:
    """The L1 initramfs: the cached base plus a per-run archive with the L2
    kernel, the L2 initramfs and the VMM command line that boots them
    (QEMU's, or pvrs-vmm's, whose static binary `vmm_binary` is then added
    as /usr/bin/pvrs-vmm). `l1_script`, if given, runs instead of that one
    command line; `l1_files` are added to /usr/bin."""
    base, _ = nested_host_base(log)
    with tempfile.TemporaryDirectory(prefix="pvrs-l1-run-") as tmp:
        root = Path(tmp)
        (root / "l2").mkdir()
        init = root / "init"
        init.write_text(NESTED_HOST_INIT.replace("@NONCE@", nonce))
        init.chmod(0o755)
        shutil.copy2(l2_kernel, root / "l2" / "bzImage")
        shutil.copy2(l2_initrd, root / "l2" / "initrd.gz")
        (root / "usr" / "bin").mkdir(parents=True)
        if vmm_binary is not None:
            shutil.copy2(vmm_binary, root / "usr" / "bin" / "pvrs-vmm")
        for f in l1_files:
            shutil.copy2(f, root / "usr" / "bin" / f.name)
        run = l1_script if l1_script is not None else "exec " + shlex.join(qemu_argv) + "\n"
        (root / "l2" / "run-qemu.sh").write_text(run)
        (root / "l2" / "load-modules").write_text("\n".join(l1_load_modules) + "\n")
        (root / "l2" / "backend").write_text(backend + "\n")
        if l1_load_modules:
            (root / "modules").mkdir()
            for m in l1_load_modules:
                shutil.copy2(modules_dir / f"{m}.ko", root / "modules")
        per_run = Path(tmp + ".cpio.gz")
        try:
            _write_cpio_gz(root, per_run, level=1)
            with open(out, "wb") as f:
                for part in (base, per_run):
                    with open(part, "rb") as p:
                        shutil.copyfileobj(p, f)
        finally:
            per_run.unlink(missing_ok=True)
