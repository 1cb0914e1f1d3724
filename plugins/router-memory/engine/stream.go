package engine

import (
	"context"
	"errors"
	"sync"

	"github.com/microhost/microhost/sdk"
)

// ErrStreamStopped is returned by Next after Stop.
var ErrStreamStopped = errors.New("advert stream stopped")

// Stream yields the adverts this node sends. Its backlog is bounded: a
// reader that falls that far behind loses the queued adverts and instead
// gets, at its next read, one Sync per advertised origin and one of our
// own origin, which bring its peers back to the current state (a Sync also
// withdraws).
type Stream struct {
	e      *Engine
	signal chan struct{}
	done   chan struct{}
	once   sync.Once

	mu     sync.Mutex
	queue  []*sdk.Advert
	resync bool
}

// Advertise subscribes to the adverts produced from now on.
func (e *Engine) Advertise() (*Stream, error) {
	s := &Stream{e: e, signal: make(chan struct{}, 1), done: make(chan struct{})}
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.closed:
		return nil, ErrClosed
	default:
	}
	e.streams[s] = struct{}{}
	return s, nil
}

// publishLocked runs under e.mu, so every stream sees adverts in order.
func (e *Engine) publishLocked(adverts []*sdk.Advert) {
	if len(adverts) == 0 {
		return
	}
	for s := range e.streams {
		s.push(adverts, e.cfg.AdvertQueue)
	}
}

func (s *Stream) push(adverts []*sdk.Advert, limit int) {
	s.mu.Lock()
	switch {
	case s.resync:
	case len(s.queue)+len(adverts) > limit:
		s.queue, s.resync = nil, true
	default:
		s.queue = append(s.queue, adverts...)
	}
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// Next returns the next advert, waiting until there is one.
func (s *Stream) Next(ctx context.Context) (*sdk.Advert, error) {
	for {
		if a, ok := s.pop(); ok {
			return a, nil
		}
		select {
		case <-s.signal:
		case <-s.done:
			return nil, ErrStreamStopped
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Stream) pop() (*sdk.Advert, bool) {
	select {
	case <-s.done:
		return nil, false
	default:
	}
	s.mu.Lock()
	behind := s.resync
	s.mu.Unlock()
	if behind {
		// Engine lock first, as in publishLocked: no advert can slip in
		// between the snapshot and what follows it.
		s.e.mu.Lock()
		s.mu.Lock()
		if s.resync {
			s.resync = false
			s.queue = s.e.syncAdvertsLocked(s.e.now(), true)
		}
		s.mu.Unlock()
		s.e.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, false
	}
	a := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return a, true
}

// Stop unsubscribes; Next then fails with ErrStreamStopped.
func (s *Stream) Stop() {
	s.once.Do(func() {
		s.e.mu.Lock()
		delete(s.e.streams, s)
		s.e.mu.Unlock()
		close(s.done)
	})
}
