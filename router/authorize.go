package router

import (
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"skiff/router/authz"
	"skiff/telemetry"
)

// deniedBody is what a denied request is told, in Envoy's words, so clients and
// dashboards written for an Istio mesh recognise it.
const deniedBody = "RBAC: access denied"

// grpcPermissionDenied is gRPC's PERMISSION_DENIED status code.
const grpcPermissionDenied = "7"

// authorize checks an inbound request against the authorization policies in force.
// A request they deny is answered here and never reaches the app: 403 with Envoy's
// body, or for gRPC a trailers-only response with status PERMISSION_DENIED (a gRPC
// client reads the status, not the HTTP code). It reports whether the request may go on.
func (h *HTTP) authorize(w http.ResponseWriter, r *http.Request, m *Meta, start time.Time) bool {
	if h.rt == nil {
		return true
	}
	e := h.rt.Snapshot().Authz
	if e.Empty() {
		return true
	}
	req := authz.Request{
		Principal: m.PeerID,
		Source:    m.Src.Addr(),
		Port:      m.Dst.Port(),
		HTTP:      true,
		Method:    r.Method,
		Path:      authzPath(r.URL.Path),
		Host:      r.Host,
		Header:    r.Header,
	}
	d := e.Check(&req)
	if d.Allow {
		return true
	}

	proto := requestProtocol(r)
	code, grpcStatus, n := http.StatusForbidden, "", 0
	hdr := w.Header()
	if proto == "grpc" {
		code, grpcStatus = http.StatusOK, grpcPermissionDenied
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", grpcPermissionDenied)
		hdr.Set("Grpc-Message", deniedBody)
		w.WriteHeader(code)
	} else {
		hdr.Set("Content-Type", "text/plain")
		hdr.Set("Content-Length", strconv.Itoa(len(deniedBody)))
		w.WriteHeader(code)
		n, _ = io.WriteString(w, deniedBody)
	}

	policy, principal := inboundSecurity(m)
	labels := []string{m.Direction, m.Dst.String(), proto, strconv.Itoa(code), grpcStatus, policy, principal,
		telemetry.UnknownService, telemetry.FlagDenied}
	h.metrics.Requests.WithLabelValues(labels...).Inc()
	h.metrics.RequestDuration.WithLabelValues(labels...).Observe(float64(time.Since(start)) / float64(time.Millisecond))
	h.metrics.RequestBytes.WithLabelValues(labels...).Observe(0)
	h.metrics.ResponseBytes.WithLabelValues(labels...).Observe(float64(n))
	h.log.Info().Uint64(telemetry.FieldConnID, m.ConnID).Str(telemetry.FieldPolicy, d.Policy).
		Str(telemetry.FieldPeerID, m.PeerID).Stringer(telemetry.FieldSrc, m.Src).Stringer(telemetry.FieldOrigDst, m.Dst).
		Str(telemetry.FieldMethod, r.Method).Str(telemetry.FieldPath, r.URL.Path).
		Msg("request denied by authorization policy")
	return false
}

// authzPath is the path policies match: the decoded path (Go's server has decoded it)
// with dot segments removed and runs of slashes merged, as servers resolve it, so that
// "/a/../admin", "//admin" and "/%61dmin" all meet a rule on "/admin". A trailing slash
// is kept. Only a path that needs it is rewritten (and allocates).
func authzPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' || !needsClean(p) {
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func needsClean(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}
