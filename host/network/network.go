// Package network is the network protocol of a microhost node: it finds and
// links peers, keeps a graph of the nodes up to MaxDepth hops away, and
// carries route adverts between the local router and the routers of its
// peers, so that every node learns a loop-free, lowest-metric route to every
// service. It drives an sdk.Tunnel and an sdk.Router through their Go
// interfaces only, and takes its time from an injected clock, so tests and
// the simulator run it over an in-memory tunnel.
//
// Two multicast channels carry the protocol: ChannelNetwork (connect, peer,
// close) and ChannelControl (advert, solicit, sync), with the protobuf
// messages of package networkpb.
package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/microhost/microhost/host/network/clock"
	"github.com/microhost/microhost/host/network/networkpb"
	"github.com/microhost/microhost/sdk"
)

// Channel names.
const (
	ChannelNetwork = "network"
	ChannelControl = "control"
)

// Defaults of the Config intervals.
const (
	DefaultPeerInterval     = 10 * time.Second
	DefaultLinkPollInterval = time.Second
	DefaultResolveInterval  = time.Minute
	DefaultCostWindow       = 30 * time.Second
	// DefaultKeepaliveMisses is how many peer intervals a neighbour may stay
	// silent before it is pruned, when KeepaliveTimeout is not set.
	DefaultKeepaliveMisses = 3
)

// withdrawnMemory, in keepalive timeouts, is how long a withdrawal is
// remembered: far longer than a withdrawal takes to cross the network.
const withdrawnMemory = 10

// callTimeout bounds one call to the tunnel, router or resolver made in the
// background, so that one dead peer or slow plugin cannot stall the node.
const callTimeout = 10 * time.Second

// Config configures a network node.
type Config struct {
	NodeID  string // required; the id the tunnel authenticates this node as
	Network string // required; nodes of other networks are ignored
	Address string // where this node accepts links; told to peers, optional
	Tunnel  sdk.Tunnel
	Router  sdk.Router
	// Peers are addresses to link to at start, in order.
	Peers []string
	// Resolve, if set, returns more peer addresses; it is called at start
	// and every ResolveInterval, and lower Priority is linked first.
	Resolve func(ctx context.Context) ([]sdk.Node, error)
	// MinPeers, if set, is how many neighbours the node keeps: with fewer,
	// it links to nodes of its network it has seen in its graph, nearest
	// first, so that losing a peer does not cut it off.
	MinPeers int
	Clock    clock.Clock  // default: the system clock
	Log      hclog.Logger // default: discard

	// PeerInterval is how often a peer message is sent when nothing
	// changes; a change of the node's graph is sent at once, at most ten
	// times per interval.
	PeerInterval     time.Duration
	KeepaliveTimeout time.Duration // silence after which a neighbour is pruned
	LinkPollInterval time.Duration // how often the tunnel's links are checked
	ResolveInterval  time.Duration
	// CostWindow is how long a link's lowest RTT counts for its cost, which
	// changes at most once per half window (see linkCost): slowdowns shorter
	// than half of it never re-cost routes.
	CostWindow time.Duration
}

func (c *Config) check() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("network: NodeID is empty"))
	}
	if c.Network == "" {
		errs = append(errs, errors.New("network: Network is empty"))
	}
	if c.Tunnel == nil {
		errs = append(errs, errors.New("network: Tunnel is nil"))
	}
	if c.Router == nil {
		errs = append(errs, errors.New("network: Router is nil"))
	}
	if c.Clock == nil {
		c.Clock = clock.System()
	}
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"PeerInterval", &c.PeerInterval, DefaultPeerInterval},
		{"LinkPollInterval", &c.LinkPollInterval, DefaultLinkPollInterval},
		{"ResolveInterval", &c.ResolveInterval, DefaultResolveInterval},
		{"CostWindow", &c.CostWindow, DefaultCostWindow},
		{"KeepaliveTimeout", &c.KeepaliveTimeout, 0},
	} {
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("network: %s is negative (%v)", d.name, *d.v))
		} else if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MinPeers < 0 {
		errs = append(errs, fmt.Errorf("network: MinPeers is negative (%d)", c.MinPeers))
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = DefaultKeepaliveMisses * c.PeerInterval
	}
	if c.KeepaliveTimeout > 0 && c.KeepaliveTimeout <= c.PeerInterval {
		errs = append(errs, fmt.Errorf("network: KeepaliveTimeout (%v) must be longer than PeerInterval (%v)", c.KeepaliveTimeout, c.PeerInterval))
	}
	return errors.Join(errs...)
}

// Stats counts the protocol's messages, for benchmarks and the CLI.
type Stats struct {
	Sent          map[string]uint64 `json:"sent"`     // by message type
	Received      map[string]uint64 `json:"received"` // by message type
	RefusedRoutes uint64            `json:"refused_routes"`
	Invalid       uint64            `json:"invalid"` // undecodable or malformed messages
	Ignored       uint64            `json:"ignored"` // other networks, impostors, unknown types
}

// Peer is a neighbour: a node this one has a link with and hears from.
type Peer struct {
	ID       string    `json:"id"`
	Instance string    `json:"instance,omitempty"`
	Address  string    `json:"address,omitempty"`
	Cost     int64     `json:"cost"` // link cost added to routes learned from it
	LastSeen time.Time `json:"last_seen"`
}

type neighbour struct {
	id         string
	instance   string
	address    string
	tree       *tree
	reach      map[string]reach // the neighbour's graph: node -> hops from it
	lastSeen   time.Time
	solicited  bool
	soliciting bool
	// refused is set when a route from the neighbour was refused because
	// its graph did not vouch for it: the graph may only have lagged, so
	// the table is asked for again once the next peer message arrives.
	refused bool
	// lastPeer is the neighbour's last peer message as it arrived; most
	// repeat it byte for byte.
	lastPeer []byte
}

type reach struct {
	depth    int
	instance string
}

type tombstone struct {
	instance string
	until    time.Time
}

// leaving is a node whose close neighbours passed on to us.
type leaving struct {
	instance string
	until    time.Time
	via      map[string]bool // the neighbours that passed it on
}

type runState int

const (
	stateNew runState = iota
	stateRunning
	stateStopped
)

// Node is a running network node.
type Node struct {
	cfg      Config
	log      hclog.Logger
	clock    clock.Clock
	instance string
	trigger  chan struct{} // a peer message is due now
	changed  chan struct{} // a neighbour's graph changed: ours may have too

	pollMu sync.Mutex   // one link poll at a time
	costMu sync.RWMutex // held for writing while link costs change

	mu         sync.Mutex
	state      runState
	neighbours map[string]*neighbour
	links      map[string]bool // peers with an up link at the last poll
	costs      map[string]*peerCost
	tombstones map[string]tombstone
	leaving    map[string]*leaving    // nodes whose close neighbours passed on, by id
	closesSeen map[string]time.Time   // close floods already relayed, until when remembered
	foreign    map[string]string      // linked peers of another network, by id: warned once
	withdrawn  map[routeKey]withdrawn // newest withdrawal heard per instance
	resolved   map[string]bool        // addresses linked because a resolver named them
	seen       map[string]seenNode    // nodes of our network seen in graphs, by id
	sessions   map[sdk.Session]struct{}
	stats      Stats

	runCtx         context.Context
	cancel         context.CancelFunc
	listeners      []sdk.Listener
	netOut, ctlOut sdk.Session
	stream         sdk.AdvertStream // the first one; advertiseLoop owns it
	wg             sync.WaitGroup
}

// New checks cfg and returns a node that is not started yet.
func New(cfg Config) (*Node, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("network: instance id: %w", err)
	}
	return &Node{
		cfg:        cfg,
		log:        cfg.Log.Named("network").With("node", cfg.NodeID),
		clock:      cfg.Clock,
		instance:   hex.EncodeToString(b[:]),
		trigger:    make(chan struct{}, 1),
		changed:    make(chan struct{}, 1),
		neighbours: map[string]*neighbour{},
		links:      map[string]bool{},
		costs:      map[string]*peerCost{},
		tombstones: map[string]tombstone{},
		leaving:    map[string]*leaving{},
		closesSeen: map[string]time.Time{},
		foreign:    map[string]string{},
		withdrawn:  map[routeKey]withdrawn{},
		resolved:   map[string]bool{},
		seen:       map[string]seenNode{},
		sessions:   map[sdk.Session]struct{}{},
		stats:      Stats{Sent: map[string]uint64{}, Received: map[string]uint64{}},
	}, nil
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Start listens on both channels, starts the background loops and announces
// the node. It never waits for a peer: links are made in the background.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.state != stateNew {
		n.mu.Unlock()
		return errors.New("network: Start called twice")
	}
	n.state = stateRunning
	n.runCtx, n.cancel = context.WithCancel(context.Background())
	n.mu.Unlock()
	defer func() {
		if err != nil {
			n.shutdown()
		}
	}()
	for _, ch := range []string{ChannelNetwork, ChannelControl} {
		l, err := n.cfg.Tunnel.Listen(ctx, ch)
		if err != nil {
			return fmt.Errorf("network: listen on channel %q: %w", ch, err)
		}
		n.listeners = append(n.listeners, l)
	}
	if n.netOut, err = n.cfg.Tunnel.Dial(ctx, ChannelNetwork, sdk.DialOptions{Mode: sdk.Multicast}); err != nil {
		return fmt.Errorf("network: dial channel %q: %w", ChannelNetwork, err)
	}
	if n.ctlOut, err = n.cfg.Tunnel.Dial(ctx, ChannelControl, sdk.DialOptions{Mode: sdk.Multicast}); err != nil {
		return fmt.Errorf("network: dial channel %q: %w", ChannelControl, err)
	}
	if n.stream, err = n.cfg.Router.Advertise(n.runCtx); err != nil {
		return fmt.Errorf("network: router advertise stream: %w", err)
	}
	n.goRun(func() { n.acceptLoop(n.listeners[0], n.handleNetwork) })
	n.goRun(func() { n.acceptLoop(n.listeners[1], n.handleControl) })
	n.goRun(n.advertiseLoop)
	n.goRun(n.tickLoop)
	n.goRun(n.connectLoop)
	n.sendNetwork(n.runCtx, "connect", &networkpb.NetworkMessage{
		Body: &networkpb.NetworkMessage_Connect{Connect: &networkpb.Connect{Node: n.treePB()}},
	})
	n.log.Info("network node started", "network", n.cfg.Network, "instance", n.instance)
	return nil
}

// Stop announces that the node leaves, so that its peers drop it and its
// routes at once, and stops everything Start started.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	running := n.state == stateRunning
	n.state = stateStopped
	n.mu.Unlock()
	if !running {
		return nil
	}
	n.sendNetwork(ctx, "close", &networkpb.NetworkMessage{
		Body: &networkpb.NetworkMessage_Close{Close: &networkpb.Close{Id: n.cfg.NodeID, Instance: n.instance}},
	})
	done := make(chan struct{})
	go func() {
		n.shutdown()
		close(done)
	}()
	select {
	case <-done:
		n.log.Info("network node stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("network: stop: %w", ctx.Err())
	}
}

// shutdown cancels the loops, closes every session and waits for the loops.
func (n *Node) shutdown() {
	n.mu.Lock()
	n.state = stateStopped
	n.cancel()
	sessions := slices.Collect(maps.Keys(n.sessions))
	n.mu.Unlock()
	for _, l := range n.listeners {
		l.Close()
	}
	for _, s := range append(sessions, n.netOut, n.ctlOut) {
		if s != nil {
			s.Close()
		}
	}
	n.wg.Wait()
}

// goRun runs f in a goroutine that shutdown waits for, unless stopping.
func (n *Node) goRun(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stateRunning {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Stats returns a copy of the message counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	s.Sent, s.Received = maps.Clone(s.Sent), maps.Clone(s.Received)
	return s
}

// Peers lists the neighbours, sorted by id.
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Peer
	for _, id := range slices.Sorted(maps.Keys(n.neighbours)) {
		nb := n.neighbours[id]
		out = append(out, Peer{ID: id, Instance: nb.instance, Address: nb.address, Cost: n.costLocked(id), LastSeen: nb.lastSeen})
	}
	return out
}

// Graph returns this node's view of the network, up to MaxDepth hops.
func (n *Node) Graph() Graph {
	n.mu.Lock()
	defer n.mu.Unlock()
	return buildGraph(n.treeLocked())
}

// Nodes lists the nodes of the graph, this node included.
func (n *Node) Nodes() []NodeInfo { return n.Graph().Nodes }

// treeLocked is this node with its neighbours' trees below it.
func (n *Node) treeLocked() *tree {
	root := &tree{ID: n.cfg.NodeID, Instance: n.instance, Address: n.cfg.Address}
	for _, id := range slices.Sorted(maps.Keys(n.neighbours)) {
		nb := n.neighbours[id]
		t := nb.tree
		if t == nil {
			t = &tree{ID: id, Instance: nb.instance, Address: nb.address}
		}
		root.Peers = append(root.Peers, t)
	}
	return root
}

func (n *Node) treePB() *networkpb.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.treeLocked().toPB(MaxDepth)
}

// costLocked is the settled cost of the link to peer.
func (n *Node) costLocked(peer string) int64 {
	if c, ok := n.costs[peer]; ok {
		return c.cost
	}
	return unmeasuredCost
}

// senderGraph is what sender last told us of its graph, or nil.
func (n *Node) senderGraph(sender string) map[string]reach {
	if nb := n.neighbours[sender]; nb != nil {
		return nb.reach
	}
	return nil
}

// tombstonedLocked reports whether origin announced its close recently, or
// sender passed its close on to us, and origin has not come back since. A
// graph that shows origin with another instance is news that it came back.
func (n *Node) tombstonedLocked(origin, sender string, graph map[string]reach) bool {
	back := func(instance string) bool {
		r, ok := graph[origin]
		return ok && r.instance != "" && r.instance != instance
	}
	if t, ok := n.tombstones[origin]; ok {
		if !back(t.instance) {
			return true
		}
		delete(n.tombstones, origin)
	}
	if l := n.leaving[origin]; l != nil && l.via[sender] {
		if !back(l.instance) {
			return true
		}
		delete(n.leaving, origin)
	}
	return false
}

func (n *Node) countSent(kind string) {
	n.mu.Lock()
	n.stats.Sent[kind]++
	n.mu.Unlock()
}

func (n *Node) countReceived(kind string) {
	n.mu.Lock()
	n.stats.Received[kind]++
	n.mu.Unlock()
}

func (n *Node) countInvalid(from string, err error) {
	n.mu.Lock()
	n.stats.Invalid++
	n.mu.Unlock()
	n.log.Warn("invalid message from peer", "peer", from, "error", err)
}

// foreignPeer warns, once per peer and network name, that a linked node
// belongs to another network: a typo in a network name otherwise leaves two
// nodes linked but deaf to each other without a word.
func (n *Node) foreignPeer(peer, network string) {
	n.mu.Lock()
	seen := n.foreign[peer] == network
	n.foreign[peer] = network
	n.mu.Unlock()
	if !seen {
		n.log.Warn("a linked node belongs to another network: its messages are ignored", "peer", peer, "its_network", network, "ours", n.cfg.Network)
	}
}

func (n *Node) countIgnored(from, why string) {
	n.mu.Lock()
	n.stats.Ignored++
	n.mu.Unlock()
	n.log.Debug("ignored message from peer", "peer", from, "reason", why)
}

func (n *Node) triggerPeer() { signal(n.trigger) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// acceptLoop serves every session peers open on a channel.
func (n *Node) acceptLoop(l sdk.Listener, handle func(sdk.Session, *sdk.Message)) {
	for {
		s, err := l.Accept(n.runCtx)
		if err != nil {
			if n.runCtx.Err() == nil {
				// The tunnel went away (a plugin restart); its owner starts
				// the protocol again with the new one.
				n.log.Warn("listener ended; the channel is deaf until the network protocol restarts", "channel", l.Channel(), "error", err)
			}
			return
		}
		n.serve(s, handle)
	}
}

// serve reads s until it ends, handing each message to handle.
func (n *Node) serve(s sdk.Session, handle func(sdk.Session, *sdk.Message)) {
	n.mu.Lock()
	n.sessions[s] = struct{}{}
	n.mu.Unlock()
	started := n.goRun(func() {
		defer n.forget(s)
		for {
			m, err := s.Recv(n.runCtx)
			if err != nil {
				return
			}
			handle(s, m)
		}
	})
	if !started {
		n.forget(s)
	}
}

func (n *Node) forget(s sdk.Session) {
	n.mu.Lock()
	delete(n.sessions, s)
	n.mu.Unlock()
	s.Close()
}

// sendNetwork multicasts a message on the network channel.
func (n *Node) sendNetwork(ctx context.Context, kind string, m *networkpb.NetworkMessage) {
	m.Network = n.cfg.Network
	n.send(ctx, n.netOut, kind, m)
}

func (n *Node) send(ctx context.Context, s sdk.Session, kind string, m proto.Message) bool {
	body, err := proto.Marshal(m)
	if err != nil {
		n.log.Error("cannot encode message", "type", kind, "error", err)
		return false
	}
	return n.sendBody(ctx, s, kind, body)
}

func (n *Node) sendBody(ctx context.Context, s sdk.Session, kind string, body []byte) bool {
	if s == nil {
		return false
	}
	if err := s.Send(ctx, &sdk.Message{Body: body}); err != nil {
		n.log.Warn("send failed", "type", kind, "channel", s.Channel(), "peer", s.Peer(), "error", err)
		return false
	}
	n.countSent(kind)
	return true
}
