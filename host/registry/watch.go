package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/microhost/microhost/sdk"
)

// ErrWatcherBehind ends a watcher whose queue filled up because it did not
// keep up. Its events are lost: watch again to start from a fresh snapshot.
var ErrWatcherBehind = errors.New("registry watcher fell behind and was dropped; watch again")

var errWatcherStopped = errors.New("registry watcher stopped")

// WatchServices streams the active instances: first one Create for each,
// then Create, Update and Delete events as they happen. It never blocks the
// registry: a watcher that lets its queue fill is dropped and its Next
// returns ErrWatcherBehind. The watcher ends when ctx does. It makes the
// registry the WatchServices side of an sdk.Host.
func (r *Registry) WatchServices(ctx context.Context) (sdk.ServiceWatcher, error) {
	w := &watcher{r: r, limit: r.queue, wake: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	for _, inst := range r.listLocked() {
		if inst.Active() {
			w.queue = append(w.queue, sdk.ServiceEvent{Type: sdk.Create, Service: inst.Service})
		}
	}
	// The snapshot may exceed the limit; only live events count against it.
	w.limit += len(w.queue)
	r.watchers[w] = struct{}{}
	r.mu.Unlock()
	w.stopOnDone = context.AfterFunc(ctx, func() { w.stop(ctx.Err()) })
	return w, nil
}

// publish queues an event for every watcher. r.mu is held.
func (r *Registry) publish(t sdk.EventType, svc sdk.Service) {
	for w := range r.watchers {
		if !w.push(sdk.ServiceEvent{Type: t, Service: cloneService(svc)}) {
			delete(r.watchers, w)
			r.log.Warn("dropped a registry watcher that fell behind", "queue", w.limit)
		}
	}
}

type watcher struct {
	r          *Registry
	limit      int
	wake       chan struct{} // capacity 1: "the queue or err changed"
	stopOnDone func() bool

	mu    sync.Mutex
	queue []sdk.ServiceEvent
	err   error // set once the watcher has ended
}

// push queues e; it reports false when the queue was full and the watcher
// is now dropped.
func (w *watcher) push(e sdk.ServiceEvent) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return true
	}
	if len(w.queue) >= w.limit {
		w.queue = nil
		w.err = fmt.Errorf("%w (more than %d events pending)", ErrWatcherBehind, w.limit)
		w.signal()
		return false
	}
	w.queue = append(w.queue, e)
	w.signal()
	return true
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// fail ends the watcher with err. Events already queued are still
// delivered unless drop says they are unwanted.
func (w *watcher) fail(err error, drop bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		if drop {
			w.queue = nil
		}
		w.signal()
	}
}

func (w *watcher) Next(ctx context.Context) (sdk.ServiceEvent, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			e := w.queue[0]
			w.queue[0] = sdk.ServiceEvent{}
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return e, nil
		}
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return sdk.ServiceEvent{}, err
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return sdk.ServiceEvent{}, ctx.Err()
		}
	}
}

func (w *watcher) Stop() {
	w.stopOnDone()
	w.stop(errWatcherStopped)
}

// stop removes the watcher from the registry and ends it with err.
func (w *watcher) stop(err error) {
	w.r.mu.Lock()
	delete(w.r.watchers, w)
	w.r.mu.Unlock()
	w.fail(err, true)
}
