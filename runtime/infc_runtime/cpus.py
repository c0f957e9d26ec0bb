"""How many CPUs this process may really use: its affinity mask, capped by the container's CPU quota.

`os.cpu_count()` is the host's count. A container limited by a CPU quota (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`: Kubernetes' `limits.cpu`,
`docker run --cpus`) or a process pinned with `taskset` may use fewer; threads
sized from the host's count then fight over the CPUs it has.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["affinity_cpus", "cpu_quota", "usable_cpus"]

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP) -> int | None:
    """CPUs the cgroup quota allows (rounded up), or None when there is no quota or it cannot be read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" or "150000 100000"
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def affinity_cpus() -> int:
    """The CPUs in this process's affinity mask (the host's count off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP) -> int:
    """The CPUs in this process's affinity mask, capped by the cgroup quota."""
    cpus = affinity_cpus()
    quota = cpu_quota(root)
    return max(1, min(cpus, quota) if quota is not None else cpus)
