package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Wrappers around the load generators: each runs in the client namespace on the load
// CPU and returns the numbers the report needs.

type fortioResult struct {
	QPS     float64
	Seconds float64
	Pct     map[float64]float64 // percentile → microseconds
	Avg     float64             // microseconds
}

// fortioPercentiles are asked of fortio; the plot uses all of them.
var fortioPercentiles = []float64{50, 75, 90, 95, 99, 99.9}

func (b *bench) fortio(ctx context.Context, url string, d time.Duration) (fortioResult, error) {
	out := filepath.Join(b.state, "fortio.json")
	_ = os.Remove(out)
	var ps []string
	for _, p := range fortioPercentiles {
		ps = append(ps, strconv.FormatFloat(p, 'f', -1, 64))
	}
	_, err := b.exec(ctx, d+30*time.Second, nsClient, cpuLoad, b.tool("fortio"), "load", "-quiet",
		"-uniform", "-nocatchup", "-r", "0.00001", "-qps", "1000", "-c", "16", "-t", d.String(),
		"-p", strings.Join(ps, ","), "-json", out, url)
	if err != nil {
		return fortioResult{}, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return fortioResult{}, err
	}
	var j struct {
		ActualQPS         float64
		ActualDuration    int64
		RetCodes          map[string]int64
		DurationHistogram struct {
			Count       int64
			Avg         float64
			Percentiles []struct{ Percentile, Value float64 }
		}
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return fortioResult{}, fmt.Errorf("fortio json: %w", err)
	}
	if bad := j.DurationHistogram.Count - j.RetCodes["200"]; bad > 0 {
		return fortioResult{}, fmt.Errorf("%d of %d requests were not 200 OK: %v", bad, j.DurationHistogram.Count, j.RetCodes)
	}
	r := fortioResult{QPS: j.ActualQPS, Seconds: float64(j.ActualDuration) / 1e9, Pct: map[float64]float64{}, Avg: j.DurationHistogram.Avg * 1e6}
	for _, p := range j.DurationHistogram.Percentiles {
		r.Pct[p.Percentile] = p.Value * 1e6
	}
	return r, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkP99     = regexp.MustCompile(`\s99%\s+([\d.]+)(us|ms|s)`)
	wrkErrors  = regexp.MustCompile(`(Non-2xx or 3xx responses|Socket errors):.*`)
	h2loadRPS  = regexp.MustCompile(`finished in [\d.]+\w+, ([\d.]+) req/s`)
	h2loadReqs = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored`)
)

type wrkResult struct{ RPS, P99 float64 }

func (b *bench) wrk(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	out, err := b.exec(ctx, d+30*time.Second, nsClient, cpuLoad, "wrk", "-t", "1", "-c", "50",
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", url)
	if err != nil {
		return wrkResult{}, err
	}
	s := string(out)
	if m := wrkErrors.FindString(s); m != "" {
		return wrkResult{}, fmt.Errorf("wrk: %s", m)
	}
	m := wrkRPS.FindStringSubmatch(s)
	if m == nil {
		return wrkResult{}, fmt.Errorf("no Requests/sec in wrk output: %q", s)
	}
	r := wrkResult{}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkP99.FindStringSubmatch(s); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		r.P99 = v * map[string]float64{"us": 1, "ms": 1e3, "s": 1e6}[m[2]]
	}
	return r, nil
}

func (b *bench) h2load(ctx context.Context, url string, d time.Duration) (float64, error) {
	out, err := b.exec(ctx, d+30*time.Second, nsClient, cpuLoad, "h2load", "-t", "1", "-c", "8", "-m", "32",
		"-D", strconv.Itoa(int(d.Seconds())), "--warm-up-time", "1", url)
	if err != nil {
		return 0, err
	}
	s := string(out)
	if m := h2loadReqs.FindStringSubmatch(s); m != nil && (m[5] != "0" || m[6] != "0") {
		return 0, fmt.Errorf("h2load: %s failed, %s errored", m[5], m[6])
	}
	m := h2loadRPS.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("no req/s in h2load output: %q", s)
	}
	return strconv.ParseFloat(m[1], 64)
}

type ghzResult struct{ RPS, P50, P99 float64 }

func (b *bench) ghz(ctx context.Context, target string, d time.Duration) (ghzResult, error) {
	out, err := b.exec(ctx, d+30*time.Second, nsClient, cpuLoad, b.tool("ghz"), "--insecure",
		"--call", "grpc.testing.TestService/UnaryCall", "-d", `{"response_size":1024}`,
		"--rps", "1000", "-c", "16", "-z", d.String(), "--format", "json", target)
	if err != nil {
		return ghzResult{}, err
	}
	var j struct {
		Count                  int64
		RPS                    float64 `json:"rps"`
		StatusCodeDistribution map[string]int64
		ErrorDistribution      map[string]int64
		LatencyDistribution    []struct {
			Percentage int
			Latency    int64 // ns
		}
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return ghzResult{}, fmt.Errorf("ghz json: %w: %.300s", err, out)
	}
	// When -z ends, ghz closes its connection under the calls still in flight and counts
	// them as errors ("use of closed network connection", "context canceled"): a handful
	// of those is the end of the run, not a proxy failure.
	var nerr int64
	for msg, n := range j.ErrorDistribution {
		if !strings.Contains(msg, "closed network connection") && !strings.Contains(msg, "anceled") {
			return ghzResult{}, fmt.Errorf("ghz errors: %v", j.ErrorDistribution)
		}
		nerr += n
	}
	if nerr > 16 { // at most one call in flight per worker (-c 16)
		return ghzResult{}, fmt.Errorf("ghz errors: %v of %d calls", j.ErrorDistribution, j.Count)
	}
	r := ghzResult{RPS: j.RPS}
	for _, l := range j.LatencyDistribution {
		switch l.Percentage {
		case 50:
			r.P50 = float64(l.Latency) / 1e3
		case 99:
			r.P99 = float64(l.Latency) / 1e3
		}
	}
	return r, nil
}

// iperf3 returns the received throughput in Gbit/s.
func (b *bench) iperf3(ctx context.Context, hostport string, streams, secs int) (float64, error) {
	host, port, _ := strings.Cut(hostport, ":")
	var out []byte
	var err error
	// iperf3 -s serves one test at a time and refuses a second for a moment after the
	// last one ended: retry a "busy" answer briefly.
	for try := 0; try < 5; try++ {
		out, err = b.exec(ctx, time.Duration(secs)*time.Second+30*time.Second, nsClient, cpuLoad, "iperf3", "-c", host, "-p", port,
			"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
		if err == nil || !strings.Contains(string(out), "busy") {
			break
		}
		time.Sleep(time.Second)
	}
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &j); jerr != nil {
		if err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("iperf3 json: %w", jerr)
	}
	if j.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", j.Error)
	}
	if err != nil {
		return 0, err
	}
	return j.End.SumReceived.BitsPerSecond / 1e9, nil
}

// client runs one of this binary's own clients in the client namespace and decodes its
// JSON line into v.
func (b *bench) client(ctx context.Context, timeout time.Duration, v any, args ...string) error {
	out, err := b.exec(ctx, timeout, nsClient, cpuLoad, append([]string{b.self}, args...)...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: %w: %.200s", args[0], err, out)
	}
	return nil
}
