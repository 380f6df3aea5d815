package sniff

// Protocol is what a connection's first client bytes say it speaks.
type Protocol uint8

const (
	// Unknown means not decided yet; Classify returns it only together with needMore.
	Unknown Protocol = iota
	// TCP is anything not recognised below: relay it untouched.
	TCP
	// TLS is a connection that starts with a TLS handshake record.
	TLS
	// HTTP1 is a connection that starts with an HTTP/1.0 or HTTP/1.1 request line.
	HTTP1
	// HTTP2 is a connection that starts with the HTTP/2 client connection preface
	// (prior knowledge, h2c).
	HTTP2
)

// String returns the name used in logs, metrics and config: "tcp", "tls", "http1",
// "http2", or "unknown".
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case TLS:
		return "tls"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	}
	return "unknown"
}

// Result is what Classify found.
type Result struct {
	Proto Protocol

	// SNI is the host_name from a TLS ClientHello's server_name extension, ASCII
	// lowercased, "" if the hello has none or could not be read in full.
	SNI string
	// ALPN lists the protocols a TLS ClientHello offers, in the client's order;
	// nil if it offers none or could not be read in full.
	ALPN []string

	// Method is the method token of an HTTP/1 request line, such as "GET",
	// "CONNECT" or a custom one, exactly as sent (methods are case-sensitive).
	Method string
}

// MaxPeek is the most bytes Classify will ever want: with len(b) >= MaxPeek it never
// reports needMore, and it reads nothing past b[:MaxPeek].
//
// It is one maximal TLS plaintext record (a 5-byte header and 2^14 bytes, RFC 8446
// §5.1). Clients put a ClientHello of up to 16 KiB in one record, and real ones are
// 0.5–2 KiB (2 KiB with post-quantum key shares), so the hello is read in full with
// room to spare even when a client splits it over many small records. A hello that
// does not fit is still reported as TLS, without SNI and ALPN. The HTTP/1 request line
// (maxLine) and the HTTP/2 preface (24 bytes) are well within it.
const MaxPeek = recordHeaderLen + maxRecordLen

// Classify reports what the bytes a client sent first, b, are.
//
// needMore is true when b is a strict prefix of something that could still be TLS,
// HTTP/1 or HTTP/2 and more bytes would decide it; r is then the zero Result. It is
// never true for len(b) >= MaxPeek. When needMore is false, r.Proto is never
// Unknown, and Classify of any longer input that starts with b returns the same r.
//
// Empty input needs more. Bytes that cannot start any recognised protocol are TCP.
// A TLS handshake record whose body is not a readable ClientHello is still TLS, with
// no SNI or ALPN. An SSLv2-compatible ClientHello is TCP.
//
// Classify does no I/O and does not retain or modify b. It allocates only for the SNI
// and ALPN of a TLS answer (one string that they all share, and the ALPN slice), for a
// copy of a ClientHello that the client split over several records, and for an HTTP/1
// method other than GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, PRI.
//
// Each call reads b from its start, in time linear in min(len(b), MaxPeek): call it
// again only when more bytes have arrived.
func Classify(b []byte) (r Result, needMore bool) {
	if len(b) == 0 {
		return Result{}, true
	}
	c := b[0]
	if c == recordTypeHandshake {
		return classifyTLS(b)
	}
	if isTchar[c] {
		return classifyHTTP(b)
	}
	return Result{Proto: TCP}, false
}

// Final is Classify for when no more bytes will come: the peek deadline passed, the
// client half-closed, or len(b) reached MaxPeek. It never returns Unknown. Where
// Classify would need more it answers TLS if b holds a whole valid TLS handshake
// record header (the rest will be relayed as opaque TLS) and TCP otherwise, including
// for no bytes at all (a server-first protocol, or a silent client).
func Final(b []byte) Result {
	r, more := Classify(b)
	if !more {
		return r
	}
	// Classify only needs more after a whole first record header if that header
	// was a valid TLS handshake record header.
	if len(b) >= recordHeaderLen && b[0] == recordTypeHandshake {
		return Result{Proto: TLS}
	}
	return Result{Proto: TCP}
}
