package router

import (
	"bufio"
)

// net/http's HTTP/2 server reads frames straight from the connection: two read(2) calls
// per frame (the 9-byte header, then the payload), however many frames the peer sent in
// one segment. For a stream of small messages, such as gRPC streaming, those reads were
// the larger part of the proxy's CPU time. A read buffer under the connection takes
// whatever has arrived in one call. (The HTTP/1 server and the HTTP/2 transport buffer
// their reads already.)

// h2cReadBuffer is the read buffer of a downstream h2c connection: some fifty 64-byte
// gRPC messages at once, and the size of the HTTP/2 transport's own (16 KiB measured no
// better). A frame larger than that is read straight into the framer's buffer.
const h2cReadBuffer = 4 << 10

// bufferedConn is a connection whose reads go through r. Only Read changes: writes go
// straight to the connection (the HTTP/2 server buffers them itself), and Meta is the
// connection's.
type bufferedConn struct {
	Conn
	r *bufio.Reader
}

func newBufferedConn(c Conn) *bufferedConn {
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, h2cReadBuffer)}
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
