#!/usr/bin/env bash
# Find or start the PostgreSQL and Redis that the second test run needs.
#
#   source scripts/ci-services.sh && ci_services_ensure
#
# Uses the servers answering on 127.0.0.1:5432 / :6379 when there are any (CI's machine runs
# them). Otherwise installs Debian's packages if missing and starts private instances on
# loopback in a temporary folder, stopping exactly those on exit. Exports
# ATRIUM_TEST_POSTGRES_URL and ATRIUM_TEST_REDIS_URL, or returns non-zero saying why.

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
