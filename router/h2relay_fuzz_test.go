package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"skiff/config"
	"skiff/telemetry"
)

// The relay's halves are driven here without a network: each byte stream is copied
// into a half's buffer in reads of chosen sizes, and process() runs after each, as
// loop() would run it. What comes out is checked against the input: from the client,
// the same frames with an x-request-id literal added to each request head that had
// none, however the stream was cut into reads; from the upstream, the same bytes.

// sinkConn is a net.Conn with nothing to read that keeps what is written to it.
type sinkConn struct {
	out    bytes.Buffer
	meta   Meta
	closed bool
}

func (c *sinkConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *sinkConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *sinkConn) Close() error                     { c.closed = true; return nil }
func (c *sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *sinkConn) SetDeadline(time.Time) error      { return nil }
func (c *sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkConn) SetWriteDeadline(time.Time) error { return nil }
func (c *sinkConn) Meta() *Meta                      { return &c.meta }

// newRelayHTTP is the HTTP a test relay belongs to: no Router (so admit takes every
// request), no dialler, the default config and metrics of its own.
func newRelayHTTP() *HTTP {
	cfg := config.Default()
	return &HTTP{log: zerolog.Nop(), metrics: telemetry.NewMetrics(), cfg: &cfg}
}

// fakeRelay is a relay between two sinkConns: c2u writes to up, u2c to down.
type fakeRelay struct {
	r        *h2relay
	up, down *sinkConn
}

func newFakeRelay(h *HTTP) *fakeRelay {
	m := &Meta{Direction: "outbound", Dst: netip.MustParseAddrPort("127.0.0.1:80")}
	tr := &fakeRelay{up: &sinkConn{}, down: &sinkConn{meta: *m}}
	r := &h2relay{h: h, m: m, down: tr.down, up: tr.up, streams: map[uint32]h2stream{},
		stats: reqStats{metrics: h.metrics, m: m}}
	r.upMaxFrame.Store(h2DefaultMaxFrameSize)
	r.c2u.init(r, tr.down, tr.up, true)
	r.u2c.init(r, tr.up, tr.down, false)
	// u2c's output has begun (the upstream's SETTINGS went first), so the relay's own
	// frames could go between its frames.
	r.dBetween = true
	tr.r = r
	return tr
}

// feedHalf passes in to d in reads of the sizes next returns (at most the buffer's free
// space), calling process after each as loop does, and checks after each what process
// must leave true of the buffer. It returns the bytes left in the buffer.
func feedHalf(d *h2half, in []byte, next func() int) ([]byte, error) {
	for len(in) > 0 {
		sp := d.in.space()
		if len(sp) == 0 {
			return nil, fmt.Errorf("no free space in a buffer of %d bytes holding %d", len(*d.in.buf), d.in.w)
		}
		n := copy(sp[:min(len(sp), max(next(), 1))], in)
		in = in[n:]
		d.in.w += n
		if err := d.process(); err != nil {
			return nil, err
		}
		switch size := len(*d.in.buf); {
		case size > h2MaxInspect+h2BufSize:
			return nil, fmt.Errorf("buffer grown to %d bytes", size)
		case d.in.r != 0 || d.in.w < 0 || d.in.w >= size:
			return nil, fmt.Errorf("after process, rpos %d, wpos %d in a buffer of %d bytes", d.in.r, d.in.w, size)
		case d.need > size:
			return nil, fmt.Errorf("waiting for a %d-byte frame in a buffer of %d bytes", d.need, size)
		}
	}
	if d.in.buf == nil {
		return nil, nil
	}
	return append([]byte(nil), (*d.in.buf)[:d.in.w]...), nil
}

// readPlan is a way to cut a stream into reads: each call returns the next read's size.
type readPlan struct {
	name string
	next func() func() int
}

func fixedReadPlan(n int) func() func() int {
	return func() func() int { return func() int { return n } }
}

// readPlans are the ways the unit tests cut each stream into reads.
var readPlans = []readPlan{
	{"full buffers", fixedReadPlan(math.MaxInt)},
	{"1-byte reads", fixedReadPlan(1)},
	{"7-byte reads", fixedReadPlan(7)},
	{"4093-byte reads", fixedReadPlan(4093)},
	{"random reads", func() func() int {
		rng := rand.New(rand.NewPCG(1, 2))
		return func() int {
			if rng.IntN(4) == 0 {
				return 1 + rng.IntN(40000)
			}
			return 1 + rng.IntN(100)
		}
	}},
}

// h2Builder writes an HTTP/2 byte stream as an endpoint would send it, with x/net's
// Framer and an HPACK encoder of its own.
type h2Builder struct {
	w   bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newH2Builder(client bool) *h2Builder {
	b := &h2Builder{}
	b.fr = http2.NewFramer(&b.w, nil)
	b.enc = hpack.NewEncoder(&b.hb)
	if client {
		b.w.WriteString(h2Preface)
	}
	return b
}

// mustWrite panics on an error from the Framer or the HPACK encoder, which write to a
// bytes.Buffer: only a bad argument makes one.
func mustWrite(err error) {
	if err != nil {
		panic(err)
	}
}

// hfs makes header fields of name, value pairs.
func hfs(kv ...string) []hpack.HeaderField {
	var f []hpack.HeaderField
	for i := 0; i+1 < len(kv); i += 2 {
		f = append(f, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return f
}

// block encodes a header block, changing the encoder's dynamic table as it goes.
func (b *h2Builder) block(f []hpack.HeaderField) []byte {
	b.hb.Reset()
	for _, hf := range f {
		mustWrite(b.enc.WriteField(hf))
	}
	return bytes.Clone(b.hb.Bytes())
}

// headers writes a header block in one HEADERS frame.
func (b *h2Builder) headers(stream uint32, end bool, f []hpack.HeaderField) *h2Builder {
	mustWrite(b.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: b.block(f),
		EndStream: end, EndHeaders: true}))
	return b
}

// headersWith writes a header block in one HEADERS frame with p's padding and priority.
func (b *h2Builder) headersWith(p http2.HeadersFrameParam, f []hpack.HeaderField) *h2Builder {
	p.BlockFragment, p.EndHeaders = b.block(f), true
	mustWrite(b.fr.WriteHeaders(p))
	return b
}

// split writes a header block as a HEADERS frame (with p's padding and priority) and
// CONTINUATIONs, cut into parts about equal.
func (b *h2Builder) split(p http2.HeadersFrameParam, parts int, f []hpack.HeaderField) *h2Builder {
	blk := b.block(f)
	step := len(blk)/parts + 1
	first := blk[:min(step, len(blk))]
	blk = blk[len(first):]
	p.BlockFragment, p.EndHeaders = first, false
	mustWrite(b.fr.WriteHeaders(p))
	for {
		n := min(step, len(blk))
		mustWrite(b.fr.WriteContinuation(p.StreamID, n == len(blk), blk[:n]))
		blk = blk[n:]
		if len(blk) == 0 {
			return b
		}
	}
}

func (b *h2Builder) data(stream uint32, end bool, payload string) *h2Builder {
	mustWrite(b.fr.WriteData(stream, end, []byte(payload)))
	return b
}

func (b *h2Builder) dataPadded(stream uint32, end bool, payload string, pad int) *h2Builder {
	mustWrite(b.fr.WriteDataPadded(stream, end, []byte(payload), make([]byte, pad)))
	return b
}

func (b *h2Builder) settings(s ...http2.Setting) *h2Builder {
	mustWrite(b.fr.WriteSettings(s...))
	return b
}

func (b *h2Builder) raw(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) *h2Builder {
	mustWrite(b.fr.WriteRawFrame(typ, flags, stream, payload))
	return b
}

func (b *h2Builder) bytes() []byte { return bytes.Clone(b.w.Bytes()) }

func reqFields(method, path string, extra ...string) []hpack.HeaderField {
	return hfs(append([]string{":method", method, ":scheme", "http", ":authority", "backend.test:8080",
		":path", path, "user-agent", "relay-test/1"}, extra...)...)
}

// tilde is a value HPACK sends as it is: '~' has a 13-bit Huffman code.
func tilde(n int) string { return strings.Repeat("~", n) }

type h2Seed struct {
	name string
	b    []byte
}

// h2ClientStreams are valid client byte streams, preface first.
func h2ClientStreams() []h2Seed {
	var s []h2Seed
	add := func(name string, b *h2Builder) { s = append(s, h2Seed{name, b.bytes()}) }

	add("GET", newH2Builder(true).
		settings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 8192}, http2.Setting{ID: http2.SettingEnablePush},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}).
		raw(http2.FrameWindowUpdate, 0, 0, []byte{0, 0x0f, 0, 1}).
		headers(1, true, reqFields("GET", "/")))

	add("POST and DATA", newH2Builder(true).settings().
		headers(1, false, reqFields("POST", "/upload", "content-type", "text/plain", "content-length", "11")).
		data(1, false, "hello").dataPadded(1, true, " world", 200).
		headers(3, false, reqFields("POST", "/empty")).data(3, true, ""))

	b := newH2Builder(true).settings()
	b.headersWith(http2.HeadersFrameParam{StreamID: 1, PadLength: 13, EndStream: true}, reqFields("GET", "/padded"))
	b.headersWith(http2.HeadersFrameParam{StreamID: 3, EndStream: true,
		Priority: http2.PriorityParam{StreamDep: 1, Weight: 15, Exclusive: true}}, reqFields("GET", "/priority"))
	b.headersWith(http2.HeadersFrameParam{StreamID: 5, PadLength: 255,
		Priority: http2.PriorityParam{StreamDep: 3, Weight: 200}}, reqFields("POST", "/both"))
	b.dataPadded(5, true, "body", 255)
	b.headersWith(http2.HeadersFrameParam{StreamID: 7, PadLength: 1, EndStream: true}, nil) // an empty block
	add("PADDED and PRIORITY", b)

	b = newH2Builder(true).settings()
	b.split(http2.HeadersFrameParam{StreamID: 1, EndStream: true}, 3, reqFields("GET", "/continued", "x-a", tilde(300)))
	b.split(http2.HeadersFrameParam{StreamID: 3, PadLength: 4, Priority: http2.PriorityParam{Weight: 7}}, 2,
		reqFields("POST", "/continued/padded", "x-b", "b"))
	b.data(3, true, "x")
	add("HEADERS and CONTINUATION", b)

	b = newH2Builder(true).settings()
	b.headers(1, false, reqFields("POST", "/trailers", "te", "trailers", "trailer", "x-checksum"))
	b.data(1, false, "part one ").data(1, false, "part two")
	b.headers(1, true, hfs("x-checksum", "abc123", "x-more", "1"))
	b.headers(3, false, reqFields("POST", "/trailers/split"))
	b.split(http2.HeadersFrameParam{StreamID: 3, EndStream: true}, 2, hfs("x-checksum", "def456", "x-long", tilde(100)))
	add("trailers", b)

	b = newH2Builder(true).settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	b.headers(1, false, reqFields("POST", "/pkg.Service/Method", "content-type", "application/grpc+proto",
		"te", "trailers", "grpc-timeout", "1S", "grpc-accept-encoding", "identity,gzip"))
	b.data(1, true, "\x00\x00\x00\x00\x05hello")
	b.headers(3, false, reqFields("POST", "/pkg.Service/Stream", "content-type", "application/grpc", "te", "trailers"))
	b.data(3, false, "\x00\x00\x00\x00\x01a").data(3, false, "\x00\x00\x00\x00\x01b").data(3, true, "")
	add("gRPC", b)

	b = newH2Builder(true).settings()
	mustWrite(b.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}))
	b.headers(1, false, reqFields("GET", "/"))
	mustWrite(b.fr.WriteWindowUpdate(1, 65535))
	mustWrite(b.fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 3}))
	mustWrite(b.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	b.raw(0xbb, 0x5a, 0, []byte("an extension frame"))
	b.raw(0xbc, 0, 3, nil)
	mustWrite(b.fr.WriteSettingsAck())
	mustWrite(b.fr.WritePing(true, [8]byte{8, 7, 6, 5, 4, 3, 2, 1}))
	b.headers(3, true, reqFields("GET", "/after-reset"))
	mustWrite(b.fr.WriteRSTStream(3, http2.ErrCodeStreamClosed))
	mustWrite(b.fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye")))
	add("control frames", b)

	b = newH2Builder(true).settings()
	b.headers(1, true, reqFields("GET", "/own-id", "x-request-id", "client-chosen-1"))
	b.headers(3, true, reqFields("GET", "/none"))
	f := reqFields("GET", "/sensitive-id")
	f = append(f, hpack.HeaderField{Name: "x-request-id", Value: "client-2", Sensitive: true},
		hpack.HeaderField{Name: "authorization", Value: "Bearer x", Sensitive: true})
	b.headers(5, true, f)
	b.split(http2.HeadersFrameParam{StreamID: 7, EndStream: true}, 2, reqFields("GET", "/split-id", "x-request-id", "client-3"))
	add("client request ids", b)

	// The same fields again and again come from the dynamic table; the encoder resizes
	// it (a dynamic table size update at the start of a block) within the 4096 bytes the
	// upstream allows by default.
	b = newH2Builder(true).settings()
	for i, id := 0, uint32(1); i < 8; i, id = i+1, id+2 {
		switch i {
		case 3:
			b.enc.SetMaxDynamicTableSize(1024)
		case 5:
			b.enc.SetMaxDynamicTableSize(0)
		case 6:
			b.enc.SetMaxDynamicTableSize(4096)
		}
		b.headers(id, true, reqFields("GET", fmt.Sprintf("/repeat/%d", i), "cookie", "session=abcdef", "accept", "*/*"))
	}
	add("dynamic table", b)

	b = newH2Builder(true).settings()
	b.headers(1, true, reqFields("GET", "/first"))
	b.headers(3, true, reqFields("GET", "/big", "x-big", tilde(40<<10))) // read whole: the buffer grows
	b.headers(5, false, reqFields("POST", "/after-big"))
	for i := 0; i < 4; i++ {
		b.data(5, i == 3, tilde(12<<10))
	}
	b.split(http2.HeadersFrameParam{StreamID: 7, EndStream: true}, 4, reqFields("GET", "/big-split", "x-big", tilde(60<<10)))
	add("large header blocks", b)
	return s
}

// h2UpstreamStreams are valid byte streams from an upstream (no preface).
func h2UpstreamStreams() []h2Seed {
	var s []h2Seed
	add := func(name string, b *h2Builder) { s = append(s, h2Seed{name, b.bytes()}) }
	response := func(status string, extra ...string) []hpack.HeaderField {
		return hfs(append([]string{":status", status, "server", "backend"}, extra...)...)
	}

	b := newH2Builder(false)
	b.settings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 250},
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: 4096}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 32768})
	mustWrite(b.fr.WriteSettingsAck())
	mustWrite(b.fr.WriteWindowUpdate(0, 1<<20))
	b.headers(1, false, response("103", "link", "</style.css>; rel=preload"))
	b.headers(1, false, response("200", "content-type", "text/plain", "content-length", "11"))
	b.data(1, false, "hello").dataPadded(1, true, " world", 10)
	b.headers(3, true, response("204"))
	add("responses", b)

	b = newH2Builder(false).settings()
	b.headers(1, false, response("200", "content-type", "application/grpc"))
	b.data(1, false, "\x00\x00\x00\x00\x02hi")
	b.headers(1, true, hfs("grpc-status", "0", "grpc-message", ""))
	b.headers(3, true, response("200", "content-type", "application/grpc", "grpc-status", "14", "grpc-message", "unavailable"))
	b.headers(5, false, response("200", "content-type", "application/grpc"))
	b.split(http2.HeadersFrameParam{StreamID: 5, EndStream: true}, 2, hfs("grpc-status", "3", "grpc-message", tilde(200)))
	add("gRPC", b)

	b = newH2Builder(false).settings()
	mustWrite(b.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true,
		BlockFragment: b.block(reqFields("GET", "/pushed.css"))}))
	mustWrite(b.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 4, PadLength: 9,
		BlockFragment: b.block(reqFields("GET", "/pushed.js"))}))
	mustWrite(b.fr.WriteContinuation(1, true, nil))
	b.headers(1, false, response("200"))
	b.headers(2, false, response("200", "content-type", "text/css"))
	b.data(2, true, "body{}")
	b.headers(4, true, response("200"))
	b.data(1, true, "<html>")
	add("PUSH_PROMISE", b)

	b = newH2Builder(false).settings()
	b.headersWith(http2.HeadersFrameParam{StreamID: 1, PadLength: 40, Priority: http2.PriorityParam{Weight: 1}},
		response("200", "x-a", "a"))
	b.split(http2.HeadersFrameParam{StreamID: 3, PadLength: 2}, 3, response("500", "x-b", tilde(500)))
	b.dataPadded(3, true, "error", 255)
	b.data(1, true, "")
	mustWrite(b.fr.WriteRSTStream(5, http2.ErrCodeRefusedStream))
	mustWrite(b.fr.WritePing(true, [8]byte{}))
	b.raw(0xee, 0xff, 9, []byte("x"))
	mustWrite(b.fr.WriteGoAway(3, http2.ErrCodeEnhanceYourCalm, []byte("calm")))
	add("padding, resets", b)

	b = newH2Builder(false).settings()
	b.enc.SetMaxDynamicTableSize(256)
	b.headers(1, true, response("200", "set-cookie", tilde(100), "x-c", "c"))
	b.headers(3, true, response("200", "set-cookie", tilde(100), "x-c", "c"))
	b.headers(5, false, response("200", "x-big", tilde(40<<10)))
	b.data(5, true, tilde(70<<10))
	add("large head", b)
	return s
}

// h2GarbageSeeds are byte streams no endpoint would send, for the fuzzers to start from.
var h2GarbageSeeds = []string{
	"",
	"PRI * HTTP/2.0\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	h2Preface + "\x00\x00",
	h2Preface + "\x00\x00\x01\x01\x05\x00\x00\x00\x01\xff",                                         // a HEADERS block HPACK cannot decode
	h2Preface + "\x00\x00\x03\x01\x0d\x00\x00\x00\x01\x05ab",                                       // pad length past the payload
	h2Preface + "\x00\x00\x01\x09\x04\x00\x00\x00\x01\x82",                                         // CONTINUATION with no HEADERS
	h2Preface + "\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82\x00\x00\x01\x01\x04\x00\x00\x00\x03\x82", // block interrupted
	h2Preface + "\xff\xff\xff\x01\x04\x00\x00\x00\x01",                                             // HEADERS too large to inspect
	h2Preface + "\x00\x00\x05\x00\x00\x00\x00\x00\x01ab",                                           // DATA cut short
	h2Preface + "\x00\x00\x07\x04\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\x00",                 // SETTINGS of 7 bytes
	h2Preface + "\x00\x00\x03\x01\x05\x80\x00\x00\x01\x3f\xe2\x1f",                                 // table size update to 4097; reserved bit set
	"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00",                                 // SETTINGS MAX_FRAME_SIZE 0
}

// h2Event is a frame as an endpoint reads it: header blocks decoded, with their
// CONTINUATIONs, and padding dropped.
type h2Event struct {
	stream  uint32
	desc    string // all but a header block's fields
	fields  []hpack.HeaderField
	request bool // a header block opening a stream: a request head
}

// readH2Events reads an HTTP/2 byte stream (without preface) as x/net's Framer does, with
// an HPACK decoder of tableSize.
func readH2Events(b []byte, tableSize uint32) ([]h2Event, error) {
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(tableSize, nil)
	var evs []h2Event
	var last uint32
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, fmt.Errorf("frame %d: %v (%v)", len(evs), err, fr.ErrorDetail())
		}
		ev := h2Event{stream: f.Header().StreamID}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			ev.desc = fmt.Sprintf("HEADERS end_stream=%v priority=%v %+v", f.StreamEnded(), f.HasPriority(), f.Priority)
			ev.fields = f.Fields
			if f.StreamID > last {
				ev.request, last = true, f.StreamID
			}
		case *http2.DataFrame:
			ev.desc = fmt.Sprintf("DATA end_stream=%v %q", f.StreamEnded(), f.Data())
		case *http2.SettingsFrame:
			var s []http2.Setting
			_ = f.ForeachSetting(func(x http2.Setting) error { s = append(s, x); return nil })
			ev.desc = fmt.Sprintf("SETTINGS ack=%v %v", f.IsAck(), s)
		case *http2.PingFrame:
			ev.desc = fmt.Sprintf("PING ack=%v %x", f.IsAck(), f.Data)
		case *http2.GoAwayFrame:
			ev.desc = fmt.Sprintf("GOAWAY %d %v %q", f.LastStreamID, f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			ev.desc = fmt.Sprintf("RST_STREAM %v", f.ErrCode)
		case *http2.WindowUpdateFrame:
			ev.desc = fmt.Sprintf("WINDOW_UPDATE %d", f.Increment)
		case *http2.PriorityFrame:
			ev.desc = fmt.Sprintf("PRIORITY %+v", f.PriorityParam)
		case *http2.UnknownFrame:
			ev.desc = fmt.Sprintf("frame type %#x flags %#x %q", f.Type, f.Flags, f.Payload())
		default:
			ev.desc = fmt.Sprintf("%v", f)
		}
		evs = append(evs, ev)
	}
}

// isRequestUUID reports whether s is a version 4 UUID as appendRequestID writes one.
func isRequestUUID(s string) bool {
	if len(s) != 36 || s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19])) {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f'):
			return false
		}
	}
	return true
}

// h2IDLiteralLen is the size of the literal the relay adds: 0x00, name, value.
const h2IDLiteralLen = 1 + 1 + len("x-request-id") + 1 + 36

func isIDLiteral(b []byte) bool {
	return len(b) == h2IDLiteralLen && b[0] == 0 && b[1] == 12 && string(b[2:14]) == "x-request-id" &&
		b[14] == 36 && isRequestUUID(string(b[15:]))
}

// h2Inserts counts the literals relayedAs found added: inside a block's last frame, or
// in a CONTINUATION of their own after it.
type h2Inserts struct{ inFrame, continuation int }

// relayedAs checks that out is what the client-to-upstream half may make of in (the
// bytes it has passed on): the same bytes, but for x-request-id literals added at the
// end of header block fragments, each either inside the block's last frame (whose
// length grows by as much) or in a CONTINUATION of its own right after that frame
// (which then loses END_HEADERS). The relay rewrites no other byte, and drops none.
func relayedAs(in, out []byte) (h2Inserts, error) {
	var ins h2Inserts
	n := min(len(in), len(h2Preface))
	if !bytes.HasPrefix(out, in[:n]) {
		return ins, fmt.Errorf("the first %d bytes %q passed on as %q", n, in[:n], out[:min(n, len(out))])
	}
	if string(in[:n]) != h2Preface[:n] {
		// No client preface: the relay does not read the stream.
		if !bytes.Equal(out, in) {
			return ins, fmt.Errorf("no preface, yet output %q differs from input %q", out, in)
		}
		return ins, nil
	}
	i, o := n, n
	for {
		if i+h2FrameHeaderLen > len(in) || i+h2FrameHeaderLen+parseFrameHeader(in[i:]).length > len(in) {
			// The rest: a frame passed on in part, such as DATA, passes as it came.
			if !bytes.Equal(out[o:], in[i:]) {
				return ins, fmt.Errorf("input from %d: %d bytes %.40x…, output from %d: %d bytes %.40x…",
					i, len(in)-i, in[i:], o, len(out)-o, out[o:])
			}
			return ins, nil
		}
		fh := parseFrameHeader(in[i:])
		end := i + h2FrameHeaderLen + fh.length
		if o+h2FrameHeaderLen > len(out) {
			return ins, fmt.Errorf("output ends at %d, in the header of the frame at input %d", len(out), i)
		}
		oh := parseFrameHeader(out[o:])
		if out[o+3] != in[i+3] || !bytes.Equal(out[o+5:o+9], in[i+5:i+9]) {
			return ins, fmt.Errorf("frame header %x at input %d passed on as %x", in[i:i+9], i, out[o:o+9])
		}
		if o+h2FrameHeaderLen+oh.length > len(out) {
			return ins, fmt.Errorf("output ends at %d, in the frame at %d (input %d)", len(out), o, i)
		}
		payload, got := in[i+h2FrameHeaderLen:end], out[o+h2FrameHeaderLen:o+h2FrameHeaderLen+oh.length]
		next := o + h2FrameHeaderLen + oh.length
		last := (fh.typ == h2Headers || fh.typ == h2Continuation) && fh.flags&h2FlagEndHeaders != 0
		switch {
		case out[o+4] == in[i+4] && oh.length == fh.length:
			if !bytes.Equal(got, payload) {
				return ins, fmt.Errorf("payload of the frame at input %d changed: %.40x… passed on as %.40x…", i, payload, got)
			}
		case last && out[o+4] == in[i+4] && oh.length == fh.length+h2IDLiteralLen:
			_, e, ok := headerFragment(fh.typ, fh.flags, payload)
			if !ok {
				return ins, fmt.Errorf("a literal added to the frame at input %d, whose fragment is malformed", i)
			}
			if !bytes.Equal(got[:e], payload[:e]) || !isIDLiteral(got[e:e+h2IDLiteralLen]) || !bytes.Equal(got[e+h2IDLiteralLen:], payload[e:]) {
				return ins, fmt.Errorf("frame at input %d: %x passed on as %x", i, payload, got)
			}
			ins.inFrame++
		case last && out[o+4] == in[i+4]&^h2FlagEndHeaders && oh.length == fh.length:
			if !bytes.Equal(got, payload) {
				return ins, fmt.Errorf("payload of the frame at input %d changed: %.40x… passed on as %.40x…", i, payload, got)
			}
			cont := appendFrameHeader(nil, h2IDLiteralLen, h2Continuation, h2FlagEndHeaders, fh.stream)
			if len(out)-next < len(cont)+h2IDLiteralLen || !bytes.Equal(out[next:next+len(cont)], cont) ||
				!isIDLiteral(out[next+len(cont):next+len(cont)+h2IDLiteralLen]) {
				return ins, fmt.Errorf("frame at input %d lost END_HEADERS, and no CONTINUATION with an id follows: %.80x",
					i, out[next:])
			}
			next += len(cont) + h2IDLiteralLen
			ins.continuation++
		default:
			return ins, fmt.Errorf("frame header %x at input %d passed on as %x", in[i:i+9], i, out[o:o+9])
		}
		i, o = end, next
	}
}

// relayFromClient passes a client stream through a new relay's c2u in the reads ch makes.
func relayFromClient(t *testing.T, tr *fakeRelay, in []byte, ch readPlan) (out, left []byte) {
	t.Helper()
	left, err := feedHalf(&tr.r.c2u, in, ch.next())
	if err != nil {
		t.Fatalf("%s: %v", ch.name, err)
	}
	return tr.up.out.Bytes(), left
}

// checkRelayedRequests checks out, what the relay passed on of the client stream in, as
// the upstream reads it: the same frames, a request head with an x-request-id it lacked
// added (a UUID, at the end), the client's own left alone, and nothing added to others.
func checkRelayedRequests(t *testing.T, in, out []byte, tableSize uint32) (requests int) {
	t.Helper()
	want, err := readH2Events(in[len(h2Preface):], tableSize)
	if err != nil {
		t.Fatalf("the input does not read back: %v", err)
	}
	if !bytes.HasPrefix(out, []byte(h2Preface)) {
		t.Fatalf("output starts %q, not with the preface", out[:min(len(out), 24)])
	}
	got, err := readH2Events(out[len(h2Preface):], tableSize)
	if err != nil {
		t.Fatalf("the upstream cannot read what the relay passed on: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d frames passed on, want %d", len(got), len(want))
	}
	added := 0
	for i, w := range want {
		g := got[i]
		if g.stream != w.stream || g.desc != w.desc || g.request != w.request {
			t.Fatalf("frame %d: stream %d %s, want stream %d %s", i, g.stream, g.desc, w.stream, w.desc)
		}
		wf := w.fields
		if w.request {
			requests++
			ids := 0
			for _, f := range w.fields {
				if f.Name == "x-request-id" {
					ids++
				}
			}
			if ids == 0 {
				added++
				if n := len(g.fields); n == 0 || g.fields[n-1].Name != "x-request-id" || !isRequestUUID(g.fields[n-1].Value) ||
					g.fields[n-1].Sensitive {
					t.Fatalf("request head on stream %d: no x-request-id UUID added at the end: %q", g.stream, g.fields)
				}
				wf = append(wf[:len(wf):len(wf)], g.fields[len(g.fields)-1])
			}
		}
		if !slices.Equal(g.fields, wf) {
			t.Fatalf("header block %d on stream %d: fields\n%.300q\nwant\n%.300q", i, g.stream, g.fields, wf)
		}
	}
	ins, err := relayedAs(in, out)
	if err != nil {
		t.Fatal(err)
	}
	if ins.inFrame+ins.continuation != added {
		t.Fatalf("%d literals found in the frames, %d ids in the header blocks", ins.inFrame+ins.continuation, added)
	}
	return requests
}

// TestH2RelayClientStreams: every valid client stream, however cut into reads, reaches
// the upstream as the same frames, each request head carrying one x-request-id.
func TestH2RelayClientStreams(t *testing.T) {
	h := newRelayHTTP()
	for _, s := range h2ClientStreams() {
		t.Run(s.name, func(t *testing.T) {
			outLen := -1
			for _, ch := range readPlans {
				tr := newFakeRelay(h)
				out, left := relayFromClient(t, tr, s.b, ch)
				if len(left) != 0 {
					t.Fatalf("%s: %d bytes left in the buffer", ch.name, len(left))
				}
				if tr.r.c2u.opaque {
					t.Fatalf("%s: the relay stopped inspecting a valid stream", ch.name)
				}
				if outLen >= 0 && len(out) != outLen {
					t.Fatalf("%s: %d bytes passed on, %d with %s", ch.name, len(out), outLen, readPlans[0].name)
				}
				outLen = len(out)
				requests := checkRelayedRequests(t, s.b, out, h2DefaultTableSize)
				if len(tr.r.streams) > requests || tr.r.maxReq == 0 {
					t.Fatalf("%s: %d streams open, max %d, after %d requests", ch.name, len(tr.r.streams), tr.r.maxReq, requests)
				}
				tr.r.c2u.in.release()
			}
		})
	}
}

// TestH2RelayUpstreamStreams: from the upstream, the client gets every byte as sent,
// however the stream was cut into reads.
func TestH2RelayUpstreamStreams(t *testing.T) {
	h := newRelayHTTP()
	for _, s := range h2UpstreamStreams() {
		t.Run(s.name, func(t *testing.T) {
			for _, ch := range readPlans {
				tr := newFakeRelay(h)
				left, err := feedHalf(&tr.r.u2c, s.b, ch.next())
				if err != nil {
					t.Fatalf("%s: %v", ch.name, err)
				}
				if out := tr.down.out.Bytes(); !bytes.Equal(out, s.b) || len(left) != 0 {
					t.Fatalf("%s: %d bytes passed on, %d left, of %d; first difference at %d", ch.name,
						len(out), len(left), len(s.b), h2FirstDiff(out, s.b))
				}
				if tr.r.u2c.opaque {
					t.Fatalf("%s: the relay stopped inspecting a valid stream", ch.name)
				}
				tr.r.u2c.in.release()
			}
		})
	}
}

func h2FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// h2HugeClientStream is a client stream with a request in a HEADERS frame larger than
// h2MaxInspect, at offset at, between two ordinary requests.
func h2HugeClientStream() (in []byte, at int) {
	b := newH2Builder(true).settings()
	b.headers(1, true, reqFields("GET", "/before"))
	at = b.w.Len()
	b.headers(3, true, reqFields("GET", "/huge", "x-huge", tilde(h2MaxInspect)))
	if n := b.w.Len() - at; n <= h2MaxInspect {
		panic(fmt.Sprintf("the HEADERS frame is only %d bytes", n))
	}
	b.headers(5, false, reqFields("POST", "/after")).data(5, true, "body")
	return b.bytes(), at
}

// TestH2RelayUninspectable: a HEADERS frame larger than h2MaxInspect passes untouched,
// with no x-request-id, and so does everything after it: the half stops inspecting.
func TestH2RelayUninspectable(t *testing.T) {
	in, at := h2HugeClientStream()
	for _, ch := range readPlans {
		tr := newFakeRelay(newRelayHTTP())
		out, left := relayFromClient(t, tr, in, ch)
		if !tr.r.c2u.opaque || len(left) != 0 {
			t.Fatalf("%s: opaque %v, %d bytes left", ch.name, tr.r.c2u.opaque, len(left))
		}
		// The first request got its id, in its frame; not a byte changed from the huge
		// frame on.
		if len(out) != len(in)+h2IDLiteralLen || !bytes.Equal(out[at+h2IDLiteralLen:], in[at:]) {
			t.Fatalf("%s: %d bytes passed on for %d in; from the huge frame on, they differ at %d", ch.name,
				len(out), len(in), h2FirstDiff(out[min(at+h2IDLiteralLen, len(out)):], in[at:]))
		}
		evs, err := readH2Events(out[len(h2Preface):], h2DefaultTableSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if !ev.request {
				continue
			}
			var id string
			for _, f := range ev.fields {
				if f.Name == "x-request-id" {
					id = f.Value
				}
			}
			if ev.stream == 1 && !isRequestUUID(id) || ev.stream != 1 && id != "" {
				t.Errorf("%s: stream %d got x-request-id %q", ch.name, ev.stream, id)
			}
		}
		if _, err := relayedAs(in, out); err != nil {
			t.Fatal(err)
		}
	}
}

// sizedRequest is a client stream of an empty SETTINGS and a request in one HEADERS
// frame (padded by pad) of length bytes, made so by the length of its last field, after
// the extra ones; nil if no length of that field makes it.
func sizedRequest(length int, pad uint8, extra ...string) []byte {
	n := 0
	for range 4 {
		b := newH2Builder(true).settings()
		b.headersWith(http2.HeadersFrameParam{StreamID: 1, EndStream: true, PadLength: pad},
			reqFields("GET", "/", slices.Concat(extra, []string{"x-pad", tilde(n)})...))
		got := parseFrameHeader(b.w.Bytes()[len(h2Preface)+h2FrameHeaderLen:]).length
		if got == length {
			return b.bytes()
		}
		if n += length - got; n < 0 {
			return nil
		}
	}
	return nil
}

// TestH2RelayInspectLimit: a HEADERS frame of h2MaxInspect bytes, header included, is
// read whole (the buffer grows to hold it) and its request gets an id; one byte more
// and it passes untouched.
func TestH2RelayInspectLimit(t *testing.T) {
	for _, size := range []int{h2MaxInspect, h2MaxInspect + 1} {
		// Fields of 60 KiB, each within what the relay decodes (maxHeaderBytes).
		in := sizedRequest(size-h2FrameHeaderLen, 0, "x-a", tilde(60<<10), "x-b", tilde(60<<10),
			"x-c", tilde(60<<10), "x-d", tilde(60<<10))
		if in == nil {
			t.Fatalf("no HEADERS frame of %d bytes", size)
		}
		for _, ch := range []readPlan{readPlans[0], readPlans[3]} {
			tr := newFakeRelay(newRelayHTTP())
			out, left := relayFromClient(t, tr, in, ch)
			inspected := size <= h2MaxInspect
			if tr.r.c2u.opaque == inspected || len(left) != 0 {
				t.Fatalf("%d-byte frame, %s: opaque %v, %d bytes left", size, ch.name, tr.r.c2u.opaque, len(left))
			}
			if inspected && len(*tr.r.c2u.in.buf) < size {
				t.Fatalf("%d-byte frame, %s: read in a buffer of %d bytes", size, ch.name, len(*tr.r.c2u.in.buf))
			}
			ins, err := relayedAs(in, out)
			if err != nil {
				t.Fatal(err)
			}
			want := h2Inserts{}
			if inspected {
				want.continuation = 1 // more than the upstream's 16 KiB frames allow in the frame
			}
			if ins != want {
				t.Fatalf("%d-byte frame, %s: %+v, want %+v", size, ch.name, ins, want)
			}
		}
	}
}

// TestH2RelayRequestIDFrameSize: the id goes inside the block's last frame when the
// upstream's SETTINGS_MAX_FRAME_SIZE leaves room for it, else in a CONTINUATION after it.
func TestH2RelayRequestIDFrameSize(t *testing.T) {
	for _, tc := range []struct {
		frame, maxFrame int
		pad             uint8
		inFrame         bool
	}{
		{frame: h2DefaultMaxFrameSize - h2IDLiteralLen, maxFrame: h2DefaultMaxFrameSize, inFrame: true},
		{frame: h2DefaultMaxFrameSize - h2IDLiteralLen + 1, maxFrame: h2DefaultMaxFrameSize},
		{frame: h2DefaultMaxFrameSize - h2IDLiteralLen, maxFrame: h2DefaultMaxFrameSize, pad: 100, inFrame: true},
		{frame: h2DefaultMaxFrameSize, maxFrame: h2DefaultMaxFrameSize},
		{frame: 40 << 10, maxFrame: 64 << 10, inFrame: true},
		{frame: 64<<10 - h2IDLiteralLen + 1, maxFrame: 64 << 10},
	} {
		in := sizedRequest(tc.frame, tc.pad)
		if in == nil {
			t.Fatalf("no HEADERS frame of %d bytes", tc.frame)
		}
		tr := newFakeRelay(newRelayHTTP())
		tr.r.upMaxFrame.Store(uint32(tc.maxFrame))
		out, _ := relayFromClient(t, tr, in, readPlans[0])
		checkRelayedRequests(t, in, out, h2DefaultTableSize)
		ins, err := relayedAs(in, out)
		if err != nil {
			t.Fatal(err)
		}
		want := h2Inserts{inFrame: 1}
		if !tc.inFrame {
			want = h2Inserts{continuation: 1}
		}
		if ins != want {
			t.Errorf("frame %d, max %d, padding %d: %+v, want %+v", tc.frame, tc.maxFrame, tc.pad, ins, want)
		}
		for p := len(h2Preface); p+h2FrameHeaderLen <= len(out); {
			fh := parseFrameHeader(out[p:])
			if fh.length > tc.maxFrame {
				t.Errorf("frame %d, max %d: a %d-byte frame passed on", tc.frame, tc.maxFrame, fh.length)
			}
			p += h2FrameHeaderLen + fh.length
		}
	}
}

// TestH2RelayUpstreamSettings: the upstream's SETTINGS, read by u2c, set what c2u
// allows: a larger HPACK table for the client's encoder, larger frames for the id.
func TestH2RelayUpstreamSettings(t *testing.T) {
	up := newH2Builder(false).settings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 16384},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 17}).bytes()
	c := newH2Builder(true).settings()
	c.enc.SetMaxDynamicTableSizeLimit(16384)
	c.enc.SetMaxDynamicTableSize(16384)
	for i, id := 0, uint32(1); i < 6; i, id = i+1, id+2 {
		// Fields of 2 KiB each, indexed: more than 4096 bytes of table in use.
		c.headers(id, true, reqFields("GET", fmt.Sprintf("/%d", i), fmt.Sprintf("x-f%d", i%3), tilde(2048)))
	}
	c.headers(13, true, reqFields("GET", "/big", "x-big", tilde(60<<10))) // in one frame of 60 KiB
	in := c.bytes()
	for _, ch := range readPlans {
		tr := newFakeRelay(newRelayHTTP())
		if _, err := feedHalf(&tr.r.u2c, up, ch.next()); err != nil {
			t.Fatal(err)
		}
		out, _ := relayFromClient(t, tr, in, ch)
		if tr.r.c2u.opaque {
			t.Fatalf("%s: the relay stopped inspecting", ch.name)
		}
		if n := checkRelayedRequests(t, in, out, 16384); n != 7 {
			t.Fatalf("%s: %d requests", ch.name, n)
		}
		if ins, _ := relayedAs(in, out); ins != (h2Inserts{inFrame: 7}) {
			t.Fatalf("%s: %+v, want every id inside its frame", ch.name, ins)
		}
	}
}

// TestH2RelayMetrics: requests and responses through both halves of one relay are
// counted as on the standard path, and forgotten once answered.
func TestH2RelayMetrics(t *testing.T) {
	grpcMsg := "\x00\x00\x00\x00\x0apayload..."
	c := newH2Builder(true).settings()
	c.headers(1, true, reqFields("GET", "/plain"))
	c.headers(3, false, reqFields("POST", "/pkg.S/M", "content-type", "application/grpc", "te", "trailers"))
	c.data(3, true, grpcMsg)
	c.headers(5, true, reqFields("GET", "/cancelled"))
	mustWrite(c.fr.WriteRSTStream(5, http2.ErrCodeCancel))
	c.headers(7, true, reqFields("GET", "/failed"))
	c.headers(9, true, reqFields("GET", "/failed-after-103"))
	u := newH2Builder(false).settings()
	mustWrite(u.fr.WriteSettingsAck())
	u.headers(1, false, hfs(":status", "103"))
	u.headers(1, false, hfs(":status", "200", "content-type", "text/plain"))
	u.data(1, true, "ok")
	u.headers(3, false, hfs(":status", "200", "content-type", "application/grpc"))
	u.data(3, false, grpcMsg)
	u.headers(3, true, hfs("grpc-status", "0"))
	mustWrite(u.fr.WriteRSTStream(7, http2.ErrCodeInternal))
	u.headers(9, false, hfs(":status", "103")) // not a final status: the reset is still a 502
	mustWrite(u.fr.WriteRSTStream(9, http2.ErrCodeInternal))
	in, resp := c.bytes(), u.bytes()

	for _, ch := range []readPlan{readPlans[0], readPlans[2]} {
		h := newRelayHTTP()
		tr := newFakeRelay(h)
		if _, err := feedHalf(&tr.r.c2u, in, ch.next()); err != nil {
			t.Fatal(err)
		}
		if len(tr.r.streams) != 4 || tr.r.maxReq != 9 || tr.r.maxAccepted != 9 {
			t.Fatalf("%s: after the requests, streams %v, maxReq %d, maxAccepted %d", ch.name, tr.r.streams, tr.r.maxReq, tr.r.maxAccepted)
		}
		if _, err := feedHalf(&tr.r.u2c, resp, ch.next()); err != nil {
			t.Fatal(err)
		}
		if len(tr.r.streams) != 0 {
			t.Fatalf("%s: streams %v left after their responses", ch.name, tr.r.streams)
		}
		for _, want := range []struct {
			proto, code, grpc, flag    string
			count, reqBytes, respBytes float64
		}{
			{"http2", "200", "", telemetry.FlagNone, 1, 0, 2},
			{"grpc", "200", "0", telemetry.FlagNone, 1, float64(len(grpcMsg)), float64(len(grpcMsg))},
			{"http2", "499", "", telemetry.FlagNone, 1, 0, 0},
			{"http2", "502", "", telemetry.FlagUpstreamFail, 2, 0, 0},
		} {
			labels := map[string]string{"direction": "outbound", "destination": "127.0.0.1:80",
				"request_protocol": want.proto, "response_code": want.code, "grpc_response_status": want.grpc,
				"connection_security_policy": telemetry.SecurityNone, "source_principal": telemetry.UnknownPrincipal,
				"destination_service": telemetry.UnknownService, "response_flags": want.flag}
			for _, m := range []struct {
				name  string
				value float64
			}{
				{"skiff_requests_total", want.count},
				{"skiff_request_bytes", want.reqBytes},
				{"skiff_response_bytes", want.respBytes},
			} {
				got, n := math.NaN(), 0
				for _, s := range requestSamples(t, h.metrics, m.name) {
					if fmt.Sprint(s.labels) == fmt.Sprint(labels) {
						got, n = s.value, n+1
					}
				}
				if n != 1 || got != m.value {
					t.Errorf("%s: %s%v = %v (%d series), want %v", ch.name, m.name, labels, got, n, m.value)
				}
			}
		}
		if n := len(requestSamples(t, h.metrics, "skiff_requests_total")); n != 4 {
			t.Errorf("%s: %d request series, want 4", ch.name, n)
		}
	}
}

// h2FuzzReads makes the read sizes of a fuzz input from cuts: a read of 1+c² bytes for
// each byte c in turn, and the whole input at once when cuts is empty. No more than
// about 2048 reads, to keep an iteration cheap.
func h2FuzzReads(cuts []byte, size int) func() int {
	floor := size / 2048
	i := 0
	return func() int {
		if len(cuts) == 0 {
			return math.MaxInt
		}
		c := int(cuts[i%len(cuts)])
		i++
		return max(1+c*c, floor)
	}
}

var h2FuzzCuts = [][]byte{nil, {0}, {2}, {0, 9, 40, 255}, {3, 1, 200}}

// FuzzH2RelayClient: whatever a client sends, c2u never panics or grows its buffer past
// h2MaxInspect+h2BufSize, keeps back no more than a frame it must read whole, and
// passes on every byte in order, adding only x-request-id literals as relayedAs allows;
// cut into reads differently, the same input makes as many bytes.
func FuzzH2RelayClient(f *testing.F) {
	for i, s := range h2ClientStreams() {
		f.Add(s.b, h2FuzzCuts[i%len(h2FuzzCuts)])
	}
	huge, _ := h2HugeClientStream()
	f.Add(huge, []byte{4})
	for i, s := range h2GarbageSeeds {
		f.Add([]byte(s), h2FuzzCuts[i%len(h2FuzzCuts)])
	}
	h := newRelayHTTP() // shared: c2u records only 499s, of two protocols
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var outs [2][]byte
		var lefts [2][]byte
		var opaque [2]bool
		for k, reads := range []func() int{h2FuzzReads(cuts, len(data)), h2FuzzReads(nil, len(data))} {
			tr := newFakeRelay(h)
			left, err := feedHalf(&tr.r.c2u, data, reads)
			if err != nil {
				t.Fatal(err)
			}
			out := tr.up.out.Bytes()
			if !bytes.HasSuffix(data, left) {
				t.Fatalf("%d bytes left in the buffer, not the end of the input", len(left))
			}
			// What stays in the buffer is a frame the relay must read whole, or the
			// start of a frame header.
			if len(left) >= h2FrameHeaderLen && (tr.r.c2u.opaque || tr.r.c2u.need != h2FrameHeaderLen+parseFrameHeader(left).length) {
				t.Fatalf("%d bytes left in the buffer (opaque %v, need %d)", len(left), tr.r.c2u.opaque, tr.r.c2u.need)
			}
			if _, err := relayedAs(data[:len(data)-len(left)], out); err != nil {
				t.Fatal(err)
			}
			outs[k], lefts[k], opaque[k] = out, left, tr.r.c2u.opaque
			tr.r.c2u.in.release()
		}
		if len(outs[0]) != len(outs[1]) || !bytes.Equal(lefts[0], lefts[1]) || opaque[0] != opaque[1] {
			t.Fatalf("read as cut by %v: %d bytes passed on, %d left, opaque %v; read whole: %d, %d, %v",
				cuts, len(outs[0]), len(lefts[0]), opaque[0], len(outs[1]), len(lefts[1]), opaque[1])
		}
	})
}

// FuzzH2RelayUpstream: whatever an upstream sends, u2c never panics or grows its buffer
// past h2MaxInspect+h2BufSize, and passes every byte on as it came, but for a frame it
// must read whole and has not yet.
func FuzzH2RelayUpstream(f *testing.F) {
	for i, s := range h2UpstreamStreams() {
		f.Add(s.b, h2FuzzCuts[i%len(h2FuzzCuts)])
	}
	for i, s := range h2GarbageSeeds {
		f.Add([]byte(s), h2FuzzCuts[i%len(h2FuzzCuts)])
	}
	h := newRelayHTTP() // shared: with no requests seen, u2c records nothing
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		for _, reads := range []func() int{h2FuzzReads(cuts, len(data)), h2FuzzReads(nil, len(data))} {
			tr := newFakeRelay(h)
			left, err := feedHalf(&tr.r.u2c, data, reads)
			if err != nil {
				t.Fatal(err)
			}
			if out := tr.down.out.Bytes(); !bytes.Equal(out, data[:len(data)-len(left)]) || !bytes.HasSuffix(data, left) {
				t.Fatalf("%d bytes in, %d passed on, %d left; first difference at %d",
					len(data), len(out), len(left), h2FirstDiff(out, data))
			}
			if len(left) >= h2FrameHeaderLen && (tr.r.u2c.opaque || tr.r.u2c.need != h2FrameHeaderLen+parseFrameHeader(left).length) {
				t.Fatalf("%d bytes left in the buffer (opaque %v, need %d)", len(left), tr.r.u2c.opaque, tr.r.u2c.need)
			}
			tr.r.u2c.in.release()
		}
	})
}

// TestH2RelayOwnFramesBetweenFrames: the relay's own frames to the client (the GOAWAY
// of retire, on Shutdown or when a request is refused) go between the upstream's frames:
// never inside a frame, nor between a HEADERS frame and its CONTINUATION (RFC 9113
// §4.3: a field block is a contiguous sequence of frames), whether or not u2c still
// inspects the frames. Here the relay retires while u2c has passed on the upstream's
// stream up to cut.
func TestH2RelayOwnFramesBetweenFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(b *h2Builder) (cut int)
	}{
		{name: "inside a DATA frame", make: func(b *h2Builder) int {
			b.headers(1, false, hfs(":status", "200"))
			at := b.w.Len()
			b.data(1, true, tilde(10000))
			return at + 5000
		}},
		{name: "between HEADERS and CONTINUATION", make: func(b *h2Builder) int {
			blk := b.block(hfs(":status", "200", "x-a", tilde(100)))
			mustWrite(b.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:50]}))
			at := b.w.Len()
			mustWrite(b.fr.WriteContinuation(1, true, blk[50:]))
			b.data(1, true, "body")
			return at
		}},
		// A field longer than the relay decodes (maxHeaderBytes) ends u2c's inspection.
		{name: "inside a DATA frame, after a field too long to decode", make: func(b *h2Builder) int {
			b.headers(1, false, hfs(":status", "200", "x-long", tilde(maxHeaderBytes+1)))
			at := b.w.Len()
			b.data(1, true, tilde(10000))
			return at + 5000
		}},
		// So does a frame larger than h2MaxInspect, as soon as its header is read.
		{name: "inside a frame too large to inspect", make: func(b *h2Builder) int {
			at := b.w.Len()
			b.headers(1, false, hfs(":status", "200", "x-huge", tilde(h2MaxInspect)))
			b.data(1, true, "body")
			return at + 5000
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newH2Builder(false).settings()
			cut := tc.make(u)
			in := u.bytes()
			tr := newFakeRelay(newRelayHTTP())
			if _, err := feedHalf(&tr.r.u2c, in[:cut], readPlans[0].next()); err != nil {
				t.Fatal(err)
			}
			tr.r.retire(0)
			if _, err := feedHalf(&tr.r.u2c, in[cut:], readPlans[0].next()); err != nil {
				t.Fatal(err)
			}
			// The client reads the upstream's frames and the GOAWAY (or, if the relay
			// cannot tell where frames end, no GOAWAY at all).
			out := tr.down.out.Bytes()
			goAway := appendGoAway(nil, 0, h2ErrNoError)
			at := bytes.Index(out, goAway)
			if _, err := readH2Events(out, h2DefaultTableSize); err != nil || at >= 0 &&
				!bytes.Equal(slices.Concat(out[:at], out[at+len(goAway):]), in) || at < 0 && !bytes.Equal(out, in) {
				t.Fatalf("the client got %d bytes, the relay's GOAWAY at %d (u2c opaque %v), for the upstream's %d, "+
					"cut at %d: %v", len(out), at, tr.r.u2c.opaque, len(in), cut, err)
			}
		})
	}
}
