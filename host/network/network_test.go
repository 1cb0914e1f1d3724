package network

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microhost/microhost/host/network/clock"
	"github.com/microhost/microhost/host/network/networkpb"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
)

func TestChainLearnsRoutesThroughMiddle(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{})
	b := startNode(t, f, "b", nodeOptions{})
	c := startNode(t, f, "c", nodeOptions{})
	link(t, f, "a", "b", "b", "c")
	if err := f.SetRTT("a", "b", 2*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	a.register(t, "greeter", "10.0.0.1:9000")

	eventually(t, "c has a route to greeter through b", func() bool { return c.hasRouteVia("greeter", "b") })
	onB, onC := b.routes("greeter"), c.routes("greeter")
	if len(onB) != 1 || len(onC) != 1 {
		t.Fatalf("want one route on b and on c:\nb:%s\nc:%s", describeRoutes(onB), describeRoutes(onC))
	}
	rb, rc := onB[0], onC[0]
	if rb.Gateway != "a" || rb.Link != sdk.LinkNetwork || rb.Router != "a" {
		t.Fatalf("route on b: %s", describeRoutes(onB))
	}
	// a–b costs 2ms/100µs = 20, b–c 1ms = 10; local is 1.
	if rb.Metric != 21 || rc.Metric != 31 {
		t.Fatalf("metrics b=%d c=%d, want 21 and 31", rb.Metric, rc.Metric)
	}
	if !slices.Equal(rc.Path, []string{"a", "b"}) {
		t.Fatalf("path on c = %v, want [a b]", rc.Path)
	}
	if rc.Address == "10.0.0.1:9000" || rc.Address != rb.Address {
		t.Fatalf("remote address %q (b has %q): want the same masked address", rc.Address, rb.Address)
	}

	eventually(t, "c knows 3 nodes", func() bool { return slices.Equal(c.nodeIDs(), []string{"a", "b", "c"}) })
	if peers := c.net.Peers(); len(peers) != 1 || peers[0].ID != "b" || peers[0].Cost != 10 {
		t.Fatalf("c's peers = %+v, want only b at cost 10", peers)
	}
	g := c.net.Graph()
	for _, n := range g.Nodes {
		if want := map[string]int{"c": 0, "b": 1, "a": 2}[n.ID]; n.Hops != want {
			t.Fatalf("node %s at %d hops, want %d", n.ID, n.Hops, want)
		}
	}
	if dot := g.DOT(); !strings.Contains(dot, `"a" -- "b"`) || !strings.Contains(dot, `"b" -- "c"`) || strings.Contains(dot, `"a" -- "c"`) {
		t.Fatalf("DOT:\n%s", dot)
	}
	if st := c.net.Stats(); st.Received["peer"] == 0 || st.Received["advert"] == 0 || st.Sent["peer"] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// chainWithFakeClock starts a–b–c whose protocol time only moves when the
// test says so, and registers greeter on a.
func chainWithFakeClock(t *testing.T) (*memtunnel.Fabric, *clock.Fake, []*testNode) {
	f := memtunnel.NewFabric()
	fc := clock.NewFake(time.Unix(1000, 0))
	var nodes []*testNode
	for _, id := range []string{"a", "b", "c"} {
		nodes = append(nodes, startNode(t, f, id, nodeOptions{clock: fc}))
	}
	link(t, f, "a", "b", "b", "c")
	// Links are noticed by polling, at fake-clock ticks.
	advance(t, fc, 20*time.Millisecond)
	nodes[0].register(t, "greeter", "10.0.0.1:9000")
	eventually(t, "c has a route to greeter", func() bool { return nodes[2].hasRouteVia("greeter", "b") })
	return f, fc, nodes
}

// advance moves the fake clock once every node's timers are armed again, so
// that no tick is missed: each of the 3 nodes waits on 2 timers.
func advance(t *testing.T, fc *clock.Fake, d time.Duration) {
	t.Helper()
	eventually(t, "the nodes' loops are parked", func() bool { return fc.Waiters() >= 6 })
	fc.Advance(d)
}

func TestVanishedNodeIsPrunedWhenLinkGoesDown(t *testing.T) {
	f, fc, nodes := chainWithFakeClock(t)
	if err := f.Isolate("a"); err != nil {
		t.Fatal(err)
	}
	advance(t, fc, 20*time.Millisecond) // one link poll, far below the 1s keepalive timeout
	eventually(t, "greeter is gone from c", func() bool { return len(nodes[2].routes("greeter")) == 0 })
	eventually(t, "a is gone from c's graph", func() bool { return !slices.Contains(nodes[2].nodeIDs(), "a") })
}

func TestSilentNodeIsPrunedAfterKeepaliveTimeout(t *testing.T) {
	f, fc, nodes := chainWithFakeClock(t)
	// a hangs: its link stays up but nothing it sends arrives.
	f.SetFilter(func(from, to, channel string) bool { return from != "a" })
	for range 4 {
		advance(t, fc, 200*time.Millisecond) // 800ms: within the 1s timeout
	}
	time.Sleep(50 * time.Millisecond)
	if !nodes[2].hasRouteVia("greeter", "b") {
		t.Fatal("route withdrawn before the keepalive timeout")
	}
	advance(t, fc, 300*time.Millisecond)
	eventually(t, "greeter is gone from c", func() bool { return len(nodes[2].routes("greeter")) == 0 })
	if len(nodes[1].routes("greeter")) != 0 {
		t.Fatal("b still has the route")
	}
}

// Peer messages that repeat the last one byte for byte, as nearly all do,
// are not decoded again, but they still keep their senders neighbours: none
// is pruned (and asked for its table again when it is heard next).
func TestRepeatedPeerMessagesKeepNeighbours(t *testing.T) {
	_, fc, nodes := chainWithFakeClock(t)
	b := nodes[1]
	solicited, heard := b.net.Stats().Sent["solicit"], b.net.Stats().Received["peer"]
	// 4s in all: the graph settles within a second, and then the messages
	// repeat for longer than the keepalive timeout, 1s.
	for range 20 {
		advance(t, fc, 200*time.Millisecond)
	}
	st := b.net.Stats()
	if st.Received["peer"] < heard+20 {
		t.Fatalf("b heard %d peer messages, want at least 20", st.Received["peer"]-heard)
	}
	if st.Sent["solicit"] != solicited || len(b.net.Peers()) != 2 {
		t.Fatalf("b solicited %d more times, has neighbours %+v: a neighbour was pruned", st.Sent["solicit"]-solicited, b.net.Peers())
	}
}

// A change of the graph travels in peer messages sent because of it, not
// one hop per peer interval: with a 20 s interval, a node three hops away
// learns of a new node well within it.
func TestGraphChangeTravelsAtOnce(t *testing.T) {
	f := memtunnel.NewFabric()
	slow := nodeOptions{config: func(c *Config) { c.PeerInterval, c.KeepaliveTimeout = 20*time.Second, time.Minute }}
	a := startNode(t, f, "a", slow)
	for _, id := range []string{"b", "c", "d"} {
		startNode(t, f, id, slow)
	}
	link(t, f, "a", "b", "b", "c")
	eventually(t, "a sees c", func() bool { return slices.Contains(a.nodeIDs(), "c") })
	link(t, f, "c", "d")
	eventually(t, "a sees d, three hops away", func() bool { return slices.Contains(a.nodeIDs(), "d") })
}

func TestGracefulStopRemovesRoutesAtOnce(t *testing.T) {
	_, _, nodes := chainWithFakeClock(t)
	nodes[0].stop(t)
	// No clock advance: only the close message can do this.
	eventually(t, "greeter is gone from c", func() bool { return len(nodes[2].routes("greeter")) == 0 })
	eventually(t, "a is gone from c's graph", func() bool { return !slices.Contains(nodes[2].nodeIDs(), "a") })
	for _, n := range nodes[1:] {
		if got := n.net.Stats().Sent["close"]; got != 1 {
			t.Fatalf("%s relayed the close %d times, want once", n.id, got)
		}
	}
}

func TestPeriodicSyncHealsDroppedAdverts(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{syncInterval: 300 * time.Millisecond})
	b := startNode(t, f, "b", nodeOptions{syncInterval: 300 * time.Millisecond})
	link(t, f, "a", "b")
	eventually(t, "b solicited a", func() bool { return b.net.Stats().Sent["solicit"] > 0 && a.net.Stats().Received["solicit"] > 0 })
	eventually(t, "b has a as peer", func() bool { return len(b.net.Peers()) == 1 })

	// Drop a's control messages to b until a has sent the advert.
	var mu sync.Mutex
	dropping := true
	f.SetFilter(func(from, to, channel string) bool {
		mu.Lock()
		defer mu.Unlock()
		return !(dropping && from == "a" && to == "b" && channel == ChannelControl)
	})
	adverts := a.net.Stats().Sent["advert"]
	a.register(t, "greeter", "10.0.0.1:9000")
	eventually(t, "a sent the advert", func() bool { return a.net.Stats().Sent["advert"] > adverts })
	mu.Lock()
	dropping = false
	mu.Unlock()
	if f.Stats().Filtered == 0 || b.hasRouteVia("greeter", "a") {
		t.Fatal("the advert was not dropped")
	}
	syncs := b.net.Stats().Received["sync"]
	eventually(t, "b has the route", func() bool { return b.hasRouteVia("greeter", "a") })
	if b.net.Stats().Received["sync"] == syncs {
		t.Fatal("route arrived without a sync")
	}
}

func TestTriangleHasNoLoops(t *testing.T) {
	f := memtunnel.NewFabric()
	ids := []string{"a", "b", "c"}
	nodes := map[string]*testNode{}
	for _, id := range ids {
		nodes[id] = startNode(t, f, id, nodeOptions{})
	}
	link(t, f, "a", "b", "b", "c", "c", "a")
	if err := f.SetRTT("a", "c", 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		nodes[id].register(t, "svc-"+id, "10.0.0.1:80")
	}
	for _, id := range ids {
		for _, other := range ids {
			if other != id {
				eventually(t, id+" learns svc-"+other, func() bool { return len(nodes[id].routes("svc-"+other)) > 0 })
			}
		}
	}
	// a reaches c's service more cheaply through b (10+10) than directly (50).
	ok := false
	for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		rs := nodes["a"].routes("svc-c")
		ok = len(rs) > 0 && rs[0].Gateway == "b" && rs[0].Metric == 21
	}
	if !ok {
		t.Fatalf("a's routes to svc-c, want the best through b at metric 21:%s\nb's:%s", describeRoutes(nodes["a"].routes("svc-c")), describeRoutes(nodes["b"].routes("svc-c")))
	}
	for _, id := range ids {
		all, _ := nodes[id].router.List(context.Background())
		for _, r := range all {
			if r.Gateway == id || (r.Link == sdk.LinkNetwork && slices.Contains(r.Path, id)) {
				t.Fatalf("%s has a route through itself:%s", id, describeRoutes([]sdk.Route{r}))
			}
			if r.Link != sdk.LinkNetwork {
				continue
			}
			// Follow best routes towards the origin: it must get there.
			at, seen := id, map[string]bool{}
			for at != r.Router {
				if seen[at] {
					t.Fatalf("loop following %s from %s: %v", r.Service, id, seen)
				}
				seen[at] = true
				rs := nodes[at].routes(r.Service)
				if len(rs) == 0 {
					t.Fatalf("%s has no route to %s on the way from %s", at, r.Service, id)
				}
				if rs[0].Link == sdk.LinkLocal {
					break
				}
				at = rs[0].Gateway
			}
		}
	}
}

func TestNetworksDoNotMix(t *testing.T) {
	f := memtunnel.NewFabric()
	red := startNode(t, f, "red", nodeOptions{network: "red"})
	blue := startNode(t, f, "blue", nodeOptions{network: "blue"})
	link(t, f, "red", "blue")
	red.register(t, "r", "10.0.0.1:80")
	blue.register(t, "b", "10.0.0.2:80")
	eventually(t, "both ignored the other's peer messages", func() bool {
		return red.net.Stats().Ignored > 2 && blue.net.Stats().Ignored > 2
	})
	// Let a flush interval pass, then look: nothing may have crossed.
	time.Sleep(100 * time.Millisecond)
	if len(red.routes("b")) != 0 || len(blue.routes("r")) != 0 {
		t.Fatal("a route crossed between networks")
	}
	if len(red.net.Peers()) != 0 || len(blue.net.Peers()) != 0 {
		t.Fatal("nodes of different networks became neighbours")
	}
}

func TestRouteInAnotherNodesNameIsRefused(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{})
	b := startNode(t, f, "b", nodeOptions{})
	m := newRawPeer(t, f, "m", "test")
	link(t, f, "a", "b", "m", "b")
	eventually(t, "b knows a", func() bool { return slices.Contains(b.nodeIDs(), "a") })

	// m says it is a: refused outright.
	m.peer(&networkpb.Node{Id: "a"})
	// m's graph holds only itself; it advertises its own route and one in a's name.
	m.peer(&networkpb.Node{Id: "m", Instance: "1"})
	eventually(t, "b has m as peer", func() bool { return slices.ContainsFunc(b.net.Peers(), func(p Peer) bool { return p.ID == "m" }) })
	m.advert(create("mine", "x", "m", "m"), create("stolen", "10.6.6.6:80", "a", "a"))
	eventually(t, "b learns m's own route", func() bool { return b.hasRouteVia("mine", "m") })
	if len(b.routes("stolen")) != 0 {
		t.Fatalf("route in a's name accepted:%s", describeRoutes(b.routes("stolen")))
	}
	st := b.net.Stats()
	if st.RefusedRoutes != 1 || st.Ignored == 0 {
		t.Fatalf("stats %+v: want 1 refused route and the impostor peer message ignored", st)
	}
	if slices.ContainsFunc(b.net.Peers(), func(p Peer) bool { return p.ID == "a" && p.Instance == "" }) {
		t.Fatal("m's peer message in a's name was taken")
	}
	a.register(t, "real", "10.0.0.1:80")
	eventually(t, "a's real route still arrives", func() bool { return b.hasRouteVia("real", "a") })
}

func TestOldPeerMessagesWithMissingFields(t *testing.T) {
	f := memtunnel.NewFabric()
	b := startNode(t, f, "b", nodeOptions{})
	m := newRawPeer(t, f, "m", "test")
	link(t, f, "m", "b")

	// Junk and half-empty messages: counted, never a panic.
	m.sendBytes(m.netOut, []byte{0xff, 0x01, 0x02})
	m.send(m.netOut, &networkpb.NetworkMessage{Network: "test"})
	m.send(m.netOut, &networkpb.NetworkMessage{Network: "test", Body: &networkpb.NetworkMessage_Peer{Peer: &networkpb.Peer{}}})
	m.send(m.netOut, &networkpb.NetworkMessage{Network: "test", Body: &networkpb.NetworkMessage_Close{Close: &networkpb.Close{}}})
	m.send(m.ctlOut, &networkpb.ControlMessage{Network: "test", Body: &networkpb.ControlMessage_Advert{Advert: &networkpb.Advert{Events: []*networkpb.Event{{}}}}})
	m.send(m.ctlOut, &networkpb.ControlMessage{Network: "test", Body: &networkpb.ControlMessage_Sync{}})

	// An old peer: no instance, no graph, no metric, path, seq or timestamps.
	m.peer(&networkpb.Node{Id: "m"})
	m.advert(&networkpb.Event{Route: &networkpb.Route{Service: "old", Address: "x", Router: "m"}})
	eventually(t, "b learns the old peer's route", func() bool { return b.hasRouteVia("old", "m") })
	r := b.routes("old")[0]
	if r.Metric != 11 || !slices.Equal(r.Path, []string{"m"}) || r.Network != "test" {
		t.Fatalf("route from an old peer:%s", describeRoutes([]sdk.Route{r}))
	}
	if st := b.net.Stats(); st.Invalid < 4 {
		t.Fatalf("stats %+v: want the malformed messages counted", st)
	}
}

// blockingTunnel never finishes connecting to dead addresses.
type blockingTunnel struct {
	sdk.Tunnel
	mu      sync.Mutex
	calls   []string
	entered chan string
}

func (b *blockingTunnel) Connect(ctx context.Context, address string) error {
	b.mu.Lock()
	b.calls = append(b.calls, address)
	b.mu.Unlock()
	if strings.HasPrefix(address, "dead") {
		b.entered <- address
		<-ctx.Done()
		return ctx.Err()
	}
	return b.Tunnel.Connect(ctx, address)
}

func TestDeadResolvedAddressDoesNotDelayStart(t *testing.T) {
	f := memtunnel.NewFabric()
	startNode(t, f, "b", nodeOptions{})
	bt := &blockingTunnel{entered: make(chan string, 1)}
	a := startNode(t, f, "a", nodeOptions{
		tunnel: func(tun sdk.Tunnel) sdk.Tunnel { bt.Tunnel = tun; return bt },
		config: func(c *Config) {
			c.Resolve = func(context.Context) ([]sdk.Node, error) {
				return []sdk.Node{{Address: "b", Priority: 5}, {Address: "dead:1", Priority: 1}}, nil
			}
		},
	})
	// Start has returned; the dead address is still being tried.
	if got := <-bt.entered; got != "dead:1" {
		t.Fatalf("first connect went to %q", got)
	}
	eventually(t, "a links to b past the dead address", func() bool { return f.Linked("a", "b") })
	eventually(t, "a knows b", func() bool { return len(a.net.Peers()) == 1 })
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if !slices.Equal(bt.calls, []string{"dead:1", "b"}) {
		t.Fatalf("connect order %v, want lowest priority first", bt.calls)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := New(Config{PeerInterval: -time.Second})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"NodeID", "Network", "Tunnel", "Router", "PeerInterval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestMinPeersLinksToNodesSeenInTheGraph(t *testing.T) {
	f := memtunnel.NewFabric()
	withAddress := func(c *Config) { c.Address = c.NodeID }
	startNode(t, f, "a", nodeOptions{config: withAddress})
	startNode(t, f, "b", nodeOptions{config: withAddress})
	c := startNode(t, f, "c", nodeOptions{config: func(c *Config) { c.Address = "c"; c.MinPeers = 2 }})
	link(t, f, "a", "b", "b", "c")
	eventually(t, "c links to a, which it saw through b", func() bool { return f.Linked("c", "a") })
	eventually(t, "c has two neighbours", func() bool { return len(c.net.Peers()) == 2 })
}

func TestLinkCostChangeRecostsRoutes(t *testing.T) {
	f := memtunnel.NewFabric()
	// A short cost window, so that a link that slowed down is re-costed soon.
	window := nodeOptions{config: func(c *Config) { c.CostWindow = 200 * time.Millisecond }}
	a := startNode(t, f, "a", window)
	startNode(t, f, "b", window)
	c := startNode(t, f, "c", window)
	link(t, f, "a", "b", "b", "c")
	a.register(t, "greeter", "10.0.0.1:9000")
	eventually(t, "c has greeter at metric 21", func() bool {
		rs := c.routes("greeter")
		return len(rs) == 1 && rs[0].Metric == 21
	})
	// b–c slows from 1ms to 3ms: cost 10 -> 30, beyond the hysteresis.
	if err := f.SetRTT("b", "c", 3*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c's route is re-costed to 41", func() bool {
		rs := c.routes("greeter")
		return len(rs) == 1 && rs[0].Metric == 41
	})
	// Jitter within the hysteresis changes nothing.
	if err := f.SetRTT("b", "c", 3200*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several link polls, 20ms apart
	if p := c.net.Peers(); len(p) != 1 || p[0].Cost != 30 {
		t.Fatalf("peers %+v, want b still at cost 30", p)
	}
}

// Once a neighbour passed a node's close on, the routes of that node it
// sends are stale (the close reached it before what it advertises), until
// its graph shows the node back with a new instance.
func TestRoutesAfterARelayedCloseAreStale(t *testing.T) {
	f := memtunnel.NewFabric()
	b := startNode(t, f, "b", nodeOptions{})
	m := newRawPeer(t, f, "m", "test")
	link(t, f, "m", "b")
	withO := func(instance string) {
		m.peer(&networkpb.Node{Id: "m", Instance: "1", Peers: []*networkpb.Node{{Id: "o", Instance: instance}}})
	}
	withO("o1")
	eventually(t, "b has m as peer", func() bool { return slices.ContainsFunc(b.net.Peers(), func(p Peer) bool { return p.ID == "m" }) })
	m.advert(create("greeter", "o#1", "o", "o"))
	eventually(t, "b learns o's route through m", func() bool { return b.hasRouteVia("greeter", "m") })

	m.send(m.netOut, &networkpb.NetworkMessage{Network: "test", Body: &networkpb.NetworkMessage_Close{Close: &networkpb.Close{Id: "o", Instance: "o1"}}})
	eventually(t, "the close removes the route", func() bool { return len(b.routes("greeter")) == 0 })
	m.advert(create("greeter", "o#1", "o", "o"))
	m.advert(create("marker", "m#1", "m", "m"))
	eventually(t, "b learns m's own route, sent after the stale one", func() bool { return b.hasRouteVia("marker", "m") })
	if rs := b.routes("greeter"); len(rs) != 0 {
		t.Fatalf("a route of o that m sent after o's close was taken:%s", describeRoutes(rs))
	}

	withO("o2") // o is back
	eventually(t, "b sees o's new instance", func() bool {
		return slices.ContainsFunc(b.net.Nodes(), func(n NodeInfo) bool { return n.ID == "o" && n.Instance == "o2" })
	})
	m.advert(create("greeter", "o#2", "o", "o"))
	eventually(t, "b learns the route of o's new instance", func() bool { return b.hasRouteVia("greeter", "m") })
}

func TestRestartedNodeIsAcceptedAgain(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{})
	startNode(t, f, "b", nodeOptions{})
	c := startNode(t, f, "c", nodeOptions{})
	link(t, f, "a", "b", "b", "c")
	a.register(t, "greeter", "10.0.0.1:9000")
	eventually(t, "c has greeter", func() bool { return c.hasRouteVia("greeter", "b") })
	a.stop(t)
	eventually(t, "greeter is gone from c", func() bool { return len(c.routes("greeter")) == 0 })

	// The same node id comes back at once, well within the tombstone time.
	a2 := startNode(t, f, "a", nodeOptions{})
	link(t, f, "a", "b")
	a2.register(t, "greeter", "10.0.0.1:9000")
	eventually(t, "c has greeter from the restarted a", func() bool { return c.hasRouteVia("greeter", "b") })
}

func TestSolicitAnswersALargeTableInParts(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{})
	b := startNode(t, f, "b", nodeOptions{})
	const routes = 1200
	for i := range routes {
		a.register(t, fmt.Sprintf("svc-%d", i), "10.0.0.1:80")
	}
	// Let a's router flush all its adverts to nobody before b is linked, so
	// that b learns the whole table from the solicit answer: the count of
	// adverts a sent must stay put for a while.
	last, since := uint64(0), time.Now()
	eventually(t, "a advertised all its routes", func() bool {
		all, _ := a.router.List(context.Background())
		if n := a.net.Stats().Sent["advert"]; n != last || len(all) != routes {
			last, since = n, time.Now()
			return false
		}
		return last > 0 && time.Since(since) > time.Second
	})
	link(t, f, "a", "b")
	eventually(t, "b learned every route", func() bool {
		all, _ := b.router.List(context.Background())
		return len(all) == routes
	})
	if got := b.net.Stats().Received["advert"]; got < 3 {
		t.Fatalf("b received the table in %d messages, want at least 3 of at most %d routes", got, maxSolicitEvents)
	}
}

// Only a node itself can say everywhere that it left. A neighbour passing
// on a close takes away just the routes through it, so a lying neighbour
// cannot cut a node off.
func TestForgedCloseRemovesOnlyRoutesThroughTheLiar(t *testing.T) {
	f := memtunnel.NewFabric()
	a := startNode(t, f, "a", nodeOptions{})
	b := startNode(t, f, "b", nodeOptions{})
	m := newRawPeer(t, f, "m", "test")
	link(t, f, "a", "b", "m", "b")
	a.register(t, "greeter", "10.0.0.1:80")
	eventually(t, "b learns a's route", func() bool { return b.hasRouteVia("greeter", "a") })
	// m claims to see a, and that a left.
	m.peer(&networkpb.Node{Id: "m", Instance: "1", Peers: []*networkpb.Node{{Id: "a"}}})
	eventually(t, "b has m as peer", func() bool { return slices.ContainsFunc(b.net.Peers(), func(p Peer) bool { return p.ID == "m" }) })
	m.send(m.netOut, &networkpb.NetworkMessage{Network: "test", Body: &networkpb.NetworkMessage_Close{Close: &networkpb.Close{Id: "a"}}})
	eventually(t, "b passed the close on", func() bool { return b.net.Stats().Sent["close"] > 0 })
	if !b.hasRouteVia("greeter", "a") {
		t.Fatalf("a forged close removed a's own route at b:%s", describeRoutes(b.routes("greeter")))
	}
	if !slices.ContainsFunc(b.net.Peers(), func(p Peer) bool { return p.ID == "a" }) {
		t.Fatal("a forged close removed a from b's neighbours")
	}
}
