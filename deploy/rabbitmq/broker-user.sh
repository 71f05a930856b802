#!/bin/sh
# Makes the broker's own user for deploy/compose.yaml, once: a random password kept in the
# broker-secret volume, and the rabbitmq.conf lines that create the user `taskq` when the
# node first boots (default_user replaces guest, which would stay loopback-only anyway).
# Runs as root in the broker-user service, before the broker starts.
set -eu
dir=${1:-/secret}  # the broker-secret volume
if [ ! -s "$dir/password" ]; then
  umask 077
  tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$dir/password.new"
  mv "$dir/password.new" "$dir/password"
fi
password=$(cat "$dir/password")
umask 077
rm -f "$dir/20-taskq-user.conf"
cat >"$dir/20-taskq-user.conf" <<CONF
default_user = taskq
default_pass = $password
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
CONF
# The broker (user rabbitmq) and taskq (user taskq) read these; nothing else mounts the volume.
chmod 0444 "$dir/password" "$dir/20-taskq-user.conf"
