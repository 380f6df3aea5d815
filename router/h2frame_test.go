package router

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The relay reads and writes only a few parts of the HTTP/2 wire format itself: frame
// headers, where a header block fragment lies in its frame, SETTINGS, and the frames
// and HPACK literal it adds. Each is checked against x/net's Framer and HPACK decoder,
// which read them the way the endpoints on either side of the relay do.

func TestH2FrameHeaderRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		length       int
		typ, flags   byte
		stream, want uint32 // want: the stream read back, with the reserved bit dropped
	}{
		{length: 0, typ: h2Settings, flags: h2FlagAck},
		{length: 8, typ: 0x6, stream: 0}, // PING
		{length: 4, typ: h2RSTStream, stream: 1, want: 1},
		{length: 16384, typ: h2Headers, flags: h2FlagEndHeaders | h2FlagEndStream | h2FlagPadded | h2FlagPriority,
			stream: 3, want: 3},
		{length: 1<<24 - 1, typ: h2Data, flags: 0xff, stream: 1<<31 - 1, want: 1<<31 - 1},
		{length: 0x010203, typ: 0xbb, flags: 0x42, stream: 0x01020304, want: 0x01020304},
		// The reserved bit is sent as is and masked when read (RFC 9113 §4.1).
		{length: 5, typ: h2Continuation, stream: 1<<31 | 5, want: 5},
		{length: 1, typ: h2Data, stream: 1 << 31, want: 0},
	} {
		b := appendFrameHeader([]byte("prefix"), tc.length, tc.typ, tc.flags, tc.stream)
		if !bytes.HasPrefix(b, []byte("prefix")) || len(b) != len("prefix")+h2FrameHeaderLen {
			t.Fatalf("appendFrameHeader(%d, %#x, %#x, %#x) = %x", tc.length, tc.typ, tc.flags, tc.stream, b)
		}
		b = b[len("prefix"):]
		got := parseFrameHeader(b)
		want := h2FrameHeader{length: tc.length, typ: tc.typ, flags: tc.flags, stream: tc.want}
		if got != want {
			t.Errorf("parseFrameHeader(%x) = %+v, want %+v", b, got, want)
		}
		// x/net reads the same header.
		fh, err := http2.ReadFrameHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("x/net reads %x: %v", b, err)
		}
		if int(fh.Length) != tc.length || byte(fh.Type) != tc.typ || byte(fh.Flags) != tc.flags || fh.StreamID != tc.want {
			t.Errorf("x/net reads %x as %v, want %+v", b, fh, want)
		}
		// putFrameLength rewrites the length in place and nothing else.
		c := append([]byte(nil), b...)
		putFrameLength(c, tc.length^0x5a5a5a)
		if got := parseFrameHeader(c); got.length != tc.length^0x5a5a5a || !bytes.Equal(c[3:], b[3:]) {
			t.Errorf("putFrameLength(%x, %#x) = %x", b, tc.length^0x5a5a5a, c)
		}
	}
}

func TestH2FrameHeaderFragment(t *testing.T) {
	const pp = h2FlagPadded | h2FlagPriority
	for _, tc := range []struct {
		name       string
		typ, flags byte
		payload    string
		start, end int
		ok         bool
	}{
		{name: "plain headers", typ: h2Headers, payload: "abcdef", start: 0, end: 6, ok: true},
		{name: "empty headers", typ: h2Headers, payload: "", start: 0, end: 0, ok: true},
		{name: "END_STREAM, END_HEADERS change nothing", typ: h2Headers, flags: h2FlagEndStream | h2FlagEndHeaders,
			payload: "abc", start: 0, end: 3, ok: true},
		{name: "padded", typ: h2Headers, flags: h2FlagPadded, payload: "\x02abcPP", start: 1, end: 4, ok: true},
		{name: "padded, no padding", typ: h2Headers, flags: h2FlagPadded, payload: "\x00abc", start: 1, end: 4, ok: true},
		{name: "padded, padding only", typ: h2Headers, flags: h2FlagPadded, payload: "\x03PPP", start: 1, end: 1, ok: true},
		{name: "priority", typ: h2Headers, flags: h2FlagPriority, payload: "DDDDWabc", start: 5, end: 8, ok: true},
		{name: "priority, empty fragment", typ: h2Headers, flags: h2FlagPriority, payload: "DDDDW", start: 5, end: 5, ok: true},
		{name: "padded and priority", typ: h2Headers, flags: pp, payload: "\x01DDDDWabcP", start: 6, end: 9, ok: true},
		{name: "push promise", typ: h2PushPromise, payload: "SSSSabc", start: 4, end: 7, ok: true},
		{name: "padded push promise", typ: h2PushPromise, flags: h2FlagPadded, payload: "\x02SSSSabcPP", start: 5, end: 8, ok: true},
		// PRIORITY (0x20) means nothing on a PUSH_PROMISE.
		{name: "push promise, priority flag", typ: h2PushPromise, flags: h2FlagPriority, payload: "SSSSabc", start: 4, end: 7, ok: true},
		{name: "continuation", typ: h2Continuation, payload: "abc", start: 0, end: 3, ok: true},
		// CONTINUATION has neither padding nor priority: the flags are ignored.
		{name: "continuation, padded and priority flags", typ: h2Continuation, flags: pp, payload: "\x05abc", start: 0, end: 4, ok: true},
		{name: "padded, no pad length", typ: h2Headers, flags: h2FlagPadded, payload: "", ok: false},
		{name: "pad length past the payload", typ: h2Headers, flags: h2FlagPadded, payload: "\x04abc", ok: false},
		{name: "pad length 255, short payload", typ: h2Headers, flags: h2FlagPadded, payload: "\xffabc", ok: false},
		{name: "pad length eats the priority", typ: h2Headers, flags: pp, payload: "\x03DDDDWab", ok: false},
		{name: "priority, too short", typ: h2Headers, flags: h2FlagPriority, payload: "DDDD", ok: false},
		{name: "push promise, too short", typ: h2PushPromise, payload: "SSS", ok: false},
		{name: "padded push promise, pad past promised stream", typ: h2PushPromise, flags: h2FlagPadded,
			payload: "\x02SSSS", ok: false},
	} {
		start, end, ok := headerFragment(tc.typ, tc.flags, []byte(tc.payload))
		if ok != tc.ok || ok && (start != tc.start || end != tc.end) {
			t.Errorf("%s: headerFragment(%#x, %#x, %q) = %d, %d, %v; want %d, %d, %v",
				tc.name, tc.typ, tc.flags, tc.payload, start, end, ok, tc.start, tc.end, tc.ok)
		}
	}
}

// TestH2FrameHeaderFragmentFramer checks headerFragment against the fragment x/net's
// Framer finds in the frames it writes.
func TestH2FrameHeaderFragmentFramer(t *testing.T) {
	frag := []byte("header block fragment")
	for _, p := range []http2.HeadersFrameParam{
		{StreamID: 1, BlockFragment: frag, EndHeaders: true},
		{StreamID: 1, BlockFragment: frag, PadLength: 9},
		{StreamID: 3, BlockFragment: frag, Priority: http2.PriorityParam{StreamDep: 1, Weight: 200, Exclusive: true}},
		{StreamID: 5, BlockFragment: frag, PadLength: 255, EndStream: true,
			Priority: http2.PriorityParam{StreamDep: 3, Weight: 1}},
		{StreamID: 7, BlockFragment: nil, PadLength: 3},
	} {
		var w bytes.Buffer
		if err := http2.NewFramer(&w, nil).WriteHeaders(p); err != nil {
			t.Fatal(err)
		}
		checkFragment(t, w.Bytes(), p.BlockFragment)
	}
	for _, p := range []http2.PushPromiseParam{
		{StreamID: 1, PromiseID: 2, BlockFragment: frag, EndHeaders: true},
		{StreamID: 1, PromiseID: 4, BlockFragment: frag, PadLength: 17},
	} {
		var w bytes.Buffer
		if err := http2.NewFramer(&w, nil).WritePushPromise(p); err != nil {
			t.Fatal(err)
		}
		checkFragment(t, w.Bytes(), p.BlockFragment)
	}
	var w bytes.Buffer
	if err := http2.NewFramer(&w, nil).WriteContinuation(1, true, frag); err != nil {
		t.Fatal(err)
	}
	checkFragment(t, w.Bytes(), frag)
}

func checkFragment(t *testing.T, frame, want []byte) {
	t.Helper()
	fh := parseFrameHeader(frame)
	s, e, ok := headerFragment(fh.typ, fh.flags, frame[h2FrameHeaderLen:])
	if !ok || !bytes.Equal(frame[h2FrameHeaderLen:][s:e], want) {
		t.Errorf("headerFragment of %x: %d, %d, %v; want the fragment %q", frame, s, e, ok, want)
	}
}

func TestH2FrameLiteralField(t *testing.T) {
	for _, n := range []int{0, 1, 126, 127, 128, 254, 255, 300, 16383, 16384, 70000} {
		for _, tc := range []struct{ name, value string }{
			{name: "x-request-id", value: strings.Repeat("v", n)},
			{name: strings.Repeat("n", max(n, 1)), value: "value"},
		} {
			block := appendLiteralField([]byte(nil), tc.name, tc.value)
			// A literal without indexing, new name (RFC 7541 §6.2.2), no Huffman coding.
			if block[0] != 0x00 {
				t.Fatalf("literal for %d-byte name starts with %#x", len(tc.name), block[0])
			}
			if want := 1 + hpackLengthSize(len(tc.name)) + len(tc.name) + hpackLengthSize(len(tc.value)) + len(tc.value); len(block) != want {
				t.Errorf("literal for a %d-byte name, %d-byte value: %d bytes, want %d", len(tc.name), len(tc.value), len(block), want)
			}
			dec := hpack.NewDecoder(4096, nil)
			fields, err := dec.DecodeFull(block)
			if err != nil {
				t.Fatalf("HPACK decoder: %v, for a %d-byte name, %d-byte value", err, len(tc.name), len(tc.value))
			}
			if len(fields) != 1 || fields[0].Name != tc.name || fields[0].Value != tc.value || fields[0].Sensitive {
				t.Fatalf("decoded %d fields (first %.40q), want %.40q: %.40q", len(fields), fields, tc.name, tc.value)
			}
			// Without indexing: the decoder's dynamic table is still empty, so index 62
			// (its first entry) does not exist.
			if _, err := dec.DecodeFull([]byte{0x80 | 62}); err == nil {
				t.Fatalf("the literal for %.40q was added to the dynamic table", tc.name)
			}
		}
	}
}

// hpackLengthSize is the size of an HPACK integer with a 7-bit prefix (RFC 7541 §5.1).
func hpackLengthSize(n int) int {
	if n < 127 {
		return 1
	}
	size := 2
	for n -= 127; n >= 128; n >>= 7 {
		size++
	}
	return size
}

func TestH2FrameHpackLength(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{36, []byte{36}},
		{126, []byte{0x7e}},
		{127, []byte{0x7f, 0x00}},
		{128, []byte{0x7f, 0x01}},
		{254, []byte{0x7f, 0x7f}},
		{255, []byte{0x7f, 0x80, 0x01}},
		{300, []byte{0x7f, 0xad, 0x01}},         // 300-127 = 173 = 0x2d | 1<<7
		{1337, []byte{0x7f, 0xba, 0x09}},        // 1337-127 = 1210 = 0x3a | 9<<7
		{70000, []byte{0x7f, 0xf1, 0xa1, 0x04}}, // 70000-127 = 69873 = 0x71 | 0x21<<7 | 4<<14
	} {
		got := appendHpackLength([]byte{0xee}, tc.n)
		if !bytes.Equal(got, append([]byte{0xee}, tc.want...)) {
			t.Errorf("appendHpackLength(%d) = %x, want %x", tc.n, got[1:], tc.want)
		}
		// The Huffman bit (the top bit of the first byte) is clear.
		if got[1]&0x80 != 0 {
			t.Errorf("appendHpackLength(%d) sets the Huffman bit: %x", tc.n, got[1:])
		}
	}
}

func TestH2FrameForEachSetting(t *testing.T) {
	settings := []http2.Setting{
		{ID: http2.SettingHeaderTableSize, Val: 65536},
		{ID: http2.SettingEnablePush, Val: 0},
		{ID: http2.SettingMaxConcurrentStreams, Val: 1000},
		{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1},
		{ID: http2.SettingMaxFrameSize, Val: 1<<24 - 1},
		{ID: http2.SettingMaxHeaderListSize, Val: 0xffffffff},
		{ID: 0xabcd, Val: 0x01020304}, // unknown, passed on
	}
	var w bytes.Buffer
	if err := http2.NewFramer(&w, nil).WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	payload := w.Bytes()[h2FrameHeaderLen:]
	for _, tail := range [][]byte{nil, {0x00}, {0x00, 0x01, 0x00, 0x00, 0x10}} { // a partial setting is ignored
		var got []http2.Setting
		forEachSetting(append(append([]byte(nil), payload...), tail...), func(id uint16, v uint32) {
			got = append(got, http2.Setting{ID: http2.SettingID(id), Val: v})
		})
		if len(got) != len(settings) {
			t.Fatalf("with %d more bytes: %d settings, want %d: %v", len(tail), len(got), len(settings), got)
		}
		for i := range got {
			if got[i] != settings[i] {
				t.Errorf("setting %d: %v, want %v", i, got[i], settings[i])
			}
		}
	}
	called := false
	forEachSetting(nil, func(uint16, uint32) { called = true })
	forEachSetting([]byte{1, 2, 3, 4, 5}, func(uint16, uint32) { called = true })
	if called {
		t.Error("forEachSetting called f for a payload shorter than a setting")
	}
}

func TestH2FrameRSTStreamGoAway(t *testing.T) {
	for _, tc := range []struct{ stream, code uint32 }{
		{1, h2ErrCancel}, {3, h2ErrRefusedStream}, {1<<31 - 1, 0xffffffff}, {5, h2ErrNoError},
	} {
		b := appendRSTStream([]byte(nil), tc.stream, tc.code)
		f, err := http2.NewFramer(nil, bytes.NewReader(b)).ReadFrame()
		if err != nil {
			t.Fatalf("x/net reads RST_STREAM %x: %v", b, err)
		}
		rst, ok := f.(*http2.RSTStreamFrame)
		if !ok || rst.StreamID != tc.stream || uint32(rst.ErrCode) != tc.code || len(b) != h2FrameHeaderLen+4 {
			t.Errorf("appendRSTStream(%d, %#x) = %x, read as %v", tc.stream, tc.code, b, f)
		}
	}
	for _, tc := range []struct{ last, code uint32 }{
		{0, h2ErrNoError}, {7, h2ErrNoError}, {1<<31 - 1, 0x2}, {99, 0xffffffff},
	} {
		b := appendGoAway([]byte("x"), tc.last, tc.code)[1:]
		f, err := http2.NewFramer(nil, bytes.NewReader(b)).ReadFrame()
		if err != nil {
			t.Fatalf("x/net reads GOAWAY %x: %v", b, err)
		}
		ga, ok := f.(*http2.GoAwayFrame)
		if !ok || ga.StreamID != 0 || ga.LastStreamID != tc.last || uint32(ga.ErrCode) != tc.code ||
			len(ga.DebugData()) != 0 || len(b) != h2FrameHeaderLen+8 {
			t.Errorf("appendGoAway(%d, %#x) = %x, read as %v", tc.last, tc.code, b, f)
		}
	}
}

func TestH2FrameStatusCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"200", 200}, {"103", 103}, {"404", 404}, {"999", 999}, {"000", 0}, {"099", 99},
		{"", 0}, {"20", 0}, {"2000", 0}, {"20x", 0}, {"-20", 0}, {"+20", 0}, {" 200", 0}, {"2 0", 0},
		{"２00", 0}, {"\x0020", 0}, {"/00", 0}, {":00", 0},
	} {
		if got := statusCode(tc.in); got != tc.want {
			t.Errorf("statusCode(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
