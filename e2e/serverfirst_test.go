//go:build linux

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestServerFirst times a server-first protocol's greeting (an SMTP-like banner) through
// the outbound sidecar, against the same without it: on a port left to detection the
// greeting waits sniff.server_first_wait for a client that says nothing; on a port
// pinned to tcp in sniff.ports it must not wait at all.
func TestServerFirst(t *testing.T) {
	need(t)
	t.Parallel()
	const (
		samples = 7
		wait    = 20 * time.Millisecond // sniff.server_first_wait, the default, set here explicitly
	)
	tp := newTopo(t)
	tp.srv.startServer(t, "banner", portBanner)
	tp.srv.startServer(t, "banner", portBannerPinned)
	auto, pinned := hostPort(tp.srvV4, portBanner), hostPort(tp.srvV4, portBannerPinned)

	// The medians of several exchanges (one process start each, on a shared machine):
	// of the time from connect() returning to the greeting, and from before connect().
	type timing struct{ afterConnect, fromDial float64 }
	bannerMS := func(t *testing.T, addr string) timing {
		t.Helper()
		var after, all []float64
		for range samples {
			var r bannerResult
			tp.app.client(t, 30*time.Second, &r, "banner-client", "-addr", addr)
			if !r.OK || r.Banner != greeting || r.Echo != "EHLO skiff\r\n" {
				t.Fatalf("server-first exchange with %s: %+v", addr, r)
			}
			after, all = append(after, r.BannerMS), append(all, r.DialBannerMS)
		}
		return timing{median(after), median(all)}
	}
	// Without skiff first, from the same namespace.
	directAuto, directPinned := bannerMS(t, auto), bannerMS(t, pinned)

	sc := initSkiff(t, tp.app, testConfig+fmt.Sprintf("sniff:\n  server_first_wait: %v\n  ports:\n    \"%d\": tcp\n", wait, portBannerPinned))
	sc.run(t)
	before := sc.metrics(t)
	viaAuto := bannerMS(t, auto)
	viaPinned := bannerMS(t, pinned)
	t.Logf("BANNER skiff=%.2fms direct=%.2fms (connect to greeting: skiff=%.2fms direct=%.2fms; port %d detected, sniff.server_first_wait=%v; medians of %d)",
		viaAuto.afterConnect, directAuto.afterConnect, viaAuto.fromDial, directAuto.fromDial, portBanner, wait, samples)
	t.Logf("BANNER pinned_tcp skiff=%.2fms direct=%.2fms (connect to greeting: skiff=%.2fms direct=%.2fms; port %d pinned to tcp in sniff.ports; medians of %d)",
		viaPinned.afterConnect, directPinned.afterConnect, viaPinned.fromDial, directPinned.fromDial, portBannerPinned, samples)

	after := sc.waitMetrics(t, 5*time.Second, func(m metrics) bool {
		return delta(before, m, mClosed, "direction", "outbound", "destination", auto) >= samples &&
			delta(before, m, mClosed, "direction", "outbound", "destination", pinned) >= samples
	})
	// Both went through skiff, each exchange as one relayed TCP connection.
	for _, d := range []string{auto, pinned} {
		if n := delta(before, after, mOpened, "direction", "outbound", "destination", d); n != samples {
			t.Errorf("%s{destination=%q} moved by %v, want %d: the banner connections did not go through skiff", mOpened, d, n, samples)
		}
	}
	if n := delta(before, after, mDetected, "direction", "outbound", "protocol", "tcp"); n != 2*samples {
		t.Errorf("%s{protocol=tcp} moved by %v, want %d", mDetected, n, 2*samples)
	}
	// The detected port waits for the silent client, then lets the greeting through at
	// once: well under sniff.timeout (5s) and the 10s some proxies wait.
	if viaAuto.afterConnect > 2000 {
		t.Errorf("the greeting took %.0f ms through skiff: it waited for the silent client", viaAuto.afterConnect)
	}
	// The pinned port is dialled at accept: the greeting must come far sooner than the
	// wait a detected port has.
	if limit := float64(wait.Milliseconds()) / 2; viaPinned.fromDial >= limit {
		t.Errorf("on the port pinned to tcp the greeting took %.1f ms (median, from connect) through skiff, want under %.0f ms: the pin did not skip the server-first wait (detected port: %.1f ms)",
			viaPinned.fromDial, limit, viaAuto.fromDial)
	}
}
