#!/usr/bin/env bash
# Timestep's task runner. Each task creates or updates the virtual environment first.
#
#   ./tasks.sh demo          run the demo (embedded default: SQLite in ./.timestep)
#   ./tasks.sh test [ARGS]   run the whole test suite (ARGS go to pytest)
#   ./tasks.sh test --fast   the fast tier: no test marked slow, processes, browser, node, postgres or bench
#   ./tasks.sh bench [ARGS]  run the benchmark (ARGS go to bench/run.py; --help lists them)
#   ./tasks.sh soak [ARGS]   the fault tests, longer (3000 runs, 30 kills or graceful stops; ARGS go to pytest)
#   ./tasks.sh docs [ARGS]   serve the documentation site at http://127.0.0.1:8000 (ARGS go to mkdocs serve)
#   ./tasks.sh setup         only create or update .venv (with the test, benchmark and docs extras)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${TIMESTEP_VENV:-.venv}"
# The fast tier, for the edit-test loop; CI and `./tasks.sh test` run every tier.
FAST="not slow and not processes and not browser and not node and not postgres and not bench"

# setup [EXTRAS]: create .venv and install Timestep with these extras (comma-separated: test, bench).
setup() {
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Timestep needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
  fi
  # Reinstall only when the project's metadata changed since the last install, or when this task needs
  # extras the last install left out. The marker holds the hash of pyproject.toml and the extras installed.
  local hash want="${1:-}" marker="" have_hash="" have=""
  hash="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  [ -f "$VENV/.installed" ] && marker="$(cat "$VENV/.installed")"
  read -r have_hash have <<< "$marker" || true
  [ "$hash" = "$have_hash" ] || have=""  # pip installs them again from the new metadata
  want="$(printf '%s\n' ${have//,/ } ${want//,/ } | sort -u | paste -sd, -)"
  [ "$hash" = "$have_hash" ] && [ "$want" = "$have" ] && return 0
  echo "Installing Timestep${want:+ with the extras $want} into $VENV ..." >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${want:+[$want]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$hash $want" > "$VENV/.installed"
}

task="${1:-}"
[ $# -gt 0 ] && shift
case "$task" in
  setup) setup test,bench,docs ;;
  # The demo needs only Timestep itself; the tests need their extras and, for the benchmark's smoke
  # test (tests/test_bench.py runs the peers it compares with), the benchmark's.
  demo) setup; exec "$VENV/bin/timestep" demo "$@" ;;
  # Four workers on two cores: most of the suite waits on subprocesses, servers and timers, not the CPU
  # (measured on one fresh clone: 10 min 21 s of tests with four, 11 min 14 s with three; 15 min 28 s with two
  # once). loadgroup: the tests that start processes on PostgreSQL share one worker (tests/conftest.py:
  # PG_PROCESSES), so their connections never add up.
  test)
    setup test,bench,docs
    # --fast becomes a marker expression (the markers are listed in pyproject.toml); the other ARGS go to pytest.
    args=()
    for arg in "$@"; do
      if [ "$arg" = "--fast" ]; then args+=(-m "$FAST"); else args+=("$arg"); fi
    done
    # The suite starts about 500 Python processes: each compiles Timestep's modules unless their bytecode is kept.
    unset PYTHONDONTWRITEBYTECODE
    exec "$VENV/bin/python" -m pytest -n 4 --dist loadgroup ${args[@]+"${args[@]}"} ;;
  docs) setup docs; NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" serve "$@" ;;
  bench) setup bench; exec "$VENV/bin/python" bench/run.py "$@" ;;
  soak)
    setup test
    export TIMESTEP_FAULT_RUNS="${TIMESTEP_FAULT_RUNS:-3000}" TIMESTEP_FAULT_KILLS="${TIMESTEP_FAULT_KILLS:-30}"
    # --timeout=0: the soak's tests run far longer than the suite's per-test bound.
    exec "$VENV/bin/python" -m pytest -p no:xdist -s --timeout=0 tests/test_faults.py "$@" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
