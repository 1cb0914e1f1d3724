package quictun

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestPickLinkPrefersLowestMeasuredRTT drives pickLink over hand-made
// links: the lowest measured RTT wins, an unmeasured link never beats a
// measured one, and peers that do not listen are never picked.
func TestPickLinkPrefersLowestMeasuredRTT(t *testing.T) {
	n := &Node{log: hclog.NewNullLogger(), links: map[string]*link{}}
	add := func(peer string, rtt time.Duration, channels ...string) {
		l := &link{node: n, peer: peer, channels: map[string]bool{}, up: true}
		l.ctx, l.cancel = context.WithCancelCause(context.Background())
		t.Cleanup(func() { l.cancel(nil) })
		l.rtt.Store(int64(rtt))
		for _, c := range channels {
			l.channels[c] = true
		}
		n.links[peer] = l
	}
	add("unmeasured", 0, "svc")
	add("slow", 80*time.Millisecond, "svc")
	add("fast", 5*time.Millisecond, "svc")
	add("fastest-but-deaf", time.Millisecond)
	l, err := n.pickLink("svc", "")
	if err != nil || l.peer != "fast" {
		t.Fatalf("picked %v, %v; want fast", l, err)
	}
	n.links["fast"].cancel(errors.New("down"))
	if l, _ := n.pickLink("svc", ""); l.peer != "slow" {
		t.Fatalf("with fast down picked %s; want slow (measured beats unmeasured)", l.peer)
	}
	delete(n.links, "slow")
	delete(n.links, "fast")
	if l, _ := n.pickLink("svc", ""); l.peer != "unmeasured" {
		t.Fatalf("only unmeasured left, picked %s", l.peer)
	}
	if _, err := n.pickLink("other", ""); !errors.Is(err, ErrNoListener) {
		t.Fatalf("unknown channel: %v", err)
	}
}
