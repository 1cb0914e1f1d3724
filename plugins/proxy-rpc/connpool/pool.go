// Package connpool keeps one gRPC client connection per target (an instance
// address or a gateway node), shared by every call to it, and closes the
// ones no route has needed for a while.
package connpool

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// DialFunc creates the client connection for target.
type DialFunc func(target string) (*grpc.ClientConn, error)

// Pool is a set of client connections by target. It is safe for concurrent use.
type Pool struct {
	dial DialFunc
	now  func() time.Time

	mu     sync.Mutex
	conns  map[string]*entry
	closed bool
}

type entry struct {
	cc       *grpc.ClientConn
	active   int       // calls using cc right now
	lastUsed time.Time // when the last call ended or began
}

// New returns an empty pool; now is its clock (nil means time.Now).
func New(dial DialFunc, now func() time.Time) *Pool {
	if now == nil {
		now = time.Now
	}
	return &Pool{dial: dial, now: now, conns: make(map[string]*entry)}
}

// Get returns the connection for target, creating it on first use. The
// caller must call release when its call has ended.
func (p *Pool) Get(target string) (cc *grpc.ClientConn, release func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, fmt.Errorf("connection pool is closed")
	}
	e := p.conns[target]
	if e == nil {
		cc, err := p.dial(target)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", target, err)
		}
		e = &entry{cc: cc}
		p.conns[target] = e
	}
	e.active++
	e.lastUsed = p.now()
	var once sync.Once
	return e.cc, func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			e.active--
			e.lastUsed = p.now()
		})
	}, nil
}

// Sweep closes the connections that carry no call, whose target no route
// needs any more (needed reports false), and that have been idle for at
// least idle. It returns the targets it closed.
func (p *Pool) Sweep(needed func(target string) bool, idle time.Duration) []string {
	p.mu.Lock()
	var closing []*grpc.ClientConn
	var targets []string
	now := p.now()
	for target, e := range p.conns {
		if e.active > 0 || needed(target) || now.Sub(e.lastUsed) < idle {
			continue
		}
		delete(p.conns, target)
		closing = append(closing, e.cc)
		targets = append(targets, target)
	}
	p.mu.Unlock()
	for _, cc := range closing {
		cc.Close()
	}
	return targets
}

// Len returns the number of open connections.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close closes every connection; Get fails afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*entry{}
	p.mu.Unlock()
	for _, e := range conns {
		e.cc.Close()
	}
}
