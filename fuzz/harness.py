"""Run one input through a parser in a forked child under a memory cap and a time limit.

Why a child per input: the failures hunted here are a segfault in a C decoder, an allocation
of gigabytes that a header declared, and a loop that never ends; none of them can be caught
inside the process that suffers them. The child writes the input to a file, calls the
family's ``target`` on it, and reports through its exit status:

- ``accepted``: ``target`` returned;
- ``rejected``: it raised :class:`~oncopipe.core.errors.RejectError` (or another
  :class:`~oncopipe.core.errors.InputError`), the project's named reject;
- ``crash``: any other exception, or death by a signal (segfault, abort);
- ``hang``: still running at the time limit (killed);
- ``oom``: ``MemoryError`` or killed for exceeding the address-space cap.

The cap is ``RLIMIT_AS`` set to the child's current address space plus ``mem_bytes``, so
an import-heavy parent (torch reserves gigabytes of address space) does not eat the budget.

Forking is only safe from a single-threaded process: a child forked while another thread
held a lock (GNU OpenMP's, after torch or numpy ran a parallel loop) waits on it for ever,
and every input would count as a hang. Called from a process with other threads (a test
session that has trained models), the work is handed to one clean spawned process, kept for
the session, which forks the children instead.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("accepted", "rejected", "crash", "hang", "oom")
_EXIT = {0: "accepted", 3: "rejected", 4: "crash", 5: "oom"}
MEM_BYTES = 1 << 30
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Family:
    """A parser family: valid seed inputs and the real reader to run on one file.

    ``target(path)`` runs the project's own reader exactly as a stage or ``serve`` would;
    it returns for an accepted input and raises ``RejectError`` for a rejected one.
    ``mutate``, when given, is a structure-aware mutator (for example one that edits header
    fields, or inflates, mutates and re-deflates a gzip member) used for half the inputs.
    """

    name: str
    suffix: str
    seeds: Callable[[], Sequence[bytes]]
    target: Callable[[Path], object]
    mutate: Callable[[bytes, random.Random], bytes] | None = None


@dataclass
class Tally:
    """Outcome counts for one family, and the inputs that crashed, hung or ran out."""

    family: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    findings: list[tuple[str, bytes, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)


def mutate_bytes(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    """One to four generic mutations: bit flips, interesting integers written over any
    offset (both byte orders, widths 1-8), truncation, chunk deletion/duplication, splices."""
    buf = bytearray(data or b"\0")
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf)) if buf else 0
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
            if rng.random() < 0.3:
                value = (1 << (8 * width)) - 1 - value  # and the negatives
            order = rng.choice(("<", ">"))
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
            buf[pos:pos + width] = struct.pack(order + code, value)
        elif op == 2:
            del buf[rng.randrange(len(buf) + 1):]
        elif op == 3:
            end = min(len(buf), pos + rng.randint(1, 64))
            del buf[pos:end]
        elif op == 4:
            end = min(len(buf), pos + rng.randint(1, 256))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 8)
        elif op == 5 and others:
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            buf[pos:] = other[cut:]
        else:
            buf[pos] = rng.randrange(256)
        if not buf:
            buf = bytearray(b"\0")
    return bytes(buf)


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


_clean: ProcessPoolExecutor | None = None
_in_clean = False  # set in the clean process: it always forks itself


def _threaded() -> bool:
    """Whether this process has threads besides the calling one (fork would be unsafe)."""
    try:
        return len(os.listdir("/proc/self/task")) > 1
    except OSError:
        import threading

        return threading.active_count() > 1


def _clean_process() -> ProcessPoolExecutor:
    global _clean
    if _clean is None:
        _clean = ProcessPoolExecutor(max_workers=1, initializer=_mark_clean,
                                     mp_context=multiprocessing.get_context("spawn"))
    return _clean


def _mark_clean() -> None:
    global _in_clean
    _in_clean = True


def _family(name: str) -> Family:
    from fuzz.families import all_families

    return all_families()[name]


def _run_one_named(name: str, data: bytes, workdir: str, mem_bytes: int,
                   timeout_s: float) -> tuple[str, str]:
    return run_one(_family(name), data, Path(workdir), mem_bytes=mem_bytes, timeout_s=timeout_s)


def _fuzz_named(name: str, n: int, seed: int, mem_bytes: int, timeout_s: float) -> Tally:
    return fuzz_family(_family(name), n, seed, mem_bytes=mem_bytes, timeout_s=timeout_s)


def run_one(family: Family, data: bytes, workdir: Path, *, mem_bytes: int = MEM_BYTES,
            timeout_s: float = TIMEOUT_S) -> tuple[str, str]:
    """Run ``family.target`` on ``data`` in a forked child: (outcome, detail)."""
    if not _in_clean and _threaded():
        return _clean_process().submit(_run_one_named, family.name, data, str(workdir),
                                       mem_bytes, timeout_s).result()
    path = workdir / f"input{family.suffix}"
    path.write_bytes(data)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        code, detail = 4, ""
        try:
            cap = _address_space() + mem_bytes
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            from oncopipe.core.errors import InputError
            try:
                family.target(path)
                code = 0
            except InputError as exc:
                code, detail = 3, str(exc)
            except MemoryError:
                code, detail = 5, "MemoryError"
            except BaseException:
                code, detail = 4, traceback.format_exc(limit=-6)
        finally:
            try:
                os.write(write_fd, detail[-4000:].encode("utf-8", "replace"))
            finally:
                os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout_s
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return "hang", f"still running after {timeout_s:g} s"
        else:
            time.sleep(0.002)
    with os.fdopen(read_fd, "rb") as fh:
        detail = fh.read().decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        outcome = "oom" if sig == signal.SIGKILL else "crash"
        return outcome, f"killed by {signal.Signals(sig).name}"
    return _EXIT.get(os.WEXITSTATUS(status), "crash"), detail


def fuzz_family(family: Family, n: int, seed: int = 0, *, mem_bytes: int = MEM_BYTES,
                timeout_s: float = TIMEOUT_S,
                progress: Callable[[int, int], None] | None = None) -> Tally:
    """``n`` inputs: the seeds themselves first, then mutants (generic, and the family's
    structure-aware mutator for half of them when it has one), all from ``seed``."""
    if not _in_clean and progress is None and _threaded():
        return _clean_process().submit(_fuzz_named, family.name, n, seed, mem_bytes,
                                       timeout_s).result()
    rng = random.Random(f"{family.name}:{seed}")
    seeds = [bytes(s) for s in family.seeds()]
    tally = Tally(family.name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{family.name}-") as tmp:
        for i in range(n):
            if i < len(seeds):
                data = seeds[i]
            else:
                base = rng.choice(seeds)
                if family.mutate is not None and rng.random() < 0.5:
                    data = family.mutate(base, rng)
                else:
                    data = mutate_bytes(base, rng, seeds)
            outcome, detail = run_one(family, data, Path(tmp), mem_bytes=mem_bytes,
                                      timeout_s=timeout_s)
            tally.counts[outcome] += 1
            if outcome in ("crash", "hang", "oom"):
                tally.findings.append((outcome, data, detail))
            if progress is not None:
                progress(i + 1, n)
    tally.seconds = time.perf_counter() - started
    return tally


def save_findings(tally: Tally, out: Path) -> list[Path]:
    """Write each finding as ``<out>/<family>/<outcome>-<sha1>.bin`` (+ ``.txt`` detail)."""
    written = []
    for outcome, data, detail in tally.findings:
        folder = out / tally.family
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{outcome}-{hashlib.sha1(data).hexdigest()[:12]}"
        (folder / f"{stem}.bin").write_bytes(data)
        (folder / f"{stem}.txt").write_text(detail)
        written.append(folder / f"{stem}.bin")
    return written


def main_guard() -> None:
    """Refuse to run where ``fork`` is missing (the harness needs it)."""
    if not hasattr(os, "fork"):
        sys.exit("fuzz: needs os.fork (Linux or macOS)")
