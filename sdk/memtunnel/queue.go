package memtunnel

import (
	"context"
	"sync"
)

// queue is a bounded FIFO whose readers and writers wait with a context.
// Once closed, readers drain what is left and then get the close error.
type queue[T any] struct {
	mu      sync.Mutex
	items   []T
	limit   int
	err     error
	changed chan struct{} // closed and replaced on every change
}

func newQueue[T any](limit int) *queue[T] {
	return &queue[T]{limit: limit, changed: make(chan struct{})}
}

// wake tells every waiter that something changed; q.mu must be held.
func (q *queue[T]) wake() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// offer appends v without waiting. It reports false when the queue is full;
// it returns the close error when the queue is closed.
func (q *queue[T]) offer(v T) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return false, q.err
	}
	if len(q.items) >= q.limit {
		return false, nil
	}
	q.items = append(q.items, v)
	q.wake()
	return true, nil
}

// put appends v, waiting for room until ctx ends.
func (q *queue[T]) put(ctx context.Context, v T) error {
	for {
		q.mu.Lock()
		if q.err != nil {
			q.mu.Unlock()
			return q.err
		}
		if len(q.items) < q.limit {
			q.items = append(q.items, v)
			q.wake()
			q.mu.Unlock()
			return nil
		}
		changed := q.changed
		q.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take removes the oldest item, waiting until there is one, the queue is
// closed and drained, or ctx ends.
func (q *queue[T]) take(ctx context.Context) (T, error) {
	var zero T
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			v := q.items[0]
			q.items[0] = zero
			q.items = q.items[1:]
			q.wake()
			q.mu.Unlock()
			return v, nil
		}
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return zero, err
		}
		changed := q.changed
		q.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
	}
}

// close makes further offers fail with err; the first close wins.
func (q *queue[T]) close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
		q.wake()
	}
}

// drain closes the queue and returns what was left in it.
func (q *queue[T]) drain(err error) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
	left := q.items
	q.items = nil
	q.wake()
	return left
}
