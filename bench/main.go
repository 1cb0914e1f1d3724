// Command bench measures microhost's performance goals as ratios against
// baselines measured in the same run, pair by pair, and writes
// bench/results.md and a latency plot beside it. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	pairs := flag.Int("pairs", 7, "interleaved baseline/subject pairs per measurement (at least 5)")
	only := flag.String("only", "", "comma-separated ids to run, e.g. G1,G12 (G14 also selects G14-cpu, G9 G9-proc, G11 G11-proc); default all")
	out := flag.String("out", "", "directory for results.md and the plot; default bench for a full run, none for -only, so that a partial run never replaces the full table")
	flag.StringVar(&microhostBin, "microhost", "", "microhost binary for the node processes; default: build ./cmd/microhost into a temporary directory")
	flag.StringVar(&pprofDir, "pprof", "", "run the node processes' plugins with net/http/pprof; each leaves its address in `DIR`/NAME-PID.addr")
	flag.Parse()
	if pprofDir != "" {
		abs, err := filepath.Abs(pprofDir)
		if err == nil {
			err = os.MkdirAll(abs, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -pprof:", err)
			os.Exit(2)
		}
		pprofDir = abs
	}
	if *pairs < 5 {
		fmt.Fprintln(os.Stderr, "bench: -pairs must be at least 5: a median of fewer says little on a noisy machine")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	all := measurements()
	var selected []*measurement
	for _, m := range all {
		if *only == "" || slices.ContainsFunc(strings.Split(*only, ","), func(id string) bool { return matches(m.ID, id) }) {
			selected = append(selected, m)
		}
	}
	if len(selected) == 0 {
		fmt.Fprintf(os.Stderr, "bench: no measurement matches -only %q\n", *only)
		os.Exit(2)
	}
	defer removeBuild()
	var results []result
	for k, m := range selected {
		fmt.Printf("%s: %s\n", m.ID, m.Name)
		r := run(ctx, m, *pairs, os.Stdout)
		if r.err != nil {
			fmt.Printf("  %s failed: %v\n", m.ID, r.err)
		}
		results = append(results, r)
		closeUnused(m, selected[k+1:])
	}
	report := table(results)
	fmt.Println()
	fmt.Print(report)
	if *out == "" && *only == "" {
		*out = "bench"
	}
	if *out == "" {
		fmt.Println("\nbench/results.md holds the last full run and is left as it is; -out DIR writes this table there")
		exitOnError(results)
		return
	}

	doc := fmt.Sprintf("# Benchmark results\n\nMeasured by `make bench` on %s (%s). Ratios are subject / baseline, each pair run back to back; the median and the spread are over the pairs. [README.md](README.md) says what each id measures and what the profiles found.\n\n%s",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), report)
	if plotted, err := plotLatency(results, filepath.Join(*out, "latency.svg")); err != nil {
		fmt.Fprintln(os.Stderr, "bench: plot:", err)
	} else if plotted {
		doc += "\n![latency percentiles](latency.svg)\n"
	}
	if err := os.WriteFile(filepath.Join(*out, "results.md"), []byte(doc), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	exitOnError(results)
}

// exitOnError exits with status 1 if any measurement failed.
func exitOnError(results []result) {
	for _, r := range results {
		if r.err != nil {
			removeBuild()
			os.Exit(1)
		}
	}
}

// matches says whether -only names id: exactly, or as the prefix before a
// dash, so that "G14" selects G14 and G14-cpu.
func matches(id, name string) bool {
	return id == name || strings.HasPrefix(id, name+"-")
}

// closeUnused closes the fixtures of m that no later measurement uses.
func closeUnused(m *measurement, later []*measurement) {
	for _, f := range m.Uses {
		if !slices.ContainsFunc(later, func(l *measurement) bool { return slices.Contains(l.Uses, f) }) {
			f.close()
		}
	}
}

func measurements() []*measurement {
	return []*measurement{
		unaryP50Remote(),
		unaryP50Local(),
		p99AtHalfLoad(),
		maxQPSRemote(),
		streamThroughput(),
		simConvergence(),
		messagesPerLink(),
		procConvergence(),
		procMessagesPerLink(),
		dampingMeasurement(),
		idleRSS(),
		idlePSS(),
		idleCPU(),
	}
}

func machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs", host, numCPU())
}
