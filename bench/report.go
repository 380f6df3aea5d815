package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

func jsonUnmarshal(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("%w: %.200s", err, s)
	}
	return nil
}

// tableRow is a row of the final table: the values of the median run of its group.
type tableRow struct {
	row
	SkiffDirect  *float64 `json:"skiff_over_direct,omitempty"`
	SkiffHAProxy *float64 `json:"skiff_over_haproxy,omitempty"`
	Result       string   `json:"result,omitempty"` // pass, MISS, n/a; empty without a target
	Runs         int      `json:"runs"`
}

type report struct {
	Started  string                        `json:"started"`
	Seconds  float64                       `json:"seconds"`
	Settings settings                      `json:"settings"`
	Host     map[string]string             `json:"host"`
	Table    []tableRow                    `json:"table"`
	Runs     [][]row                       `json:"runs"`
	Curves   map[string]map[string]float64 `json:"fortio_percentiles_us,omitempty"` // variant → "p99" → µs
	Pprof    map[string]string             `json:"pprof_top,omitempty"`             // profile file → pprof -top
}

// score is what a group's median run is chosen on: the quantity its target compares,
// so that the reported run is the middle one for the question being asked.
func score(r row) float64 {
	s, ok := r.Values[vSkiff]
	if !ok {
		if d, ok := r.Values[vDirect]; ok {
			return d
		}
		return math.NaN()
	}
	if r.Target == nil {
		return s
	}
	switch r.Target.Kind {
	case "atLeast":
		if base, ok := r.Values[r.Target.Base]; ok && base != 0 {
			return s / base
		}
		return math.NaN()
	case "noMoreThanBase":
		if base, ok := r.Values[r.Target.Base]; ok {
			return s - base
		}
		return math.NaN()
	}
	return s
}

// verdict says whether skiff meets the row's target.
func verdict(r row) string {
	if r.Target == nil {
		return ""
	}
	s, ok := r.Values[vSkiff]
	if !ok {
		return "n/a"
	}
	pass := false
	switch r.Target.Kind {
	case "atLeast":
		base, ok := r.Values[r.Target.Base]
		if !ok {
			return "n/a"
		}
		pass = s >= r.Target.K*base
	case "noMoreThanBase":
		base, ok := r.Values[r.Target.Base]
		if !ok {
			return "n/a"
		}
		pass = s <= base
	case "noMoreThan":
		pass = s <= r.Target.K
	}
	if pass {
		return "pass"
	}
	return "MISS"
}

// medianRun picks, for each group, the run whose primary row (the first with a target)
// has the median score, and returns group → run index. Comparisons in the table are
// therefore always between numbers measured in the same run.
func medianRun(runs [][]row) map[string]int {
	type cand struct {
		run   int
		score float64
	}
	byGroup := map[string][]cand{}
	for i, rows := range runs {
		seen := map[string]bool{}
		for _, r := range rows {
			if seen[r.Group] || (r.Target == nil && hasTarget(rows, r.Group)) {
				continue
			}
			seen[r.Group] = true
			byGroup[r.Group] = append(byGroup[r.Group], cand{i, score(r)})
		}
	}
	out := map[string]int{}
	for g, cs := range byGroup {
		var ok []cand
		for _, c := range cs {
			if !math.IsNaN(c.score) {
				ok = append(ok, c)
			}
		}
		if len(ok) == 0 {
			out[g] = cs[0].run
			continue
		}
		slices.SortStableFunc(ok, func(a, b cand) int {
			switch {
			case a.score < b.score:
				return -1
			case a.score > b.score:
				return 1
			}
			return 0
		})
		out[g] = ok[(len(ok)-1)/2].run
	}
	return out
}

func hasTarget(rows []row, group string) bool {
	for _, r := range rows {
		if r.Group == group && r.Target != nil {
			return true
		}
	}
	return false
}

func (b *bench) report(runs [][]row, took time.Duration) report {
	rep := report{Started: b.stamp, Seconds: took.Seconds(), Settings: b.set, Host: hostInfo(b), Runs: runs, Pprof: b.pprof}
	if len(runs) == 0 {
		return rep
	}
	pick := medianRun(runs)
	first := slices.Clone(runs[0])
	slices.SortStableFunc(first, func(a, b row) int { return strings.Compare(a.Group, b.Group) })
	for _, r := range first {
		ri := pick[r.Group]
		var chosen row
		for _, x := range runs[ri] {
			if x.Group == r.Group && x.Metric == r.Metric {
				chosen = x
			}
		}
		tr := tableRow{row: chosen, Result: verdict(chosen), Runs: len(runs)}
		if s, ok := chosen.Values[vSkiff]; ok {
			if d, ok := chosen.Values[vDirect]; ok && d != 0 {
				x := s / d
				tr.SkiffDirect = &x
			}
			if h, ok := chosen.Values[vHAProxy]; ok && h != 0 {
				x := s / h
				tr.SkiffHAProxy = &x
			}
		}
		rep.Table = append(rep.Table, tr)
	}
	if i, ok := pick["1"]; ok && i < len(b.curves) {
		rep.Curves = map[string]map[string]float64{}
		for v, pct := range b.curves[i] {
			rep.Curves[v] = map[string]float64{}
			for p, x := range pct {
				rep.Curves[v][pctKey(p)] = x
			}
		}
	}
	return rep
}

func pctKey(p float64) string { return fmt.Sprintf("p%g", p) }

func fmtNum(x float64) string {
	ax := math.Abs(x)
	switch {
	case ax >= 100:
		return fmt.Sprintf("%.0f", x)
	case ax >= 10:
		return fmt.Sprintf("%.1f", x)
	case ax >= 1:
		return fmt.Sprintf("%.2f", x)
	case ax == 0:
		return "0"
	}
	return fmt.Sprintf("%.3f", x)
}

// text renders the table.
func (rep report) text() string {
	var sb strings.Builder
	cols := []string{"metric", vDirect, vSkiff, vHAProxy, vNginx, "skiff/direct", "skiff/haproxy", "target", "result"}
	widths := []int{52, 9, 9, 9, 9, 12, 13, 14, 6}
	line := func(cells []string) {
		for i, c := range cells {
			if i == 0 {
				fmt.Fprintf(&sb, "  %-*s", widths[i], c)
			} else {
				fmt.Fprintf(&sb, " %*s", widths[i], c)
			}
		}
		sb.WriteString("\n")
	}
	line(cols)
	group := ""
	for _, r := range rep.Table {
		if r.Group != group {
			group = r.Group
			note := fmt.Sprintf("   [others used %.2f vCPU]", r.OtherVCPU)
			if r.Runs > 1 {
				note = fmt.Sprintf("   [median of %d runs: run %d; others used %.2f vCPU]", r.Runs, r.Run, r.OtherVCPU)
			}
			fmt.Fprintf(&sb, "%s%s\n", r.Scenario, note)
		}
		cells := []string{r.Metric}
		for _, v := range variants {
			if x, ok := r.Values[v]; ok {
				if r.Notes[v] != "" {
					cells = append(cells, "*"+fmtNum(x))
					continue
				}
				cells = append(cells, fmtNum(x))
			} else if r.Errors[v] != "" {
				cells = append(cells, "error")
			} else {
				cells = append(cells, "n/a")
			}
		}
		for _, p := range []*float64{r.SkiffDirect, r.SkiffHAProxy} {
			if p == nil {
				cells = append(cells, "")
			} else {
				cells = append(cells, fmt.Sprintf("%.2f×", *p))
			}
		}
		t := ""
		if r.Target != nil {
			t = r.Target.Text
		}
		cells = append(cells, t, r.Result)
		line(cells)
	}
	var errs, notes []string
	for _, r := range rep.Table {
		for _, v := range variants {
			if e := r.Errors[v]; e != "" {
				errs = append(errs, fmt.Sprintf("  %s / %s / %s: %s", r.Group, r.Metric, v, e))
			}
			if n := r.Notes[v]; n != "" {
				notes = append(notes, fmt.Sprintf("  %s / %s / %s: %s", r.Group, r.Metric, v, n))
			}
		}
	}
	if len(notes) > 0 {
		sb.WriteString("\n* notes:\n" + strings.Join(notes, "\n") + "\n")
	}
	if len(errs) > 0 {
		sb.WriteString("\nerrors (no value):\n" + strings.Join(errs, "\n") + "\n")
	}
	return sb.String()
}

func (b *bench) writeReport(rep report) error {
	txt := rep.text()
	fmt.Println()
	fmt.Print(txt)
	base := filepath.Join(b.results, b.stamp)
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", j, 0o644); err != nil {
		return err
	}
	_ = os.WriteFile(base+".txt", []byte(txt), 0o644)
	fmt.Printf("\nresults: %s.json (and .txt)\n", base)
	if png, err := b.plot(rep, base); err == nil && png != "" {
		fmt.Printf("plot:    %s\n", png)
	} else if err != nil {
		warnf("plot: %v", err)
	}
	for _, prof := range b.pprofFiles {
		stem := strings.TrimSuffix(prof, ".pprof")
		fmt.Printf("profile: %s (top: %s.top.txt)\n", prof, stem)
	}
	return nil
}

// plot draws fortio's latency percentiles of scenario 1's median run with gnuplot, when
// gnuplot is installed.
func (b *bench) plot(rep report, base string) (string, error) {
	curves := rep.Curves
	if len(curves) == 0 {
		return "", nil
	}
	gp, err := exec.LookPath("gnuplot")
	if err != nil {
		return "", nil
	}
	var dat strings.Builder
	for _, p := range fortioPercentiles {
		fmt.Fprintf(&dat, "%s", pctKey(p))
		for _, v := range variants {
			if x, ok := curves[v][pctKey(p)]; ok {
				fmt.Fprintf(&dat, " %.1f", x)
			} else {
				dat.WriteString(" ?")
			}
		}
		dat.WriteString("\n")
	}
	datPath := filepath.Join(b.state, "latency.dat")
	if err := os.MkdirAll(b.state, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(datPath, []byte(dat.String()), 0o644); err != nil {
		return "", err
	}
	png := base + "-latency.png"
	script := fmt.Sprintf(`set terminal pngcairo size 900,520
set output '%s'
set title 'HTTP/1.1, 1000 rps, 16 connections (fortio): latency by percentile'
set ylabel 'latency (µs)'
set xlabel 'percentile'
set datafile missing '?'
set logscale y
set grid
set key top left
set style data linespoints
plot '%s' using 2:xtic(1) title 'direct' lw 2, '' using 3 title 'skiff' lw 2, '' using 4 title 'haproxy' lw 2, '' using 5 title 'nginx' lw 2
`, png, datPath)
	cmd := exec.Command(gp)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return png, nil
}

// hostInfo records what the numbers were measured on.
func hostInfo(b *bench) map[string]string {
	run := func(argv ...string) string {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		s := strings.TrimSpace(string(out))
		if err != nil && s == "" { // wrk -v prints its version and exits 1
			return "?"
		}
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		return s
	}
	h := map[string]string{
		"kernel":  run("uname", "-r"),
		"cpus":    fmt.Sprint(runtime.NumCPU()),
		"go":      runtime.Version(),
		"skiff":   run(b.skiff, "version"),
		"haproxy": run("haproxy", "-v"),
		"nginx":   run("nginx", "-v"),
		"wrk":     run("wrk", "-v"),
		"h2load":  run("h2load", "--version"),
		"iperf3":  run("iperf3", "-v"),
		"fortio":  run(b.tool("fortio"), "version"),
		"loadavg": run("cat", "/proc/loadavg"),
	}
	if cpuinfo, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(cpuinfo), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				h["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	h["git"] = run("git", "-C", b.repo, "rev-parse", "--short", "HEAD")
	if out, err := exec.Command("git", "-C", b.repo, "status", "--porcelain").Output(); err == nil && len(out) > 0 {
		h["git"] += fmt.Sprintf(" + %d uncommitted paths", strings.Count(string(out), "\n"))
	}
	return h
}
