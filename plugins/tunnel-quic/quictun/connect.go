package quictun

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// connector keeps a link to one configured address.
type connector struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	peer  string // learnt from the first successful handshake
	state LinkState
}

func (c *connector) status() (string, LinkState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer, c.state
}

func (c *connector) set(peer string, state LinkState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if peer != "" {
		c.peer = peer
	}
	c.state = state
}

// Connect keeps a link to address, redialling with exponential backoff
// (with jitter) while it is down. Connecting to an address already kept is
// a no-op.
func (n *Node) Connect(address string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if n.connectors[address] != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(n.ctx)
	c := &connector{addr: address, cancel: cancel, done: make(chan struct{}), state: LinkConnecting}
	n.connectors[address] = c
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(c.done)
		n.keepConnected(ctx, c)
	}()
	return nil
}

// Disconnect stops keeping a link to address and closes the link to the
// peer found there.
func (n *Node) Disconnect(address string) error {
	n.mu.Lock()
	c := n.connectors[address]
	delete(n.connectors, address)
	n.mu.Unlock()
	if c == nil {
		return fmt.Errorf("disconnect %q: %w", address, ErrNotConnected)
	}
	c.cancel()
	<-c.done
	peer, _ := c.status()
	if peer == "" {
		return nil
	}
	n.mu.Lock()
	l := n.links[peer]
	n.mu.Unlock()
	if l != nil {
		l.close(codeDisconnect, fmt.Errorf("disconnected from %s", address))
	}
	return nil
}

func (n *Node) keepConnected(ctx context.Context, c *connector) {
	backoff := n.cfg.ReconnectMin
	for ctx.Err() == nil {
		// Another connection to the same peer (it dialled us, or a second
		// address) is as good as ours: wait on it instead of redialling.
		if peer, _ := c.status(); peer != "" {
			n.mu.Lock()
			l := n.links[peer]
			n.mu.Unlock()
			if l != nil && l.isUp() {
				c.set("", LinkUp)
				n.waitLink(ctx, l)
				continue
			}
		}
		c.set("", LinkConnecting)
		l, err := n.dial(ctx, c.addr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var dup *duplicateError
			if errors.As(err, &dup) {
				// The winning connection will be registered shortly; the
				// next round waits on it instead of dialling.
				c.set(dup.peer, LinkConnecting)
				if !sleep(ctx, jitter(n.cfg.ReconnectMin)) {
					return
				}
				continue
			}
			c.set("", LinkDown)
			n.log.Warn("connect failed; retrying", "address", c.addr, "in", backoff.String(), "error", err)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, n.cfg.ReconnectMax)
			continue
		}
		c.set(l.peer, LinkUp)
		start := time.Now()
		n.waitLink(ctx, l)
		// Only a link that stayed up a while resets the backoff, so a peer
		// that accepts and drops at once is not hammered.
		if time.Since(start) > n.cfg.KeepaliveTimeout {
			backoff = n.cfg.ReconnectMin
		} else if !sleep(ctx, jitter(backoff)) {
			return
		} else {
			backoff = min(2*backoff, n.cfg.ReconnectMax)
		}
	}
}

func (n *Node) waitLink(ctx context.Context, l *link) {
	select {
	case <-ctx.Done():
	case <-l.ctx.Done():
	}
}

// jitter spreads d over [d/2, d) so that many nodes do not redial in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(half)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
