// Command skiff is a service-mesh sidecar: `skiff init` installs the iptables rules that
// send a workload's TCP traffic to the proxy, and `skiff run` is the proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/intercept"
	"skiff/listener"
	"skiff/router"
	"skiff/telemetry"
	meshtls "skiff/tls"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `skiff — a service-mesh sidecar in one binary

Usage:
  skiff init     [--config F] [--dry-run] [--remove]   install (or remove) the iptables capture rules
  skiff run      [--config F]                          run the proxy
  skiff validate [--config F]                          check a config file and exit
  skiff ca       init|issue ...                        a small CA for VMs and demos (skiff ca help)
  skiff version                                        print the version

Every subcommand reads the YAML file given by --config (default: none, all defaults).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "init":
		return cmdInit(args, stdout, stderr)
	case "run":
		return cmdRun(args, stderr)
	case "validate":
		return cmdValidate(args, stdout, stderr)
	case "ca":
		return meshtls.CACommand(args, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "skiff", version)
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "skiff: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// load parses the subcommand's flags (with --config) and the config file. It returns the
// file's bytes too, for `run` to watch it from the version it started with.
func load(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*config.Config, []byte, string, error) {
	fs := flag.NewFlagSet("skiff "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path of the YAML config file (default: built-in defaults)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, "", err
	}
	if fs.NArg() > 0 {
		return nil, nil, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, data, err := config.LoadFile(*path)
	return cfg, data, *path, err
}

// failed reports a subcommand's argument or config error; --help is not one.
func failed(name string, err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "skiff %s: %v\n", name, err)
	return 1
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	_, _, path, err := load("validate", args, stderr, nil)
	if err != nil {
		return failed("validate", err, stderr)
	}
	if path == "" {
		path = "(defaults)"
	}
	fmt.Fprintln(stdout, path+": ok")
	return 0
}

func cmdInit(args []string, stdout, stderr io.Writer) int {
	var dryRun, remove bool
	cfg, _, _, err := load("init", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&dryRun, "dry-run", false, "print the rules in iptables-save form and change nothing")
		fs.BoolVar(&remove, "remove", false, "delete every rule and chain skiff made")
	})
	if err != nil {
		return failed("init", err, stderr)
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, cfg.Log.Level)
	switch {
	case dryRun && remove:
		fmt.Fprintln(stderr, "skiff init: --dry-run and --remove do not go together")
		return 2
	case dryRun:
		fmt.Fprint(stdout, intercept.DryRun(cfg))
		return 0
	case remove:
		if err := intercept.Uninstall(log); err != nil {
			log.Error().Err(err).Msg("removing capture rules")
			return 1
		}
		log.Info().Msg("capture rules removed")
		return 0
	}
	if err := intercept.Install(cfg, log); err != nil {
		log.Error().Err(err).Msg("installing capture rules")
		return 1
	}
	return 0
}

// reloader is the one reload pipeline: the file watcher and SIGHUP both end in apply.
// A version is parsed and validated, combined with the static keys the process started
// with, compiled and swapped into the router, and only then becomes the config in force
// that /config shows. A bad version changes nothing and is logged and counted.
type reloader struct {
	mu      sync.Mutex // the watcher calls apply from one goroutine; this keeps it so for any caller
	path    string
	started *config.Config // static keys (proxy, capture, sniff, mtls, log.format) stay as started
	current atomic.Pointer[config.Config]
	rt      *router.Router
	m       *telemetry.Metrics
	log     zerolog.Logger
}

func (r *reloader) apply(next *config.Config, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var (
		changes config.Changes
		inForce *config.Config
	)
	if err == nil {
		changes = config.Diff(r.current.Load(), next)
		inForce = config.InForce(r.started, next)
		err = inForce.Validate()
		var fe *config.FieldError
		if errors.As(err, &fe) {
			err = &config.LoadError{File: r.path, Key: fe.Key, Err: errors.New(fe.Reason)}
		}
	}
	if err == nil {
		err = r.rt.Apply(inForce)
	}
	if err != nil {
		r.m.ConfigReloads.WithLabelValues("error").Inc()
		ev := r.log.Error().Err(err).Str(telemetry.FieldFile, r.path)
		var le *config.LoadError
		if errors.As(err, &le) {
			if le.Key != "" {
				ev = ev.Str("key", le.Key)
			}
			ev = ev.Str(telemetry.FieldReason, le.Err.Error())
		}
		ev.Msg("config reload rejected; the config in force stays")
		return
	}
	r.m.ConfigReloads.WithLabelValues("ok").Inc()
	if changes.LogLevel[0] != changes.LogLevel[1] {
		telemetry.SetLevel(inForce.Log.Level)
	}
	r.current.Store(inForce)
	msg := "config reloaded"
	if !changes.Dynamic() {
		msg = "config reloaded; nothing in force changed"
	}
	r.log.Info().Str(telemetry.FieldFile, r.path).Fields(changes.Fields()).Msg(msg)
	if len(changes.Static) > 0 {
		r.log.Warn().Str(telemetry.FieldFile, r.path).Strs("keys", changes.Static).
			Msg("config changes static keys; they take effect at the next restart")
	}
}

func cmdRun(args []string, stderr io.Writer) int {
	cfg, data, path, err := load("run", args, stderr, nil)
	if err != nil {
		return failed("run", err, stderr)
	}
	log := telemetry.NewLogger(stderr, cfg.Log.Format, cfg.Log.Level)
	log.Info().Str("version", version).Str(telemetry.FieldFile, path).Msg("starting")

	metrics := telemetry.NewMetrics()
	srv, err := listener.NewServer(cfg, log, metrics)
	if err != nil {
		log.Error().Err(err).Str(telemetry.FieldFile, path).Msg("config")
		return 1
	}
	if cfg.MTLS.Enabled() {
		src, err := newIdentitySource(cfg, metrics, log)
		if err != nil {
			log.Error().Err(err).Str(telemetry.FieldFile, cfg.MTLS.CertDir).Msg("mTLS identity")
			return 1
		}
		defer src.Close()
		srv.EnableMesh(src)
	}
	rl := &reloader{path: path, started: cfg, rt: srv.Router(), m: metrics, log: log}
	rl.current.Store(cfg)
	admin := telemetry.NewAdmin(metrics, func() any { return rl.current.Load() })

	adminLn, err := net.Listen("tcp", cfg.Proxy.AdminAddress)
	if err != nil {
		log.Error().Err(err).Str(telemetry.FieldAddr, cfg.Proxy.AdminAddress).Msg("admin listener")
		return 1
	}
	go func() {
		if err := admin.Serve(adminLn); err != nil {
			log.Error().Err(err).Msg("admin server stopped")
		}
	}()

	errc := make(chan error, 4)
	for _, dir := range []listener.Direction{listener.Outbound, listener.Inbound} {
		lns, err := srv.Listen(dir)
		if err != nil {
			log.Error().Err(err).Str(telemetry.FieldDirection, string(dir)).Msg("listener")
			return 1
		}
		for _, ln := range lns {
			log.Info().Str(telemetry.FieldDirection, string(dir)).Stringer(telemetry.FieldAddr, ln.Addr()).Msg("listening")
			go func() { errc <- srv.Serve(ln, dir) }()
		}
	}

	// SIGHUP with no file re-applies the defaults: there is nothing to watch.
	hup := func() { rl.apply(config.Load("")) }
	if path != "" {
		w, err := config.Watch(path, data, config.WatchOptions{
			Warn: func(err error) { log.Warn().Err(err).Str(telemetry.FieldFile, path).Msg("config file watch") },
		}, rl.apply)
		if err != nil {
			log.Error().Err(err).Str(telemetry.FieldFile, path).Msg("config file watch")
			return 1
		}
		defer w.Stop()
		hup = w.Reload
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// Ready only now: a config written, or a SIGHUP sent, as soon as /ready says so is
	// seen at once, not at the file's next recheck (or by the default SIGHUP action).
	admin.SetReady(true)
wait:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				hup()
				continue
			}
			log.Info().Stringer("signal", s).Dur("drain_timeout", cfg.Proxy.DrainTimeout).Msg("draining")
			break wait
		case err := <-errc:
			if err != nil {
				log.Error().Err(err).Msg("listener failed")
				return 1
			}
		}
	}
	admin.SetReady(false)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.DrainTimeout)
	defer cancel()
	start := time.Now()
	srv.Shutdown(ctx)
	_ = admin.Close()
	log.Info().Dur(telemetry.FieldDuration, time.Since(start)).Msg("stopped")
	return 0
}

// newIdentitySource loads the workload identity from mtls.cert_dir and follows its
// rotations, logging and counting each, and exports its expiry.
func newIdentitySource(cfg *config.Config, m *telemetry.Metrics, log zerolog.Logger) (*meshtls.Source, error) {
	src, err := meshtls.NewSource(cfg.MTLS.CertDir, meshtls.Options{
		TrustDomain: cfg.MTLS.TrustDomain,
		Recheck:     cfg.MTLS.Recheck,
		OnEvent: func(ev meshtls.Event) {
			id := ev.Identity
			l := log.With().Str(telemetry.FieldSPIFFEID, id.ID.String()).
				Str(telemetry.FieldSerial, id.Certificate.Leaf.SerialNumber.Text(16)).
				Time(telemetry.FieldNotAfter, id.NotAfter).Logger()
			var fe *meshtls.FileError
			switch {
			case ev.Err == nil:
				m.TLSReloads.WithLabelValues("ok").Inc()
				l.Info().Msg("mTLS identity loaded")
			case errors.As(ev.Err, &fe):
				// A file of the set failed a check (expired, key mismatch, foreign trust
				// domain, unreadable...).
				m.TLSReloads.WithLabelValues("rejected").Inc()
				l.Error().Err(ev.Err).Msg("mTLS identity files rejected; the identity in force stays")
			case errors.Is(ev.Err, meshtls.ErrExpired):
				m.TLSReloads.WithLabelValues("expired").Inc()
				l.Error().Err(ev.Err).Msg("mTLS identity in force has expired")
			default: // the directory could not be watched: it is re-read every mtls.recheck
				m.TLSReloads.WithLabelValues("watch_error").Inc()
				l.Warn().Err(ev.Err).Msg("mTLS identity directory watch")
			}
		},
	})
	if err != nil {
		return nil, err
	}
	id := src.Current()
	log.Info().Str(telemetry.FieldSPIFFEID, id.ID.String()).Str(telemetry.FieldSerial, id.Certificate.Leaf.SerialNumber.Text(16)).
		Time(telemetry.FieldNotAfter, id.NotAfter).Str("trust_domain", src.TrustDomain()).Msg("mTLS identity loaded")
	m.RegisterIdentityExpiry(func() float64 { return float64(src.Current().NotAfter.Unix()) })
	return src, nil
}
