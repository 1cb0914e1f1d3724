package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// parkedPerListener is how many connections a listener keeps parked at the
// tunnel, ready to carry sessions it accepts before Accept asks for more;
// a burst of sessions beyond it waits for new connections.
const parkedPerListener = 8

// sessionCloseTimeout bounds how long Close waits for a Send stuck on a
// tunnel that does not read before it cuts the session.
const sessionCloseTimeout = 5 * time.Second

// dataPathClient opens sessions and listeners on a tunnel's data path.
type dataPathClient struct {
	// locate asks where the data path is now; nil when info is all there is.
	locate func(context.Context) (*pb.DataPathInfo, error)
	// open holds what the owner's Close ends; nil when it ends nothing.
	open *openSet
	// idle holds connections whose sessions ended cleanly, for the next.
	idle connPool

	mu   sync.Mutex
	info *pb.DataPathInfo
}

// endpoint returns where the data path is, asking afresh if refresh.
func (c *dataPathClient) endpoint(ctx context.Context, refresh bool) (*pb.DataPathInfo, error) {
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	if c.locate == nil || (info != nil && !refresh) {
		return info, nil
	}
	info, err := c.locate(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := unixPath(info); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.info = info
	c.mu.Unlock()
	return info, nil
}

func unixPath(info *pb.DataPathInfo) (string, error) {
	path, ok := strings.CutPrefix(info.GetAddress(), "unix:")
	if !ok {
		return "", fmt.Errorf("tunnel data path %q: want unix:/path", info.GetAddress())
	}
	return path, nil
}

// conn returns a connection ready for a hello: an idle one if there is
// one (reused), else a new one.
func (c *dataPathClient) conn(ctx context.Context, info *pb.DataPathInfo) (fc *frameConn, reused bool, err error) {
	if fc := c.idle.get(ctx); fc != nil {
		return fc, true, nil
	}
	path, err := unixPath(info)
	if err != nil {
		return nil, false, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, false, fmt.Errorf("tunnel data path: %w", err)
	}
	return newFrameConn(conn), false, nil
}

// send sends hello on a connection ready for one. An idle connection that
// turns out dead (the tunnel went away since) is given up for the next.
func (c *dataPathClient) send(ctx context.Context, info *pb.DataPathInfo, hello *pb.DataPathHello) (fc *frameConn, reused bool, err error) {
	hello.Token = info.GetToken()
	for {
		fc, reused, err := c.conn(ctx, info)
		if err != nil {
			return nil, false, err
		}
		_, err = fc.writeControl(ctx, frameHello, hello)
		if err == nil {
			return fc, reused, nil
		}
		fc.conn.Close()
		if !reused || ctx.Err() != nil {
			return nil, false, fmt.Errorf("tunnel data path: %w", err)
		}
	}
}

// request sends hello and reads the answer, which must be a frame of type
// want. When the data path moved (the tunnel plugin was restarted), it is
// looked up again, once.
func (c *dataPathClient) request(ctx context.Context, hello *pb.DataPathHello, want frameType) (*frameConn, []byte, *pb.DataPathInfo, error) {
	if deadline, ok := ctx.Deadline(); ok {
		hello.Wait = durationpb.New(time.Until(deadline))
	}
	for attempt := 0; ; attempt++ {
		info, err := c.endpoint(ctx, attempt > 0)
		if err != nil {
			return nil, nil, nil, err
		}
		fc, p, err := c.answer(ctx, info, hello, want)
		if err == nil {
			return fc, p, info, nil
		}
		if attempt > 0 || c.locate == nil || ctx.Err() != nil || !moved(err) {
			return nil, nil, nil, err
		}
	}
}

// answer sends hello and reads the tunnel's answer.
func (c *dataPathClient) answer(ctx context.Context, info *pb.DataPathInfo, hello *pb.DataPathHello, want frameType) (*frameConn, []byte, error) {
	for {
		fc, reused, err := c.send(ctx, info, hello)
		if err != nil {
			return nil, nil, err
		}
		t, p, _, err := fc.readFrameCtx(ctx)
		if err != nil {
			fc.conn.Close()
			if reused && ctx.Err() == nil {
				continue // the tunnel went away since the connection was idle
			}
			return nil, nil, fmt.Errorf("tunnel data path: %w", err)
		}
		switch t {
		case want:
			return fc, p, nil
		case frameError:
			err = decodeError(p)
		default:
			err = fmt.Errorf("tunnel data path: %w: %s frame in answer to a hello", errBadFrame, t)
		}
		fc.conn.Close()
		return nil, nil, err
	}
}

// moved says whether err means the data path is no longer where it was.
func moved(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		status.Code(err) == codes.Unauthenticated
}

func (c *dataPathClient) dial(ctx context.Context, channel string, opts DialOptions) (Session, error) {
	fc, p, _, err := c.request(ctx, &pb.DataPathHello{Request: &pb.DataPathHello_Dial{Dial: &pb.DialRequest{
		Channel: channel, Mode: pb.Mode(opts.Mode), Node: opts.Node, Timeout: DurationToPB(opts.Timeout),
	}}}, frameOpened)
	if err != nil {
		return nil, err
	}
	return c.openSession(fc, p)
}

// openSession makes a session of a connection the tunnel said opened on.
func (c *dataPathClient) openSession(fc *frameConn, opened []byte) (Session, error) {
	info := &pb.SessionInfo{}
	if err := proto.Unmarshal(opened, info); err != nil {
		fc.conn.Close()
		return nil, fmt.Errorf("tunnel data path: %w: opened: %v", errBadFrame, err)
	}
	s := &sessionConn{info: info, fc: fc, open: c.open, idle: &c.idle}
	if !c.open.add(s) {
		fc.conn.Close()
		return nil, errDataPathClosed
	}
	return s, nil
}

var errDataPathClosed = errors.New("tunnel data path: closed")

// listen opens a listener and parks connections for the sessions it will
// accept. It returns once peers can dial the channel.
func (c *dataPathClient) listen(ctx context.Context, channel string) (Listener, error) {
	fc, p, info, err := c.request(ctx, &pb.DataPathHello{Request: &pb.DataPathHello_Listen{Listen: channel}}, frameListening)
	if err != nil {
		return nil, err
	}
	var li pb.ListenerInfo
	if err := proto.Unmarshal(p, &li); err != nil {
		fc.conn.Close()
		return nil, fmt.Errorf("tunnel data path: %w: listening: %v", errBadFrame, err)
	}
	l := &listenerConn{client: c, info: info, channel: channel, id: li.GetId(), control: fc}
	if err := l.park(ctx); err != nil {
		l.end(err)
		return nil, err
	}
	if !c.open.add(l) {
		l.Close()
		return nil, errDataPathClosed
	}
	return l, nil
}

// listenerConn is a listener on the data path: its listen connection keeps
// the tunnel's listener alive, and sessions arrive on parked connections
// in the order they were parked.
type listenerConn struct {
	client  *dataPathClient
	info    *pb.DataPathInfo
	channel string
	id      string
	control *frameConn

	acceptMu sync.Mutex // one Accept at a time, since sessions come in order
	nextSeq  uint64     // guarded by acceptMu

	mu     sync.Mutex
	parked []*frameConn // parked[0] carries the next session
	err    error        // why the listener ended; nil while it works
}

// park parks connections until parkedPerListener wait.
func (l *listenerConn) park(ctx context.Context) error {
	for {
		l.mu.Lock()
		n, err := len(l.parked), l.err
		l.mu.Unlock()
		if err != nil || n >= parkedPerListener {
			return err
		}
		fc, _, err := l.client.send(ctx, l.info, &pb.DataPathHello{Request: &pb.DataPathHello_Park{Park: &pb.ParkRequest{Listener: l.id, Seq: l.nextSeq}}})
		if err != nil {
			return err
		}
		l.nextSeq++
		l.mu.Lock()
		if l.err != nil {
			l.mu.Unlock()
			fc.conn.Close()
			return l.err
		}
		l.parked = append(l.parked, fc)
		l.mu.Unlock()
	}
}

func (l *listenerConn) Accept(ctx context.Context) (Session, error) {
	l.acceptMu.Lock()
	defer l.acceptMu.Unlock()
	// Parking again before waiting keeps the tunnel supplied while this
	// consumer handles the sessions it accepted.
	parkErr := l.park(ctx)
	l.mu.Lock()
	err := l.err
	var next *frameConn
	if len(l.parked) > 0 {
		next = l.parked[0]
	}
	l.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case next == nil:
		return nil, parkErr
	}
	t, p, broken, err := next.readFrameCtx(ctx)
	if err != nil && !broken && ctx.Err() != nil {
		return nil, ctx.Err() // the connection is still parked, as it was
	}
	l.mu.Lock()
	ended := l.err
	if ended == nil {
		l.parked = l.parked[1:]
	}
	l.mu.Unlock()
	switch {
	case ended != nil:
		return nil, ended
	case err != nil:
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("the tunnel closed the data path: %w", io.ErrUnexpectedEOF)
		}
		return nil, l.end(fmt.Errorf("tunnel listener on %q: %w", l.channel, err))
	case t == frameOpened:
		return l.client.openSession(next, p)
	case t == frameError:
		return nil, l.end(decodeError(p))
	}
	return nil, l.end(fmt.Errorf("tunnel listener on %q: %w: %s frame on a parked connection", l.channel, errBadFrame, t))
}

func (l *listenerConn) Channel() string { return l.channel }

func (l *listenerConn) Close() error {
	l.end(fmt.Errorf("tunnel listener on %q: %w", l.channel, errListenerClosed))
	return nil
}

// end closes the listener's connections, which closes the tunnel's
// listener, and returns why the listener ended.
func (l *listenerConn) end(why error) error {
	l.mu.Lock()
	if l.err != nil {
		why = l.err
		l.mu.Unlock()
		return why
	}
	l.err = why
	parked := l.parked
	l.parked = nil
	l.mu.Unlock()
	l.control.conn.Close()
	for _, fc := range parked {
		fc.conn.Close()
	}
	l.client.open.remove(l)
	return why
}

// sessionConn is a session on a data path connection of its own. Send
// and Recv use the connection from the caller's goroutine.
type sessionConn struct {
	info *pb.SessionInfo
	fc   *frameConn
	open *openSet
	idle *connPool // where fc goes when the session closes cleanly

	recvMu  sync.Mutex
	recvErr error // io.EOF once the peer closed its sending half, or why the session ended

	sendMu     sync.Mutex
	sendClosed bool
	sendErr    error // why the session cannot send any more

	closeOnce sync.Once
	closed    atomic.Bool
}

func (s *sessionConn) ID() string      { return s.info.GetId() }
func (s *sessionConn) Channel() string { return s.info.GetChannel() }
func (s *sessionConn) Mode() Mode      { return Mode(s.info.GetMode()) }
func (s *sessionConn) Peer() string    { return s.info.GetPeer() }

func (s *sessionConn) Send(ctx context.Context, m *Message) error {
	if m == nil {
		return fmt.Errorf("tunnel session %s: send: message is nil", s.ID())
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	switch {
	case s.sendClosed:
		return fmt.Errorf("tunnel session %s: send side closed: %w", s.ID(), io.ErrClosedPipe)
	case s.sendErr != nil:
		return s.sendErr
	}
	broken, err := s.fc.writeMessage(ctx, m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errMessageTooLarge):
		return fmt.Errorf("tunnel session %s: %w", s.ID(), err)
	case !broken && ctx.Err() != nil:
		return ctx.Err() // nothing was written: the session goes on
	}
	s.sendErr = s.ended(err)
	if broken {
		// The tunnel cannot tell where the next frame starts.
		s.fc.conn.Close()
	}
	return s.sendErr
}

// Recv returns the next message, io.EOF after the peer's CloseSend, or
// why the session ended. Ending ctx while a message is half read closes
// the session.
func (s *sessionConn) Recv(ctx context.Context) (*Message, error) {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if s.recvErr != nil {
		return nil, s.recvErr
	}
	t, p, broken, err := s.fc.readFrameCtx(ctx)
	if err != nil {
		if !broken && ctx.Err() != nil {
			return nil, ctx.Err() // nothing was read: the session goes on
		}
		if broken {
			s.fc.conn.Close()
		}
		if ctx.Err() != nil {
			s.recvErr = s.ended(ctx.Err())
			return nil, ctx.Err()
		}
		s.recvErr = s.ended(err)
		return nil, s.recvErr
	}
	switch t {
	case frameMessage:
		m, err := decodeMessage(p)
		if err == nil {
			return m, nil
		}
		s.fc.conn.Close()
		s.recvErr = s.ended(err)
	case frameEOF:
		s.recvErr = io.EOF
	case frameError:
		// The tunnel's own words, as they would read from the tunnel itself.
		s.recvErr = decodeError(p)
	default:
		s.fc.conn.Close()
		s.recvErr = s.ended(fmt.Errorf("%w: a tunnel does not send %s frames in a session", errBadFrame, t))
	}
	return nil, s.recvErr
}

// ended says why the session cannot go on after err on its connection.
func (s *sessionConn) ended(err error) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("tunnel session %s: closed", s.ID())
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("tunnel session %s: the tunnel ended the session: %w", s.ID(), io.ErrClosedPipe)
	}
	return fmt.Errorf("tunnel session %s: %w", s.ID(), err)
}

func (s *sessionConn) CloseSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		return nil
	}
	s.sendClosed = true
	if s.sendErr != nil {
		return s.sendErr
	}
	broken, err := s.fc.writeControl(context.Background(), frameEOF, nil)
	if err != nil {
		s.sendErr = s.ended(err)
		if broken {
			s.fc.conn.Close()
		}
	}
	return s.sendErr
}

// Close ends the session after everything sent before it; the tunnel
// still delivers that to the peer. The connection then waits idle for the
// next session, unless the session ended in a way that leaves it unusable.
func (s *sessionConn) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		// A Send stuck on a tunnel that does not read gives up by then.
		deadline := time.Now().Add(sessionCloseTimeout)
		s.fc.conn.SetWriteDeadline(deadline)
		s.sendMu.Lock()
		s.fc.conn.SetWriteDeadline(deadline) // a Send that ended ctx's wait cleared it
		reusable := false
		if s.sendErr == nil {
			_, err := s.fc.writeControl(context.Background(), frameClose, nil)
			reusable = err == nil
		}
		s.sendClosed = true
		s.sendErr = s.ended(net.ErrClosed)
		s.sendMu.Unlock()
		// A Recv in progress holds the connection: only closing it ends
		// that Recv.
		if reusable && s.recvMu.TryLock() {
			reusable = s.recvErr == nil || s.recvErr == io.EOF
			s.recvErr = s.sendErr
			s.recvMu.Unlock()
		} else {
			reusable = false
		}
		if reusable {
			s.fc.conn.SetWriteDeadline(time.Time{})
			s.idle.put(s.fc)
		} else {
			s.fc.conn.Close()
		}
		s.open.remove(s)
	})
	return nil
}

// maxIdleConns bounds the connections a data path client keeps idle for
// the next session; with fewer than a consumer's concurrent sessions, each
// new session opens a connection of its own.
const maxIdleConns = 16

// connPool holds connections whose sessions were closed cleanly, oldest
// first. A connection's `closed` answer may still be on its way: get reads
// up to it.
type connPool struct {
	mu     sync.Mutex
	conns  []*frameConn
	closed bool
}

func (p *connPool) put(fc *frameConn) {
	p.mu.Lock()
	if p.closed || len(p.conns) >= maxIdleConns {
		p.mu.Unlock()
		fc.conn.Close()
		return
	}
	p.conns = append(p.conns, fc)
	p.mu.Unlock()
}

// get returns an idle connection ready for a hello, or nil.
func (p *connPool) get(ctx context.Context) *frameConn {
	for ctx.Err() == nil {
		p.mu.Lock()
		if len(p.conns) == 0 {
			p.mu.Unlock()
			return nil
		}
		fc := p.conns[0]
		p.conns = p.conns[1:]
		p.mu.Unlock()
		ready, broken := drain(ctx, fc)
		switch {
		case ready:
			return fc
		case !broken && ctx.Err() != nil:
			p.putBack(fc) // ctx ended before the tunnel answered closed
			return nil
		}
		fc.conn.Close()
	}
	return nil
}

func (p *connPool) putBack(fc *frameConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		fc.conn.Close()
		return
	}
	p.conns = append([]*frameConn{fc}, p.conns...)
}

// drain reads what is left of a closed session, up to the tunnel's
// closed; it reports whether the connection got there, and if not,
// whether it stopped within a frame.
func drain(ctx context.Context, fc *frameConn) (ready, broken bool) {
	for {
		t, _, broken, err := fc.readFrameCtx(ctx)
		switch {
		case err != nil:
			return false, broken
		case t == frameClosed:
			return true, false
		case t != frameMessage && t != frameEOF:
			return false, true
		}
	}
}

func (p *connPool) close() {
	p.mu.Lock()
	conns := p.conns
	p.conns, p.closed = nil, true
	p.mu.Unlock()
	for _, fc := range conns {
		fc.conn.Close()
	}
}

// openSet holds the sessions and listeners a data path tunnel opened, so
// that closing it closes them. Its methods do nothing on a nil set.
type openSet struct {
	mu     sync.Mutex
	items  map[io.Closer]struct{}
	closed bool
}

func (o *openSet) add(c io.Closer) bool {
	if o == nil {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if o.items == nil {
		o.items = map[io.Closer]struct{}{}
	}
	o.items[c] = struct{}{}
	return true
}

func (o *openSet) remove(c io.Closer) {
	if o == nil {
		return
	}
	o.mu.Lock()
	delete(o.items, c)
	o.mu.Unlock()
}

func (o *openSet) closeAll() {
	o.mu.Lock()
	o.closed = true
	items := o.items
	o.items = nil
	o.mu.Unlock()
	for c := range items {
		c.Close()
	}
}
