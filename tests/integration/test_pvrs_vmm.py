"""pvrs-vmm as the KVM guest's VMM (`run-guest --host kvm --vmm pvrs`):
Linux boot with the KVM PV CPUID leaves and kvmclock, the script's status,
power-off, crash reporting, virtio-blk (fio verify with the C and the Rust
driver), and virtio-balloon.

On this kind of machine the guest runs nested (pvrs-vmm inside the L1
Linux that QEMU TCG boots), so each test is one nested boot (10-60 s).
"""

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvrs_testlib import guest, paths

TESTS = Path(__file__).resolve().parents[1]
RUN_GUEST = TESTS / "run-guest"
SCRIPTS = TESTS / "guest-scripts"


@pytest.fixture(scope="module", autouse=True)
def vmm_built():
    """Builds the static pvrs-vmm (incremental: quick when up to date)."""
    subprocess.run([str(TESTS / "build-vmm")], check=True)
    assert paths.VMM.exists()


def run(args, timeout=600):
    proc = subprocess.run([sys.executable, str(RUN_GUEST), "--host", "kvm", "--vmm", "pvrs", *args],
                          capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(proc.stdout[-6000:])
    sys.stderr.write(proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


def script(tmp_path, text, name="s.sh"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_boot_kvm_clock_smp_and_script_status(tmp_path):
    s = script(tmp_path, """
grep -q 'Hypervisor detected: KVM' /dev/kmsg || dmesg | grep -q 'Hypervisor detected: KVM' || exit 10
[ "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" = kvm-clock ] || exit 11
[ "$(nproc)" = 2 ] || exit 12
exit 7
""")
    status, out = run(["--script", s, "--smp", "2", "--quiet"])
    assert status == 7, out[-3000:]


def test_guest_poweroff_is_a_clean_vmm_exit(tmp_path):
    # The script powers off itself, so that the runner, seeing no result
    # marker, reads the console until the L1 ends and pvrs-vmm's verdict is
    # in the output.
    s = script(tmp_path, "echo powering-off\npoweroff -f\nsleep 60\n")
    status, out = run(["--script", s, "--quiet", "--timeout", "200"])
    assert status == guest.EXIT_GUEST_FAILED  # no script result: the guest went away
    assert "pvrs-vmm: guest powered off" in out
    assert re.search(r"PVRS-L1-RESULT-\w+: qemu=0", out)


def test_pv_cpuid_leaves_match_kvm(tmp_path):
    status, out = run(["--script", str(SCRIPTS / "detect-kvm.sh"), "--quiet"])
    assert status == 0, "pvrs_hypercall and userspace CPUID disagree on KVM"
    assert "signature=KVMKVMKVM" in out


def test_guest_crash_is_a_nonzero_vmm_exit(tmp_path):
    s = script(tmp_path, "echo c > /proc/sysrq-trigger\nsleep 60\n")
    status, out = run(["--script", s, "--quiet", "--timeout", "200"])
    assert status == guest.EXIT_GUEST_FAILED
    # The runner stops 2 s after it sees the panic; pvrs-vmm's verdict is
    # checked when it made it out by then.
    if re.search(r"PVRS-L1-RESULT-\w+: qemu=", out):
        assert "pvrs-vmm: guest crashed: the kernel panicked and then rebooted" in out
        assert re.search(r"PVRS-L1-RESULT-\w+: qemu=1", out)


def test_guest_reboot_is_a_clean_vmm_exit(tmp_path):
    s = script(tmp_path, "echo b > /proc/sysrq-trigger\nsleep 60\n")
    status, out = run(["--script", s, "--quiet", "--timeout", "200"])
    assert status == guest.EXIT_GUEST_FAILED  # no script result: the guest went away
    assert "pvrs-vmm: guest requested a reboot; exiting" in out
    assert re.search(r"PVRS-L1-RESULT-\w+: qemu=0", out)


def test_virtio_blk(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.write(b"PVRS-DISK-SIGNATURE!")
        f.truncate(8 << 20)
    s = script(tmp_path, """
set -e
[ "$(cat /sys/block/vda/size)" = 16384 ]
[ "$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 20)" = PVRS-DISK-SIGNATURE! ]
echo pvrs-write-test | dd of=/dev/vda bs=512 seek=8 conv=sync,fsync 2>/dev/null
[ "$(dd if=/dev/vda bs=512 skip=8 count=1 iflag=direct 2>/dev/null | head -c 15)" = pvrs-write-test ]
dd if=/dev/zero of=/dev/vda bs=1M count=2 seek=4 oflag=direct 2>/dev/null
blkdiscard -o 6291456 -l 1048576 /dev/vda
echo BLK-OK
""")
    status, out = run(["--script", s, "--disk", str(disk), "--quiet"])
    assert status == 0, out[-3000:]
    assert "BLK-OK" in out
    data = disk.read_bytes()
    assert data[4096:4096 + 15] == b"pvrs-write-test"
    assert data[4 << 20:6 << 20] == bytes(2 << 20)


def test_virtio_balloon_inflates_and_reports_stats(tmp_path):
    s = script(tmp_path, """
# The driver inflates in the background after boot: wait for it (30 s).
i=0
while [ "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" -ge 450000 ] && [ $i -lt 100 ]; do
    sleep 0.3; i=$((i + 1))
done
total=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
echo "MemTotal $total"
[ "$total" -lt 450000 ] || exit 20
sleep 5
""")
    status, out = run(["--script", s, "--quiet", "--vmm-arg=--balloon=target=64,stats=2",
                       "--vmm-arg=--log=info"])
    assert status == 0, out[-3000:]
    assert "guest reports 16384 pages (64 MiB) in the balloon" in out
    assert re.search(r"virtio-balloon: stats:.* free_memory=\d+MiB", out)


def test_rust_virtio_blk_survives_a_device_that_lies_about_used_lengths(tmp_path):
    """pvrs-vmm --hostile-used-len: every 5th used entry claims 64 KiB more
    than the device wrote. pvrs_virtio_blk must count and log it, never
    read or write past its buffers, and still complete the I/O with the
    right data (the status byte lives in its own memory)."""
    disk = tmp_path / "disk.img"
    pattern = bytes(range(256)) * (4 << 12)  # 4 MiB
    with open(disk, "wb") as f:
        f.write(pattern)
        f.truncate(8 << 20)
    s = script(tmp_path, """
set -e
[ "$(basename "$(readlink /sys/block/vda/device/driver)")" = pvrs_virtio_blk ]
# Reads of the host's pattern, then a write of it elsewhere and a read back.
dd if=/dev/vda of=/tmp/a bs=64k count=64 iflag=direct 2>/dev/null
dd if=/tmp/a of=/dev/vda bs=64k seek=64 oflag=direct conv=fsync 2>/dev/null
dd if=/dev/vda of=/tmp/b bs=4k skip=1024 count=1024 iflag=direct 2>/dev/null
cmp /tmp/a /tmp/b
echo "lies=$(dmesg | grep -c 'used length .* exceeds')"
echo HOSTILE-BLK-OK
""")
    status, out = run(["--script", s, "--disk", str(disk), "--load", "pvrs_virtio_blk", "--quiet",
                       "--vmm-arg=--hostile-used-len", "--vmm-arg=5"])
    assert status == 0, out[-3000:]
    assert "HOSTILE-BLK-OK" in out
    lies = int(re.search(r"lies=(\d+)", out).group(1))
    # ~140 requests (64 KiB reads/writes, 4 KiB reads): about one in five lied.
    assert lies >= 5, out[-3000:]
    data = disk.read_bytes()
    assert data[4 << 20:8 << 20] == pattern


# -- data integrity: fio verify through pvrs-vmm's virtio-blk ----------------

FIO_DISK_MIB = 32
# Each job writes the whole disk in random order with a verify header in
# every block, then reads it all back and checks it; one after the other.
# The last one leaves a 64 KiB block with its header at every 64 KiB of
# the image, which the host checks too.
FIO_JOBS = [
    ("rand-4k-qd1", "rw=randwrite bs=4k iodepth=1"),
    ("rand-4k-qd16", "rw=randwrite bs=4k iodepth=16"),
    ("rand-64k-qd1", "rw=randwrite bs=64k iodepth=1"),
    ("rand-64k-qd16", "rw=randwrite bs=64k iodepth=16"),
]


@pytest.mark.parametrize("driver", ["virtio_blk", "pvrs_virtio_blk"])
def test_virtio_blk_fio_verify(tmp_path, driver):
    """fio verify over the whole disk with the C virtio_blk and the Rust
    pvrs_virtio_blk on pvrs-vmm's virtio-mmio blk (the image is the L1's
    virtio disk, which pvrs-vmm serves as --blk)."""
    from pvrs_testlib import fio
    fio_bin = fio.ensure()
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(FIO_DISK_MIB << 20)
    jobfile = fio.write_jobfile(tmp_path / "verify.fio",
                                ["filename=/dev/vda", "ioengine=libaio", "direct=1", "verify=crc32c", "do_verify=1",
                                 "verify_fatal=1", "stonewall=1", "size=100%"], FIO_JOBS)
    s = script(tmp_path, """
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "BLK: ready driver=$(basename "$(readlink /sys/block/vda/device/driver)") sectors=$(cat /sys/block/vda/size)"
""" + fio.GUEST_RUN + "fio_run /files/verify.fio\n")
    status, out = run(["--script", s, "--disk", str(disk), "--load", driver, "--file", str(jobfile),
                       "--binary", str(fio_bin), "--quiet", "--retry-hang", "--timeout", "900"], timeout=2000)
    ready = guest.key_values(re.findall(r"BLK: ready (.*)", out)[-1])
    assert ready["driver"] == driver, f"/dev/vda is bound to {ready['driver']}, not {driver}"
    assert ready["sectors"] == str(FIO_DISK_MIB << 11)
    assert status == 0, out[-3000:]
    jobs = fio.results(out)
    assert set(jobs) == {name for name, _ in FIO_JOBS}, f"fio reported jobs {sorted(jobs)}"
    for name, _ in FIO_JOBS:
        r = jobs[name]
        print(f"{driver}: {name}: wrote {r['write_kb']} KiB at {r['write_iops']} IOPS, "
              f"verified {r['read_kb']} KiB at {r['read_iops']} IOPS")
        assert r["error"] == 0, f"{name}: fio error {r['error']}"
        assert r["write_kb"] == FIO_DISK_MIB << 10, f"{name}: wrote {r['write_kb']} KiB"
        assert r["read_kb"] == r["write_kb"], f"{name}: verified {r['read_kb']} KiB of {r['write_kb']}"
    # fio's verify header (verify.h: le16 magic 0xacca, le16 type, le32
    # length, le64 seed, le64 offset) at every block of the last job.
    data = disk.read_bytes()
    bad = [i for i in range(FIO_DISK_MIB << 4)
           if struct.unpack_from("<HHIQQ", data, i << 16)[::2] != (0xACCA, 1 << 16, i << 16)]
    assert not bad, f"{len(bad)} 64 KiB blocks of the image lack their fio header (first at {bad[0] << 16:#x})"

