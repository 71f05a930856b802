#!/usr/bin/env bash
# Run every check and test: ruff, mypy --strict, then pytest against the real RabbitMQ,
# PostgreSQL and an in-process S3 server (moto), promtool for the alert rules, Debian's
# chromium for the console's browser tests, and checkov (its own venv) for the deploy files.
# Extra arguments go to pytest (e.g. `bash deploy/local/test.sh -k publisher`).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_venv
ensure_rabbitmq
ensure_postgres
ensure_promtool
ensure_chromium
ensure_checkov
ensure_azurite
cd "$ROOT"
say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy --strict"
"$VENV/bin/mypy"
say "pytest"
exec "$VENV/bin/python" -m pytest --durations=15 "$@"
