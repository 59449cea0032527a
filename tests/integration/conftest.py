"""pytest setup: make tests/pvrs_testlib importable, share fixtures."""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from pvrs_testlib import paths  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def guest_built():
    if not paths.GUEST_KERNEL.exists():
        pytest.fail(f"{paths.GUEST_KERNEL} is missing: run `make guest` first")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "nested_smp: 2-vCPU load on the nested KVM host; `make check` runs each "
        "once, `make check-nested-smp RUNS=N` (tests/nested-smp-soak) N times with a table")
    config.addinivalue_line(
        "markers", "kvm_selftests: every Linux KVM selftest on kvm_amd and /dev/pvrs (about an "
        "hour nested); `make check` runs a subset, `make check-kvm-selftests` all of them")
