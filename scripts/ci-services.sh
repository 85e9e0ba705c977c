#!/usr/bin/env bash
# Find or start the PostgreSQL, Redis and MariaDB that the test runs on real servers need.
#
#   source scripts/ci-services.sh && ci_services_ensure && ci_mysql_ensure
#
# Uses the servers answering on 127.0.0.1:5432 / :6379 / :3306 when there are any (CI's
# machine runs them). Otherwise installs Debian's packages if missing and starts private
# instances on loopback in a temporary folder, stopping exactly those on exit
# (ci_services_stop). Exports ATRIUM_TEST_POSTGRES_URL, ATRIUM_TEST_REDIS_URL and
# ATRIUM_TEST_MYSQL_URL, or returns non-zero saying why.

_svc_log() { printf '[ci-services] %s\n' "$*" >&2; }

_svc_pg_answers() { # url
    psql -X -qAt "$1" -c 'select 1' >/dev/null 2>&1
}

_svc_redis_answers() { # port
    [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]
}

_svc_install() {
    local need=()
    command -v psql >/dev/null || need+=(postgresql-client)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    command -v redis-server >/dev/null || need+=(redis-server)
    ((${#need[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        _svc_log "missing ${need[*]} and not root: install them or set ATRIUM_TEST_POSTGRES_URL/REDIS_URL"
        return 1
    fi
    _svc_log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

_svc_free_port() { # first free port from $1
    local port=$1
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

ci_services_stop() {
    if [[ -n "${_SVC_MYSQL_PORT:-}" ]]; then
        mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$_SVC_MYSQL_PORT" -u root shutdown >/dev/null 2>&1 || true
    fi
    if [[ -n "${_SVC_DIR:-}" && -d "$_SVC_DIR/pg/data" ]]; then
        runuser -u postgres -- "$_SVC_PGBIN/pg_ctl" -D "$_SVC_DIR/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [[ -n "${_SVC_REDIS_PORT:-}" ]]; then
        redis-cli -h 127.0.0.1 -p "$_SVC_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    [[ -n "${_SVC_DIR:-}" && "$_SVC_DIR" == */atrium-services.* ]] && rm -rf "$_SVC_DIR"
    return 0
}

_svc_start_private() {
    _SVC_DIR=$(mktemp -d -t atrium-services.XXXXXX)
    chmod 755 "$_SVC_DIR"
    if [[ -z "${ATRIUM_TEST_POSTGRES_URL:-}" ]]; then
        _SVC_PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
        local port; port=$(_svc_free_port 55432)
        mkdir -p "$_SVC_DIR/pg" && chown postgres:postgres "$_SVC_DIR/pg"
        runuser -u postgres -- "$_SVC_PGBIN/initdb" -D "$_SVC_DIR/pg/data" -U postgres -A trust \
            -E UTF8 --locale=C.UTF-8 >"$_SVC_DIR/pg/initdb.log" 2>&1 || { cat "$_SVC_DIR/pg/initdb.log" >&2; return 1; }
        runuser -u postgres -- "$_SVC_PGBIN/pg_ctl" -D "$_SVC_DIR/pg/data" -w -t 60 -l "$_SVC_DIR/pg/server.log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $_SVC_DIR/pg -c max_connections=300" start >/dev/null \
            || { cat "$_SVC_DIR/pg/server.log" >&2; return 1; }
        export ATRIUM_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
        _svc_log "started PostgreSQL on 127.0.0.1:$port"
    fi
    if [[ -z "${ATRIUM_TEST_REDIS_URL:-}" ]]; then
        _SVC_REDIS_PORT=$(_svc_free_port 6390)
        mkdir -p "$_SVC_DIR/redis"
        redis-server --bind 127.0.0.1 --port "$_SVC_REDIS_PORT" --daemonize yes --dir "$_SVC_DIR/redis" \
            --logfile "$_SVC_DIR/redis/redis.log" --save '' --appendonly no || return 1
        for _ in $(seq 50); do _svc_redis_answers "$_SVC_REDIS_PORT" && break; sleep 0.1; done
        _svc_redis_answers "$_SVC_REDIS_PORT" || { cat "$_SVC_DIR/redis/redis.log" >&2; return 1; }
        export ATRIUM_TEST_REDIS_URL="redis://127.0.0.1:$_SVC_REDIS_PORT/0"
        _svc_log "started Redis on 127.0.0.1:$_SVC_REDIS_PORT"
    fi
}

ci_services_ensure() {
    command -v psql >/dev/null && command -v redis-cli >/dev/null || _svc_install || return 1
    local pg="postgresql://postgres@127.0.0.1:5432/postgres"
    if [[ -z "${ATRIUM_TEST_POSTGRES_URL:-}" ]] && _svc_pg_answers "$pg"; then
        export ATRIUM_TEST_POSTGRES_URL="$pg"
        _svc_log "using the PostgreSQL on 127.0.0.1:5432"
    fi
    if [[ -z "${ATRIUM_TEST_REDIS_URL:-}" ]] && _svc_redis_answers 6379; then
        export ATRIUM_TEST_REDIS_URL="redis://127.0.0.1:6379/0"
        _svc_log "using the Redis on 127.0.0.1:6379"
    fi
    if [[ -z "${ATRIUM_TEST_POSTGRES_URL:-}" || -z "${ATRIUM_TEST_REDIS_URL:-}" ]]; then
        _svc_install || return 1
        _svc_start_private || return 1
    fi
    _svc_pg_answers "$ATRIUM_TEST_POSTGRES_URL" || { _svc_log "PostgreSQL does not answer at $ATRIUM_TEST_POSTGRES_URL"; return 1; }
    _svc_redis_answers "$(sed -E 's#.*:([0-9]+)(/.*)?$#\1#' <<<"$ATRIUM_TEST_REDIS_URL")" \
        || { _svc_log "Redis does not answer at $ATRIUM_TEST_REDIS_URL"; return 1; }
}

# --- MariaDB ------------------------------------------------------------------------------

_svc_mysql_answers() { # port
    mariadb --protocol=tcp -h 127.0.0.1 -P "$1" -u root -e 'select 1' >/dev/null 2>&1
}

_svc_mysql_start_private() {
    _SVC_DIR=${_SVC_DIR:-$(mktemp -d -t atrium-services.XXXXXX)}
    chmod 755 "$_SVC_DIR"
    local dir="$_SVC_DIR/mariadb" port; port=$(_svc_free_port 53306)
    mkdir -p "$dir" && chown mysql:mysql "$dir"
    # root@localhost with an empty password over TCP, as on CI's machine; loopback only.
    mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
        || { cat "$dir/install.log" >&2; return 1; }
    mariadbd --no-defaults --user=mysql --datadir="$dir/data" --bind-address=127.0.0.1 \
        --port="$port" --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" \
        --log-error="$dir/server.log" --max-connections=300 --skip-name-resolve \
        --character-set-server=utf8mb4 >/dev/null 2>&1 &
    _SVC_MYSQL_PORT=$port
    for _ in $(seq 300); do _svc_mysql_answers "$port" && break; sleep 0.1; done
    _svc_mysql_answers "$port" || { cat "$dir/server.log" >&2; return 1; }
    mariadb --protocol=tcp -h 127.0.0.1 -P "$port" -u root -e 'CREATE DATABASE IF NOT EXISTS test'
    export ATRIUM_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/test"
    _svc_log "started MariaDB on 127.0.0.1:$port"
}

ci_mysql_ensure() {
    if [[ -z "${ATRIUM_TEST_MYSQL_URL:-}" ]] && command -v mariadb >/dev/null && _svc_mysql_answers 3306; then
        export ATRIUM_TEST_MYSQL_URL="mysql://root@127.0.0.1:3306/test"
        _svc_log "using the MariaDB on 127.0.0.1:3306"
    fi
    if [[ -z "${ATRIUM_TEST_MYSQL_URL:-}" ]]; then
        if ! command -v mariadbd >/dev/null || ! command -v mariadb >/dev/null; then
            if [[ $(id -u) != 0 ]]; then
                _svc_log "missing mariadb-server and not root: install it or set ATRIUM_TEST_MYSQL_URL"
                return 1
            fi
            _svc_log "installing mariadb-server"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null && RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
                mariadb-server mariadb-client >/dev/null || return 1
        fi
        _svc_mysql_start_private || return 1
    fi
}
