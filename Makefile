# pvrs: the commands that matter (see README.md).
#
#   make demo    boot the guest on the KVM host, show PV detection, run hackbench
#   make bench   benchmarks against the C counterparts (build/bench/)
#   make check   everything CI runs: host tests and lints, guest kernel build
#                (clippy-clean), guest tests on the TCG and KVM hosts
#
# Everything installs what it needs on first use. The kernel tree and the
# object tree are cached in ~/.cache/pvrs (PVRS_CACHE) and rebuilt
# incrementally.
#
# (When the kernel build descends into drivers/pvrs it reads Kbuild, not
# this file.)

.PHONY: all guest guest-tools host check check-host check-guest demo bench clean help

all: guest guest-tools

help:
	@sed -n '3,10p' Makefile

guest:
	tests/build-guest

guest-tools:
	tests/build-guest-tools

host:
	cargo build --locked --manifest-path host-backend/Cargo.toml --workspace

check:
	tests/check

check-host:
	tests/check --only host

check-guest:
	tests/check --only guest

demo: guest guest-tools
	tests/demo

# Benchmarks against their C counterparts; results in build/bench/.
bench: guest guest-tools
	tests/bench

clean:
	rm -rf build host-backend/target
