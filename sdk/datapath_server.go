package sdk

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	// helloTimeout bounds how long a new data path connection may take to
	// say what it wants.
	helloTimeout = 10 * time.Second
	// errorFrameTimeout bounds telling a consumer why its session ended when
	// it does not read.
	errorFrameTimeout = time.Second
)

// unclaimedSessionTimeout bounds how long an accepted session waits for its
// consumer to park a connection that can carry it. A variable for tests.
var unclaimedSessionTimeout = 10 * time.Second

var errListenerClosed = errors.New("the listener is closed")

// dataPath serves a tunnel's sessions on a unix socket of its own, so that
// consumers (the host, the proxy) reach the tunnel without the host
// relaying their bytes, and without gRPC: one connection per session,
// framed messages on it (see tunnel.proto). The socket lives in a fresh
// 0700 directory, and every connection must carry a random token the host
// hands out: both must be had to use it.
type dataPath struct {
	impl   Tunnel
	log    hclog.Logger
	dir    string
	socket string
	token  string
	ln     net.Listener
	ctx    context.Context // ends at stop
	cancel context.CancelFunc
	// unclaimedTimeout is unclaimedSessionTimeout when the data path started.
	unclaimedTimeout time.Duration

	mu        sync.Mutex
	conns     map[net.Conn]struct{} // nil once stopped
	listeners map[string]*parkingLot
	lastID    uint64
}

func startDataPath(impl Tunnel, log hclog.Logger) (*dataPath, error) {
	// Under a host, the socket goes in the directory go-plugin gives the
	// plugin for its sockets, which the host clears; standalone, in the temp
	// dir. Both keep the path short: unix socket paths are limited to ~104 bytes.
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(os.Getenv(plugin.EnvUnixSocketDir), "tun-")
	if err != nil {
		return nil, err
	}
	d := &dataPath{
		impl: impl, log: log.Named("data-path"), dir: dir, socket: filepath.Join(dir, "s"), token: hex.EncodeToString(raw),
		conns: map[net.Conn]struct{}{}, listeners: map[string]*parkingLot{}, unclaimedTimeout: unclaimedSessionTimeout,
	}
	if d.ln, err = net.Listen("unix", d.socket); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	go d.serve()
	return d, nil
}

// stop closes the socket and every connection; the sessions and listeners
// they carried close with them.
func (d *dataPath) stop() {
	d.cancel()
	d.ln.Close()
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	os.RemoveAll(d.dir)
}

func (d *dataPath) serve() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			if d.ctx.Err() != nil {
				return
			}
			// Out of file descriptors, say: the next try may work.
			d.log.Error("accepting a connection failed", "error", err)
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		go d.handle(c)
	}
}

func (d *dataPath) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *dataPath) closeConn(fc *frameConn) {
	d.mu.Lock()
	delete(d.conns, fc.conn)
	d.mu.Unlock()
	fc.conn.Close()
}

// refuse tells the consumer why and closes the connection.
func (d *dataPath) refuse(fc *frameConn, err error) {
	fc.conn.SetWriteDeadline(time.Now().Add(errorFrameTimeout))
	fc.writeControl(context.Background(), frameError, errorToPB(err))
	d.closeConn(fc)
}

// handle serves a new connection.
func (d *dataPath) handle(c net.Conn) {
	if !d.track(c) {
		c.Close()
		return
	}
	d.serveConn(newFrameConn(c), true)
}

// serveConn answers the hellos on fc, one after another, until a request
// keeps the connection or it closes. Only a new connection must say hello
// promptly: one that carried a session may wait in its consumer's pool.
func (d *dataPath) serveConn(fc *frameConn, first bool) {
	for {
		hello, err := readHello(fc, first)
		if err != nil {
			if first || errors.Is(err, errBadFrame) {
				d.log.Warn("dropping a connection that did not say hello", "error", err)
			}
			d.closeConn(fc)
			return
		}
		first = false
		if subtle.ConstantTimeCompare([]byte(hello.GetToken()), []byte(d.token)) != 1 {
			d.log.Warn("refusing a connection with a wrong token")
			d.refuse(fc, status.Error(codes.Unauthenticated, "the tunnel data path wants the token the host hands out"))
			return
		}
		switch r := hello.GetRequest().(type) {
		case *pb.DataPathHello_Dial:
			if !d.dial(hello.GetWait(), fc, r.Dial) {
				return
			}
		case *pb.DataPathHello_Listen:
			d.listen(hello.GetWait(), fc, r.Listen)
			return
		case *pb.DataPathHello_Park:
			d.park(fc, r.Park)
			return
		default:
			d.refuse(fc, status.Error(codes.InvalidArgument, "the hello asks for nothing: want dial, listen or park"))
			return
		}
	}
}

func readHello(fc *frameConn, first bool) (*pb.DataPathHello, error) {
	if first {
		fc.conn.SetReadDeadline(time.Now().Add(helloTimeout))
	}
	t, p, _, err := fc.readFrame()
	if err != nil {
		return nil, err
	}
	if first {
		fc.conn.SetReadDeadline(time.Time{})
	}
	if t != frameHello {
		return nil, fmt.Errorf("%w: a %s frame where a hello belongs", errBadFrame, t)
	}
	hello := &pb.DataPathHello{}
	if err := proto.Unmarshal(p, hello); err != nil {
		return nil, fmt.Errorf("%w: hello: %v", errBadFrame, err)
	}
	return hello, nil
}

// requestContext bounds the tunnel's work on a request by the consumer's wait.
func (d *dataPath) requestContext(wait *durationpb.Duration) (context.Context, context.CancelFunc) {
	if wait == nil {
		return context.WithCancel(d.ctx)
	}
	return context.WithTimeout(d.ctx, wait.AsDuration())
}

// dial opens a session and carries it; it reports whether fc can take
// another hello afterwards.
func (d *dataPath) dial(wait *durationpb.Duration, fc *frameConn, req *pb.DialRequest) bool {
	ctx, cancel := d.requestContext(wait)
	sess, err := d.impl.Dial(ctx, req.GetChannel(), DialOptions{
		Mode: Mode(req.GetMode()), Node: req.GetNode(), Timeout: DurationFromPB(req.GetTimeout()),
	})
	cancel()
	if err != nil {
		d.refuse(fc, err)
		return false
	}
	if _, err := fc.writeControl(context.Background(), frameOpened, sessionInfo(sess)); err != nil {
		// The consumer stopped waiting.
		sess.Close()
		d.closeConn(fc)
		return false
	}
	return d.carry(fc, sess)
}

func sessionInfo(sess Session) *pb.SessionInfo {
	return &pb.SessionInfo{Id: sess.ID(), Channel: sess.Channel(), Mode: pb.Mode(sess.Mode()), Peer: sess.Peer()}
}

// carrier moves one session's frames between its connection and the
// tunnel: toPeer in the goroutine that calls carry, toConsumer in one more.
type carrier struct {
	d      *dataPath
	fc     *frameConn
	sess   Session
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	// delivered is closed when toConsumer has returned.
	delivered chan struct{}

	wmu    sync.Mutex // writes to fc
	broken bool       // a write was cut short: no frame can follow
}

// carry carries sess on fc until it ends, and reports whether fc can take
// another hello: whether the consumer closed the session cleanly.
func (d *dataPath) carry(fc *frameConn, sess Session) bool {
	c := &carrier{d: d, fc: fc, sess: sess, delivered: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(d.ctx)
	go c.toConsumer()
	return c.toPeer()
}

// serveSession carries a session accepted for a parked connection, then
// serves whatever the connection asks for next.
func (d *dataPath) serveSession(fc *frameConn, sess Session) {
	if d.carry(fc, sess) {
		d.serveConn(fc, false)
	}
}

// toPeer applies the consumer's frames in order, so that a close takes
// effect only after every message before it was sent.
func (c *carrier) toPeer() (reusable bool) {
	for {
		t, p, _, err := c.fc.readFrame()
		if err != nil {
			if errors.Is(err, errBadFrame) {
				c.malformed(err)
			} else {
				c.end(nil) // the consumer went away
			}
			return false
		}
		switch t {
		case frameMessage:
			m, err := decodeMessage(p)
			if err != nil {
				c.malformed(err)
				return false
			}
			if err := c.sess.Send(c.ctx, m); err != nil {
				c.end(err)
				return false
			}
		case frameEOF:
			if err := c.sess.CloseSend(); err != nil {
				c.end(err)
				return false
			}
		case frameClose:
			return c.finish()
		default:
			c.malformed(fmt.Errorf("%w: a consumer does not send %s frames", errBadFrame, t))
			return false
		}
	}
}

// finish closes the session at its consumer's request and answers closed
// once nothing more of it will be written, so that the connection can
// carry another.
func (c *carrier) finish() bool {
	c.once.Do(func() {
		c.cancel()
		c.sess.Close()
	})
	<-c.delivered
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.broken {
		if _, err := c.fc.writeControl(context.Background(), frameClosed, nil); err == nil {
			return true
		}
	}
	c.d.closeConn(c.fc)
	return false
}

func (c *carrier) malformed(err error) {
	c.d.log.Warn("ending a session whose consumer sent a malformed frame", "session", c.sess.ID(), "channel", c.sess.Channel(), "error", err)
	c.end(err)
}

// toConsumer delivers what the peer sends. When the consumer is gone it
// stops, but does not end the session: toPeer still has to apply what the
// consumer sent before it went, and ends the session when that is done.
func (c *carrier) toConsumer() {
	defer close(c.delivered)
	for {
		m, err := c.sess.Recv(c.ctx)
		switch {
		case errors.Is(err, io.EOF):
			c.write(frameEOF, nil)
			return
		case err != nil:
			c.end(err)
			return
		}
		if err := c.write(frameMessage, m); err != nil {
			if errors.Is(err, errMessageTooLarge) {
				c.d.log.Warn("ending a session with a message over the data path's limit", "session", c.sess.ID(), "error", err)
				c.end(err)
			}
			return
		}
	}
}

// write writes a message, or a frame with no payload.
func (c *carrier) write(t frameType, m *Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var broken bool
	var err error
	if t == frameMessage {
		broken, err = c.fc.writeMessage(context.Background(), m)
	} else {
		broken, err = c.fc.writeControl(context.Background(), t, nil)
	}
	c.broken = c.broken || broken
	return err
}

// end ends the session once: it tells the consumer why (err, if not nil),
// closes the tunnel's session and the connection.
func (c *carrier) end(err error) {
	c.once.Do(func() {
		c.cancel()
		c.sess.Close()
		if err != nil {
			// A write blocked on a consumer that does not read gives up
			// by then, so that the lock is free.
			c.fc.conn.SetWriteDeadline(time.Now().Add(errorFrameTimeout))
			c.wmu.Lock()
			if !c.broken {
				c.fc.writeControl(context.Background(), frameError, errorToPB(err))
			}
			c.wmu.Unlock()
		}
		c.d.closeConn(c.fc)
	})
}

// maxWaitingSessions bounds the accepted sessions of one listener that
// wait for their consumer to park connections.
const maxWaitingSessions = 1024

// parkingLot is a tunnel listener opened on the data path, with the
// connections its consumer parked to carry the sessions it accepts. It
// takes sessions from the tunnel as they come, so that a burst waits here,
// each session for at most unclaimedSessionTimeout, rather than
// overflowing the tunnel's accept backlog while the consumer parks more.
type parkingLot struct {
	d       *dataPath
	id      string
	impl    Listener
	control *frameConn // the listen connection: the listener lives as long
	ctx     context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	parked   map[uint64]*frameConn // by sequence number
	next     uint64                // the sequence number the next session goes to
	waiting  []*waitingSession     // in arrival order; some may be done
	nWaiting int                   // those in waiting not done
	closed   bool
	endErr   error // why the listener ended, for connections that park later
}

// waitingSession is an accepted session without a connection yet.
type waitingSession struct {
	sess  Session
	timer *time.Timer // closes the session when it waited too long
	done  bool        // handed over or closed; guarded by parkingLot.mu
}

// handover pairs a session with the connection that carries it.
type handover struct {
	fc   *frameConn
	sess Session
}

func (d *dataPath) listen(wait *durationpb.Duration, fc *frameConn, channel string) {
	ctx, cancel := d.requestContext(wait)
	l, err := d.impl.Listen(ctx, channel)
	cancel()
	if err != nil {
		d.refuse(fc, err)
		return
	}
	lot := &parkingLot{d: d, impl: l, control: fc, parked: map[uint64]*frameConn{}}
	lot.ctx, lot.cancel = context.WithCancel(d.ctx)
	d.mu.Lock()
	d.lastID++
	lot.id = strconv.FormatUint(d.lastID, 10)
	d.listeners[lot.id] = lot
	d.mu.Unlock()
	if _, err := fc.writeControl(context.Background(), frameListening, &pb.ListenerInfo{Id: lot.id}); err != nil {
		lot.close(errListenerClosed)
		return
	}
	go lot.acceptLoop()
	// The consumer sends nothing more on this connection: whatever comes,
	// even its end, closes the listener.
	t, _, _, err := fc.readFrame()
	switch {
	case errors.Is(err, errBadFrame):
		d.log.Warn("closing a listener whose consumer sent a malformed frame", "channel", channel, "error", err)
	case err == nil:
		d.log.Warn("closing a listener whose consumer sent a frame on its listen connection", "channel", channel, "frame", t)
	}
	lot.close(errListenerClosed)
}

func (d *dataPath) park(fc *frameConn, req *pb.ParkRequest) {
	d.mu.Lock()
	lot := d.listeners[req.GetListener()]
	d.mu.Unlock()
	if lot == nil {
		d.refuse(fc, status.Errorf(codes.NotFound, "no listener %q on this data path", req.GetListener()))
		return
	}
	lot.park(req.GetSeq(), fc)
}

func (l *parkingLot) park(seq uint64, fc *frameConn) {
	l.mu.Lock()
	var refusal error
	switch {
	case l.closed:
		refusal = l.endErr
	case seq < l.next || l.parked[seq] != nil:
		refusal = status.Errorf(codes.InvalidArgument, "connection %d was parked at listener %s already", seq, l.id)
	default:
		l.parked[seq] = fc
	}
	handovers := l.matchLocked()
	l.mu.Unlock()
	if refusal != nil {
		l.d.refuse(fc, refusal)
	}
	l.handOver(handovers)
}

func (l *parkingLot) acceptLoop() {
	for {
		sess, err := l.impl.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() == nil {
				l.close(fmt.Errorf("listener on %q: %w", l.impl.Channel(), err))
			}
			return
		}
		l.arrive(sess)
	}
}

// arrive queues an accepted session and hands it over if its connection
// is parked already.
func (l *parkingLot) arrive(sess Session) {
	l.mu.Lock()
	if l.closed || l.nWaiting >= maxWaitingSessions {
		closed := l.closed
		l.mu.Unlock()
		if !closed {
			l.d.log.Warn("closing an accepted session: too many wait for their consumer", "channel", sess.Channel(), "peer", sess.Peer(), "waiting", maxWaitingSessions)
		}
		sess.Close()
		return
	}
	w := &waitingSession{sess: sess}
	l.waiting = append(l.waiting, w)
	l.nWaiting++
	handovers := l.matchLocked()
	if !w.done {
		w.timer = time.AfterFunc(l.d.unclaimedTimeout, func() { l.expire(w) })
	}
	l.mu.Unlock()
	l.handOver(handovers)
}

// matchLocked pairs waiting sessions with parked connections, in order on
// both sides; l.mu must be held.
func (l *parkingLot) matchLocked() []handover {
	var out []handover
	for len(l.waiting) > 0 {
		w := l.waiting[0]
		if !w.done {
			fc := l.parked[l.next]
			if fc == nil {
				break
			}
			delete(l.parked, l.next)
			l.next++
			l.nWaiting--
			w.done = true
			if w.timer != nil {
				w.timer.Stop()
			}
			out = append(out, handover{fc, w.sess})
		}
		l.waiting[0] = nil
		l.waiting = l.waiting[1:]
	}
	return out
}

// handOver tells each connection its session is open and carries it.
func (l *parkingLot) handOver(handovers []handover) {
	for _, h := range handovers {
		if _, err := h.fc.writeControl(context.Background(), frameOpened, sessionInfo(h.sess)); err != nil {
			// The consumer closed the connection: it is closing the listener.
			l.d.log.Debug("closing an accepted session: its connection is gone", "channel", h.sess.Channel(), "peer", h.sess.Peer(), "error", err)
			h.sess.Close()
			l.d.closeConn(h.fc)
			continue
		}
		go l.d.serveSession(h.fc, h.sess)
	}
}

func (l *parkingLot) expire(w *waitingSession) {
	l.mu.Lock()
	if w.done {
		l.mu.Unlock()
		return
	}
	w.done = true
	l.nWaiting--
	l.mu.Unlock()
	l.d.log.Warn("closing an accepted session that no consumer took up", "channel", w.sess.Channel(), "peer", w.sess.Peer(), "waited", l.d.unclaimedTimeout)
	w.sess.Close()
}

// close ends the listener and tells every parked connection why.
func (l *parkingLot) close(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed, l.endErr = true, err
	parked := l.parked
	var unclaimed []Session
	for _, w := range l.waiting {
		if w.done {
			continue
		}
		w.done = true
		if w.timer != nil {
			w.timer.Stop()
		}
		unclaimed = append(unclaimed, w.sess)
	}
	l.parked, l.waiting, l.nWaiting = nil, nil, 0
	l.mu.Unlock()
	l.cancel()
	l.impl.Close()
	l.d.mu.Lock()
	delete(l.d.listeners, l.id)
	l.d.mu.Unlock()
	for _, sess := range unclaimed {
		sess.Close()
	}
	for _, fc := range parked {
		l.d.refuse(fc, err)
	}
	l.d.closeConn(l.control)
}
