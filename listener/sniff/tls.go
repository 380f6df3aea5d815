package sniff

import "strings"

const (
	recordHeaderLen     = 5
	maxRecordLen        = 1 << 14 // TLSPlaintext.length limit, RFC 8446 §5.1
	recordTypeHandshake = 22

	handshakeHeaderLen  = 4
	typeClientHello     = 1
	extServerName       = 0  // RFC 6066 §3
	extALPN             = 16 // RFC 7301 §3.1
	serverNameHost      = 0  // NameType host_name
	maxHostName         = 255
	maxLegacySessionID  = 32
	clientHelloFixedLen = 2 + 32 // legacy_version, random
)

// validRecord reports whether h, at least 5 bytes, starts with the header of a TLS
// handshake record: content type 22, version 3.0 to 3.4 (SSL 3.0 to TLS 1.3, which
// clients put there for compatibility), and a length of 1 to 2^14.
func validRecord(h []byte) bool {
	n := int(h[3])<<8 | int(h[4])
	return h[0] == recordTypeHandshake && h[1] == 3 && h[2] <= 4 && n > 0 && n <= maxRecordLen
}

// classifyTLS classifies b, which starts with a handshake content type byte.
//
// b is TLS as soon as its first 5 bytes are a valid handshake record header: from
// then on the answer is TLS, with the SNI and ALPN of the ClientHello once all of it
// has arrived, or without them if the first handshake message is not a ClientHello, is
// malformed, is carried in malformed records, or does not fit in MaxPeek bytes. The
// bytes are TLS whatever their body says, and relaying them untouched is safe.
func classifyTLS(b []byte) (Result, bool) {
	if len(b) < recordHeaderLen {
		// Decide on as much of the header as there is.
		if len(b) > 1 && b[1] != 3 || len(b) > 2 && b[2] > 4 || len(b) > 3 && b[3] > maxRecordLen>>8 {
			return Result{Proto: TCP}, false
		}
		return Result{}, true
	}
	if !validRecord(b) {
		return Result{Proto: TCP}, false
	}
	msg, st := firstHandshake(b)
	switch st {
	case helloMore:
		return Result{}, true
	case helloDone:
		return parseClientHello(msg), false
	}
	return Result{Proto: TLS}, false
}

type helloStatus uint8

const (
	helloMore helloStatus = iota // the ClientHello is not all there yet
	helloDone                    // the ClientHello message is all there
	helloNone                    // no readable ClientHello: not one, malformed records, or too big
)

// firstHandshake reassembles the first handshake message carried by the records at the
// start of b, whose first record header is valid. When it returns helloDone, msg is
// the whole message, header included: a sub-slice of b when one record carries it
// (every real client), else a copy. It looks at nothing past MaxPeek, and decides
// at each step only on bytes before that step, so decisions hold as b grows.
func firstHandshake(b []byte) (msg []byte, st helloStatus) {
	if len(b) > MaxPeek {
		b = b[:MaxPeek]
	}
	var (
		hdr     [handshakeHeaderLen]byte // the message header, which may span records
		got     int                      // message bytes in the records before this one
		need    = -1                     // length of the whole message, once known
		pos     int                      // start of this record in b
		records int                      // records before this one
	)
	for {
		if len(b)-pos < recordHeaderLen {
			return nil, ranOut(b)
		}
		if records > 0 && !validRecord(b[pos:]) {
			return nil, helloNone
		}
		n := int(b[pos+3])<<8 | int(b[pos+4])
		start := pos + recordHeaderLen
		frag := b[start:min(start+n, len(b))]

		if need < 0 {
			// Collect the message header.
			for i := 0; got+i < handshakeHeaderLen && i < len(frag); i++ {
				hdr[got+i] = frag[i]
			}
			if got+len(frag) > 0 && hdr[0] != typeClientHello {
				return nil, helloNone
			}
			if got+len(frag) >= handshakeHeaderLen {
				need = handshakeHeaderLen + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
			}
		}
		if need >= 0 {
			// The least b could hold when the message ends: the rest of it, plus
			// another record header if it goes on past this record.
			rest := need - got
			end := start + rest
			if rest > n {
				end += recordHeaderLen
			}
			if end > MaxPeek {
				return nil, helloNone
			}
			if rest <= len(frag) {
				if records == 0 {
					return frag[:need], helloDone
				}
				return gather(b, need), helloDone
			}
		}
		if len(frag) < n {
			return nil, ranOut(b)
		}
		got += n
		pos = start + n
		records++
	}
}

// ranOut is the status when b, valid so far, ends before the ClientHello does.
func ranOut(b []byte) helloStatus {
	if len(b) >= MaxPeek {
		return helloNone
	}
	return helloMore
}

// gather copies the first need bytes of the handshake stream carried by the records at
// the start of b, which firstHandshake checked. Clients split a hello over records only
// when it exceeds a record, so this rarely runs.
func gather(b []byte, need int) []byte {
	msg := make([]byte, 0, need)
	for pos := 0; len(msg) < need; {
		n := int(b[pos+3])<<8 | int(b[pos+4])
		start := pos + recordHeaderLen
		msg = append(msg, b[start:start+min(n, need-len(msg))]...)
		pos = start + n
	}
	return msg
}

// parseClientHello reads the SNI and ALPN of msg, a whole ClientHello message
// with its handshake header (RFC 8446 §4.1.2). If any part of the message is malformed
// it reports neither: a hello that a TLS server would reject says nothing reliable.
func parseClientHello(msg []byte) Result {
	r := Result{Proto: TLS}
	s := reader(msg[handshakeHeaderLen:])
	var sessionID, suites, compression, exts reader
	if !s.skip(clientHelloFixedLen) ||
		!s.vec8(&sessionID) || len(sessionID) > maxLegacySessionID ||
		!s.vec16(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!s.vec8(&compression) || len(compression) < 1 {
		return r
	}
	if len(s) == 0 {
		return r // no extensions (SSL 3.0 / TLS 1.0-1.2 may omit them)
	}
	if !s.vec16(&exts) || len(s) != 0 {
		return r
	}
	var (
		host     []byte
		alpn     reader // the ProtocolNameList
		nALPN    int
		seenSNI  bool
		seenALPN bool
	)
	for len(exts) > 0 {
		var typ uint16
		var data reader
		if !exts.u16(&typ) || !exts.vec16(&data) {
			return r
		}
		switch typ {
		case extServerName:
			if seenSNI {
				return r
			}
			seenSNI = true
			var list reader
			if !data.vec16(&list) || len(list) == 0 || len(data) != 0 {
				return r
			}
			for len(list) > 0 {
				var nameType uint8
				var name reader
				if !list.u8(&nameType) || !list.vec16(&name) {
					return r
				}
				if nameType != serverNameHost {
					continue
				}
				if host != nil || !validHostName(name) {
					return r
				}
				host = name
			}
		case extALPN:
			if seenALPN {
				return r
			}
			seenALPN = true
			if !data.vec16(&alpn) || len(alpn) == 0 || len(data) != 0 {
				return r
			}
			for l := alpn; len(l) > 0; nALPN++ {
				var p reader
				if !l.vec8(&p) || len(p) == 0 {
					return r
				}
			}
		}
	}
	r.setNames(host, alpn, nALPN)
	return r
}

// validHostName reports whether h can be a HostName in server_name: 1 to 255 printable
// ASCII bytes without spaces and with no trailing dot (RFC 6066 §3).
func validHostName(h []byte) bool {
	if len(h) == 0 || len(h) > maxHostName || h[len(h)-1] == '.' {
		return false
	}
	for _, c := range h {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// setNames sets r.SNI to host, lowercased, and r.ALPN to the n names in list, a
// well-formed ProtocolNameList. All the strings share one allocation.
func (r *Result) setNames(host []byte, list reader, n int) {
	size := len(host) + len(list) - n // less the length bytes
	if size == 0 {
		return
	}
	var sb strings.Builder
	sb.Grow(size)
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		sb.WriteByte(c)
	}
	for l := list; len(l) > 0; {
		var p reader
		l.vec8(&p)
		sb.Write(p)
	}
	s := sb.String()
	if len(host) > 0 {
		r.SNI = s[:len(host)]
	}
	if n == 0 {
		return
	}
	r.ALPN = make([]string, n)
	s = s[len(host):]
	for i, l := 0, list; len(l) > 0; i++ {
		var p reader
		l.vec8(&p)
		r.ALPN[i], s = s[:len(p)], s[len(p):]
	}
}

// reader reads the big-endian integers and length-prefixed vectors of TLS's
// presentation language (RFC 8446 §3) off the front of a byte slice. Each method
// reports whether there were enough bytes, and consumes nothing if not.
type reader []byte

func (s *reader) skip(n int) bool {
	if len(*s) < n {
		return false
	}
	*s = (*s)[n:]
	return true
}

func (s *reader) u8(v *uint8) bool {
	if len(*s) < 1 {
		return false
	}
	*v = (*s)[0]
	*s = (*s)[1:]
	return true
}

func (s *reader) u16(v *uint16) bool {
	if len(*s) < 2 {
		return false
	}
	*v = uint16((*s)[0])<<8 | uint16((*s)[1])
	*s = (*s)[2:]
	return true
}

// vec8 reads a vector with a 1-byte length into v.
func (s *reader) vec8(v *reader) bool {
	if len(*s) < 1 || len(*s)-1 < int((*s)[0]) {
		return false
	}
	n := 1 + int((*s)[0])
	*v = (*s)[1:n:n]
	*s = (*s)[n:]
	return true
}

// vec16 reads a vector with a 2-byte length into v.
func (s *reader) vec16(v *reader) bool {
	if len(*s) < 2 {
		return false
	}
	n := 2 + (int((*s)[0])<<8 | int((*s)[1]))
	if len(*s) < n {
		return false
	}
	*v = (*s)[2:n:n]
	*s = (*s)[n:]
	return true
}
