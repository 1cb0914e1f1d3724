package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/microhost/microhost/plugins/router-memory/damping"
	"github.com/microhost/microhost/sdk"
)

// BenchmarkProcess measures adverts processed per second: announces of 10
// route updates each from 20 peers over 1,000 services, with damping on.
func BenchmarkProcess(b *testing.B) {
	c := newClock()
	e, err := New(Config{NodeID: "me", Network: "net", Clock: c.now, Damping: ptr(damping.DefaultConfig())})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const perAdvert = 10
	adverts := make([]*sdk.Advert, 1000)
	for i := range adverts {
		peer := fmt.Sprintf("p%d", i%20)
		a := &sdk.Advert{ID: peer, Type: sdk.Announce, TTL: time.Minute}
		for j := range perAdvert {
			r := learned(fmt.Sprintf("svc-%d", (i*perAdvert+j)%1000), fmt.Sprintf("10.0.%d.%d:80", i%250, j), "x"+peer, peer, 0)
			a.Events = append(a.Events, sdk.Event{Type: sdk.Update, Route: r})
		}
		adverts[i] = a
	}
	seq := uint64(0)
	for b.Loop() {
		a := adverts[seq%uint64(len(adverts))]
		seq++
		for j := range a.Events {
			a.Events[j].Route.Seq = seq
			a.Events[j].Route.Metric = int64(seq % 7)
		}
		if err := e.Process(a); err != nil {
			b.Fatal(err)
		}
		if seq%100 == 0 {
			c.advance(time.Second)
			e.Tick()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adverts/s")
}
