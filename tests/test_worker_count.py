"""How many agent processes `timestep up` starts by default: the cores it may use, a container's CPU limit included."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.workers import cgroup_cpu_quota, check_count
from timestep.errors import ValidationError


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "max 100000\n"}, None),                      # cgroup v2, no limit
    ({"cpu.max": "150000 100000\n"}, 1.5),                    # docker run --cpus 1.5: two processes (rounded up)
    ({"cpu.max": "50000 100000\n"}, 0.5),                     # a Kubernetes limit of 500m: one
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # cgroup v1, no limit
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({}, None),                                               # no cgroup file: not limited
])
def test_a_containers_cpu_limit_is_read_from_its_cgroup(files: dict[str, str], cpus: float | None, tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == cpus


def test_workers_need_the_agent_role() -> None:
    assert check_count(3, {"agent"}) == 3
    assert check_count(1, {"governor"}) == 1
    with pytest.raises(ValidationError, match="--workers: 2 workers without the agent role"):
        check_count(2, {"governor", "scheduler"})
