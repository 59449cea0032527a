"""pvrs-vmm's virtio devices against an independent driver: the bare-metal
guest of tests/virtio-guest (the rcore-os virtio-drivers crate, booted as
a PVH ELF) on this machine's /dev/kvm, without Linux and without the
nested host. It checks virtio-blk reads, writes, flush, requests in
flight, the capacity limit and a read-only disk, and virtio-net frames
both ways through a tap (ARP and ICMP echo with the host kernel), and
reports on the serial console; see tests/virtio-guest/src/main.rs.

Each run takes about a second. The network test needs root, /dev/net/tun
and `unshare` (a private network namespace for the tap); it is skipped
with the reason otherwise.
"""

import os
import shutil
import struct
import subprocess

import pytest

from pvrs_testlib import paths

TESTS = paths.ROOT / "tests"
GUEST = paths.BUILD / "virtio-guest" / "pvrs-virtio-guest"
SECTORS = 2048
WRITE_AT, WRITE_SECTORS = 256, 8          # tests/virtio-guest/src/blk.rs
GUEST_MAC = "52:54:00:12:34:56"
TAP = "pvrstap0"
# What pvrs-vmm may say about this guest; anything else on stderr (a bad
# chain, a broken queue, a register write it refused) fails the test.
EXPECTED_WARNINGS = ("beyond capacity", "refused on a read-only disk")


@pytest.fixture(scope="module", autouse=True)
def built():
    """Builds pvrs-vmm and the guest (incremental: quick when up to date)."""
    subprocess.run([str(TESTS / "build-vmm")], check=True)
    subprocess.run([str(TESTS / "build-virtio-guest")], check=True)
    assert GUEST.exists()


@pytest.fixture(scope="module", autouse=True)
def kvm_usable():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        pytest.skip(f"/dev/kvm is not usable here: {e}")


def sector(i):
    return b"PVRSSECT" + struct.pack("<Q", i) + bytes([i & 0xff]) * 496


def image(path):
    path.write_bytes(b"".join(sector(i) for i in range(SECTORS)))
    return path


def run(argv, timeout=120):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout)
    print(proc.stderr)
    return proc


def vmm_argv(*extra):
    return [str(paths.VMM), "--kernel", str(GUEST), "--mem", "64", *extra]


def unexpected_warnings(stderr):
    return [l for l in stderr.splitlines()
            if "warning" in l and not any(w in l for w in EXPECTED_WARNINGS)]


def test_blk_read_write_flush_and_read_only(tmp_path):
    rw, ro = image(tmp_path / "rw.img"), image(tmp_path / "ro.img")
    proc = run(vmm_argv("--blk", str(rw), "--blk", f"{ro},ro"))
    out = proc.stdout
    assert proc.returncode == 0, "the guest reported a failure (it triple-faults then)"
    assert "VIRTIO-GUEST: RESULT pass blk=2 net=0" in out
    assert f"blk0: capacity={SECTORS} sectors read_only=false id=rw.img" in out
    assert f"blk1: capacity={SECTORS} sectors read_only=true id=ro.img" in out
    assert "blk1: write refused (IOERR) on the read-only disk" in out
    assert "pvrs-vmm: guest powered off" in proc.stderr
    assert unexpected_warnings(proc.stderr) == []
    # The guest's sectors reached the file; nothing else changed.
    data = rw.read_bytes()
    for i in range(SECTORS):
        got = data[i * 512:(i + 1) * 512]
        if WRITE_AT <= i < WRITE_AT + WRITE_SECTORS:
            assert got == b"GUESTWRT" + struct.pack("<Q", i) + b"\xa5" * 496, f"sector {i}"
        else:
            assert got == sector(i), f"sector {i}"
    assert ro.read_bytes() == b"".join(sector(i) for i in range(SECTORS))


def test_guest_failure_is_a_nonzero_exit(tmp_path):
    # A disk too small for the checks: the guest reports the failure and
    # triple-faults, which pvrs-vmm reports as a crash.
    small = tmp_path / "small.img"
    small.write_bytes(b"".join(sector(i) for i in range(16)))
    proc = run(vmm_argv("--blk", str(small)))
    assert "VIRTIO-GUEST: RESULT fail" in proc.stdout
    assert proc.returncode == 1


def net_unavailable():
    if os.geteuid() != 0:
        return "needs root for a tap device"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2)"
    return None


def test_net_arp_and_ping_through_a_tap(tmp_path):
    if why := net_unavailable():
        pytest.skip(why)
    # A private network namespace, so that the tap and its address do not
    # touch the machine's network; IPv6 off on the tap to keep the host
    # from sending neighbour discovery the guest would have to skip.
    script = f"""
set -e
ip link set lo up
ip tuntap add dev {TAP} mode tap
echo 1 > /proc/sys/net/ipv6/conf/{TAP}/disable_ipv6 || true
ip addr add 10.0.2.1/24 dev {TAP}
ip link set {TAP} up
exec "$@"
"""
    disk = image(tmp_path / "disk.img")
    proc = run(["unshare", "--net", "sh", "-c", script, "sh",
                *vmm_argv("--blk", str(disk), "--net", f"tap={TAP},mac={GUEST_MAC}")])
    out = proc.stdout
    if proc.returncode != 0 and "VIRTIO-GUEST" not in out:
        pytest.fail(f"could not set up the tap namespace or start pvrs-vmm: {proc.stderr[-2000:]}")
    assert proc.returncode == 0
    assert "VIRTIO-GUEST: RESULT pass blk=1 net=1" in out
    assert f"net0: mac={GUEST_MAC}" in out
    assert "net0: ARP reply: 10.0.2.1 is at" in out
    assert "net0: ICMP echo reply from the host with the same payload" in out
    assert unexpected_warnings(proc.stderr) == []
