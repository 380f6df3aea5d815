// Package park lets a quiet socket wait without a goroutine of its own.
//
// Go's runtime can only wait for a socket with a goroutine blocked on it, and a blocked
// goroutine costs a 2 KiB stack at the least (more if it ever grew) for as long as the
// connection stays open: for an idle relayed connection, two of them were most of what
// it cost. A waiter that has gone quiet instead puts its socket in one epoll set shared
// by the whole process, one-shot, and its goroutine ends. A single goroutine waits for
// that set (through the runtime's poller: the set's descriptor is itself pollable, so no
// thread blocks on it), and calls Wake for each waiter whose socket has something:
// bytes, an EOF, an error. What a parked waiter costs is its slot here and the epoll
// entry in the kernel.
//
// Sockets are added while the runtime holds a reference to them (RawConn.Control), so
// a descriptor is never added after its socket was closed and its number reused. A
// closed socket leaves the set by itself, without an event: whoever closes a socket
// whose waiter may be parked takes it out first (Unpark) and ends it. Each parking gets
// a new token, so an event that arrives for an earlier one is ignored.
package park
