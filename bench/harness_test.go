package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedianAndSpread(t *testing.T) {
	r := result{m: &measurement{Unit: "x"}, samples: []float64{3, 1, 2, 10}}
	if got := r.median(); got != 2.5 {
		t.Errorf("median of 3,1,2,10 = %v, want 2.5", got)
	}
	if lo, hi := r.spread(); lo != 1 || hi != 10 {
		t.Errorf("spread = %v–%v, want 1–10", lo, hi)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		unit string
		v    float64
		want string
	}{
		{"x", 2.7, "2.70x"},
		{"x", 0.0042, "0.0042x"},
		{"x", 0, "0.00x"},
		{"s", 1.0456, "1.05 s"},
		{"MB", 123.4, "123 MB"},
	} {
		if got := (result{m: &measurement{Unit: c.unit}}).format(c.v); got != c.want {
			t.Errorf("format(%v %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		id, name string
		want     bool
	}{
		{"G14", "G14", true},
		{"G14-cpu", "G14", true},
		{"G14-cpu", "G14-cpu", true},
		{"G1", "G14", false},
		{"G14", "G1", false},
	} {
		if got := matches(c.id, c.name); got != c.want {
			t.Errorf("matches(%q, %q) = %v, want %v", c.id, c.name, got, c.want)
		}
	}
}

func TestRunStopsAtFirstError(t *testing.T) {
	calls := 0
	m := &measurement{ID: "T", Unit: "x", Pass: atMost(1), Pair: func(context.Context, int) (float64, error) {
		calls++
		if calls == 2 {
			return 0, errors.New("boom")
		}
		return 1, nil
	}}
	r := run(t.Context(), m, 5, io.Discard)
	if r.err == nil || !strings.Contains(r.err.Error(), "pair 1: boom") {
		t.Fatalf("err = %v, want pair 1: boom", r.err)
	}
	if calls != 2 || r.verdict() != "error" {
		t.Errorf("calls = %d, verdict %q; want 2, error", calls, r.verdict())
	}
}

// A shared fixture starts once for all its users and again after a close.
func TestSharedStartsOnceAndCloses(t *testing.T) {
	starts, stops := 0, 0
	f := newShared(func(context.Context) (int, func(), error) {
		starts++
		return starts, func() { stops++ }, nil
	})
	a := &measurement{Uses: []fixture{f}}
	b := &measurement{Uses: []fixture{f}}
	for range 2 {
		if v, err := f.get(t.Context()); err != nil || v != 1 {
			t.Fatalf("get = %v, %v; want 1", v, err)
		}
	}
	closeUnused(a, []*measurement{b})
	if stops != 0 {
		t.Fatal("closed while a later measurement still uses it")
	}
	closeUnused(b, nil)
	closeUnused(b, nil)
	if stops != 1 {
		t.Fatalf("stops = %d after the last user, want 1", stops)
	}
	if v, _ := f.get(t.Context()); v != 2 {
		t.Errorf("get after close = %v, want a fresh start (2)", v)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if got := percentile(d, 50); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
	if got := percentile(d, 99); got != 99 {
		t.Errorf("p99 = %v, want 99", got)
	}
}

// The /proc readers work on this process.
func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	if _, err := cpuTicks(pid); err != nil {
		t.Fatal(err)
	}
	rss, err := rssMB(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rssMB = %v, %v", rss, err)
	}
	if got := processName(pid); got != "host" {
		t.Errorf("processName of the test = %q, want host (not a plugin)", got)
	}
}

func TestFlapAdvertsDamped(t *testing.T) {
	m := dampingMeasurement()
	v, err := m.Pair(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if v <= 0 || v >= 1 {
		t.Errorf("damped/undamped = %v, want between 0 and 1", v)
	}
}
