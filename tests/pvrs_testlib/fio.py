"""fio in the guests: the static binary that tests/build-fio makes (Debian's
fio source, only the libaio engine; see that script for why), and its
results.

Guest scripts run fio with `--output-format=terse --terse-version=3` and
print each result line with the prefix `FIO: `; `results` reads them back
from the console, by job name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import paths

FIO = paths.CACHE / "fio" / "fio"
BUILD_FIO = paths.ROOT / "tests" / "build-fio"

# The guest side: runs fio with its arguments and prints the terse lines
# with the prefix `FIO: `; the shell status is fio's.
GUEST_RUN = """fio_run() {
    fio --output-format=terse --terse-version=3 --eta=never --output=/tmp/fio.out "$@"
    fio_rc=$?
    sed 's/^/FIO: /' /tmp/fio.out
    return $fio_rc
}
"""

# 1-based fields of a terse version 3 line (fio(1), TERSE OUTPUT).
TERSE_V3 = {"jobname": 3, "error": 5, "read_kb": 6, "read_bw_kb": 7, "read_iops": 8,
            "write_kb": 47, "write_bw_kb": 48, "write_iops": 49}


def ensure() -> Path:
    """The fio binary for guests, built first when it is missing (about 30 s
    once; a no-op when up to date)."""
    subprocess.run([str(BUILD_FIO)], check=True)
    return FIO


def write_jobfile(path: Path, global_opts: list[str], jobs: list[tuple[str, str]]) -> Path:
    """A fio job file: `global_opts` ("key=value" each) for every job, then
    each job (its name, its options as "key=value key=value ...")."""
    lines = ["[global]", *global_opts]
    for name, opts in jobs:
        lines += ["", f"[{name}]", *opts.split()]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_terse(line: str) -> dict:
    """The fields of TERSE_V3 from one terse line; numbers as int or float."""
    f = line.split(";")
    if f[0] != "3":
        raise ValueError(f"not a fio terse v3 line: {line[:80]!r}")
    out = {}
    for name, i in TERSE_V3.items():
        v = f[i - 1]
        out[name] = v if name == "jobname" else float(v) if "." in v else int(v)
    return out


def results(console: str) -> dict[str, dict]:
    """Each job's fields, by job name, from the `FIO: ` lines of a console."""
    jobs = {}
    for line in console.splitlines():
        if line.startswith("FIO: 3;"):
            r = parse_terse(line[len("FIO: "):])
            jobs[r["jobname"]] = r
    return jobs
