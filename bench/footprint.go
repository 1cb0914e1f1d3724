package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microhost/microhost/host/builtin"
	"github.com/microhost/microhost/sdk"
)

// G14: an idle node (host, tunnel, router and proxy processes) linked to
// 50 peer nodes (host, tunnel and router processes each). Each pair is one
// window of idleness; G14 reads the largest RSS of the node's processes at
// its end (G14-pss the same counting shared pages by share), G14-cpu the
// largest CPU share of one of them during it.
const (
	footprintPeers  = 50
	footprintWindow = 4 * time.Second
	clockTicks      = 100 // USER_HZ: /proc/PID/stat times are in 1/100 s on Linux
)

// The node counts as idle once its largest RSS has grown less than
// footprintLevel MB over footprintSettle: for about a minute after the
// links come up the heaps grow towards their GC targets, in steps as far
// apart as the GCs of an idle process, and G14 is about the idle node, not
// its start-up.
const (
	footprintSettle    = 20 * time.Second
	footprintSettleMax = 2 * time.Minute
	footprintLevel     = 0.25
)

type hub struct {
	node *procNode
	mu   sync.Mutex
	by   map[int]window
}

// window is what the node's processes used during one idle window.
type window struct {
	maxRSS   float64 // MB, the largest process
	maxPSS   float64 // MB, the largest process counting shared pages by share
	maxCPU   float64 // percent of one core, the busiest process
	totalCPU float64 // percent of one core, all of the node's processes
}

var hubFixture = newShared(func(ctx context.Context) (*hub, func(), error) {
	nw, err := newNetwork()
	if err != nil {
		return nil, nil, err
	}
	listen, err := freeUDP()
	if err != nil {
		nw.close()
		return nil, nil, err
	}
	proxy, err := freeTCP()
	if err != nil {
		nw.close()
		return nil, nil, err
	}
	fmt.Printf("  starting the node and %d peer nodes\n", footprintPeers)
	n, err := nw.start(ctx, nodeSpec{ID: "hub", Listen: listen, Proxy: proxy})
	if err != nil {
		nw.close()
		return nil, nil, err
	}
	var specs []nodeSpec
	for i := range footprintPeers {
		addr, err := freeUDP()
		if err != nil {
			nw.close()
			return nil, nil, err
		}
		specs = append(specs, nodeSpec{ID: fmt.Sprintf("peer-%02d", i), Listen: addr, Peers: []string{listen}})
	}
	if _, err := nw.startAll(ctx, specs); err != nil {
		nw.close()
		return nil, nil, err
	}
	// Four times a second: asking more often would load the machine that
	// 150 processes are starting on.
	up := 0
	if err := pollAll(ctx, []*procNode{n}, 90*time.Second, 250*time.Millisecond, fmt.Sprintf("the node to have %d links up", footprintPeers), func(ctx context.Context, n *procNode) bool {
		links, err := n.admin.Links(ctx)
		if err != nil {
			return false
		}
		up = 0
		for _, l := range links {
			if l.State == sdk.LinkUp {
				up++
			}
		}
		return up >= footprintPeers
	}); err != nil {
		nw.close()
		return nil, nil, fmt.Errorf("%w (%d up); the node's log ends:\n%s", err, up, n.logTail())
	}
	fmt.Printf("  %d links up; waiting until the node's RSS levels off\n", footprintPeers)
	if err := settle(ctx, n); err != nil {
		nw.close()
		return nil, nil, err
	}
	return &hub{node: n, by: map[int]window{}}, nw.close, nil
})

// settle waits until the largest RSS of n's processes has levelled off, or
// for footprintSettleMax, and says which.
func settle(ctx context.Context, n *procNode) error {
	const every = time.Second
	start := time.Now()
	var history []float64 // largest RSS, one sample per second
	for {
		select {
		case <-time.After(every):
		case <-ctx.Done():
			return ctx.Err()
		}
		largest := 0.0
		for _, pid := range n.processes() {
			rss, err := rssMB(pid)
			if err != nil {
				return err
			}
			largest = max(largest, rss)
		}
		history = append(history, largest)
		back := int(footprintSettle / every)
		took := time.Since(start).Round(time.Second)
		switch {
		case len(history) > back && largest-history[len(history)-1-back] < footprintLevel:
			fmt.Printf("  level after %v at %.2f MB\n", took, largest)
			return nil
		case took >= footprintSettleMax:
			fmt.Printf("  still growing after %v (%.2f MB); measuring anyway\n", took, largest)
			return nil
		}
	}
}

// window returns idle window i, measuring it the first time it is asked.
func (h *hub) window(ctx context.Context, i int) (window, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w, ok := h.by[i]; ok {
		return w, nil
	}
	pids := h.node.processes()
	if len(pids) < 4 {
		return window{}, fmt.Errorf("the node has %d processes, want its host and 3 plugins", len(pids))
	}
	before := make([]int64, len(pids))
	for k, pid := range pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return window{}, err
		}
		before[k] = t
	}
	start := time.Now()
	select {
	case <-time.After(footprintWindow):
	case <-ctx.Done():
		return window{}, ctx.Err()
	}
	elapsed := time.Since(start).Seconds()
	var w window
	var report []string
	for k, pid := range pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return window{}, err
		}
		rss, err := rssMB(pid)
		if err != nil {
			return window{}, err
		}
		pss, err := pssMB(pid)
		if err != nil {
			return window{}, err
		}
		cpu := float64(t-before[k]) / clockTicks / elapsed * 100
		w.maxRSS = max(w.maxRSS, rss)
		w.maxPSS = max(w.maxPSS, pss)
		w.maxCPU = max(w.maxCPU, cpu)
		w.totalCPU += cpu
		report = append(report, fmt.Sprintf("%s[%d] %.1f MB (PSS %.1f) %.1f%%", processName(pid), pid, rss, pss, cpu))
	}
	fmt.Printf("    %s; all %.1f%% CPU\n", strings.Join(report, ", "), w.totalCPU)
	h.by[i] = w
	return w, nil
}

// cpuTicks is the user and system time of pid, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// utime and stime are fields 14 and 15 of proc(5); f starts at field 3.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var total int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += v
	}
	return total, nil
}

// rssMB is the resident set of pid (VmRSS), in MB.
func rssMB(pid int) (float64, error) { return procMB(pid, "status", "VmRSS:") }

// pssMB is the proportional set of pid (Pss), in MB: its private pages plus
// its share of the pages it shares, such as the microhost binary's code,
// which every node process maps and VmRSS counts in full each time.
func pssMB(pid int) (float64, error) { return procMB(pid, "smaps_rollup", "Pss:") }

// procMB reads the "key  N kB" line of /proc/PID/file, in MB.
func procMB(pid int, file, key string) (float64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/%s: %s %w", pid, file, key, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/%s has no %s line", pid, file, key)
}

// processName names a node's process: "host", or its plugin's name.
func processName(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return strconv.Itoa(pid)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	switch {
	case len(args) >= 4 && args[1] == "plugin" && args[2] == "serve":
		return args[3]
	case slices.Contains(builtin.Names(), filepath.Base(args[0])): // -pprof
		return filepath.Base(args[0])
	}
	return "host"
}

func footprint(id, name, unit, target string, pass func(float64) bool, read func(window) float64) *measurement {
	return &measurement{
		ID: id, Name: name, Baseline: "—", Unit: unit, Target: target, Pass: pass,
		Uses: []fixture{hubFixture},
		Pair: func(ctx context.Context, i int) (float64, error) {
			h, err := hubFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			w, err := h.window(ctx, i)
			return read(w), err
		},
	}
}

func idleRSS() *measurement {
	return footprint("G14", fmt.Sprintf("RSS of an idle node's largest process (host or plugin), %d peers", footprintPeers),
		"MB", "<= 40 MB", atMost(40), func(w window) float64 { return w.maxRSS })
}

func idlePSS() *measurement {
	return footprint("G14-pss", fmt.Sprintf("PSS of an idle node's largest process (host or plugin), %d peers: shared pages of the binary counted once across its processes", footprintPeers),
		"MB", "<= 40 MB", atMost(40), func(w window) float64 { return w.maxPSS })
}

func idleCPU() *measurement {
	return footprint("G14-cpu", fmt.Sprintf("CPU of an idle node's busiest process (host or plugin), %d peers, %v windows", footprintPeers, footprintWindow),
		"%", "<= 1%", atMost(1), func(w window) float64 { return w.maxCPU })
}
