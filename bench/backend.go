package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
)

// The backend's ports. The same numbers are used by every variant: the proxies listen on
// 10000+port (HAProxy) and 20000+port (nginx) in the client namespace.
const (
	portHTTP       = 8080 // HTTP/1.1 + h2c, 1 KiB body; /ws is a WebSocket echo
	portHTTPPinned = 8088 // the same server, pinned to http in skiff's sniff.ports
	portGRPC       = 9090 // grpc.testing.TestService + reflection
	portClose      = 7000 // accepts and closes at once (connections per second)
	portClosePin   = 7002 // the same, pinned to tcp in skiff's sniff.ports
	portEcho       = 7001 // echoes bytes back and otherwise holds the connection (idle test)
	portIperf      = 5201 // iperf3 -s (a separate process)
)

// body is the 1 KiB response every HTTP request gets.
var body = bytes.Repeat([]byte("skiff-bench-1KiB"), 64)

func cmdBackend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	errc := make(chan error, 8)

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		_, _ = w.Write(body)
	})
	// The WebSocket echo: every message read is written back as one message.
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}))
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	for _, port := range []int{portHTTP, portHTTPPinned} {
		srv := &http.Server{
			Addr:              fmt.Sprintf(":%d", port),
			Handler:           mux,
			Protocols:         protocols,
			ReadHeaderTimeout: 30 * time.Second,
			HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
		}
		go func() { errc <- srv.ListenAndServe() }()
	}

	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1000))
	testpb.RegisterTestServiceServer(gs, &testService{})
	reflection.Register(gs)
	gln, err := net.Listen("tcp", fmt.Sprintf(":%d", portGRPC))
	if err != nil {
		return err
	}
	go func() { errc <- gs.Serve(gln) }()

	for _, port := range []int{portClose, portClosePin} {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		go func() { errc <- serveAcceptClose(ln) }()
	}
	eln, err := net.Listen("tcp", fmt.Sprintf(":%d", portEcho))
	if err != nil {
		return err
	}
	go func() { errc <- serveEcho(eln) }()

	fmt.Println("backend ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-errc:
		return err
	}
}

// serveAcceptClose closes every connection as soon as it is accepted: the server sends
// FIN first, so the TIME_WAIT state stays on this side and the client's ports recycle.
func serveAcceptClose(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if isTemporary(err) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		_ = c.Close()
	}
}

// serveEcho echoes whatever a connection sends; a silent connection is simply held.
func serveEcho(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if isTemporary(err) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || strings.Contains(err.Error(), "too many open files")
}

// testService implements the two grpc.testing.TestService calls the benchmark uses.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

// UnaryCall answers with a payload of the requested size (as the interop server does).
func (testService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := int(req.GetResponseSize())
	if n > len(grpcPayload) {
		n = len(grpcPayload)
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: grpcPayload[:n]}}, nil
}

// FullDuplexCall echoes every request's payload back as one response.
func (testService) FullDuplexCall(st grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	resp := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{}}
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

var grpcPayload = bytes.Repeat([]byte{'g'}, 64<<10)
