package main

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func numCPU() int { return runtime.NumCPU() }

// latencies keeps, per label, the call latencies of the last pair of each
// latency measurement, for the percentile plot.
var latencies struct {
	sync.Mutex
	order  []string
	byName map[string][]time.Duration
}

func recordLatencies(label string, d []time.Duration) {
	latencies.Lock()
	defer latencies.Unlock()
	if latencies.byName == nil {
		latencies.byName = map[string][]time.Duration{}
	}
	if _, ok := latencies.byName[label]; !ok {
		latencies.order = append(latencies.order, label)
	}
	s := slices.Clone(d)
	slices.Sort(s)
	latencies.byName[label] = s
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

var plotPercentiles = []float64{50, 75, 90, 95, 99, 99.9}

// plotLatency draws latency against percentile for every recorded label.
// It reports false when no latency measurement ran.
func plotLatency(_ []result, path string) (bool, error) {
	latencies.Lock()
	defer latencies.Unlock()
	if len(latencies.order) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = "unary call latency by percentile"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (µs, log scale)"
	// Sequential calls take microseconds, calls under load up to seconds.
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var lines []any
	for _, label := range latencies.order {
		pts := make(plotter.XYs, len(plotPercentiles))
		for i, q := range plotPercentiles {
			pts[i].X = float64(i)
			pts[i].Y = max(1, float64(percentile(latencies.byName[label], q).Microseconds())) // log scale: no zero
		}
		lines = append(lines, label, pts)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return false, err
	}
	var ticks []plot.Tick
	for i, q := range plotPercentiles {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: "p" + trimFloat(q)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Legend.Top = true
	p.Legend.Left = true
	return true, p.Save(7*vg.Inch, 4*vg.Inch, path)
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
