"""The virtio balloon: pvrs_balloon (Rust) and, held to the same tests,
Linux's virtio_balloon (C), on QEMU TCG with QEMU's virtio-balloon device,
driven from the host over QMP (virtio 1.2, 5.5)."""

import time
from pathlib import Path

import pytest

from pvrs_testlib import guest

SCRIPTS = Path(__file__).resolve().parents[1] / "guest-scripts"
MEM_MIB = 512
PAGE_KB = 4
# How long the balloon may take to reach a target: 128 MiB is 32768 pages,
# 128 batches of 256; on TCG one batch takes about 2 ms.
CONVERGE_S = 30
DRIVERS = ["pvrs_balloon", "virtio_balloon"]


def set_and_wait(g, q, balloon_mib):
    """Sets the balloon to `balloon_mib` and waits until QEMU reports that
    the guest reached it; returns the seconds it took."""
    target = (MEM_MIB - balloon_mib) << 20
    start = time.monotonic()
    q.execute("balloon", value=target)
    while time.monotonic() - start < CONVERGE_S:
        if q.execute("query-balloon")["actual"] == target:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"balloon of {balloon_mib} MiB not reached in {CONVERGE_S} s: "
                         f"{q.execute('query-balloon')}")


def mem_after(g, settle=1.0):
    """The first meminfo line printed `settle` seconds from now."""
    deadline = time.monotonic() + settle
    while True:
        m = guest.key_values(g.expect(r"BAL: mem (.*)", timeout=30).group(1))
        if time.monotonic() >= deadline:
            return {k: int(v) for k, v in m.items()}


def session(driver, device_opts, script):
    cfg = guest.GuestConfig(host="tcg", script=SCRIPTS / script, mem=MEM_MIB, timeout=900,
                            load_modules=[driver],
                            qemu_args=["-device", f"virtio-balloon-pci,id=balloon0{device_opts}"])
    return guest.GuestSession(cfg, echo=lambda line: print(line) if "BAL:" in line and "mem" not in line else None)


@pytest.mark.parametrize("driver", DRIVERS)
def test_balloon(driver):
    """Convergence and /proc/meminfo, statistics over QMP, 100
    inflate/deflate cycles, and unloading with the balloon inflated."""
    with session(driver, "", "balloon.sh") as g:
        ready = guest.key_values(g.expect(r"BAL: ready (.*)").group(1))
        assert ready["driver"] == driver
        total0 = int(ready["total"])
        q = g.qmp()

        # Convergence: QEMU's `actual` reaches the target, and the guest's
        # MemTotal drops by exactly the balloon (no deflate-on-oom here).
        took = set_and_wait(g, q, 128)
        print(f"{driver}: 128 MiB inflated in {took:.2f} s")
        assert mem_after(g)["total"] == total0 - 128 * 1024

        # Statistics, refreshed every second at QEMU's request.
        q.execute("qom-set", path="/machine/peripheral/balloon0",
                  property="guest-stats-polling-interval", value=1)
        time.sleep(3)
        stats = q.execute("qom-get", path="/machine/peripheral/balloon0", property="guest-stats")
        print(f"{driver}: {stats}")
        s = stats["stats"]
        assert stats["last-update"] > 0
        assert s["stat-total-memory"] == (total0 - 128 * 1024) * 1024
        assert 0 < s["stat-free-memory"] <= s["stat-total-memory"]
        assert 0 < s["stat-available-memory"] <= s["stat-total-memory"]
        assert s["stat-minor-faults"] > 0
        for key in ["stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-disk-caches"]:
            assert s[key] >= 0

        took = set_and_wait(g, q, 0)
        assert mem_after(g)["total"] == total0

        # 100 cycles; MemTotal back where it started, nothing leaked.
        start = time.monotonic()
        for _ in range(100):
            set_and_wait(g, q, 16)
            set_and_wait(g, q, 0)
        print(f"{driver}: 100 cycles of 16 MiB in {time.monotonic() - start:.1f} s")
        assert mem_after(g)["total"] == total0

        # Unload with 200 MiB in the balloon: every page comes back.
        set_and_wait(g, q, 200)
        inflated = guest.key_values(g.expect(r"BAL: inflated (.*)").group(1))
        assert int(inflated["total"]) == total0 - 200 * 1024
        unloaded = guest.key_values(g.expect(r"BAL: unloaded (.*)").group(1))
        assert unloaded["rc"] == "0"
        assert int(unloaded["total"]) == total0
        q.execute("quit")


@pytest.mark.parametrize("driver", DRIVERS)
def test_deflate_on_oom(driver):
    """With DEFLATE_ON_OOM, an allocation of 100 MiB more than is available
    after inflation succeeds: the driver deflates instead of the OOM killer
    killing a task."""
    with session(driver, ",deflate-on-oom=on", "balloon-oom.sh") as g:
        ready = guest.key_values(g.expect(r"BAL: ready (.*)").group(1))
        avail_mib = int(ready["avail"]) // 1024
        q = g.qmp()
        balloon = avail_mib - 100                    # leaves about 100 MiB
        set_and_wait(g, q, balloon)
        start = guest.key_values(g.expect(r"BAL: oom-start (.*)", timeout=60).group(1))
        done = guest.key_values(g.expect(r"BAL: oom-done (.*)", timeout=300).group(1))
        after = q.execute("query-balloon")["actual"] >> 20
        print(f"{driver}: balloon {balloon} MiB, allocated {start['alloc_mib']} MiB: {done}; "
              f"balloon now {MEM_MIB - after} MiB")
        assert done["rc"] == "0" and done["killed"] == "0"
        assert MEM_MIB - after < balloon, "the balloon did not deflate"
        q.execute("quit")
