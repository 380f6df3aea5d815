//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The testapp clients' results (mirrors of testapp's JSON).

type result struct {
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	ErrorKind string `json:"error_kind"`
}

type transferResult struct {
	result
	Bytes        int64   `json:"bytes"`
	SHA256       string  `json:"sha256"`
	RemoteBytes  int64   `json:"remote_bytes"`
	RemoteSHA256 string  `json:"remote_sha256"`
	Seconds      float64 `json:"seconds"`
	MiBPerSec    float64 `json:"mib_per_sec"`
}

type probeResult struct {
	result
	Connected bool    `json:"connected"`
	Outcome   string  `json:"outcome"`
	Data      string  `json:"data"`
	MS        float64 `json:"ms"`
}

type bannerResult struct {
	result
	Banner   string  `json:"banner"`
	BannerMS float64 `json:"banner_ms"`
	// DialBannerMS includes the TCP handshake.
	DialBannerMS float64 `json:"dial_banner_ms"`
	Echo         string  `json:"echo"`
}

type grpcResult struct {
	result
	UnaryBytes  int `json:"unary_bytes"`
	StreamMsgs  int `json:"stream_msgs"`
	StreamBytes int `json:"stream_bytes"`
}

type wsResult struct {
	result
	Messages int `json:"messages"`
	Bytes    int `json:"bytes"`
}

type httpEcho struct {
	Method     string `json:"method"`
	Path       string `json:"path"`
	Proto      string `json:"proto"`
	Host       string `json:"host"`
	BodyLen    int64  `json:"body_len"`
	BodySHA256 string `json:"body_sha256"`
}

// greeting is what the banner server sends first.
const greeting = "220 skiff-e2e ESMTP\r\n"

// sinkReplyLen is the length of the sink's answer to an upload of n bytes: the bytes the
// client receives back.
func sinkReplyLen(n int64, sum string) int64 {
	b, _ := json.Marshal(struct {
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
	}{n, sum})
	return int64(len(b)) + 1
}

// send uploads n bytes to a sink at addr from ns and requires the sink to have got them
// intact after the half-close.
func send(t *testing.T, ns *netNS, addr string, n int64) transferResult {
	t.Helper()
	var r transferResult
	ns.client(t, time.Minute, &r, "send", "-addr", addr, "-bytes", fmt.Sprint(n))
	if !r.OK {
		t.Fatalf("upload of %d bytes to %s failed: %s (%s)", n, addr, r.Error, r.ErrorKind)
	}
	if r.RemoteBytes != n || r.RemoteSHA256 != r.SHA256 {
		t.Fatalf("upload to %s: sent %d bytes sha256 %s, sink got %d bytes sha256 %s", addr, n, r.SHA256, r.RemoteBytes, r.RemoteSHA256)
	}
	t.Logf("upload of %d bytes to %s: intact, %.3fs (%.0f MiB/s)", n, addr, r.Seconds, r.MiBPerSec)
	return r
}

// sendFails tries the same upload and requires the connection to be refused.
func sendRefused(t *testing.T, ns *netNS, addr string) {
	t.Helper()
	var r transferResult
	ns.client(t, 30*time.Second, &r, "send", "-addr", addr, "-bytes", "1024")
	if r.OK || r.ErrorKind != "refused" {
		t.Errorf("upload to %s: want the connection refused, got ok=%v error=%q (%s)", addr, r.OK, r.Error, r.ErrorKind)
	}
}

// echo sends n bytes to an echo server and requires them back, then the server's
// half-close in answer to the client's.
func echo(t *testing.T, ns *netNS, addr string, n int64) transferResult {
	t.Helper()
	var r transferResult
	ns.client(t, time.Minute, &r, "echo-client", "-addr", addr, "-bytes", fmt.Sprint(n))
	if !r.OK {
		t.Fatalf("echo of %d bytes via %s failed: %s (%s)", n, addr, r.Error, r.ErrorKind)
	}
	return r
}

func probe(t *testing.T, ns *netNS, args ...string) probeResult {
	t.Helper()
	var r probeResult
	ns.client(t, 30*time.Second, &r, append([]string{"probe"}, args...)...)
	return r
}

// curlEcho makes an HTTP request with curl from ns to the http server and returns what
// the server saw. args go before the URL (e.g. --http2-prior-knowledge).
func curlEcho(t *testing.T, ns *netNS, url string, args ...string) httpEcho {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--fail", "--max-time", "15"}, args...)
	out := ns.mustExec(t, 30*time.Second, append(argv, url)...)
	var e httpEcho
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatalf("curl %s: answer %q: %v", url, out, err)
	}
	return e
}

// httpURL is the http server's URL at a, with path.
func httpURL(a netip.Addr, path string) string {
	return "http://" + hostPort(a, portHTTP) + path
}

// bodyFile writes n random bytes to a file for curl to POST and returns its path and
// sha256.
func bodyFile(t *testing.T, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{'b', 'o', 'd', 'y'}).Read(b)
	p := filepath.Join(t.TempDir(), "body.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// checkHTTP runs the HTTP/1.1 and h2c requests against the http server at a from ns:
// a GET and a POST with a body each, checking what the server saw.
func checkHTTP(t *testing.T, ns *netNS, a netip.Addr) {
	t.Helper()
	body, sum := bodyFile(t, 300<<10)
	for _, c := range []struct {
		name, flag, proto string
	}{
		{"HTTP/1.1", "--http1.1", "HTTP/1.1"},
		{"h2c", "--http2-prior-knowledge", "HTTP/2.0"},
	} {
		e := curlEcho(t, ns, httpURL(a, "/get/"+c.name), c.flag)
		if e.Method != "GET" || e.Path != "/get/"+c.name || e.Proto != c.proto || e.BodyLen != 0 {
			t.Errorf("%s GET: server saw %+v, want GET /get/%s over %s", c.name, e, c.name, c.proto)
		}
		e = curlEcho(t, ns, httpURL(a, "/post"), c.flag, "-H", "Content-Type: application/octet-stream", "--data-binary", "@"+body)
		if e.Method != "POST" || e.Proto != c.proto || e.BodyLen != 300<<10 || e.BodySHA256 != sum {
			t.Errorf("%s POST: server saw %+v, want POST over %s with %d bytes sha256 %s", c.name, e, c.proto, 300<<10, sum)
		}
	}
}

// checkSaves requires each *-save command's output in ns to contain (or not) skiff's chains.
func checkSaves(t *testing.T, ns *netNS, want bool, cmds ...string) {
	t.Helper()
	for _, cmd := range cmds {
		out := string(ns.mustExec(t, 20*time.Second, cmd))
		if has := strings.Contains(out, "SKIFF"); has != want {
			t.Errorf("%s in %s: SKIFF chains present=%v, want %v:\n%s", cmd, ns.name, has, want, out)
		}
	}
}

var (
	nftSaves    = []string{"iptables-nft-save", "ip6tables-nft-save"}
	legacySaves = []string{"iptables-legacy-save", "ip6tables-legacy-save"}
	allSaves    = append(append([]string{}, nftSaves...), legacySaves...)
)
