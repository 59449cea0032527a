"""The nested KVM host as a platform: SMP guests under load, and an L1 that
leaves SVM to whichever hypervisor module a test loads.

The L0 is QEMU 10.0 built with the fixes of tests/l0-qemu/ (TCG's emulated
SVM). Without the first of them, a 2-vCPU L2 running Linux's timers
selftest `threadtest` double-faulted at entry_SYSCALL_64 within seconds:
an interrupt injected through EVENTINJ was delivered a second time by
QEMU's CPU loop, with interrupts off, on whichever vCPU ran next.
The silent L2 resets and L1 faults that remained came from a second L0
bug (tests/l0-qemu/0003: an unlocked update of CPU 0's hflags2 from other
vCPUs' FPU restores, which could switch nested paging off at VMRUN). With
it fixed these workloads passed 20 of 20 each in `make check-nested-smp
RUNS=20`; `make check` runs them once, marked `nested_smp` so that the
soak (tests/nested-smp-soak) can repeat them with a pass/fail table.
"""

import re
import shlex
from pathlib import Path

import pytest

from pvrs_testlib import fio, guest, paths

THREADTEST = paths.GUEST_TOOLS / "threadtest"


def script(tmp_path: Path, text: str, name: str = "s.sh") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# threadtest: 4 threads for 20 s reading CLOCK_MONOTONIC and checking that
# no thread ever sees it go back; with vdso=0 (or the Rust clocksource,
# which has no vDSO mode yet) every read is a system call.
THREADTEST_SCRIPT = """
threadtest -t 20 -n 4
rc=$?
echo "THREADTEST: rc=$rc"
exit $rc
"""
CLOCKS = {"kvm-clock": "vdso=0", "pvrs-kvm-clock": "no-kvmclock"}


@pytest.mark.nested_smp
@pytest.mark.parametrize("clock", list(CLOCKS))
def test_smp_guest_survives_syscall_load(tmp_path, clock):
    cfg = guest.GuestConfig(host="kvm", script=script(tmp_path, THREADTEST_SCRIPT), smp=2,
                            append=CLOCKS[clock], quiet=True, timeout=600)
    res = guest.run_guest(cfg, echo=print)
    assert res.status == 0, (res.reason, res.console[-4000:])
    assert "THREADTEST: rc=0" in res.console
    assert re.search(r"\[OK\]|PASS", res.console), res.console[-2000:]
    assert "double fault" not in res.console


@pytest.mark.nested_smp
def test_smp_guest_survives_block_io(tmp_path):
    """fio verify from both vCPUs on QEMU's virtio-blk (the C driver)."""
    fio_bin = fio.ensure()
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(32 << 20)
    jobfile = fio.write_jobfile(tmp_path / "verify.fio",
                                ["filename=/dev/vda", "ioengine=libaio", "direct=1", "verify=crc32c",
                                 "do_verify=1", "verify_fatal=1", "size=100%", "numjobs=2",
                                 "offset_increment=16m", "size=16m", "group_reporting=1"],
                                [("smp-4k-qd8", "rw=randwrite bs=4k iodepth=8")])
    s = script(tmp_path, fio.GUEST_RUN + "fio_run /files/verify.fio\necho \"FIO-RC: $?\"\n")
    cfg = guest.GuestConfig(host="kvm", script=s, smp=2, disks=[disk], files=[jobfile],
                            binaries=[fio_bin], load_modules=["virtio_blk"], quiet=True, timeout=900)
    res = guest.run_guest(cfg, echo=print)
    assert res.status == 0, (res.reason, res.console[-4000:])
    jobs = fio.results(res.console)
    assert jobs and all(j["error"] == 0 for j in jobs.values()), jobs


def test_l1_leaves_svm_to_the_module_a_test_loads(tmp_path):
    """KVM is a module in L1: with backend none nothing owns SVM and there
    is no /dev/kvm; kvm_amd then loads, serves a guest, unloads and loads
    again, which is what a second hypervisor module needs."""
    l1 = r"""
echo "L1: kvm_dev_before=$([ -c /dev/kvm ] && echo yes || echo no)"
echo "L1: modules_before=$(cut -d' ' -f1 /proc/modules | tr '\n' ,)"
for m in @MODULES@; do insmod /usr/bin/$m.ko; done
echo "L1: kvm_dev_loaded=$([ -c /dev/kvm ] && echo yes || echo no)"
@L2@ </dev/null >/tmp/l2.out 2>&1
echo "L1: l2_rc=$? l2_result=$(grep -c 'PVRS-RESULT-@NONCE@-l2: exit=0' /tmp/l2.out)"
for m in @MODULES_REVERSED@; do rmmod $m; done
echo "L1: kvm_dev_unloaded=$([ -c /dev/kvm ] && echo yes || echo no)"
for m in @MODULES@; do insmod /usr/bin/$m.ko; done
echo "L1: kvm_dev_reloaded=$([ -c /dev/kvm ] && echo yes || echo no)"
dmesg | grep -i -E 'kvm|svm' | sed 's/^/L1-DMESG: /'
echo "PVRS-RESULT-@NONCE@: exit=0"
"""
    if guest.host_has_hw_virt():
        pytest.skip("about the nested L1 host; this machine runs KVM guests directly")
    if not (paths.GUEST_MODULES / "kvm-amd.ko").exists():
        pytest.fail("KVM is not built as modules (tests/kconfig/base.config)")
    order = guest.module_load_order("kvm-amd")       # irqbypass, kvm, kvm-amd
    cfg = guest.GuestConfig(host="kvm", script=script(tmp_path, "exit 0\n"), smp=1, quiet=True,
                            backend="none", l1_files=[paths.GUEST_MODULES / f"{m}.ko" for m in order],
                            timeout=600)
    l2 = guest._guest_qemu_argv(cfg, "/l2/bzImage", "/l2/initrd.gz", [], ["-enable-kvm", "-cpu", "host"])
    cfg.l1_script = (l1.replace("@L2@", shlex.join(l2)).replace("@MODULES@", " ".join(order))
                     .replace("@MODULES_REVERSED@", " ".join(m.replace("-", "_") for m in reversed(order))))
    res = guest.run_guest(cfg, echo=print)
    assert res.status == 0, (res.reason, res.console[-3000:])
    got = {}
    for line in res.console.splitlines():
        if line.startswith("L1: "):
            got.update(guest.key_values(line[4:]))
    assert got["kvm_dev_before"] == "no"
    assert "kvm" not in got["modules_before"].split(","), got["modules_before"]
    assert got["kvm_dev_loaded"] == "yes"
    assert got["l2_result"] == "1", res.console[-3000:]
    assert got["kvm_dev_unloaded"] == "no"
    assert got["kvm_dev_reloaded"] == "yes"
    assert "enabling virtualization on CPU" not in res.console   # no EBUSY on reload
