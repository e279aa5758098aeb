"""./tasks.sh installs what each task needs, once: the demo Timestep alone, the tests their extras (and the
benchmark's, which the benchmark's smoke test runs). Run against a stand-in .venv whose python and
timestep only log how they were called."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "timestep", "mkdocs"):
        script = venv / "bin" / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{venv}/calls"\n')
        script.chmod(0o755)
    return venv


def _task(venv: Path, *args: str) -> list[str]:
    """The calls one task made (pip installs, then the command it runs)."""
    calls = venv / "calls"
    calls.unlink(missing_ok=True)
    done = subprocess.run([str(ROOT / "tasks.sh"), *args], env={"TIMESTEP_VENV": str(venv), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def _installs(calls: list[str]) -> list[str]:
    return [call.split()[-1] for call in calls if " pip install " in call]


def test_the_demo_installs_timestep_alone_and_the_tests_add_their_extras_once(tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    assert _installs(_task(venv, "demo")) == ["."]
    assert _installs(_task(venv, "test")) == [".[bench,docs,test]"]
    assert _installs(_task(venv, "test")) == []
    assert _installs(_task(venv, "demo")) == []  # the extras stay; nothing to install
    assert _installs(_task(venv, "docs")) == []
    assert _task(venv, "docs", "-a", "127.0.0.1:8001")[-1] == "mkdocs serve -a 127.0.0.1:8001"
    assert _task(venv, "demo")[-1] == "timestep demo"


def test_bench_then_test_adds_the_test_extras_and_a_changed_pyproject_installs_again(tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    assert _installs(_task(venv, "bench")) == [".[bench]"]
    assert _installs(_task(venv, "test")) == [".[bench,docs,test]"]
    marker = venv / ".installed"
    digest, extras = marker.read_text().split()
    assert extras == "bench,docs,test"
    marker.write_text(f"{'0' * len(digest)} {extras}\n")  # as if pyproject.toml changed since
    assert _installs(_task(venv, "demo")) == ["."]
    assert _installs(_task(venv, "test")) == [".[bench,docs,test]"]


def test_test_fast_runs_the_fast_tier_and_passes_the_other_arguments_on(tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    fast = "-m not slow and not processes and not browser and not node and not postgres and not bench"
    assert _task(venv, "test", "--fast", "-k", "queues")[-1] == f"python -m pytest -n 4 --dist loadgroup {fast} -k queues"
    assert _task(venv, "test", "-k", "queues")[-1] == "python -m pytest -n 4 --dist loadgroup -k queues"  # every tier
    assert _task(venv, "test")[-1] == "python -m pytest -n 4 --dist loadgroup"
