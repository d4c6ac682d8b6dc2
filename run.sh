#!/usr/bin/env bash
# One entry point for a fresh machine with Python 3.11 and pip:
#   ./run.sh up        start the whole stack on the embedded defaults (Redis, SQLite, sandbox, API, worker, beat):
#                      the devkit's `up` (python -m devkit up)
#   ./run.sh test      run the test suite
#   ./run.sh dev ARGS  a development command of the devkit (up, sandbox, chaos, demo)
#   ./run.sh ARGS      any other `orchestrator` command (api, worker, beat, migrate, status, checkout, ...)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
case "${1:-}" in
  test)
    shift
    # the console's browser test drives Debian's Chromium (installed here when we may)
    if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      (apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }) \
        || echo "run.sh: Chromium could not be installed; the console's browser test will be skipped" >&2
    fi
    # two workers: the end-to-end tests mostly wait on real processes (CI has two cores); `-n 0` runs serially
    exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@" ;;
  up) exec .venv/bin/python -m devkit "$@" ;;  # the devkit is the repository's, found from here (cd above)
  dev) shift; exec .venv/bin/python -m devkit "$@" ;;
  "") exec .venv/bin/orchestrator --help ;;
  *) exec .venv/bin/orchestrator "$@" ;;
esac
