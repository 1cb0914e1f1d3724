package proxyrpc_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/microhost/microhost/sdk"
)

// testHost is a small real sdk.Host: a table of routes whose watchers get
// the whole table and then every change, and a tunnel.
type testHost struct {
	mu       sync.Mutex
	routes   map[uint64]sdk.Route
	watchers []*routeWatcher
	tunnel   sdk.Tunnel
}

func newTestHost(tun sdk.Tunnel) *testHost {
	return &testHost{routes: map[uint64]sdk.Route{}, tunnel: tun}
}

func (h *testHost) set(r sdk.Route) {
	h.mu.Lock()
	defer h.mu.Unlock()
	typ := sdk.Create
	if _, ok := h.routes[r.Hash()]; ok {
		typ = sdk.Update
	}
	h.routes[r.Hash()] = r
	h.publishLocked(sdk.Event{Type: typ, Route: r})
}

func (h *testHost) remove(r sdk.Route) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.routes, r.Hash())
	h.publishLocked(sdk.Event{Type: sdk.Delete, Route: r})
}

// resync sends every watcher a snapshot, as a router does for a watcher
// that fell behind.
func (h *testHost) resync() {
	h.mu.Lock()
	defer h.mu.Unlock()
	var snap []sdk.Route
	for _, r := range h.routes {
		snap = append(snap, r)
	}
	h.publishLocked(sdk.Event{Type: sdk.Resync, Snapshot: snap})
}

func (h *testHost) publishLocked(ev sdk.Event) {
	h.watchers = slices.DeleteFunc(h.watchers, func(w *routeWatcher) bool { return w.stopped.Load() })
	for _, w := range h.watchers {
		w.push(ev)
	}
}

func (h *testHost) WatchRoutes(ctx context.Context) (sdk.Watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &routeWatcher{wake: make(chan struct{}, 1)}
	// Like a router, a watch starts with the whole table.
	snap := []sdk.Route{}
	for _, r := range h.routes {
		snap = append(snap, r)
	}
	w.push(sdk.Event{Type: sdk.Resync, Snapshot: snap})
	h.watchers = append(h.watchers, w)
	return w, nil
}

func (h *testHost) WatchServices(context.Context) (sdk.ServiceWatcher, error) {
	return nil, errors.New("test host has no registry")
}

func (h *testHost) Tunnel(context.Context) (sdk.Tunnel, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tunnel == nil {
		return nil, errors.New("test host has no tunnel")
	}
	return h.tunnel, nil
}

type routeWatcher struct {
	mu      sync.Mutex
	events  []sdk.Event
	wake    chan struct{}
	stopped atomic.Bool
}

func (w *routeWatcher) push(ev sdk.Event) {
	w.mu.Lock()
	w.events = append(w.events, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *routeWatcher) Next(ctx context.Context) (sdk.Event, error) {
	for {
		if w.stopped.Load() {
			return sdk.Event{}, errors.New("watcher stopped")
		}
		w.mu.Lock()
		if len(w.events) > 0 {
			ev := w.events[0]
			w.events = w.events[1:]
			w.mu.Unlock()
			return ev, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return sdk.Event{}, ctx.Err()
		}
	}
}

func (w *routeWatcher) Stop() {
	w.stopped.Store(true)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// breakWatches ends every watch with an error, as a host restart does.
func (h *testHost) breakWatches() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.watchers {
		w.Stop()
	}
}

// setTunnel replaces the tunnel, as a restarted tunnel plugin does.
func (h *testHost) setTunnel(tun sdk.Tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tunnel = tun
}
