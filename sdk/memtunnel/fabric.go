// Package memtunnel is an in-memory sdk.Tunnel for tests and the simulator.
//
// A Fabric is the medium: nodes are created on it by id, and Link/Unlink
// connect and cut pairs of them. Every node is a full sdk.Tunnel: unicast,
// multicast and broadcast sessions over named channels, authenticated peer
// ids, per-link RTT, bounded queues whose overflow is counted, and an
// optional filter to drop messages between two nodes. Addresses are node
// ids: Connect("b") links to node b now or as soon as it is created. Delivery happens
// synchronously in the sender's goroutine, so the fabric starts no
// goroutines of its own and behaves the same on every run.
package memtunnel

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Errors a session or dial can return.
var (
	// ErrLinkDown is returned by a session whose link was cut.
	ErrLinkDown = errors.New("memtunnel: link down")
	// ErrClosed is returned by a closed session, listener or node.
	ErrClosed = errors.New("memtunnel: closed")
)

// Filter decides whether a message from node from to node to on channel is
// delivered; returning false drops it (counted in Stats.Filtered). It runs
// with the fabric locked, so it must not call the fabric.
type Filter func(from, to, channel string) bool

// Option configures a Fabric.
type Option func(*Fabric)

// WithQueueSize bounds every session's inbound queue and every listener's
// backlog (default 256).
func WithQueueSize(n int) Option {
	return func(f *Fabric) {
		if n > 0 {
			f.queueSize = n
		}
	}
}

// WithRTT sets the RTT that new links report (default 1ms).
func WithRTT(rtt time.Duration) Option {
	return func(f *Fabric) { f.defaultRTT = rtt }
}

// Stats counts what the fabric carried.
type Stats struct {
	Delivered uint64 // messages put in a receiver's queue
	Dropped   uint64 // messages dropped because a bounded queue was full
	Filtered  uint64 // messages dropped by the Filter
}

// Fabric connects in-memory tunnel nodes.
type Fabric struct {
	mu         sync.Mutex
	nodes      map[string]*Node // by id
	links      map[pair]*link
	filter     Filter
	queueSize  int
	defaultRTT time.Duration
	nextID     uint64
	stats      Stats
}

// pair is an unordered pair of node ids, smaller first.
type pair struct{ a, b string }

func pairOf(a, b string) pair {
	if b < a {
		a, b = b, a
	}
	return pair{a, b}
}

// link is a connection between two nodes; from dialled it.
type link struct {
	id       string
	from, to string
	rtt      time.Duration
	bytes    map[string]uint64 // bytes sent, by sending node
	drops    map[string]uint64 // drops, by receiving node
}

// NewFabric returns an empty fabric.
func NewFabric(opts ...Option) *Fabric {
	f := &Fabric{
		nodes:      map[string]*Node{},
		links:      map[pair]*link{},
		queueSize:  256,
		defaultRTT: time.Millisecond,
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// NewNode creates a node whose id and address are id. Nodes that asked to
// Connect to that address are linked to it at once.
func (f *Fabric) NewNode(id string) (*Node, error) {
	if id == "" {
		return nil, errors.New("memtunnel: node id is empty")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nodes[id]; ok {
		return nil, fmt.Errorf("memtunnel: node %q already exists", id)
	}
	n := &Node{
		f:         f,
		id:        id,
		listeners: map[string]*listener{},
		sessions:  map[*session]struct{}{},
		wants:     map[string]bool{},
		queueSize: f.queueSize,
	}
	f.nodes[id] = n
	for _, other := range f.sortedNodes() {
		if other != n && other.wants[id] {
			f.linkLocked(other.id, id)
		}
	}
	return n, nil
}

// Node returns the node with id, or nil.
func (f *Fabric) Node(id string) *Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[id]
}

// Link connects a and b (a dials). Linking a linked pair is a no-op.
func (f *Fabric) Link(a, b string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkPair(a, b); err != nil {
		return err
	}
	f.linkLocked(a, b)
	return nil
}

// Unlink cuts the link between a and b: sessions across it fail with
// ErrLinkDown. The cut lasts until Link is called again.
func (f *Fabric) Unlink(a, b string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkPair(a, b); err != nil {
		return err
	}
	f.unlinkLocked(a, b)
	return nil
}

// Isolate cuts every link of id, as if the node had vanished.
func (f *Fabric) Isolate(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nodes[id] == nil {
		return fmt.Errorf("memtunnel: no node %q", id)
	}
	for _, p := range f.peersLocked(id) {
		f.unlinkLocked(id, p)
	}
	return nil
}

// SetRTT sets the RTT the link between a and b reports.
func (f *Fabric) SetRTT(a, b string, rtt time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.links[pairOf(a, b)]
	if l == nil {
		return fmt.Errorf("memtunnel: no link between %q and %q", a, b)
	}
	l.rtt = rtt
	return nil
}

// Linked reports whether a and b are linked.
func (f *Fabric) Linked(a, b string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.links[pairOf(a, b)] != nil
}

// SetFilter installs (or, with nil, removes) the message filter.
func (f *Fabric) SetFilter(filter Filter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filter = filter
}

// Stats returns the fabric's counters.
func (f *Fabric) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *Fabric) checkPair(a, b string) error {
	if a == b {
		return fmt.Errorf("memtunnel: cannot link node %q to itself", a)
	}
	for _, id := range []string{a, b} {
		if f.nodes[id] == nil {
			return fmt.Errorf("memtunnel: no node %q", id)
		}
	}
	return nil
}

func (f *Fabric) linkLocked(a, b string) {
	p := pairOf(a, b)
	if f.links[p] != nil {
		return
	}
	f.nextID++
	f.links[p] = &link{
		id:    fmt.Sprintf("link-%d", f.nextID),
		from:  a,
		to:    b,
		rtt:   f.defaultRTT,
		bytes: map[string]uint64{},
		drops: map[string]uint64{},
	}
}

// unlinkLocked removes the link and breaks every session that crossed it.
func (f *Fabric) unlinkLocked(a, b string) {
	p := pairOf(a, b)
	if f.links[p] == nil {
		return
	}
	delete(f.links, p)
	for _, n := range []*Node{f.nodes[a], f.nodes[b]} {
		if n == nil {
			continue
		}
		for s := range n.sessions {
			if s.crosses(a, b) {
				s.breakLocked(ErrLinkDown)
			}
		}
	}
}

// peersLocked lists the nodes linked to id, sorted.
func (f *Fabric) peersLocked(id string) []string {
	var peers []string
	for p := range f.links {
		switch id {
		case p.a:
			peers = append(peers, p.b)
		case p.b:
			peers = append(peers, p.a)
		}
	}
	slices.Sort(peers)
	return peers
}

func (f *Fabric) sortedNodes() []*Node {
	ids := make([]string, 0, len(f.nodes))
	for id := range f.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	nodes := make([]*Node, len(ids))
	for i, id := range ids {
		nodes[i] = f.nodes[id]
	}
	return nodes
}

// pass applies the filter; f.mu must be held.
func (f *Fabric) pass(from, to, channel string) bool {
	if f.filter != nil && !f.filter(from, to, channel) {
		f.stats.Filtered++
		return false
	}
	return true
}
