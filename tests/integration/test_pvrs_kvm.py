"""pvrs-kvm, our own hypervisor module, in the nested L1 (backend none, so
that nothing else owns SVM): it loads, creates /dev/pvrs, turns SVM on on
every CPU and off again when unloaded, and coexists with kvm_amd the way
KVM's own modules do with each other (whoever comes second gets EBUSY, and
unloading leaves SVM free for the other)."""

import re
from pathlib import Path

import pytest

from pvrs_testlib import guest, paths

PVRS_KVM = paths.GUEST_MODULES / "pvrs_kvm.ko"


def l1_run(tmp_path: Path, l1_script: str, files: list[Path]) -> dict[str, str]:
    """Runs `l1_script` as L1's init script (no guest) and returns the
    key=value words of its "L1: " lines."""
    if guest.host_has_hw_virt():
        pytest.skip("about the nested L1 host; this machine has its own SVM/VMX")
    if not PVRS_KVM.exists():
        pytest.fail("pvrs_kvm.ko was not built (CONFIG_PVRS_KVM, tests/kconfig/pvrs.config)")
    s = tmp_path / "s.sh"
    s.write_text("exit 0\n")
    cfg = guest.GuestConfig(host="kvm", script=s, smp=1, quiet=True, backend="none", l1_files=files,
                            l1_script=l1_script + '\necho "PVRS-RESULT-@NONCE@: exit=0"\n', timeout=600)
    res = guest.run_guest(cfg, echo=print)
    assert res.status == 0, (res.reason, res.console[-3000:])
    got = {}
    for line in res.console.splitlines():
        if line.startswith("L1: "):
            got.update(guest.key_values(line[4:]))
    got["console"] = res.console
    return got


def test_module_loads_and_yields_svm_to_kvm_amd(tmp_path):
    kvm_order = guest.module_load_order("kvm-amd")       # irqbypass, kvm, kvm-amd
    kvm_loaded = " ".join(kvm_order)
    kvm_unload = " ".join(m.replace("-", "_") for m in reversed(kvm_order))
    got = l1_run(tmp_path, f"""
insmod /usr/bin/pvrs_kvm.ko; echo "L1: load1=$?"
echo "L1: dev_loaded=$([ -c /dev/pvrs ] && echo yes || echo no)"
echo "L1: pvrs_misc=$(grep -c ' pvrs$' /proc/misc)"
for m in {kvm_loaded}; do insmod /usr/bin/$m.ko; r=$?; done; echo "L1: kvm_amd_while_pvrs=$r"
for m in {kvm_unload}; do rmmod $m 2>/dev/null; done
rmmod pvrs_kvm; echo "L1: unload1=$?"
echo "L1: dev_unloaded=$([ -c /dev/pvrs ] && echo yes || echo no)"
for m in {kvm_loaded}; do insmod /usr/bin/$m.ko; r=$?; done; echo "L1: kvm_amd_after=$r"
insmod /usr/bin/pvrs_kvm.ko; echo "L1: load_while_kvm_amd=$?"
for m in {kvm_unload}; do rmmod $m; done
insmod /usr/bin/pvrs_kvm.ko; echo "L1: load2=$?"
rmmod pvrs_kvm; echo "L1: unload2=$?"
dmesg | grep -i -E 'pvrs_kvm|kvm|svm|bug|warn|oops' | sed 's/^/L1-DMESG: /'
""", [PVRS_KVM] + [paths.GUEST_MODULES / f"{m}.ko" for m in kvm_order])
    console = got.pop("console")
    assert got["load1"] == "0", console[-3000:]
    assert got["dev_loaded"] == "yes"
    assert got["pvrs_misc"] == "1"
    assert got["kvm_amd_while_pvrs"] != "0", "kvm_amd loaded while pvrs_kvm had SVM on"
    assert got["unload1"] == "0"
    assert got["dev_unloaded"] == "no"
    assert got["kvm_amd_after"] == "0", "pvrs_kvm left SVM on after unloading: " + console[-3000:]
    assert got["load_while_kvm_amd"] != "0", "pvrs_kvm loaded while kvm_amd had SVM on"
    assert got["load2"] == "0"
    assert got["unload2"] == "0"
    assert "SVM is already enabled" in console
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]


SMOKE = paths.GUEST_TOOLS / "pvrs-kvm-smoke"


def test_a_real_mode_guest_runs_on_both_devices(tmp_path):
    """The same small program drives /dev/pvrs and then /dev/kvm (kvm_amd)
    in one L1: port I/O out and in, an MMIO read, HLT, registers."""
    kvm_order = guest.module_load_order("kvm-amd")
    got = l1_run(tmp_path, f"""
insmod /usr/bin/pvrs_kvm.ko
mount -t debugfs none /sys/kernel/debug 2>/dev/null
PVRS_SMOKE_DEBUGFS=1 /usr/bin/pvrs-kvm-smoke /dev/pvrs > /tmp/pvrs.out 2>&1; echo "L1: pvrs_rc=$?"
sed 's/^/L1-PVRS: /' /tmp/pvrs.out
rmmod pvrs_kvm; echo "L1: unload=$?"
for m in {" ".join(kvm_order)}; do insmod /usr/bin/$m.ko; done
/usr/bin/pvrs-kvm-smoke /dev/kvm > /tmp/kvm.out 2>&1; echo "L1: kvm_rc=$?"
sed 's/^/L1-KVM: /' /tmp/kvm.out
dmesg | grep -i -E 'pvrs_kvm|bug|warn|oops|rip:' | sed 's/^/L1-DMESG: /'
""", [PVRS_KVM, SMOKE] + [paths.GUEST_MODULES / f"{m}.ko" for m in kvm_order])
    console = got.pop("console")
    assert got.get("kvm_rc") == "0", console[-3000:]
    assert "L1-KVM: SMOKE: ok" in console
    assert got.get("pvrs_rc") == "0", console[-3000:]
    assert "L1-PVRS: SMOKE: ok" in console
    # The VM's debugfs statistics while it exists: its exits by reason
    # (2 port writes + 1 read + the echo + the MMIO output, an MMIO read,
    # HLT) and the pages it mapped.
    stats = dict(re.findall(r"L1-PVRS: debugfs: vcpu0 (\S+)=(\d+)", console))
    assert int(stats.get("exit.io", 0)) >= 5 and int(stats.get("exit.hlt", 0)) == 1, (stats, console[-3000:])
    assert re.search(r"L1-PVRS: debugfs: vm mapped_pages=[1-9]", console), console[-3000:]
    assert got["unload"] == "0"
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]


KVM_GUESTS = paths.BUILD / "vmm" / "kvm-guests"


def test_pvrs_vmm_small_guests_on_both_devices(tmp_path):
    """pvrs-vmm's hand-assembled guests (host-backend/pvrs-vmm/tests/
    kvm_guests.rs, built static by tests/build-vmm) through the real VMM, on
    /dev/pvrs and then on kvm_amd's /dev/kvm in the same L1. Without an
    in-kernel irqchip on /dev/pvrs the interrupt test skips (it says so)."""
    if not KVM_GUESTS.exists():
        pytest.fail(f"{KVM_GUESTS} missing: run tests/build-vmm")
    kvm_order = guest.module_load_order("kvm-amd")
    got = l1_run(tmp_path, f"""
mkdir -p /tmp/t
insmod /usr/bin/pvrs_kvm.ko
TMPDIR=/tmp/t PVRS_KVM_DEV=/dev/pvrs /usr/bin/kvm-guests --test-threads=1 > /tmp/p.out 2>&1; echo "L1: pvrs_rc=$?"
sed 's/^/L1-PVRS: /' /tmp/p.out
rmmod pvrs_kvm
for m in {" ".join(kvm_order)}; do insmod /usr/bin/$m.ko; done
TMPDIR=/tmp/t PVRS_KVM_DEV=/dev/kvm /usr/bin/kvm-guests --test-threads=1 > /tmp/k.out 2>&1; echo "L1: kvm_rc=$?"
sed 's/^/L1-KVM: /' /tmp/k.out
dmesg | grep -i -E 'pvrs_kvm|bug|warn|oops' | sed 's/^/L1-DMESG: /'
""", [PVRS_KVM, KVM_GUESTS] + [paths.GUEST_MODULES / f"{m}.ko" for m in kvm_order])
    console = got.pop("console")
    assert got.get("pvrs_rc") == "0", console[-4000:]
    assert got.get("kvm_rc") == "0", console[-4000:]
    results = dict(re.findall(r"L1-(PVRS|KVM): test result: ok\. (\d+) passed", console))
    assert results.get("PVRS") and results.get("PVRS") == results.get("KVM"), results
    skipped = re.findall(r"L1-PVRS: .*skipped: (\S+)", console)
    assert skipped == ["serial_interrupt_reaches_the_guest:"], skipped
    assert "L1-KVM: test serial_interrupt_reaches_the_guest ... ok" in console
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]
