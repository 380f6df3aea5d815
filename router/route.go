package router

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"skiff/config"
	"skiff/router/lb"
	"skiff/telemetry"
)

// routed is the routing decision for one outbound HTTP request addressed to a config
// service: where it goes and what the route does on the way. A request that no service
// names has none and goes to its original destination, exactly as before routing.
type routed struct {
	route    *httpRoute // nil: the service's default (no route matched)
	svc      *service   // the destination service
	addr     netip.AddrPort
	done     lb.Done
	flag     string // response flag when the proxy answers itself
	timedOut atomic.Bool
	timer    *time.Timer
	mirror   *mirrorCopy
}

type routedKey struct{}

func routedOf(ctx context.Context) *routed {
	rt, _ := ctx.Value(routedKey{}).(*routed)
	return rt
}

// serviceName is the destination_service label.
func (rt *routed) serviceName() string {
	if rt == nil || rt.svc == nil {
		return telemetry.UnknownService
	}
	return rt.svc.name
}

// resolve picks the endpoint of d for traffic that arrived for port and was going to
// orig, hashing key for the consistent-hash policies. ok is false when the destination
// has no endpoint now.
func (d *destination) resolve(port uint16, orig netip.AddrPort, key uint64) (netip.AddrPort, lb.Done, bool) {
	if d.svc.passthrough {
		if d.port != 0 {
			return netip.AddrPortFrom(orig.Addr(), d.port), nopDone, true
		}
		return orig, nopDone, true
	}
	target := d.targetPort(port)
	e, done := d.cluster.pick(key)
	if e == nil {
		done()
		return netip.AddrPort{}, nopDone, false
	}
	return endpointAddr(e, target), done, true
}

// targetPort is the endpoints' port for traffic that arrived for port: the
// destination's port if it names one, else the arrival port, or the service's only
// port when it has no such port; mapped through the service port's target_port.
func (d *destination) targetPort(port uint16) uint16 {
	p := port
	if d.port != 0 {
		p = d.port
	}
	sc := d.svc.cfg
	if sp, ok := sc.Port(p); ok {
		return uint16(sp.TargetPort)
	}
	if len(sc.Ports) == 1 {
		return uint16(sc.Ports[0].TargetPort)
	}
	return p
}

func nopDone() {}

// hashKey is the consistent-hash key of a request for service s.
func (s *service) hashKey(r *http.Request, src netip.AddrPort) uint64 {
	switch {
	case s.hash.Header != "":
		if v := r.Header.Get(s.hash.Header); v != "" {
			return lb.HashString(v)
		}
	case s.hash.Cookie != "":
		if c, err := r.Cookie(s.hash.Cookie); err == nil {
			return lb.HashString(c.Value)
		}
	}
	return lb.HashAddr(src.Addr())
}

// route decides an outbound request. It returns nil when the request is not addressed
// to a config service (it then passes through untouched), else the decision; a
// decision with a flag set has been answered already (redirect, direct response, no
// endpoint).
func (h *HTTP) route(t *Table, m *Meta, w http.ResponseWriter, r *http.Request, grpc bool) *routed {
	svc := t.serviceFor(m.Dst, r.Host)
	if svc == nil {
		return nil
	}
	rt := &routed{svc: svc, route: svc.matchHTTP(r, grpc)}
	var dest *destination
	switch route := rt.route; {
	case route == nil:
		dest = &destination{svc: svc, cluster: svc.clusters[""]}
	case route.direct != nil:
		rt.flag = telemetry.FlagDirectResponse
		if route.direct.Body != "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Length", strconv.Itoa(len(route.direct.Body)))
		}
		route.respOps.apply(w.Header())
		w.WriteHeader(route.direct.Status)
		_, _ = io.WriteString(w, route.direct.Body)
		return rt
	case route.redirect != nil:
		rt.flag = telemetry.FlagDirectResponse
		w.Header().Set("Location", redirectURL(route.redirect, r))
		route.respOps.apply(w.Header())
		w.WriteHeader(route.redirect.Code)
		return rt
	default:
		var ok bool
		if dest, ok = route.dests.Pick(); !ok {
			rt.flag = telemetry.FlagNoRoute
			http.Error(w, "no route", http.StatusServiceUnavailable)
			return rt
		}
	}
	rt.svc = dest.svc
	addr, done, ok := dest.resolve(m.Dst.Port(), m.Dst, dest.svc.hashKey(r, m.Src))
	if !ok {
		rt.flag = telemetry.FlagNoHealthy
		h.log.Info().Uint64(telemetry.FieldConnID, m.ConnID).Str("service", dest.svc.name).Msg("no endpoint for the request's service")
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return rt
	}
	rt.addr, rt.done = addr, done
	return rt
}

// redirectURL is the request's URL with the parts the redirect names replaced.
func redirectURL(rd *config.Redirect, r *http.Request) string {
	scheme := "http"
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host, port, hasPort := splitHostPort(r.Host)
	if !hasPort {
		// An IPv6 literal keeps no brackets here: they are written back below.
		host = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]")
	}
	hostPort := false
	if rd.Host != "" {
		host = rd.Host
		// Validation lets the host carry a port; it is the port of the redirect then.
		if h, p, ok := splitHostPort(rd.Host); ok {
			host, port, hasPort, hostPort = h, p, true, true
		}
	}
	switch {
	case rd.Port != 0:
		port, hasPort = uint16(rd.Port), true
	case rd.Scheme != "" && hasPort && !hostPort:
		// A scheme change drops the old scheme's port unless a port is given.
		hasPort = false
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	if strings.Contains(host, ":") {
		b.WriteString("[" + host + "]")
	} else {
		b.WriteString(host)
	}
	if hasPort {
		b.WriteString(":" + strconv.Itoa(int(port)))
	}
	path := r.URL.EscapedPath()
	if rd.Path != "" {
		path = rd.Path
	}
	b.WriteString(path)
	if r.URL.RawQuery != "" {
		b.WriteString("?" + r.URL.RawQuery)
	}
	return b.String()
}

// rewritePath replaces the part of path that the matched prefix (or exact path)
// covered with prefix.
func rewritePath(route *httpRoute, r *http.Request, prefix string) string {
	path := r.URL.Path
	var query url.Values
	for i := range route.matches {
		// The alternative to rewrite by is the one matchHTTP took: the first that matches
		// the whole request, not the first whose path alone matches.
		if !route.matches[i].matches(r, &query) {
			continue
		}
		m := route.matches[i].path
		switch {
		case m != nil && m.Exact != "":
			return prefix
		case m != nil && m.Prefix != "":
			rest := path[len(m.Prefix):]
			if strings.HasSuffix(prefix, "/") && strings.HasPrefix(rest, "/") {
				rest = rest[1:]
			}
			return prefix + rest
		}
		break
	}
	// Matched with no path condition: the whole path is the matched prefix "/".
	return prefix + strings.TrimPrefix(path, "/")
}

// rawRewrite is the escaped form of path, a rewrite of in's path to prefix, that keeps
// the app's own escaping of the part after the prefix (a %2F stays %2F rather than
// becoming a '/', which would name another resource); "" when the app used the default
// escaping, or when that part cannot be found.
func rawRewrite(in *url.URL, path, prefix string) string {
	if in.RawPath == "" || !strings.HasPrefix(path, prefix) {
		return ""
	}
	rest, raw := path[len(prefix):], in.EscapedPath()
	// The escaped form of rest is a suffix of raw at least as long as rest.
	for j := len(raw) - len(rest); j >= 0; j-- {
		if s, err := url.PathUnescape(raw[j:]); err == nil && s == rest {
			return (&url.URL{Path: prefix}).EscapedPath() + raw[j:]
		}
	}
	return ""
}

// mirrorCopy is a request's copy on its way to a mirror: the body is captured as the
// main request reads it (up to maxMirrorBody), and the copy is sent only once the main
// request is done, so it never slows it.
type mirrorCopy struct {
	m    *mirror
	body *captureBody // nil: no body
}

const maxMirrorBody = 1 << 20

type captureBody struct {
	rc       io.ReadCloser
	buf      bytes.Buffer
	complete bool // the main request read the body to its end
	over     bool // the body was larger than maxMirrorBody
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if !c.over {
		if c.buf.Len()+n > maxMirrorBody {
			c.over = true
			c.buf = bytes.Buffer{}
		} else {
			c.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		c.complete = true
	}
	return n, err
}

func (c *captureBody) Close() error { return c.rc.Close() }

// mirrorChance reports whether a request is mirrored, for a percent from 0 to 100.
func mirrorChance(percent float64) bool { return percent >= 100 || rand.Float64()*100 < percent }

// sendMirror sends the copy of r to the mirror's service, fire and forget, bounded
// in number: when too many copies are in flight, this one is dropped.
func (h *HTTP) sendMirror(r *http.Request, mc *mirrorCopy, m *Meta) {
	name := mc.m.dest.svc.name
	if mc.body != nil && (!mc.body.complete || mc.body.over) {
		h.metrics.Mirrored.WithLabelValues(name, "dropped").Inc()
		return
	}
	select {
	case h.mirrorSlots <- struct{}{}:
	default:
		h.metrics.Mirrored.WithLabelValues(name, "dropped").Inc()
		return
	}
	addr, done, ok := mc.m.dest.resolve(m.Dst.Port(), m.Dst, mc.m.dest.svc.hashKey(r, m.Src))
	if !ok {
		<-h.mirrorSlots
		h.metrics.Mirrored.WithLabelValues(name, "dropped").Inc()
		return
	}
	out := r.Clone(context.Background())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = addr.String()
	// Envoy's convention: the copy's authority says it is a shadow.
	host, port, hasPort := splitHostPort(r.Host)
	if hasPort {
		out.Host = host + "-shadow:" + strconv.Itoa(int(port))
	} else {
		out.Host = r.Host + "-shadow"
	}
	out.Body, out.ContentLength = http.NoBody, 0
	if mc.body != nil {
		b := mc.body.buf.Bytes()
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	tr := h.proxies["outbound"][0].Transport
	if r.ProtoMajor == 2 {
		tr = h.proxies["outbound"][1].Transport
	}
	go func() {
		defer func() { <-h.mirrorSlots; done() }()
		ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
		defer cancel()
		resp, err := tr.RoundTrip(out.WithContext(ctx))
		if err != nil {
			h.metrics.Mirrored.WithLabelValues(name, "error").Inc()
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		h.metrics.Mirrored.WithLabelValues(name, "sent").Inc()
	}()
}

// mirrorTimeout bounds a mirrored copy; maxMirrors bounds the copies in flight.
const (
	mirrorTimeout = 30 * time.Second
	maxMirrors    = 64
)

// modifyResponse ends a routed request's timeout (the head has come) and applies the
// route's response header edits.
func modifyResponse(resp *http.Response) error {
	rt := routedOf(resp.Request.Context())
	if rt == nil || rt.route == nil {
		return nil
	}
	if rt.timer != nil {
		rt.timer.Stop()
	}
	rt.route.respOps.apply(resp.Header)
	return nil
}
