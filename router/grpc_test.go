package router

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The interop client functions report a failed check with grpclog's Fatal, which would
// exit the test binary. This logger turns the Fatal into a panic that runInterop recovers
// as a test failure. It is set before any test runs, as grpclog asks.
func init() { grpclog.SetLoggerV2(interopLogger{}) }

type interopFailure string

type interopLogger struct{}

func (interopLogger) Info(...any)             {}
func (interopLogger) Infoln(...any)           {}
func (interopLogger) Infof(string, ...any)    {}
func (interopLogger) Warning(...any)          {}
func (interopLogger) Warningln(...any)        {}
func (interopLogger) Warningf(string, ...any) {}
func (interopLogger) Error(...any)            {}
func (interopLogger) Errorln(...any)          {}
func (interopLogger) Errorf(string, ...any)   {}
func (interopLogger) Fatal(args ...any)       { panic(interopFailure(fmt.Sprint(args...))) }
func (interopLogger) Fatalln(args ...any)     { panic(interopFailure(fmt.Sprintln(args...))) }
func (interopLogger) Fatalf(format string, a ...any) {
	panic(interopFailure(fmt.Sprintf(format, a...)))
}
func (interopLogger) V(int) bool { return false }

func runInterop(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if msg, ok := r.(interopFailure); ok {
				t.Fatalf("interop check failed: %s", msg)
			}
			panic(r)
		}
	}()
	f()
}

// startGRPC runs grpc-go's interop test server.
func startGRPC(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(ln) }()
	tb.Cleanup(s.Stop)
	return netip.MustParseAddrPort(ln.Addr().String())
}

func dialGRPC(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// TestGRPCInterop runs grpc-go's interop cases through the proxy, on one client
// connection, then checks the requests were recorded as gRPC with their status.
func TestGRPCInterop(t *testing.T) {
	dst := startGRPC(t)
	p := startProxy(t, dst, false)
	cc := dialGRPC(t, p.addr)
	tc := testgrpc.NewTestServiceClient(cc)

	for _, c := range []struct {
		name string
		run  func(ctx context.Context)
	}{
		{"empty_unary", func(ctx context.Context) { interop.DoEmptyUnaryCall(ctx, tc) }},
		{"large_unary", func(ctx context.Context) { interop.DoLargeUnaryCall(ctx, tc) }},
		{"client_streaming", func(ctx context.Context) { interop.DoClientStreaming(ctx, tc) }},
		{"server_streaming", func(ctx context.Context) { interop.DoServerStreaming(ctx, tc) }},
		{"ping_pong", func(ctx context.Context) { interop.DoPingPong(ctx, tc) }},
		{"empty_stream", func(ctx context.Context) { interop.DoEmptyStream(ctx, tc) }},
		{"cancel_after_begin", func(ctx context.Context) { interop.DoCancelAfterBegin(ctx, tc) }},
		{"cancel_after_first_response", func(ctx context.Context) { interop.DoCancelAfterFirstResponse(ctx, tc) }},
		{"timeout_on_sleeping_server", func(ctx context.Context) { interop.DoTimeoutOnSleepingServer(ctx, tc) }},
		{"status_code_and_message", func(ctx context.Context) { interop.DoStatusCodeAndMessage(ctx, tc) }},
		{"special_status_message", func(ctx context.Context) { interop.DoSpecialStatusMessage(ctx, tc) }},
		{"custom_metadata", func(ctx context.Context) { interop.DoCustomMetadata(ctx, tc) }},
		{"unimplemented_method", func(ctx context.Context) { interop.DoUnimplementedMethod(ctx, cc) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			runInterop(t, func() { c.run(ctx) })
		})
	}
	if d := p.accepted.Load(); d != 1 {
		t.Errorf("%d downstream connections, want 1 (one ClientConn)", d)
	}

	// Every call is recorded as request_protocol="grpc" with its grpc-status: 15 calls
	// (status_code_and_message and custom_metadata make two each), 8 OK, 3 UNKNOWN (2)
	// from the status cases, 1 UNIMPLEMENTED (12). The 3 the client cancelled have no
	// status (or 4, below); 499 if the client went away before the response began.
	byStatus := map[string]float64{}
	var total float64
	for _, s := range requestSamples(t, p.metrics, "skiff_requests_total") {
		code, status := s.labels["response_code"], s.labels["grpc_response_status"]
		if s.labels["request_protocol"] != "grpc" || (code != "200" && !(code == "499" && status == "")) {
			t.Errorf("unexpected sample %v = %v", s.labels, s.value)
		}
		byStatus[status] += s.value
		total += s.value
	}
	// timeout_on_sleeping_server races: the server may send DEADLINE_EXCEEDED (4) in its
	// trailers before the client's cancel reaches the proxy. Counted as cancelled then.
	byStatus[""] += byStatus["4"]
	delete(byStatus, "4")
	want := map[string]float64{"0": 8, "2": 3, "12": 1, "": 3}
	if total != 15 || fmt.Sprint(byStatus) != fmt.Sprint(want) {
		t.Errorf("%v gRPC requests recorded by grpc_response_status %v, want 15: %v", total, byStatus, want)
	}
}
