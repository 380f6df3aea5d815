package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
)

// Changes is what a new version of the file changes, for the log line of a reload: the
// dynamic sections, which take effect at once, and the static keys, which wait for a
// restart.
type Changes struct {
	ServicesAdded, ServicesRemoved, ServicesChanged []string
	// Route counts, before and after.
	HTTPRoutes, GRPCRoutes, TCPRoutes [2]int
	// RoutesChanged names each route added, removed or edited, as "http/<name>" (or
	// "http[i]" when it has none). Order matters (the first match wins), so a route
	// that moved counts as edited at each position it left and took.
	RoutesChanged []string
	// DiscoveryChanged is set when discovery.dns_servers or dns_refresh changed.
	DiscoveryChanged bool
	// AuthzDefault is authorization.default_action before and after, when it changed.
	AuthzDefault [2]string
	// Authorization policies by name.
	PoliciesAdded, PoliciesRemoved, PoliciesChanged []string
	// LogLevel is log.level before and after, when it changed.
	LogLevel [2]string
	// Static lists the static keys (proxy, capture, sniff, mtls, log.format) whose value
	// differs, as dotted paths such as "proxy.connect_timeout". They need a restart.
	Static []string
}

// Diff compares the config in force with the next one. Both must be valid.
func Diff(cur, next *Config) Changes {
	var c Changes
	c.ServicesAdded, c.ServicesRemoved, c.ServicesChanged = diffNamed(
		cur.Services, next.Services, func(s Service) string { return s.Name })
	c.HTTPRoutes = [2]int{len(cur.Routes.HTTP), len(next.Routes.HTTP)}
	c.GRPCRoutes = [2]int{len(cur.Routes.GRPC), len(next.Routes.GRPC)}
	c.TCPRoutes = [2]int{len(cur.Routes.TCP), len(next.Routes.TCP)}
	c.RoutesChanged = append(c.RoutesChanged, diffOrdered("http", cur.Routes.HTTP, next.Routes.HTTP, func(r HTTPRoute) string { return r.Name })...)
	c.RoutesChanged = append(c.RoutesChanged, diffOrdered("grpc", cur.Routes.GRPC, next.Routes.GRPC, func(r GRPCRoute) string { return r.Name })...)
	c.RoutesChanged = append(c.RoutesChanged, diffOrdered("tcp", cur.Routes.TCP, next.Routes.TCP, func(r TCPRoute) string { return r.Name })...)
	c.DiscoveryChanged = !sameJSON(cur.Discovery, next.Discovery)
	if a, b := cur.Authorization.DefaultAction, next.Authorization.DefaultAction; a != b {
		c.AuthzDefault = [2]string{a, b}
	}
	c.PoliciesAdded, c.PoliciesRemoved, c.PoliciesChanged = diffNamed(
		cur.Authorization.Policies, next.Authorization.Policies, func(p AuthzPolicy) string { return p.Name })
	if a, b := cur.Log.Level, next.Log.Level; a != b {
		c.LogLevel = [2]string{a, b}
	}
	c.Static = staticKeysChanged(cur, next)
	return c
}

// Dynamic reports whether anything that takes effect on reload changed.
func (c Changes) Dynamic() bool {
	return len(c.ServicesAdded)+len(c.ServicesRemoved)+len(c.ServicesChanged)+len(c.RoutesChanged) > 0 ||
		c.HTTPRoutes[0] != c.HTTPRoutes[1] || c.GRPCRoutes[0] != c.GRPCRoutes[1] || c.TCPRoutes[0] != c.TCPRoutes[1] ||
		c.DiscoveryChanged || c.AuthzDefault != [2]string{} ||
		len(c.PoliciesAdded)+len(c.PoliciesRemoved)+len(c.PoliciesChanged) > 0 ||
		c.LogLevel != [2]string{}
}

// Fields returns the changes as log fields: only what changed, except the route counts,
// which are always there ("2→3", or "2" when unchanged) so that every reload line says
// how many routes are in force.
func (c Changes) Fields() map[string]any {
	f := map[string]any{}
	list := func(k string, v []string) {
		if len(v) > 0 {
			f[k] = v
		}
	}
	list("services_added", c.ServicesAdded)
	list("services_removed", c.ServicesRemoved)
	list("services_changed", c.ServicesChanged)
	for _, r := range []struct {
		k string
		n [2]int
	}{{"http_routes", c.HTTPRoutes}, {"grpc_routes", c.GRPCRoutes}, {"tcp_routes", c.TCPRoutes}} {
		f[r.k] = fromTo(r.n[0], r.n[1])
	}
	list("routes_changed", c.RoutesChanged)
	if c.DiscoveryChanged {
		f["discovery_changed"] = true
	}
	if c.AuthzDefault != [2]string{} {
		f["authz_default_action"] = c.AuthzDefault[0] + "→" + c.AuthzDefault[1]
	}
	list("authz_policies_added", c.PoliciesAdded)
	list("authz_policies_removed", c.PoliciesRemoved)
	list("authz_policies_changed", c.PoliciesChanged)
	if c.LogLevel != [2]string{} {
		f["log_level"] = c.LogLevel[0] + "→" + c.LogLevel[1]
	}
	list("static_changed", c.Static)
	return f
}

func fromTo(a, b int) string {
	if a == b {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d→%d", a, b)
}

// InForce returns the config in force after next is applied to a process started with
// started: next's dynamic sections (log.level, services, discovery, routes,
// authorization) over started's static ones, which the listeners and capture rules
// were built from and which only a restart changes. It must be validated again before
// use: it is a combination neither file held.
func InForce(started, next *Config) *Config {
	c := *started
	c.Log.Level = next.Log.Level
	c.Services = next.Services
	c.Discovery = next.Discovery
	c.Routes = next.Routes
	c.Authorization = next.Authorization
	return &c
}

// diffNamed compares two lists of named items as sets by name.
func diffNamed[T any](cur, next []T, name func(T) string) (added, removed, changed []string) {
	old := make(map[string]T, len(cur))
	for _, x := range cur {
		old[name(x)] = x
	}
	seen := map[string]bool{}
	for _, x := range next {
		n := name(x)
		seen[n] = true
		o, ok := old[n]
		switch {
		case !ok:
			added = append(added, n)
		case !sameJSON(o, x):
			changed = append(changed, n)
		}
	}
	for _, x := range cur {
		if !seen[name(x)] {
			removed = append(removed, name(x))
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}

// diffOrdered compares two route lists position by position.
func diffOrdered[T any](kind string, cur, next []T, name func(T) string) []string {
	var out []string
	label := func(i int, x T) string {
		if n := name(x); n != "" {
			return kind + "/" + n
		}
		return fmt.Sprintf("%s[%d]", kind, i)
	}
	for i := range max(len(cur), len(next)) {
		switch {
		case i >= len(cur):
			out = append(out, label(i, next[i]))
		case i >= len(next):
			out = append(out, label(i, cur[i]))
		case !sameJSON(cur[i], next[i]):
			out = append(out, label(i, next[i]))
		}
	}
	return out
}

// sameJSON compares two values as the file and /config show them (exported fields
// only: the rest is derived by Validate).
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// staticKeysChanged lists the static keys whose value differs between a and b.
func staticKeysChanged(a, b *Config) []string {
	static := func(c *Config) map[string]any {
		return map[string]any{
			"proxy": c.Proxy, "capture": c.Capture, "sniff": c.Sniff, "mtls": c.MTLS,
			"log": map[string]any{"format": c.Log.Format},
		}
	}
	fa, fb := map[string]any{}, map[string]any{}
	flatten("", toJSONValue(static(a)), fa)
	flatten("", toJSONValue(static(b)), fb)
	var out []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok || !reflect.DeepEqual(v, w) {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func toJSONValue(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// flatten turns nested objects into dotted keys. Lists are compared whole; an empty
// list, an empty object and null are all "not set", as the file may write them.
func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, e, out)
		}
	case []any:
		if len(x) > 0 {
			out[prefix] = x
		}
	case nil:
	default:
		out[prefix] = x
	}
}
