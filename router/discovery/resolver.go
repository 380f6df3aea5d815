package discovery

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/rs/zerolog"
)

// resolver re-resolves one service's DNS name on a schedule, in its own goroutine, and
// hands each answer to the service's Set.
type resolver struct {
	spec    *DNS
	set     *Set
	lookups []*net.Resolver // one per configured server, tried in order; or the system's
	log     zerolog.Logger
	reg     *Registry

	cancel context.CancelFunc
	first  chan struct{} // closed when the first resolution has ended, whatever its result
	done   chan struct{} // closed when the goroutine has returned
}

func (r *Registry) start(s *Set, spec *DNS) *resolver {
	ctx, cancel := context.WithCancel(context.Background())
	res := &resolver{
		spec: spec, set: s, reg: r,
		log:    r.log.With().Str("service", s.service).Str("dns_name", spec.Name).Logger(),
		cancel: cancel, first: make(chan struct{}), done: make(chan struct{}),
	}
	if len(spec.Servers) == 0 {
		// The system's resolver, as net.DefaultResolver, but strict: see lookup.
		res.lookups = []*net.Resolver{{StrictErrors: true}}
	}
	for _, srv := range spec.Servers {
		res.lookups = append(res.lookups, serverResolver(srv))
	}
	go res.run(ctx)
	return res
}

// serverResolver returns Go's own resolver sending every query to srv, over UDP, or TCP
// when the answer was truncated: the resolver chooses the network, the server is ours.
// StrictErrors makes a failure of either the A or the AAAA query fail the lookup, rather
// than return the other family's addresses alone as if the name had no more.
func serverResolver(srv netip.AddrPort) *net.Resolver {
	addr := srv.String()
	return &net.Resolver{
		PreferGo:     true,
		StrictErrors: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// stop ends the resolver and waits for its goroutine, so that once it returns the
// resolver changes nothing any more.
func (res *resolver) stop() {
	res.cancel()
	<-res.done
}

func (res *resolver) run(ctx context.Context) {
	defer close(res.done)
	refresh := max(res.spec.Refresh, minRefresh)
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	first := res.first
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addrs, err := res.lookup(ctx)
		if ctx.Err() != nil {
			return // stopped mid-lookup: the error is ours, not the server's
		}
		res.apply(addrs, err, &failing)
		if first != nil {
			close(first)
			first = nil
		}
		// From the end of a lookup, so that slow answers never pile lookups up.
		t.Reset(refresh)
	}
}

// lookup resolves the name's A and AAAA records at each server in turn until one
// answers. An authoritative "no such name" or empty answer is a result (no addresses),
// not an error: asking the next server would only ask the same zone again.
func (res *resolver) lookup(ctx context.Context) ([]netip.Addr, error) {
	timeout := res.spec.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var err error
	for _, l := range res.lookups {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, e := l.LookupNetIP(lctx, "ip", res.spec.Name)
		cancel()
		if e == nil {
			for i, a := range addrs {
				addrs[i] = a.Unmap()
			}
			slices.SortFunc(addrs, netip.Addr.Compare)
			return slices.Compact(addrs), nil
		}
		var de *net.DNSError
		if errors.As(e, &de) && de.IsNotFound {
			return nil, nil
		}
		err = e
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// apply hands a lookup's result to the set, counts it and logs what is worth a line:
// the endpoints changing, and the first failure of a streak and its end.
func (res *resolver) apply(addrs []netip.Addr, err error, failing *bool) {
	s, m := res.set, res.reg.metrics
	s.mu.Lock()
	if s.dns != res.spec {
		// Replaced by a reload since the lookup started (stop had not returned yet).
		s.mu.Unlock()
		return
	}
	var changed bool
	switch {
	case err == nil:
		s.addrs, s.addrsOf = addrs, res.spec.Name
		changed = s.publishLocked()
	case s.addrsOf != res.spec.Name:
		// The addresses in force are of the name before a reload renamed it: they are
		// not this name's last good answer, so they go.
		s.addrs, s.addrsOf = nil, res.spec.Name
		changed = s.publishLocked()
	}
	eps, version := s.Load()
	s.mu.Unlock()

	if err != nil {
		if m != nil {
			m.DNSResolutions.WithLabelValues(s.service, "error").Inc()
		}
		if !*failing {
			res.log.Warn().Err(err).Int("endpoints", len(eps)).Msg("DNS discovery lookup failed; the endpoints stay as they are until one succeeds")
			*failing = true
		}
	} else {
		if m != nil {
			m.DNSResolutions.WithLabelValues(s.service, "ok").Inc()
		}
		if *failing {
			res.log.Info().Int("addresses", len(addrs)).Msg("DNS discovery lookups succeed again")
			*failing = false
		}
	}
	if changed {
		ev := res.log.Info()
		if len(eps) == 0 {
			ev = res.log.Warn()
		}
		ev.Int("endpoints", len(eps)).Int("addresses", len(addrs)).Uint64("version", version).Msg("service endpoints changed")
	}
}
