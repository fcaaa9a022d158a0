#!/usr/bin/env bash
# The test suite on the lowest versions our pins allow (what .ci/run runs after the latest).
#
#   bash .ci/lowest.sh                  # install if needed, print the SDK versions, python -m pytest
#   bash .ci/lowest.sh tests/providers  # arguments go to pytest
#
# A venv with every library in pyproject.toml at its lower bound (scripts/constraints_lowest.py;
# the test tools resolve to their latest), in $BUDGETCLIENT_LOWEST_VENV, by default
# ${TMPDIR:-/tmp}/budgetclient-lowest. Idempotent: when pyproject.toml is unchanged since the last
# install, the libraries still sit at their lower bounds and the editable install is this
# checkout, nothing is installed; otherwise pip brings the existing venv to the constraints.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
venv="${BUDGETCLIENT_LOWEST_VENV:-${TMPDIR:-/tmp}/budgetclient-lowest}"
py="$venv/bin/python"

if ! "$py" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
  python -m venv "$venv"
fi
stamp="$(cat pyproject.toml scripts/constraints_lowest.py | sha256sum | cut -d' ' -f1) $(pwd -P)"
# where the venv's budgetclient comes from (run from / so that this checkout is not on sys.path)
where='import budgetclient, pathlib; print(pathlib.Path(budgetclient.__file__).resolve().parents[1])'
installed_here="$(cd / && "$py" -c "$where" 2>/dev/null || true)"

if [ "$(cat "$venv/.budgetclient-stamp" 2>/dev/null)" = "$stamp" ] && [ "$installed_here" = "$(pwd -P)" ] \
   && "$py" scripts/constraints_lowest.py --check >/dev/null 2>&1; then
  echo "== lowest: $venv is up to date"
else
  echo "== lowest: installing into $venv"
  python scripts/constraints_lowest.py > "$venv/constraints.txt"
  "$py" -m pip install -q -c "$venv/constraints.txt" -e '.[dev]'
  "$py" scripts/constraints_lowest.py --check  # every library at its lower bound, or stop here
  echo "$stamp" > "$venv/.budgetclient-stamp"
fi

"$py" scripts/sdk_versions.py
"$py" -m pytest "$@"
