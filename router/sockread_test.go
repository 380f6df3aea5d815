package router

import (
	"bytes"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestSockReaderPendingFullSendBuffer: a request handed to the read of its answer
// (sockReader.pending) that meets a full send buffer goes out in full once the peer
// reads, through the poller, and the answer is then read.
func TestSockReaderPendingFullSendBuffer(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	tcp := client.(*net.TCPConn)
	_ = tcp.SetWriteBuffer(4096)

	// Fill the send buffer (and the peer's receive buffer) until a write would block.
	rc, _ := tcp.SyscallConn()
	filler := 0
	chunk := bytes.Repeat([]byte("f"), 1024)
	_ = rc.Control(func(fd uintptr) {
		for {
			n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)))
			if errno != 0 {
				return
			}
			filler += int(n)
		}
	})
	if filler == 0 {
		t.Fatal("could not fill the send buffer")
	}

	buf := make([]byte, 64)
	s := newSockReader(tcp, func() []byte { return buf }, func() bool { return true }).sending()
	s.hold = true
	request := bytes.Repeat([]byte("r"), 64<<10)
	s.snd.pending = request
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.read()
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("read returned (%d, %v) before the request could go out", r.n, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	// The peer takes everything, checks the request came whole, and answers.
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, filler+len(request))
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if !bytes.Equal(got[filler:], request) {
		t.Fatal("the request arrived altered")
	}
	if _, err := server.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || string(buf[:r.n]) != "ok" || s.snd.werr != nil {
			t.Fatalf("read: %q, %v (write error %v); want \"ok\"", buf[:r.n], r.err, s.snd.werr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer read")
	}
	if s.snd.pending != nil {
		t.Error("pending left set after the read")
	}
}
