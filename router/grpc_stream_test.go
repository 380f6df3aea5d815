package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// echoService answers every FullDuplexCall message with its payload, at once: the
// interop server only answers what a request's response parameters ask for.
type echoService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echoService) FullDuplexCall(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	resp := &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{}}
	for {
		req, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp.Payload.Body = req.GetPayload().GetBody()
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

func startGRPCEcho(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, echoService{})
	go func() { _ = s.Serve(ln) }()
	tb.Cleanup(s.Stop)
	return netip.MustParseAddrPort(ln.Addr().String())
}

// echoStreams runs streams bidi streams on cc, each with window messages of size bytes
// in flight, until n messages have come back in all; it returns how long that took.
func echoStreams(tb testing.TB, cc *grpc.ClientConn, streams, window, size int, n int64) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tc := testgrpc.NewTestServiceClient(cc)
	req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}}
	var received atomic.Int64
	done := make(chan struct{})
	errc := make(chan error, 2*streams)
	start := time.Now()
	for range streams {
		st, err := tc.FullDuplexCall(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		credits := make(chan struct{}, window)
		for range window {
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
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				if received.Add(1) == n {
					close(done)
				}
				credits <- struct{}{}
			}
		}()
	}
	select {
	case <-done:
	case err := <-errc:
		tb.Fatalf("stream failed: %v", err)
	case <-time.After(time.Minute):
		tb.Fatalf("%d of %d messages echoed in a minute", received.Load(), n)
	}
	return time.Since(start)
}

// TestGRPCBidiStreamEcho: many small messages in flight both ways on several streams of
// one connection all come back, none lost or stuck behind a flush that never comes.
func TestGRPCBidiStreamEcho(t *testing.T) {
	p := startProxy(t, startGRPCEcho(t), false)
	cc := dialGRPC(t, p.addr)
	for _, c := range []struct {
		streams, window, size int
		n                     int64
	}{{1, 1, 1, 200}, {4, 64, 64, 5000}, {2, 8, 40 << 10, 200}} {
		echoStreams(t, cc, c.streams, c.window, c.size, c.n)
	}
}

// BenchmarkGRPCBidiStream is the bench's scenario 4 in one process: 4 bidi streams on
// one connection, 64 messages of 64 bytes in flight on each, echoed by the backend; one
// op is one echoed message.
func BenchmarkGRPCBidiStream(b *testing.B) {
	be := startGRPCEcho(b)
	for _, v := range []struct {
		name  string
		proxy bool
	}{{"direct", false}, {"proxy", true}} {
		b.Run(v.name, func(b *testing.B) {
			addr := be.String()
			if v.proxy {
				addr = startProxy(b, be, false).addr
			}
			cc := dialGRPC(b, addr)
			echoStreams(b, cc, 4, 64, 64, 1000) // connections, pools, windows
			b.ReportAllocs()
			b.ResetTimer()
			d := echoStreams(b, cc, 4, 64, 64, int64(b.N))
			b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
		})
	}
}
