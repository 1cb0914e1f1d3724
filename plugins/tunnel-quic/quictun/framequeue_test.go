package quictun

import (
	"fmt"
	"slices"
	"testing"
)

func frames(names ...string) [][]byte {
	var out [][]byte
	for _, n := range names {
		out = append(out, []byte(n))
	}
	return out
}

func names(batch [][]byte) []string {
	var out []string
	for _, f := range batch {
		out = append(out, string(f))
	}
	return out
}

func ready(q *frameQueue) bool {
	select {
	case <-q.ready:
		return true
	default:
		return false
	}
}

// TestFrameQueueLimitCountsFramesBeingWritten: the limit covers the frames
// the writer has taken and not yet written, so a slow link never holds
// more than limit frames however the writer batches.
func TestFrameQueueLimitCountsFramesBeingWritten(t *testing.T) {
	q := newFrameQueue(3)
	for _, f := range frames("a", "b") {
		if !q.push(f) {
			t.Fatalf("push %s refused below the limit", f)
		}
	}
	if !ready(q) {
		t.Fatal("no token after a push")
	}
	batch, closed := q.take()
	if got := names(batch); !slices.Equal(got, []string{"a", "b"}) || closed {
		t.Fatalf("take = %v, closed %v; want [a b], open", got, closed)
	}
	if !q.push([]byte("c")) {
		t.Fatal("push c refused: 2 being written + 1 is the limit")
	}
	if q.push([]byte("d")) {
		t.Fatal("push d accepted: 2 being written + 1 queued is already the limit")
	}
	q.written(batch)
	if !q.push([]byte("d")) {
		t.Fatal("push d refused after the batch was written")
	}
	batch, _ = q.take()
	if got := names(batch); !slices.Equal(got, []string{"c", "d"}) {
		t.Fatalf("take = %v, want [c d] in order", got)
	}
}

// TestFrameQueueCloseHandsOverWhatIsQueued: close lets the writer take
// what was queued before it, with closed set; nothing is queued after.
func TestFrameQueueCloseHandsOverWhatIsQueued(t *testing.T) {
	q := newFrameQueue(10)
	q.push([]byte("a"))
	<-q.ready
	q.close()
	if q.push([]byte("late")) {
		t.Fatal("push accepted after close")
	}
	if !ready(q) {
		t.Fatal("no token after close: the writer would wait forever")
	}
	batch, closed := q.take()
	if got := names(batch); !slices.Equal(got, []string{"a"}) || !closed {
		t.Fatalf("take = %v, closed %v; want [a], closed", got, closed)
	}
}

// TestFrameQueueReusesOnlySmallBatches: an idle branch keeps at most a
// small slice, whatever a burst made it grow to, and written frames are
// not kept reachable.
func TestFrameQueueReusesOnlySmallBatches(t *testing.T) {
	q := newFrameQueue(1000)
	for i := range 500 {
		q.push(fmt.Appendf(nil, "%d", i))
	}
	batch, _ := q.take()
	q.written(batch)
	if batch[0] != nil {
		t.Fatal("a written frame is still referenced by the batch slice")
	}
	if cap(q.frames)+cap(q.spare) > 2*keptBatch {
		t.Fatalf("after a burst of 500 the queue keeps %d+%d slots", cap(q.frames), cap(q.spare))
	}
	for range 3 {
		q.push([]byte("x"))
		batch, _ := q.take()
		q.written(batch)
	}
	if cap(q.frames) > keptBatch || cap(q.spare) > keptBatch {
		t.Fatalf("small batches grew the kept slices to %d and %d", cap(q.frames), cap(q.spare))
	}
}
