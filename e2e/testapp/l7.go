package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

func init() {
	moreCmds["headers"] = serveHeaders
	moreCmds["h2c-xnet"] = serveH2CXNet
	moreCmds["ws-check"] = wsCheck
	moreUsage += `
L7 servers and clients:
  headers   -listen ADDR    HTTP/1.1 and h2c; answers with the request's method, path,
                            protocol and headers; GET /seen lists every path it served
  h2c-xnet  -listen ADDR    HTTP/2 only, prior knowledge: golang.org/x/net/http2's
                            Server.ServeConn on each accepted connection (for h2spec)
  ws-check  -url ws://HOST:PORT/ [-big N] [-pings N]
                            text, binary, one N-byte message, then pings, against the ws server
`
}

// HeaderEcho is the headers server's answer.
type HeaderEcho struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Proto   string              `json:"proto"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
}

// SeenPaths is the headers server's answer to GET /seen.
type SeenPaths struct {
	Paths []string `json:"paths"`
}

func serveHeaders(args []string) error {
	ln, err := listen(args, "headers", nil)
	if err != nil {
		return err
	}
	var (
		mu   sync.Mutex
		seen []string
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/seen" {
			mu.Lock()
			b, _ := json.Marshal(SeenPaths{Paths: append([]string{}, seen...)})
			mu.Unlock()
			_, _ = w.Write(b)
			return
		}
		mu.Lock()
		if len(seen) < 1<<16 {
			seen = append(seen, r.URL.Path)
		}
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		_ = json.NewEncoder(w).Encode(HeaderEcho{
			Method: r.Method, Path: r.URL.Path, Proto: r.Proto, Host: r.Host, Headers: r.Header,
		})
	})
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// serveH2CXNet serves HTTP/2 with prior knowledge from golang.org/x/net/http2 itself:
// http2.Server.ServeConn on each accepted connection, which reads the client preface
// itself (nothing is read before it). It is the plain x/net/http2 server that h2spec
// results through skiff are compared with. (golang.org/x/net/http2/h2c would do the
// same behind an HTTP/1 server, but is deprecated in favour of net/http's
// Protocols.SetUnencryptedHTTP2, which is not x/net/http2.)
func serveH2CXNet(args []string) error {
	ln, err := listen(args, "h2c-xnet", nil)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from x/net/http2\n")
	})
	h2 := &http2.Server{IdleTimeout: connTimeout}
	base := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return acceptLoop(ln, func(c *net.TCPConn) {
		h2.ServeConn(c, &http2.ServeConnOpts{Handler: h, BaseConfig: base})
	})
}

// WSCheckResult is ws-check's result.
type WSCheckResult struct {
	Result
	Messages  int     `json:"messages"`
	Bytes     int     `json:"bytes"`
	BigBytes  int     `json:"big_bytes"`
	Pongs     int     `json:"pongs"`
	PingMaxMS float64 `json:"ping_max_ms"`
	Closed    bool    `json:"closed"` // the close handshake completed
}

func wsCheck(args []string) error {
	var (
		url        string
		big, pings int
	)
	if err := clientFlags("ws-check", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "ws:// URL of the echo server")
		fs.IntVar(&big, "big", 4<<20, "size of the large binary message")
		fs.IntVar(&pings, "pings", 5, "pings to send (each must be answered by a pong)")
	}); err != nil {
		return err
	}
	res := WSCheckResult{}
	if err := wsCheckExchange(url, big, pings, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	emit(res)
	return nil
}

func wsCheckExchange(url string, big, pings int, res *WSCheckResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake answered %d, want 101", resp.StatusCode)
	}
	c.SetReadLimit(int64(big) + 1)
	large := make([]byte, big)
	_, _ = rand.NewChaCha8([32]byte{'w', 's', 'b', 'i', 'g'}).Read(large)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("text through skiff")},
		{websocket.MessageText, []byte(strings.Repeat("ünïcødé ☺ 😈 ", 100))},
		{websocket.MessageBinary, all},
		{websocket.MessageBinary, large},
		{websocket.MessageText, []byte("after the large one")},
	}
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			return fmt.Errorf("writing message %d (%v, %d bytes): %w", i, m.typ, len(m.data), err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("reading echo of message %d (%v, %d bytes): %w", i, m.typ, len(m.data), err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			return fmt.Errorf("echo of message %d: got %v of %d bytes, sent %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
		}
		res.Messages++
		res.Bytes += len(got)
		if len(got) == big {
			res.BigBytes = len(got)
		}
	}
	// A pong is read by whoever reads the connection: a reader must run while pinging.
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				readErr <- err
				return
			}
		}
	}()
	for i := 0; i < pings; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		err := c.Ping(pctx)
		pcancel()
		if err != nil {
			return fmt.Errorf("ping %d: no pong: %w", i, err)
		}
		res.Pongs++
		res.PingMaxMS = max(res.PingMaxMS, float64(time.Since(start).Microseconds())/1000)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		return fmt.Errorf("close handshake: %w", err)
	}
	res.Closed = true
	select {
	case err := <-readErr:
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("after close: reader ended with %w", err)
		}
	case <-time.After(5 * time.Second):
		return errors.New("the reader did not end after the close handshake")
	}
	return nil
}
