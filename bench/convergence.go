package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/microhost/microhost/host/sim"
	"github.com/microhost/microhost/sdk"
)

// simChanges is the 50-node simulation (host/sim: the real protocol and
// router code over an in-memory tunnel, with production defaults) and the
// cost of the route changes made in it, by pair: G9 and G11 read the same
// changes.
type simChanges struct {
	s  *sim.Sim
	mu sync.Mutex
	by map[int][2]sim.Result // announce, withdraw
}

var simFixture = newShared(func(ctx context.Context) (*simChanges, func(), error) {
	s, err := sim.New(sim.Config{Nodes: 50, Seed: 1})
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Stop(ctx)
	}
	fmt.Printf("  starting 50 simulated nodes (%d links)\n", s.Links())
	if err := s.Start(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	if err := s.WaitGraph(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	return &simChanges{s: s, by: map[int][2]sim.Result{}}, stop, nil
})

// change returns pair i's announce and withdrawal, making them the first
// time pair i asks.
func (c *simChanges) change(ctx context.Context, i int) ([2]sim.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.by[i]; ok {
		return r, nil
	}
	service := fmt.Sprintf("svc-%d", i)
	a, err := c.s.Announce(ctx, 0, service)
	if err != nil {
		return [2]sim.Result{}, err
	}
	w, err := c.s.Withdraw(ctx, 0, service)
	if err != nil {
		return [2]sim.Result{}, err
	}
	if w.Dropped > 0 { // counted since the start
		fmt.Printf("    warning: the in-memory tunnel has dropped %d messages: the machine is too loaded for the simulation\n", w.Dropped)
	}
	fmt.Printf("    announce: %v to every node, %.2f msgs/link; withdraw: %v, %.2f msgs/link (diameter %d)\n",
		a.Converge.Round(time.Millisecond), a.PerLink, w.Converge.Round(time.Millisecond), w.PerLink, a.Diameter)
	r := [2]sim.Result{a, w}
	c.by[i] = r
	return r, nil
}

func simMeasurement(id, name, unit, target string, pass func(float64) bool, read func(announce, withdraw sim.Result) float64) *measurement {
	return &measurement{
		ID: id, Name: name, Baseline: "—", Unit: unit, Target: target, Pass: pass,
		Uses: []fixture{simFixture},
		Pair: func(ctx context.Context, i int) (float64, error) {
			c, err := simFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			r, err := c.change(ctx, i)
			return read(r[0], r[1]), err
		},
	}
}

func simConvergence() *measurement {
	return simMeasurement("G9", "route convergence, 50 simulated nodes (slower of announce and withdraw)",
		"s", "<= 2 s", atMost(2), func(a, w sim.Result) float64 { return max(a.Converge, w.Converge).Seconds() })
}

func messagesPerLink() *measurement {
	return simMeasurement("G11", "control messages per route change, per link, 50 simulated nodes (larger of announce and withdraw)",
		"msgs", "<= 2", atMost(2), func(a, w sim.Result) float64 { return max(a.PerLink, w.PerLink) })
}

// procRing is 10 `microhost run` nodes as a Möbius ladder: a ring with a
// chord from every node to the one opposite, so degree 3 and diameter 3.
// G9-proc and G11-proc read the same route changes, by pair.
type procRing struct {
	nodes []*procNode
	http  []string // /metrics address of each node
	links int

	mu sync.Mutex
	by map[int]ringChange
}

// ringChange is what one register and one deregister cost.
type ringChange struct {
	announce, withdraw         time.Duration
	announceMsgs, withdrawMsgs float64 // adverts received per link
}

const ringSize = 10

var ringFixture = newShared(func(ctx context.Context) (*procRing, func(), error) {
	nw, err := newNetwork()
	if err != nil {
		return nil, nil, err
	}
	addrs := make([]string, ringSize)
	r := &procRing{http: make([]string, ringSize), by: map[int]ringChange{}}
	for i := range addrs {
		if addrs[i], err = freeUDP(); err == nil {
			r.http[i], err = freeTCP()
		}
		if err != nil {
			nw.close()
			return nil, nil, err
		}
	}
	var specs []nodeSpec
	for i := range ringSize {
		peers := []string{addrs[(i+1)%ringSize]}
		if i < ringSize/2 {
			peers = append(peers, addrs[i+ringSize/2])
		}
		r.links += len(peers)
		specs = append(specs, nodeSpec{ID: fmt.Sprintf("r%d", i), Listen: addrs[i], Peers: peers, HTTP: r.http[i]})
	}
	fmt.Printf("  starting %d node processes (%d links)\n", ringSize, r.links)
	if r.nodes, err = nw.startAll(ctx, specs); err != nil {
		nw.close()
		return nil, nil, err
	}
	// Every node knows every other (all are within the 3 hops a node's
	// graph holds) before any route is measured.
	if err := pollAll(ctx, r.nodes, 60*time.Second, roundGap, "every node to know all 10", func(ctx context.Context, n *procNode) bool {
		known, err := n.admin.Nodes(ctx)
		return err == nil && len(known) >= ringSize
	}); err != nil {
		nw.close()
		return nil, nil, err
	}
	if err := r.settleCosts(ctx); err != nil {
		nw.close()
		return nil, nil, err
	}
	return r, nw.close, nil
})

// A link's first cost comes from the round trips measured while some 40
// processes start, and may come down only 15 s later (docs/network.md).
// Until then a shorter path can cost more than a longer one whose advert
// arrives later, and each such improvement re-advertises the route, which
// a settled network does not do; so the changes are measured once no link
// cost has moved for costsStable.
const (
	costsStable     = 20 * time.Second
	costsSettleWait = 2 * time.Minute
)

// settleCosts waits until the link costs every node reports have not
// changed for costsStable; past costsSettleWait it says so and goes on.
func (r *procRing) settleCosts(ctx context.Context) error {
	start := time.Now()
	var last string
	stableSince := start
	for time.Since(stableSince) < costsStable {
		if time.Since(start) > costsSettleWait {
			fmt.Printf("  link costs still moving after %v; measuring anyway\n", costsSettleWait)
			return nil
		}
		var costs strings.Builder
		for _, n := range r.nodes {
			nodes, err := n.admin.Nodes(ctx)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.spec.ID, err)
			}
			for _, k := range nodes {
				if k.Hops == 1 {
					fmt.Fprintf(&costs, "%s-%s:%d ", n.spec.ID, k.ID, k.Metric)
				}
			}
		}
		if now := costs.String(); now != last {
			last, stableSince = now, time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	fmt.Printf("  link costs settled %v after every node knew all %d\n", time.Since(start).Round(time.Second), ringSize)
	return nil
}

// roundGap separates the rounds in which G9-proc polls every node: short,
// so that a convergence time is measured to a few milliseconds.
const roundGap = 5 * time.Millisecond

// pollAll polls cond on every node, in rounds every apart, until it holds
// for all of them.
func pollAll(ctx context.Context, nodes []*procNode, timeout, every time.Duration, what string, cond func(context.Context, *procNode) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := append([]*procNode(nil), nodes...)
	for len(pending) > 0 {
		var still []*procNode
		for _, n := range pending {
			if !cond(ctx, n) {
				still = append(still, n)
			}
		}
		if pending = still; len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %d nodes still not, first %s: %w", what, len(pending), pending[0].spec.ID, ctx.Err())
		case <-time.After(every):
		}
	}
	return nil
}

func (r *procRing) hasRoute(ctx context.Context, n *procNode, service string) (bool, error) {
	routes, err := n.admin.Routes(ctx, sdk.Query{Service: service})
	return len(routes) > 0, err
}

// adverts sums the adverts all nodes have received, from their /metrics.
// Only adverts: the periodic full syncs (every 30 s by default) would land
// in some measurements and not others.
func (r *procRing) adverts(ctx context.Context) (float64, error) {
	var total float64
	for _, addr := range r.http {
		v, err := scrapeCounter(ctx, "http://"+addr+"/metrics", `microhost_network_messages_received_total{type="advert"}`)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// settledAdverts waits until no advert has arrived anywhere for a second
// (five router flush intervals) and returns the count.
func (r *procRing) settledAdverts(ctx context.Context) (float64, error) {
	last, err := r.adverts(ctx)
	if err != nil {
		return 0, err
	}
	for quiet := time.Now(); time.Since(quiet) < time.Second; {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		now, err := r.adverts(ctx)
		if err != nil {
			return 0, err
		}
		if now != last {
			last, quiet = now, time.Now()
		}
	}
	return last, nil
}

// change registers a service on node 0 through its admin API and times
// until every node's table has it, then deregisters it and times until it
// is gone everywhere; each is followed by counting the adverts it caused.
// Pair i's change is made once, the first time it is asked for.
func (r *procRing) change(ctx context.Context, i int) (ringChange, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.by[i]; ok {
		return c, nil
	}
	var c ringChange
	svc := sdk.Service{Name: fmt.Sprintf("conv-%d", i), Address: "127.0.0.1:9"}
	origin := r.nodes[0]
	before, err := r.settledAdverts(ctx)
	if err != nil {
		return c, err
	}
	start := time.Now()
	if err := origin.admin.Register(ctx, svc, 0); err != nil {
		return c, err
	}
	if err := pollAll(ctx, r.nodes, 30*time.Second, roundGap, svc.Name+" everywhere", func(ctx context.Context, n *procNode) bool {
		ok, _ := r.hasRoute(ctx, n, svc.Name)
		return ok
	}); err != nil {
		return c, err
	}
	c.announce = time.Since(start)
	mid, err := r.settledAdverts(ctx)
	if err != nil {
		return c, err
	}
	start = time.Now()
	if err := origin.admin.Deregister(ctx, svc.Name, svc.Address); err != nil {
		return c, err
	}
	if err := pollAll(ctx, r.nodes, 30*time.Second, roundGap, svc.Name+" gone everywhere", func(ctx context.Context, n *procNode) bool {
		ok, err := r.hasRoute(ctx, n, svc.Name)
		return err == nil && !ok
	}); err != nil {
		return c, err
	}
	c.withdraw = time.Since(start)
	after, err := r.settledAdverts(ctx)
	if err != nil {
		return c, err
	}
	c.announceMsgs = (mid - before) / float64(r.links)
	c.withdrawMsgs = (after - mid) / float64(r.links)
	fmt.Printf("    register: %v to every node, %.2f adverts/link; deregister: %v, %.2f adverts/link\n",
		c.announce.Round(time.Millisecond), c.announceMsgs, c.withdraw.Round(time.Millisecond), c.withdrawMsgs)
	r.by[i] = c
	return c, nil
}

func ringMeasurement(id, name, unit, target string, pass func(float64) bool, read func(ringChange) float64) *measurement {
	return &measurement{
		ID: id, Name: name, Baseline: "—", Unit: unit, Target: target, Pass: pass,
		Uses: []fixture{ringFixture},
		Pair: func(ctx context.Context, i int) (float64, error) {
			r, err := ringFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			c, err := r.change(ctx, i)
			return read(c), err
		},
	}
}

func procConvergence() *measurement {
	return ringMeasurement("G9-proc", fmt.Sprintf("route convergence, %d node processes, degree 3 (slower of register and deregister)", ringSize),
		"s", "<= 2 s", atMost(2), func(c ringChange) float64 { return max(c.announce, c.withdraw).Seconds() })
}

func procMessagesPerLink() *measurement {
	return ringMeasurement("G11-proc", fmt.Sprintf("adverts per route change, per link, %d node processes (larger of register and deregister)", ringSize),
		"msgs", "<= 2", atMost(2), func(c ringChange) float64 { return max(c.announceMsgs, c.withdrawMsgs) })
}
