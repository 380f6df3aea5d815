package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pickUp is how soon a change must reach the reload function.
const pickUp = time.Second

// version is a valid config file told apart by discovery.dns_refresh (n seconds).
func versionYAML(n int) string {
	return fmt.Sprintf("# version %d\ndiscovery:\n  dns_refresh: %ds\nlog:\n  level: warn\n", n, n)
}

func versionOf(c *Config) int { return int(c.Discovery.DNSRefresh / time.Second) }

type loaded struct {
	cfg *Config
	err error
	at  time.Time
}

// watchFile starts a Watcher on path (whose content is in force) and returns the
// channel its loads arrive on.
func watchFile(t *testing.T, path string, opts WatchOptions) (*Watcher, chan loaded) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Warn == nil {
		opts.Warn = func(err error) { t.Errorf("watch warning: %v", err) }
	}
	ch := make(chan loaded, 16)
	w, err := Watch(path, data, opts, func(c *Config, err error) { ch <- loaded{c, err, time.Now()} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w, ch
}

// noRecheck leaves change events as the only trigger: a test with it proves that
// viper's watcher saw the change.
var noRecheck = WatchOptions{Recheck: time.Hour}

// expectVersion waits for one load and requires it to be version n, within pickUp of
// since.
func expectVersion(t *testing.T, ch chan loaded, since time.Time, n int) {
	t.Helper()
	select {
	case l := <-ch:
		if l.err != nil {
			t.Fatalf("want version %d, got error %v", n, l.err)
		}
		if got := versionOf(l.cfg); got != n {
			t.Fatalf("loaded version %d, want %d", got, n)
		}
		if d := l.at.Sub(since); d > pickUp {
			t.Errorf("version %d took %v to load, want at most %v", n, d, pickUp)
		} else {
			t.Logf("version %d loaded %v after the change", n, d.Round(time.Millisecond))
		}
	case <-time.After(pickUp + time.Second):
		t.Fatalf("version %d not loaded within %v", n, pickUp+time.Second)
	}
}

func expectNothing(t *testing.T, ch chan loaded, d time.Duration) {
	t.Helper()
	select {
	case l := <-ch:
		t.Fatalf("nothing should have loaded, got cfg=%v err=%v", l.cfg != nil, l.err)
	case <-time.After(d):
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatchInPlaceWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, noRecheck)
	for n := 2; n <= 4; n++ {
		start := time.Now()
		writeFile(t, p, versionYAML(n))
		expectVersion(t, ch, start, n)
	}
}

// An editor or a configuration tool writes a new file beside the old one and renames
// it over: the path now names a new inode.
func TestWatchRenameOver(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, noRecheck)
	for n := 2; n <= 4; n++ {
		tmp := filepath.Join(dir, fmt.Sprintf(".config.yaml.%d.tmp", n))
		writeFile(t, tmp, versionYAML(n))
		start := time.Now()
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		expectVersion(t, ch, start, n)
	}
}

// configMap lays dir out as the kubelet mounts a ConfigMap: config.yaml ->
// ..data/config.yaml, ..data -> ..<version>, the files in ..<version>.
type configMap struct {
	t   *testing.T
	dir string
	cur string
}

func newConfigMap(t *testing.T, content string) *configMap {
	cm := &configMap{t: t, dir: t.TempDir()}
	cm.cur = cm.writeVersion(content)
	if err := os.Symlink(cm.cur, filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), cm.path()); err != nil {
		t.Fatal(err)
	}
	return cm
}

func (cm *configMap) path() string { return filepath.Join(cm.dir, "config.yaml") }

func (cm *configMap) writeVersion(content string) string {
	name := fmt.Sprintf("..%s", time.Now().Format("2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(filepath.Join(cm.dir, name), 0o755); err != nil {
		cm.t.Fatal(err)
	}
	writeFile(cm.t, filepath.Join(cm.dir, name, "config.yaml"), content)
	return name
}

// update does what the kubelet's atomic writer does: a new version directory, a new
// symlink ..data_tmp to it renamed over ..data, then the old directory removed. It
// returns when the rename happened.
func (cm *configMap) update(content string) time.Time {
	next := cm.writeVersion(content)
	tmp := filepath.Join(cm.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		cm.t.Fatal(err)
	}
	at := time.Now()
	if err := os.Rename(tmp, filepath.Join(cm.dir, "..data")); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(cm.dir, cm.cur)); err != nil {
		cm.t.Fatal(err)
	}
	cm.cur = next
	return at
}

func TestWatchConfigMapSwap(t *testing.T) {
	cm := newConfigMap(t, versionYAML(1))
	_, ch := watchFile(t, cm.path(), noRecheck)
	for n := 2; n <= 4; n++ {
		at := cm.update(versionYAML(n))
		expectVersion(t, ch, at, n)
	}
}

// A truncate, then the bytes in two writes with a pause: the version read must be the
// whole file, never the empty or half-written one between.
func TestWatchWaitsForTheWriteToSettle(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, noRecheck)
	full := versionYAML(2)
	cut := strings.Index(full, "dns_refresh") + 4
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.WriteString(full[:cut]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(DefaultDebounce / 3)
	if _, err := f.WriteString(full[cut:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	expectVersion(t, ch, start, 2)
	expectNothing(t, ch, 300*time.Millisecond)
}

func TestWatchSkipsUnchangedBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, WatchOptions{Recheck: 50 * time.Millisecond})
	writeFile(t, p, versionYAML(1))
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, ch, 500*time.Millisecond)
}

func TestWatchBadFileThenGood(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, noRecheck)
	writeFile(t, p, "proxy:\n  conect_timeout: 2s\n")
	select {
	case l := <-ch:
		var le *LoadError
		if !errors.As(l.err, &le) || le.File != p || le.Key != "proxy.conect_timeout" {
			t.Fatalf("a bad file: got cfg=%v err=%v, want a LoadError naming %s and proxy.conect_timeout", l.cfg != nil, l.err, p)
		}
		t.Logf("bad file reported: %v", l.err)
	case <-time.After(pickUp):
		t.Fatal("a bad file was not reported")
	}
	start := time.Now()
	writeFile(t, p, versionYAML(5))
	expectVersion(t, ch, start, 5)
}

// viper's watch ends when the file is removed; the recheck still finds the file made
// again, and follows later edits too.
func TestWatchRemovedAndRecreated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, WatchOptions{Recheck: 200 * time.Millisecond})
	start := time.Now()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	writeFile(t, p, versionYAML(2))
	expectVersion(t, ch, start, 2)
	start = time.Now()
	writeFile(t, p, versionYAML(3))
	expectVersion(t, ch, start, 3)
}

// A config.yaml that links into another directory: editing the target makes no event
// in the watched directory, so only the recheck sees it.
func TestWatchSymlinkTargetEdited(t *testing.T) {
	target := filepath.Join(t.TempDir(), "real.yaml")
	writeFile(t, target, versionYAML(1))
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	_, ch := watchFile(t, p, WatchOptions{Recheck: 200 * time.Millisecond})
	start := time.Now()
	writeFile(t, target, versionYAML(2))
	expectVersion(t, ch, start, 2)
}

func TestWatchMissingFileReportedOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	_, ch := watchFile(t, p, WatchOptions{Recheck: 50 * time.Millisecond})
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-ch:
		var le *LoadError
		if !errors.As(l.err, &le) || !errors.Is(l.err, os.ErrNotExist) {
			t.Fatalf("missing file: got cfg=%v err=%v, want a LoadError wrapping ErrNotExist", l.cfg != nil, l.err)
		}
	case <-time.After(2 * pickUp):
		t.Fatal("a missing file was not reported")
	}
	expectNothing(t, ch, 500*time.Millisecond)
	start := time.Now()
	writeFile(t, p, versionYAML(3))
	expectVersion(t, ch, start, 3)
}

// Reload (SIGHUP) reads the file even when nothing changed.
func TestWatchReloadForces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	w, ch := watchFile(t, p, noRecheck)
	start := time.Now()
	w.Reload()
	expectVersion(t, ch, start, 1)
}

func TestWatchStop(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, p, versionYAML(1))
	w, ch := watchFile(t, p, WatchOptions{Recheck: 50 * time.Millisecond})
	w.Stop()
	writeFile(t, p, versionYAML(2))
	w.Reload()
	expectNothing(t, ch, 300*time.Millisecond)
	w.Stop() // twice is fine
}

// A relative path: viper would watch the directory "", which cannot be watched.
func TestWatchRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, "config.yaml", versionYAML(1))
	_, ch := watchFile(t, "config.yaml", noRecheck)
	start := time.Now()
	writeFile(t, "config.yaml", versionYAML(2))
	expectVersion(t, ch, start, 2)
}
