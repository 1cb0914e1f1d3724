package network

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/microhost/microhost/host/network/clock"
	"github.com/microhost/microhost/host/network/networkpb"
)

// fuzzNode is a node that is never started: enough to run the decoders and
// the validation of adverts.
func fuzzNode() *Node {
	n := &Node{
		cfg:        Config{NodeID: "me", Network: "test", KeepaliveTimeout: time.Second},
		log:        hclog.NewNullLogger(),
		clock:      clock.NewFake(time.Unix(1, 0)),
		neighbours: map[string]*neighbour{"s": {id: "s", reach: map[string]reach{"s": {}, "a": {depth: 1}}}},
		costs:      map[string]*peerCost{"s": {cost: 10}},
		tombstones: map[string]tombstone{},
		leaving:    map[string]*leaving{},
		withdrawn:  map[routeKey]withdrawn{},
		seen:       map[string]seenNode{},
		stats:      Stats{Sent: map[string]uint64{}, Received: map[string]uint64{}},
	}
	return n
}

func FuzzControlMessage(f *testing.F) {
	seed, _ := proto.Marshal(&networkpb.ControlMessage{Network: "test", Body: &networkpb.ControlMessage_Sync{Sync: &networkpb.Advert{
		Type: networkpb.AdvertType_ADVERT_TYPE_SYNC, Origin: "a",
		Events: []*networkpb.Event{{Route: &networkpb.Route{Service: "x", Router: "a", Path: []string{"a"}}}},
	}}})
	f.Add(seed)
	f.Add([]byte{0x12, 0x02, 0x2a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg networkpb.ControlMessage
		if proto.Unmarshal(data, &msg) != nil {
			return
		}
		p := msg.GetAdvert()
		if p == nil {
			p = msg.GetSync()
		}
		n := fuzzNode()
		a, err := advertFromPB(p, "s", time.Unix(1, 0))
		if err != nil {
			return
		}
		in, _ := n.inbound("s", a)
		if in == nil {
			return
		}
		for _, e := range in.Events {
			if e.Route.Gateway != "s" || e.Route.Router == "me" {
				t.Fatalf("inbound let through %+v", e.Route)
			}
		}
	})
}

func FuzzNetworkMessage(f *testing.F) {
	seed, _ := proto.Marshal(&networkpb.NetworkMessage{Network: "test", Body: &networkpb.NetworkMessage_Peer{Peer: &networkpb.Peer{
		Node: pbNode("s", pbNode("a", pbNode("b", pbNode("c", pbNode("d"))))),
	}}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg networkpb.NetworkMessage
		if proto.Unmarshal(data, &msg) != nil {
			return
		}
		node := msg.GetPeer().GetNode()
		if node == nil {
			node = msg.GetConnect().GetNode()
		}
		tr := treeFromPB(node, MaxDepth)
		for id, d := range tr.depths() {
			if d > MaxDepth {
				t.Fatalf("kept %s at depth %d", id, d)
			}
		}
		g := buildGraph(&tree{ID: "me", Peers: []*tree{tr}})
		for _, info := range g.Nodes {
			if info.Hops > MaxDepth {
				t.Fatalf("graph holds %s at %d hops", info.ID, info.Hops)
			}
		}
	})
}
