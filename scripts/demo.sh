#!/usr/bin/env bash
# scripts/demo.sh [SKIFF_BINARY]: a whole small mesh on one Linux machine (`make demo`).
#
# Two network namespaces stand for two workloads, joined by a veth pair on 10.99.0.0/24:
#
#   skiff-demo-web  10.99.0.1  a client (curl, a raw TCP client) with its sidecar
#   skiff-demo-api  10.99.0.2  a server (HTTP on 8080, a server-first TCP service on 2525)
#                              with its sidecar
#
# In each namespace `skiff init` installs the capture rules and `skiff run` runs as uid
# 1337, as it would in a pod. A request from web leaves through web's sidecar (outbound,
# :15001) and arrives through api's sidecar (inbound, :15006). The demo shows the rule
# plan, makes a few requests, adds routes to web's config while it runs (a direct
# response, a path rewrite), prints each sidecar's metrics, then removes everything:
# on success, on failure and on Ctrl-C. A leftover of an interrupted run is removed first.
#
# Needs root. Installs what it lacks with apt-get: iptables, iproute2, curl, util-linux
# (setpriv) and, when there is no python3 at all, python3-minimal (for the demo apps).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SKIFF_SRC=${1:-$ROOT/bin/skiff}

WEB=skiff-demo-web
API=skiff-demo-api
WEB_IP=10.99.0.1
API_IP=10.99.0.2
PROXY_UID=1337 # proxy.uid and proxy.gid in the config
PROXY_GID=1337
HTTP_PORT=8080
GREET_PORT=2525
ADMIN=http://127.0.0.1:15000 # each sidecar's admin endpoint, inside its own namespace

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
cmd() { printf '%s$ %s%s\n' "$B" "$*" "$N"; }
die() {
	echo "demo: $*" >&2
	exit 1
}
# nsx NS CMD...: run a command in a namespace.
nsx() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

[ "$(uname -s)" = Linux ] || die "needs Linux (network namespaces and iptables)"
[ "$(id -u)" = 0 ] || die "needs root: it creates network namespaces and iptables rules (try: sudo make demo)"
[ -x "$SKIFF_SRC" ] || die "no skiff binary at $SKIFF_SRC: run make build (or make demo)"

# find_python prints a python3 that has the few modules the demo apps use.
find_python() {
	local p
	for p in /usr/bin/python3 "$(command -v python3 || true)"; do
		if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import socket, threading' 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

install_needs() {
	local missing=()
	command -v ip >/dev/null || missing+=(iproute2)
	command -v iptables-nft >/dev/null || command -v iptables >/dev/null || missing+=(iptables)
	command -v curl >/dev/null || missing+=(curl)
	command -v setpriv >/dev/null || missing+=(util-linux)
	find_python >/dev/null || missing+=(python3-minimal)
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them with: install them and run again"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# remove_namespaces stops whatever still runs in the demo's namespaces (processes this
# demo started, in this run or an interrupted one) and deletes them; the veth pair and
# the iptables rules inside go with them.
remove_namespaces() {
	local ns pids
	for ns in "$WEB" "$API"; do
		ns_exists "$ns" || continue
		pids=$(ip netns pids "$ns" || true)
		if [ -n "$pids" ]; then
			# shellcheck disable=SC2086 # one pid per word
			kill -TERM $pids 2>/dev/null || true
			for _ in $(seq 30); do
				[ -z "$(ip netns pids "$ns" || true)" ] && break
				sleep 0.1
			done
			pids=$(ip netns pids "$ns" || true)
			# shellcheck disable=SC2086
			[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
		fi
		ip netns del "$ns"
	done
}

WORK=""
SIDECARS=() # pids of the two skiff run processes
APPS=()     # pids of the demo servers
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	say "cleaning up"
	if [ ${#SIDECARS[@]} -gt 0 ]; then
		# SIGTERM: each sidecar drains (proxy.drain_timeout) and stops.
		kill -TERM "${SIDECARS[@]}" 2>/dev/null || true
		wait "${SIDECARS[@]}" 2>/dev/null || true
	fi
	if [ -n "$WORK" ]; then
		for ns in "$WEB" "$API"; do
			if ns_exists "$ns"; then
				cmd "ip netns exec $ns skiff init --remove"
				nsx "$ns" "$WORK/skiff" init --remove --config "$WORK/config.yaml" 2>&1 | sed 's/^/  /' || true
			fi
		done
	fi
	if [ ${#APPS[@]} -gt 0 ]; then
		kill -TERM "${APPS[@]}" 2>/dev/null || true
		wait "${APPS[@]}" 2>/dev/null || true
	fi
	remove_namespaces
	[ -z "$WORK" ] || rm -rf "$WORK"
	if [ "$rc" = 0 ]; then
		say "done: namespaces, veth pair, rules and processes removed"
	elif [ "$rc" = 130 ]; then
		echo "demo: interrupted; everything it made has been removed" >&2
	else
		echo "demo: failed (exit status $rc); everything it made has been removed" >&2
	fi
	exit "$rc"
}

install_needs
PY=$(find_python) || die "no usable python3 even after installing python3-minimal"

# Leftovers of an interrupted run: namespaces (with what runs in them) and work dirs.
if ns_exists "$WEB" || ns_exists "$API"; then
	say "removing the leftovers of an earlier run"
	remove_namespaces
fi
find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name 'skiff-demo.*' -user 0 -exec rm -rf {} + 2>/dev/null || true

trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# The proxy runs as uid 1337, which must be able to read its binary and config: copy
# them to a world-readable work dir rather than depend on the checkout's permissions.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/skiff-demo.XXXXXX")
chmod 755 "$WORK"
install -m 755 "$SKIFF_SRC" "$WORK/skiff"
install -m 644 "$ROOT/scripts/demo-app.py" "$WORK/demo-app.py"
# The defaults of config.yaml, with a debug log: coloured for a terminal, JSON otherwise.
LOG_FORMAT=json
[ -t 1 ] && LOG_FORMAT=console
cat >"$WORK/config.yaml" <<EOF
# skiff demo: every key not named here keeps the default of config.yaml.
proxy:
  uid: $PROXY_UID
  gid: $PROXY_GID
log:
  level: debug
  format: $LOG_FORMAT
EOF
chmod 644 "$WORK/config.yaml"
"$WORK/skiff" validate --config "$WORK/config.yaml" >/dev/null
# Each sidecar reads its own copy, so the demo can change web's routes while it runs.
for ns in "$WEB" "$API"; do install -m 644 "$WORK/config.yaml" "$WORK/$ns.yaml"; done
echo "skiff $("$WORK/skiff" version | cut -d' ' -f2), python $PY, work dir $WORK"

say "two workloads: $WEB ($WEB_IP) and $API ($API_IP), joined by a veth pair"
ip netns add "$WEB"
ip netns add "$API"
ip link add eth0 netns "$WEB" type veth peer name eth0 netns "$API"
for ns in "$WEB" "$API"; do
	addr=$WEB_IP
	[ "$ns" = "$API" ] && addr=$API_IP
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
done
ip -n "$WEB" -brief addr show eth0 | sed 's/^/  web: /'
ip -n "$API" -brief addr show eth0 | sed 's/^/  api: /'

say "the api workload's servers: HTTP on :$HTTP_PORT, a server-first TCP service on :$GREET_PORT"
nsx "$API" "$PY" "$WORK/demo-app.py" http "$HTTP_PORT" api >"$WORK/api-http.log" 2>&1 &
APPS+=($!)
nsx "$API" "$PY" "$WORK/demo-app.py" greet "$GREET_PORT" api >"$WORK/api-greet.log" 2>&1 &
APPS+=($!)
for port in "$HTTP_PORT" "$GREET_PORT"; do
	for i in $(seq 50); do
		[ -n "$(nsx "$API" ss -Hltn "sport = :$port")" ] && break
		[ "$i" = 50 ] && die "the demo server on :$port did not start: $(cat "$WORK"/api-*.log)"
		sleep 0.1
	done
done
echo "  listening"

say "the capture rules skiff init will install (the same plan in both namespaces)"
cmd "ip netns exec $WEB skiff init --dry-run"
nsx "$WEB" "$WORK/skiff" init --dry-run --config "$WORK/config.yaml"

for ns in "$WEB" "$API"; do
	say "sidecar for $ns: skiff init (as root), then skiff run (as uid $PROXY_UID)"
	cmd "ip netns exec $ns skiff init"
	nsx "$ns" "$WORK/skiff" init --config "$WORK/config.yaml" 2>&1 | sed 's/^/  /'
	cmd "ip netns exec $ns setpriv --reuid=$PROXY_UID --regid=$PROXY_GID --clear-groups skiff run &"
	nsx "$ns" setpriv --reuid="$PROXY_UID" --regid="$PROXY_GID" --clear-groups \
		"$WORK/skiff" run --config "$WORK/$ns.yaml" >"$WORK/$ns.log" 2>&1 &
	SIDECARS+=($!)
	for i in $(seq 100); do
		nsx "$ns" curl -fsS -o /dev/null --max-time 1 "$ADMIN/ready" 2>/dev/null && break
		if [ "$i" = 100 ] || ! kill -0 "${SIDECARS[-1]}" 2>/dev/null; then
			cat "$WORK/$ns.log" >&2
			die "the sidecar in $ns did not become ready"
		fi
		sleep 0.1
	done
	echo "  ready: $ADMIN/ready answered 200"
done

say "HTTP from web to api: web's sidecar (outbound) → api's sidecar (inbound) → the app"
echo "  The app sees its peer as 127.0.0.6: the address api's sidecar forwards from."
echo "  x-request-id was added by web's sidecar."
for path in /hello /users/42 /hello; do
	cmd "curl http://$API_IP:$HTTP_PORT$path"
	nsx "$WEB" curl -sS --max-time 5 "http://$API_IP:$HTTP_PORT$path" | sed 's/^/  /'
done
cmd "curl --data 'item=boat&qty=2' http://$API_IP:$HTTP_PORT/orders"
nsx "$WEB" curl -sS --max-time 5 --data 'item=boat&qty=2' "http://$API_IP:$HTTP_PORT/orders" | sed 's/^/  /'

say "opaque TCP from web to api: a server-first protocol, relayed byte for byte"
cmd "demo-app.py greet-client $API_IP $GREET_PORT"
nsx "$WEB" "$PY" "$WORK/demo-app.py" greet-client "$API_IP" "$GREET_PORT"

say "routing, live: web's config gains a service and two routes; no restart, no signal"
echo "  services: api (the address $API_IP:$HTTP_PORT and the host name api)"
echo "  routes:   /maintenance is answered by web's sidecar itself;"
echo "            /v2/... is rewritten to /users/... on its way to the app"
{
	cat "$WORK/config.yaml"
	cat <<EOF
services:
  - name: api
    hosts: [api]
    addresses: [$API_IP]
    ports: [{port: $HTTP_PORT, protocol: http}]
    endpoints: [{address: $API_IP}]
routes:
  http:
    - name: maintenance
      service: api
      match: [{path: {prefix: /maintenance}}]
      direct_response: {status: 503, body: "api is down for maintenance (answered by web's sidecar)\n"}
    - name: v2-users
      service: api
      match: [{path: {prefix: /v2/}}]
      rewrite: {path_prefix: /users/}
      destinations: [{service: api}]
EOF
} >"$WORK/$WEB.yaml.new"
"$WORK/skiff" validate --config "$WORK/$WEB.yaml.new" >/dev/null
chmod 644 "$WORK/$WEB.yaml.new"
mv "$WORK/$WEB.yaml.new" "$WORK/$WEB.yaml" # renamed over, as an editor or a ConfigMap update does
for i in $(seq 50); do
	nsx "$WEB" curl -fsS --max-time 1 "$ADMIN/config" 2>/dev/null | grep -q '"maintenance"' && break
	[ "$i" = 50 ] && die "web's sidecar did not take the new routes: $(tail -5 "$WORK/$WEB.log")"
	sleep 0.1
done
echo "  web's sidecar saw the file change and swapped in the new routes"
cmd "curl http://$API_IP:$HTTP_PORT/maintenance"
nsx "$WEB" curl -sS --max-time 5 -w '(HTTP %{http_code})\n' "http://$API_IP:$HTTP_PORT/maintenance" | sed 's/^/  /'
cmd "curl -H 'Host: api' http://$API_IP:$HTTP_PORT/v2/42"
nsx "$WEB" curl -sS --max-time 5 -H 'Host: api' "http://$API_IP:$HTTP_PORT/v2/42" | sed 's/^/  /'

# The relay counts bytes as they move and the closing side settles a moment later.
sleep 0.5

# metrics NS DIRECTION: the sidecar's own series for one direction, histogram buckets left out.
metrics() {
	nsx "$1" curl -fsS --max-time 5 "$ADMIN/metrics" | grep '^skiff_' | grep -F "direction=\"$2\"" | grep -v '_bucket{' | sed 's/^/  /'
}
say "web's sidecar: outbound metrics ($ADMIN/metrics in $WEB)"
metrics "$WEB" outbound
say "api's sidecar: inbound metrics ($ADMIN/metrics in $API)"
metrics "$API" inbound
echo "  (web's sidecar accepted one connection per curl, but forwarded the requests over"
echo "   one pooled keep-alive connection: api's sidecar saw fewer HTTP connections)"

# The demo checks itself: each sidecar must have counted the four requests and the TCP
# connection, or the traffic did not go through both of them.
for check in "$WEB outbound" "$API inbound"; do
	read -r ns dir <<<"$check"
	m=$(nsx "$ns" curl -fsS --max-time 5 "$ADMIN/metrics")
	reqs=$(grep -F "direction=\"$dir\"" <<<"$m" | grep '^skiff_requests_total{' | grep -F 'response_code="200"' | awk '{s += $NF} END {print s + 0}')
	tcp=$(grep -F "direction=\"$dir\"" <<<"$m" | grep '^skiff_tcp_connections_closed_total{' | awk '{s += $NF} END {print s + 0}')
	if [ "$reqs" -lt 4 ] || [ "$tcp" -lt 1 ]; then
		die "the $dir sidecar in $ns counted $reqs requests and $tcp TCP connections; expected 4 and 1"
	fi
done
echo "  check: both sidecars counted the 4 requests and the TCP connection"

say "api's sidecar log (level debug, format $LOG_FORMAT)"
sed 's/^/  /' "$WORK/$API.log"
