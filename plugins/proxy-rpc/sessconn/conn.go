// Package sessconn adapts tunnel sessions to the net package, so that a
// byte-stream protocol (HTTP/2 for gRPC) runs over a session: each Write is
// sent as one message body and Read drains message bodies in order.
package sessconn

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/microhost/microhost/sdk"
)

// Addr is the address of one end of a session.
type Addr struct {
	Node    string // node id; "" for this node
	Channel string
}

func (a Addr) Network() string { return "microhost" }
func (a Addr) String() string {
	if a.Node == "" {
		return "local/" + a.Channel
	}
	return a.Node + "/" + a.Channel
}

// Conn is a net.Conn over a unicast session.
type Conn struct {
	sess sdk.Session

	ctx    context.Context // ends when the conn is closed
	cancel context.CancelFunc

	readMu  sync.Mutex
	pending []byte // rest of the last message body not yet read

	writeMu sync.Mutex

	readDeadline  deadline
	writeDeadline deadline

	closeOnce sync.Once
	closeErr  error
}

var _ net.Conn = (*Conn)(nil)

// New wraps sess; closing the Conn closes the session.
func New(sess sdk.Session) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &Conn{sess: sess, ctx: ctx, cancel: cancel}
}

// Read reads from the current message body, receiving the next one when it
// is used up. It returns io.EOF once the peer closed its sending half.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(c.pending) == 0 {
		if len(b) == 0 {
			return 0, nil
		}
		ctx, done := c.readDeadline.context(c.ctx)
		m, err := c.sess.Recv(ctx)
		if err != nil {
			err = c.opError(ctx, "read", err)
		}
		done()
		if err != nil {
			return 0, err
		}
		c.pending = m.Body
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// Write sends b as one message. The caller may reuse b at once, so it is
// copied.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	ctx, done := c.writeDeadline.context(c.ctx)
	defer done()
	if err := c.sess.Send(ctx, &sdk.Message{Body: append([]byte(nil), b...)}); err != nil {
		return 0, c.opError(ctx, "write", err)
	}
	return len(b), nil
}

// opError maps session errors to what net.Conn users expect; ctx is the
// operation's context.
func (c *Conn) opError(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return io.EOF
	case c.ctx.Err() != nil:
		return &net.OpError{Op: op, Net: "microhost", Addr: c.RemoteAddr(), Err: net.ErrClosed}
	case errors.Is(context.Cause(ctx), os.ErrDeadlineExceeded):
		return &net.OpError{Op: op, Net: "microhost", Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
	return &net.OpError{Op: op, Net: "microhost", Addr: c.RemoteAddr(), Err: err}
}

// Close closes the session; blocked reads and writes return.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.closeErr = c.sess.Close()
		c.readDeadline.stop()
		c.writeDeadline.stop()
	})
	return c.closeErr
}

func (c *Conn) LocalAddr() net.Addr  { return Addr{Channel: c.sess.Channel()} }
func (c *Conn) RemoteAddr() net.Addr { return Addr{Node: c.sess.Peer(), Channel: c.sess.Channel()} }

func (c *Conn) SetDeadline(t time.Time) error {
	c.readDeadline.set(t)
	c.writeDeadline.set(t)
	return nil
}
func (c *Conn) SetReadDeadline(t time.Time) error  { c.readDeadline.set(t); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.writeDeadline.set(t); return nil }

// deadline is a settable deadline that also interrupts operations already
// blocked when it passes or moves into the past, as net.Conn requires.
type deadline struct {
	mu      sync.Mutex
	at      time.Time
	expired chan struct{} // closed when the current deadline passes
	timer   *time.Timer
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.at = t
	// A blocked operation keeps waiting on the same channel unless it has
	// already fired, so moving the deadline applies to it too.
	if d.expired == nil || isClosed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	ch := d.expired
	if wait := time.Until(t); wait <= 0 {
		close(ch)
	} else {
		d.timer = time.AfterFunc(wait, func() { close(ch) })
	}
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// context derives from parent a context that is cancelled with cause
// os.ErrDeadlineExceeded when the deadline passes. Without a deadline it
// returns parent itself, so the common case costs no goroutine.
func (d *deadline) context(parent context.Context) (context.Context, func()) {
	d.mu.Lock()
	at, expired := d.at, d.expired
	d.mu.Unlock()
	if at.IsZero() {
		return parent, func() {}
	}
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		select {
		case <-expired:
			cancel(os.ErrDeadlineExceeded)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
