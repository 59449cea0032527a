"""pvrs_hypercall's API through its selftest interface, on the KVM host."""

import sys
from pathlib import Path

import pytest

from pvrs_testlib import guest

SCRIPTS = Path(__file__).resolve().parents[1] / "guest-scripts"
PV_FEATURES_ON = "host,kvm-pv-ipi=on,kvm-pv-sched-yield=on,kvm-pv-unhalt=on"
PV_FEATURES_OFF = "host,kvm-pv-ipi=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off"


def run_selftest(host, cpu):
    cfg = guest.GuestConfig(host=host, script=SCRIPTS / "hypercall-selftest.sh", smp=2,
                            qemu_args=["-cpu", cpu], timeout=600)
    res = guest.run_guest_retrying_hangs(cfg, echo=lambda line: None)
    sys.stdout.write("\n".join(l for l in res.console.splitlines() if l.startswith(("HC:", "IPI:"))))
    assert res.status == 0, (res.reason, res.console[-3000:])
    results = {}
    pairings = []
    ipis = []
    for line in res.console.splitlines():
        if line.startswith("HC: "):
            fields = guest.key_values(line[4:])
            if fields.get("op") == "clock_pairing":
                pairings.append(fields)
            else:
                key = fields.get("op") + (" " + fields["nr"] if "nr" in fields else "")
                results.setdefault(key, fields)
        elif line.startswith("IPI: "):
            ipis.append({k: int(v) for k, v in (kv.split("=") for kv in line[5:].split())})
    return results, pairings, ipis


@pytest.fixture(scope="module")
def kvm_selftest():
    return run_selftest("kvm", PV_FEATURES_ON)


def test_each_hypercall_succeeds(kvm_selftest):
    results, _, _ = kvm_selftest
    for op in ["vapic_poll_irq", "kick_cpu", "sched_yield", "send_ipi"]:
        assert results[op]["result"] == "ok", results[op]


def test_unknown_hypercall_returns_enosys(kvm_selftest):
    results, _, _ = kvm_selftest
    unknown = results["raw 99999"]
    assert unknown["ret"] == "-1000"          # -KVM_ENOSYS from the host
    assert unknown["errno"] == "-38"          # mapped to -ENOSYS


def test_raw_memory_writing_hypercall_is_refused(kvm_selftest):
    results, _, _ = kvm_selftest
    assert results["raw 9"]["errno"] == "-1"  # EPERM: CLOCK_PAIRING only typed


def test_send_ipi_reaches_the_cpus_in_the_bitmap(kvm_selftest):
    """Back-to-back IPIs to a busy vCPU coalesce in its IRR, so not every
    delivery is a separate interrupt; but the target's reschedule-interrupt
    count must rise clearly, and clearly more than the other CPU's."""
    results, _, ipis = kvm_selftest
    assert results["send_ipi"]["delivered"] == "2000"
    assert len(ipis) == 2
    for ipi in ipis:
        assert ipi["target_res_delta"] >= 50, ipi
        assert ipi["target_res_delta"] > 3 * ipi["other_res_delta"], ipi


def test_clock_pairing_agrees_with_the_guest_clock(kvm_selftest):
    """The host's wall-clock time from CLOCK_PAIRING and the guest's
    CLOCK_REALTIME read just before and after it must advance at the same
    rate: their offset may only move by the read uncertainty (the width of
    the before/after bracket) plus 200 ppm of the elapsed time (kvmclock and
    the host's clock both come from the TSC; 200 ppm is ten times the drift
    seen on the nested host)."""
    _, pairings, _ = kvm_selftest
    assert len(pairings) == 6
    samples = []
    for p in pairings:
        assert p["result"] == "ok", p
        before, after, host = int(p["guest_before_ns"]), int(p["guest_after_ns"]), int(p["host_ns"])
        samples.append((host, before, after))
    host0, before0, after0 = samples[0]
    offset0 = host0 - (before0 + after0) // 2
    print(f"\nhost - guest wall clock offset: {offset0 / 1e9:.6f} s")
    for host, before, after in samples[1:]:
        offset = host - (before + after) // 2
        elapsed = host - host0
        allowed = (after - before + after0 - before0) / 2 + 200e-6 * elapsed
        assert abs(offset - offset0) <= allowed, (offset - offset0, allowed)
    assert samples[-1][0] - host0 >= 10e9, "rate compared over at least 10 s"


def test_hypercalls_refused_without_their_feature_bits():
    results, _, _ = run_selftest("kvm", PV_FEATURES_OFF)
    for op in ["kick_cpu", "sched_yield", "send_ipi"]:
        assert results[op]["result"] == "error" and results[op]["errno"] == "-95", results[op]
    assert results["vapic_poll_irq"]["result"] == "ok"


def test_selftest_refuses_without_kvm():
    results, pairings, _ = run_selftest("tcg", "max")
    assert len(results) >= 5
    for r in list(results.values()) + pairings:
        assert r["result"] == "write-failed", r
