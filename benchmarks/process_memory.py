"""Memory of process trees, sampled from /proc: summed RSS and PSS of a set of processes and
all their descendants (benchmarks/daemon_path.py's daemon, code server and run workers)."""

from __future__ import annotations

import os
import threading


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                # comm may hold spaces and parentheses: the ppid is the 2nd field after the last ')'.
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _kib_field(path: str, name: str) -> int:
    """A `Name:  N kB` line of a /proc file, in bytes (0 when the process is gone)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_bytes(pid: int) -> int:
    return _kib_field(f"/proc/{pid}/status", "VmRSS:")


def _pss_bytes(pid: int) -> int:
    """Proportional set size: a page shared by n processes counts 1/n in each (the numpy,
    scipy and sklearn libraries every run worker maps count once in the sum, as in RAM)."""
    return _kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def tree_rss(root: int) -> list[tuple[int, int, str]]:
    """(pid, RSS in bytes, command line) of `root` and each of its descendants; psutil when
    installed, else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            top = psutil.Process(root)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in procs:
            try:
                out.append((p.pid, p.memory_info().rss, " ".join(p.cmdline())[:120]))
            except psutil.NoSuchProcess:
                pass
        return out
    children, pids, i = _children_map(), [root], 0
    while i < len(pids):
        pids += children.get(pids[i], [])
        i += 1
    return [(p, _rss_bytes(p), _cmdline(p)) for p in pids]


class RssSampler:
    """Samples the summed RSS of process trees (the daemon's, the code server's) in a thread
    until stopped; keeps the peak."""

    def __init__(self, roots: list[int], every_s: float = 0.2):
        self.roots, self.every_s = roots, every_s
        self.peak_bytes, self.peak_processes, self.max_processes = 0, 0, 0
        self.peak_pss_bytes = 0
        self.at_peak: list[tuple[int, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            procs = [p for root in self.roots for p in tree_rss(root)]
            rss = sum(r for _, r, _ in procs)
            if rss > self.peak_bytes:
                self.peak_bytes, self.peak_processes, self.at_peak = rss, len(procs), procs
            self.peak_pss_bytes = max(self.peak_pss_bytes, sum(_pss_bytes(pid) for pid, _, _ in procs))
            self.max_processes = max(self.max_processes, len(procs))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
