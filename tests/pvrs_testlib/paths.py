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
