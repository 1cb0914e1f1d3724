package forward

import (
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"

	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
)

// requests carries the client's messages to the current attempt and keeps
// the ones sent before the first response, so a failed attempt's successor
// can send them again (reading a consumed request twice is what broke
// go-micro's failover). One goroutine reads the client for the whole call;
// attempts attach to it in turn.
type requests struct {
	limit     int
	committed atomic.Bool // a response reached the client: no failover, no replay

	mu        sync.Mutex
	attached  *sync.Cond        // signalled when cs is set or on stop
	cs        grpc.ClientStream // the current attempt; nil between attempts
	sent      []*rawcodec.Frame // sent before any response; replayed on failover
	sentBytes int
	overflow  bool  // more than limit was sent: no failover for this call
	end       error // io.EOF once the client half-closed, or its error
	stopped   bool
}

// newRequests starts reading the client's messages.
func newRequests(ss grpc.ServerStream, limit int) *requests {
	r := &requests{limit: limit}
	r.attached = sync.NewCond(&r.mu)
	go r.read(ss)
	return r
}

// read runs until the client stream ends; the server ends the stream, and
// so the read, once the handler returns. It reads only while an attempt is
// attached, so what arrives between attempts is at most one message, which
// is kept for the next attempt whatever its size. Sends happen under r.mu,
// which orders them with attach's replay and keeps a stream's SendMsg and
// CloseSend from running at once.
func (r *requests) read(ss grpc.ServerStream) {
	for {
		r.mu.Lock()
		for r.cs == nil && !r.stopped {
			r.attached.Wait()
		}
		r.mu.Unlock()

		frame := new(rawcodec.Frame)
		err := ss.RecvMsg(frame)
		r.mu.Lock()
		if r.stopped {
			r.mu.Unlock()
			frame.Free()
			return
		}
		if err != nil {
			r.end = err
			if r.cs != nil && err == io.EOF {
				r.cs.CloseSend()
			}
			r.mu.Unlock()
			return
		}
		keep := false
		switch {
		case r.committed.Load():
			r.forget()
		case r.cs == nil:
			// The attempt ended while this message was read.
			r.sent = append(r.sent, frame)
			r.sentBytes += frame.Len()
			keep = true
		default:
			keep = r.keep(frame)
		}
		if r.cs != nil {
			// A failed send ends the attempt; its status comes from RecvMsg.
			r.cs.SendMsg(frame)
		}
		r.mu.Unlock()
		if !keep {
			frame.Free()
		}
	}
}

// attach makes cs the current attempt and sends it what the client sent
// so far (again, after a failover) and the half-close if it came. A replay
// goes on in the background, because the instance may answer each message
// before it reads the next, and the caller must read those answers
// meanwhile; wait for the returned channel before detach.
func (r *requests) attach(cs grpc.ClientStream) <-chan struct{} {
	r.mu.Lock()
	r.cs = cs
	r.attached.Broadcast()
	if len(r.sent) == 0 {
		if r.end == io.EOF {
			cs.CloseSend()
		}
		r.mu.Unlock()
		return replayed
	}
	done := make(chan struct{})
	// The replay keeps r.mu, so the reader's next message goes after it;
	// the goroutine unlocks it when done.
	go func() {
		defer close(done)
		defer r.mu.Unlock()
		for _, f := range r.sent {
			if cs.SendMsg(f) != nil {
				return
			}
		}
		if r.end == io.EOF {
			cs.CloseSend()
		}
	}()
	return done
}

// replayed is the channel attach returns when it had nothing to replay.
var replayed = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// detach ends the current attempt's share of the client's messages. It
// reports whether a new attempt could still be sent everything the client
// sent so far.
func (r *requests) detach() (replayable bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cs = nil
	return !r.overflow && !r.committed.Load()
}

// keep records f for replay unless that would pass the limit; the first
// message is always kept. r.mu must be held.
func (r *requests) keep(f *rawcodec.Frame) bool {
	if r.overflow {
		return false
	}
	if len(r.sent) > 0 && r.sentBytes+f.Len() > r.limit {
		r.overflow = true
		r.forget()
		return false
	}
	r.sent = append(r.sent, f)
	r.sentBytes += f.Len()
	return true
}

// forget drops the replay buffer; r.mu must be held.
func (r *requests) forget() {
	for _, f := range r.sent {
		f.Free()
	}
	r.sent = nil
	r.sentBytes = 0
}

// stop detaches for good and frees what is buffered.
func (r *requests) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.cs = nil
	r.attached.Broadcast()
	r.forget()
}
