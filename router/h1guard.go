package router

import (
	"bytes"
	"strconv"
	"sync/atomic"
)

// H1Guard follows the message framing of the bytes a client sends on an HTTP/1.x
// connection, to find requests whose framing is ambiguous — both Content-Length and
// Transfer-Encoding — before the HTTP server parses them.
//
// Go's server accepts such a request by dropping Content-Length (RFC 9112 §6.3 allows
// it), but it is the classic request-smuggling shape: a proxy must refuse it with 400, as
// Envoy and HAProxy do, since a server behind it might frame the message the other way.
// The server hides the header from the handler, so the guard reads the raw bytes as the
// connection delivers them and the handler asks it about the request it serves.
//
// The guard must frame every message exactly as the server does, or its count of requests
// drifts from the handler's and a later ambiguous request goes unnoticed. It stops
// following only where the server stops reading HTTP: a transfer coding other than
// chunked, a bad Content-Length or a line longer than a head may be (the server refuses
// them and closes), and a switch of protocols (the handler tells it, on the 101).
// An Upgrade or CONNECT the upstream turns down leaves the connection in HTTP, so those
// requests are followed like any other.
type H1Guard struct {
	state     guardState
	line      []byte
	remaining int64 // body or chunk bytes still to skip
	requests  int64 // request heads completed
	inHead    headInfo
	bad       atomic.Int64 // 1-based index of the first ambiguous request; 0: none
	served    atomic.Int64 // requests the handler has taken
}

type guardState uint8

const (
	gHead        guardState = iota // reading request line and header lines
	gBody                          // skipping Content-Length bytes
	gChunkSize                     // reading a chunk-size line
	gChunkData                     // skipping chunk data
	gChunkDataLF                   // reading the line end after chunk data
	gTrailer                       // reading trailer lines until an empty one
	gStopped                       // not following any more
)

type headInfo struct {
	lines   int
	http10  bool
	cl      bool
	clValue int64
	clBad   bool
	te      bool
	chunked bool
	teOther bool
	folded  bool
}

// maxGuardLine bounds the line the guard buffers. It is above the longest head line the
// server takes (MaxHeaderBytes and 4 KiB of read-ahead), so the guard never gives up on a
// line the server accepts.
const maxGuardLine = maxHeaderBytes + 8<<10

// Feed follows the bytes the client sent, in order.
func (g *H1Guard) Feed(p []byte) {
	for len(p) > 0 && g.state != gStopped {
		switch g.state {
		case gBody, gChunkData:
			n := int64(len(p))
			if n > g.remaining {
				n = g.remaining
			}
			g.remaining -= n
			p = p[n:]
			if g.remaining == 0 {
				if g.state == gBody {
					g.state = gHead
				} else {
					g.state = gChunkDataLF
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				if len(g.line)+len(p) > maxGuardLine {
					g.state = gStopped
					return
				}
				g.line = append(g.line, p...)
				return
			}
			if len(g.line)+i > maxGuardLine {
				// Whether or not the line came in one read: the answer must not depend
				// on how reads cut the bytes.
				g.state = gStopped
				return
			}
			var line []byte
			if len(g.line) > 0 {
				g.line = append(g.line, p[:i]...)
				line = g.line
			} else {
				line = p[:i]
			}
			p = p[i+1:]
			g.onLine(bytes.TrimSuffix(line, []byte{'\r'}))
			g.line = g.line[:0]
		}
	}
}

func (g *H1Guard) onLine(line []byte) {
	switch g.state {
	case gHead:
		g.headLine(line)
	case gChunkSize:
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		switch {
		case err != nil || size < 0:
			g.state = gStopped // the server refuses a malformed chunk
		case size == 0:
			g.state = gTrailer
		default:
			g.remaining, g.state = size, gChunkData
		}
	case gChunkDataLF:
		if len(line) != 0 {
			g.state = gStopped
			return
		}
		g.state = gChunkSize
	case gTrailer:
		if len(line) == 0 {
			g.state = gHead
		}
	}
}

func (g *H1Guard) headLine(line []byte) {
	h := &g.inHead
	if h.lines == 0 {
		if len(line) == 0 {
			return // empty lines before a request line are ignored, as by the server
		}
		h.lines++
		// Go's server ignores Transfer-Encoding on an HTTP/1.0 request (golang.org/issue/12785).
		h.http10 = bytes.HasSuffix(line, []byte(" HTTP/1.0"))
		return
	}
	if len(line) > 0 {
		h.lines++
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: the server joins this line to the field before it, which may be
			// Content-Length or Transfer-Encoding. Refused, as RFC 9112 §5.2 allows.
			h.folded = true
			return
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.cl && n != h.clValue) {
				h.clBad = true
			}
			h.cl, h.clValue = true, n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			h.te = true
			codings := bytes.Split(value, []byte(","))
			last := bytes.TrimSpace(codings[len(codings)-1])
			h.chunked = bytes.EqualFold(last, []byte("chunked"))
			h.teOther = h.teOther || len(codings) > 1 || !h.chunked
		}
		return
	}
	// The empty line ends the head: decide how the body is framed.
	g.requests++
	info := *h
	g.inHead = headInfo{}
	switch {
	case info.te && info.cl, info.folded:
		g.bad.CompareAndSwap(0, g.requests)
		g.state = gStopped // the connection is closed after the 400
	case info.clBad:
		g.state = gStopped // the server refuses it and closes
	case info.te && info.http10:
		// No body: the server ignores the header, and there is no Content-Length.
	case info.teOther:
		g.state = gStopped // the server refuses it and closes
	case info.te:
		g.state = gChunkSize
	case info.cl && info.clValue > 0:
		g.remaining, g.state = info.clValue, gBody
	}
}

// switched stops the guard: the connection switched protocols and its bytes are no
// longer HTTP. It is called by the handler after hijacking, when nothing else reads.
func (g *H1Guard) switched() { g.state = gStopped }

// Take is called by the handler for each HTTP/1 request it serves, in order; it reports
// whether that request's framing was ambiguous and must be refused.
func (g *H1Guard) Take() (ambiguous bool) {
	n := g.served.Add(1)
	return g.bad.Load() == n
}
