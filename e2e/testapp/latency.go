package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func init() {
	moreCmds["latency"] = latencyClient
	moreUsage += `
latency:
  latency -kind http1|grpc -a TARGET -b TARGET [-n N] [-warmup N]
          N sequential requests to each of two targets, alternating between them, each
          target on one kept-alive connection: http1 GETs a URL over HTTP/1.1, grpc makes
          EmptyCall (interop-server) at HOST:PORT; reports p50/p99 of each
`
}

// LatencyStats are one target's numbers, in microseconds.
type LatencyStats struct {
	N     int     `json:"n"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
	Conns int64   `json:"conns"` // connections dialled: 1 when kept alive throughout
}

// LatencyResult is latency's result.
type LatencyResult struct {
	Result
	A LatencyStats `json:"a"`
	B LatencyStats `json:"b"`
}

func latencyClient(args []string) error {
	var (
		kind, a, b string
		n, warmup  int
	)
	if err := clientFlags("latency", args, func(fs *flag.FlagSet) {
		fs.StringVar(&kind, "kind", "http1", "http1 or grpc")
		fs.StringVar(&a, "a", "", "first target (URL for http1, HOST:PORT for grpc)")
		fs.StringVar(&b, "b", "", "second target")
		fs.IntVar(&n, "n", 2000, "measured requests per target")
		fs.IntVar(&warmup, "warmup", 50, "unmeasured requests per target first")
	}); err != nil {
		return err
	}
	var mk func(target string, conns *atomic.Int64) (func(context.Context) error, func(), error)
	switch kind {
	case "http1":
		mk = http1Caller
	case "grpc":
		mk = grpcCaller
	default:
		return fmt.Errorf("-kind %q: want http1 or grpc", kind)
	}
	res := LatencyResult{}
	if err := measure(mk, a, b, n, warmup, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	emit(res)
	return nil
}

// measure alternates requests between a and b (which goes first alternates too), so that
// both see the same machine: on a shared box, load comes and goes.
func measure(mk func(string, *atomic.Int64) (func(context.Context) error, func(), error), a, b string, n, warmup int, res *LatencyResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var conns [2]atomic.Int64
	var calls [2]func(context.Context) error
	for i, target := range []string{a, b} {
		call, closeFn, err := mk(target, &conns[i])
		if err != nil {
			return err
		}
		defer closeFn()
		calls[i] = call
	}
	durs := [2][]time.Duration{make([]time.Duration, 0, n), make([]time.Duration, 0, n)}
	for i := 0; i < warmup+n; i++ {
		for k := range 2 {
			j := (i + k) % 2
			start := time.Now()
			if err := calls[j](ctx); err != nil {
				return fmt.Errorf("request %d to %s: %w", i, []string{a, b}[j], err)
			}
			if i >= warmup {
				durs[j] = append(durs[j], time.Since(start))
			}
		}
	}
	res.A, res.B = stats(durs[0], conns[0].Load()), stats(durs[1], conns[1].Load())
	return nil
}

func stats(d []time.Duration, conns int64) LatencyStats {
	slices.Sort(d)
	q := func(p float64) float64 {
		i := int(float64(len(d))*p+0.999999) - 1
		i = min(max(i, 0), len(d)-1)
		return float64(d[i].Nanoseconds()) / 1000
	}
	return LatencyStats{N: len(d), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: q(1), Conns: conns}
}

func http1Caller(url string, conns *atomic.Int64) (func(context.Context) error, func(), error) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	tr := &http.Transport{
		Protocols:           p,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conns.Add(1)
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	call := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body) // read to the end: the connection is reused
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			return fmt.Errorf("answered %s over %s, want 200 over HTTP/1.1", resp.Status, resp.Proto)
		}
		return nil
	}
	return call, tr.CloseIdleConnections, nil
}

func grpcCaller(addr string, conns *atomic.Int64) (func(context.Context) error, func(), error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			conns.Add(1)
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", a)
		}))
	if err != nil {
		return nil, nil, err
	}
	tc := testgrpc.NewTestServiceClient(cc)
	call := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := tc.EmptyCall(ctx, &testpb.Empty{})
		if err != nil {
			return errors.Join(errors.New("EmptyCall"), err)
		}
		return nil
	}
	return call, func() { _ = cc.Close() }, nil
}
