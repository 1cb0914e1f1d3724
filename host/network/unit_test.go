package network

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/microhost/microhost/host/network/networkpb"
	"github.com/microhost/microhost/sdk"
)

func pbNode(id string, peers ...*networkpb.Node) *networkpb.Node {
	return &networkpb.Node{Id: id, Peers: peers}
}

func TestTreeKeepsNothingDeeperThanMaxDepth(t *testing.T) {
	// s - 1 - 2 - 3 - 4: node 4 is four hops below s.
	deep := pbNode("s", pbNode("n1", pbNode("n2", pbNode("n3", pbNode("n4")))))
	d := treeFromPB(deep, MaxDepth).depths()
	if _, ok := d["n4"]; ok || d["n3"] != 3 {
		t.Fatalf("depths %v: want n3 at 3 and no n4", d)
	}
	// A path that comes back to an ancestor is cut there.
	loop := pbNode("s", pbNode("n1", pbNode("s", pbNode("n1"))))
	if got := treeFromPB(loop, MaxDepth).depths(); len(got) != 2 {
		t.Fatalf("depths %v: want only s and n1", got)
	}
	enc := treeFromPB(deep, MaxDepth).toPB(2)
	if enc.Peers[0].Peers[0].Peers != nil {
		t.Fatal("toPB kept more than the depth asked for")
	}
	// A node reached twice is expanded once, where it is nearest.
	diamond := &tree{ID: "x", Peers: []*tree{
		{ID: "p", Peers: []*tree{{ID: "y", Peers: []*tree{{ID: "z"}}}, {ID: "q"}}},
		{ID: "q", Peers: []*tree{{ID: "y", Peers: []*tree{{ID: "z"}}}}},
	}}
	wire := diamond.toPB(MaxDepth)
	if got := treeFromPB(wire, MaxDepth).depths(); got["y"] != 2 || got["z"] != 3 || got["q"] != 1 {
		t.Fatalf("depths after encoding %v", got)
	}
	if countNodes(wire) != 7 {
		t.Fatalf("diamond encoded as %d nodes, want 7 (y and z expanded once)", countNodes(wire))
	}
}

// In a diamond x-{p,q}-y, y has two parents. When both stop reporting it,
// it must go; while one still does, it must stay.
func TestGraphPrunesNodeWithTwoParents(t *testing.T) {
	root := func(trees ...*tree) *tree { return &tree{ID: "x", Peers: trees} }
	p := treeFromPB(pbNode("p", pbNode("y", pbNode("z"))), MaxDepth)
	q := treeFromPB(pbNode("q", pbNode("y")), MaxDepth)
	g := buildGraph(root(p, q))
	var y NodeInfo
	for _, n := range g.Nodes {
		if n.ID == "y" {
			y = n
		}
	}
	if y.Hops != 2 || !slices.Equal(y.Via, []string{"p", "q"}) {
		t.Fatalf("y = %+v, want 2 hops via p and q", y)
	}
	pNoY := treeFromPB(pbNode("p"), MaxDepth)
	if ids := nodeIDs(buildGraph(root(pNoY, q))); !slices.Equal(ids, []string{"p", "q", "x", "y"}) {
		t.Fatalf("after p lost y: %v", ids)
	}
	qNoY := treeFromPB(pbNode("q"), MaxDepth)
	if ids := nodeIDs(buildGraph(root(pNoY, qNoY))); !slices.Equal(ids, []string{"p", "q", "x"}) {
		t.Fatalf("after both lost y: %v (y or z left behind)", ids)
	}
	if ids := nodeIDs(buildGraph(root(q))); slices.Contains(ids, "p") || slices.Contains(ids, "z") {
		t.Fatalf("after p left: %v", ids)
	}
}

func countNodes(n *networkpb.Node) int {
	c := 1
	for _, p := range n.Peers {
		c += countNodes(p)
	}
	return c
}

func TestTreeFromPBIsBounded(t *testing.T) {
	wide := pbNode("s")
	for i := range 200 {
		mid := pbNode(fmt.Sprint("m", i))
		for j := range 200 {
			mid.Peers = append(mid.Peers, pbNode(fmt.Sprint("l", i, "-", j)))
		}
		wide.Peers = append(wide.Peers, mid)
	}
	if got := len(treeFromPB(wide, MaxDepth).depths()); got != maxTreeNodes {
		t.Fatalf("kept %d nodes of a 40201-node message, want %d", got, maxTreeNodes)
	}
}

func nodeIDs(g Graph) []string {
	var ids []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func TestLinkCost(t *testing.T) {
	for _, c := range []struct {
		rtt  time.Duration
		want int64
	}{
		{0, unmeasuredCost},
		{10 * time.Microsecond, minLinkCost},
		{900 * time.Microsecond, minLinkCost},
		{time.Millisecond, 10},
		{1160 * time.Microsecond, 12},
		{80 * time.Millisecond, 800},
		{time.Hour, maxLinkCost},
	} {
		if got := linkCost(c.rtt); got != c.want {
			t.Errorf("linkCost(%v) = %d, want %d", c.rtt, got, c.want)
		}
	}
	if linkCost(0) <= linkCost(50*time.Millisecond) {
		t.Error("an unmeasured link looks better than a 50ms one")
	}
	for _, c := range []struct{ cur, measured, want int64 }{
		{0, 12, 12},  // first measurement
		{10, 12, 10}, // within a quarter: jitter
		{10, 13, 13}, // beyond: a real change
		{16, 12, 16}, // down within a quarter
		{16, 11, 11}, // down beyond
		{400, 480, 400},
		{400, 520, 520},
	} {
		if got := settleCost(c.cur, c.measured); got != c.want {
			t.Errorf("settleCost(%d, %d) = %d, want %d", c.cur, c.measured, got, c.want)
		}
	}
	if addMetric(0, 10) != 11 || addMetric(maxMetric, maxLinkCost) != maxMetric {
		t.Error("addMetric")
	}
}

// TestCostFollowsTheLowestRTT: a link's cost follows the lowest RTT the
// tunnel measured, not its smoothed RTT, which a busy peer inflates; a
// tunnel that reports no lowest RTT is costed by its smoothed one.
func TestCostFollowsTheLowestRTT(t *testing.T) {
	busy := sdk.Link{RTT: 15 * time.Millisecond, MinRTT: 200 * time.Microsecond}
	if got := linkCost(costRTT(busy)); got != minLinkCost {
		t.Errorf("smoothed 15ms, lowest 200µs: cost %d, want the floor %d", got, minLinkCost)
	}
	if got := linkCost(costRTT(sdk.Link{RTT: 15 * time.Millisecond})); got != 150 {
		t.Errorf("smoothed 15ms, no lowest: cost %d, want 150", got)
	}
}

func TestLowestRTTForgetsSamplesAfterAWindow(t *testing.T) {
	const window = time.Minute
	var w lowestRTT
	at := time.Unix(1000, 0)
	observe := func(after, rtt, want time.Duration) {
		t.Helper()
		at = at.Add(after)
		if got := w.observe(at, rtt, window); got != want {
			t.Fatalf("after %v more, sample %v: lowest %v, want %v", after, rtt, got, want)
		}
	}
	observe(0, 0, 0) // not measured yet
	observe(time.Second, 5*time.Millisecond, 5*time.Millisecond)
	observe(time.Second, 2*time.Millisecond, 2*time.Millisecond) // lower: taken at once
	observe(time.Second, 0, 2*time.Millisecond)
	// A CPU stall and the moving average coming back down change nothing.
	observe(time.Second, 300*time.Millisecond, 2*time.Millisecond)
	observe(time.Second, 30*time.Millisecond, 2*time.Millisecond)
	// The 2 ms sample is in the previous half window until a minute after
	// the window it was taken in began, then the slower link shows.
	observe(window/2, 9*time.Millisecond, 2*time.Millisecond)
	observe(window/2, 9*time.Millisecond, 9*time.Millisecond)
	// Silence for a whole window forgets everything.
	observe(window, 0, 0)
}

func TestPeerCostChangesAtMostOncePerHalfWindow(t *testing.T) {
	const window = 30 * time.Second
	var c peerCost
	at := time.Unix(1000, 0)
	update := func(after, rtt time.Duration, want int64) {
		t.Helper()
		at = at.Add(after)
		if got := c.update(at, rtt, window); got != want {
			t.Fatalf("after %v more, RTT %v: cost %d, want %d", after, rtt, got, want)
		}
	}
	update(0, 0, unmeasuredCost)
	update(time.Second, 40*time.Millisecond, 400) // the first measurement counts at once
	// A moving average coming down from a stall: one step, half a window on.
	for _, rtt := range []time.Duration{28, 20, 14, 10, 7, 5} {
		update(time.Second, rtt*time.Millisecond, 400)
	}
	update(window/2-6*time.Second, 5*time.Millisecond, 50)
	// A new stall never raises it; a faster link lowers it, once it may move.
	update(time.Second, 90*time.Millisecond, 50)
	update(time.Second, 3*time.Millisecond, 50)
	update(window/2, 3*time.Millisecond, 30)
}

func TestVouched(t *testing.T) {
	n := &Node{cfg: Config{NodeID: "me"}}
	// The sender s sees a at 1 hop, b at 2 and c at 3.
	g := map[string]reach{"s": {depth: 0}, "a": {depth: 1}, "b": {depth: 2}, "c": {depth: 3}}
	for _, c := range []struct {
		origin string
		path   []string
		want   bool
	}{
		{"s", []string{"s"}, true},
		{"b", []string{"b", "a", "s"}, true},
		{"z", []string{"z", "s"}, false},                // claims a neighbour it does not have
		{"z", []string{"z", "c", "b", "a", "s"}, true},  // beyond the horizon, along its graph
		{"z", []string{"z", "y", "b", "a", "s"}, false}, // y is not 3 hops from s
		{"z", []string{"z", "c", "a", "b", "s"}, false}, // b is not a neighbour of s
		{"z", []string{"z", "b", "a", "s"}, false},      // within the horizon but not in the graph
	} {
		if got := n.vouched("s", c.origin, c.path, g); got != c.want {
			t.Errorf("vouched(origin %s, path %v) = %v, want %v", c.origin, c.path, got, c.want)
		}
	}
	if n.vouched("s", "a", []string{"a", "s"}, nil) {
		t.Error("vouched for a sender whose graph is unknown")
	}
}

func TestCollapseKeepsBestRoutePerInstance(t *testing.T) {
	r := func(gw string, metric int64) sdk.Route {
		return sdk.Route{Service: "s", Address: "x", Router: "o", Gateway: gw, Metric: metric}
	}
	got := collapse([]sdk.Event{
		{Type: sdk.Create, Route: r("a", 30)},
		{Type: sdk.Create, Route: r("b", 20)},
		{Type: sdk.Delete, Route: r("b", 20)},
		{Type: sdk.Create, Route: sdk.Route{Service: "t", Address: "y", Router: "o"}},
		{Type: sdk.Delete, Route: sdk.Route{Service: "u", Address: "z", Router: "o"}},
	})
	if len(got) != 3 || got[0].Route.Metric != 20 || got[0].Type != sdk.Create || got[1].Route.Service != "t" || got[2].Type != sdk.Delete {
		t.Fatalf("collapse = %+v", got)
	}
}

func TestMaskAddress(t *testing.T) {
	a, b := maskAddress("n", "10.0.0.1:80"), maskAddress("n", "10.0.0.1:81")
	if a == b || a != maskAddress("n", "10.0.0.1:80") || a == maskAddress("m", "10.0.0.1:80") {
		t.Fatal("masks must be stable and unique per node and address")
	}
}

func TestAdvertCodecRoundTrip(t *testing.T) {
	now := time.Unix(100, 0)
	in := &sdk.Advert{ID: "s", Type: sdk.Sync, Origin: "o", Timestamp: now, TTL: time.Minute, Events: []sdk.Event{{
		Type: sdk.Update, Timestamp: now,
		Route: sdk.Route{Service: "svc", Address: "x", Network: "n", Router: "o", Metric: 7, Seq: 9,
			Path: []string{"o", "s"}, Endpoints: []string{"pkg.Svc"}, Metadata: map[string]string{"k": "v"}},
	}}}
	out, err := advertFromPB(advertToPB(in), "s", time.Unix(5, 0))
	if err != nil {
		t.Fatal(err)
	}
	got, want := out.Events[0].Route, in.Events[0].Route
	if out.Type != sdk.Sync || out.Origin != "o" || !out.Timestamp.Equal(now) || out.TTL != time.Minute ||
		out.Events[0].Type != sdk.Update || got.Service != want.Service || got.Metric != 7 || got.Seq != 9 ||
		!slices.Equal(got.Path, want.Path) || got.Metadata["k"] != "v" || got.Endpoints[0] != "pkg.Svc" {
		t.Fatalf("round trip: %+v", out)
	}
	for _, bad := range []*networkpb.Advert{
		{Type: 7},
		{TtlNanos: -1},
		{Events: []*networkpb.Event{{}}},
		{Events: []*networkpb.Event{{Route: &networkpb.Route{}}}},
		{Events: []*networkpb.Event{{Type: 9, Route: &networkpb.Route{Service: "s"}}}},
	} {
		if _, err := advertFromPB(bad, "s", now); err == nil {
			t.Errorf("advert %v accepted", bad)
		}
	}
	// Missing timestamps default to now.
	a, err := advertFromPB(&networkpb.Advert{Events: []*networkpb.Event{{Route: &networkpb.Route{Service: "s"}}}}, "s", now)
	if err != nil || !a.Timestamp.Equal(now) || !a.Events[0].Timestamp.Equal(now) {
		t.Fatalf("defaults: %+v %v", a, err)
	}
}
