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

// run starts a simulation, announces and withdraws one service, and checks
// that every node ends with the shortest route.
func run(t *testing.T, cfg Config, timeout time.Duration) (Result, Result) {
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(stopCtx); err != nil {
			t.Error(err)
		}
	}()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitGraph(ctx); err != nil {
		t.Fatal(err)
	}
	const origin = 0
	up, err := s.Announce(ctx, origin, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("announce: %+v", up)
	// Every node's best route is a shortest path: metric 1 + 10 per hop,
	// through a neighbour one hop closer to the origin.
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
	up, down := run(t, Config{Nodes: 50, Seed: 1, PeerInterval: 200 * time.Millisecond, LinkPollInterval: 100 * time.Millisecond}, 2*time.Minute)
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
