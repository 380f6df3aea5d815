package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// printJSON writes a client's result as one JSON line on stdout.
func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// latencies summarises samples in microseconds.
type latencies struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_us"`
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	Max  float64 `json:"max_us"`
}

func summarise(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	q := func(p float64) float64 {
		i := int(p*float64(len(d))+0.5) - 1
		i = max(0, min(i, len(d)-1))
		return us(d[i])
	}
	return latencies{N: len(d), Mean: us(sum / time.Duration(len(d))), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: us(d[len(d)-1])}
}

// cmdConnRate opens connections as fast as it can: each worker dials, waits for the
// server's close (the accept-and-close server), closes, and dials again. A connection
// counts once the client has seen the server's FIN, so a proxy that accepts at once but
// is slow to reach the server gets no credit for the local handshake alone.
func cmdConnRate(args []string) error {
	fs := flag.NewFlagSet("connrate", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of an accept-and-close server")
	workers := fs.Int("workers", 16, "concurrent dialers")
	dur := fs.Duration("d", 5*time.Second, "how long to dial")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 3 * time.Second}
			var b [64]byte
			for time.Now().Before(deadline) {
				c, err := d.Dial("tcp", *addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				var rerr error
				for rerr == nil {
					_, rerr = c.Read(b[:])
				}
				_ = c.Close()
				if errors.Is(rerr, io.EOF) {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, rerr.Error())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fe, _ := firstErr.Load().(string)
	return printJSON(map[string]any{
		"conns_per_sec": float64(ok.Load()) / elapsed, "ok": ok.Load(), "failed": failed.Load(),
		"seconds": elapsed, "first_error": fe,
	})
}

// cmdWS measures WebSocket echo round trips, one message at a time on one connection.
func cmdWS(args []string) error {
	fs := flag.NewFlagSet("ws", flag.ContinueOnError)
	url := fs.String("url", "", "ws://host:port/ws")
	n := fs.Int("n", 10000, "echoes to time")
	size := fs.Int("size", 32, "message size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ws, err := websocket.Dial(*url, "", "http://skiff-bench/")
	if err != nil {
		return err
	}
	defer ws.Close()
	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	buf := make([]byte, *size)
	echo := func() error {
		if _, err := ws.Write(msg); err != nil {
			return err
		}
		_, err := io.ReadFull(ws, buf)
		return err
	}
	for range 200 { // warm up: connections, pools, caches
		if err := echo(); err != nil {
			return err
		}
	}
	rtts := make([]time.Duration, 0, *n)
	for range *n {
		t := time.Now()
		if err := echo(); err != nil {
			return err
		}
		rtts = append(rtts, time.Since(t))
	}
	return printJSON(summarise(rtts))
}

// cmdGRPCStream counts the messages echoed on bidi streams (grpc.testing FullDuplexCall)
// over one HTTP/2 connection, with a window of messages in flight on each stream, after
// a short warm-up.
func cmdGRPCStream(args []string) error {
	fs := flag.NewFlagSet("grpcstream", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of the gRPC server")
	streams := fs.Int("streams", 4, "concurrent streams")
	size := fs.Int("size", 64, "payload bytes per message")
	dur := fs.Duration("d", 5*time.Second, "measurement time")
	window := fs.Int("window", 64, "messages in flight per stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var received atomic.Int64
	errc := make(chan error, 2**streams)
	req := &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: make([]byte, *size)}}
	for range *streams {
		st, err := client.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		// At most window messages in flight per stream, so that what is measured is the
		// proxy's relaying, not how much a proxy is willing to buffer.
		credits := make(chan struct{}, *window)
		for range *window {
			credits <- struct{}{}
		}
		go func() {
			for {
				select {
				case <-credits:
				case <-ctx.Done():
					return
				}
				if err := st.Send(req); err != nil {
					errc <- err
					return
				}
			}
		}()
		go func() {
			for {
				if _, err := st.Recv(); err != nil {
					errc <- err
					return
				}
				received.Add(1)
				credits <- struct{}{}
			}
		}()
	}
	check := func(d time.Duration) error {
		select {
		case err := <-errc:
			return fmt.Errorf("stream failed: %w", err)
		case <-time.After(d):
			return nil
		}
	}
	if err := check(500 * time.Millisecond); err != nil {
		return err
	}
	n0, t0 := received.Load(), time.Now()
	if err := check(*dur); err != nil {
		return err
	}
	n1, t1 := received.Load(), time.Now()
	return printJSON(map[string]any{"msgs_per_sec": float64(n1-n0) / t1.Sub(t0).Seconds(), "messages": n1 - n0})
}

// cmdTTFB times, on a fresh connection each time, from the start of connect() to the
// first byte of the response to an HTTP/1.1 GET. Targets are interleaved request by
// request so that noise from the rest of the machine falls on all of them alike.
func cmdTTFB(args []string) error {
	fs := flag.NewFlagSet("ttfb", flag.ContinueOnError)
	targets := fs.String("targets", "", "name=host:port,... ")
	n := fs.Int("n", 1000, "requests per target")
	if err := fs.Parse(args); err != nil {
		return err
	}
	type target struct{ name, addr string }
	var ts []target
	for _, kv := range strings.Split(*targets, ",") {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("bad target %q: want name=host:port", kv)
		}
		ts = append(ts, target{name, addr})
	}
	samples := make([][]time.Duration, len(ts))
	buf := make([]byte, 4096)
	one := func(addr string) (time.Duration, error) {
		t := time.Now()
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"); err != nil {
			return 0, err
		}
		if _, err := c.Read(buf[:1]); err != nil {
			return 0, err
		}
		d := time.Since(t)
		for err == nil {
			_, err = c.Read(buf)
		}
		return d, nil
	}
	for i := range *n + 20 {
		for j, tg := range ts {
			d, err := one(tg.addr)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", tg.name, tg.addr, err)
			}
			if i >= 20 { // the first few warm pools and caches
				samples[j] = append(samples[j], d)
			}
		}
	}
	out := map[string]latencies{}
	for j, tg := range ts {
		out[tg.name] = summarise(samples[j])
	}
	return printJSON(out)
}

// cmdIdle opens n connections and holds them until stdin closes. In tcp mode each sends
// one line to the echo server and reads it back (so a proxy has relayed both ways and is
// past any protocol detection); in http mode each makes one keep-alive GET. It prints
// one JSON line once all are open.
func cmdIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port")
	n := fs.Int("n", 1000, "connections")
	mode := fs.String("mode", "tcp", "tcp (echo one line), http (one keep-alive GET) or h2 (one GET over h2c)")
	par := fs.Int("par", 64, "connections opened in parallel")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conns := make([]net.Conn, *n)
	var failed atomic.Int64
	var firstErr atomic.Value
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				// A proxy out of descriptors leaves connects hanging in its backlog: stop
				// after a few failures rather than wait out every one of them.
				if i >= *n || failed.Load() >= 16 {
					return
				}
				c, err := openIdle(*addr, *mode)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	fe, _ := firstErr.Load().(string)
	opened := 0
	for _, c := range conns {
		if c != nil {
			opened++
		}
	}
	if err := printJSON(map[string]any{"opened": opened, "failed": failed.Load(),
		"seconds": time.Since(start).Seconds(), "first_error": fe}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	return nil
}

func openIdle(addr, mode string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	switch mode {
	case "tcp":
		if _, err = io.WriteString(c, "ping\n"); err == nil {
			var b [5]byte
			_, err = io.ReadFull(c, b[:])
		}
	case "http":
		if _, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: backend\r\n\r\n"); err == nil {
			var resp *http.Response
			if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}
	case "h2":
		err = h2Get(c)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// h2Get makes one GET over c with HTTP/2 prior knowledge and reads the response to its
// end, leaving the connection open and idle (its SETTINGS acknowledged both ways).
func h2Get(c net.Conn) error {
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "backend"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()),
		EndStream: true, EndHeaders: true}); err != nil {
		return err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.RSTStreamFrame:
			return fmt.Errorf("RST_STREAM %v", f.ErrCode)
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			return nil // END_STREAM has the same bit on HEADERS and DATA
		}
	}
}

// cmdWaitPort waits until every address accepts a TCP connection.
func cmdWaitPort(args []string) error {
	fs := flag.NewFlagSet("waitport", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for _, addr := range fs.Args() {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %w", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}
