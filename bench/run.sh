#!/usr/bin/env bash
# skiff side-by-side benchmark: direct vs skiff vs HAProxy vs nginx, in two network
# namespaces on this machine. Run as root from anywhere: bash bench/run.sh
#
#   BENCH_RUNS=N     runs of every measurement (default 3; the median run is reported)
#   BENCH_QUICK=1    one short pass (~3 minutes) instead of the full one (~13 minutes)
#   BENCH_ONLY=1,2   only these scenario groups (1-9; 3a/3b, 6a/6b also accepted)
#   BENCH_PPROF=1    also take 10 s CPU profiles of skiff under scenarios 1, 2 and 3a
#   BENCH_NO_INSTALL=1  never install packages or tools; fail if something is missing
#
# See bench/README.md for what each scenario measures and how to read the table.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TOOLS="$REPO/bin/tools"
OUT="$REPO/bin/bench"
# Go from the official tarball, when it is not on PATH yet.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

# Pinned Go tools (module/path@version). fortio releases after v1.66.5 do not build with
# the toolchain here; ghz v0.121.0 is the newest release and installs cleanly.
FORTIO=fortio.org/fortio@v1.66.5
GHZ=github.com/bojand/ghz/cmd/ghz@v0.121.0
APT_PACKAGES="haproxy nginx libnginx-mod-stream wrk iperf3 nghttp2-client util-linux iproute2 iptables curl gnuplot-nox"

say() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "bench: $*"; exit 1; }

[ "$(uname -s)" = Linux ] || die "needs Linux (network namespaces, iptables)"
[ "$(id -u)" = 0 ] || die "run as root: it creates network namespaces and iptables rules"
command -v go >/dev/null 2>&1 || die "Go is not installed (https://go.dev/dl/)"

# The harness's namespaces; the same names as bench/procs.go.
NAMESPACES="skb-client skb-server"

# cleanup ends the processes left in the harness's namespaces (only this harness puts
# processes there) and deletes the namespaces. It runs before the benchmark, to clear an
# interrupted earlier run, and on every exit, Ctrl-C included. The Go orchestrator does
# the same on its own exit; this is the safety net if it was killed outright.
cleanup() {
	local ns pids i
	for ns in $NAMESPACES; do
		[ -e "/run/netns/$ns" ] || continue
		for sig in TERM KILL; do
			pids=$(ip netns pids "$ns" 2>/dev/null || true)
			[ -n "$pids" ] || break
			kill -s "$sig" $pids 2>/dev/null || true
			for i in $(seq 30); do
				[ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && break
				sleep 0.1
			done
		done
		ip netns del "$ns" 2>/dev/null || true
	done
}
on_signal() { trap - EXIT; cleanup; say "bench: interrupted; namespaces and processes removed"; exit 130; }
trap cleanup EXIT
trap on_signal INT TERM HUP

cleanup

# --- what it needs ----------------------------------------------------------------------
install_apt() {
	if ! command -v dpkg-query >/dev/null 2>&1; then
		say "not a Debian system: make sure these (or equivalents) are installed: $APT_PACKAGES"
		return
	fi
	local missing="" p
	for p in $APT_PACKAGES; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing="$missing $p"
	done
	[ -z "$missing" ] && return
	[ "${BENCH_NO_INSTALL:-0}" = 1 ] && die "missing packages:$missing (BENCH_NO_INSTALL=1)"
	say "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_go_tool() { # module/path/cmd/name@version
	local tool=$1 pkg=${1%@*} ver=${1##*@} name have
	name=${pkg##*/}
	have=$(go version -m "$TOOLS/$name" 2>/dev/null | awk '$1 == "mod" {print $3}' || true)
	[ "$have" = "$ver" ] && return
	[ "${BENCH_NO_INSTALL:-0}" = 1 ] && die "missing $TOOLS/$name $ver (BENCH_NO_INSTALL=1)"
	say "installing $tool into bin/tools"
	GOBIN="$TOOLS" go install "$tool"
}

install_apt
mkdir -p "$TOOLS" "$OUT"
install_go_tool "$FORTIO"
install_go_tool "$GHZ"

# --- build ------------------------------------------------------------------------------
VERSION="bench-$(git describe --always --dirty 2>/dev/null || echo dev)"
say "building skiff ($VERSION) and the harness"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$OUT/skiff" .
CGO_ENABLED=0 go build -trimpath -o "$OUT/skiffbench" ./bench

ncpu=$(nproc)
if [ "$ncpu" -lt 2 ]; then
	say "only $ncpu CPU: load generator and proxy share it (numbers are not comparable to a 2-CPU run)"
	export BENCH_CPU_PROXY=0
fi

# Not exec: the EXIT trap must still run after the orchestrator returns.
"$OUT/skiffbench" run -repo "$REPO" -skiff "$OUT/skiff" -tools "$TOOLS"
