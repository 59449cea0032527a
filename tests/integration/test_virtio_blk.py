"""virtio-blk: the Rust pvrs_virtio_blk and, held to the same tests, Linux's
virtio_blk (C), on QEMU TCG with QEMU's virtio-blk-pci and a raw image file
on the host (virtio 1.2, 5.2): data integrity under fio verify, fsync'd data
surviving a SIGKILL of QEMU, discard and write-zeroes reaching the image, a
capacity change, a read-only disk, ext2, multiqueue, the write cache and
the serial (GET_ID).

Each test boots one guest with exactly one of the two drivers loaded and
checks that it is the one bound to /dev/vda.
"""

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from pvrs_testlib import fio, guest, paths

DRIVERS = ["virtio_blk", "pvrs_virtio_blk"]
# Drivers that may be missing from the kernel build, with the reason: their
# tests are skipped then. Both are built by default: a missing module fails
# every test that needs it.
NOT_BUILT_YET: dict[str, str] = {}
# What a driver is known not to do yet, by (driver, test id): these cases are
# expected to fail (strict: once they pass, remove the entry).
KNOWN_GAPS: dict[tuple[str, str], str] = {}
MIB = 1 << 20
SECTOR = 512
SERIAL = "pvrs-blk-serial-7"
# Host programs the guest scripts use. Busybox has applets of the same name
# with fewer options (no `blkdiscard -z`), which its sh prefers: the
# scripts call these by their full path in /usr/local/bin.
TOOLS = [Path("/usr/sbin/blkdiscard"), Path("/usr/sbin/mkfs.ext2"), Path("/usr/sbin/e2fsck")]

# Every guest script starts with this: wait for the disk, then say which
# driver is bound to it and what it sees.
PRELUDE = r"""
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b /dev/vda ]; then echo "BLK: no /dev/vda"; exit 90; fi
echo "BLK: ready driver=$(basename "$(readlink /sys/block/vda/device/driver)")" \
     "sectors=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vda/ro)"
"""


@pytest.fixture(params=DRIVERS)
def driver(request):
    name = request.param
    if not (paths.GUEST_MODULES / f"{name}.ko").exists():
        if name in NOT_BUILT_YET:
            pytest.skip(f"{name}.ko is not built: {NOT_BUILT_YET[name]}")
        pytest.fail(f"{name}.ko is missing from {paths.GUEST_MODULES}: run `make guest`")
    return name


def known_gap(request, driver, case):
    if reason := KNOWN_GAPS.get((driver, case)):
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{driver}: {reason}"))


def image(path: Path, mib: int, fill: bytes | None = None) -> Path:
    """A raw image of `mib` MiB: sparse (zeros), or every byte the one
    byte `fill`, written out."""
    with open(path, "wb") as f:
        if fill is None:
            f.truncate(mib * MIB)
        else:
            for _ in range(mib):
                f.write(fill * MIB)
    return path


def sha256_range(path: Path, offset: int, length: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(length)).hexdigest()


def config(driver, tmp_path, body, disk, **kw) -> guest.GuestConfig:
    script = tmp_path / "guest.sh"
    script.write_text(PRELUDE + body)
    kw.setdefault("binaries", TOOLS)
    return guest.GuestConfig(host="tcg", script=script, disks=[disk], load_modules=[driver],
                             quiet=True, timeout=600, **kw)


def bound(driver, text):
    """The fields of the guest's `BLK: ready` line, after checking that
    `driver` is the one bound to /dev/vda."""
    m = re.search(r"BLK: ready (.*)", text)
    assert m, "the guest did not report /dev/vda"
    ready = guest.key_values(m.group(1))
    assert ready["driver"] == driver, f"/dev/vda is bound to {ready['driver']}, not {driver}"
    return ready


def run(driver, tmp_path, body, disk, **kw):
    """Boots a guest that runs PRELUDE + `body` with `disk` as /dev/vda;
    returns the `BLK:` lines' fields by their first word, and the result."""
    res = guest.run_guest(config(driver, tmp_path, body, disk, **kw), echo=print)
    bound(driver, res.console)
    assert res.status == 0, f"guest script failed: {res.reason}, status {res.status}"
    lines = {}
    for line in res.console.splitlines():
        if line.startswith("BLK: "):
            word, _, rest = line[len("BLK: "):].partition(" ")
            lines[word] = guest.key_values(rest)
    return lines, res


def session(driver, tmp_path, body, disk, **kw) -> guest.GuestSession:
    return guest.GuestSession(config(driver, tmp_path, body, disk, **kw), echo=print)


# -- 1. data integrity under fio verify --------------------------------------

FIO_DISK_MIB = 128
# (job, its options): each writes with a verify header in every block and
# then reads everything it wrote back and checks it (do_verify); the jobs
# run one after the other (stonewall). Sizes from one 512-byte sector to
# 1 MiB, queue depths 1 to 32, and two threads on the two CPUs (so on both
# hardware queues) at once.
FIO_JOBS = [
    ("seq-1m-qd16", "rw=write bs=1M iodepth=16"),
    ("rand-4k-qd32", "rw=randwrite bs=4k iodepth=32"),
    ("rand-64k-qd16", "rw=randwrite bs=64k iodepth=16"),
    ("rand-4k-qd1", "rw=randwrite bs=4k iodepth=1 io_size=16M"),
    ("rand-mixed-qd16", "rw=randwrite bssplit=512/10:4k/30:16k/20:128k/20:1M/20 iodepth=16"),
    ("rand-16k-qd16-2cpus", "rw=randwrite bs=16k iodepth=16 numjobs=2 size=64M offset_increment=64M "
                            "cpus_allowed=0-1 cpus_allowed_policy=split group_reporting=1"),
]


def test_fio_verify(driver, tmp_path):
    """fio writes the whole disk (or, at queue depth 1, 16 MiB spread over
    it) and reads every block back with its checksum checked."""
    fio_bin = fio.ensure()
    disk = image(tmp_path / "disk.img", FIO_DISK_MIB)
    jobfile = fio.write_jobfile(tmp_path / "verify.fio",
                                ["filename=/dev/vda", "ioengine=libaio", "direct=1", "verify=crc32c", "do_verify=1",
                                 "verify_fatal=1", "stonewall=1", "size=100%"], FIO_JOBS)
    body = fio.GUEST_RUN + "fio_run /files/verify.fio\n"
    _, res = run(driver, tmp_path, body, disk, files=[jobfile], binaries=[fio_bin])
    jobs = fio.results(res.console)
    assert set(jobs) == {name for name, _ in FIO_JOBS}, f"fio reported jobs {sorted(jobs)}"
    for name, opts in FIO_JOBS:
        r = jobs[name]
        want_kb = 16 * 1024 if "io_size=16M" in opts else FIO_DISK_MIB * 1024
        print(f"{driver}: {name}: wrote {r['write_kb']} KiB at {r['write_iops']} IOPS, verified {r['read_kb']} KiB")
        assert r["error"] == 0, f"{name}: fio error {r['error']}"
        assert r["write_kb"] == want_kb, f"{name}: wrote {r['write_kb']} KiB, not {want_kb}"
        assert r["read_kb"] == r["write_kb"], f"{name}: verified {r['read_kb']} KiB of {r['write_kb']}"


# -- 2. fsync'd data survives SIGKILL of QEMU --------------------------------

def test_fsync_survives_qemu_sigkill(driver, tmp_path):
    """8 MiB written through the page cache and fsync'd are in the image
    when QEMU is killed with SIGKILL the moment the guest says so."""
    offset_mib, size_mib = 24, 8
    pattern = tmp_path / "pattern.bin"
    pattern.write_bytes(os.urandom(size_mib * MIB))
    disk = image(tmp_path / "disk.img", 64)
    body = f"""
dd if=/files/pattern.bin of=/dev/vda bs=1M seek={offset_mib} conv=fsync 2>/dev/null || exit 1
echo "BLK: synced"
# More writes without fsync while QEMU is killed: none of them matter.
while true; do dd if=/dev/urandom of=/dev/vda bs=1M count=4 2>/dev/null; done
"""
    with session(driver, tmp_path, body, disk, files=[pattern]) as g:
        bound(driver, g.expect(r"BLK: ready .*").group(0))
        g.expect(r"BLK: synced")
        g.kill()
        res = g.wait()
    assert res.reason == "no-result", "QEMU was not killed before the guest ended"
    assert sha256_range(disk, offset_mib * MIB, size_mib * MIB) == hashlib.sha256(pattern.read_bytes()).hexdigest(), \
        "the fsync'd data is not (all) in the image after QEMU's SIGKILL"


# -- 3. discard and write-zeroes ---------------------------------------------

def test_discard_and_write_zeroes(driver, tmp_path):
    """On a raw image with discard=unmap: a discarded range reads as zeros
    and its blocks are freed in the image file (a hole); a write-zeroes
    range reads as zeros; everything around them is left alone."""
    fill = b"\xa5"
    disk = image(tmp_path / "disk.img", 64, fill)
    blocks_before = os.stat(disk).st_blocks
    discard = (16 * MIB, 16 * MIB)
    zeroes = (40 * MIB, 8 * MIB)
    body = f"""
q=/sys/block/vda/queue
echo "BLK: limits discard_max=$(cat $q/discard_max_bytes) zeroes_max=$(cat $q/write_zeroes_max_bytes)"
/usr/local/bin/blkdiscard -o {discard[0]} -l {discard[1]} /dev/vda || exit 1
/usr/local/bin/blkdiscard -z -o {zeroes[0]} -l {zeroes[1]} /dev/vda || exit 2
# The guest reads the zeros back too (from the device, not its page cache).
nonzero() {{ dd if=/dev/vda bs=1M skip=$(($1 >> 20)) count=$(($2 >> 20)) iflag=direct 2>/dev/null \
    | tr -d '\\000' | wc -c; }}
echo "BLK: readback discarded=$(nonzero {discard[0]} {discard[1]}) zeroed=$(nonzero {zeroes[0]} {zeroes[1]})"
"""
    lines, _ = run(driver, tmp_path, body, guest.Disk(disk, drive_opts="discard=unmap,detect-zeroes=off"))
    assert int(lines["limits"]["discard_max"]) > 0 and int(lines["limits"]["zeroes_max"]) > 0
    assert lines["readback"] == {"discarded": "0", "zeroed": "0"}
    data = disk.read_bytes()
    assert len(data) == 64 * MIB
    for off, length in (discard, zeroes):
        assert data[off:off + length] == bytes(length), f"{length >> 20} MiB at {off >> 20} MiB: not zeros"
    kept = data[:discard[0]] + data[sum(discard):zeroes[0]] + data[sum(zeroes):]
    assert kept == fill * len(kept), "data outside the discarded and zeroed ranges changed"
    freed = (blocks_before - os.stat(disk).st_blocks) * 512
    print(f"{driver}: {freed / MIB:.2f} MiB of the image file freed")
    with open(disk, "rb") as f:
        try:
            data_at = os.lseek(f.fileno(), discard[0], os.SEEK_DATA)
        except OSError:           # ENXIO: no data after the offset
            data_at = len(data)
    assert data_at >= sum(discard), f"the discarded range is not a hole in the image (data at {data_at})"
    # The host file system may need a block or two more for its own
    # bookkeeping of the hole.
    assert freed >= discard[1] - MIB, f"the discard freed only {freed} bytes of the image file"


# -- 4. capacity change (QMP block_resize) -----------------------------------

def test_block_resize(driver, tmp_path):
    """QEMU grows the disk from 64 to 96 MiB: the guest sees the new size
    (config change interrupt), logs it, and can write at its new end."""
    old, new = 64 * MIB // SECTOR, 96 * MIB // SECTOR
    disk = image(tmp_path / "disk.img", 64)
    body = f"""
echo "BLK: waiting"
i=0
while [ "$(cat /sys/block/vda/size)" = {old} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
echo "BLK: resized sectors=$(cat /sys/block/vda/size)"
dmesg | grep 'capacity change' | sed 's/^/BLK: dmesg /'
printf PVRS-NEW-END | dd of=/dev/vda bs=512 seek={new - 1} conv=sync,fsync 2>/dev/null || exit 1
"""
    with session(driver, tmp_path, body, disk) as g:
        ready = bound(driver, g.expect(r"BLK: ready .*").group(0))
        assert int(ready["sectors"]) == old
        g.expect(r"BLK: waiting")
        g.qmp().execute("block_resize", device="disk0", size=new * SECTOR)
        m = g.expect(r"BLK: resized sectors=(\d+)", timeout=90)
        assert int(m.group(1)) == new
        g.expect(rf"BLK: dmesg .*detected capacity change from {old} to {new}")
        res = g.wait()
    assert res.status == 0
    with open(disk, "rb") as f:
        f.seek((new - 1) * SECTOR)
        assert f.read(12) == b"PVRS-NEW-END"


# -- 5. read-only disk -------------------------------------------------------

def test_read_only_disk(driver, tmp_path):
    """A disk QEMU opens read-only: the guest sees it read-only, writes
    (direct and buffered) fail, and the data is intact."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(32 * MIB))
    want = hashlib.sha256(disk.read_bytes()).hexdigest()
    body = """
echo "BLK: ro sysfs=$(cat /sys/block/vda/ro) getro=$(blockdev --getro /dev/vda)"
n=0
for flags in oflag=direct conv=fsync; do
    if dd if=/dev/zero of=/dev/vda bs=4k count=4 $flags 2>/tmp/err; then
        echo "BLK: write-accepted $flags"
    else
        n=$((n + 1))
        echo "BLK: write-refused-$n $flags error=\\"$(tr '\\n' ' ' </tmp/err)\\""
    fi
done
echo "BLK: data sha256=$(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
"""
    lines, res = run(driver, tmp_path, body, guest.Disk(disk, read_only=True))
    assert lines["ro"] == {"sysfs": "1", "getro": "1"}
    assert "write-accepted" not in lines, "a write to the read-only disk succeeded"
    assert "write-refused-2" in lines
    errors = re.findall(r"BLK: write-refused-\d .*", res.console)
    assert all(re.search(r"Operation not permitted|Read-only file system|I/O error|Permission denied", e)
               for e in errors), errors
    assert lines["data"]["sha256"] == want, "the guest reads other data than the image holds"
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == want, "the read-only image changed"


# -- 6. ext2 -----------------------------------------------------------------

def test_ext2(driver, tmp_path):
    """mkfs.ext2, e2fsck clean; mount, write files, unmount, e2fsck clean
    again, the files read back; and e2fsck of the image on the host is
    clean too, with a file's content as the guest wrote it."""
    disk = image(tmp_path / "disk.img", 64)
    body = r"""
E2FSCK=/usr/local/bin/e2fsck
/usr/local/bin/mkfs.ext2 -q -F /dev/vda || exit 1
$E2FSCK -f -n /dev/vda >/tmp/fsck 2>&1; echo "BLK: fsck-new rc=$?"; cat /tmp/fsck
mkdir -p /mnt && mount -t ext2 /dev/vda /mnt || exit 2
for i in $(seq 1 40); do
    dd if=/dev/urandom of=/mnt/f$i bs=4k count=$((i * 7)) 2>/dev/null || exit 3
done
mkdir /mnt/dir && cp /mnt/f1 /mnt/f2 /mnt/dir/
(cd /mnt && sha256sum f* dir/*) >/tmp/sums
echo "BLK: file name=f40 sha256=$(sha256sum /mnt/f40 | cut -d' ' -f1)"
umount /mnt || exit 4
$E2FSCK -f -n /dev/vda >/tmp/fsck 2>&1; echo "BLK: fsck-used rc=$?"; cat /tmp/fsck
mount -t ext2 -o ro /dev/vda /mnt || exit 5
(cd /mnt && sha256sum -c /tmp/sums >/dev/null); echo "BLK: reread rc=$?"
umount /mnt
"""
    lines, _ = run(driver, tmp_path, body, disk)
    assert lines["fsck-new"]["rc"] == "0"
    assert lines["fsck-used"]["rc"] == "0"
    assert lines["reread"]["rc"] == "0"
    host = subprocess.run(["e2fsck", "-f", "-n", str(disk)], capture_output=True, text=True)
    assert host.returncode == 0, host.stdout + host.stderr
    f40 = subprocess.run(["debugfs", "-R", "cat /f40", str(disk)], capture_output=True, check=True).stdout
    assert hashlib.sha256(f40).hexdigest() == lines["file"]["sha256"]


# -- 7. multiqueue -----------------------------------------------------------

@pytest.mark.parametrize("queues", [1, 2])
def test_multiqueue(driver, tmp_path, queues):
    """With num-queues=N on 2 CPUs the disk has N hardware queues, and I/O
    from each CPU reaches the device on the virtqueue of its queue."""
    disk = image(tmp_path / "disk.img", 32)
    body = """
echo "BLK: mq n=$(ls /sys/block/vda/mq | wc -l) cpus=$(cat /sys/block/vda/mq/*/cpu_list | tr -d ' ' | tr '\\n' ';')"
for cpu in 0 1; do
    taskset -c $cpu dd if=/dev/vda of=/dev/null bs=4k count=256 skip=$((cpu * 1024)) iflag=direct 2>/dev/null || exit 1
done
echo "BLK: io-done"
sleep 600
"""
    dev = guest.Disk(disk, device_opts=f"id=vblk0,num-queues={queues}")
    with session(driver, tmp_path, body, dev, smp=2) as g:
        bound(driver, g.expect(r"BLK: ready .*").group(0))
        mq = guest.key_values(g.expect(r"BLK: mq (.*)").group(1))
        g.expect(r"BLK: io-done")
        q = g.qmp()
        avail = [q.execute("x-query-virtio-queue-status", path="/machine/peripheral/vblk0/virtio-backend",
                           queue=i)["last-avail-idx"] for i in range(queues)]
        q.execute("quit")
    print(f"{driver}: {queues} queue(s): {mq}, requests taken from each virtqueue: {avail}")
    assert int(mq["n"]) == queues
    assert all(n > 0 for n in avail), f"a virtqueue carried no requests: {avail}"


# -- 8. write cache (FLUSH) and serial (GET_ID) ------------------------------

@pytest.mark.parametrize("write_cache", ["on", "off"])
def test_write_cache_and_serial(driver, tmp_path, write_cache, request):
    """The cache mode follows the device: write back, with a flush sent to
    the device on fsync, or write through, with none; the serial is the
    device's (GET_ID)."""
    known_gap(request, driver, f"write_cache[{write_cache}]")
    disk = image(tmp_path / "disk.img", 16)
    body = """
flushes() { set -- $(cat /sys/block/vda/stat); echo "${16:-missing}"; }
echo "BLK: cache mode=$(tr ' ' _ </sys/block/vda/queue/write_cache) serial=$(cat /sys/block/vda/serial)"
f0=$(flushes)
dd if=/dev/urandom of=/dev/vda bs=4k count=16 conv=fsync 2>/dev/null || exit 1
echo "BLK: flushes before=$f0 after=$(flushes)"
"""
    dev = guest.Disk(disk, device_opts=f"serial={SERIAL},write-cache={write_cache}")
    lines, _ = run(driver, tmp_path, body, dev)
    cache, flushes = lines["cache"], {k: int(v) for k, v in lines["flushes"].items()}
    print(f"{driver}: write-cache={write_cache}: {cache}, flush requests {flushes}")
    assert cache["serial"] == SERIAL
    if write_cache == "on":
        assert cache["mode"] == "write_back"
        assert flushes["after"] > flushes["before"], "fsync sent no flush to the device"
    else:
        assert cache["mode"] == "write_through"
        assert flushes["after"] == flushes["before"], "flushes went to a write-through disk"
