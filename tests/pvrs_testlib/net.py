"""virtio-net guests for the tests (tests/integration/test_virtio_net.py)
and the benchmark (`tests/bench net`): one guest on QEMU user networking,
or two guests on one Ethernet link, each with one virtio-net driver loaded,
the Rust pvrs_virtio_net or Linux's virtio_net (C).

The link is a QEMU `dgram` netdev per guest: each QEMU sends its guest's
frames as UDP datagrams to the other's port on 127.0.0.1 (nothing leaves the
machine). Both guests run tests/guest-scripts/net.sh, which the kernel
command line steers (`pvrs_net=MODE pvrs_net_role=a|b`), and print "NET:"
lines that the host reads with `GuestSession.expect`. The NIC is the QEMU
device `nic0`, for QMP `set_link`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from pathlib import Path

from . import guest, paths

SCRIPT = paths.ROOT / "tests" / "guest-scripts" / "net.sh"
C_DRIVER = "virtio_net"
RUST_DRIVER = "pvrs_virtio_net"
LABELS = {C_DRIVER: "C", RUST_DRIVER: "Rust"}
# Drivers that may be missing from the kernel build, with the reason (their
# tests skip). Both are built by default: a missing module is an error.
NOT_BUILT_YET: dict[str, str] = {}
# Host programs the guest script uses (Debian's iperf3, ethtool and
# iputils-ping, from tests/lib/ensure-tools), with their libraries.
TOOLS = [Path("/usr/bin/iperf3"), Path("/usr/sbin/ethtool"), Path("/usr/bin/ping")]
ADDR = {"a": "10.0.0.1", "b": "10.0.0.2"}
MAC = {"a": "52:54:00:12:34:01", "b": "52:54:00:12:34:02", "user": "52:54:00:12:34:56"}


def missing(driver: str, modules_dir: Path = paths.GUEST_MODULES) -> str | None:
    """Why `driver` cannot be tested (its module is not built yet), or None.
    A missing module that should be there is an error."""
    if (modules_dir / f"{driver}.ko").exists():
        return None
    if driver in NOT_BUILT_YET:
        return f"{driver}.ko is not built: {NOT_BUILT_YET[driver]}"
    raise FileNotFoundError(f"{driver}.ko is missing from {modules_dir}: run `make guest`")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(driver: str, mode: str, role: str, netdev: str, mac: str, append: str = "",
           **kw) -> guest.GuestConfig:
    """A TCG guest running net.sh in `mode` with `driver` bound to its one
    virtio-net-pci NIC (`nic0`) on the QEMU netdev `netdev` (with id n0).
    `kw` are further GuestConfig fields."""
    kw = {"smp": 1, "mem": 512, "timeout": 600, "quiet": True, **kw}
    return guest.GuestConfig(host="tcg", script=SCRIPT, load_modules=guest.module_load_order(driver), binaries=TOOLS,
                             append=f"pvrs_net={mode} pvrs_net_role={role} {append}".strip(),
                             qemu_args=["-netdev", netdev, "-device", f"virtio-net-pci,id=nic0,netdev=n0,mac={mac}"],
                             **kw)


def pair_configs(drivers: tuple[str, str], mode: str, **kw) -> list[guest.GuestConfig]:
    """Guests a and b (with drivers[0] and drivers[1]) on one link."""
    ports = {"a": free_port(socket.SOCK_DGRAM), "b": free_port(socket.SOCK_DGRAM)}
    cfgs = []
    for role, other, driver in [("a", "b", drivers[0]), ("b", "a", drivers[1])]:
        netdev = (f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={ports[role]},"
                  f"remote.type=inet,remote.host=127.0.0.1,remote.port={ports[other]}")
        cfgs.append(config(driver, mode, role, netdev, MAC[role], **kw))
    return cfgs


@contextlib.contextmanager
def sessions(cfgs: list[guest.GuestConfig], echo=print):
    """The guests of `cfgs` running at once, as GuestSessions; their console
    lines go to `echo`, prefixed with A|, B|, ... and cut at 300 characters
    (an iperf3 report is one long line). When the body fails, every guest
    is ended."""
    def tagged(tag):
        return lambda line: echo(f"{tag}| {line if len(line) <= 300 else line[:300] + ' ...'}")

    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(guest.GuestSession(cfg, echo=tagged(chr(ord("A") + i))))
               for i, cfg in enumerate(cfgs)]


# Console lines that mean the guest's script will not go on: it oopsed, or
# (at boot) its driver did not load or found no NIC.
FAILURE = r"BUG: .*|Oops: .*|WARNING: .*|PVRS-INIT: insmod \S+ failed|NET: no eth0"


def expect(g: guest.GuestSession, pattern: str, timeout: float = 120) -> re.Match:
    """`g.expect(pattern)`, failing at once on a FAILURE line instead of
    waiting for the timeout."""
    m = g.expect(rf"{pattern}|(?P<failure>{FAILURE})", timeout=timeout)
    assert m.group("failure") is None, f"the guest said {m.group('failure')!r} (console: build/logs/guests/)"
    return m


def ready(g: guest.GuestSession, driver: str, timeout: float = 120) -> dict[str, str]:
    """The guest's "NET: ready" line, checked: `driver` is bound to eth0, as
    sysfs and `ethtool -i` say."""
    r = guest.key_values(expect(g, r"NET: ready (.*)", timeout).group(1))
    assert (r["driver"], r["ethtool"]) == (driver, driver), f"eth0 is bound to {r['driver']}/{r['ethtool']}, not {driver}"
    return r


def line(g: guest.GuestSession, what: str, timeout: float = 120) -> dict[str, str]:
    """The key=value fields of the next "NET: `what` ..." line."""
    return guest.key_values(expect(g, rf"NET: {what}\b(.*)", timeout).group(1))


def iperf(g: guest.GuestSession, name: str, timeout: float = 120) -> dict:
    """The JSON report of the guest's iperf3 run `name`."""
    m = expect(g, rf"NET: iperf name={re.escape(name)} rc=(\d+) json=(.*)", timeout)
    report = json.loads(m.group(2))
    assert m.group(1) == "0", f"iperf3 {name} failed: {report.get('error')}"
    return report


def ping_ok(p: dict[str, str], name: str) -> None:
    """A `pingcheck` line in which every echo request was answered."""
    assert p["rc"] == "0" and int(p["tx"]) > 0 and p["rx"] == p["tx"], f"ping {name}: {p}"
