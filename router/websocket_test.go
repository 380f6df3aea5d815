package router

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsEcho echoes every message; on "ping-me" it pings the client and says how it went.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(8 << 20)
	ctx := r.Context()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText && string(data) == "ping-me" {
			go func() {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				msg := "pong-ok"
				if err := c.Ping(pctx); err != nil {
					msg = "pong-err: " + err.Error()
				}
				_ = c.Write(ctx, websocket.MessageText, []byte(msg))
			}()
			continue
		}
		if err := c.Write(ctx, typ, data); err != nil {
			return
		}
	}
}

func TestWebSocket(t *testing.T) {
	b := startBackend(t, wsEcho, false)
	p := startProxy(t, b.addr, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, resp, err := websocket.Dial(ctx, "ws://"+p.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	c.SetReadLimit(8 << 20)

	for _, m := range []struct {
		typ  websocket.MessageType
		data []byte
	}{
		{websocket.MessageText, []byte("hello, world")},
		{websocket.MessageBinary, []byte{0, 1, 2, 0xff, '\r', '\n'}},
		{websocket.MessageBinary, randomBytes(t, 4<<20)},
		{websocket.MessageText, []byte("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")},
	} {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			t.Fatalf("write %d bytes: %v", len(m.data), err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read echo of %d bytes: %v", len(m.data), err)
		}
		if typ != m.typ || !bytes.Equal(got, m.data) {
			t.Errorf("sent %v of %d bytes (sha %s), got %v of %d bytes (sha %s)", m.typ, len(m.data), sha(m.data), typ, len(got), sha(got))
		}
	}

	// The server pings the client (answered inside Read) ...
	if err := c.Write(ctx, websocket.MessageText, []byte("ping-me")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "pong-ok" {
		t.Errorf("server ping: %q, %v", got, err)
	}
	// ... and the client pings the server, with a reader running for the pong.
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read(ctx)
		read <- err
	}()
	if err := c.Ping(ctx); err != nil {
		t.Errorf("client ping: %v", err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close: %v", err)
	}
	<-read

	want := labelsOf(b.addr, "websocket", "101", "")
	if !waitFor(5*time.Second, func() bool { return requestCount(t, p, want...) == 1 }) {
		t.Errorf("skiff_requests_total%v not 1; samples: %v", want, requestSamples(t, p.metrics, "skiff_requests_total"))
	}
}
