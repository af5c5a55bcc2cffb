"""Where a benchmark round's CPU went, per process, read from Linux's ``/proc``.

On the 2-core box the load generator, the server under test and PostgreSQL share
the cores, so a rate alone does not say what limits it. :class:`CpuAccount`
takes CPU seconds (user + system) of named process trees, and of the whole
machine, before and after a round; :meth:`CpuAccount.per_request` turns the
differences into µs of CPU per request. Processes that exit during the round are
not counted (their time is lost to ``/proc``); the load generator, a child that
was waited for, is read from ``RUSAGE_CHILDREN`` instead.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its living descendants."""
    return sum(process_cpu_s(pid) for pid in process_tree(root))


def machine_cpu_s() -> tuple[float, float]:
    """Busy and idle CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK, idle / _TICK


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuAccount:
    """CPU seconds per named process tree (and the load generator, and the machine) over one round."""

    trees: dict[str, int]  # name -> root pid
    # Trees whose root and descendants are told apart: "NAME" is then the root process alone and
    # "NAME's children" the rest (the API process and its HTTP ingest worker).
    split: frozenset[str] = frozenset()
    _start: dict[str, float] = field(default_factory=dict)
    used_s: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        busy, idle = machine_cpu_s()
        out = {name: tree_cpu_s(pid) for name, pid in self.trees.items()}
        for name in self.split:
            root = process_cpu_s(self.trees[name])
            out[f"{name}'s children"] = out[name] - root
            out[name] = root
        out["load generator"] = _children_cpu_s()
        out["machine busy"] = busy
        out["machine idle"] = idle
        return out

    def start(self) -> None:
        """Take the starting readings."""
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        """Take the final readings; CPU seconds used by each, since :meth:`start`."""
        end = self._read()
        self.used_s = {k: end[k] - self._start[k] for k in end}
        own = [f"{name}'s children" for name in self.split]
        named = sum(self.used_s[name] for name in (*self.trees, *own, "load generator"))
        self.used_s["other"] = self.used_s["machine busy"] - named
        return self.used_s

    def per_request(self, requests: int) -> dict[str, float]:
        """µs of CPU per request, by process (``machine idle`` too: CPU left unused)."""
        return {k: v / max(1, requests) * 1e6 for k, v in self.used_s.items()}


__all__ = ["CpuAccount", "machine_cpu_s", "process_cpu_s", "process_tree", "tree_cpu_s"]
