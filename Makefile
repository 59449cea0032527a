# pvrs: the commands that matter (see README.md).
#
#   make demo    boot the guest on the KVM host, show PV detection, run hackbench
#   make bench   benchmarks against the C counterparts (build/bench/)
#   make fuzz    the host's fuzz targets, 5 minutes each
#   make check   everything CI runs: host tests and lints, guest kernel build
#                (clippy-clean), guest tests on the TCG and KVM hosts
#
# Everything installs what it needs on first use. The kernel tree and the
# object tree are cached in ~/.cache/pvrs (PVRS_CACHE) and rebuilt
# incrementally.
#
# (When the kernel build descends into drivers/pvrs it reads Kbuild, not
# this file.)

.PHONY: all guest guest-tools host vmm virtio-guest l0-qemu check check-host check-guest check-nested-smp check-kvm-selftests demo bench fuzz clean help

all: guest guest-tools

help:
	@sed -n '3,10p' Makefile

guest:
	tests/build-guest

# Our static guest programs (build/guest-tools/) and a static fio
# (~/.cache/pvrs/fio/fio).
guest-tools:
	tests/build-guest-tools
	tests/build-fio

# The L0 QEMU of the nested KVM host: QEMU 10.0 with the SVM fixes of
# tests/l0-qemu/, into ~/.cache/pvrs/l0-qemu/ (about 3 minutes, once).
l0-qemu:
	tests/build-l0-qemu

host:
	cargo build --locked --manifest-path host-backend/Cargo.toml --workspace

# pvrs-vmm, static, into build/vmm/ (also usable inside the nested L1).
vmm:
	tests/build-vmm

# The bare-metal virtio test guest (tests/virtio-guest) into build/virtio-guest/.
virtio-guest:
	tests/build-virtio-guest

# Every fuzz target for 5 minutes (make check runs each for 15 s).
fuzz:
	tests/fuzz 300

check:
	tests/check

check-host:
	tests/check --only host

check-guest:
	tests/check --only guest

# The nested platform's SMP workloads RUNS times each (default 20), with a
# pass/fail table (build/bench/nested-smp.json).
RUNS ?= 20
check-nested-smp: guest guest-tools l0-qemu
	tests/nested-smp-soak --runs $(RUNS)

# Linux's KVM selftests, all of them, on kvm_amd and on /dev/pvrs in one
# nested L1, with a table (build/bench/kvm-selftests.txt and .json).
check-kvm-selftests: guest l0-qemu
	python3 -m pytest -v -p no:cacheprovider -m kvm_selftests tests/integration/test_kvm_selftests.py

demo: guest guest-tools vmm l0-qemu
	tests/demo

# Benchmarks against their C counterparts (pvrs-vmm against QEMU, the
# pvrs_kvm module against kvm_amd: exits and Linux L2 workloads); results
# in build/bench/. BENCH=NAME... runs only those (pvcore, balloon, vmm, hv,
# blk, net; tests/bench lists them; `tests/bench --selftest` checks the hv
# parser offline).
bench: guest guest-tools vmm virtio-guest l0-qemu
	tests/bench $(BENCH)

clean:
	rm -rf build host-backend/target
