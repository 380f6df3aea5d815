package listener

import (
	stdtls "crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The relay of a connection that has a TLS side (a mesh mTLS connection: terminated
// inbound, wrapped outbound). Its bytes are encrypted or decrypted in user space, so it
// copies through a buffer where Relay splices.

// tcpOf returns the TCP socket under c (a *net.TCPConn, or a *stdtls.Conn over one).
func tcpOf(c net.Conn) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case *stdtls.Conn:
		if t, ok := c.NetConn().(*net.TCPConn); ok {
			return t
		}
		return tcpOf(c.NetConn())
	case interface{ NetConn() net.Conn }:
		return tcpOf(c.NetConn())
	}
	return nil
}

// closeWrite half-closes c. On TLS that is a close_notify alert (which the peer reads
// as EOF, and after which it may still send), then the TCP FIN under it.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*stdtls.Conn); ok {
		err := tc.CloseWrite()
		if t := tcpOf(tc); t != nil {
			_ = t.CloseWrite()
		}
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// reset closes c with a TCP reset (no close_notify for TLS: this is a failure).
func reset(c net.Conn) {
	if t := tcpOf(c); t != nil {
		_ = t.SetLinger(0)
		_ = t.Close()
		return
	}
	_ = c.Close()
}

var streamPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// RelayStreams is Relay for connections that are not both plain TCP: it copies both
// ways until both directions ended, passing a clean EOF on as a half-close and any
// error as a reset of both sides, with the same shared idle timeout, then closes both.
func RelayStreams(down, up net.Conn, idle time.Duration, onBytes func(toUpstream bool, n int64)) RelayResult {
	var (
		last    atomic.Int64 // unix nanos of the last byte moved either way
		failed  atomic.Bool
		upErr   error
		upBytes int64
		done    = make(chan struct{})
	)
	last.Store(time.Now().UnixNano())
	abort := func() {
		if failed.CompareAndSwap(false, true) {
			reset(down)
			reset(up)
		}
	}
	go func() {
		defer close(done)
		upBytes, upErr = copyStream(up, down, idle, &last, func(n int64) {
			if onBytes != nil {
				onBytes(true, n)
			}
		})
		if upErr != nil {
			abort()
			return
		}
		_ = closeWrite(up)
	}()
	downBytes, downErr := copyStream(down, up, idle, &last, func(n int64) {
		if onBytes != nil {
			onBytes(false, n)
		}
	})
	if downErr != nil {
		abort()
	} else {
		_ = closeWrite(down)
	}
	<-done
	if !failed.Load() {
		_ = down.Close()
		_ = up.Close()
	}
	return relayResult(upBytes, downBytes, upErr, downErr)
}

// copyStream moves bytes from src to dst until EOF (nil error) or an error.
func copyStream(dst, src net.Conn, idle time.Duration, last *atomic.Int64, count func(int64)) (int64, error) {
	bp := streamPool.Get().(*[]byte)
	defer streamPool.Put(bp)
	buf := *bp
	var total int64
	for {
		if err := src.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return total, err
		}
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			count(int64(n))
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction moved bytes: not idle
				}
				return total, ErrIdle
			}
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}
