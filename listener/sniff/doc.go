// Package sniff tells, from the first bytes a client sends on a TCP connection,
// whether it speaks TLS, HTTP/1.x, HTTP/2 with prior knowledge, or something else
// (opaque TCP), and for TLS which server name (SNI) and ALPN protocols it asks for.
//
// Why it is shaped this way:
//
//   - Peek and replay, never consume. The listener peeks the bytes (bufio.Reader.Peek)
//     and gives them to [Classify]; whatever the answer, every peeked byte is later
//     relayed or parsed from the same buffer. A wrong or undecided answer can cost
//     routing precision, never a byte. Unknown traffic therefore degrades to [TCP],
//     which is relayed untouched.
//   - Decide on the first read. Clients send a whole request line or ClientHello in
//     their first segment, so one call normally decides. Classify asks for more only
//     while the bytes are a strict prefix of something it recognises, and answers TCP
//     as soon as they cannot be (an SSH banner, a database handshake, garbage). A
//     server-first protocol sends nothing at all: the listener's deadline decides, and
//     [Final] turns whatever arrived by then into an answer.
//   - Stable answers. Once Classify(b) decides, Classify of any extension of b gives
//     the same Result, so the caller never has to second-guess an answer.
//   - Bounded. Classify never wants more than [MaxPeek] bytes, so the peek buffer has
//     a fixed size and a stalling or flooding peer costs a bounded amount.
//   - Pure and cheap. No I/O, no goroutines, no locks; HTTP/1, HTTP/2 and TCP answers
//     allocate nothing, a TLS answer allocates only its SNI and ALPN strings.
package sniff
