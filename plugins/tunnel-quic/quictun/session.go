package quictun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Session is a reliable, ordered, two-way stream of messages. Its
// resources are released by Close, or once Recv has returned an error
// (io.EOF included) and the sending half has ended: by CloseSend, a failed
// Send, or the peer's Close.
type Session interface {
	ID() string
	Channel() string
	Mode() Mode
	// Peer is the authenticated node id at the other end; "" for an outbound
	// multicast or broadcast session.
	Peer() string
	Send(ctx context.Context, m *Message) error
	// Recv returns the next message, or io.EOF once the other side closed
	// its sending half. A Recv that returns because ctx ended leaves the
	// session usable.
	Recv(ctx context.Context) (*Message, error)
	CloseSend() error
	Close() error
}

// DialOptions shape a Dial.
type DialOptions struct {
	Mode Mode
	// Node is the peer for a unicast session; "" picks the best link.
	Node string
	// Timeout bounds the dial; 0 means the node's dial timeout.
	Timeout time.Duration
}

// recvBuffer is how many decoded messages a multicast session holds ahead
// of Recv. Its readers block when it is full, which pushes back through
// QUIC flow control to the senders: nothing is dropped.
const recvBuffer = 16

// coalesceLimit is the largest body Send copies next to its frame head to
// write both at once; larger bodies are written in place.
const coalesceLimit = 16 << 10

// readBufferSize is the buffer between a session's QUIC stream and the
// decoder. It only batches small frames: a larger body is read straight
// into the message, so a bigger buffer would only cost idle memory (one
// per stream, several streams per link).
const readBufferSize = 4 << 10

// Listener yields the sessions peers dial to its channel.
type Listener struct {
	node    *Node
	channel string
	backlog chan *streamSession

	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// Listen accepts sessions dialled to channel and announces the channel to
// every peer.
func (n *Node) Listen(channel string) (*Listener, error) {
	if err := ValidateChannel(channel); err != nil {
		return nil, err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	if n.listeners[channel] != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("listen on %q: %w", channel, ErrChannelInUse)
	}
	ls := &Listener{node: n, channel: channel, backlog: make(chan *streamSession, n.cfg.AcceptBacklog), done: make(chan struct{})}
	n.listeners[channel] = ls
	n.mu.Unlock()
	n.announce()
	return ls, nil
}

// Channel is the channel the listener accepts sessions on.
func (ls *Listener) Channel() string { return ls.channel }

// Accept returns the next session dialled to the channel. Sessions are
// independent of the listener: closing one, locally or remotely, never
// affects the listener or other sessions.
func (ls *Listener) Accept(ctx context.Context) (Session, error) {
	select {
	case s := <-ls.backlog:
		return s, nil
	case <-ls.done:
		return nil, fmt.Errorf("listener on %q: %w", ls.channel, ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting, refuses sessions still waiting in the backlog and
// tells peers the channel is gone.
func (ls *Listener) Close() error {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return nil
	}
	ls.closed = true
	close(ls.done)
	ls.mu.Unlock()
	for {
		select {
		case s := <-ls.backlog:
			s.abort(streamNoListener)
			continue
		default:
		}
		break
	}
	n := ls.node
	n.mu.Lock()
	if n.listeners[ls.channel] == ls {
		delete(n.listeners, ls.channel)
	}
	n.mu.Unlock()
	n.announce()
	return nil
}

// offer queues an incoming session, refusing it if the backlog is full.
func (ls *Listener) offer(s *streamSession) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return false
	}
	select {
	case ls.backlog <- s:
		return true
	default:
		return false
	}
}

// acceptStreams takes the session streams a peer opens on l.
func (n *Node) acceptStreams(l *link) {
	for {
		str, err := l.conn.AcceptStream(l.ctx)
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.handleStream(l, str)
		}()
	}
}

func (n *Node) handleStream(l *link, str *quic.Stream) {
	defer l.handled.Add(1) // after the session counts as a reader, or was refused
	_ = str.SetReadDeadline(time.Now().Add(n.cfg.DialTimeout))
	r := bufio.NewReaderSize(str, readBufferSize)
	p, err := readPreamble(r)
	if err == nil && p.kind != kindSession {
		err = fmt.Errorf("%w: bidirectional stream of kind %d", ErrBadFrame, p.kind)
	}
	if err != nil {
		l.errs.Add(1)
		n.log.Warn("bad session stream", "link", l.String(), "error", err)
		str.CancelRead(streamBadFrame)
		str.CancelWrite(streamBadFrame)
		return
	}
	_ = str.SetReadDeadline(time.Time{})
	n.mu.Lock()
	ls := n.listeners[p.channel]
	n.mu.Unlock()
	if ls == nil {
		n.log.Debug("session refused: no listener", "link", l.String(), "channel", p.channel, "mode", p.mode.String())
		str.CancelRead(streamNoListener)
		str.CancelWrite(streamNoListener)
		return
	}
	s := newStreamSession(l, str, r, p.sessionID, p.channel, p.mode, l.peer)
	if !ls.offer(s) {
		l.drops.Add(1)
		n.log.Warn("session refused: accept backlog full (counted as a drop)", "link", l.String(), "channel", p.channel, "backlog", n.cfg.AcceptBacklog)
		s.abort(streamBacklog)
	}
}

// Dial opens a session on channel.
func (n *Node) Dial(ctx context.Context, channel string, opts DialOptions) (Session, error) {
	if err := ValidateChannel(channel); err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = n.cfg.DialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	switch opts.Mode {
	case Unicast:
		l, err := n.pickLink(channel, opts.Node)
		if err != nil {
			return nil, err
		}
		return n.dialUnicast(ctx, l, channel)
	case Multicast, Broadcast:
		return n.dialMulti(channel, opts.Mode)
	}
	return nil, fmt.Errorf("dial %q: unknown mode %d", channel, opts.Mode)
}

// pickLink chooses the link for a unicast session: the named node's, or the
// listening peer with the lowest measured RTT. Unmeasured links are used
// only when no measured one listens.
func (n *Node) pickLink(channel, node string) (*link, error) {
	if node != "" {
		n.mu.Lock()
		l := n.links[node]
		n.mu.Unlock()
		if l == nil || !l.isUp() {
			return nil, fmt.Errorf("dial %q to node %q: %w", channel, node, ErrNoLink)
		}
		if !l.listens(channel) {
			return nil, fmt.Errorf("dial %q to node %q: %w", channel, node, ErrNoListener)
		}
		return l, nil
	}
	var best *link
	for _, l := range n.upLinks() {
		if !l.listens(channel) {
			continue
		}
		if best == nil || betterRTT(l.measuredRTT(), best.measuredRTT()) {
			best = l
		}
	}
	if best == nil {
		return nil, fmt.Errorf("dial %q: %w", channel, ErrNoListener)
	}
	return best, nil
}

// betterRTT reports whether a beats b; an unmeasured (zero) RTT never does.
func betterRTT(a, b time.Duration) bool {
	if a == 0 {
		return false
	}
	return b == 0 || a < b
}

func (n *Node) newSessionID() string {
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.mu.Unlock()
	return n.id() + "-" + strconv.FormatUint(id, 10)
}

func (n *Node) dialUnicast(ctx context.Context, l *link, channel string) (Session, error) {
	str, err := l.conn.OpenStreamSync(ctx)
	if err != nil {
		l.errs.Add(1)
		return nil, fmt.Errorf("dial %q on link to %s: open stream: %w", channel, l.peer, err)
	}
	l.opened.Add(1)
	id := n.newSessionID()
	// The preamble goes out now so the peer's listener sees the session even
	// before the first message. The deadline covers a connection whose flow
	// control window is exhausted.
	if dl, ok := ctx.Deadline(); ok {
		_ = str.SetWriteDeadline(dl)
	}
	_, err = str.Write(preamble{kind: kindSession, mode: Unicast, channel: channel, sessionID: id}.append(nil))
	_ = str.SetWriteDeadline(time.Time{})
	if err != nil {
		l.errs.Add(1)
		str.CancelRead(streamAborted)
		str.CancelWrite(streamAborted)
		return nil, fmt.Errorf("dial %q on link to %s: %w", channel, l.peer, err)
	}
	return newStreamSession(l, str, bufio.NewReaderSize(str, readBufferSize), id, channel, Unicast, l.peer), nil
}

// streamSession is a session on one QUIC stream: every unicast session, and
// each incoming multicast or broadcast stream. Recv reads the stream in
// its caller's goroutine, so a message is not handed between goroutines.
type streamSession struct {
	id, channel, peer string
	mode              Mode
	link              *link
	str               *quic.Stream
	maxMsg            int

	// reading holds a token while a Recv reads the stream; Close takes it
	// for good.
	reading   chan struct{}
	frames    *frameReader // used only while holding the token
	recvErr   error        // sticky: the receiving half has ended; set holding the token
	readWatch ctxWatch
	closed    chan struct{}
	once      sync.Once
	// recvOver is set once the receiving half has ended, when the link
	// stops counting the session as a reader.
	recvOver atomic.Bool

	wmu        sync.Mutex // serialises writes, and Close/CancelWrite with them
	head       []byte     // reusable frame head buffer
	writeErr   error      // sticky: the send side is finished
	writeWatch ctxWatch
	closing    atomic.Bool
	writeDone  bool
}

func newStreamSession(l *link, str *quic.Stream, r io.Reader, id, channel string, mode Mode, peer string) *streamSession {
	n := l.node
	s := &streamSession{
		id: id, channel: channel, peer: peer, mode: mode, link: l, str: str,
		maxMsg:  n.cfg.MaxMessageSize,
		reading: make(chan struct{}, 1),
		frames:  newFrameReader(r, n.cfg.MaxMessageSize),
		closed:  make(chan struct{}),
	}
	s.readWatch.setDeadline = str.SetReadDeadline
	s.writeWatch.setDeadline = str.SetWriteDeadline
	l.readers.Add(1)
	// The node tracks the session until its sending half is over, however
	// that happens: CloseSend, Close, a failed write, the peer stopping
	// reading, or the link going down. quic-go cancels the stream's
	// context in every case, also when the consumer never closes the
	// session after its peer did.
	n.mu.Lock()
	n.sessions[s] = struct{}{}
	n.wg.Add(1)
	n.mu.Unlock()
	context.AfterFunc(str.Context(), func() {
		defer n.wg.Done()
		n.forget(s)
		s.writeWatch.release()
	})
	return s
}

// endRecv marks the receiving half over, once.
func (s *streamSession) endRecv() {
	if s.recvOver.CompareAndSwap(false, true) {
		s.link.readers.Add(-1)
	}
}

// finishWrite marks the sending half done; it reports false if it was.
// The caller holds wmu.
func (s *streamSession) finishWrite() bool {
	if s.writeDone {
		return false
	}
	s.writeDone = true
	s.writeWatch.release()
	return true
}

// ctxWatch makes the end of a context interrupt a stream's reads (or
// writes) by setting their deadline. Consumers pass the same context to
// every call, so a watch stays registered from one call to the next rather
// than being set up and torn down for every message; it is released when
// that half of the session ends.
type ctxWatch struct {
	setDeadline func(time.Time) error

	mu    sync.Mutex
	done  <-chan struct{} // Done of the watched context
	stop  func() bool
	fired chan struct{} // closed once the deadline is set
}

// watch makes the end of ctx interrupt the stream's blocked and future
// calls, in place of any context watched before.
func (w *ctxWatch) watch(ctx context.Context) {
	done := ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	if done == w.done {
		return
	}
	w.releaseLocked()
	if done == nil {
		return
	}
	fired := make(chan struct{})
	w.done, w.fired = done, fired
	w.stop = context.AfterFunc(ctx, func() {
		_ = w.setDeadline(time.Now())
		close(fired)
	})
}

// release stops watching and lifts a deadline the watched context set.
func (w *ctxWatch) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked()
}

func (w *ctxWatch) releaseLocked() {
	if w.stop != nil && !w.stop() {
		<-w.fired
		_ = w.setDeadline(time.Time{})
	}
	w.done, w.stop, w.fired = nil, nil, nil
}

func (s *streamSession) ID() string      { return s.id }
func (s *streamSession) Channel() string { return s.channel }
func (s *streamSession) Mode() Mode      { return s.mode }
func (s *streamSession) Peer() string    { return s.peer }

// translate turns a QUIC error into one that says what happened.
func (s *streamSession) translate(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if s.closing.Load() {
		return fmt.Errorf("session %s: %w", s.id, ErrClosed)
	}
	return streamError(err, s.channel, s.peer)
}

// rejectCode says how to reject a stream whose frame could not be read.
func rejectCode(err error) (quic.StreamErrorCode, bool) {
	switch {
	case errors.Is(err, ErrMessageTooLarge):
		return streamTooLarge, true
	case errors.Is(err, ErrBadFrame):
		return streamBadFrame, true
	}
	return 0, false
}

func streamError(err error, channel, peer string) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		switch se.ErrorCode {
		case streamNoListener:
			return fmt.Errorf("channel %q on node %s: %w", channel, peer, ErrNoListener)
		case streamBacklog:
			return fmt.Errorf("channel %q on node %s: %w: accept backlog full", channel, peer, ErrRefused)
		case streamAborted:
			return fmt.Errorf("channel %q: node %s aborted the session: %w", channel, peer, ErrRefused)
		case streamBadFrame:
			return fmt.Errorf("channel %q: node %s rejected a malformed frame: %w", channel, peer, ErrBadFrame)
		case streamTooLarge:
			return fmt.Errorf("channel %q: node %s refused a message over its max_message_size: %w", channel, peer, ErrMessageTooLarge)
		}
	}
	var ae *quic.ApplicationError
	var ie *quic.IdleTimeoutError
	if errors.As(err, &ae) || errors.As(err, &ie) {
		return fmt.Errorf("session on %q with %s: %w: %v", channel, peer, ErrLinkDown, err)
	}
	return fmt.Errorf("session on %q with %s: %w", channel, peer, err)
}

// Recv reads the next message. A Recv that returns because its context
// ended leaves the session usable: the next Recv carries on where the
// stream was left.
func (s *streamSession) Recv(ctx context.Context) (*Message, error) {
	select {
	case s.reading <- struct{}{}:
	case <-s.closed:
		return nil, fmt.Errorf("session %s: %w", s.id, ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.reading }()
	if s.recvErr != nil {
		return nil, s.recvErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.readWatch.watch(ctx)
	m, err := s.frames.next()
	if err == nil {
		return m, nil
	}
	if ctx.Err() != nil && !s.closing.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, ctx.Err()
	}
	s.readWatch.release()
	if code, bad := rejectCode(err); bad {
		s.link.errs.Add(1)
		s.link.node.log.Warn("session stream broken", "session", s.id, "peer", s.peer, "error", err)
		s.str.CancelRead(code)
	}
	s.recvErr = s.translate(err)
	s.endRecv()
	return nil, s.recvErr
}

func (s *streamSession) Send(ctx context.Context, m *Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writeErr != nil {
		return s.writeErr
	}
	head, err := frameHead(s.head[:0], m, s.maxMsg)
	if err != nil {
		return err // nothing was written; the session stays usable
	}
	s.head = head
	s.writeWatch.watch(ctx)
	if len(m.Body) <= coalesceLimit {
		// One write keeps a small message in one packet.
		s.head = append(head, m.Body...)
		_, err = s.str.Write(s.head)
	} else {
		_, err = s.str.Write(head)
		if err == nil {
			_, err = s.str.Write(m.Body)
		}
	}
	if err == nil {
		return nil
	}
	// A frame may be half written: the stream cannot carry another one.
	switch {
	case s.closing.Load():
		s.writeErr = fmt.Errorf("session %s: %w", s.id, ErrClosed)
	case ctx.Err() != nil:
		s.writeErr = fmt.Errorf("session %s aborted: send interrupted: %w", s.id, ctx.Err())
	default:
		s.link.errs.Add(1)
		s.writeErr = streamError(err, s.channel, s.peer)
	}
	if s.finishWrite() {
		s.str.CancelWrite(streamAborted)
	}
	return s.writeErr
}

func (s *streamSession) CloseSend() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.finishWrite() {
		return nil
	}
	if s.writeErr == nil {
		s.writeErr = fmt.Errorf("session %s: send side closed: %w", s.id, ErrClosed)
	}
	return s.str.Close()
}

// Close ends the session: what was sent is still delivered, and the peer's
// further sends fail.
func (s *streamSession) Close() error {
	s.shut(func() {
		if s.finishWrite() {
			_ = s.str.Close()
		}
	}, streamAborted)
	return nil
}

// abort resets both directions (used to refuse a session).
func (s *streamSession) abort(code quic.StreamErrorCode) {
	s.shut(func() {
		if s.finishWrite() {
			s.str.CancelWrite(code)
		}
	}, code)
}

func (s *streamSession) shut(finishWrite func(), readCode quic.StreamErrorCode) {
	s.once.Do(func() {
		s.closing.Store(true)
		close(s.closed)
		// Unblock a Send stuck on flow control so the write side can be
		// finished under wmu.
		_ = s.str.SetWriteDeadline(time.Now())
		s.wmu.Lock()
		if s.writeErr == nil {
			s.writeErr = fmt.Errorf("session %s: %w", s.id, ErrClosed)
		}
		_ = s.str.SetWriteDeadline(time.Time{})
		finishWrite()
		s.wmu.Unlock()
		s.str.CancelRead(readCode)
		s.endRecv()
		// A Recv in progress returns now; later ones find the session
		// closed.
		s.reading <- struct{}{}
		s.readWatch.release()
	})
}
