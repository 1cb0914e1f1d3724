package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/microhost/microhost/host/network/clock"
	"github.com/microhost/microhost/host/network/networkpb"
	routermemory "github.com/microhost/microhost/plugins/router-memory"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually polls cond for up to 10 s: no timing assertion, only a bound
// on how long a broken protocol may take to show it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type testNode struct {
	id     string
	tun    *memtunnel.Node
	router *routermemory.Router
	net    *Node
}

type nodeOptions struct {
	network      string
	clock        clock.Clock
	syncInterval time.Duration
	config       func(*Config)
	tunnel       func(sdk.Tunnel) sdk.Tunnel
}

// startNode runs the real router and the protocol over a memtunnel node.
func startNode(t *testing.T, f *memtunnel.Fabric, id string, o nodeOptions) *testNode {
	t.Helper()
	if o.network == "" {
		o.network = "test"
	}
	if o.syncInterval == 0 {
		o.syncInterval = 30 * time.Second
	}
	tun, err := f.NewNode(id)
	if err != nil {
		t.Fatal(err)
	}
	router := routermemory.New(nil)
	cfg, _ := json.Marshal(map[string]any{
		"flush_interval": "10ms", "sync_interval": o.syncInterval.String(), "damping": false,
	})
	if d := router.Configure(t.Context(), sdk.ConfigureRequest{Config: cfg, Node: sdk.NodeConfig{ID: id, Network: o.network}}); d.HasErrors() {
		t.Fatal(d.Err())
	}
	var tunnel sdk.Tunnel = tun
	if o.tunnel != nil {
		tunnel = o.tunnel(tun)
	}
	c := Config{
		NodeID: id, Network: o.network, Tunnel: tunnel, Router: router, Clock: o.clock,
		PeerInterval: 50 * time.Millisecond, LinkPollInterval: 20 * time.Millisecond, KeepaliveTimeout: time.Second,
	}
	if o.config != nil {
		o.config(&c)
	}
	n, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{id: id, tun: tun, router: router, net: n}
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

// stop is idempotent: tests stop nodes early to check a graceful close.
func (tn *testNode) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tn.net.Stop(ctx); err != nil {
		t.Errorf("stop %s: %v", tn.id, err)
	}
	tn.router.Close()
	tn.tun.Close()
}

func (tn *testNode) register(t *testing.T, service, address string) {
	t.Helper()
	r := sdk.Route{Service: service, Address: address, Router: tn.id, Network: "test", Link: sdk.LinkLocal, Metric: 1, Path: []string{tn.id}}
	if err := tn.router.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
}

func (tn *testNode) routes(service string) []sdk.Route {
	rs, err := tn.router.Lookup(context.Background(), sdk.Query{Service: service})
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		panic(err)
	}
	return rs
}

func (tn *testNode) hasRouteVia(service, gateway string) bool {
	return slices.ContainsFunc(tn.routes(service), func(r sdk.Route) bool { return r.Gateway == gateway })
}

func (tn *testNode) nodeIDs() []string {
	var ids []string
	for _, n := range tn.net.Nodes() {
		ids = append(ids, n.ID)
	}
	return ids
}

func link(t *testing.T, f *memtunnel.Fabric, pairs ...string) {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := f.Link(pairs[i], pairs[i+1]); err != nil {
			t.Fatal(err)
		}
	}
}

// rawPeer is a node that speaks the wire protocol by hand, to play an old
// or a lying peer.
type rawPeer struct {
	t       *testing.T
	tun     *memtunnel.Node
	network string
	netOut  sdk.Session
	ctlOut  sdk.Session
}

func newRawPeer(t *testing.T, f *memtunnel.Fabric, id, network string) *rawPeer {
	t.Helper()
	tun, err := f.NewNode(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	p := &rawPeer{t: t, tun: tun, network: network}
	if p.netOut, err = tun.Dial(t.Context(), ChannelNetwork, sdk.DialOptions{Mode: sdk.Multicast}); err != nil {
		t.Fatal(err)
	}
	if p.ctlOut, err = tun.Dial(t.Context(), ChannelControl, sdk.DialOptions{Mode: sdk.Multicast}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *rawPeer) sendBytes(s sdk.Session, body []byte) {
	p.t.Helper()
	if err := s.Send(p.t.Context(), &sdk.Message{Body: body}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) send(s sdk.Session, m proto.Message) {
	p.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendBytes(s, b)
}

// peer announces the raw node with the given graph below it.
func (p *rawPeer) peer(node *networkpb.Node) {
	p.send(p.netOut, &networkpb.NetworkMessage{Network: p.network, Body: &networkpb.NetworkMessage_Peer{Peer: &networkpb.Peer{Node: node}}})
}

func (p *rawPeer) advert(events ...*networkpb.Event) {
	p.send(p.ctlOut, &networkpb.ControlMessage{Network: p.network, Body: &networkpb.ControlMessage_Advert{Advert: &networkpb.Advert{Events: events}}})
}

func create(service, address, router string, path ...string) *networkpb.Event {
	return &networkpb.Event{Route: &networkpb.Route{Service: service, Address: address, Router: router, Metric: 1, Path: path}}
}

func describeRoutes(rs []sdk.Route) string {
	s := ""
	for _, r := range rs {
		s += fmt.Sprintf("\n  %s addr=%s router=%s gw=%s metric=%d path=%v", r.Service, r.Address, r.Router, r.Gateway, r.Metric, r.Path)
	}
	return s
}
