package quictun

import "sync"

// frameQueue holds the frames a multicast branch has yet to write, at most
// limit of them, those being written included. It takes memory only for
// what it holds: a node keeps a branch per link for each of its multicast
// sessions, and a channel of queue_size slots on each allocated all of
// them up front (24 MiB per branch at the largest queue_size).
type frameQueue struct {
	mu      sync.Mutex
	frames  [][]byte // waiting, oldest first
	spare   [][]byte // the last batch's slice, kept for the next
	writing int      // frames taken by the writer and not yet written
	limit   int
	closed  bool
	// ready holds a token while there are frames to take or the queue has
	// been closed; the writer waits on it.
	ready chan struct{}
}

func newFrameQueue(limit int) *frameQueue {
	return &frameQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues a frame; it reports false, queuing nothing, when the queue
// is full or closed.
func (q *frameQueue) push(frame []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.frames)+q.writing >= q.limit {
		return false
	}
	q.frames = append(q.frames, frame)
	q.signal()
	return true
}

// close lets the writer finish: it takes what is queued, then sees closed.
func (q *frameQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.signal()
}

func (q *frameQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns the queued frames, oldest first, and whether the queue is
// closed. The frames count against the limit until written returns them.
func (q *frameQueue) take() (batch [][]byte, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch, q.frames, q.spare = q.frames, q.spare, nil
	q.writing = len(batch)
	return batch, q.closed
}

// keptBatch is the largest batch slice kept for reuse; one a burst grew
// is left to the GC, so an idle branch holds little.
const keptBatch = 16

// written gives back a batch from take once its frames are written.
func (q *frameQueue) written(batch [][]byte) {
	clear(batch) // the frames are garbage now
	q.mu.Lock()
	defer q.mu.Unlock()
	q.writing = 0
	switch {
	case cap(batch) > keptBatch:
	case q.frames == nil:
		q.frames = batch[:0]
	default:
		q.spare = batch[:0]
	}
}
