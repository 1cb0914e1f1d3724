package pubsub

import (
	"context"
	"errors"
	"testing"
)

// mesh is a set of brokers whose sends reach the brokers linked to them,
// synchronously, like a flood over tunnel multicast.
type mesh struct {
	brokers map[string]*Broker
	links   map[string][]string
	sent    int
}

func newMesh(maxHops int, links map[string][]string) *mesh {
	n := &mesh{brokers: map[string]*Broker{}, links: links}
	for id := range links {
		n.brokers[id] = NewBroker(id, func(m Message) error {
			for _, peer := range n.links[id] {
				n.sent++
				if _, err := n.brokers[peer].Receive(m); err != nil {
					return err
				}
			}
			return nil
		}, maxHops)
	}
	return n
}

func next(t *testing.T, s *Subscription) Message {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // only what is queued already
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return m
}

func TestFloodReachesEveryNodeOnce(t *testing.T) {
	// A ring of four: every node has two paths to every other.
	n := newMesh(8, map[string][]string{"a": {"b", "d"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c", "a"}})
	subs := map[string]*Subscription{}
	for id, b := range n.brokers {
		s, err := b.Subscribe("news")
		if err != nil {
			t.Fatal(err)
		}
		subs[id] = s
	}
	other, _ := n.brokers["c"].Subscribe("other")
	id, err := n.brokers["a"].Publish(Message{Topic: "news", Payload: []byte("hi"), Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	for node, s := range subs {
		m := next(t, s)
		if m.ID != id || string(m.Payload) != "hi" || m.Origin != "a" || m.Metadata["k"] != "v" {
			t.Fatalf("%s got %+v", node, m)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s got a duplicate", node)
		}
	}
	if _, err := other.Next(canceled(t)); err == nil {
		t.Fatal("message crossed topics")
	}
	// Each node sends once to each of its 2 peers.
	if n.sent != 8 {
		t.Fatalf("%d sends for one message in a ring of 4", n.sent)
	}
}

func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}

func TestHopLimitStopsRelay(t *testing.T) {
	n := newMesh(2, map[string][]string{"a": {"b"}, "b": {"a", "c"}, "c": {"b", "d"}, "d": {"c"}})
	sc, _ := n.brokers["c"].Subscribe("t")
	sd, _ := n.brokers["d"].Subscribe("t")
	if _, err := n.brokers["a"].Publish(Message{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	next(t, sc)
	if _, err := sd.Next(canceled(t)); err == nil {
		t.Fatal("message went past the hop limit")
	}
}

func TestSlowSubscriberIsToldNotSilentlyDropped(t *testing.T) {
	b := NewBroker("a", func(Message) error { return nil }, 8)
	b.queueSize = 2
	s, _ := b.Subscribe("t")
	for range 5 {
		b.Publish(Message{Topic: "t"})
	}
	next(t, s)
	next(t, s)
	_, err := s.Next(t.Context())
	if !errors.Is(err, ErrSlow) || err.Error() != `subscriber fell behind on topic "t": 3 messages dropped` {
		t.Fatalf("got %v", err)
	}
	s.Close()
	if len(b.subs) != 0 {
		t.Fatal("closed subscription still registered")
	}
}

func TestBadInput(t *testing.T) {
	b := NewBroker("a", func(Message) error { return nil }, 8)
	if _, err := b.Publish(Message{}); err == nil {
		t.Error("publish without topic accepted")
	}
	if _, err := b.Subscribe(""); err == nil {
		t.Error("subscribe without topic accepted")
	}
	if _, err := b.Receive(Message{Topic: "t"}); err == nil {
		t.Error("message without id accepted")
	}
}

func TestSeenSetForgetsOldest(t *testing.T) {
	s := newSeenSet(2)
	s.add("1")
	s.add("2")
	s.add("3")
	if s.has("1") || !s.has("2") || !s.has("3") {
		t.Fatalf("%v", s.ids)
	}
}
