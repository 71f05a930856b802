#!/usr/bin/env bash
# Run the whole pipeline on this machine: venv, RabbitMQ with the management API, the
# topology applied, then every pipeline process in the foreground (Ctrl-C stops it cleanly).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_venv
ensure_rabbitmq
exec "$VENV/bin/taskctl" up "$@"
