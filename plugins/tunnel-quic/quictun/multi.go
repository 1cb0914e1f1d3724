package quictun

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// multiSession is an outbound multicast or broadcast session: one QUIC
// stream per reached link, each fed by its own bounded queue and writer so
// that a slow or dead link never holds up the others. A full queue drops
// the message for that link only and counts it on the link.
//
// The links it reaches are worked out at every Send: a link that comes up,
// or a peer that starts listening, after the Dial gets the messages sent
// from then on, in order. So one long-lived session serves a control
// channel for the life of a node.
type multiSession struct {
	id, channel string
	mode        Mode
	node        *Node
	preamble    []byte

	mu         sync.Mutex // guards branches and sendClosed
	branches   map[*link]*branch
	sendClosed bool

	recv     chan *Message
	closed   chan struct{}
	once     sync.Once
	drained  chan struct{} // closed when sending is over and every writer has finished
	timedOut atomic.Bool   // Close gave up waiting for slow peers
}

// branch is a multicast session's stream on one link.
type branch struct {
	s      *multiSession
	link   *link
	str    *quic.Stream
	queue  *frameQueue
	done   chan struct{} // closed when the writer returns
	failed atomic.Bool
	warned atomic.Bool
}

func (n *Node) dialMulti(channel string, mode Mode) (Session, error) {
	s := &multiSession{
		id: n.newSessionID(), channel: channel, mode: mode, node: n,
		branches: map[*link]*branch{},
		recv:     make(chan *Message, recvBuffer),
		closed:   make(chan struct{}),
		drained:  make(chan struct{}),
	}
	s.preamble = preamble{kind: kindSession, mode: mode, channel: channel, sessionID: s.id}.append(nil)
	n.mu.Lock()
	n.multis[s] = struct{}{}
	n.mu.Unlock()
	return s, nil
}

// reachLocked opens a branch to every link the session should reach now
// and has none to, and forgets branches whose link is gone.
func (s *multiSession) reachLocked() {
	n := s.node
	for _, l := range n.upLinks() {
		if s.mode != Broadcast && !l.listens(s.channel) {
			continue
		}
		if b := s.branches[l]; b != nil && !b.failed.Load() {
			continue
		}
		// OpenStream never blocks: a link out of stream credit is skipped
		// (and counted) rather than stalling the others; the next Send tries again.
		str, err := l.conn.OpenStream()
		if err != nil {
			l.errs.Add(1)
			n.log.Warn("multicast branch not opened", "session", s.id, "link", l.String(), "error", err)
			continue
		}
		l.opened.Add(1)
		b := &branch{s: s, link: l, str: str, queue: newFrameQueue(n.cfg.QueueSize), done: make(chan struct{})}
		s.branches[l] = b
		n.wg.Add(2)
		go func() {
			defer n.wg.Done()
			defer close(b.done)
			b.writeLoop(s.preamble)
		}()
		b.link.readers.Add(1)
		go func() {
			defer n.wg.Done()
			defer b.link.readers.Add(-1)
			b.readLoop()
		}()
	}
	for l, b := range s.branches {
		if l.ctx.Err() != nil && b.failed.Load() {
			delete(s.branches, l)
		}
	}
}

func (s *multiSession) ID() string      { return s.id }
func (s *multiSession) Channel() string { return s.channel }
func (s *multiSession) Mode() Mode      { return s.mode }
func (s *multiSession) Peer() string    { return "" }

// Send queues m on every branch without waiting for any of them. With no
// peer to reach right now there is nothing to send to, which is not an
// error: the session reaches peers as they come.
func (s *multiSession) Send(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	frame, err := appendFrame(nil, m, s.node.cfg.MaxMessageSize)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendClosed {
		return fmt.Errorf("session %s: %w", s.id, ErrClosed)
	}
	s.reachLocked()
	for _, b := range s.branches {
		if b.failed.Load() {
			continue
		}
		if !b.queue.push(frame) {
			b.link.drops.Add(1)
			if !b.warned.Swap(true) {
				s.node.log.Warn("multicast queue full: dropping messages for this link (counted in link drops)",
					"session", s.id, "channel", s.channel, "link", b.link.String(), "queue", b.queue.limit)
			}
		}
	}
	return nil
}

// writeLoop writes the preamble and queued frames, then ends the stream
// once the queue is closed and drained.
func (b *branch) writeLoop(pre []byte) {
	if _, err := b.str.Write(pre); err != nil {
		b.fail(err)
		return
	}
	for {
		select {
		case <-b.queue.ready:
		case <-b.link.ctx.Done():
			b.fail(context.Cause(b.link.ctx))
			return
		case <-b.str.Context().Done():
			// The peer stopped reading (refused or closed the session).
			b.fail(context.Cause(b.str.Context()))
			return
		}
		batch, closed := b.queue.take()
		for _, frame := range batch {
			if _, err := b.str.Write(frame); err != nil {
				b.fail(err)
				return
			}
		}
		b.queue.written(batch)
		if closed {
			_ = b.str.Close()
			return
		}
	}
}

func (b *branch) fail(err error) {
	b.failed.Store(true)
	b.str.CancelWrite(streamAborted)
	err = streamError(err, b.s.channel, b.link.peer)
	if errors.Is(err, ErrNoListener) || errors.Is(err, ErrRefused) || errors.Is(err, ErrClosed) {
		b.s.node.log.Debug("multicast branch ended", "session", b.s.id, "link", b.link.String(), "reason", err)
		return
	}
	if b.s.closingTimedOut() {
		b.s.node.log.Warn("multicast branch abandoned: peer did not take queued messages in time", "session", b.s.id, "link", b.link.String())
		return
	}
	b.link.errs.Add(1)
	b.s.node.log.Warn("multicast branch failed", "session", b.s.id, "link", b.link.String(), "error", err)
}

// readLoop passes on the peer's replies. Replies to a multicast are rare,
// so it reads the stream without a buffer, which would sit idle on every
// link.
func (b *branch) readLoop() {
	frames := newFrameReader(b.str, b.s.node.cfg.MaxMessageSize)
	for {
		m, err := frames.next()
		if err != nil {
			if code, bad := rejectCode(err); bad {
				b.link.errs.Add(1)
				b.s.node.log.Warn("multicast reply stream broken", "session", b.s.id, "link", b.link.String(), "error", err)
				b.str.CancelRead(code)
			}
			return
		}
		select {
		case b.s.recv <- m:
		case <-b.s.closed:
			return
		case <-b.s.node.ctx.Done():
			return
		}
	}
}

// Recv returns replies from any reached peer. Since peers may join the
// session at any time, there is no end of replies short of Close.
func (s *multiSession) Recv(ctx context.Context) (*Message, error) {
	select {
	case m := <-s.recv:
		return m, nil
	case <-s.closed:
		return nil, fmt.Errorf("session %s: %w", s.id, ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// CloseSend ends the sending half after every queued message is written.
func (s *multiSession) CloseSend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendClosed {
		return nil
	}
	s.sendClosed = true
	var writers []chan struct{}
	for _, b := range s.branches {
		b.queue.close()
		writers = append(writers, b.done)
	}
	n := s.node
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for _, done := range writers {
			<-done
		}
		n.mu.Lock()
		delete(n.multis, s)
		n.mu.Unlock()
		close(s.drained)
	}()
	return nil
}

// Close ends the session. Queued messages are still written, for at most
// the drain timeout, by the branch writers in the background.
func (s *multiSession) Close() error {
	_ = s.CloseSend()
	s.once.Do(func() {
		close(s.closed)
		s.mu.Lock()
		branches := slices.Collect(maps.Values(s.branches))
		s.mu.Unlock()
		for _, b := range branches {
			b.str.CancelRead(streamAborted)
		}
		s.node.wg.Add(1)
		go func() {
			defer s.node.wg.Done()
			t := time.NewTimer(s.node.cfg.DrainTimeout)
			defer t.Stop()
			select {
			case <-s.drained:
			case <-s.node.ctx.Done():
			case <-t.C:
				s.timedOut.Store(true)
				for _, b := range branches {
					_ = b.str.SetWriteDeadline(time.Now())
				}
			}
		}()
	})
	return nil
}

func (s *multiSession) closingTimedOut() bool { return s.timedOut.Load() }
