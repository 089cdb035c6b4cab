#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests: installed from the distribution's packages if
# missing, run as an unprivileged user in a temporary folder, listening on 127.0.0.1 only.
# Source it: `source scripts/postgres.sh` exports LEMUR_TEST_PG_URL and stops the server on exit.
set -euo pipefail
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "postgres: installing PostgreSQL from the distribution's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
pg_user=abnn_test
as_user=()
if [ "$(id -u)" = 0 ]; then
    id "$pg_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
    as_user=(runuser -u "$pg_user" --)
else
    pg_user="$(id -un)"
fi
pg_dir="$(mktemp -d /tmp/ab-nn-pg.XXXXXX)"
chmod 755 "$pg_dir"
[ "$(id -u)" = 0 ] && chown "$pg_user" "$pg_dir"
pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${as_user[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U "$pg_user" --auth=trust -E UTF8 >/dev/null
"${as_user[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-h 127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=200 -c fsync=off" start >/dev/null
"${as_user[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U "$pg_user" abnn
export LEMUR_TEST_PG_URL="postgresql+psycopg://$pg_user@127.0.0.1:$pg_port/abnn"
_stop_postgres() { "${as_user[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pg_dir"; }
trap _stop_postgres EXIT
echo "postgres: running at $LEMUR_TEST_PG_URL"
set +euo pipefail
