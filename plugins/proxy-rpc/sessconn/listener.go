package sessconn

import (
	"context"
	"net"
	"sync"

	"github.com/microhost/microhost/sdk"
)

// Listener is a net.Listener over a tunnel listener: every accepted session
// becomes a Conn.
type Listener struct {
	lis    sdk.Listener
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

var _ net.Listener = (*Listener)(nil)

// NewListener wraps lis; closing the Listener closes lis.
func NewListener(lis sdk.Listener) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &Listener{lis: lis, ctx: ctx, cancel: cancel}
}

// Accept waits for the next session.
func (l *Listener) Accept() (net.Conn, error) {
	sess, err := l.lis.Accept(l.ctx)
	if err != nil {
		if l.ctx.Err() != nil {
			return nil, &net.OpError{Op: "accept", Net: "microhost", Addr: l.Addr(), Err: net.ErrClosed}
		}
		return nil, &net.OpError{Op: "accept", Net: "microhost", Addr: l.Addr(), Err: err}
	}
	return New(sess), nil
}

// Close stops accepting; sessions already accepted stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.err = l.lis.Close()
	})
	return l.err
}

func (l *Listener) Addr() net.Addr { return Addr{Channel: l.lis.Channel()} }
