"""The foundation: the runner, both hosts, and KVM detection by pvrs_hypercall."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvrs_testlib import guest

TESTS = Path(__file__).resolve().parents[1]
RUN_GUEST = TESTS / "run-guest"
SCRIPTS = TESTS / "guest-scripts"


def write_script(tmp_path, text, name="s.sh"):
    p = tmp_path / name
    p.write_text(text)
    return p


def run(args, timeout=900):
    """Runs tests/run-guest, echoing its output, and returns (status, output)."""
    # Nested runs occasionally stall or crash (an emulation fault in L1):
    # run_guest repeats those that died before the script ran, and
    # --retry-hang repeats once a run whose script started but reported no
    # result. A script's status is never retried.
    proc = subprocess.run([sys.executable, str(RUN_GUEST), "--retry-hang", *args], capture_output=True,
                          text=True, timeout=timeout)
    sys.stdout.write(proc.stdout[-6000:])
    sys.stderr.write(proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("host", ["tcg", "kvm"])
def test_script_exit_status_is_returned(tmp_path, host):
    status, out = run(["--host", host, "--script", str(write_script(tmp_path, "exit 7\n"))])
    assert status == 7
    assert "guest script exited with status 7" in out


def test_kvm_host_choice_is_announced(tmp_path):
    status, out = run(["--host", "kvm", "--script", str(write_script(tmp_path, "exit 0\n"))])
    assert status == 0
    if guest.host_has_hw_virt():
        assert "this machine's /dev/kvm" in out
    else:
        assert "host kvm: nested" in out


def test_detection_on_kvm():
    status, out = run(["--host", "kvm", "--script", str(SCRIPTS / "detect-kvm.sh")])
    assert status == 0, "pvrs_hypercall and userspace CPUID disagree on KVM"
    assert "PASS: module and userspace agree" in out


def test_detection_on_tcg():
    status, out = run(["--host", "tcg", "--script", str(SCRIPTS / "detect-no-kvm.sh")])
    assert status == 0
    assert "PASS: no KVM" in out


def test_files_are_copied_into_the_guest(tmp_path):
    payload = tmp_path / "payload.txt"
    payload.write_text("pvrs payload 42\n")
    script = write_script(tmp_path, "grep -q 'pvrs payload 42' /files/payload.txt || exit 3\n")
    status, _ = run(["--host", "tcg", "--script", str(script), "--file", str(payload)])
    assert status == 0


def test_kernel_panic_is_reported(tmp_path):
    script = write_script(tmp_path, "echo c > /proc/sysrq-trigger\nsleep 60\n")
    status, out = run(["--host", "tcg", "--script", str(script), "--timeout", "120"])
    assert status == guest.EXIT_GUEST_FAILED
    assert "the guest kernel panicked" in out


def test_timeout_stops_the_guest(tmp_path):
    script = write_script(tmp_path, "sleep 1000\n")
    status, out = run(["--host", "tcg", "--script", str(script), "--timeout", "25"])
    assert status == guest.EXIT_TIMEOUT
    assert "timeout after 25 s" in out


def _descendants(pid):
    """All live descendants of `pid`, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_stopping_the_runner_leaves_no_qemu(tmp_path, how):
    script = write_script(tmp_path, "echo guest-is-up\nsleep 1000\n")
    proc = subprocess.Popen([sys.executable, str(RUN_GUEST), "--host", "tcg", "--script", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    qemus = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if "guest-is-up" in line and "echo" not in line:
            break
        assert time.monotonic() < deadline, "the guest did not come up"
    qemus = [p for p in _descendants(proc.pid) if (_comm(p) or "").startswith("qemu")]
    assert qemus, "no QEMU found under the runner"
    # Ctrl-C in a terminal sends SIGINT to the runner's process group; QEMU
    # is in its own group, so the runner alone must take care of it.
    proc.send_signal(how)
    proc.wait(timeout=30)
    time.sleep(1)
    left = [p for p in qemus if _comm(p) is not None and not _is_zombie(p)]
    assert not left, f"QEMU processes left behind: {left}"


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("host", ["tcg", "kvm"])
def test_disk_reaches_the_guest_and_back(tmp_path, host):
    """--disk: the guest reads what the host wrote and the host reads what
    the guest wrote (on kvm through both QEMUs of the nested setup)."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
        f.write(b"pvrs-host-marker")
    script = write_script(tmp_path, """
dd if=/dev/vda bs=16 count=1 2>/dev/null | grep -q pvrs-host-marker || { echo no host marker; exit 3; }
printf pvrs-guest-marker | dd of=/dev/vda bs=4096 seek=1 conv=fsync 2>/dev/null || exit 4
""")
    status, _ = run(["--host", host, "--script", str(script), "--disk", str(image)])
    assert status == 0
    with open(image, "rb") as f:
        f.seek(4096)
        assert f.read(17) == b"pvrs-guest-marker"
