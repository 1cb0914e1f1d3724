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
	only := flag.String("only", "", "comma-separated ids to run, e.g. G1,G12; default all")
	out := flag.String("out", "bench", "directory for results.md and the plot")
	flag.Parse()
	if *pairs < 5 {
		fmt.Fprintln(os.Stderr, "bench: -pairs must be at least 5: a median of fewer says little on a noisy machine")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	all := measurements()
	var selected []*measurement
	for _, m := range all {
		if *only == "" || slices.Contains(strings.Split(*only, ","), m.ID) {
			selected = append(selected, m)
		}
	}
	if len(selected) == 0 {
		fmt.Fprintf(os.Stderr, "bench: no measurement matches -only %q\n", *only)
		os.Exit(2)
	}
	var results []result
	for _, m := range selected {
		fmt.Printf("%s: %s\n", m.ID, m.Name)
		r := run(ctx, m, *pairs, os.Stdout)
		if r.err != nil {
			fmt.Printf("  %s failed: %v\n", m.ID, r.err)
		}
		results = append(results, r)
	}
	report := table(results)
	fmt.Println()
	fmt.Print(report)

	doc := fmt.Sprintf("# Benchmark results\n\nMeasured by `make bench` on %s (%s). Ratios are subject / baseline, each pair run back to back; the median and the spread are over the pairs.\n\n%s",
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
	for _, r := range results {
		if r.err != nil {
			os.Exit(1)
		}
	}
}

func measurements() []*measurement {
	return []*measurement{
		dampingMeasurement(),
	}
}

func machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs", host, numCPU())
}
