package listener

import (
	"io"
	"net"

	"skiff/router"
)

// replayConn is a sniffed connection handed to the HTTP proxy: reads return the bytes
// sniffing already took, then the connection's. It embeds the net.Conn interface (the
// *net.TCPConn, or the *tls.Conn of a mesh connection), so no method of the socket that
// would skip the replayed bytes (such as WriteTo) is promoted by accident.
type replayConn struct {
	net.Conn
	r    *sniffResult
	head []byte
	meta router.Meta
}

func (c *replayConn) Read(p []byte) (n int, err error) {
	if len(c.head) > 0 {
		n = copy(p, c.head)
		c.head = c.head[n:]
		if len(c.head) == 0 {
			c.r.release()
		}
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.meta.Guard != nil && n > 0 {
		c.meta.Guard.Feed(p[:n])
	}
	return n, err
}

// WriteTo keeps splice for what follows the replayed bytes (an upgraded WebSocket) on a
// plain TCP connection.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.head) > 0 {
		n, err := w.Write(c.head)
		total += int64(n)
		c.head = c.head[n:]
		if err != nil {
			return total, err
		}
		c.r.release()
	}
	if tcp, ok := c.Conn.(*net.TCPConn); ok {
		if rf, ok := w.(io.ReaderFrom); ok {
			n, err := rf.ReadFrom(tcp)
			return total + n, err
		}
	}
	n, err := io.Copy(w, struct{ io.Reader }{c.Conn})
	return total + n, err
}

// CloseWrite half-closes, as a relay of an upgraded connection needs.
func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

func (c *replayConn) Meta() *router.Meta { return &c.meta }

// TCP lets the HTTP/1.1 fast path wait on the socket without a buffer, and splice
// large bodies; nil inside mesh TLS.
func (c *replayConn) TCP() (*net.TCPConn, bool) {
	tcp, _ := c.Conn.(*net.TCPConn)
	return tcp, len(c.head) > 0
}
