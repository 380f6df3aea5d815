package router

import (
	"time"
)

// A request on the fast path waits for its response without reading its client: the
// client's socket may even be held by the read that brought the request (take).
// A client that went away meanwhile would keep the upstream connection, and whatever
// the upstream is doing for it (a long poll, a slow query), until the response came.
// net/http's server notices with a read in the background and cancels the request;
// Envoy resets the upstream stream. Here one goroutine looks, every h1GoneEvery, at the
// clients whose request has waited longer than that, and for each that has closed its
// end (an EOF or a reset waiting in its socket) closes the upstream connection: the
// request ends as 499, as on the standard path. A client that has sent a next request
// (pipelining) is taken to be there.
const h1GoneEvery = 500 * time.Millisecond

// h1Gone is h1conn.since for a request whose client went away.
const h1Gone = -1

// watchGone runs until done is closed.
func (t *h1Conns) watchGone(done <-chan struct{}) {
	tick := time.NewTicker(h1GoneEvery)
	defer tick.Stop()
	var waiting []*h1conn
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		cutoff := time.Now().Add(-h1GoneEvery).UnixNano()
		waiting = waiting[:0]
		t.each(func(hc *h1conn) {
			if since := hc.since.Load(); since > 0 && since < cutoff {
				waiting = append(waiting, hc)
			}
		})
		for _, hc := range waiting {
			hc.checkGone()
		}
		clear(waiting)
	}
}

// checkGone ends the request in flight if its client has closed its end.
func (hc *h1conn) checkGone() {
	sw, ok := hc.out.(*sockWriter) // a plain TCP client (set before the watcher sees hc)
	if !ok {
		return
	}
	rc := sw.rc
	r := -1
	if rc.Control(func(fd uintptr) { r = peek(fd) }) != nil || r != 0 {
		return // closed here already, or still there
	}
	up := hc.up.Load()
	if up == nil || !hc.up.CompareAndSwap(up, nil) {
		return // the request has ended
	}
	hc.since.Store(h1Gone)
	_ = up.rd.c.Close()
}
