package table

import (
	"context"
	"errors"
	"sync"

	"github.com/microhost/microhost/sdk"
)

// ErrWatchStopped is returned by Next after Stop.
var ErrWatchStopped = errors.New("watch stopped")

// Watcher receives the table's events through a bounded queue. When the
// queue overflows the queued events are dropped and the next call to Next
// returns one sdk.Resync carrying the whole table, after which events flow
// again; a slow watcher therefore costs the table nothing.
type Watcher struct {
	t      *Table
	signal chan struct{} // capacity 1: "there is something to read"
	done   chan struct{}
	once   sync.Once

	mu     sync.Mutex
	queue  []sdk.Event
	resync bool
}

// Watch subscribes to the table: the first event is a Resync holding the
// whole table, then every change follows, so a new watcher knows exactly
// when it has caught up.
func (t *Table) Watch() *Watcher {
	w := &Watcher{t: t, signal: make(chan struct{}, 1), done: make(chan struct{}), resync: true}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		w.once.Do(func() { close(w.done) })
		return w
	}
	t.watchers[w] = struct{}{}
	return w
}

// Close stops every watcher, present and future; the routes stay readable.
func (t *Table) Close() {
	t.mu.Lock()
	ws := t.watchers
	t.watchers = make(map[*Watcher]struct{})
	t.closed = true
	t.mu.Unlock()
	for w := range ws {
		w.Stop()
	}
}

// publish runs under t.mu (write), so every watcher sees events in table order.
func (t *Table) publish(typ sdk.EventType, r sdk.Route) {
	if len(t.watchers) == 0 {
		return
	}
	ev := sdk.Event{Type: typ, Timestamp: t.now(), Route: r}
	for w := range t.watchers {
		w.push(ev, t.watchQueue)
	}
}

func (w *Watcher) push(ev sdk.Event, limit int) {
	w.mu.Lock()
	switch {
	case w.resync:
		// Already behind: the snapshot taken at the next read covers this event.
	case len(w.queue) >= limit:
		w.queue = nil
		w.resync = true
	default:
		w.queue = append(w.queue, ev)
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// Next returns the next event, waiting until there is one, ctx ends or the
// watcher is stopped.
func (w *Watcher) Next(ctx context.Context) (sdk.Event, error) {
	for {
		if ev, ok := w.pop(); ok {
			return ev, nil
		}
		select {
		case <-w.signal:
		case <-w.done:
			return sdk.Event{}, ErrWatchStopped
		case <-ctx.Done():
			return sdk.Event{}, ctx.Err()
		}
	}
}

func (w *Watcher) pop() (sdk.Event, bool) {
	select {
	case <-w.done:
		return sdk.Event{}, false
	default:
	}
	w.mu.Lock()
	if w.resync {
		w.mu.Unlock()
		return w.snapshot(), true
	}
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return sdk.Event{}, false
	}
	ev := w.queue[0]
	w.queue[0] = sdk.Event{}
	w.queue = w.queue[1:]
	return ev, true
}

// snapshot takes the table's read lock before clearing the resync flag, so
// that no write can fall between the snapshot and the events that follow it.
func (w *Watcher) snapshot() sdk.Event {
	w.t.mu.RLock()
	defer w.t.mu.RUnlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.resync = false
	w.queue = nil
	snap := make([]sdk.Route, 0, len(w.t.routes))
	for _, r := range w.t.routes {
		snap = append(snap, r)
	}
	return sdk.Event{Type: sdk.Resync, Timestamp: w.t.now(), Snapshot: snap}
}

// Stop unsubscribes; Next then fails with ErrWatchStopped.
func (w *Watcher) Stop() {
	w.once.Do(func() {
		w.t.mu.Lock()
		delete(w.t.watchers, w)
		w.t.mu.Unlock()
		close(w.done)
	})
}
