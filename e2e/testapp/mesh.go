package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	meshtls "skiff/tls"
)

func init() {
	moreCmds["mesh-dial"] = meshDial
	moreCmds["mesh-load"] = meshLoad
	moreCmds["capture"] = capture
	moreCmds["mesh-headers"] = serveMeshHeaders
	moreUsage += `
mTLS between sidecars:
  mesh-headers -listen ADDR
            HTTP/1.1 and h2c; answers {"proto","path","xfcc":[...]}: the request's
            X-Forwarded-Client-Cert values
  mesh-dial -addr HOST:PORT -cert-dir D [-n N] [-resume]
            N mesh mTLS handshakes (skiff's ALPN, the identity in D) one after another;
            reports handshakes/s, the peer's SPIFFE ID and the serials it presented
  mesh-load [-url URL] [-tcp HOST:PORT] -duration D [-conc N]
            until D passes (or SIGTERM), N workers each alternate a GET (a new connection each)
            and a 1 KiB echo over a new TCP connection (either may be left out);
            reports the counts and every failure
  capture   -dev IF -marker A[,B...]
            records every frame on IF (AF_PACKET) until SIGTERM, then reports the
            frames, bytes and which markers appeared in any frame
`
}

// MeshHeaders is mesh-headers' answer.
type MeshHeaders struct {
	Proto string   `json:"proto"`
	Path  string   `json:"path"`
	XFCC  []string `json:"xfcc"`
}

func serveMeshHeaders(args []string) error {
	ln, err := listen(args, "mesh-headers", nil)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(MeshHeaders{Proto: r.Proto, Path: r.URL.Path, XFCC: r.Header.Values("X-Forwarded-Client-Cert")})
	})
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// MeshDialResult is mesh-dial's result.
type MeshDialResult struct {
	Result
	N       int      `json:"n"`
	Resumed int      `json:"resumed"`
	Seconds float64  `json:"seconds"`
	PerSec  float64  `json:"per_sec"`
	PeerID  string   `json:"peer_id"`
	Serials []string `json:"serials"` // distinct, in the order first seen
}

func meshDial(args []string) error {
	var (
		addr, dir string
		n         int
		resume    bool
	)
	if err := clientFlags("mesh-dial", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "address of a sidecar's inbound port")
		fs.StringVar(&dir, "cert-dir", "", "directory with tls.crt, tls.key, ca.crt")
		fs.IntVar(&n, "n", 1, "handshakes")
		fs.BoolVar(&resume, "resume", false, "resume sessions (default: a full handshake each)")
	}); err != nil {
		return err
	}
	src, err := meshtls.NewSource(dir, meshtls.Options{})
	if err != nil {
		return err
	}
	defer src.Close()
	cfg := src.ClientConfig(nil)
	ticket := make(chan struct{}, 1)
	cfg.ClientSessionCache = nil
	if resume {
		cfg.ClientSessionCache = &signalCache{ClientSessionCache: tls.NewLRUClientSessionCache(8), put: ticket}
	}
	res := MeshDialResult{}
	seen := map[string]bool{}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := func() error {
			raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
			c := tls.Client(raw, cfg)
			if err := c.Handshake(); err != nil {
				return fmt.Errorf("handshake %d: %w", i, err)
			}
			st := c.ConnectionState()
			if st.DidResume {
				res.Resumed++
			}
			id, err := meshtls.PeerID(st)
			if err != nil {
				return err
			}
			res.PeerID = id.String()
			if s := st.PeerCertificates[0].SerialNumber.Text(16); !seen[s] {
				seen[s] = true
				res.Serials = append(res.Serials, s)
			}
			if resume {
				// The session ticket comes just after the handshake, and is stored when a
				// read processes it.
				go func() { _, _ = c.Read(make([]byte, 1)) }()
				select {
				case <-ticket:
				case <-time.After(2 * time.Second):
					return fmt.Errorf("handshake %d: no session ticket", i)
				}
			}
			return nil
		}(); err != nil {
			res.fail(err)
			break
		}
		res.N++
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.PerSec = float64(res.N) / res.Seconds
	}
	res.OK = res.Error == "" && res.N == n
	emit(res)
	return nil
}

// signalCache says when a session ticket was stored.
type signalCache struct {
	tls.ClientSessionCache
	put chan struct{}
}

func (c *signalCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	select {
	case c.put <- struct{}{}:
	default:
	}
}

// MeshLoadResult is mesh-load's result.
type MeshLoadResult struct {
	Result
	HTTP     int64    `json:"http"`
	TCP      int64    `json:"tcp"`
	Failures int64    `json:"failures"`
	Errors   []string `json:"errors"` // the first few
}

func meshLoad(args []string) error {
	var (
		url, tcp string
		dur      time.Duration
		conc     int
	)
	if err := clientFlags("mesh-load", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "URL to GET")
		fs.StringVar(&tcp, "tcp", "", "echo server address")
		fs.DurationVar(&dur, "duration", 5*time.Second, "how long")
		fs.IntVar(&conc, "conc", 4, "workers")
	}); err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var (
		res  MeshLoadResult
		mu   sync.Mutex
		nh   atomic.Int64
		nt   atomic.Int64
		nf   atomic.Int64
		wg   sync.WaitGroup
		stop = time.Now().Add(dur)
	)
	fail := func(err error) {
		nf.Add(1)
		mu.Lock()
		if len(res.Errors) < 10 {
			res.Errors = append(res.Errors, err.Error())
		}
		mu.Unlock()
	}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 64)
	// SIGTERM ends the load early, as the duration would.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	emit(map[string]string{"loading": url + " " + tcp})
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				if url != "" {
					if err := getOnce(client, url); err != nil {
						fail(err)
					} else {
						nh.Add(1)
					}
				}
				if tcp != "" {
					if err := echoOnce(tcp, msg); err != nil {
						fail(err)
					} else {
						nt.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	res.HTTP, res.TCP, res.Failures = nh.Load(), nt.Load(), nf.Load()
	res.OK = res.Failures == 0
	emit(res)
	return nil
}

func getOnce(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func echoOnce(addr string, msg []byte) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if err := c.CloseWrite(); err != nil {
		return err
	}
	back, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("echo from %s: %w", addr, err)
	}
	if !bytes.Equal(back, msg) {
		return fmt.Errorf("echo from %s: %d bytes back, sent %d", addr, len(back), len(msg))
	}
	return nil
}

// CaptureResult is capture's result.
type CaptureResult struct {
	Result
	Frames int64 `json:"frames"`
	Bytes  int64 `json:"bytes"`
	// TLSFrames counts frames holding what looks like a TLS 1.2/1.3 application data
	// record header (0x17 0x03 0x03).
	TLSFrames int64           `json:"tls_frames"`
	Markers   map[string]bool `json:"markers"`
}

func capture(args []string) error {
	var dev, markers string
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.StringVar(&dev, "dev", "", "interface")
	fs.StringVar(&markers, "marker", "", "comma-separated strings to look for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return err
	}
	proto := htons(syscall.ETH_P_ALL)
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(proto))
	if err != nil {
		return fmt.Errorf("AF_PACKET socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("binding to %s: %w", dev, err)
	}
	tv := syscall.NsecToTimeval(int64(100 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	res := CaptureResult{Markers: map[string]bool{}}
	var want [][]byte
	for _, m := range strings.Split(markers, ",") {
		if m != "" {
			want = append(want, []byte(m))
			res.Markers[m] = false
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	emit(map[string]string{"capturing": dev})
	buf := make([]byte, 1<<16)
	for ctx.Err() == nil {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			res.fail(err)
			break
		}
		res.Frames++
		res.Bytes += int64(n)
		if bytes.Contains(buf[:n], []byte{0x17, 0x03, 0x03}) {
			res.TLSFrames++
		}
		for _, m := range want {
			if bytes.Contains(buf[:n], m) {
				res.Markers[string(m)] = true
			}
		}
	}
	res.OK = res.Error == ""
	emit(res)
	os.Stdout.Sync()
	return nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
