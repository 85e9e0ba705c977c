#!/usr/bin/env bash
# N Atrium replicas behind the real nginx on this machine, without Docker:
#   ATRIUM_DATABASE_URL=postgresql://… ATRIUM_REDIS_URL=redis://… scripts/cluster.sh up --replicas 3
#   scripts/cluster.sh status | restart | down
# See scripts/cluster.py. Uses .venv's Python when there is one (make install).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
[[ -x "$repo/.venv/bin/python" ]] && python="$repo/.venv/bin/python"
exec "$python" "$repo/scripts/cluster.py" "$@"
