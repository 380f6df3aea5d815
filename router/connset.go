package router

import (
	"context"
	"sync"
	"sync/atomic"
)

// connSet tracks the connections of a fast path (HTTP/1.1 connections, HTTP/2 relays),
// so that Shutdown can reach each of them and wait for them, as http.Server does for its
// own.
type connSet[T comparable] struct {
	mu      sync.Mutex
	conns   map[T]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
}

// add tracks c; false once Shutdown has begun (c is then to be closed).
func (s *connSet[T]) add(c T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[T]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet[T]) remove(c T) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// each calls f for every connection, under the set's lock (f must not block).
func (s *connSet[T]) each(f func(T)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		f(c)
	}
}

// list returns the connections, for work that may block.
func (s *connSet[T]) list() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

func (s *connSet[T]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// drain waits until every connection is gone; if ctx ends first, it calls force (which
// closes what is left) and waits again.
func (s *connSet[T]) drain(ctx context.Context, force func()) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		force()
		<-done
	}
}
