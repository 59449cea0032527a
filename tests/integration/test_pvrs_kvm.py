"""pvrs-kvm, our own hypervisor module, in the nested L1 (backend none, so
that nothing else owns SVM): it loads, creates /dev/pvrs, turns SVM on on
every CPU and off again when unloaded, and coexists with kvm_amd the way
KVM's own modules do with each other (whoever comes second gets EBUSY, and
unloading leaves SVM free for the other)."""

import hashlib
import re
import struct
import subprocess
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
    /dev/pvrs and then on kvm_amd's /dev/kvm in the same L1, the serial
    interrupt test included (in-kernel irqchip and irqfd on both)."""
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
    assert skipped == [], skipped
    for device in ("PVRS", "KVM"):
        assert f"L1-{device}: test serial_interrupt_reaches_the_guest ... ok" in console
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]


VIRTIO_GUEST = paths.BUILD / "virtio-guest" / "pvrs-virtio-guest"


def test_virtio_drivers_peer_guest_on_both_devices(tmp_path):
    """The bare-metal guest of tests/virtio-guest (the rcore-os virtio-drivers
    crate: a driver not written here) through pvrs-vmm, on /dev/pvrs and
    then on kvm_amd's /dev/kvm in the same L1: virtio-blk reads, writes,
    flush and a read-only disk, checked by the guest and, for what it
    wrote, by sha256 of the disk image afterwards. It polls its queues, so
    it needs no in-kernel irqchip."""
    subprocess.run([str(paths.ROOT / "tests" / "build-vmm")], check=True)
    subprocess.run([str(paths.ROOT / "tests" / "build-virtio-guest")], check=True)
    sectors, write_at, write_count = 2048, 256, 8            # tests/virtio-guest/src/blk.rs

    def sector(i, written=False):
        if written:
            return b"GUESTWRT" + struct.pack("<Q", i) + b"\xa5" * 496
        return b"PVRSSECT" + struct.pack("<Q", i) + bytes([i & 0xff]) * 496
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"".join(sector(i) for i in range(sectors)))
    expected = hashlib.sha256(b"".join(
        sector(i, write_at <= i < write_at + write_count) for i in range(sectors))).hexdigest()
    kvm_order = guest.module_load_order("kvm-amd")
    run_one = """
cp /usr/bin/disk.img /tmp/rw.img; cp /usr/bin/disk.img /tmp/ro.img
/usr/bin/pvrs-vmm --kvm-dev {dev} --kernel /usr/bin/pvrs-virtio-guest --mem 64 \\
    --blk /tmp/rw.img --blk /tmp/ro.img,ro > /tmp/{tag}.out 2>&1; echo "L1: {tag}_rc=$?"
sed 's/^/L1-{TAG}: /' /tmp/{tag}.out
echo "L1: {tag}_rw=$(sha256sum /tmp/rw.img | cut -d' ' -f1) {tag}_ro=$(sha256sum /tmp/ro.img | cut -d' ' -f1)"
"""
    got = l1_run(tmp_path, "insmod /usr/bin/pvrs_kvm.ko\n"
                 + run_one.format(dev="/dev/pvrs", tag="pvrs", TAG="PVRS")
                 + "rmmod pvrs_kvm\n"
                 + f"for m in {' '.join(kvm_order)}; do insmod /usr/bin/$m.ko; done\n"
                 + run_one.format(dev="/dev/kvm", tag="kvm", TAG="KVM")
                 + "dmesg | grep -i -E 'pvrs_kvm|bug|warn|oops' | sed 's/^/L1-DMESG: /'\n",
                 [PVRS_KVM, paths.VMM, VIRTIO_GUEST, disk] + [paths.GUEST_MODULES / f"{m}.ko" for m in kvm_order])
    console = got.pop("console")
    original = hashlib.sha256(disk.read_bytes()).hexdigest()
    for tag, TAG in (("kvm", "KVM"), ("pvrs", "PVRS")):
        assert got.get(f"{tag}_rc") == "0", console[-4000:]
        assert f"L1-{TAG}: VIRTIO-GUEST: RESULT pass blk=2 net=0" in console, console[-4000:]
        assert f"L1-{TAG}: VIRTIO-GUEST: blk1: write refused (IOERR) on the read-only disk" in console
        assert got.get(f"{tag}_rw") == expected, f"{tag}: the written image differs"
        assert got.get(f"{tag}_ro") == original, f"{tag}: the read-only image changed"
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]


HOSTILE = paths.GUEST_TOOLS / "pvrs-kvm-hostile"
# Cases where /dev/pvrs answers differently from kvm_amd, each with the
# reason. Everything else must match case by case.
NO_IOEVENTFD = "no ioeventfd yet: ENOTTY (pvrs-vmm falls back to MMIO exits)"
NO_DIRTY_LOG = "no dirty logging yet: the ioctl is ENOTTY, the slot flag EINVAL"
NO_SMM = "no SMM: one address space (KVM with SMM has two)"
KVM_IN_L1_SELF_INIT = ("kvm_amd in this nested L1 ignores an INIT the BSP sends itself (KVM's own code resets a "
                       "BSP on INIT unless it finds GIF clear, which suggests TCG's emulated VGIF leaves V_GIF "
                       "clear; not analysed further); pvrs resets the vCPU to the reset vector, as the SDM's INIT does")
HOSTILE_DIFFERENCES: dict[str, str] = {
    "guest_irqchip_ipi_init_self": KVM_IN_L1_SELF_INIT,
    "guest_irqchip_hypercall_send_ipi_init_self": KVM_IN_L1_SELF_INIT,
    "interrupt_twice": "no KVM_INTERRUPT (userspace-irqchip injection) yet: EINVAL",
    "ioeventfd_deassign_missing": NO_IOEVENTFD,
    "ioeventfd_len_3": NO_IOEVENTFD,
    "ioeventfd_pio_valid": NO_IOEVENTFD,
    "ioeventfd_unknown_flag": NO_IOEVENTFD,
    "get_dirty_log_missing_slot": NO_DIRTY_LOG,
    "get_dirty_log_slot_out_of_range": NO_DIRTY_LOG,
    "get_dirty_log_slot_without_logging": NO_DIRTY_LOG,
    "region_flags_log_dirty": NO_DIRTY_LOG,
    "region_as_id_1": NO_SMM,
    "region_same_gpa_as_id_1": NO_SMM,
    "create_vcpu_id_last_valid": "vCPU ids are below 8 (KVM_CAP_MAX_VCPU_ID 8); KVM allows 4095",
    "get_emulated_cpuid_nent_1": "KVM_GET_EMULATED_CPUID is empty here (nothing emulated beyond "
                                 "the supported list), so one entry is room enough",
    "get_emulated_cpuid_nent_huge": "as get_emulated_cpuid_nent_1: an empty list",
    "get_emulated_cpuid_nent_max": "as get_emulated_cpuid_nent_1: an empty list",
    "mmap_vcpu_offset_huge": "mmap beyond the two vCPU pages is refused at mmap time (EINVAL); "
                             "KVM maps it and faults on access",
    "mmap_vcpu_offset_page_5": "as mmap_vcpu_offset_huge",
    "mmap_vcpu_size_plus_page": "as mmap_vcpu_offset_huge",
    "set_clock_unknown_flag": "no kvmclock host half yet (issue 13): KVM_SET_CLOCK is ENOTTY",
    "set_debugregs_valid": "no KVM_SET_DEBUGREGS yet (DR0-3 are not switched): EINVAL",
    "set_signal_mask_len_8": "no KVM_SET_SIGNAL_MASK yet: EINVAL",
    "set_signal_mask_null": "no KVM_SET_SIGNAL_MASK yet: EINVAL",
    "set_tsc_khz_huge": "no TSC scaling (TCG's SVM has none): KVM_SET_TSC_KHZ is EINVAL",
    "set_vcpu_events_none": "no KVM_SET_VCPU_EVENTS yet: EINVAL",
    "guest_irqchip_hypercall_send_ipi_wraps": "KVM computes the high bitmap's first APIC id "
                                              "(min + 64) in 32 bits, so 0xffffffc0 wraps to id 0 "
                                              "and the IPI is sent (1); pvrs sends nothing there (0)",
    "guest_irqchip_ipi_illegal_vectors": "fixed IPIs with vectors 0-15: KVM puts them in IRR, "
                                         "pvrs refuses them as hardware does and records "
                                         "send/receive illegal vector in ESR",
}


def test_hostile_input_gets_the_answers_kvm_gives(tmp_path):
    """tests/guest-tools/src/bin/pvrs-kvm-hostile feeds malformed ioctls
    (wrong files, bad sizes, overlapping and unaligned memslots, out-of-
    range ids, bad pointers, oversized arrays, invalid register state) and
    hostile guests (triple faults, garbage code, fetches and page tables
    outside memory) to /dev/pvrs and to kvm_amd's /dev/kvm in one L1, and
    compares what a VMM sees case by case. The guest_irqchip_* cases run
    with the in-kernel irqchip and PIT and a KVM CPUID (issue 13):
    garbage in every LAPIC, IOAPIC, PIC and PIT register, IPI storms
    through the xAPIC and x2APIC ICRs, INIT and SMI to the vCPU itself,
    hypercalls with hostile numbers and arguments, kvmclock, steal-time
    and PV EOI MSRs pointed outside and across the end of RAM; each
    reports how the guest ended, its #GPs and NMIs and what it read back.
    L1 stays healthy: no oops, pvrs_kvm unloads, kvm_amd loads
    afterwards."""
    kvm_order = guest.module_load_order("kvm-amd")
    got = l1_run(tmp_path, f"""
insmod /usr/bin/pvrs_kvm.ko
/usr/bin/pvrs-kvm-hostile /dev/pvrs > /tmp/p.out 2>&1; echo "L1: pvrs_rc=$?"
sed 's/^/L1-PVRS: /' /tmp/p.out
rmmod pvrs_kvm; echo "L1: unload=$?"
for m in {" ".join(kvm_order)}; do insmod /usr/bin/$m.ko; r=$?; done; echo "L1: kvm_amd_load=$r"
/usr/bin/pvrs-kvm-hostile /dev/kvm > /tmp/k.out 2>&1; echo "L1: kvm_rc=$?"
sed 's/^/L1-KVM: /' /tmp/k.out
dmesg | grep -i -E 'pvrs_kvm|bug|warn|oops|rip:' | sed 's/^/L1-DMESG: /'
""", [PVRS_KVM, HOSTILE] + [paths.GUEST_MODULES / f"{m}.ko" for m in kvm_order])
    console = got.pop("console")
    assert got.get("pvrs_rc") == "0" and got.get("kvm_rc") == "0", console[-4000:]
    assert got.get("unload") == "0" and got.get("kvm_amd_load") == "0", console[-4000:]
    results = {}
    for side in ("PVRS", "KVM"):
        results[side] = dict(re.findall(rf"^L1-{side}: case=(\S+) result=(.*)$", console, re.M))
        assert f"L1-{side}: HOSTILE: done" in console, console[-4000:]
    assert results["PVRS"].get("still_works") == "exit=HLT"
    differ = {case: (results["PVRS"].get(case), kvm) for case, kvm in results["KVM"].items()
              if results["PVRS"].get(case) != kvm and case not in HOSTILE_DIFFERENCES}
    table = "\n".join(f"{c:48} pvrs={p!s:30} kvm_amd={k}" for c, (p, k) in sorted(differ.items()))
    print(f"{len(results['KVM'])} cases, {len(differ)} unexplained differences\n{table}")
    stale = [c for c in HOSTILE_DIFFERENCES if results["PVRS"].get(c) == results["KVM"].get(c)]
    assert not differ, f"/dev/pvrs answers differently from kvm_amd:\n{table}"
    assert not stale, f"listed as different but the same now: {stale}"
    for bad in ("BUG:", "WARNING:", "Oops", "general protection"):
        assert bad not in console, console[-3000:]
