package sim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/microhost/microhost/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTopologyIsConnectedWithDegree(t *testing.T) {
	adj := topology(200, 4, 7)
	s := &Sim{Adjacent: adj}
	for i, d := range s.Hops(0) {
		if d < 0 {
			t.Fatalf("node %d unreachable", i)
		}
	}
	for i, peers := range adj {
		if len(peers) < 2 || len(peers) > 4 {
			t.Fatalf("node %d has %d links", i, len(peers))
		}
	}
	first, again := fmt.Sprint(topology(50, 4, 1)), fmt.Sprint(topology(50, 4, 1))
	if first != again {
		t.Fatal("same seed, different topology")
	}
}

// start runs a simulation until the test ends, and waits for its graph.
func start(t *testing.T, cfg Config, timeout time.Duration) (*Sim, context.Context) {
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(func() {
		cancel()
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(stopCtx); err != nil {
			t.Error(err)
		}
	})
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitGraph(ctx); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

// run starts a simulation, announces and withdraws one service, and checks
// that every node ends with the shortest route.
func run(t *testing.T, cfg Config, timeout time.Duration) (Result, Result) {
	s, ctx := start(t, cfg, timeout)
	const origin = 0
	up, err := s.Announce(ctx, origin, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("announce: %+v", up)
	// Every node's best route is a shortest path: metric 1 + 10 per hop
	// (links below 1 ms cost the same as 1 ms links), through a neighbour
	// one hop closer to the origin.
	hops := s.Hops(origin)
	index := map[string]int{}
	for i, n := range s.Nodes {
		index[n.ID] = i
	}
	for i, n := range s.Nodes {
		rs, err := n.Router.Lookup(ctx, sdk.Query{Service: "greeter"})
		if err != nil {
			t.Fatalf("%s: %v", n.ID, err)
		}
		best := rs[0]
		if want := int64(1 + 10*hops[i]); best.Metric != want {
			t.Fatalf("%s (%d hops away): best metric %d, want %d (path %v)", n.ID, hops[i], best.Metric, want, best.Path)
		}
		if i != origin && hops[index[best.Gateway]] != hops[i]-1 {
			t.Fatalf("%s routes through %s, which is not closer to the origin", n.ID, best.Gateway)
		}
	}
	down, err := s.Withdraw(ctx, origin, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("withdraw: %+v", down)
	if _, err := s.Announce(ctx, origin, "greeter"); err != nil {
		t.Fatal(err)
	}
	left, err := s.Leave(ctx, origin, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leave: %+v", left)
	if left.PerLink > 4 {
		t.Fatalf("%.2f messages per link when a node left: %+v", left.PerLink, left)
	}
	return up, down
}

func TestFiftyNodesConverge(t *testing.T) {
	up, down := run(t, Config{
		Nodes: 50, Seed: 1, PeerInterval: 200 * time.Millisecond, LinkPollInterval: 100 * time.Millisecond,
		// A neighbour that a busy machine delays is not what this test is about.
		KeepaliveTimeout: 5 * time.Second,
	}, 2*time.Minute)
	// Each node tells its neighbours about a change once per best-route
	// change; path hunting may add a few, but never a storm.
	for _, r := range []Result{up, down} {
		if r.PerLink > 4 || r.Dropped > 0 {
			t.Fatalf("%.2f control messages per link for one route change, %d dropped: %+v", r.PerLink, r.Dropped, r)
		}
	}
}

func TestThousandNodesConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 nodes take a while")
	}
	if raceDetector {
		t.Skip("1000 nodes in real time are too slow under the race detector; make test runs this test without it")
	}
	up, down := run(t, Config{Nodes: 1000, Seed: 1, PeerInterval: 2 * time.Second, LinkPollInterval: time.Second}, 10*time.Minute)
	for _, r := range []Result{up, down} {
		if r.PerLink > 4 || r.Dropped > 0 {
			t.Fatalf("%.2f control messages per link for one route change, %d dropped: %+v", r.PerLink, r.Dropped, r)
		}
	}
}

// Links of different sub-millisecond RTTs that jitter by milliseconds, as
// loopback and LAN links do on a loaded machine: once the costs have seen
// each link at its fastest, a route change costs one advert each way per
// link (G11), and a route that exists is not re-advertised while nothing
// changes. Link costs that followed the jitter never settled, and
// re-advertised every route over a link whenever they moved.
func TestJitteryLinksAdvertiseAChangeOnce(t *testing.T) {
	s, ctx := start(t, Config{
		Nodes: 50, Seed: 3, RTT: 100 * time.Microsecond, RTTSpread: 800 * time.Microsecond, Jitter: 2 * time.Millisecond,
		PeerInterval: 200 * time.Millisecond, LinkPollInterval: 100 * time.Millisecond, CostWindow: 10 * time.Second,
		// A neighbour that a busy machine delays is not what this test is about.
		KeepaliveTimeout: 5 * time.Second,
	}, 2*time.Minute)
	// Every link is faster than 1 ms, so its cost settles at the floor, 10,
	// or where the hysteresis leaves it: less than a quarter above. It may
	// first move half a cost window after the link came up.
	settle, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := poll(settle, "every link to cost 10, or less than a quarter more", func() bool {
		for _, n := range s.Nodes {
			for _, p := range n.Network.Peers() {
				if 4*(p.Cost-10) > p.Cost {
					return false
				}
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	perChange := func(what string, r Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", what, r)
		// A change costs 2; a busy machine may add a few, re-advertising
		// would add many.
		if r.PerLink > 2.5 || r.Dropped > 0 {
			t.Fatalf("%s: %.2f control messages per link, %d dropped", what, r.PerLink, r.Dropped)
		}
	}
	up, err := s.Announce(ctx, 0, "greeter")
	perChange("announce", up, err)

	before := s.controlMessages()
	time.Sleep(2 * time.Second) // 20 link polls, each seeing RTTs jump by up to 2 ms
	if n := s.controlMessages() - before; n > 0 {
		t.Fatalf("%d control messages in 2 s while nothing changed", n)
	}

	down, err := s.Withdraw(ctx, 0, "greeter")
	perChange("withdraw", down, err)
}
