"""pvrs_pvclock, the Rust kvmclock clocksource, on the KVM host.

The guest boots with `no-kvmclock`, so the C kvm-clock leaves the MSRs
alone and the Rust clocksource takes over. Everything runs twice: with the
host's PVCLOCK_TSC_STABLE_BIT honoured, and with KVM_FEATURE_CLOCKSOURCE_STABLE_BIT
hidden from the guest (QEMU's `kvmclock-stable-bit=off`), where the global
last-value guard must keep the clock monotonic."""

import sys
from pathlib import Path

import pytest

from pvrs_testlib import guest

SCRIPTS = Path(__file__).resolve().parents[1] / "guest-scripts"
CPU_MODELS = {
    "stable": "host,kvm-pv-ipi=on",
    "stable-bit-hidden": "host,kvmclock-stable-bit=off",
}
# Rate agreement bound: both clocks come from the TSC that KVM scales for
# the guest. Measured on the nested host: 2-30 ppm when the machine is idle,
# up to 1200 ppm when other nested guests and a kernel build compete for its
# 2 cores (L1 itself runs on TCG, and its clock bends when it is starved).
# 2000 ppm (0.2 %) stays clear of that and still far below what a wrong
# scale factor (a shift is a factor of 2) or a wrong area would show.
RATE_PPM = 2000


@pytest.fixture(scope="module", params=list(CPU_MODELS))
def run(request):
    cfg = guest.GuestConfig(host="kvm", script=SCRIPTS / "pvclock.sh", smp=2, append="no-kvmclock",
                            qemu_args=["-cpu", CPU_MODELS[request.param]], timeout=900)
    res = guest.run_guest_retrying_hangs(cfg, echo=lambda line: None)
    lines = [(t, l[4:]) for t, l in res.timed_lines if l.startswith("PC: ")]
    sys.stdout.write("\n".join(l for _, l in lines) + "\n")
    assert res.status == 0, (res.reason, res.console[-3000:])
    return request.param, lines


def find(lines, prefix="", key=None):
    parsed = [(t, guest.key_values(l)) for t, l in lines if l.startswith(prefix)]
    return [(t, f) for t, f in parsed if key is None or key in f]


def test_rust_clocksource_is_current(run):
    mode, lines = run
    assert find(lines, "current=")[0][1]["current"] == "pvrs-kvm-clock"
    stats = find(lines, "msr=")[0][1]
    assert stats["msr"] == "0x4b564d01"                   # MSR_KVM_SYSTEM_TIME_NEW
    assert stats["registered_cpus"] == stats["online_cpus"] == "2"
    assert stats["stable_bit_valid"] == ("false" if mode == "stable-bit-hidden" else "true")


def test_no_backward_steps_with_two_readers(run):
    _, lines = run
    check = find(lines, "clockcheck", "threads")[0][1]
    assert int(check["reads"]) >= 10_000_000 and check["threads"] == "2" and check["pinned"] == "true"
    assert check["local_backward"] == "0" and check["cross_backward"] == "0", check


def test_rate_agrees_with_the_host_over_10_seconds(run):
    """The host's wall-clock time from KVM_HC_CLOCK_PAIRING against the guest's
    CLOCK_REALTIME (driven by the Rust clocksource) read around it."""
    _, lines = run
    pairings = [f for _, f in find(lines, "op=clock_pairing")]
    assert len(pairings) == 2 and all(p["result"] == "ok" for p in pairings), pairings
    (h0, b0, a0), (h1, b1, a1) = [(int(p["host_ns"]), int(p["guest_before_ns"]), int(p["guest_after_ns"]))
                                  for p in pairings]
    host_elapsed = h1 - h0
    guest_elapsed = (b1 + a1) // 2 - (b0 + a0) // 2
    assert host_elapsed >= 10e9
    uncertainty = (a0 - b0 + a1 - b1) / 2
    error = abs(guest_elapsed - host_elapsed)
    print(f"\nover {host_elapsed / 1e9:.3f} s: guest-host {error / 1e3:.1f} us "
          f"(read uncertainty {uncertainty / 1e3:.1f} us, bound {RATE_PPM} ppm)")
    assert error <= uncertainty + RATE_PPM * 1e-6 * host_elapsed


def test_wall_clock_agrees_with_the_host_date(run):
    """MSR_KVM_WALL_CLOCK_NEW plus the Rust clocksource gives the KVM host's
    wall-clock time: it must agree within 100 ms with the host's
    CLOCK_REALTIME from a CLOCK_PAIRING hypercall made in the same read of
    the `wallclock` file (both come from the host's clock; 100 ms covers a
    starved nested vCPU between the two), so within a second of the host's
    date.

    On the nested host the KVM host is L1, whose own clock started from a
    whole-second RTC under TCG and may be a second or two off this
    machine's: against this machine's date the bound is 3 s."""
    _, lines = run
    walls = find(lines, "wall_ns=")
    assert len(walls) == 2
    for arrived, wall in walls:
        wall_ns = int(wall["wall_ns"])
        host_ns = int(wall["host_pairing_ns"])
        print(f"\nwall clock - KVM host clock: {(wall_ns - host_ns) / 1e6:.3f} ms; "
              f"- this machine's date at arrival: {wall_ns / 1e9 - arrived:.3f} s")
        assert abs(wall_ns - host_ns) < 100e6, (wall_ns, host_ns)
        assert abs(wall_ns / 1e9 - arrived) < 3.0, (wall_ns / 1e9, arrived)


def test_cpu_offline_and_online(run):
    _, lines = run
    offline = find(lines, "offline")[0][1]
    assert offline["registered_cpus"] == "1" and offline["online_cpus"] == "1"
    one_cpu = [f for _, f in find(lines, "clockcheck") if f.get("threads") == "1"][0]
    assert one_cpu["local_backward"] == "0"
    online = find(lines, "online")[0][1]
    assert online["registered_cpus"] == "2" and online["online_cpus"] == "2"


def test_unload_releases_the_msrs(run):
    _, lines = run
    loaded = [l for _, l in lines if l.startswith("msr-loaded")][0]
    assert loaded.count("value=0x0") == 0, loaded       # both CPUs registered
    assert find(lines, "switched")[0][1]["current"] == "hpet"
    assert find(lines, "rmmod")[0][1]["rmmod"] == "ok"
    unloaded = [l for _, l in lines if l.startswith("msr-unloaded")][0]
    assert unloaded.count("value=0x0 ") + unloaded.endswith("value=0x0") == 2, unloaded


def test_refuses_while_c_kvmclock_owns_the_msrs(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("insmod /modules/pvrs_pvclock.ko && exit 2\n"
                      "grep -q '^pvrs_pvclock ' /proc/modules && exit 3\n"
                      "dmesg | grep -q 'the C kvm-clock owns the MSRs' || exit 4\n"
                      "[ $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) = kvm-clock ]\n")
    res = guest.run_guest_retrying_hangs(guest.GuestConfig(host="kvm", script=script, timeout=600),
                                         echo=lambda l: None)
    assert res.status == 0
