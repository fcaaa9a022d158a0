#!/usr/bin/env bash
# A throwaway PostgreSQL server for the fleet-ledger tests.
#
#   source .ci/postgres.sh      # exports BUDGETCLIENT_TEST_POSTGRES_URL (what .ci/run does)
#   bash .ci/postgres.sh        # prints the URL
#   bash .ci/postgres.sh stop   # stops the server and removes its data directory
#
# Installs Debian's postgresql if no server binaries are present (apt-get update once), then runs
# a private cluster in a temporary directory, listening on 127.0.0.1 only (trust auth, fsync off:
# it holds test data and nothing else). Idempotent: a server this script started earlier and that
# is still running is reused, so sourcing it again takes well under a second.

_bc_pg_main() {
  local base="${BUDGETCLIENT_PG_DIR:-${TMPDIR:-/tmp}/budgetclient-ci-postgres}"
  local data="$base/data" user="budgetclient" db="budgetclient_test"
  local bindir="" run=() port

  _bc_pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    d="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    return 1
  }

  if ! bindir="$(_bc_pg_bindir)"; then
    echo "== installing postgresql (Debian package)" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null || { echo "postgres.sh: apt-get update failed" >&2; return 1; }
    $sudo apt-get install -y -q postgresql >/dev/null \
      || { echo "postgres.sh: apt-get install postgresql failed" >&2; return 1; }
    bindir="$(_bc_pg_bindir)" || { echo "postgres.sh: no initdb after installing postgresql" >&2; return 1; }
  fi

  # PostgreSQL refuses to run as root: run the cluster as the postgres user when we are root.
  if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      useradd --system --home-dir "$base" --shell /usr/sbin/nologin postgres \
        || { echo "postgres.sh: cannot create the postgres user" >&2; return 1; }
    fi
    if command -v runuser >/dev/null 2>&1; then run=(runuser -u postgres --); else run=(su postgres -s /bin/sh -c); fi
  fi
  _bc_pg_run() {
    if [ "${#run[@]}" -eq 0 ]; then "$@";
    elif [ "${run[0]}" = runuser ]; then "${run[@]}" "$@";
    else "${run[@]}" "$(printf '%q ' "$@")"; fi
  }

  if [ "${1:-}" = stop ]; then
    if [ -d "$data" ]; then _bc_pg_run "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$base"
    return 0
  fi

  # reuse a server started earlier only if it really answers (a killed one may leave a pid behind)
  if [ -f "$base/port" ] && "$bindir/pg_isready" -q -h 127.0.0.1 -p "$(cat "$base/port")" -t 3 >/dev/null 2>&1; then
    port="$(cat "$base/port")"
  else
    # a leftover directory (server gone, machine reused) is thrown away: it only ever held test data
    if [ -d "$data" ]; then _bc_pg_run "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$base"
    mkdir -p "$base"
    chmod 0755 "$base"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "$port" >"$base/port"
    if [ "$(id -u)" = 0 ]; then chown postgres "$base"; fi
    echo "== starting a throwaway PostgreSQL on 127.0.0.1:$port ($bindir)" >&2
    _bc_pg_run "$bindir/initdb" -D "$data" -U "$user" --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 \
      >"$base/initdb.log" 2>&1 \
      || { cat "$base/initdb.log" >&2; echo "postgres.sh: initdb failed" >&2; return 1; }
    _bc_pg_run "$bindir/pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      >/dev/null \
      || { cat "$base/server.log" >&2; echo "postgres.sh: the server did not start" >&2; return 1; }
    _bc_pg_run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" \
      || { echo "postgres.sh: createdb failed" >&2; return 1; }
  fi

  export BUDGETCLIENT_TEST_POSTGRES_URL="postgresql://$user@127.0.0.1:$port/$db"
  echo "BUDGETCLIENT_TEST_POSTGRES_URL=$BUDGETCLIENT_TEST_POSTGRES_URL"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  _bc_pg_main "$@" || return 1
else
  set -uo pipefail
  _bc_pg_main "$@" || exit 1
fi
