package router

import "encoding/binary"

// HTTP/2 frame layout (RFC 9113 §4.1, §6), as the HTTP/2 relay (h2relay.go) reads it.
// The relay never parses a frame it passes through beyond its 9-byte header; the
// endpoints on either side check everything else.

const (
	h2FrameHeaderLen = 9

	h2Data         = 0x0
	h2Headers      = 0x1
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2PushPromise  = 0x5
	h2GoAway       = 0x7
	h2Continuation = 0x9

	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1 // SETTINGS and PING
	h2FlagEndHeaders = 0x4
	h2FlagPadded     = 0x8
	h2FlagPriority   = 0x20

	h2SettingHeaderTableSize = 0x1
	h2SettingMaxFrameSize    = 0x5

	h2ErrNoError       = 0x0
	h2ErrCancel        = 0x8
	h2ErrRefusedStream = 0x7

	// h2DefaultMaxFrameSize is SETTINGS_MAX_FRAME_SIZE until a peer says otherwise.
	h2DefaultMaxFrameSize = 16384
	// h2DefaultTableSize is SETTINGS_HEADER_TABLE_SIZE until a peer says otherwise.
	h2DefaultTableSize = 4096
)

// h2Preface is what a client sends first on an HTTP/2 connection.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

type h2FrameHeader struct {
	length int
	typ    byte
	flags  byte
	stream uint32
}

func parseFrameHeader(b []byte) h2FrameHeader {
	return h2FrameHeader{
		length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
}

func appendFrameHeader(dst []byte, length int, typ, flags byte, stream uint32) []byte {
	dst = append(dst, byte(length>>16), byte(length>>8), byte(length), typ, flags)
	return binary.BigEndian.AppendUint32(dst, stream)
}

func putFrameLength(b []byte, length int) {
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
}

// headerFragment returns where the header block fragment lies in the payload of a
// HEADERS or PUSH_PROMISE frame (after the pad length, priority fields or promised
// stream, before the padding); ok is false when the frame is too short for what its
// flags say, which the receiving endpoint will treat as a connection error.
func headerFragment(typ, flags byte, payload []byte) (start, end int, ok bool) {
	end = len(payload)
	if flags&h2FlagPadded != 0 && typ != h2Continuation {
		if len(payload) < 1 {
			return 0, 0, false
		}
		start = 1
		end -= int(payload[0])
	}
	switch {
	case typ == h2Headers && flags&h2FlagPriority != 0:
		start += 5
	case typ == h2PushPromise:
		start += 4
	}
	if start > end {
		return 0, 0, false
	}
	return start, end, true
}

// forEachSetting calls f for each setting of a SETTINGS frame's payload.
func forEachSetting(payload []byte, f func(id uint16, v uint32)) {
	for len(payload) >= 6 {
		f(binary.BigEndian.Uint16(payload), binary.BigEndian.Uint32(payload[2:]))
		payload = payload[6:]
	}
}

// appendLiteralField appends an HPACK "literal header field without indexing, new
// name" (RFC 7541 §6.2.2), which leaves both ends' dynamic tables as they were: bytes
// the relay adds to a header block do not change how the rest of the connection's blocks
// decode. Name and value are sent without Huffman coding.
func appendLiteralField(dst []byte, name, value string) []byte {
	dst = append(dst, 0x00)
	dst = appendHpackLength(dst, len(name))
	dst = append(dst, name...)
	dst = appendHpackLength(dst, len(value))
	return append(dst, value...)
}

// appendHpackLength appends a string length as an HPACK integer with a 7-bit prefix and
// the Huffman bit clear.
func appendHpackLength(dst []byte, n int) []byte {
	if n < 127 {
		return append(dst, byte(n))
	}
	dst = append(dst, 127)
	n -= 127
	for n >= 128 {
		dst = append(dst, byte(n&0x7f|0x80))
		n >>= 7
	}
	return append(dst, byte(n))
}

func appendRSTStream(dst []byte, stream, code uint32) []byte {
	dst = appendFrameHeader(dst, 4, h2RSTStream, 0, stream)
	return binary.BigEndian.AppendUint32(dst, code)
}

func appendGoAway(dst []byte, lastStream, code uint32) []byte {
	dst = appendFrameHeader(dst, 8, h2GoAway, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, lastStream)
	return binary.BigEndian.AppendUint32(dst, code)
}
