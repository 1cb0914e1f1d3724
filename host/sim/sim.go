// Package sim runs many network nodes of the real protocol code in one
// process: the network package over an in-memory tunnel, with the real
// router-memory router on every node. It builds a random topology from a
// seed (so every run has the same graph), registers a service on one node
// and measures how long it takes to reach every node's table and how many
// control messages that costs per link. Timing is real: the routers run on
// their own timers, as they do in production.
package sim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microhost/microhost/host/network"
	routermemory "github.com/microhost/microhost/plugins/router-memory"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
)

// NetworkName is the network every simulated node joins.
const NetworkName = "sim"

// Config shapes a simulation. Zero values take the defaults.
type Config struct {
	Nodes  int           // default 50
	Degree int           // links per node, default 4
	Seed   uint64        // topology seed
	RTT    time.Duration // of every link, default 1ms (link cost 10)
	// RTTSpread gives links different RTTs: each link's is drawn, from the
	// seed, between RTT and RTT+RTTSpread.
	RTTSpread time.Duration
	// Jitter, if set, makes every link report its RTT plus a random delay
	// of up to Jitter, drawn afresh twice per LinkPollInterval, as queueing
	// and CPU stalls do to the RTTs measured on a loaded machine.
	Jitter time.Duration

	PeerInterval     time.Duration // default 1s
	LinkPollInterval time.Duration // default 500ms
	KeepaliveTimeout time.Duration // default 3 × PeerInterval
	CostWindow       time.Duration // default the network's (30s)
	FlushInterval    time.Duration // router batching, default the router's (200ms)
	SyncInterval     time.Duration // router full sync, default 10 minutes: out of the way of measurements

	Log hclog.Logger
}

func (c *Config) defaults() error {
	if c.Nodes == 0 {
		c.Nodes = 50
	}
	if c.Degree == 0 {
		c.Degree = 4
	}
	if c.RTT == 0 {
		c.RTT = time.Millisecond
	}
	if c.PeerInterval == 0 {
		c.PeerInterval = time.Second
	}
	if c.LinkPollInterval == 0 {
		c.LinkPollInterval = 500 * time.Millisecond
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
	switch {
	case c.Nodes < 2:
		return fmt.Errorf("sim: need at least 2 nodes, got %d", c.Nodes)
	case c.Degree < 2 || c.Degree >= c.Nodes:
		return fmt.Errorf("sim: degree %d must be at least 2 and below the node count %d", c.Degree, c.Nodes)
	case c.RTTSpread < 0 || c.Jitter < 0:
		return fmt.Errorf("sim: RTT spread %v and jitter %v must not be negative", c.RTTSpread, c.Jitter)
	}
	return nil
}

// Node is one simulated node.
type Node struct {
	ID      string
	Tunnel  *memtunnel.Node
	Router  *routermemory.Router
	Network *network.Node
}

// Sim is a running simulation.
type Sim struct {
	cfg    Config
	Fabric *memtunnel.Fabric
	Nodes  []*Node
	// Adjacency of the topology, by node index.
	Adjacent [][]int
	// RTT of each link without jitter, by node indexes, lower first.
	RTTs map[[2]int]time.Duration

	stopJitter chan struct{}
	jitterDone chan struct{}
}

// New builds the topology and the nodes; Start runs them.
func New(cfg Config) (*Sim, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	s := &Sim{cfg: cfg, Fabric: memtunnel.NewFabric(memtunnel.WithRTT(cfg.RTT), memtunnel.WithQueueSize(4096))}
	s.Adjacent = topology(cfg.Nodes, cfg.Degree, cfg.Seed)
	s.RTTs = linkRTTs(s.Adjacent, cfg.RTT, cfg.RTTSpread, cfg.Seed)
	for i := range cfg.Nodes {
		n, err := s.newNode(fmt.Sprintf("n%04d", i))
		if err != nil {
			s.close()
			return nil, err
		}
		s.Nodes = append(s.Nodes, n)
	}
	return s, nil
}

func (s *Sim) newNode(id string) (*Node, error) {
	tun, err := s.Fabric.NewNode(id)
	if err != nil {
		return nil, err
	}
	router := routermemory.New(s.cfg.Log.Named("router").With("node", id))
	conf := map[string]any{"sync_interval": s.cfg.SyncInterval.String(), "damping": false}
	if s.cfg.FlushInterval > 0 {
		conf["flush_interval"] = s.cfg.FlushInterval.String()
	}
	raw, _ := json.Marshal(conf)
	if d := router.Configure(context.Background(), sdk.ConfigureRequest{Config: raw, Node: sdk.NodeConfig{ID: id, Network: NetworkName}}); d.HasErrors() {
		tun.Close()
		return nil, fmt.Errorf("sim: configure router of %s: %w", id, d.Err())
	}
	net, err := network.New(network.Config{
		NodeID: id, Network: NetworkName, Address: id, Tunnel: tun, Router: router,
		Log:              s.cfg.Log,
		PeerInterval:     s.cfg.PeerInterval,
		LinkPollInterval: s.cfg.LinkPollInterval,
		KeepaliveTimeout: s.cfg.KeepaliveTimeout,
		CostWindow:       s.cfg.CostWindow,
	})
	if err != nil {
		router.Close()
		tun.Close()
		return nil, err
	}
	return &Node{ID: id, Tunnel: tun, Router: router, Network: net}, nil
}

// topology returns a connected random graph in which every node has about
// degree links: a ring through a random permutation, then random chords
// between nodes that still have room.
func topology(n, degree int, seed uint64) [][]int {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	adj := make([][]int, n)
	connect := func(a, b int) bool {
		if a == b || slices.Contains(adj[a], b) {
			return false
		}
		adj[a] = append(adj[a], b)
		adj[b] = append(adj[b], a)
		return true
	}
	perm := rng.Perm(n)
	for i := range n {
		connect(perm[i], perm[(i+1)%n])
	}
	for tries := 0; tries < 20*n*degree; tries++ {
		a, b := rng.IntN(n), rng.IntN(n)
		if len(adj[a]) < degree && len(adj[b]) < degree {
			connect(a, b)
		}
	}
	for i := range adj {
		slices.Sort(adj[i])
	}
	return adj
}

// linkRTTs draws the RTT of every link between rtt and rtt+spread.
func linkRTTs(adj [][]int, rtt, spread time.Duration, seed uint64) map[[2]int]time.Duration {
	rng := rand.New(rand.NewPCG(seed, seed^0xbb67ae8584caa73b))
	rtts := map[[2]int]time.Duration{}
	for a, peers := range adj {
		for _, b := range peers {
			if a < b {
				rtts[[2]int{a, b}] = rtt + time.Duration(rng.Int64N(int64(spread)+1))
			}
		}
	}
	return rtts
}

// Links is the number of links of the topology.
func (s *Sim) Links() int {
	total := 0
	for _, a := range s.Adjacent {
		total += len(a)
	}
	return total / 2
}

// Hops returns the hop distance from node from to every node.
func (s *Sim) Hops(from int) []int {
	dist := make([]int, len(s.Adjacent))
	for i := range dist {
		dist[i] = -1
	}
	dist[from] = 0
	queue := []int{from}
	for len(queue) > 0 {
		at := queue[0]
		queue = queue[1:]
		for _, next := range s.Adjacent[at] {
			if dist[next] < 0 {
				dist[next] = dist[at] + 1
				queue = append(queue, next)
			}
		}
	}
	return dist
}

// Start starts every node, then links the topology, as nodes that come up
// and find each other do.
func (s *Sim) Start(ctx context.Context) error {
	for _, n := range s.Nodes {
		if err := n.Network.Start(ctx); err != nil {
			return fmt.Errorf("sim: start %s: %w", n.ID, err)
		}
	}
	for a, peers := range s.Adjacent {
		for _, b := range peers {
			if a < b {
				if err := s.Fabric.Link(s.Nodes[a].ID, s.Nodes[b].ID); err != nil {
					return err
				}
				if err := s.Fabric.SetRTT(s.Nodes[a].ID, s.Nodes[b].ID, s.RTTs[[2]int{a, b}]); err != nil {
					return err
				}
			}
		}
	}
	if s.cfg.Jitter > 0 {
		s.stopJitter, s.jitterDone = make(chan struct{}), make(chan struct{})
		go s.jitter()
	}
	return nil
}

// jitter adds a fresh random delay to every link's RTT, twice per link
// poll, until Stop.
func (s *Sim) jitter() {
	defer close(s.jitterDone)
	rng := rand.New(rand.NewPCG(s.cfg.Seed, s.cfg.Seed^0x3c6ef372fe94f82b))
	links := slices.SortedFunc(maps.Keys(s.RTTs), func(x, y [2]int) int {
		return cmp.Or(cmp.Compare(x[0], y[0]), cmp.Compare(x[1], y[1]))
	})
	tick := time.NewTicker(s.cfg.LinkPollInterval / 2)
	defer tick.Stop()
	for {
		select {
		case <-s.stopJitter:
			return
		case <-tick.C:
		}
		for _, l := range links {
			rtt := s.RTTs[l] + time.Duration(rng.Int64N(int64(s.cfg.Jitter)))
			// A link cut by a test reports nothing; that is not an error here.
			_ = s.Fabric.SetRTT(s.Nodes[l[0]].ID, s.Nodes[l[1]].ID, rtt)
		}
	}
}

// WaitGraph waits until every node's graph holds exactly the nodes within
// network.MaxDepth hops of it, and then until every node has heard a peer
// message from each neighbour since: each node then holds its neighbours'
// complete graphs, against which it checks their adverts.
func (s *Sim) WaitGraph(ctx context.Context) error {
	want := make([][]string, len(s.Nodes))
	for i := range s.Nodes {
		for j, d := range s.Hops(i) {
			if d >= 0 && d <= network.MaxDepth {
				want[i] = append(want[i], s.Nodes[j].ID)
			}
		}
		slices.Sort(want[i])
	}
	err := poll(ctx, "every node's graph to cover 3 hops", func() bool {
		for i, n := range s.Nodes {
			var got []string
			for _, info := range n.Network.Nodes() {
				got = append(got, info.ID)
			}
			if !slices.Equal(got, want[i]) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	heard := make([]uint64, len(s.Nodes))
	for i, n := range s.Nodes {
		heard[i] = n.Network.Stats().Received["peer"]
	}
	return poll(ctx, "a round of peer messages", func() bool {
		for i, n := range s.Nodes {
			if n.Network.Stats().Received["peer"] < heard[i]+uint64(2*len(s.Adjacent[i])) {
				return false
			}
		}
		return true
	})
}

// Result is what one route change cost.
type Result struct {
	Nodes    int           `json:"nodes"`
	Links    int           `json:"links"`
	Diameter int           `json:"diameter"` // largest hop count from the origin
	Converge time.Duration `json:"converge"` // until every node had (or lost) the route
	Settle   time.Duration `json:"settle"`   // until control traffic stopped
	Messages uint64        `json:"messages"` // adverts, syncs and closes received, all links both ways
	PerLink  float64       `json:"per_link"` // Messages / Links
	Refused  uint64        `json:"refused"`  // routes refused by validation, all nodes
	Dropped  uint64        `json:"dropped"`  // messages the tunnel dropped since the start (full queues)
}

// Announce registers service on node origin and measures until every node
// has a route to it and control traffic has stopped.
func (s *Sim) Announce(ctx context.Context, origin int, service string) (Result, error) {
	o := s.Nodes[origin]
	route := sdk.Route{Service: service, Address: "10.0.0.1:8080", Router: o.ID, Network: NetworkName,
		Link: sdk.LinkLocal, Metric: 1, Path: []string{o.ID}}
	return s.measure(ctx, origin, "route to "+service+" everywhere", func() error {
		return o.Router.Create(ctx, route)
	}, func(n *Node) bool { return s.hasRoute(n, service) })
}

// Withdraw deletes the service Announce registered and measures until it is
// gone from every table and control traffic has stopped.
func (s *Sim) Withdraw(ctx context.Context, origin int, service string) (Result, error) {
	o := s.Nodes[origin]
	route := sdk.Route{Service: service, Address: "10.0.0.1:8080", Router: o.ID, Network: NetworkName, Link: sdk.LinkLocal}
	return s.measure(ctx, origin, service+" gone everywhere", func() error {
		return o.Router.Delete(ctx, route)
	}, func(n *Node) bool { return !s.hasRoute(n, service) })
}

// Leave stops node origin gracefully and measures until service, which it
// had announced, is gone from every other node.
func (s *Sim) Leave(ctx context.Context, origin int, service string) (Result, error) {
	o := s.Nodes[origin]
	r, err := s.measure(ctx, origin, service+" gone after its node left", func() error {
		return o.Network.Stop(ctx)
	}, func(n *Node) bool { return n == o || !s.hasRoute(n, service) })
	r.Nodes--
	r.Links -= len(s.Adjacent[origin])
	r.PerLink = float64(r.Messages) / float64(r.Links)
	return r, err
}

func (s *Sim) hasRoute(n *Node, service string) bool {
	rs, err := n.Router.Lookup(context.Background(), sdk.Query{Service: service})
	return err == nil && len(rs) > 0
}

func (s *Sim) measure(ctx context.Context, origin int, what string, change func() error, done func(*Node) bool) (Result, error) {
	r := Result{Nodes: len(s.Nodes), Links: s.Links(), Diameter: slices.Max(s.Hops(origin))}
	before, refusedBefore := s.controlMessages(), s.refused()
	start := time.Now()
	if err := change(); err != nil {
		return r, err
	}
	if err := poll(ctx, what, func() bool {
		for _, n := range s.Nodes {
			if !done(n) {
				return false
			}
		}
		return true
	}); err != nil {
		return r, err
	}
	r.Converge = time.Since(start)
	// Control traffic has settled once it has not moved for longer than
	// the routers take to flush.
	quiet := max(4*s.flushInterval(), 500*time.Millisecond)
	last, lastChange := s.controlMessages(), time.Now()
	for time.Since(lastChange) < quiet {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if now := s.controlMessages(); now != last {
			last, lastChange = now, time.Now()
		}
	}
	r.Settle = lastChange.Sub(start)
	r.Messages = last - before
	r.PerLink = float64(r.Messages) / float64(r.Links)
	r.Refused = s.refused() - refusedBefore
	r.Dropped = s.Fabric.Stats().Dropped
	return r, nil
}

func (s *Sim) flushInterval() time.Duration {
	if s.cfg.FlushInterval > 0 {
		return s.cfg.FlushInterval
	}
	return 200 * time.Millisecond
}

// controlMessages counts the adverts, syncs and closes received by all
// nodes: one per message per link direction.
func (s *Sim) controlMessages() uint64 {
	var total uint64
	for _, n := range s.Nodes {
		st := n.Network.Stats()
		total += st.Received["advert"] + st.Received["sync"] + st.Received["close"]
	}
	return total
}

func (s *Sim) refused() uint64 {
	var total uint64
	for _, n := range s.Nodes {
		total += n.Network.Stats().RefusedRoutes
	}
	return total
}

// Stop stops every node.
func (s *Sim) Stop(ctx context.Context) error {
	if s.stopJitter != nil {
		close(s.stopJitter)
		<-s.jitterDone
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		wg.Go(func() {
			if err := n.Network.Stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.close()
	return errors.Join(errs...)
}

func (s *Sim) close() {
	for _, n := range s.Nodes {
		n.Router.Close()
		n.Tunnel.Close()
	}
}

func poll(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sim: waiting for %s: %w", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
