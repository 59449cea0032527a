#!/usr/bin/env python3
"""Writes the seed inputs of the pvrs-vmm fuzz targets into corpus/<target>/.

The input formats are described in host-backend/pvrs-vmm/src/fuzzing.rs:
a header (queue size, flags, next available index) and a guest memory image
with the descriptor table at 0x0, the available ring at 0x100 and the used
ring at 0x300. Each seed is a valid (or deliberately broken) request, so
that the fuzzer starts from inputs that reach deep into the parsers.
"""

import struct
import sys
from pathlib import Path

DESC, AVAIL, USED = 0x0, 0x100, 0x300
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
R, W = 0, F_WRITE


class Image:
    def __init__(self, size=0x2000):
        self.mem = bytearray(size)

    def put(self, addr, data):
        self.mem[addr:addr + len(data)] = data

    def descs(self, table, base=DESC):
        for i, (addr, length, flags, nxt) in enumerate(table):
            self.put(base + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def avail(self, heads, flags=0):
        self.put(AVAIL, struct.pack("<HH", flags, len(heads)))
        for i, h in enumerate(heads):
            self.put(AVAIL + 4 + 2 * i, struct.pack("<H", h))

    def input(self, qflags=0x04, next_avail=0):
        end = len(self.mem.rstrip(b"\0"))
        return bytes([qflags]) + struct.pack("<H", next_avail) + bytes(self.mem[:end])


def chain(*bufs):
    """(addr, len, dir) buffers -> descriptor table entries 0..n-1."""
    out = []
    for i, (addr, length, d) in enumerate(bufs):
        last = i == len(bufs) - 1
        out.append((addr, length, d | (0 if last else F_NEXT), 0 if last else i + 1))
    return out


def blk_request(kind, sector=0, data=None, data_dir=W, data_len=512, extra=b""):
    img = Image()
    img.put(0x1000, struct.pack("<IIQ", kind, 0, sector))
    bufs = [(0x1000, 16, R)]
    if data is not None:
        img.put(0x1100, data)
        bufs.append((0x1100, len(data), data_dir))
    elif data_len:
        bufs.append((0x1100, data_len, data_dir))
    bufs.append((0x1f00, 1, W))
    img.descs(chain(*bufs))
    img.avail([0])
    img.put(0x1800, extra)
    return img


def seeds():
    s = {}
    # virtqueue
    img = Image()
    img.descs(chain((0x1000, 16, R), (0x1100, 512, W), (0x1f00, 1, W)))
    img.avail([0])
    s["virtqueue/three-descriptors"] = img.input()
    s["virtqueue/three-descriptors-event-idx"] = img.input(0x14)
    img = Image()
    img.descs([(0x1000, 16, R | F_NEXT, 1), (0x1100, 16, R | F_NEXT, 0)])
    img.avail([0])
    s["virtqueue/loop"] = img.input()
    img = Image()
    img.descs([(0x800, 48, F_INDIRECT, 0)])
    img.descs(chain((0x1000, 16, R), (0x1100, 64, W), (0x1200, 1, W)), base=0x800)
    img.avail([0])
    s["virtqueue/indirect"] = img.input()
    img = Image()
    img.descs(chain((0x1000, 16, R), (0x1010, 16, W)) + [(0x1100, 8, R, 0)])
    img.avail([0, 2])
    s["virtqueue/two-chains"] = img.input()
    img = Image()
    img.descs(chain((0x1000, 0x100, R), (0x10f0, 16, W)))
    img.avail([0])
    s["virtqueue/overlap"] = img.input()

    # blk
    s["blk/read"] = blk_request(0, sector=1).input()
    s["blk/write"] = blk_request(1, sector=2, data=b"\xab" * 512, data_dir=R).input()
    s["blk/write-read-only"] = blk_request(1, data=b"\xab" * 512, data_dir=R).input(0x24)
    s["blk/flush"] = blk_request(4, data_len=0).input()
    s["blk/get-id"] = blk_request(8, data_len=20).input()
    s["blk/discard"] = blk_request(11, data=struct.pack("<QII", 4, 8, 0), data_dir=R).input()
    s["blk/write-zeroes-unmap"] = blk_request(13, data=struct.pack("<QII", 4, 8, 1), data_dir=R).input()
    s["blk/unsupported"] = blk_request(99, data_len=0).input()
    s["blk/read-past-end"] = blk_request(0, sector=127).input()

    # net
    img = Image()
    img.put(0x1000, bytes(12) + b"\xff" * 6 + b"\x02\0\0\0\0\1" + b"\x08\x00" + b"payload")
    img.descs(chain((0x1000, 12, R), (0x100c, 21, R)))
    img.avail([0])
    s["net/transmit"] = img.input(0x44)
    img = Image()
    img.descs(chain((0x1000, 12, W), (0x1100, 1500, W)))
    img.avail([0])
    s["net/receive"] = img.input(0x04)

    # balloon
    img = Image()
    img.put(0x1000, struct.pack("<8I", 8, 9, 10, 11, 0xc, 0xd, 0xe, 0xf))
    img.descs(chain((0x1000, 32, R)))
    img.avail([0])
    s["balloon/inflate"] = img.input(0x04)
    s["balloon/deflate"] = img.input(0x44)
    img = Image()
    img.put(0x1000, b"".join(struct.pack("<HQ", t, v) for t, v in [(4, 1 << 26), (5, 1 << 28)]))
    img.descs(chain((0x1000, 20, R)))
    img.avail([0])
    s["balloon/stats"] = img.input(0x04)

    # mmio: a Linux-like bring-up of a blk device, one read, a reset.
    img = blk_request(0, sector=1)
    mem = bytes(img.mem[:0x2000])
    ops = []

    def op(kind, off, val=0, size=4):
        ops.append(struct.pack("<BBHI", kind, {1: 0, 2: 1, 4: 2, 8: 3}[size], off, val))

    for off in (0x0, 0x4, 0x8, 0xc):
        op(0, off)
    op(1, 0x70, 0)
    op(1, 0x70, 1)
    op(1, 0x70, 3)
    op(1, 0x14, 1)
    op(0, 0x10)
    op(1, 0x24, 1)
    op(1, 0x20, 1)
    op(1, 0x70, 0xb)
    op(0, 0x70)
    op(1, 0x30, 0)
    op(0, 0x34)
    op(1, 0x38, 16)
    op(1, 0x80, DESC)
    op(1, 0x90, AVAIL)
    op(1, 0xa0, USED)
    op(1, 0x44, 1)
    op(1, 0x70, 0xf)
    op(0, 0x100, size=8)
    op(3, 0, 0)
    op(0, 0x60)
    op(1, 0x64, 1)
    op(1, 0x70, 0)
    s["mmio/bring-up-and-read"] = struct.pack("<H", len(mem)) + mem + b"".join(ops)
    return s


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus"
    for name, data in seeds().items():
        path = root / f"{name}.seed"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(seeds())} seeds under {root}")


if __name__ == "__main__":
    main()
