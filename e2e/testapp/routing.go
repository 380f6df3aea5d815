package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func init() {
	moreCmds["route-count"] = routeCount
	moreCmds["route-watch"] = routeWatch
	moreCmds["route-load"] = routeLoad
	moreUsage += `
routing (against http servers started with -name, grpc servers with -name):
  route-count -url URL [-n N] [-conns C] [-h2c] [-H "K: V"]... [-host H]
            N GETs from C workers over C keep-alive connections (0: a new connection
            per GET; -h2c: one connection); counts the answers by server name
  route-watch -url URL -want NAME [-H "K: V"]... [-host H] [-timeout D]
            GETs, each on a new connection, until one is answered by NAME; prints
            {"event":"polling"} after the first answer, then when NAME answered
  route-load [-http URL] [-h2c URL] [-grpc HOST:PORT] [-conns N] [-streams N]
            [-jason-every K] [-duration D]
            until SIGTERM (or D): HTTP/1.1 over N keep-alive connections, h2c and gRPC
            over one connection each with N concurrent streams; every K-th HTTP
            request carries x-user: jason. Prints {"event":"loading"} once each
            protocol has had an answer; reports requests, failures, resets, dials and
            answers by server name per protocol
`
}

// headerFlags is a repeatable -H "Name: value".
type headerFlags http.Header

func (h headerFlags) String() string { return fmt.Sprint(http.Header(h)) }

func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return fmt.Errorf("header %q: want Name: value", s)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}

// dialCounter counts the TCP connections a client makes: more than it needs means the
// other side closed some under it.
type dialCounter struct{ n atomic.Int64 }

func (d *dialCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
}

// httpClient is an HTTP/1.1 client with up to conns keep-alive connections (none when
// conns is 0), or an h2c client on one connection.
func httpClient(conns int, h2c bool, d *dialCounter) *http.Client {
	t := &http.Transport{DialContext: d.dial, MaxIdleConnsPerHost: max(conns, 1), MaxConnsPerHost: conns}
	if conns == 0 {
		t.DisableKeepAlives = true
	}
	if h2c {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		t.Protocols = p
		t.MaxConnsPerHost = 1 // every stream on one connection, as an h2 client should
	}
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// getName makes one GET and returns the name the http server answered with.
func getName(c *http.Client, url, host string, hdr http.Header) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	var e HTTPEcho
	if err := json.Unmarshal(body, &e); err != nil {
		return "", fmt.Errorf("GET %s: answer %.200q: %w", url, body, err)
	}
	return e.Name, nil
}

// RouteCountResult is route-count's result.
type RouteCountResult struct {
	Result
	Counts   map[string]int `json:"counts"`
	Failures int            `json:"failures"`
	Errors   []string       `json:"errors,omitempty"`
	Dials    int64          `json:"dials"`
}

func routeCount(args []string) error {
	var (
		url, host string
		n, conns  int
		h2c       bool
		hdr       = headerFlags{}
	)
	if err := clientFlags("route-count", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "URL to GET")
		fs.IntVar(&n, "n", 1000, "requests")
		fs.IntVar(&conns, "conns", 4, "keep-alive connections (0: a new connection per request)")
		fs.BoolVar(&h2c, "h2c", false, "HTTP/2 with prior knowledge, one connection")
		fs.Var(hdr, "H", `request header "Name: value" (repeatable)`)
		fs.StringVar(&host, "host", "", "Host header")
	}); err != nil {
		return err
	}
	var d dialCounter
	c := httpClient(conns, h2c, &d)
	res := RouteCountResult{Counts: map[string]int{}}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		left atomic.Int64
	)
	left.Store(int64(n))
	for range max(conns, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				name, err := getName(c, url, host, http.Header(hdr))
				mu.Lock()
				if err != nil {
					res.Failures++
					if len(res.Errors) < 10 {
						res.Errors = append(res.Errors, err.Error())
					}
				} else {
					res.Counts[name]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Dials = d.n.Load()
	res.OK = res.Failures == 0
	emit(res)
	return nil
}

// RouteWatchResult is route-watch's result.
type RouteWatchResult struct {
	Result
	First    string   `json:"first"` // the name that answered first
	Requests int      `json:"requests"`
	Failures int      `json:"failures"`
	Errors   []string `json:"errors,omitempty"`
	// SwitchedUnixNS is when the first answer from the wanted name arrived.
	SwitchedUnixNS int64 `json:"switched_unix_ns"`
}

func routeWatch(args []string) error {
	var (
		url, want, host string
		timeout         time.Duration
		hdr             = headerFlags{}
	)
	if err := clientFlags("route-watch", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "URL to GET")
		fs.StringVar(&want, "want", "", "server name to wait for")
		fs.Var(hdr, "H", `request header "Name: value" (repeatable)`)
		fs.StringVar(&host, "host", "", "Host header")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for it")
	}); err != nil {
		return err
	}
	c := httpClient(0, false, &dialCounter{})
	res := RouteWatchResult{}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		name, err := getName(c, url, host, http.Header(hdr))
		res.Requests++
		if err != nil {
			res.Failures++
			if len(res.Errors) < 10 {
				res.Errors = append(res.Errors, err.Error())
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if res.First == "" {
			res.First = name
			emit(map[string]string{"event": "polling", "name": name})
		}
		if name == want {
			res.SwitchedUnixNS = time.Now().UnixNano()
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if res.SwitchedUnixNS == 0 {
		res.fail(fmt.Errorf("no answer from %q within %v", want, timeout))
	} else {
		res.OK = res.Failures == 0
	}
	emit(res)
	return nil
}

// LoadStats is one protocol's part of route-load's result.
type LoadStats struct {
	Requests int64            `json:"requests"`
	Failures int64            `json:"failures"`
	Resets   int64            `json:"resets"`
	Dials    int64            `json:"dials"`
	Names    map[string]int64 `json:"names"`
}

// RouteLoadResult is route-load's result.
type RouteLoadResult struct {
	Result
	HTTP1  *LoadStats `json:"http1,omitempty"`
	H2C    *LoadStats `json:"h2c,omitempty"`
	GRPC   *LoadStats `json:"grpc,omitempty"`
	Errors []string   `json:"errors,omitempty"` // the first few
}

type loadProto struct {
	stats LoadStats
	dials dialCounter
	mu    sync.Mutex
	ok    chan struct{} // closed at the first answer
	once  sync.Once
}

func routeLoad(args []string) error {
	var (
		httpURL, h2cURL, grpcAddr string
		conns, streams, jason     int
		dur                       time.Duration
	)
	if err := clientFlags("route-load", args, func(fs *flag.FlagSet) {
		fs.StringVar(&httpURL, "http", "", "URL for HTTP/1.1 GETs")
		fs.StringVar(&h2cURL, "h2c", "", "URL for h2c GETs")
		fs.StringVar(&grpcAddr, "grpc", "", "address of a grpc server")
		fs.IntVar(&conns, "conns", 4, "HTTP/1.1 keep-alive connections")
		fs.IntVar(&streams, "streams", 4, "concurrent streams on the h2c and the gRPC connection")
		fs.IntVar(&jason, "jason-every", 3, "every K-th HTTP request carries x-user: jason (0: none)")
		fs.DurationVar(&dur, "duration", 5*time.Minute, "stop after this long even without SIGTERM")
	}); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	ctx, cancelDur := context.WithTimeout(ctx, dur)
	defer cancelDur()

	var (
		res   RouteLoadResult
		errMu sync.Mutex
		wg    sync.WaitGroup
		all   []*loadProto
	)
	newProto := func() *loadProto {
		p := &loadProto{stats: LoadStats{Names: map[string]int64{}}, ok: make(chan struct{})}
		all = append(all, p)
		return p
	}
	record := func(p *loadProto, name string, err error) {
		p.mu.Lock()
		p.stats.Requests++
		if err != nil {
			p.stats.Failures++
			if errKind(err) == "reset" || strings.Contains(err.Error(), "connection reset") {
				p.stats.Resets++
			}
		} else {
			p.stats.Names[name]++
		}
		p.mu.Unlock()
		if err != nil {
			errMu.Lock()
			if len(res.Errors) < 10 {
				res.Errors = append(res.Errors, err.Error())
			}
			errMu.Unlock()
			return
		}
		p.once.Do(func() { close(p.ok) })
	}
	// Each worker finishes the request it has started: the load stops between requests,
	// so stopping is never a failure.
	httpWorkers := func(p *loadProto, c *http.Client, url string, n int) {
		for w := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; ctx.Err() == nil; i += n {
					hdr := http.Header{}
					if jason > 0 && i%jason == 0 {
						hdr.Set("x-user", "jason")
					}
					name, err := getName(c, url, "", hdr)
					record(p, name, err)
				}
			}()
		}
	}
	if httpURL != "" {
		p := newProto()
		res.HTTP1 = &p.stats
		httpWorkers(p, httpClient(conns, false, &p.dials), httpURL, conns)
	}
	if h2cURL != "" {
		p := newProto()
		res.H2C = &p.stats
		httpWorkers(p, httpClient(1, true, &p.dials), h2cURL, streams)
	}
	if grpcAddr != "" {
		p := newProto()
		res.GRPC = &p.stats
		cc, err := grpc.NewClient("passthrough:///"+grpcAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return p.dials.dial(ctx, "tcp", addr)
			}))
		if err != nil {
			return err
		}
		defer cc.Close()
		client := testpb.NewTestServiceClient(cc)
		body := payload(512)
		for range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
					r, err := client.UnaryCall(cctx, &testpb.SimpleRequest{ResponseSize: 512, Payload: &testpb.Payload{Body: body}})
					ccancel()
					if err == nil && len(r.GetPayload().GetBody()) != 512 {
						err = fmt.Errorf("UnaryCall: %d bytes back, asked for 512", len(r.GetPayload().GetBody()))
					}
					if err != nil {
						err = fmt.Errorf("gRPC UnaryCall: %w", err)
					}
					record(p, r.GetHostname(), err)
				}
			}()
		}
	}
	go func() {
		for _, p := range all {
			select {
			case <-p.ok:
			case <-ctx.Done():
				return
			}
		}
		emit(map[string]string{"event": "loading"})
	}()
	wg.Wait()
	for _, p := range all {
		p.stats.Dials = p.dials.n.Load()
	}
	res.OK = true
	for _, p := range all {
		if p.stats.Failures > 0 || p.stats.Requests == 0 {
			res.OK = false
		}
	}
	if !res.OK && len(res.Errors) == 0 {
		res.fail(errors.New("a protocol made no request"))
	}
	emit(res)
	return nil
}
