"""Where the repository, the build outputs and the cache are."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PVRS_BUILD", ROOT / "build"))
CACHE = Path(os.environ.get("PVRS_CACHE", Path.home() / ".cache" / "pvrs"))
GUEST_KERNEL = BUILD / "guest" / "bzImage"
GUEST_MODULES = BUILD / "guest" / "modules"
GUEST_TOOLS = BUILD / "guest-tools"
VMM = BUILD / "vmm" / "pvrs-vmm"

# The patched QEMU 10 that tests/build-l0-qemu builds (TCG's SVM fixed).
L0_QEMU = CACHE / "l0-qemu" / "bin" / "qemu-system-x86_64"


def l0_qemu() -> list[str]:
    """The QEMU that runs TCG guests and the nested L1 on this machine, with
    the options that find its firmware: $PVRS_L0_QEMU if set ("system": the
    one on the PATH), else the patched build of tests/build-l0-qemu, else
    (not built yet) the one on the PATH."""
    choice = os.environ.get("PVRS_L0_QEMU", "")
    if choice == "system" or (not choice and not L0_QEMU.exists()):
        return ["qemu-system-x86_64"]
    binary = Path(choice) if choice else L0_QEMU
    # Firmware: a share/qemu beside the binary, if there is one, then where
    # Debian's QEMU looks (its --firmwarepath): qemu-system-data, seabios,
    # and ipxe-qemu's option ROMs (efi-virtio.rom for virtio-net-pci).
    dirs = [binary.resolve().parents[1] / "share" / "qemu", "/usr/share/qemu", "/usr/share/seabios",
            "/usr/lib/ipxe/qemu"]
    return [str(binary)] + [a for d in dirs if Path(d).is_dir() for a in ("-L", str(d))]
