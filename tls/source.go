package meshtls

import (
	"bytes"
	"crypto/sha256"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// MeshALPN is the ALPN protocol sidecars offer and accept between themselves: a
// ClientHello that carries it is mesh traffic for the inbound listener to terminate.
const MeshALPN = "skiff-mesh/1"

// curves are the key exchanges offered, best first: X25519, then P-256 for peers that
// must use a NIST curve.
var curves = []stdtls.CurveID{stdtls.X25519, stdtls.CurveP256}

// Defaults of Options.
const (
	DefaultDebounce         = 100 * time.Millisecond
	DefaultRecheck          = 30 * time.Second
	DefaultSessionCacheSize = 1024
)

const (
	// maxDebounce bounds how long a stream of events can put a reload off.
	maxDebounce = time.Second
	// retries of a load that failed in a way a writer part-way through explains (a
	// new certificate beside the old key), at 100, 200, 400 and 800 ms.
	maxRetries = 4
	firstRetry = 100 * time.Millisecond
)

// Options configures a Source. The zero value is ready to use.
type Options struct {
	// TrustDomain is the trust domain our identity and every peer's must be in. Empty
	// means the trust domain of the identity first loaded, kept from then on.
	TrustDomain string
	// Debounce is how long the directory must be quiet before its files are read again;
	// zero means DefaultDebounce.
	Debounce time.Duration
	// Recheck is how often the files are read even without a change event (for a missed
	// event, or a directory whose watch was lost) and the identity in force is checked
	// for expiry; zero means DefaultRecheck.
	Recheck time.Duration
	// OnEvent, when set, hears of every identity swapped in and every problem. It is
	// called from the Source's goroutine, one event at a time, and must not block.
	OnEvent func(Event)
	// SessionCacheSize is how many client sessions are kept for resumption, one per
	// peer address; zero means DefaultSessionCacheSize.
	SessionCacheSize int
	// Now is the clock for checking certificates; nil means time.Now.
	Now func() time.Time
}

// Event is something a Source did or found, for the caller to log and count.
type Event struct {
	// Identity is the identity in force after the event.
	Identity *Identity
	// Err is nil when Identity was just loaded and swapped in. Otherwise it says why
	// nothing changed: the files were rejected (wrapping ErrExpired, ErrKeyMismatch...,
	// and naming the file), the identity in force has expired (wrapping ErrExpired), or
	// the directory could not be watched. The identity in force stays in force.
	Err error
}

// Source is a workload identity that follows its directory: it holds the current
// *Identity behind an atomic pointer, reloads it when the files change, and keeps the
// previous one when new files fail a check. Its TLS configs read the identity at each
// handshake, so a rotation applies to the next handshake and to no connection already
// made.
type Source struct {
	dir      string
	td       string
	opts     Options
	cur      atomic.Pointer[Identity]
	sessions *sessionCache

	serverOnce sync.Once
	server     *stdtls.Config

	done      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once

	// Touched only by the watcher goroutine.
	watcher  *fsnotify.Watcher
	lastBad  string // what the last reported rejection was about, to report it once
	attempts int
}

// NewSource loads the identity in dir (see Load) and starts watching the directory. It
// fails when the first load does: there is no previous identity to keep. Close stops it.
func NewSource(dir string, opts Options) (*Source, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Recheck <= 0 {
		opts.Recheck = DefaultRecheck
	}
	if opts.SessionCacheSize <= 0 {
		opts.SessionCacheSize = DefaultSessionCacheSize
	}
	if opts.TrustDomain != "" {
		if err := CheckTrustDomain(opts.TrustDomain); err != nil {
			return nil, err
		}
	}
	s := &Source{
		dir:      dir,
		opts:     opts,
		sessions: newSessionCache(opts.SessionCacheSize),
		done:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	id, err := Load(dir, opts.TrustDomain, s.now())
	if err != nil {
		return nil, err
	}
	s.td = opts.TrustDomain
	if s.td == "" {
		s.td = id.ID.TrustDomain()
	}
	id.verified = newVerifyCache()
	s.cur.Store(id)

	// Watch the directory, not the files: writers replace files by rename, and
	// Kubernetes swaps the ..data symlink the files point through; both show up as
	// events in the directory, while a watch on a file would follow the old inode.
	var watchErr error
	if w, err := fsnotify.NewWatcher(); err != nil {
		watchErr = err
	} else if err := w.Add(dir); err != nil {
		_ = w.Close()
		watchErr = err
	} else {
		s.watcher = w
	}
	if watchErr != nil {
		watchErr = fmt.Errorf("watching %s: %w; reading it every %v instead", dir, watchErr, opts.Recheck)
	}
	go s.run(watchErr)
	return s, nil
}

// Current returns the identity in force. It is never nil and must not be modified.
func (s *Source) Current() *Identity { return s.cur.Load() }

// TrustDomain returns the trust domain peers must be in.
func (s *Source) TrustDomain() string { return s.td }

// Close stops watching. The configs keep working with the identity last in force.
func (s *Source) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	<-s.stopped
	return nil
}

func (s *Source) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

func (s *Source) emit(ev Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(ev)
	}
}

// run is the watcher goroutine: it alone reads the files after NewSource.
func (s *Source) run(watchErr error) {
	defer close(s.stopped)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if s.watcher != nil {
		events, errs = s.watcher.Events, s.watcher.Errors
		defer s.watcher.Close()
	}
	if watchErr != nil {
		s.emit(Event{Identity: s.Current(), Err: watchErr})
	}
	recheck := time.NewTicker(s.opts.Recheck)
	defer recheck.Stop()
	// Since Go 1.23 a stopped or reset timer delivers no stale tick.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var armed bool
	var first time.Time // the first event of a burst
	debounce := func() {
		now := time.Now()
		if !armed {
			armed, first = true, now
		}
		timer.Reset(min(s.opts.Debounce, first.Add(maxDebounce).Sub(now)))
	}
	for {
		select {
		case <-s.done:
			timer.Stop()
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue // a mode change alone changes no content
			}
			s.attempts = 0
			debounce()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				s.emit(Event{Identity: s.Current(), Err: fmt.Errorf("watching %s: %w", s.dir, err)})
			}
			s.attempts = 0
			debounce() // events may have been lost: read the files again
		case <-timer.C:
			armed = false
			if s.reload(s.attempts < maxRetries) {
				timer.Reset(firstRetry << s.attempts)
				armed, first = true, time.Now()
				s.attempts++
			}
		case <-recheck.C:
			s.rewatch()
			if !armed {
				s.reload(false)
			}
			if cur, now := s.Current(), s.now(); now.After(cur.NotAfter) {
				s.emit(Event{Identity: cur, Err: fmt.Errorf("%w: the identity in force, %s, expired at %s and %s holds no valid replacement",
					ErrExpired, cur.ID, stamp(cur.NotAfter), s.dir)})
			}
		}
	}
}

// rewatch watches the directory again when its watch was lost (it was removed and made
// again, say). Failure is quiet: the recheck reads the files anyway.
func (s *Source) rewatch() {
	if s.watcher != nil && len(s.watcher.WatchList()) == 0 {
		_ = s.watcher.Add(s.dir)
	}
}

// reload reads the files and swaps in a new identity when they hold one that differs
// from the identity in force and passes every check. It reports whether to try again
// soon: when mayRetry is set and the failure is one a writer part-way through explains.
func (s *Source) reload(mayRetry bool) (retry bool) {
	cur := s.Current()
	f, err := readIdentity(s.dir)
	var id *Identity
	key := ""
	if err == nil {
		sum := f.sum()
		if sum == cur.sum {
			s.lastBad = ""
			return false // what is in force already
		}
		key = hex.EncodeToString(sum[:])
		id, err = f.parse(s.td, s.now())
	}
	if err == nil {
		id.gen = cur.gen + 1
		id.verified = newVerifyCache()
		s.cur.Store(id)
		// Sessions made under the previous identity are not offered again: a full
		// handshake checks the peer against the trust bundle now in force.
		s.sessions.flush()
		s.lastBad = ""
		s.emit(Event{Identity: id})
		return false
	}
	if mayRetry && transient(err) {
		return true
	}
	if key == "" {
		key = err.Error()
	}
	if key == s.lastBad {
		return false // reported already; the same files are still there
	}
	s.lastBad = key
	s.emit(Event{Identity: cur, Err: err})
	return false
}

// transient reports whether a load failure may be a writer caught part-way: a new
// certificate beside the old key or bundle, a file missing or half written. An expired,
// not yet valid or foreign certificate is a whole file's verdict.
func transient(err error) bool {
	return !errors.Is(err, ErrExpired) && !errors.Is(err, ErrNotYetValid) && !errors.Is(err, ErrTrustDomain)
}

// ServerConfig returns the config for the inbound side of mesh connections. It is built
// once and shared: do not modify it (Clone it to change anything). It presents the
// identity in force at each handshake, requires a client certificate and verifies it
// (see PeerID), offers only MeshALPN, and issues session tickets that are honoured only
// while the identity they were made under is in force.
func (s *Source) ServerConfig() *stdtls.Config {
	s.serverOnce.Do(func() {
		c := &stdtls.Config{
			MinVersion:       stdtls.VersionTLS13,
			MaxVersion:       stdtls.VersionTLS13,
			CurvePreferences: curves,
			NextProtos:       []string{MeshALPN},
			// Go would verify the chain against ClientCAs fixed in the config; the roots
			// in force are checked in VerifyConnection instead, which also runs for a
			// resumed session.
			ClientAuth: stdtls.RequireAnyClientCert,
			GetCertificate: func(*stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
				return &s.Current().Certificate, nil
			},
			VerifyConnection: func(cs stdtls.ConnectionState) error {
				_, err := s.verifyPeer(cs, x509.ExtKeyUsageClientAuth)
				return err
			},
			Time: s.opts.Now,
		}
		c.WrapSession = func(cs stdtls.ConnectionState, ss *stdtls.SessionState) ([]byte, error) {
			ss.Extra = append(ss.Extra, genStamp(s.Current().gen))
			return c.EncryptTicket(cs, ss)
		}
		c.UnwrapSession = func(ticket []byte, cs stdtls.ConnectionState) (*stdtls.SessionState, error) {
			ss, err := c.DecryptTicket(ticket, cs)
			if ss == nil || err != nil {
				return nil, err
			}
			if !hasGenStamp(ss.Extra, s.Current().gen) {
				return nil, nil // made under an earlier identity: a full handshake instead
			}
			return ss, nil
		}
		s.server = c
	})
	return s.server
}

// ClientConfig returns a config for the outbound side of mesh connections: build it
// once per policy and keep it, since it reads the identity in force at each handshake.
// It presents our certificate, verifies the server's chain against the roots in force
// and its SPIFFE ID against the trust domain (there is no host name check), then calls
// expect, when not nil, with the server's ID: an error from expect fails the handshake.
// Every config from one Source shares one session cache, keyed by ServerName or, when
// that is empty, by the peer's address.
func (s *Source) ClientConfig(expect func(ID) error) *stdtls.Config {
	return &stdtls.Config{
		MinVersion:       stdtls.VersionTLS13,
		MaxVersion:       stdtls.VersionTLS13,
		CurvePreferences: curves,
		NextProtos:       []string{MeshALPN},
		// Go's own verification needs a host name, which a mesh peer is not known by;
		// VerifyConnection verifies the chain and the SPIFFE ID instead, and runs for
		// resumed sessions too.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*stdtls.CertificateRequestInfo) (*stdtls.Certificate, error) {
			return &s.Current().Certificate, nil
		},
		VerifyConnection: func(cs stdtls.ConnectionState) error {
			id, err := s.verifyPeer(cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if expect != nil {
				if err := expect(id); err != nil {
					return fmt.Errorf("peer %s: %w", id, err)
				}
			}
			return nil
		},
		ClientSessionCache: s.sessions,
		Time:               s.opts.Now,
	}
}

// verifyPeer checks a peer: it negotiated MeshALPN, its certificate chains to the roots
// in force for usage, and it carries one SPIFFE ID, with a path, in the trust domain.
func (s *Source) verifyPeer(cs stdtls.ConnectionState, usage x509.ExtKeyUsage) (ID, error) {
	if cs.NegotiatedProtocol != MeshALPN {
		return ID{}, fmt.Errorf("peer did not negotiate ALPN %q", MeshALPN)
	}
	if len(cs.PeerCertificates) == 0 {
		return ID{}, errors.New("peer presented no certificate")
	}
	cur, now := s.Current(), s.now()
	key := chainKey(cs.PeerCertificates, usage)
	if id, ok := cur.verified.get(key, now); ok {
		return id, nil
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: cur.Roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	if len(cs.PeerCertificates) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	id, err := IDFromCert(leaf)
	if err != nil {
		return ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	if id.Path() == "" {
		return ID{}, fmt.Errorf("peer certificate: %s is a trust domain's ID, not a workload's", id)
	}
	if !id.MemberOf(s.td) {
		return ID{}, fmt.Errorf("peer %s: %w %q", id, ErrTrustDomain, s.td)
	}
	cur.verified.put(key, id, chains[0])
	return id, nil
}

// verifyCache remembers the peer chains verified against one identity's roots, so that
// a peer seen before (every resumed session, every new connection from a sidecar
// already met) costs a hash rather than a signature check. It belongs to one Identity:
// a new trust bundle starts an empty cache. Only the time still needs checking on a hit.
type verifyCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedChain
}

type verifiedChain struct {
	id                  ID
	notBefore, notAfter time.Time // when every certificate of the chain is valid
}

// maxVerified bounds a verifyCache; when full it starts again empty.
const maxVerified = 4096

func newVerifyCache() *verifyCache {
	return &verifyCache{m: make(map[[sha256.Size]byte]verifiedChain)}
}

// chainKey identifies the certificates a peer presented, for one key usage.
func chainKey(certs []*x509.Certificate, usage x509.ExtKeyUsage) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(usage))
	h.Write(n[:])
	for _, c := range certs {
		binary.BigEndian.PutUint64(n[:], uint64(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (c *verifyCache) get(key [sha256.Size]byte, now time.Time) (ID, bool) {
	if c == nil {
		return ID{}, false
	}
	c.mu.Lock()
	v, ok := c.m[key]
	c.mu.Unlock()
	if !ok || now.Before(v.notBefore) || now.After(v.notAfter) {
		return ID{}, false
	}
	return v.id, true
}

func (c *verifyCache) put(key [sha256.Size]byte, id ID, chain []*x509.Certificate) {
	if c == nil {
		return
	}
	v := verifiedChain{id: id, notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, cert := range chain[1:] {
		if cert.NotBefore.After(v.notBefore) {
			v.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(v.notAfter) {
			v.notAfter = cert.NotAfter
		}
	}
	c.mu.Lock()
	if len(c.m) >= maxVerified {
		clear(c.m)
	}
	c.m[key] = v
	c.mu.Unlock()
}

// PeerID returns the SPIFFE ID of the peer of a connection made with a Source's config,
// whose handshake verified it. On a resumed connection it is the ID verified when the
// session was made (and checked again at resumption).
func PeerID(cs stdtls.ConnectionState) (ID, error) {
	if !cs.HandshakeComplete {
		return ID{}, errors.New("TLS handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return ID{}, errors.New("peer presented no certificate")
	}
	return IDFromCert(cs.PeerCertificates[0])
}

// genStamp marks a session ticket with the identity generation it was made under.
func genStamp(gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(genLabel), gen)
}

const genLabel = "skiff-gen:"

func hasGenStamp(extra [][]byte, gen uint64) bool {
	want := genStamp(gen)
	for _, e := range extra {
		if bytes.Equal(e, want) {
			return true
		}
	}
	return false
}

// sessionCache is an LRU client session cache that can be emptied at once, when the
// identity changes.
type sessionCache struct {
	size int
	lru  atomic.Pointer[lruBox]
}

type lruBox struct{ stdtls.ClientSessionCache }

func newSessionCache(size int) *sessionCache {
	c := &sessionCache{size: size}
	c.flush()
	return c
}

func (c *sessionCache) flush() {
	c.lru.Store(&lruBox{stdtls.NewLRUClientSessionCache(c.size)})
}

func (c *sessionCache) Get(key string) (*stdtls.ClientSessionState, bool) {
	return c.lru.Load().Get(key)
}

func (c *sessionCache) Put(key string, cs *stdtls.ClientSessionState) {
	c.lru.Load().Put(key, cs)
}

var _ stdtls.ClientSessionCache = (*sessionCache)(nil)
