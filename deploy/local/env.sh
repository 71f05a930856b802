# Shared by deploy/local/run.sh, deploy/local/test.sh and .ci/run (sourced, not executed):
# a venv with taskq and its pinned dependencies, and RabbitMQ with the management API.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${TASKQ_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_venv() {
  local stamp="$VENV/.taskq-installed"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (needs Python 3.11+ with venv)"
  fi
  # Reinstall only when the pins changed, so a second run starts in seconds.
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
    say "installing taskq and its pinned dependencies"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
    touch "$stamp"
  fi
}

amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
management_up() { curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null; }

wait_for() {  # wait_for SECONDS CHECK DESCRIPTION
  local deadline=$((SECONDS + $1))
  until "$2"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

postgres_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

# The tests run every job store test against PostgreSQL too (SQLite needs nothing).
ensure_postgres() {
  postgres_up && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing postgresql (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || die "PostgreSQL is not installed and apt-get could not install it"
  fi
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start \
    || die "pg_ctlcluster could not start PostgreSQL"
  wait_for 60 postgres_up || die "PostgreSQL did not open port 5432 within 60 s"
  # Tests connect as postgres over TCP without a password (trust), as on these machines.
  grep -qs "^host.*all.*all.*127.0.0.1/32.*trust" /etc/postgresql/*/main/pg_hba.conf \
    || say "note: PostgreSQL on 127.0.0.1 may require a password; set TASKQ_TEST_POSTGRES_URL"
}

# The tests run promtool on grafana/rules/ and on every dashboard query (tests/grafana).
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  say "installing promtool (Debian package prometheus; its server is not started)"
  # The package's postinst would start a Prometheus server we do not want. invoke-rc.d and
  # deb-systemd-invoke ask policy-rc.d first; exit 101 means "not allowed". Docker images
  # often ship one already: leave theirs alone, remove only ours.
  local policy=/usr/sbin/policy-rc.d ours="" failed=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || failed=1
  [ -z "$ours" ] || rm -f "$policy"
  [ -z "$failed" ] || die "promtool is not installed and apt-get could not install it (package prometheus)"
  # The package also enables the service for the next boot: disable it where systemd runs.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
}

# checkov scans the Helm chart, the Kustomize base and the Terraform modules
# (tests/deploy/test_checkov.py). It pins boto3 and packaging below taskq's, so it gets a venv
# of its own, from its own pinned list.
ensure_checkov() {
  local venv="$ROOT/.venv-checkov" pins="$ROOT/deploy/checkov-requirements.txt"
  local stamp="$venv/.taskq-installed"
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the checkov virtualenv $venv"
    "$PYTHON" -m venv "$venv" || die "cannot create a venv with $PYTHON"
  fi
  if [ ! -f "$stamp" ] || [ "$pins" -nt "$stamp" ]; then
    say "installing checkov (deploy/checkov-requirements.txt)"
    "$venv/bin/python" -m pip install --quiet -r "$pins" || die "cannot install checkov"
    touch "$stamp"
  fi
}

# The blob store tests run the azblob:// store against Azurite, Azure's Blob Storage emulator
# (npm; pinned by deploy/local/azurite/package-lock.json).
ensure_azurite() {
  local dir="$ROOT/deploy/local/azurite"
  [ -x "$dir/node_modules/.bin/azurite-blob" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ] && return 0
  command -v npm >/dev/null || {
    say "installing npm (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null \
      || die "npm is not installed and apt-get could not install it"
  }
  say "installing Azurite (deploy/local/azurite)"
  (cd "$dir" && npm ci --no-audit --no-fund --silent) || die "cannot install Azurite with npm ci"
}

# The console's browser tests drive Debian's chromium through Playwright (no browser download).
ensure_chromium() {
  command -v chromium >/dev/null && return 0
  say "installing chromium (Debian packages chromium, chromium-driver)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
    || die "chromium is not installed and apt-get could not install it"
}

ensure_rabbitmq() {
  if ! amqp_up; then
    command -v rabbitmq-server >/dev/null || {
      say "installing rabbitmq-server (Debian package)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null \
        || die "RabbitMQ is not installed and apt-get could not install it"
    }
    say "starting RabbitMQ with deploy/rabbitmq/rabbitmq.conf"
    # RABBITMQ_CONFIG_FILE takes the path without its .conf extension.
    RABBITMQ_CONFIG_FILE="$ROOT/deploy/rabbitmq/rabbitmq" rabbitmq-server -detached \
      || die "rabbitmq-server -detached failed"
    wait_for 90 amqp_up || die "RabbitMQ did not open port 5672 within 90 s"
  fi
  if ! management_up; then
    say "enabling the RabbitMQ management plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null || die "cannot enable rabbitmq_management"
    wait_for 60 management_up || die "the management API did not answer on :15672 within 60 s"
  fi
}
