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
// The guard stops following a connection whose framing it cannot know (an Upgrade or
// CONNECT, a transfer coding other than chunked, a line past its size limit); the HTTP
// server refuses those shapes itself or they leave HTTP.
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
	cl      bool
	clValue int64
	clBad   bool
	te      bool
	chunked bool
	teOther bool
	upgrade bool
	connect bool
}

// maxGuardLine bounds the line the guard buffers; the server refuses longer heads.
const maxGuardLine = 64 << 10

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
			var line []byte
			if len(g.line) > 0 {
				if len(g.line)+i > maxGuardLine {
					g.state = gStopped
					return
				}
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
		h.connect = bytes.HasPrefix(line, []byte("CONNECT "))
		return
	}
	if len(line) > 0 {
		h.lines++
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
		case bytes.EqualFold(name, []byte("Upgrade")):
			h.upgrade = true
		}
		return
	}
	// The empty line ends the head: decide how the body is framed.
	g.requests++
	info := *h
	g.inHead = headInfo{}
	switch {
	case info.te && info.cl:
		g.bad.CompareAndSwap(0, g.requests)
		g.state = gStopped // the connection is closed after the 400
	case info.upgrade || info.connect || info.clBad || info.teOther:
		g.state = gStopped
	case info.te:
		g.state = gChunkSize
	case info.cl && info.clValue > 0:
		g.remaining, g.state = info.clValue, gBody
	}
}

// Take is called by the handler for each HTTP/1 request it serves, in order; it reports
// whether that request's framing was ambiguous and must be refused.
func (g *H1Guard) Take() (ambiguous bool) {
	n := g.served.Add(1)
	return g.bad.Load() == n
}
