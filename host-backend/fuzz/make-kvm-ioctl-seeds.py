#!/usr/bin/env python3
"""Writes the seed inputs of the kvm_ioctl fuzz target into corpus/kvm_ioctl/.

The input format is described in hv-core/tests/common/kvm_ioctl_harness.rs:
file kind, command selector (an index into kvm_api's ioctl table, read from
ioctl.rs so the seeds follow the table), raw command, arg, option bits,
then the argument bytes.  Each seed is a valid request or one that breaks
exactly one of KVM's rules, so the fuzzer starts deep in each decoder.
"""

import re
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
IOCTL_RS = HERE.parent / "hv-core/src/kvm_api/ioctl.rs"
NAMES = re.findall(r"^\s+\w+ = (KVM_\w+):", IOCTL_RS.read_text(), re.M)
SYSTEM, VM, VCPU = 0, 1, 2


def seed(fd, name, body=b"", arg=0, options=0, raw=None):
    if raw is None:
        head = struct.pack("<BBI", fd, NAMES.index(name), 0)
    else:
        head = struct.pack("<BBI", fd, 0xff, raw)
    return head + struct.pack("<QH", arg, options) + body


def cpuid2(nent, entries):
    return struct.pack("<II", nent, 0) + b"".join(
        struct.pack("<7I3I", f, i, fl, a, b, c, d, 0, 0, 0) for f, i, fl, a, b, c, d in entries)


def msrs(nmsrs, entries):
    return struct.pack("<II", nmsrs, 0) + b"".join(struct.pack("<IIQ", i, 0, v) for i, v in entries)


def segment(base, limit, selector, type_, l=0):
    return struct.pack("<QIHBBBBBBBBBB", base, limit, selector, type_, 1, 0, 0, 1, l, 1, 0, 0, 0)


def sregs(cr0, cr3, cr4, efer, long_cs):
    segs = segment(0, 0xfffff, 8, 11, long_cs) + segment(0, 0xfffff, 16, 3) * 5
    segs += segment(0, 0x67, 0x18, 11) + segment(0, 0, 0, 2)
    tables = struct.pack("<QH3H", 0x500, 0x27, 0, 0, 0) * 2
    return segs + tables + struct.pack("<7Q4Q", cr0, 0, cr3, cr4, 0, efer, 0xfee00900, 0, 0, 0, 0)


LONG_MODE = sregs(0x80000011, 0x1000, 0x20, 0x500, 1)
SEEDS = {
    "set_regs": seed(VCPU, "KVM_SET_REGS", struct.pack("<18Q", *range(18))),
    "set_sregs_long_mode": seed(VCPU, "KVM_SET_SREGS", LONG_MODE, options=48 << 8),
    "set_sregs_no_pae": seed(VCPU, "KVM_SET_SREGS", sregs(0x80000011, 0x1000, 0, 0x500, 1)),
    "set_cpuid2": seed(VCPU, "KVM_SET_CPUID2",
                       cpuid2(2, [(0, 0, 0, 0xd, 0x68747541, 0x444d4163, 0x69746e65),
                                  (7, 0, 1, 0, 0x209, 0, 0)])),
    "set_cpuid2_too_many": seed(VCPU, "KVM_SET_CPUID2", cpuid2(257, [])),
    "get_supported_cpuid": seed(SYSTEM, "KVM_GET_SUPPORTED_CPUID", cpuid2(3, [(0, 0, 0, 1, 2, 3, 4)] * 3)),
    "set_msrs": seed(VCPU, "KVM_SET_MSRS", msrs(3, [(0x10, 1), (0xc0000080, 0x500), (0x1b, 0xfee00900)])),
    "get_msrs_too_many": seed(VCPU, "KVM_GET_MSRS", msrs(256, [])),
    "msr_index_list": seed(SYSTEM, "KVM_GET_MSR_INDEX_LIST", struct.pack("<I4I", 2, 0x10, 0x11, 0x12, 0x13)),
    "ioeventfd_pio_datamatch": seed(VM, "KVM_IOEVENTFD",
                                    struct.pack("<QQIiI36x", 0x55, 0xcf8, 4, 9, 3)),
    "ioeventfd_bad_length": seed(VM, "KVM_IOEVENTFD", struct.pack("<QQIiI36x", 0, 0xd0000000, 3, 9, 0)),
    "irqfd_resample": seed(VM, "KVM_IRQFD", struct.pack("<IIII16x", 7, 5, 2, 8)),
    "memory_region_readonly": seed(VM, "KVM_SET_USER_MEMORY_REGION",
                                   struct.pack("<IIQQQ", 3, 2, 0x100000, 0x200000, 0x7f0000000000),
                                   options=1 << 2),
    "memory_region2_guest_memfd": seed(VM, "KVM_SET_USER_MEMORY_REGION2",
                                       struct.pack("<IIQQQQII14Q", 1, 4, 0, 0x1000, 0, 0, 5, 0, *[0] * 14),
                                       options=1 << 3),
    "enable_cap_split_irqchip": seed(VM, "KVM_ENABLE_CAP", struct.pack("<II4Q64x", 121, 0, 24, 0, 0, 0)),
    "enable_cap_x2apic_vcpu": seed(VCPU, "KVM_ENABLE_CAP", struct.pack("<II4Q64x", 129, 0, 3, 0, 0, 0)),
    "gsi_routing": seed(VM, "KVM_SET_GSI_ROUTING",
                        struct.pack("<II", 2, 0)
                        + struct.pack("<IIII8I", 4, 1, 0, 0, 2, 4, 0, 0, 0, 0, 0, 0)
                        + struct.pack("<IIII8I", 24, 2, 1, 0, 0xfee00000, 0, 0x4021, 3, 0, 0, 0, 0)),
    "vcpu_events_payload": seed(VCPU, "KVM_SET_VCPU_EVENTS",
                                struct.pack("<BBBBI4s4sII4sB26xBQ", 0, 14, 1, 1, 0x2, b"\0" * 4, b"\0" * 4,
                                            0, 0x10, b"\0" * 4, 0, 1, 0xdead0000), options=1),
    "xcrs": seed(VCPU, "KVM_SET_XCRS", struct.pack("<II", 1, 0) + struct.pack("<IIQ", 0, 0, 7) + bytes(15 * 16 + 128),
                 options=3),
    "mp_state_halted": seed(VCPU, "KVM_SET_MP_STATE", struct.pack("<I", 3), options=2),
    "debugregs": seed(VCPU, "KVM_SET_DEBUGREGS", struct.pack("<4QQQQ9Q", 0, 0, 0, 0, 0xffff0ff0, 0x400, 0, *[0] * 9)),
    "clock_realtime": seed(VM, "KVM_SET_CLOCK", struct.pack("<QIIQQ4I", 1000, 4, 0, 2000, 0, 0, 0, 0, 0)),
    "signal_mask": seed(VCPU, "KVM_SET_SIGNAL_MASK", struct.pack("<IQ", 8, 1 << 13)),
    "run_nonzero_arg": seed(VCPU, "KVM_RUN", arg=1),
    "run_exit_io_out": seed(VCPU, "KVM_RUN", struct.pack("<BH", 1, 4) + b"OUT!" + bytes(8), options=0x10 | 0),
    "run_exit_mmio_write": seed(VCPU, "KVM_RUN", struct.pack("<BH", 4, 1) + b"\xde\xad\xbe\xef" + bytes(8),
                                options=0x10 | 1 | 0xc),
    "run_exit_emulation_failure": seed(VCPU, "KVM_RUN", bytes(range(64)), options=8 | (3 << 8) | (2 << 11)),
    "run_exit_system_event": seed(VCPU, "KVM_RUN", struct.pack("<I", 2) + bytes(60), options=9 | (4 << 11)),
    "wrong_fd_get_regs_on_vm": seed(VM, "KVM_GET_REGS"),
    "unknown_tty_ioctl": seed(VCPU, None, raw=0x5401),
}


def main():
    out = HERE / "corpus/kvm_ioctl"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (out / f"seed-{name}").write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")


if __name__ == "__main__":
    main()
