package router

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"skiff/telemetry"
)

func TestRequestMetrics(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, "0123456789")
		case "/created":
			w.WriteHeader(http.StatusCreated)
		case "/slow":
			time.Sleep(60 * time.Millisecond)
			w.WriteHeader(http.StatusAccepted)
		default:
			http.NotFound(w, r)
		}
	}, false)
	p := startProxy(t, b.addr, true)
	c := h1Client()
	do := func(method, path string, body string) {
		req, _ := http.NewRequest(method, "http://"+p.addr+path, strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	for range 3 {
		do("GET", "/ok", "")
	}
	for range 2 {
		do("POST", "/created", strings.Repeat("x", 100))
	}
	do("GET", "/missing", "")
	do("GET", "/slow", "")

	for _, name := range []string{"skiff_requests_total", "skiff_request_duration_milliseconds", "skiff_request_bytes", "skiff_response_bytes"} {
		for _, s := range requestSamples(t, p.metrics, name) {
			var got []string
			for k := range s.labels {
				got = append(got, k)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(telemetry.RequestLabels))
			if !slices.Equal(got, want) {
				t.Errorf("%s has labels %v, want %v", name, got, want)
			}
		}
	}

	type expect struct {
		code               string
		n                  float64
		reqBytes, resBytes float64
	}
	for _, e := range []expect{
		{"200", 3, 0, 30},
		{"201", 2, 200, 0},
		{"404", 1, 0, float64(len("404 page not found\n"))},
		{"202", 1, 0, 0},
	} {
		labels := labelsOf(b.addr, "http", e.code, "")
		if got := requestCount(t, p, labels...); got != e.n {
			t.Errorf("skiff_requests_total%v = %v, want %v", labels, got, e.n)
		}
		for _, h := range []struct {
			name string
			sum  float64
		}{{"skiff_request_bytes", e.reqBytes}, {"skiff_response_bytes", e.resBytes}, {"skiff_request_duration_milliseconds", -1}} {
			s, ok := histogram(t, p, h.name, labels)
			if !ok {
				t.Errorf("%s%v missing", h.name, labels)
				continue
			}
			if float64(s.count) != e.n || (h.sum >= 0 && s.value != h.sum) {
				t.Errorf("%s%v: count %d, sum %v; want %v, %v", h.name, labels, s.count, s.value, e.n, h.sum)
			}
		}
	}
	// Durations are in milliseconds: the 60 ms request is above the 50 bucket and within
	// the 100 one, and the fast ones are well under a second.
	slow, _ := histogram(t, p, "skiff_request_duration_milliseconds", labelsOf(b.addr, "http", "202", ""))
	if slow.value < 60 || slow.value > 5000 || bucket(slow, 50) != 0 || bucket(slow, 100) != 1 {
		t.Errorf("60 ms request recorded as %v ms (le=50: %d, le=100: %d)", slow.value, bucket(slow, 50), bucket(slow, 100))
	}
	if fast, _ := histogram(t, p, "skiff_request_duration_milliseconds", labelsOf(b.addr, "http", "200", "")); fast.value <= 0 || fast.value > 3000 {
		t.Errorf("3 fast requests took %v ms in all", fast.value)
	}
}

func histogram(tb testing.TB, p *testProxy, name string, labels []string) (sample, bool) {
	for _, s := range requestSamples(tb, p.metrics, name) {
		if s.is(labels) {
			return s, true
		}
	}
	return sample{}, false
}

// bucket is the cumulative count of a histogram sample at upper bound le.
func bucket(s sample, le float64) uint64 {
	if s.hist == nil {
		return 0
	}
	for _, b := range s.hist.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	return 0
}
