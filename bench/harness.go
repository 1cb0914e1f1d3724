package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// A measurement yields one sample per run. Ratio measurements run their
// baseline and their subject back to back in each pair, so both see the
// same machine; the sample is subject / baseline.
type measurement struct {
	ID       string
	Name     string
	Baseline string // "—" for an absolute measurement
	Unit     string // of an absolute sample; "x" for a ratio
	// Target is the goal, e.g. "<= 3x" or ">= 0.4x" or "<= 2 s".
	Target string
	// Pass says whether a median meets the target.
	Pass func(median float64) bool
	// Pair runs pair i and returns the sample.
	Pair func(ctx context.Context, i int) (float64, error)
	// Uses names the shared fixtures the measurement needs: they are made
	// ready before its first pair, so that no pair pays for starting them,
	// and closed after the last selected measurement that uses them.
	Uses []fixture
}

// A fixture is something several measurements share, such as a running
// overlay: started by the first that needs it, closed after the last.
type fixture interface {
	ready(ctx context.Context) error
	close()
}

// shared starts its value on first use and keeps it until closed.
type shared[T any] struct {
	start func(ctx context.Context) (T, func(), error)

	mu   sync.Mutex
	done bool
	v    T
	err  error
	stop func()
}

func newShared[T any](start func(ctx context.Context) (T, func(), error)) *shared[T] {
	return &shared[T]{start: start}
}

func (s *shared[T]) ready(ctx context.Context) error {
	_, err := s.get(ctx)
	return err
}

func (s *shared[T]) get(ctx context.Context) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.done = true
		s.v, s.stop, s.err = s.start(ctx)
	}
	return s.v, s.err
}

func (s *shared[T]) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	s.done = false // a later get starts it again
}

type result struct {
	m       *measurement
	samples []float64
	err     error
	took    time.Duration
}

func (r result) median() float64 {
	s := slices.Clone(r.samples)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (r result) spread() (lo, hi float64) {
	return slices.Min(r.samples), slices.Max(r.samples)
}

func (r result) format(v float64) string {
	switch {
	case r.m.Unit == "x" && v != 0 && math.Abs(v) < 0.1:
		return fmt.Sprintf("%.2gx", v) // two significant digits, not 0.00x
	case r.m.Unit == "x":
		return fmt.Sprintf("%.2fx", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f %s", v, r.m.Unit)
	default:
		return fmt.Sprintf("%.2f %s", v, r.m.Unit)
	}
}

func (r result) verdict() string {
	switch {
	case r.err != nil:
		return "error"
	case r.m.Pass(r.median()):
		return "met"
	default:
		return "MISSED"
	}
}

func run(ctx context.Context, m *measurement, pairs int, progress io.Writer) result {
	start := time.Now()
	r := result{m: m}
	for _, f := range m.Uses {
		if r.err = f.ready(ctx); r.err != nil {
			return r
		}
	}
	for i := range pairs {
		v, err := m.Pair(ctx, i)
		if err != nil {
			r.err = fmt.Errorf("pair %d: %w", i, err)
			return r
		}
		r.samples = append(r.samples, v)
		fmt.Fprintf(progress, "  %s pair %d/%d: %s\n", m.ID, i+1, pairs, r.format(v))
	}
	r.took = time.Since(start)
	return r
}

// table renders results as the Markdown table of bench/results.md.
func table(results []result) string {
	var b strings.Builder
	b.WriteString("| id | measurement | baseline (same run) | median | spread (min–max) | pairs | target | verdict |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(&b, "| %s | %s | %s | — | — | — | %s | error: %s |\n", r.m.ID, r.m.Name, r.m.Baseline, r.m.Target, strings.ReplaceAll(r.err.Error(), "|", "/"))
			continue
		}
		lo, hi := r.spread()
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s – %s | %d | %s | %s |\n",
			r.m.ID, r.m.Name, r.m.Baseline, r.format(r.median()), r.format(lo), r.format(hi), len(r.samples), r.m.Target, r.verdict())
	}
	return b.String()
}

func atMost(limit float64) func(float64) bool  { return func(v float64) bool { return v <= limit } }
func atLeast(limit float64) func(float64) bool { return func(v float64) bool { return v >= limit } }
