#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the default node (never touched):
#
#   deploy/local/cluster.sh up              start taskq-1..3@localhost and join them
#   deploy/local/cluster.sh status          each node's state and the cluster's members
#   deploy/local/cluster.sh kill N          SIGKILL node N's Erlang VM (a crash, no goodbye)
#   deploy/local/cluster.sh restart N       start node N again (stopping it first if it runs)
#   deploy/local/cluster.sh down            stop every node and delete their data
#
# Node N listens for AMQP on 127.0.0.1:$((BASE+N)), management on 1$((BASE+N)) and Erlang
# distribution on 2$((BASE+N)) (BASE: TASKQ_CLUSTER_BASE_PORT, default 5700); data and logs
# live under TASKQ_CLUSTER_DIR (default /tmp/taskq-cluster). guest/guest works from loopback.
# TASKQ_CLUSTER_SIZE=1 starts one node alone (a broker to kill without touching the default).
set -euo pipefail

BASE="${TASKQ_CLUSTER_BASE_PORT:-5700}"
DIR="${TASKQ_CLUSTER_DIR:-/tmp/taskq-cluster}"
SIZE="${TASKQ_CLUSTER_SIZE:-3}"
NODES=($(seq 1 "$SIZE"))

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Node names are unique on a host: a cluster on other ports gets names of its own.
PREFIX="taskq"
[ "$BASE" = 5700 ] || PREFIX="taskq-$BASE"
name() { echo "$PREFIX-$1@localhost"; }
amqp_port() { echo $((BASE + $1)); }
http_port() { echo $((10000 + BASE + $1)); }
dist_port() { echo $((20000 + BASE + $1)); }

node_env() {  # the environment that makes rabbitmq-server and rabbitmqctl address node $1
  local root="$DIR/$1"
  echo RABBITMQ_NODENAME="$(name "$1")" \
    RABBITMQ_DIST_PORT="$(dist_port "$1")" \
    RABBITMQ_MNESIA_BASE="$root/mnesia" \
    RABBITMQ_LOG_BASE="$root/log" \
    RABBITMQ_PID_FILE="$root/node.pid" \
    RABBITMQ_CONFIG_FILE="$root/rabbitmq" \
    RABBITMQ_CONFIG_FILES="$root/conf.d" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$root/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$root/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$root/enabled_plugins"
}

ctl() {  # ctl N ARGS...: rabbitmqctl against node N
  local n="$1"; shift
  env $(node_env "$n") rabbitmqctl -n "$(name "$n")" "$@"
}

configure() {
  local n="$1" root="$DIR/$1"
  mkdir -p "$root/mnesia" "$root/log" "$root/conf.d"
  cat >"$root/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
management.tcp.port = $(http_port "$n")
management.tcp.ip = 127.0.0.1
# Quorum queues and streams want a node to keep its identity across restarts.
cluster_partition_handling = pause_minority
EOF
  echo "[rabbitmq_management]." >"$root/enabled_plugins"
  printf 'export ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n' \
    >"$root/rabbitmq-env.conf"
  # The nodes must share the default node's Erlang cookie to form a cluster with each other;
  # the Debian scripts run them as the rabbitmq user, who must own their files.
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq:rabbitmq "$DIR"
  fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local n="$1"
  [ -d "$DIR/$n" ] || configure "$n"
  if listening "$(amqp_port "$n")"; then
    return 0
  fi
  env $(node_env "$n") rabbitmq-server -detached >/dev/null 2>&1 || die "node $n did not start"
  local deadline=$((SECONDS + 90))
  until listening "$(amqp_port "$n")"; do
    [ "$SECONDS" -lt "$deadline" ] || die "node $n did not listen on $(amqp_port "$n") within 90 s; see $DIR/$n/log"
    sleep 0.5
  done
  ctl "$n" await_startup --timeout 60 >/dev/null
}

joined() {  # whether node $1 already runs in the cluster of node 1
  ctl 1 cluster_status --formatter json 2>/dev/null | grep -q "$(name "$1")"
}

up() {
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed (Debian package rabbitmq-server)"
  local n pids=()
  # The nodes boot side by side (each takes seconds on its own); they join one by one after.
  for n in "${NODES[@]}"; do
    say "starting $(name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"), management :$(http_port "$n"))"
    start "$n" &
    pids+=($!)
  done
  for n in "${pids[@]}"; do
    wait "$n" || die "a node did not start (its reason is above)"
  done
  for n in "${NODES[@]:1}"; do
    if ! joined "$n"; then
      say "joining $(name "$n") to $(name 1)"
      ctl "$n" stop_app >/dev/null
      ctl "$n" reset >/dev/null
      ctl "$n" join_cluster "$(name 1)" >/dev/null 2>&1 || die "$(name "$n") could not join $(name 1)"
      ctl "$n" start_app >/dev/null
    fi
  done
  status
}

status() {
  for n in "${NODES[@]}"; do
    if listening "$(amqp_port "$n")"; then
      echo "$(name "$n"): running, AMQP 127.0.0.1:$(amqp_port "$n")"
    else
      echo "$(name "$n"): down"
    fi
  done
  for n in "${NODES[@]}"; do
    if listening "$(amqp_port "$n")"; then
      ctl "$n" cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("running nodes:", ", ".join(sorted(d["running_nodes"])))'
      return 0
    fi
  done
}

pid_of() { cat "$DIR/$1/node.pid" 2>/dev/null || true; }

kill_node() {
  local n="$1" pid
  pid="$(pid_of "$n")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "node $n is not running"
  say "killing $(name "$n") (pid $pid) with SIGKILL"
  kill -9 "$pid"
  local deadline=$((SECONDS + 10))
  while listening "$(amqp_port "$n")"; do
    [ "$SECONDS" -lt "$deadline" ] || die "node $n still listens after SIGKILL"
    sleep 0.2
  done
}

restart() {
  local n="$1"
  if listening "$(amqp_port "$n")"; then
    ctl "$n" stop >/dev/null
  fi
  say "starting $(name "$n") again"
  start "$n"
}

stop_node() {
  local n="$1" pid
  pid="$(pid_of "$n")"
  if listening "$(amqp_port "$n")"; then
    say "stopping $(name "$n")"
    ctl "$n" stop >/dev/null || { [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true; }
  elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Still booting (no listener yet), e.g. when `up` gave up waiting: ends with the rest.
    say "killing $(name "$n") (pid $pid), which never started listening"
    kill -9 "$pid" 2>/dev/null || true
  fi
}

down() {
  local n
  # Side by side: each stop waits seconds for its node, and they do not depend on each other.
  for n in "${NODES[@]}"; do
    stop_node "$n" &
  done
  wait
  rm -rf "$DIR"
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$SIZE" ] || die "name a node: 1 to $SIZE"
  echo "$1"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kill) kill_node "$(node_arg "${2:-}")" ;;
  restart) restart "$(node_arg "${2:-}")" ;;
  *) die "usage: $0 up|down|status|kill N|restart N" ;;
esac
