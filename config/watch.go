package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spf13/viper"
)

// Defaults of WatchOptions.
const (
	// DefaultDebounce is how long a file must be quiet before it is read: an in-place
	// write is a truncate and then one or more writes, and reading between them would
	// see a half-written file.
	DefaultDebounce = 75 * time.Millisecond
	// DefaultRecheck is how often the file is read even without a change event. Reading
	// a config file of a few KiB once a second costs nothing, and it bounds how late a
	// change the watch could not see is picked up (see Watch).
	DefaultRecheck = time.Second
	// maxDebounce bounds how long a stream of events that never pauses can put a
	// reload off.
	maxDebounce = time.Second
)

// WatchOptions configures a Watcher. The zero value is ready to use.
type WatchOptions struct {
	// Debounce is how long the file must be quiet before it is read; zero means
	// DefaultDebounce.
	Debounce time.Duration
	// Recheck is how often the file is read without an event; zero means DefaultRecheck.
	Recheck time.Duration
	// Warn, when set, hears that the file could not be watched (it is then read every
	// Recheck only). It is called at most once, from Watch.
	Warn func(error)
}

// Watcher follows a config file and hands each new version, parsed and validated by
// Parse, to one function: the same one that SIGHUP (Reload) feeds. It calls that
// function from one goroutine, one version at a time, so the caller needs no lock of
// its own to order reloads.
type Watcher struct {
	path string
	opts WatchOptions
	load func(*Config, error)

	kick   chan struct{} // a change event: coalesced, never blocks the sender
	force  chan struct{} // Reload
	done   chan struct{}
	exited chan struct{}
	once   sync.Once

	// Touched only by the run goroutine.
	last    []byte // the bytes last handed to load (good or bad): unchanged bytes are skipped
	lastErr string // the read error last reported, so a missing file is reported once
}

// LoadFile is Load that also returns the bytes it parsed, to start a Watcher with: the
// watcher then knows exactly which version is in force and misses no change made
// between the two.
func LoadFile(path string) (*Config, []byte, error) {
	if path == "" {
		c, err := Load("")
		return c, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, &LoadError{File: path, Err: err}
	}
	c, err := Parse(path, data)
	return c, data, err
}

// Watch starts following the file at path, whose version in force is inForce (the bytes
// LoadFile returned). Each time its content changes, and settles, load is called with
// the result of Parse: a valid config, or an error naming the file, the key and the
// reason. Stop ends it.
//
// Change events come from viper's watcher (WatchConfig), which watches the file's
// directory, so it sees in-place writes, a new file renamed over the old one (what
// editors and configuration tools do), and a Kubernetes ConfigMap update, where
// config.yaml is a symlink to ..data/config.yaml and the kubelet swaps the ..data
// symlink to a new directory in one rename. The file is also read every Recheck, for
// what viper's watcher misses:
//   - its watch ends for good when the file is removed (a tool that deletes and then
//     recreates the file) or after any watcher error, such as an event queue overflow;
//   - a config.yaml that is a symlink into another directory is followed only when the
//     link itself changes, not when the file it points to is edited;
//   - when it cannot watch the directory it only logs that, to a logger that discards
//     (canWatch finds it first, so that Warn can say so).
func Watch(path string, inForce []byte, opts WatchOptions, load func(*Config, error)) (*Watcher, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Recheck <= 0 {
		opts.Recheck = DefaultRecheck
	}
	// viper watches the directory filepath.Split gives: for a bare "config.yaml" that is
	// "", which cannot be watched.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", path, err)
	}
	w := &Watcher{
		path:   path,
		opts:   opts,
		load:   load,
		kick:   make(chan struct{}, 1),
		force:  make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		last:   bytes.Clone(inForce),
	}
	if err := canWatch(filepath.Dir(abs)); err != nil {
		if opts.Warn != nil {
			opts.Warn(fmt.Errorf("watching %s: %w; reading it every %v instead", path, err, opts.Recheck))
		}
	} else {
		v := viper.New()
		v.SetConfigFile(abs)
		v.SetConfigType("yaml")
		// viper re-reads the file itself on each event, into this instance that nothing
		// else reads; only the signal is used, and Parse reads the file afresh once the
		// events have settled.
		v.OnConfigChange(func(fsnotify.Event) { w.signal(w.kick) })
		v.WatchConfig()
	}
	go w.run()
	return w, nil
}

// canWatch checks that an inotify watch on dir can be made now. viper's WatchConfig
// calls os.Exit when it cannot create a watcher (the per-user inotify instance limit is
// reached), which a sidecar must not do over a file watch: this makes that unlikely,
// though another process may still take the last instance in between.
func canWatch(dir string) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer fw.Close()
	return fw.Add(dir)
}

// Reload reads the file again now (after the debounce), and passes it on even when its
// bytes are those in force: it is SIGHUP, an operator asking for a reload.
func (w *Watcher) Reload() { w.signal(w.force) }

// Stop ends the watcher: load is not called after Stop returns. viper has no way to end
// its watch; its goroutine stays until the process exits or the file is removed, and
// its signals after Stop go nowhere.
func (w *Watcher) Stop() {
	w.once.Do(func() { close(w.done) })
	<-w.exited
}

func (w *Watcher) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // one is pending already
	}
}

// run is the watcher goroutine: the only one that reads the file and calls load.
func (w *Watcher) run() {
	defer close(w.exited)
	recheck := time.NewTicker(w.opts.Recheck)
	defer recheck.Stop()
	// Since Go 1.23 a stopped or reset timer delivers no stale tick.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		armed   bool
		first   time.Time // when the pending burst began
		forced  bool      // Reload asked: load even unchanged bytes
		evented bool      // an event came in this burst
		polled  *version  // what the recheck read, when it alone started the burst
	)
	arm := func() {
		now := time.Now()
		if !armed {
			armed, first = true, now
		}
		timer.Reset(min(w.opts.Debounce, first.Add(maxDebounce).Sub(now)))
	}
	for {
		select {
		case <-w.done:
			timer.Stop()
			return
		case <-w.kick:
			evented = true
			arm()
		case <-w.force:
			forced = true
			arm()
		case <-recheck.C:
			if armed {
				continue
			}
			v := w.read()
			if v.err == nil && bytes.Equal(v.data, w.last) {
				w.lastErr = "" // back as it was: a later failure is news again
				continue
			}
			if v.err != nil && v.err.Error() == w.lastErr {
				continue
			}
			// Something changed that no event announced. Read it again after the
			// debounce and use it only if it has not moved since: no event will say
			// when a writer is done.
			polled = &v
			arm()
		case <-timer.C:
			v := w.read()
			settled := evented || forced || time.Since(first) >= maxDebounce || polled != nil && v.same(*polled)
			if !settled {
				polled = &v
				timer.Reset(w.opts.Debounce)
				continue
			}
			force := forced
			armed, forced, evented, polled = false, false, false, nil
			w.apply(v, force)
		}
	}
}

// version is one read of the file: its bytes, or why it could not be read.
type version struct {
	data []byte
	err  error
}

func (w *Watcher) read() version {
	data, err := os.ReadFile(w.path)
	return version{data, err}
}

func (v version) same(o version) bool {
	if v.err != nil || o.err != nil {
		return v.err != nil && o.err != nil && v.err.Error() == o.err.Error()
	}
	return bytes.Equal(v.data, o.data)
}

// apply hands one version of the file to load, unless it is the version last handed
// on (or the error last reported) and no reload was asked for.
func (w *Watcher) apply(v version, force bool) {
	select {
	case <-w.done:
		return // Stop was called while this version settled
	default:
	}
	if v.err != nil {
		if !force && v.err.Error() == w.lastErr {
			return
		}
		w.lastErr = v.err.Error()
		w.load(nil, &LoadError{File: w.path, Err: v.err})
		return
	}
	w.lastErr = ""
	if !force && bytes.Equal(v.data, w.last) {
		return
	}
	w.last = v.data
	w.load(Parse(w.path, v.data))
}
