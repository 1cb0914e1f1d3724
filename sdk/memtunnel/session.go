package memtunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/microhost/microhost/sdk"
)

// session implements sdk.Session. There are three shapes:
//   - unicast: remote is the other end;
//   - outbound multicast/broadcast: fanout holds, per receiving node, the
//     inbound session that carries this session's messages there;
//   - inbound multicast/broadcast: origin is the sending session; replies
//     sent on it go back to origin.
type session struct {
	id      string
	channel string
	mode    sdk.Mode
	node    *Node
	peer    string
	in      *queue[*sdk.Message]

	// Guarded by node.f.mu.
	remote     *session
	fanout     map[string]*session
	origin     *session
	sendClosed bool
	closed     bool
	broken     error
}

func (s *session) ID() string      { return s.id }
func (s *session) Channel() string { return s.channel }
func (s *session) Mode() sdk.Mode  { return s.mode }
func (s *session) Peer() string    { return s.peer }

func (s *session) Recv(ctx context.Context) (*sdk.Message, error) {
	return s.in.take(ctx)
}

func (s *session) Send(ctx context.Context, m *sdk.Message) error {
	if m == nil {
		return errors.New("memtunnel: send: message is nil")
	}
	f := s.node.f
	f.mu.Lock()
	if err := s.sendableLocked(); err != nil {
		f.mu.Unlock()
		return err
	}
	switch {
	case s.remote != nil:
		remote := s.remote
		if remote.closed {
			f.mu.Unlock()
			return fmt.Errorf("memtunnel: session %s: closed by peer %q", s.id, s.peer)
		}
		if !f.pass(s.node.id, s.peer, s.channel) {
			f.mu.Unlock()
			return nil
		}
		f.links[pairOf(s.node.id, s.peer)].bytes[s.node.id] += uint64(len(m.Body))
		f.mu.Unlock()
		// Unicast is reliable: wait for room rather than drop.
		if err := remote.in.put(ctx, clone(m)); err != nil {
			if errors.Is(err, ErrClosed) || err == io.EOF {
				return fmt.Errorf("memtunnel: session %s: closed by peer %q", s.id, s.peer)
			}
			return err
		}
		f.mu.Lock()
		f.stats.Delivered++
		f.mu.Unlock()
		return nil
	case s.origin != nil:
		defer f.mu.Unlock()
		if s.origin.closed {
			return fmt.Errorf("memtunnel: session %s: sender %q closed its session", s.id, s.peer)
		}
		if f.pass(s.node.id, s.peer, s.channel) {
			s.deliverLocked(s.origin, s.peer, m)
		}
		return nil
	default:
		defer f.mu.Unlock()
		s.fanOutLocked(m)
		return nil
	}
}

// sendableLocked says why the session cannot send, if it cannot.
func (s *session) sendableLocked() error {
	switch {
	case s.closed:
		return fmt.Errorf("memtunnel: session %s: %w", s.id, ErrClosed)
	case s.broken != nil:
		return fmt.Errorf("memtunnel: session %s: %w", s.id, s.broken)
	case s.sendClosed:
		return fmt.Errorf("memtunnel: session %s: sending half is closed", s.id)
	}
	return nil
}

// fanOutLocked delivers m to every linked peer listening on the channel,
// each through its own queue: a full queue drops (and counts) only there.
func (s *session) fanOutLocked(m *sdk.Message) {
	f := s.node.f
	for _, peer := range f.peersLocked(s.node.id) {
		target := f.nodes[peer]
		l := target.listeners[s.channel]
		if l == nil || !f.pass(s.node.id, peer, s.channel) {
			continue
		}
		in := s.fanout[peer]
		if in == nil {
			in = target.newSession(s.channel, s.mode, s.node.id)
			in.origin = s
			if ok, _ := l.backlog.offer(in); !ok {
				in.closeLocked()
				f.links[pairOf(s.node.id, peer)].drops[peer]++
				f.stats.Dropped++
				continue
			}
			s.fanout[peer] = in
		}
		s.deliverLocked(in, peer, m)
	}
}

// deliverLocked queues a copy of m on to without waiting.
func (s *session) deliverLocked(to *session, toNode string, m *sdk.Message) {
	f := s.node.f
	l := f.links[pairOf(s.node.id, toNode)]
	l.bytes[s.node.id] += uint64(len(m.Body))
	if ok, _ := to.in.offer(clone(m)); ok {
		f.stats.Delivered++
		return
	}
	l.drops[toNode]++
	f.stats.Dropped++
}

func (s *session) CloseSend() error {
	f := s.node.f
	f.mu.Lock()
	defer f.mu.Unlock()
	s.closeSendLocked()
	return nil
}

// closeSendLocked makes the receivers' Recv return io.EOF. An inbound
// multicast session only marks itself: the sender hears from many peers.
func (s *session) closeSendLocked() {
	if s.sendClosed {
		return
	}
	s.sendClosed = true
	if s.remote != nil {
		s.remote.in.close(io.EOF)
	}
	for _, in := range s.fanout {
		in.in.close(io.EOF)
	}
}

func (s *session) Close() error {
	f := s.node.f
	f.mu.Lock()
	defer f.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *session) closeLocked() {
	if s.closed {
		return
	}
	s.closeSendLocked()
	s.closed = true
	s.in.close(ErrClosed)
	s.detachLocked()
}

// breakLocked fails the session because its link went down.
func (s *session) breakLocked(err error) {
	if s.broken != nil || s.closed {
		return
	}
	s.broken = err
	s.in.close(err)
	s.detachLocked()
}

// detachLocked unregisters the session; a receiver that closed its inbound
// multicast session gets a fresh one with the sender's next message.
func (s *session) detachLocked() {
	delete(s.node.sessions, s)
	if s.origin != nil && s.origin.fanout[s.node.id] == s {
		delete(s.origin.fanout, s.node.id)
	}
}

// crosses reports whether the session runs over the link between a and b.
func (s *session) crosses(a, b string) bool {
	other := s.peer
	if other == "" {
		return false
	}
	return (s.node.id == a && other == b) || (s.node.id == b && other == a)
}

func clone(m *sdk.Message) *sdk.Message {
	c := &sdk.Message{Body: append([]byte(nil), m.Body...)}
	if m.Header != nil {
		c.Header = maps.Clone(m.Header)
	}
	return c
}
