//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The reload tests edit skiff's config file while it runs, as an operator or the
// kubelet would, and watch new requests follow it. They are not parallel: they time
// how soon a change applies, and the load test would slow the others down.

// configDir makes a directory for a test's config files that uid 1337 can read.
func configDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(binDir, "reload-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// initSkiffFile is initSkiff for a config file the test lays out itself.
func initSkiffFile(t *testing.T, ns *netNS, path string) *sidecar {
	t.Helper()
	s := &sidecar{ns: ns, cfg: path}
	s.ns.mustExec(t, 30*time.Second, skiffBin, "init", "--config", path)
	t.Cleanup(func() { _, _, _ = s.ns.exec(t, 30*time.Second, skiffBin, "init", "--remove", "--config", path) })
	return s
}

// configWriter replaces the config file the way one kind of writer does and returns
// when the new version became visible at the path.
type configWriter interface {
	path() string
	write(t *testing.T, content string) time.Time
}

// inPlace writes the file where it is: a truncate and then the bytes, the moment in
// between a half-written file.
type inPlace struct{ p string }

func (w inPlace) path() string { return w.p }

func (w inPlace) write(t *testing.T, content string) time.Time {
	t.Helper()
	at := time.Now()
	if err := os.WriteFile(w.p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return at
}

// renamedOver writes a new file beside the config and renames it over, as editors and
// configuration tools do.
type renamedOver struct{ p string }

func (w renamedOver) path() string { return w.p }

func (w renamedOver) write(t *testing.T, content string) time.Time {
	t.Helper()
	tmp := w.p + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := os.Rename(tmp, w.p); err != nil {
		t.Fatal(err)
	}
	return at
}

// configMapMount lays a directory out as the kubelet mounts a ConfigMap and updates it
// as the kubelet does: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>; an
// update writes a new ..<timestamp> directory, points a new symlink ..data_tmp at it,
// renames that over ..data (the one atomic step) and removes the old directory.
type configMapMount struct {
	dir string
	cur string
	seq int
}

func newConfigMapMount(t *testing.T, dir, content string) *configMapMount {
	t.Helper()
	m := &configMapMount{dir: dir}
	m.cur = m.version(t, content)
	if err := os.Symlink(m.cur, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/config.yaml", m.path()); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *configMapMount) path() string { return filepath.Join(m.dir, "config.yaml") }

func (m *configMapMount) version(t *testing.T, content string) string {
	t.Helper()
	m.seq++
	name := fmt.Sprintf("..%s_%d", time.Now().Format("2006_01_02_15_04_05"), m.seq)
	if err := os.Mkdir(filepath.Join(m.dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, name, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func (m *configMapMount) write(t *testing.T, content string) time.Time {
	t.Helper()
	next := m.version(t, content)
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(m.dir, m.cur)); err != nil {
		t.Fatal(err)
	}
	m.cur = next
	return at
}

// reloadLogs counts the reload lines in skiff's log: applied and rejected.
func reloadLogs(sc *sidecar) (ok, rejected int) {
	s := sc.proc.stderr.String()
	return strings.Count(s, `"message":"config reloaded`), strings.Count(s, `"message":"config reload rejected`)
}

// waitReloads waits until skiff has logged ok applied and rejected reloads in all, and
// returns how long that took from since.
func waitReloads(t *testing.T, sc *sidecar, since time.Time, ok, rejected int) time.Duration {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		o, r := reloadLogs(sc)
		if o >= ok && r >= rejected {
			if o > ok || r > rejected {
				t.Fatalf("skiff logged %d applied and %d rejected reloads, want %d and %d: a version was loaded twice, or one not written was", o, r, ok, rejected)
			}
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff logged %d applied and %d rejected reloads 3s after the write, want %d and %d\nlog:\n%s",
				o, r, ok, rejected, tail(sc.proc.stderr.String(), 4000))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// configInForce fetches /config.
func configInForce(t *testing.T, sc *sidecar) map[string]any {
	t.Helper()
	out := sc.ns.mustExec(t, 10*time.Second, "curl", "-sS", "--fail", "--max-time", "5", adminURL+"/config")
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("/config: %v: %s", err, out)
	}
	return m
}

// jsonPath walks a decoded JSON value by object keys and list indexes.
func jsonPath(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// allTo is a config whose one route sends every request for reviews to one subset;
// extra is more YAML at the top level.
func (m *meshTopo) allTo(subset, extra string) string {
	return testConfig + extra + m.meshServices() + fmt.Sprintf(`routes:
  http:
    - name: all
      service: reviews
      destinations: [{service: reviews, subset: %s}]
`, subset)
}

// TestReloadWithinASecond edits the config file while skiff runs, in place and as a
// Kubernetes ConfigMap update: new requests follow each valid version within a second,
// a broken version changes nothing (routing, /config) and is logged with its file, key
// and reason, and a change to a static key is reported, not applied.
func TestReloadWithinASecond(t *testing.T) {
	need(t)
	for _, c := range []struct {
		name   string
		layout func(t *testing.T, dir, content string) configWriter
	}{
		{"in_place_edit", func(t *testing.T, dir, content string) configWriter {
			w := inPlace{filepath.Join(dir, "config.yaml")}
			w.write(t, content)
			return w
		}},
		{"rename_over", func(t *testing.T, dir, content string) configWriter {
			w := renamedOver{filepath.Join(dir, "config.yaml")}
			w.write(t, content)
			return w
		}},
		{"configmap_swap", func(t *testing.T, dir, content string) configWriter {
			return newConfigMapMount(t, dir, content)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMeshTopo(t)
			m.startBackends(t, "http")
			w := c.layout(t, configDir(t), m.allTo("v1", ""))
			sc := initSkiffFile(t, m.app, w.path())
			sc.run(t)
			url := vipURL(vipReviews)
			watchRoute(t, m.app, "v1", 10*time.Second, "-url", url).wait(t)
			before := sc.metrics(t)

			// A valid version: new requests follow it.
			pw := watchRoute(t, m.app, "v2", 5*time.Second, "-url", url)
			at := w.write(t, m.allTo("v2", ""))
			toV2 := pw.wait(t).Sub(at)
			waitReloads(t, sc, at, 1, 0)

			// A broken version: counted, logged with its key, and nothing changes.
			want := configInForce(t, sc)
			at = w.write(t, strings.Replace(m.allTo("v2", ""), "subset: v2}]\n", "subset: v3}]\n", 1))
			waitReloads(t, sc, at, 1, 1)
			log := sc.proc.stderr.String()
			if !strings.Contains(log, `"key":"routes.http[0].destinations[0].subset"`) || !strings.Contains(log, `has no subset \"v3\"`) {
				t.Errorf("the rejected reload's log line does not name the key routes.http[0].destinations[0].subset and the reason:\n%s", tail(log, 3000))
			}
			if got := configInForce(t, sc); !jsonEqual(got, want) {
				t.Errorf("/config changed after a rejected reload:\n before %v\n after  %v", want, got)
			}
			if r := countNames(t, m.app, "-url", url, "-n", "20", "-conns", "2"); r.Counts["v2"] != 20 {
				t.Errorf("after a rejected reload: answers by backend %v, want all 20 from v2 as before", r.Counts)
			}

			// A valid version that also changes a static key: the routes apply, the static
			// key stays as started, and the log says it needs a restart.
			pw = watchRoute(t, m.app, "v1", 5*time.Second, "-url", url)
			at = w.write(t, m.allTo("v1", "proxy:\n  connect_timeout: 3s\n"))
			toV1 := pw.wait(t).Sub(at)
			waitReloads(t, sc, at, 2, 1)
			cfg := configInForce(t, sc)
			if got := jsonPath(cfg, "routes", "http", 0, "destinations", 0, "subset"); got != "v1" {
				t.Errorf("/config: routes.http[0].destinations[0].subset = %v, want v1 (the routes in force)", got)
			}
			if got := jsonPath(cfg, "proxy", "connect_timeout"); got != float64(10*time.Second) {
				t.Errorf("/config: proxy.connect_timeout = %v, want %v as started (a static key)", got, float64(10*time.Second))
			}
			if log := sc.proc.stderr.String(); !strings.Contains(log, "next restart") || !strings.Contains(log, "proxy.connect_timeout") {
				t.Errorf("skiff did not log that proxy.connect_timeout needs a restart:\n%s", tail(log, 3000))
			}

			after := sc.metrics(t)
			if ok, bad := delta(before, after, mReloads, "result", "ok"), delta(before, after, mReloads, "result", "error"); ok != 2 || bad != 1 {
				t.Errorf(`%s moved by ok +%v, error +%v; want +2 and +1`, mReloads, ok, bad)
			}
			t.Logf("RELOAD %s: new requests followed the new config %v (to v2) and %v (back to v1) after the write",
				c.name, toV2.Round(time.Millisecond), toV1.Round(time.Millisecond))
			for _, d := range []time.Duration{toV2, toV1} {
				if d > time.Second {
					t.Errorf("a valid version took %v to route new requests, want at most 1s", d)
				}
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// routeLoadStats and routeLoadResult mirror testapp route-load's result.
type routeLoadStats struct {
	Requests int64            `json:"requests"`
	Failures int64            `json:"failures"`
	Resets   int64            `json:"resets"`
	Dials    int64            `json:"dials"`
	Names    map[string]int64 `json:"names"`
}

type routeLoadResult struct {
	result
	HTTP1  *routeLoadStats `json:"http1"`
	H2C    *routeLoadStats `json:"h2c"`
	GRPC   *routeLoadStats `json:"grpc"`
	Errors []string        `json:"errors"`
}

// TestReloadUnderLoad rewrites the config 100 times, valid and broken versions mixed,
// in place and renamed over, while HTTP/1.1 (keep-alive), h2c and gRPC load runs through
// skiff to the services the versions route: not one request may fail and not one
// connection may be reset or closed under its client, and every version must be counted
// once, as applied or rejected.
func TestReloadUnderLoad(t *testing.T) {
	need(t)
	m := newMeshTopo(t)
	m.startBackends(t, "http", "grpc")
	// info, not debug: the load makes many requests and their debug lines are not needed.
	base := "log:\n  level: info\n" + m.meshServices()
	weights := func(a, b int) string {
		return fmt.Sprintf(`routes:
  http:
    - name: reviews-split
      service: reviews
      destinations: [{service: reviews, subset: v1, weight: %[1]d}, {service: reviews, subset: v2, weight: %[2]d}]
  grpc:
    - name: greeter-split
      service: greeter
      destinations: [{service: greeter, subset: v1, weight: %[1]d}, {service: greeter, subset: v2, weight: %[2]d}]
`, a, b)
	}
	header := `routes:
  http:
    - name: jason-to-v2
      service: reviews
      match: [{headers: [{name: x-user, exact: jason}]}]
      destinations: [{service: reviews, subset: v2}]
    - name: reviews-rest
      service: reviews
      destinations: [{service: reviews, subset: v1}]
  grpc:
    - name: greeter-split
      service: greeter
      destinations: [{service: greeter, subset: v1, weight: 20}, {service: greeter, subset: v2, weight: 80}]
`
	// Broken versions, each wrong in another way: a missing subset, YAML that does not
	// parse, an unknown key, weights that add up to 0.
	broken := []func() string{
		func() string { return base + strings.Replace(weights(80, 20), "subset: v2", "subset: v3", 1) },
		func() string { return base + "routes:\n  http: [{name: x, service: reviews\n" },
		func() string { return base + strings.Replace(weights(80, 20), "weight: 80", "weigth: 80", 1) },
		func() string { return base + weights(0, 0) },
	}
	// version i of the file, and the name of its first HTTP route ("" when broken).
	version := func(i int) (string, string) {
		head := fmt.Sprintf("# rewrite %d\n", i)
		switch i % 3 {
		case 0:
			return head + base + weights(80, 20), "reviews-split"
		case 1:
			return head + base + header, "jason-to-v2"
		}
		return head + broken[(i/3)%len(broken)](), ""
	}

	dir := configDir(t)
	path := filepath.Join(dir, "config.yaml")
	first, _ := version(0)
	inPlace{path}.write(t, first)
	sc := initSkiffFile(t, m.app, path)
	sc.run(t)

	load := m.app.start(t, "route-load", appBin, "route-load",
		"-http", vipURL(vipReviews), "-h2c", vipURL(vipReviews), "-grpc", fmt.Sprintf("%s:%d", vipGreeter, portGRPC),
		"-conns", "4", "-streams", "4", "-jason-every", "3")
	load.waitLine(t, 30*time.Second, func(m map[string]any) bool { return m["event"] == "loading" })
	before := sc.metrics(t)

	const rewrites = 100
	var (
		wantOK, wantBad int
		applyTimes      []time.Duration
		lastValid       string // the first HTTP route of the last valid version
	)
	start := time.Now()
	for i := 1; i <= rewrites; i++ {
		content, route := version(i)
		if route != "" {
			wantOK++
			lastValid = route
		} else {
			wantBad++
		}
		var at time.Time
		if i%2 == 0 {
			at = inPlace{path}.write(t, content)
		} else {
			at = renamedOver{path}.write(t, content)
		}
		// Each version is read before the next is written: rewrites closer together than
		// the watcher's debounce would be read as one.
		applyTimes = append(applyTimes, waitReloads(t, sc, at, wantOK, wantBad))
	}
	elapsed := time.Since(start)
	// A little load on the last version too, then stop it between requests.
	time.Sleep(300 * time.Millisecond)
	if err := load.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var r routeLoadResult
	load.result(t, 30*time.Second, &r)
	after := sc.metrics(t)

	okMoved, badMoved := delta(before, after, mReloads, "result", "ok"), delta(before, after, mReloads, "result", "error")
	slices.Sort(applyTimes)
	var total, failed, resets, closed int64
	protos := []struct {
		name  string
		s     *routeLoadStats
		conns int64
	}{{"HTTP/1.1", r.HTTP1, 4}, {"h2c", r.H2C, 1}, {"gRPC", r.GRPC, 1}}
	var per []string
	for _, p := range protos {
		if p.s == nil {
			t.Fatalf("route-load reported nothing for %s: %+v", p.name, r)
		}
		total += p.s.Requests
		failed += p.s.Failures
		resets += p.s.Resets
		closed += max(p.s.Dials-p.conns, 0)
		per = append(per, fmt.Sprintf("%s %d (%d conns)", p.name, p.s.Requests, p.s.Dials))
	}
	t.Logf("RELOAD UNDER LOAD: %d rewrites in %.1fs (%d valid, %d broken; in place and renamed over) -> skiff_config_reloads_total ok +%.0f, error +%.0f; %d requests through skiff meanwhile: %s; %d failed, %d reset, %d connections closed under the client; write-to-reload p50 %v, max %v",
		rewrites, elapsed.Seconds(), wantOK, wantBad, okMoved, badMoved, total, strings.Join(per, ", "), failed, resets, closed,
		applyTimes[len(applyTimes)/2].Round(time.Millisecond), applyTimes[len(applyTimes)-1].Round(time.Millisecond))

	if okMoved != float64(wantOK) || badMoved != float64(wantBad) {
		t.Errorf(`%s moved by ok +%v and error +%v, want +%d and +%d: one reload per version written`, mReloads, okMoved, badMoved, wantOK, wantBad)
	}
	if failed > 0 || resets > 0 || !r.OK {
		t.Errorf("%d requests failed (%d of them reset) during the reloads; first errors: %v", failed, resets, r.Errors)
	}
	for _, p := range protos {
		if p.s.Dials != p.conns {
			t.Errorf("%s: the client made %d connections, want %d: skiff closed connections under it during the reloads", p.name, p.s.Dials, p.conns)
		}
		// Every version routes some of each protocol's requests to each backend, so both
		// must have answered.
		if p.s.Names["v1"] == 0 || p.s.Names["v2"] == 0 {
			t.Errorf("%s: answers by backend %v, want both v1 and v2: the routes did not apply", p.name, p.s.Names)
		}
	}
	if got := jsonPath(configInForce(t, sc), "routes", "http", 0, "name"); got != lastValid {
		t.Errorf("/config after the last valid version: routes.http[0].name = %v, want %s", got, lastValid)
	}
}
