package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func init() {
	moreCmds["interop-server"] = serveInterop
	moreCmds["interop-client"] = interopClient
	moreUsage += `
grpc-go interop (google.golang.org/grpc/interop):
  interop-server -listen ADDR                 interop.NewTestServer as grpc.testing.TestService
  interop-client -addr HOST:PORT [-cases a,b] [-timeout D]
                 runs interop test cases on one connection; result lists each case
                 (cases: ` + strings.Join(interopCaseNames(), ",") + `)
`
}

func serveInterop(args []string) error {
	ln, err := listen(args, "interop-server", nil)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	return s.Serve(ln)
}

// interopCases are the grpc-go interop client's test cases this client runs, by the
// names of the interop test descriptions (grpc/grpc doc/interop-test-descriptions.md).
var interopCases = map[string]func(ctx context.Context, cc *grpc.ClientConn){
	"empty_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"large_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"client_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"server_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"ping_pong": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"empty_stream": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_begin": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_first_response": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"timeout_on_sleeping_server": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"status_code_and_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"special_status_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"custom_metadata": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"unimplemented_method": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedMethod(ctx, cc)
	},
	"unimplemented_service": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	},
}

func interopCaseNames() []string {
	// In the order of the interop test descriptions.
	return []string{"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
		"empty_stream", "cancel_after_begin", "cancel_after_first_response", "timeout_on_sleeping_server",
		"status_code_and_message", "special_status_message", "custom_metadata", "unimplemented_method",
		"unimplemented_service"}
}

// InteropCase is one case's outcome.
type InteropCase struct {
	Name  string  `json:"name"`
	OK    bool    `json:"ok"`
	Error string  `json:"error,omitempty"`
	MS    float64 `json:"ms"`
}

// InteropResult is interop-client's result: ok only when every case passed.
type InteropResult struct {
	Result
	Passed int           `json:"passed"`
	Failed int           `json:"failed"`
	Cases  []InteropCase `json:"cases"`
}

// caseFailure is how a failed check inside the interop package reaches this client: its
// Do… functions report failures with grpclog's Fatal, which would exit the process; the
// logger installed here panics with this instead, and the case's runner recovers it.
type caseFailure struct{ msg string }

// failLogger is a grpclog.LoggerV2 that turns Fatal into a caseFailure panic, writes
// errors to stderr and drops the rest.
type failLogger struct{}

func (failLogger) Info(...any)             {}
func (failLogger) Infoln(...any)           {}
func (failLogger) Infof(string, ...any)    {}
func (failLogger) Warning(...any)          {}
func (failLogger) Warningln(...any)        {}
func (failLogger) Warningf(string, ...any) {}
func (failLogger) Error(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"grpc error:"}, args...)...)
}
func (failLogger) Errorln(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"grpc error:"}, args...)...)
}
func (failLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "grpc error: "+format+"\n", args...)
}
func (failLogger) Fatal(args ...any) { panic(caseFailure{fmt.Sprint(args...)}) }
func (failLogger) Fatalln(args ...any) {
	panic(caseFailure{strings.TrimSuffix(fmt.Sprintln(args...), "\n")})
}
func (failLogger) Fatalf(format string, args ...any) {
	panic(caseFailure{fmt.Sprintf(format, args...)})
}
func (failLogger) V(int) bool { return false }

func interopClient(args []string) error {
	var (
		addr, cases string
		timeout     time.Duration
	)
	if err := clientFlags("interop-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "server address")
		fs.StringVar(&cases, "cases", strings.Join(interopCaseNames(), ","), "comma-separated test cases")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "deadline of each case")
	}); err != nil {
		return err
	}
	var names []string
	for _, n := range strings.Split(cases, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if interopCases[n] == nil {
			return fmt.Errorf("unknown interop case %q (known: %s)", n, strings.Join(interopCaseNames(), ","))
		}
		names = append(names, n)
	}
	// Before any other gRPC call, as grpclog asks.
	grpclog.SetLoggerV2(failLogger{})
	res := InteropResult{}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	for _, n := range names {
		c := runInteropCase(n, cc, timeout)
		if c.OK {
			res.Passed++
		} else {
			res.Failed++
		}
		res.Cases = append(res.Cases, c)
	}
	res.OK = res.Failed == 0 && res.Passed > 0
	if !res.OK {
		res.Error = fmt.Sprintf("%d of %d interop cases failed", res.Failed, len(names))
		res.ErrorKind = "other"
	}
	emit(res)
	return nil
}

func runInteropCase(name string, cc *grpc.ClientConn, timeout time.Duration) (c InteropCase) {
	c.Name = name
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	defer func() {
		c.MS = float64(time.Since(start).Microseconds()) / 1000
		if v := recover(); v != nil {
			c.OK = false
			if f, ok := v.(caseFailure); ok {
				c.Error = f.msg
			} else {
				c.Error = fmt.Sprint("panic: ", v)
			}
		}
	}()
	interopCases[name](ctx, cc)
	c.OK = true
	return c
}
