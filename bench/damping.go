package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/microhost/microhost/plugins/router-memory/damping"
	"github.com/microhost/microhost/plugins/router-memory/engine"
	"github.com/microhost/microhost/sdk"
)

// G12: a service flapping at 1 Hz (down half a second, up half a second)
// for ten minutes of simulated time, through the real router engine with
// the default damping, against the same engine without damping. The
// sample is damped adverts / undamped adverts.
func dampingMeasurement() *measurement {
	return &measurement{
		ID: "G12", Name: "adverts with damping, 1 Hz flapping service (10 min simulated)",
		Baseline: "same without damping", Unit: "x", Target: "<= 0.1x", Pass: atMost(0.1),
		Pair: func(ctx context.Context, _ int) (float64, error) {
			undamped, err := flapAdverts(ctx, nil)
			if err != nil {
				return 0, err
			}
			cfg := damping.DefaultConfig()
			damped, err := flapAdverts(ctx, &cfg)
			if err != nil {
				return 0, err
			}
			fmt.Printf("    adverts in 10 min: %d damped, %d undamped\n", damped, undamped)
			return float64(damped) / float64(undamped), nil
		},
	}
}

type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flapAdverts counts the adverts a 1 Hz flapping service causes.
func flapAdverts(ctx context.Context, damp *damping.Config) (int, error) {
	clock := &simClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e, err := engine.New(engine.Config{
		NodeID: "a", Network: "bench", Clock: clock.now, Damping: damp,
		FlushInterval: 200 * time.Millisecond,
		SyncInterval:  time.Hour, RouteTTL: 2 * time.Hour, // count announces only
	})
	if err != nil {
		return 0, err
	}
	defer e.Close()
	stream, err := e.Advertise()
	if err != nil {
		return 0, err
	}
	drained, cancel := context.WithCancel(ctx)
	cancel()
	adverts := 0
	count := func() {
		for {
			if _, err := stream.Next(drained); err != nil {
				return
			}
			adverts++
		}
	}
	step := func(d time.Duration) {
		for end := clock.now().Add(d); clock.now().Before(end); {
			clock.advance(50 * time.Millisecond)
			e.Tick()
		}
	}
	up := sdk.ServiceEvent{Type: sdk.Create, Service: sdk.Service{Name: "flappy", Address: "10.0.0.1:80"}}
	down := up
	down.Type = sdk.Delete
	if err := e.ApplyService(up); err != nil {
		return 0, err
	}
	for range 600 {
		if err := e.ApplyService(down); err != nil {
			return 0, err
		}
		step(500 * time.Millisecond)
		if err := e.ApplyService(up); err != nil {
			return 0, err
		}
		step(500 * time.Millisecond)
		count()
	}
	step(2 * time.Minute) // the suppressed route's final state goes out
	count()
	return adverts, nil
}
