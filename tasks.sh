#!/usr/bin/env bash
# Timestep's task runner. Each task creates or updates the virtual environment first.
#
#   ./tasks.sh demo          run the demo (embedded default: SQLite in ./.timestep)
#   ./tasks.sh test [ARGS]   run the whole test suite (ARGS go to pytest)
#   ./tasks.sh bench [ARGS]  run the benchmark (ARGS go to bench/run.py; --help lists them)
#   ./tasks.sh soak [ARGS]   the fault tests, longer (3000 runs, 30 kills or graceful stops; ARGS go to pytest)
#   ./tasks.sh setup         only create or update .venv
set -euo pipefail
cd "$(dirname "$0")"

VENV="${TIMESTEP_VENV:-.venv}"

setup() {
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Timestep needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
  fi
  # Reinstall only when the project's metadata changed since the last install.
  local want have=""
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  [ -f "$VENV/.installed" ] && have="$(cat "$VENV/.installed")"
  if [ "$want" != "$have" ]; then
    echo "Installing Timestep and its dependencies into $VENV ..." >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,bench]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$want" > "$VENV/.installed"
  fi
}

task="${1:-}"
[ $# -gt 0 ] && shift
case "$task" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/timestep" demo "$@" ;;
  # Two workers: most of the suite waits on subprocesses, servers and timers, not the CPU.
  # loadgroup: tests marked xdist_group("processes") (many processes on one PostgreSQL) share a worker.
  test) setup; exec "$VENV/bin/python" -m pytest -n 2 --dist loadgroup "$@" ;;
  bench) setup; exec "$VENV/bin/python" bench/run.py "$@" ;;
  soak)
    setup
    export TIMESTEP_FAULT_RUNS="${TIMESTEP_FAULT_RUNS:-3000}" TIMESTEP_FAULT_KILLS="${TIMESTEP_FAULT_KILLS:-30}"
    exec "$VENV/bin/python" -m pytest -p no:xdist -s tests/test_faults.py "$@" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
