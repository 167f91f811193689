#!/usr/bin/env bash
# A test cluster of N hosts on one machine, as root. Every host is a network
# namespace; all of them hang off one Linux bridge that lives in a namespace
# of its own, on a private /24 that exists only inside those namespaces, so
# no traffic can reach or leave the machine's own network.
#
#   scripts/cluster.sh up N [--rate 1gbit] [--burst 256kb] [--prefix P]
#                          [--dir DIR] [--stratus PATH] [--no-stratus] [--replace]
#                          [--replicas R] [--placement POLICY] [--leader-ttl S]
#                          [--lease-ttl S] [--workflow-data relay|workers]
#                          [--idle-timeout S] [--keep-alive POLICY] [--worker-chains]
#                          [--max-body-bytes N]
#   scripts/cluster.sh down      [--prefix P] [--dir DIR]     # the same options go with
#   scripts/cluster.sh status    [--prefix P] [--dir DIR]     # every command below
#   scripts/cluster.sh bytes     [--prefix P] [--dir DIR]     # per host, from the kernel
#   scripts/cluster.sh exec HOST [--] CMD...                  # HOST: h1..hN, e1..e3, cp, core
#   scripts/cluster.sh kill-etcd I | start-etcd I             # I: 1..3 (kill -9, restart on its data)
#   scripts/cluster.sh link-down HOST | link-up HOST          # cut / heal a host's link
#
# Shape (namespaces are named P-<node>, P defaults to "stratus"):
#   P-core  bridge br0, one veth end per node (h1.., e1..e3, cp)
#   P-hI    host I, 10.77.0.I/24 on eth0; a `stratus worker` (agent API on
#           :8081, registered in etcd as hI, lease --lease-ttl, default 3 s)
#           when the binary has that subcommand (built with --features etcd)
#   P-eI    etcd member I, 10.77.0.24I (241..243), client :2379, peer :2380
#   P-cp    the control plane (`stratus up --etcd ... --workers`),
#           10.77.0.250:8080; with --replicas R, standbys on :8090, :8100, ...
#           (pid files cp, cp2, ...); the leader places instances on the
#           workers by --placement (default spread)
# Each host's link is shaped with tbf in both directions (--rate, --burst):
# egress of eth0 in the host (its tx), egress of hI in the core (its rx).
# tc netem is not available here: for latency, put the bench harness's
# user-space shaper (crates/bench/src/shaper.rs) in front of an address.
#
# State (pid files, the admin token, logs, etcd data) lives in DIR, default
# /tmp/stratus-cluster-P. `down` kills by pid file and then every process
# left in the cluster's namespaces, deletes namespaces and bridge, and fails
# naming whatever is still there.
set -euo pipefail

NET=10.77.0
ETCD_IP() { echo "$NET.$((240 + $1))"; }
CP_IP=$NET.250
GW_PORT=8080
WORKER_PORT=8081

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

repo="$(cd "$(dirname "$0")/.." && pwd -P)"
cmd="${1:-}"; [ -n "$cmd" ] && shift
prefix=stratus dir="" rate=1gbit burst=256kb stratus="" no_stratus=0 replace=0 n=""
replicas=1 placement=spread leader_ttl=2 lease_ttl=3 workflow_data=relay idle_timeout=60 keep_alive= worker_chains= max_body_bytes=67108864
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --burst) burst="$2"; shift 2 ;;
    --stratus) stratus="$2"; shift 2 ;;
    --no-stratus) no_stratus=1; shift ;;
    --replace) replace=1; shift ;;
    --replicas) replicas="$2"; shift 2 ;;
    --placement) placement="$2"; shift 2 ;;
    --leader-ttl) leader_ttl="$2"; shift 2 ;;
    --lease-ttl) lease_ttl="$2"; shift 2 ;;
    --workflow-data) workflow_data="$2"; shift 2 ;;
    --idle-timeout) idle_timeout="$2"; shift 2 ;;
    --keep-alive) keep_alive="$2"; shift 2 ;;
    --worker-chains) worker_chains=--worker-chains; shift ;;
    --max-body-bytes) max_body_bytes="$2"; shift 2 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ "$prefix" =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}$ ]] || die "--prefix '$prefix': letters, digits, _ . - only"
dir="${dir:-/tmp/stratus-cluster-$prefix}"
ns() { echo "$prefix-$1"; }
in_ns() { local n="$1"; shift; ip netns exec "$(ns "$n")" "$@"; }

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"
  command -v ip >/dev/null || die "'ip' is missing: apt-get install iproute2"
  command -v tc >/dev/null || die "'tc' is missing: apt-get install iproute2"
}

# Every namespace of this cluster that exists now.
our_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$(printf '%s' "$prefix" | sed 's/[.]/\\./g')-(core|cp|h[0-9]+|e[0-9]+)$" || true
}

etcd_bin() {
  if [ -n "${STRATUS_ETCD:-}" ]; then echo "$STRATUS_ETCD"; return; fi
  command -v etcd || die "etcd is missing: apt-get install etcd-server (or set STRATUS_ETCD)"
}

stratus_bin() {
  if [ -n "$stratus" ]; then echo "$stratus"; return; fi
  if [ -n "${STRATUS_BIN:-}" ]; then echo "$STRATUS_BIN"; return; fi
  local t="${CARGO_TARGET_DIR:-$repo/target}"
  for b in "$t/release/stratus" "$t/debug/stratus"; do
    [ -x "$b" ] && { echo "$b"; return; }
  done
  command -v stratus || die "no stratus binary: build it (cargo build --release --features etcd), or pass --stratus PATH or --no-stratus"
}

# Starts CMD in namespace NODE in the background, detached, with its log and
# pid file in DIR under NAME. `ip netns exec` execs, so $! is CMD's pid.
start_in() {
  local node="$1" name="$2"; shift 2
  ip netns exec "$(ns "$node")" setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# Waits up to $2 seconds for a TCP connect to $3:$4 from namespace $1.
wait_tcp() {
  local node="$1" secs="$2" host="$3" port="$4" i
  for ((i = 0; i < secs * 10; i++)); do
    if in_ns "$node" bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

etcd_urls() { local i s=""; for i in 1 2 3; do s="$s${s:+,}http://$(ETCD_IP "$i"):2379"; done; echo "$s"; }

start_etcd() {
  local i="$1" ip initial="" j state=new
  ip="$(ETCD_IP "$i")"
  for j in 1 2 3; do initial="$initial${initial:+,}m$j=http://$(ETCD_IP "$j"):2380"; done
  [ -d "$dir/etcd$i/member" ] && state=existing
  start_in "e$i" "etcd$i" "$(etcd_bin)" --name "m$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
    --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
    --initial-cluster "$initial" --initial-cluster-token "$prefix" \
    --initial-cluster-state "$state" --log-level warn --logger zap
}

# A pid that is running: not gone, not a zombie (our detached processes are
# reaped by pid 1, which may take a while).
alive() {
  local st
  st="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

kill_pidfile() {
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  rm -f "$f"
}

# A host's veth end in the core namespace, and in its own.
link() {
  local node="$1" ip="$2"
  ip netns add "$(ns "$node")"
  ip link add eth0 netns "$(ns "$node")" type veth peer name "$node" netns "$(ns core)"
  in_ns core ip link set "$node" master br0 up
  in_ns "$node" ip addr add "$ip/24" dev eth0
  in_ns "$node" ip link set eth0 up
  in_ns "$node" ip link set lo up
}

shape() {
  local node="$1" lat=50ms
  in_ns "$node" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency $lat
  in_ns core tc qdisc replace dev "$node" root tbf rate "$rate" burst "$burst" latency $lat
}

cluster_n() { [ -f "$dir/hosts" ] && cat "$dir/hosts" || our_namespaces | grep -c -- '-h[0-9]*$' || true; }

up() {
  need_root
  n="${args[0]:-}"
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 200 ]; then die "up N: N hosts, 1..200 (got '${n}')"; fi
  if [ -n "$(our_namespaces)" ] || [ -d "$dir" ]; then
    if [ "$replace" = 1 ]; then
      say "a cluster '$prefix' exists (namespaces or $dir): taking it down first (--replace)"
      down
    else
      die "a cluster '$prefix' exists (namespaces: $(our_namespaces | tr '\n' ' ')dir: $dir); run 'cluster.sh down --prefix $prefix' or pass --replace"
    fi
  fi
  local t0=$SECONDS
  mkdir -p "$dir"; chmod 0755 "$dir"
  echo "$n" >"$dir/hosts"
  # A half-built cluster is taken down again.
  up_done=0
  trap '[ "$up_done" = 1 ] || { say "up failed; taking down what was built"; down || true; }' EXIT
  ip netns add "$(ns core)"
  in_ns core ip link add br0 type bridge
  in_ns core ip link set br0 up
  in_ns core ip link set lo up
  local i
  for ((i = 1; i <= n; i++)); do link "h$i" "$NET.$i"; shape "h$i"; done
  for i in 1 2 3; do link "e$i" "$(ETCD_IP "$i")"; done
  link cp "$CP_IP"
  say "$n hosts on $NET.0/24 (tbf $rate, burst $burst each way), etcd on .241-.243, control plane on $CP_IP"

  for i in 1 2 3; do start_etcd "$i"; done
  for i in 1 2 3; do
    wait_tcp "e$i" 30 "$(ETCD_IP "$i")" 2379 || { tail -n 20 "$dir/etcd$i.log" >&2; die "etcd member $i did not listen"; }
  done
  wait_quorum 30 || { tail -n 20 "$dir"/etcd*.log >&2; die "etcd elected no leader within 30 s"; }
  say "etcd: 3 members, leader elected ($(etcd_urls))"

  if [ "$no_stratus" = 1 ]; then
    say "--no-stratus: no control plane, no workers"
  else
    start_stratus
  fi
  up_done=1
  say "up in $((SECONDS - t0)) s; state in $dir"
}

# True once every member reports itself healthy (it sees a leader).
wait_quorum() {
  local secs="$1" i j ok
  for ((i = 0; i < secs * 5; i++)); do
    ok=1
    for j in 1 2 3; do
      in_ns h1 curl -fsS -m 1 "http://$(ETCD_IP "$j"):2379/health" 2>/dev/null | grep -q '"health":"true"' || ok=0
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.2
  done
  return 1
}

start_stratus() {
  local bin i r port
  bin="$(stratus_bin)"
  [ -x "$bin" ] || die "stratus binary $bin is not executable"
  # Tokens: random, 0600, handed over as files, never as arguments. The
  # admin token guards the gateway's API; the cluster token the workers'
  # agent APIs (the control plane calls them with it).
  for f in admin.token cluster.token; do
    if [ ! -s "$dir/$f" ]; then
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$f")
    fi
  done
  local workers=0
  if "$bin" worker --help >/dev/null 2>&1; then workers=1; fi
  # Control-plane replicas in the cp namespace: the first on :8080, the
  # others (standbys) on :8090, :8100, ... One leads (etcd election).
  for ((r = 1; r <= replicas; r++)); do
    port=$((GW_PORT + 10 * (r - 1)))
    local name=cp; [ "$r" -gt 1 ] && name="cp$r"
    mkdir -p "$dir/$name"
    local cargs=(up --addr "$CP_IP:$port" --state-dir "$dir/$name"
      --etcd "$(etcd_urls)" --etcd-cluster "$prefix" --token-file "$dir/admin.token"
      --idle-timeout "$idle_timeout" --max-body-bytes "$max_body_bytes")
    if [ -n "$keep_alive" ]; then cargs+=(--keep-alive "$keep_alive"); fi
    if [ "$workers" = 1 ]; then
      cargs+=(--workers --cluster-token-file "$dir/cluster.token" --placement "$placement" --leader-ttl "$leader_ttl"
        --workflow-data "$workflow_data" ${worker_chains})
    fi
    # Functions run as `nobody` from the repository root (examples/ paths).
    (cd "$repo" && start_in cp "$name" "$bin" "${cargs[@]}")
    local ok=0
    for ((i = 0; i < 300; i++)); do
      if in_ns h1 curl -fsS -m 1 "http://$CP_IP:$port/healthz" >/dev/null 2>&1; then ok=1; break; fi
      alive "$(cat "$dir/$name.pid")" || break
      sleep 0.1
    done
    [ "$ok" = 1 ] || { tail -n 20 "$dir/$name.log" >&2; die "control plane $name did not answer on http://$CP_IP:$port (log: $dir/$name.log)"; }
    say "control plane $name: http://$CP_IP:$port (admin token: $dir/admin.token)"
  done
  if [ "$workers" = 1 ]; then
    for ((i = 1; i <= n; i++)); do
      mkdir -p "$dir/worker$i"
      (cd "$repo" && start_in "h$i" "worker$i" "$bin" worker --join "$(etcd_urls)" \
        --cluster "$prefix" --name "h$i" --token-file "$dir/cluster.token" \
        --listen "$NET.$i:$WORKER_PORT" --state-dir "$dir/worker$i" --lease-ttl "$lease_ttl")
    done
    for ((i = 1; i <= n; i++)); do
      wait_tcp "h$i" 30 "$NET.$i" "$WORKER_PORT" \
        || { tail -n 20 "$dir/worker$i.log" >&2; die "worker $i did not listen (log: $dir/worker$i.log)"; }
    done
    say "workers: h1..h$n, agent API on :$WORKER_PORT (logs: $dir/worker*.log; placement $placement)"
  else
    say "workers: not started ('$bin worker' does not exist in this build: build with --features etcd)"
  fi
}

down() {
  need_root
  local f node left=""
  for f in "$dir"/*.pid; do [ -e "$f" ] && kill_pidfile "$f"; done
  for node in $(our_namespaces); do
    local pids
    pids="$(ip netns pids "$node" 2>/dev/null || true)"
    # shellcheck disable=SC2086 # one pid per word
    if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; fi
  done
  for node in $(our_namespaces); do
    for _ in $(seq 50); do [ -z "$(ip netns pids "$node" 2>/dev/null)" ] && break; sleep 0.05; done
    ip netns del "$node" 2>/dev/null || true
  done
  rm -rf "$dir"
  # What is still there?
  [ -z "$(our_namespaces)" ] || left="$left namespaces: $(our_namespaces | tr '\n' ' ');"
  if grep -q " /run/netns/$prefix-" /proc/mounts; then left="$left mounts: $(grep " /run/netns/$prefix-" /proc/mounts | awk '{print $2}' | tr '\n' ' ');"; fi
  [ ! -e "$dir" ] || left="$left directory $dir;"
  [ -z "$left" ] || die "down: still there:$left"
  say "down: cluster '$prefix' removed (no namespace, process, mount or bridge left)"
}

status() {
  local node
  [ -n "$(our_namespaces)" ] || { echo "no cluster '$prefix'"; return 1; }
  echo "cluster '$prefix' (state in $dir):"
  for node in $(our_namespaces); do
    echo "  $node: $(ip netns pids "$node" | wc -l) processes"
  done
  local f
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    if alive "$(cat "$f")"; then echo "  $(basename "$f" .pid): running (pid $(cat "$f"))"
    else echo "  $(basename "$f" .pid): dead"; fi
  done
}

bytes() {
  local i h
  n="$(cluster_n)"
  [ "$n" -ge 1 ] 2>/dev/null || die "no cluster '$prefix'"
  printf '%-6s %16s %16s\n' host rx_bytes tx_bytes
  for ((i = 1; i <= n; i++)); do
    h="h$i"
    printf '%-6s %16s %16s\n' "$h" \
      "$(in_ns "$h" cat /sys/class/net/eth0/statistics/rx_bytes)" \
      "$(in_ns "$h" cat /sys/class/net/eth0/statistics/tx_bytes)"
  done
}

node_arg() {
  local node="${args[0]:-}"
  [[ "$node" =~ ^(h[0-9]+|e[1-3]|cp|core)$ ]] || die "HOST: h1..hN, e1..e3, cp or core (got '$node')"
  ip netns list | awk '{print $1}' | grep -qx "$(ns "$node")" || die "no namespace $(ns "$node")"
  echo "$node"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  bytes) bytes ;;
  exec)
    need_root; node="$(node_arg)"
    [ ${#args[@]} -ge 2 ] || die "exec HOST CMD..."
    exec ip netns exec "$(ns "$node")" "${args[@]:1}" ;;
  kill-etcd)
    need_root; [[ "${args[0]:-}" =~ ^[1-3]$ ]] || die "kill-etcd I: I in 1..3"
    kill_pidfile "$dir/etcd${args[0]}.pid"; say "etcd member ${args[0]} killed (-9)" ;;
  start-etcd)
    need_root; [[ "${args[0]:-}" =~ ^[1-3]$ ]] || die "start-etcd I: I in 1..3"
    i="${args[0]}"
    if [ -f "$dir/etcd$i.pid" ] && alive "$(cat "$dir/etcd$i.pid")"; then die "etcd member $i is running"; fi
    start_etcd "$i"
    wait_tcp "e$i" 30 "$(ETCD_IP "$i")" 2379 || die "etcd member $i did not listen (log: $dir/etcd$i.log)"
    say "etcd member $i started" ;;
  link-down | link-up)
    need_root; node="$(node_arg)"; [ "$node" != core ] || die "core has no link of its own"
    in_ns core ip link set "$node" "${cmd#link-}"
    say "link of $node ${cmd#link-}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
