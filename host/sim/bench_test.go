package sim

import (
	"context"
	"testing"
	"time"
)

// BenchmarkRouteChange50 reports, for 50 nodes, how long one service
// announcement and one withdrawal take to reach every node and how many
// control messages each costs per link (design goals: ≤ 2 s, ≤ 2 per link).
func BenchmarkRouteChange50(b *testing.B) {
	s, err := New(Config{Nodes: 50, Seed: 1, PeerInterval: 500 * time.Millisecond, LinkPollInterval: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	defer s.Stop(context.Background())
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if err := s.WaitGraph(ctx); err != nil {
		b.Fatal(err)
	}
	var converge time.Duration
	var perLink float64
	changes := 0
	for b.Loop() {
		for _, change := range []func(context.Context, int, string) (Result, error){s.Announce, s.Withdraw} {
			r, err := change(ctx, 0, "greeter")
			if err != nil {
				b.Fatal(err)
			}
			converge += r.Converge
			perLink += r.PerLink
			changes++
		}
	}
	b.ReportMetric(converge.Seconds()/float64(changes), "s/converge")
	b.ReportMetric(perLink/float64(changes), "msgs/link")
}
