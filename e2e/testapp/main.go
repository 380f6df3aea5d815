// Command testapp is the workload of skiff's end-to-end suite: the servers and clients it
// runs inside network namespaces, one subcommand each.
//
// Servers print one JSON line, {"listening":"<addr>"}, once they accept connections, and
// serve until killed. Clients print one JSON result line and exit 0 whether or not what
// they tried worked: the result says what happened (error_kind is refused, reset, eof,
// timeout or other), so the test can tell a reset from a clean close. A non-zero exit
// means bad usage or a broken test app, never an outcome under test.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

const usage = `usage: testapp <command> [flags]

servers (print {"listening":addr}, then serve until killed):
  http    -listen ADDR    HTTP/1.1 and h2c (prior knowledge) on one port; echoes the request
                          (-name N: answers carry "name":N, to tell backends apart)
  grpc    -listen ADDR    grpc.testing.TestService: UnaryCall, StreamingOutputCall
                          (-name N: the hostname in UnaryCall answers)
  ws      -listen ADDR    WebSocket echo
  echo    -listen ADDR    raw TCP echo, half-close passed on
  sink    -listen ADDR    reads to EOF, replies {"bytes":N,"sha256":H}, closes
  banner  -listen ADDR    server-first: sends a greeting on accept, then echoes lines
                          (-name N: the greeting is "220 N ESMTP")
  reset   -listen ADDR    accepts, reads for -wait, then resets (SO_LINGER 0), or closes with -fin

clients (print one JSON result line):
  grpc-client   -addr HOST:PORT
  ws-client     -url ws://HOST:PORT/
  echo-client   -addr HOST:PORT -bytes N [-timeout D]
  send          -addr HOST:PORT -bytes N [-rate B/s] [-progress N] [-timeout D]
  banner-client -addr HOST:PORT
  probe         -addr HOST:PORT [-send S] [-wait D] [-hold]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage+moreUsage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	cmds := map[string]func([]string) error{
		"http": serveHTTP, "grpc": serveGRPC, "ws": serveWS, "echo": serveEcho,
		"sink": serveSink, "banner": serveBanner, "reset": serveReset,
		"grpc-client": grpcClient, "ws-client": wsClient, "echo-client": echoClient,
		"send": sendClient, "banner-client": bannerClient, "probe": probeClient,
	}
	for name, f := range moreCmds {
		cmds[name] = f
	}
	f, ok := cmds[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "testapp: unknown command %q\n\n%s", cmd, usage+moreUsage)
		os.Exit(2)
	}
	if err := f(args); err != nil {
		fmt.Fprintf(os.Stderr, "testapp %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// moreCmds are the subcommands other files of this command add in their init, with
// their usage lines in moreUsage: a new kind of server or client is a new file.
var (
	moreCmds  = map[string]func([]string) error{}
	moreUsage string
)

// out serialises JSON lines on stdout: a client's progress events and its result, a
// server's listening line.
var outMu sync.Mutex

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// Result is what every client prints last.
type Result struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"`
}

func (r *Result) fail(err error) {
	r.OK = false
	r.Error = err.Error()
	r.ErrorKind = errKind(err)
}

// errKind names how a connection failed, as the test asserts it.
func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// EPIPE on TCP: the peer reset the connection and this side wrote after.
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

func listen(args []string, name string, extra func(*flag.FlagSet)) (net.Listener, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("listen", ":0", "address to listen on")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return nil, err
	}
	emit(map[string]string{"listening": ln.Addr().String()})
	return ln, nil
}

// acceptLoop serves each connection of ln in its own goroutine until ln fails.
func acceptLoop(ln net.Listener, serve func(*net.TCPConn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			serve(c.(*net.TCPConn))
		}()
	}
}

// connTimeout bounds every connection a server or client holds, so nothing in the suite
// can wait for ever.
const connTimeout = 2 * time.Minute

// ---- servers ----

// HTTPEcho is the http server's answer: what it saw of the request.
type HTTPEcho struct {
	Method     string `json:"method"`
	Path       string `json:"path"`
	Proto      string `json:"proto"`
	Host       string `json:"host"`
	BodyLen    int64  `json:"body_len"`
	BodySHA256 string `json:"body_sha256"`
	Name       string `json:"name,omitempty"` // the server's -name
}

func serveHTTP(args []string) error {
	var name string
	ln, err := listen(args, "http", func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "", "name to answer with, to tell backends apart")
	})
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, err := io.Copy(sum, r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(HTTPEcho{
			Method: r.Method, Path: r.URL.Path, Proto: r.Proto, Host: r.Host,
			BodyLen: n, BodySHA256: hex.EncodeToString(sum.Sum(nil)), Name: name,
		})
	})
	// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, from net/http
	// itself: golang.org/x/net/http2/h2c is deprecated in favour of this field.
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

type testService struct {
	testpb.UnimplementedTestServiceServer
	name string // the hostname UnaryCall answers with
}

// payload returns n bytes that depend on n and their position, so a client can check
// them without being sent the expected bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + n)
	}
	return b
}

func (s testService) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	sum := sha256.Sum256(req.GetPayload().GetBody())
	return &testpb.SimpleResponse{
		Payload:  &testpb.Payload{Body: payload(int(req.GetResponseSize()))},
		ServerId: hex.EncodeToString(sum[:]), // lets the client check its request arrived intact
		Hostname: s.name,
	}, nil
}

func (testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if d := time.Duration(p.GetIntervalUs()) * time.Microsecond; d > 0 {
			time.Sleep(d)
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: payload(int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	return nil
}

func serveGRPC(args []string) error {
	name := "skiff-e2e"
	ln, err := listen(args, "grpc", func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", name, "hostname to answer UnaryCall with, to tell backends apart")
	})
	if err != nil {
		return err
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	testpb.RegisterTestServiceServer(s, testService{name: name})
	return s.Serve(ln)
}

func serveWS(args []string) error {
	ln, err := listen(args, "ws", nil)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the request
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		ctx, cancel := context.WithTimeout(r.Context(), connTimeout)
		defer cancel()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return // the client closed (normal) or went away
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

func serveEcho(args []string) error {
	ln, err := listen(args, "echo", nil)
	if err != nil {
		return err
	}
	return acceptLoop(ln, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(connTimeout))
		if _, err := io.Copy(c, c); err != nil {
			return
		}
		_ = c.CloseWrite() // pass the client's half-close back
		_, _ = io.Copy(io.Discard, c)
	})
}

// SinkReply is what the sink server answers after the client's half-close.
type SinkReply struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func serveSink(args []string) error {
	ln, err := listen(args, "sink", nil)
	if err != nil {
		return err
	}
	return acceptLoop(ln, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(connTimeout))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			_ = c.SetLinger(0) // a broken upload is not answered as if it were whole
			return
		}
		b, _ := json.Marshal(SinkReply{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		_, _ = c.Write(append(b, '\n'))
	})
}

// Greeting is the banner server's first line.
const Greeting = "220 skiff-e2e ESMTP\r\n"

func serveBanner(args []string) error {
	greeting := Greeting
	ln, err := listen(args, "banner", func(fs *flag.FlagSet) {
		fs.Func("name", "name in the greeting, to tell backends apart", func(n string) error {
			greeting = "220 " + n + " ESMTP\r\n"
			return nil
		})
	})
	if err != nil {
		return err
	}
	return acceptLoop(ln, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(connTimeout))
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
}

func serveReset(args []string) error {
	var (
		wait time.Duration
		fin  bool
	)
	ln, err := listen(args, "reset", func(fs *flag.FlagSet) {
		fs.DurationVar(&wait, "wait", 300*time.Millisecond, "how long to read before resetting")
		fs.BoolVar(&fin, "fin", false, "close normally (FIN) instead of resetting")
	})
	if err != nil {
		return err
	}
	return acceptLoop(ln, func(c *net.TCPConn) {
		// Read what the client sends first (if anything), so the reset is not caused by
		// unread data, then close with SO_LINGER 0: the kernel sends RST, not FIN.
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, _ = c.Read(make([]byte, 4096))
		if !fin {
			_ = c.SetLinger(0)
		}
	})
}

// ---- clients ----

func clientFlags(name string, args []string, def func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	def(fs)
	return fs.Parse(args)
}

func dial(addr string) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// GRPCResult is grpc-client's result.
type GRPCResult struct {
	Result
	UnaryBytes  int `json:"unary_bytes"`
	StreamMsgs  int `json:"stream_msgs"`
	StreamBytes int `json:"stream_bytes"`
}

func grpcClient(args []string) error {
	var addr string
	if err := clientFlags("grpc-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "server address")
	}); err != nil {
		return err
	}
	res := GRPCResult{}
	if err := grpcCalls(addr, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	emit(res)
	return nil
}

func grpcCalls(addr string, res *GRPCResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)

	body := payload(100 << 10)
	want := sha256.Sum256(body)
	ur, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 200 << 10, Payload: &testpb.Payload{Body: body}})
	if err != nil {
		return fmt.Errorf("UnaryCall: %w", err)
	}
	if ur.GetServerId() != hex.EncodeToString(want[:]) {
		return fmt.Errorf("UnaryCall: the server got a request body with sha256 %s, sent %x", ur.GetServerId(), want)
	}
	if got := ur.GetPayload().GetBody(); !bytes.Equal(got, payload(200<<10)) {
		return fmt.Errorf("UnaryCall: response payload of %d bytes is not the %d bytes asked for", len(got), 200<<10)
	}
	res.UnaryBytes = len(ur.GetPayload().GetBody())

	sizes := []int32{1, 1024, 64 << 10, 512 << 10, 7}
	req := &testpb.StreamingOutputCallRequest{}
	for _, s := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: s, IntervalUs: 2000})
	}
	stream, err := client.StreamingOutputCall(ctx, req)
	if err != nil {
		return fmt.Errorf("StreamingOutputCall: %w", err)
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("StreamingOutputCall after %d messages: %w", res.StreamMsgs, err)
		}
		if res.StreamMsgs >= len(sizes) {
			return fmt.Errorf("StreamingOutputCall: more than the %d messages asked for", len(sizes))
		}
		if want := payload(int(sizes[res.StreamMsgs])); !bytes.Equal(m.GetPayload().GetBody(), want) {
			return fmt.Errorf("StreamingOutputCall: message %d has %d bytes, not the %d expected", res.StreamMsgs, len(m.GetPayload().GetBody()), len(want))
		}
		res.StreamMsgs++
		res.StreamBytes += len(m.GetPayload().GetBody())
	}
	if res.StreamMsgs != len(sizes) {
		return fmt.Errorf("StreamingOutputCall: %d messages, want %d", res.StreamMsgs, len(sizes))
	}
	return nil
}

// WSResult is ws-client's result.
type WSResult struct {
	Result
	Messages int `json:"messages"`
	Bytes    int `json:"bytes"`
}

func wsClient(args []string) error {
	var url string
	if err := clientFlags("ws-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "ws:// URL of the echo server")
	}); err != nil {
		return err
	}
	res := WSResult{}
	if err := wsExchange(url, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	emit(res)
	return nil
}

func wsExchange(url string, res *WSResult) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(4 << 20)
	big := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{'w', 's'})
	_, _ = rng.Read(big)
	msgs := []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello through skiff")},
		{websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe, '\r', '\n'}},
		{websocket.MessageBinary, big},
		{websocket.MessageText, []byte(strings.Repeat("é", 1000))},
	}
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			return fmt.Errorf("writing message %d: %w", i, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("reading echo of message %d: %w", i, err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			return fmt.Errorf("echo of message %d: got %v of %d bytes, sent %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
		}
		res.Messages++
		res.Bytes += len(got)
	}
	return c.Close(websocket.StatusNormalClosure, "done")
}

// TransferResult is the result of echo-client and send.
type TransferResult struct {
	Result
	Bytes        int64   `json:"bytes"`
	SHA256       string  `json:"sha256"`
	RemoteBytes  int64   `json:"remote_bytes"`
	RemoteSHA256 string  `json:"remote_sha256"`
	Seconds      float64 `json:"seconds"`
	MiBPerSec    float64 `json:"mib_per_sec"`
}

// stream writes n pseudo-random bytes (seeded, so every run sends the same) to w,
// hashing them, at no more than rate bytes a second when rate > 0. After progress bytes
// it calls onProgress once.
func stream(w io.Writer, n, rate, progress int64, onProgress func(int64)) (int64, string, error) {
	rng := rand.NewChaCha8([32]byte{'s', 'k', 'i', 'f', 'f'})
	h := sha256.New()
	buf := make([]byte, 128<<10)
	if rate > 0 && rate < int64(len(buf))*8 {
		buf = buf[:max(rate/8, 1024)]
	}
	start := time.Now()
	var sent int64
	for sent < n {
		b := buf[:min(int64(len(buf)), n-sent)]
		_, _ = rng.Read(b)
		h.Write(b)
		m, err := w.Write(b)
		sent += int64(m)
		if err != nil {
			return sent, "", err
		}
		if onProgress != nil && sent >= progress {
			onProgress(sent)
			onProgress = nil
		}
		if rate > 0 {
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	return sent, hex.EncodeToString(h.Sum(nil)), nil
}

func echoClient(args []string) error {
	var (
		addr    string
		n       int64
		timeout time.Duration
	)
	if err := clientFlags("echo-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "server address")
		fs.Int64Var(&n, "bytes", 1<<20, "bytes to send")
		fs.DurationVar(&timeout, "timeout", 20*time.Second, "deadline for the whole exchange")
	}); err != nil {
		return err
	}
	res := TransferResult{}
	start := time.Now()
	if err := echoExchange(addr, n, timeout, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	finish(&res, start)
	emit(res)
	return nil
}

func echoExchange(addr string, n int64, timeout time.Duration, res *TransferResult) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	type readResult struct {
		n   int64
		sum string
		err error
	}
	back := make(chan readResult, 1)
	go func() {
		h := sha256.New()
		m, err := io.Copy(h, c) // until the server's FIN: the echo of our half-close
		back <- readResult{m, hex.EncodeToString(h.Sum(nil)), err}
	}()
	res.Bytes, res.SHA256, err = stream(c, n, 0, 0, nil)
	if err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("half-closing: %w", err)
	}
	r := <-back
	res.RemoteBytes, res.RemoteSHA256 = r.n, r.sum
	if r.err != nil {
		return fmt.Errorf("reading the echo after %d bytes: %w", r.n, r.err)
	}
	if r.n != res.Bytes || r.sum != res.SHA256 {
		return fmt.Errorf("echo differs: sent %d bytes sha256 %s, got back %d bytes sha256 %s", res.Bytes, res.SHA256, r.n, r.sum)
	}
	return nil
}

func sendClient(args []string) error {
	var (
		addr           string
		n, rate, progr int64
		timeout        time.Duration
	)
	if err := clientFlags("send", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "sink server address")
		fs.Int64Var(&n, "bytes", 8<<20, "bytes to send")
		fs.Int64Var(&rate, "rate", 0, "bytes per second at most (0: as fast as possible)")
		fs.Int64Var(&progr, "progress", 0, `print {"event":"started"} once this many bytes are sent (0: never)`)
		fs.DurationVar(&timeout, "timeout", 20*time.Second, "deadline for the whole exchange")
	}); err != nil {
		return err
	}
	res := TransferResult{}
	start := time.Now()
	if err := sendExchange(addr, n, rate, progr, timeout, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	finish(&res, start)
	emit(res)
	return nil
}

func sendExchange(addr string, n, rate, progress int64, timeout time.Duration, res *TransferResult) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	var onProgress func(int64)
	if progress > 0 {
		onProgress = func(sent int64) { emit(map[string]any{"event": "started", "sent": sent}) }
	}
	res.Bytes, res.SHA256, err = stream(c, n, rate, progress, onProgress)
	if err != nil {
		return fmt.Errorf("sending, after %d bytes: %w", res.Bytes, err)
	}
	// The half-close is what tells the sink the upload is over: if it is not passed on,
	// the sink never answers and the read below times out.
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("half-closing: %w", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading the sink's digest after half-close: %w", err)
	}
	var reply SinkReply
	if err := json.Unmarshal(line, &reply); err != nil {
		return fmt.Errorf("sink reply %q: %w", line, err)
	}
	res.RemoteBytes, res.RemoteSHA256 = reply.Bytes, reply.SHA256
	if reply.Bytes != res.Bytes || reply.SHA256 != res.SHA256 {
		return fmt.Errorf("sink got %d bytes sha256 %s, sent %d bytes sha256 %s", reply.Bytes, reply.SHA256, res.Bytes, res.SHA256)
	}
	// After its answer the sink closes: a clean EOF must follow.
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the sink's answer: want EOF, got %v", err)
	}
	return nil
}

func finish(res *TransferResult, start time.Time) {
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.MiBPerSec = float64(res.Bytes) / (1 << 20) / res.Seconds
	}
}

// BannerResult is banner-client's result.
type BannerResult struct {
	Result
	Banner   string  `json:"banner"`
	BannerMS float64 `json:"banner_ms"` // from connect() returning to the greeting's arrival
	// DialBannerMS is from before connect() to the greeting's arrival: what the app
	// waits in all, the TCP handshake included.
	DialBannerMS float64 `json:"dial_banner_ms"`
	Echo         string  `json:"echo"`
}

func bannerClient(args []string) error {
	var addr string
	if err := clientFlags("banner-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "server address")
	}); err != nil {
		return err
	}
	res := BannerResult{}
	if err := bannerExchange(addr, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	emit(res)
	return nil
}

func bannerExchange(addr string, res *BannerResult) error {
	start := time.Now()
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	connected := time.Now()
	// Say nothing: a server-first protocol waits for the greeting.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	res.Banner, err = r.ReadString('\n')
	res.BannerMS = float64(time.Since(connected).Microseconds()) / 1000
	res.DialBannerMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return fmt.Errorf("waiting for the greeting: %w", err)
	}
	if _, err := io.WriteString(c, "EHLO skiff\r\n"); err != nil {
		return fmt.Errorf("writing after the greeting: %w", err)
	}
	if res.Echo, err = r.ReadString('\n'); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	return nil
}

// ProbeResult is probe's result. Outcome is "data" when bytes came back, otherwise the
// error_kind of the connect or read that ended it.
type ProbeResult struct {
	Result
	Connected bool    `json:"connected"`
	Outcome   string  `json:"outcome"`
	Data      string  `json:"data,omitempty"`
	MS        float64 `json:"ms"`
}

func probeClient(args []string) error {
	var (
		addr, send string
		wait       time.Duration
		hold       bool
	)
	if err := clientFlags("probe", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "address to connect to")
		fs.StringVar(&send, "send", "", "bytes to send once connected (default: none)")
		fs.DurationVar(&wait, "wait", 3*time.Second, "how long to wait for the connection to answer or end")
		fs.BoolVar(&hold, "hold", false, `after the first answer print {"event":"established"} and wait for the connection to end`)
	}); err != nil {
		return err
	}
	res := ProbeResult{}
	start := time.Now()
	probe(addr, send, wait, hold, &res)
	res.MS = float64(time.Since(start).Microseconds()) / 1000
	emit(res)
	return nil
}

func probe(addr, send string, wait time.Duration, hold bool, res *ProbeResult) {
	c, err := dial(addr)
	if err != nil {
		res.fail(err)
		res.Outcome = res.ErrorKind
		return
	}
	defer c.Close()
	res.Connected = true
	_ = c.SetDeadline(time.Now().Add(wait))
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			res.fail(err)
			res.Outcome = res.ErrorKind
			return
		}
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			res.Data += string(buf[:n])
			if !hold {
				res.OK, res.Outcome = true, "data"
				return
			}
			if res.Outcome == "" {
				res.Outcome = "data"
				emit(map[string]string{"event": "established"})
			}
		}
		if err != nil {
			// In hold mode this is how the held connection ended.
			res.fail(err)
			res.Outcome = res.ErrorKind
			return
		}
	}
}
