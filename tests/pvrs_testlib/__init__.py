"""Test support for pvrs: initramfs images, guest runners, result parsing.

`tests/run-guest` is the command-line face of this package; integration tests
and benchmarks use `guest.run_guest` directly.
"""
