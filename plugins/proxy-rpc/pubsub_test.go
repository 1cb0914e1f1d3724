package proxyrpc_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/pubsubpb"
)

func subscribe(t *testing.T, cc *grpc.ClientConn, topic string) grpc.ServerStreamingClient[pubsubpb.Event] {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := pubsubpb.NewPubSubClient(cc).Subscribe(ctx, &pubsubpb.SubscribeRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil { // the subscription is in place
		t.Fatal(err)
	}
	return s
}

// TestPubSubAcrossNodes: a message published at one end of a chain of three
// nodes reaches the subscribers on every node exactly once, in order.
func TestPubSubAcrossNodes(t *testing.T) {
	c := newChain(t, "A", "B", "C")
	waitFor(t, "pubsub listeners", func() bool {
		return listensOn(t, c.tunnels["A"], "B", "pubsub") && listensOn(t, c.tunnels["B"], "C", "pubsub") && listensOn(t, c.tunnels["C"], "B", "pubsub") && listensOn(t, c.tunnels["B"], "A", "pubsub")
	})
	subs := map[string]grpc.ServerStreamingClient[pubsubpb.Event]{}
	for _, id := range []string{"A", "B", "C"} {
		subs[id] = subscribe(t, dial(t, c.addrs[id]), "news")
	}
	other := subscribe(t, dial(t, c.addrs["A"]), "other")

	pub := pubsubpb.NewPubSubClient(dial(t, c.addrs["C"]))
	var ids []string
	for _, text := range []string{"one", "two"} {
		resp, err := pub.Publish(t.Context(), &pubsubpb.PublishRequest{Topic: "news", Payload: []byte(text), Metadata: map[string]string{"k": text}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.GetId())
	}
	// A marker on the other topic, published after the news, shows nothing
	// more of news is on its way when it arrives at A.
	if _, err := pub.Publish(t.Context(), &pubsubpb.PublishRequest{Topic: "other", Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	for node, s := range subs {
		for i, text := range []string{"one", "two"} {
			ev, err := s.Recv()
			if err != nil {
				t.Fatalf("%s: %v", node, err)
			}
			if ev.GetId() != ids[i] || string(ev.GetPayload()) != text || ev.GetMetadata()["k"] != text || ev.GetOrigin() != "C" || ev.GetTopic() != "news" {
				t.Fatalf("%s got %v", node, ev)
			}
		}
	}
	if ev, err := other.Recv(); err != nil || string(ev.GetPayload()) != "end" {
		t.Fatalf("other topic: %v %v", ev, err)
	}
}

func TestPubSubRejectsEmptyTopic(t *testing.T) {
	_, addr := startProxy(t, "A", newTestHost(nil), nil)
	client := pubsubpb.NewPubSubClient(dial(t, addr))
	if _, err := client.Publish(t.Context(), &pubsubpb.PublishRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish: %v", err)
	}
	s, err := client.Subscribe(t.Context(), &pubsubpb.SubscribeRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("subscribe: %v", err)
	}
}
