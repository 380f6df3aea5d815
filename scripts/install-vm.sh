#!/usr/bin/env bash
# scripts/install-vm.sh: install skiff as a systemd service on a VM or bare-metal host.
#
#   sudo scripts/install-vm.sh [--binary FILE] [--config FILE] [--now]
#   sudo scripts/install-vm.sh --uninstall [--purge]
#
# Install (run `make build` first):
#   - creates the skiff-proxy user and group with the uid and gid the config names as
#     proxy.uid and proxy.gid (1337 by default), when they are missing;
#   - installs the binary as /usr/local/bin/skiff (default: bin/skiff of this checkout);
#   - installs the config as /etc/skiff/config.yaml (default: config.yaml of this
#     checkout, which is all defaults); an existing /etc/skiff/config.yaml is kept;
#   - installs scripts/skiff.service as /etc/systemd/system/skiff.service and enables it.
#   With --now it also (re)starts it; otherwise start it with `systemctl start skiff`.
#
# Uninstall: stops and disables the service (stopping removes the capture rules), then
# removes the unit and the binary. /etc/skiff and the skiff-proxy user stay unless
# --purge is given.
#
# Where systemd is not running (an image build, a container), the files are installed
# and the unit enabled, and nothing is started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DST=/usr/local/bin/skiff
CONF_DIR=/etc/skiff
CONF_DST=$CONF_DIR/config.yaml
UNIT_DST=/etc/systemd/system/skiff.service
USER_NAME=skiff-proxy

die() {
	echo "install-vm: $*" >&2
	exit 1
}
note() { echo "install-vm: $*"; }
usage() {
	sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

binary=$ROOT/bin/skiff
config=$ROOT/config.yaml
mode=do_install now=no purge=no
while [ $# -gt 0 ]; do
	case $1 in
	--binary) binary=${2:?--binary needs a file}; shift 2 ;;
	--config) config=${2:?--config needs a file}; shift 2 ;;
	--now) now=yes; shift ;;
	--uninstall) mode=do_uninstall; shift ;;
	--purge) purge=yes; shift ;;
	-h | --help) usage 0 ;;
	*) echo "install-vm: unknown argument $1" >&2; usage 2 ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"
systemd_running=no
[ -d /run/systemd/system ] && systemd_running=yes

do_uninstall() {
	if [ -f "$UNIT_DST" ]; then
		if [ "$systemd_running" = yes ]; then
			note "stopping and disabling skiff.service (its stop removes the capture rules)"
			systemctl disable --now skiff.service || true
		else
			systemctl disable skiff.service 2>/dev/null || true
		fi
		rm -f "$UNIT_DST"
		[ "$systemd_running" = no ] || systemctl daemon-reload
	fi
	if [ -x "$BIN_DST" ]; then
		"$BIN_DST" init --remove || true # in case the rules outlived the service
		rm -f "$BIN_DST"
	fi
	note "removed $UNIT_DST and $BIN_DST"
	if [ "$purge" = yes ]; then
		rm -rf "$CONF_DIR"
		if getent passwd "$USER_NAME" >/dev/null; then userdel "$USER_NAME"; fi
		if getent group "$USER_NAME" >/dev/null; then groupdel "$USER_NAME"; fi
		note "removed $CONF_DIR and the $USER_NAME user and group"
	else
		note "kept $CONF_DIR and the $USER_NAME user (--purge removes them)"
	fi
}

# ensure_account creates the skiff-proxy group and user with the given ids, or checks
# that the existing ones have them.
ensure_account() {
	local uid=$1 gid=$2 have
	if have=$(getent group "$USER_NAME"); then
		[ "$(cut -d: -f3 <<<"$have")" = "$gid" ] ||
			die "group $USER_NAME exists with gid $(cut -d: -f3 <<<"$have"), but the config's proxy.gid is $gid"
	else
		if getent group "$gid" >/dev/null; then
			die "gid $gid (proxy.gid) already belongs to group $(getent group "$gid" | cut -d: -f1): pick another proxy.gid"
		fi
		groupadd --system --gid "$gid" "$USER_NAME"
		note "created group $USER_NAME (gid $gid)"
	fi
	if have=$(getent passwd "$USER_NAME"); then
		[ "$(cut -d: -f3 <<<"$have")" = "$uid" ] ||
			die "user $USER_NAME exists with uid $(cut -d: -f3 <<<"$have"), but the config's proxy.uid is $uid"
	else
		if getent passwd "$uid" >/dev/null; then
			die "uid $uid (proxy.uid) already belongs to user $(getent passwd "$uid" | cut -d: -f1): pick another proxy.uid"
		fi
		useradd --system --uid "$uid" --gid "$gid" --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "skiff proxy" "$USER_NAME"
		note "created user $USER_NAME (uid $uid)"
	fi
}

do_install() {
	[ -x "$binary" ] || die "no skiff binary at $binary: run make build, or pass --binary FILE"
	[ -f "$ROOT/scripts/skiff.service" ] || die "no unit file at $ROOT/scripts/skiff.service"
	command -v iptables >/dev/null || command -v iptables-nft >/dev/null ||
		die "iptables is not installed (Debian/Ubuntu: apt-get install iptables)"

	# The config in force is the existing one, if any: check it with the new binary.
	local conf=$config
	[ -f "$CONF_DST" ] && conf=$CONF_DST
	"$binary" validate --config "$conf" >/dev/null || die "$conf is not a valid skiff config"

	# The plan names the ids the rules exempt; the proxy must run as exactly those.
	local plan uid gid
	plan=$("$binary" init --dry-run --config "$conf")
	uid=$(grep -oE -- '--uid-owner [0-9]+' <<<"$plan" | head -1 | cut -d' ' -f2 || true)
	gid=$(grep -oE -- '--gid-owner [0-9]+' <<<"$plan" | head -1 | cut -d' ' -f2 || true)
	ensure_account "${uid:-1337}" "${gid:-1337}"

	# SSH goes through the proxy when inbound capture takes port 22: it works while
	# skiff runs, but a host is safer when SSH never depends on it.
	if grep -q -- '-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT' <<<"$plan" && ! grep -q -- '--dport 22 -j RETURN' <<<"$plan" ||
		grep -q -- '--dport 22 -j SKIFF_IN_REDIRECT' <<<"$plan"; then
		note "WARNING: inbound capture includes port 22, so SSH to this host goes through skiff."
		note "         Add 22 to capture.inbound.exclude_ports in $CONF_DST to keep SSH off the proxy."
	fi

	# Replace the binary with a rename, which works while the old one runs.
	install -D -m 755 "$binary" "$BIN_DST.new"
	mv -f "$BIN_DST.new" "$BIN_DST"
	note "installed $BIN_DST ($("$BIN_DST" version))"
	if [ -f "$CONF_DST" ]; then
		note "kept the existing $CONF_DST"
	else
		install -D -m 644 "$config" "$CONF_DST"
		note "installed $CONF_DST from $config"
	fi
	install -D -m 644 "$ROOT/scripts/skiff.service" "$UNIT_DST"
	note "installed $UNIT_DST"

	if [ "$systemd_running" = no ]; then
		systemctl enable skiff.service
		note "systemd is not running here: skiff.service is enabled and will start at boot"
		return
	fi
	systemctl daemon-reload
	systemctl enable skiff.service
	if [ "$now" = yes ]; then
		systemctl restart skiff.service
		note "skiff.service (re)started: systemctl status skiff; journalctl -u skiff"
	else
		note "enabled; start it with: systemctl start skiff"
	fi
}

"$mode"
