package table

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
)

func route(svc, addr, router string, metric int64) sdk.Route {
	return sdk.Route{Service: svc, Address: addr, Router: router, Network: "net", Link: sdk.LinkLocal, Metric: metric}
}

func TestCreateDuplicateUpdateDelete(t *testing.T) {
	tb := New()
	r := route("greeter", "10.0.0.1:80", "a", 1)
	if err := tb.Create(r); err != nil {
		t.Fatal(err)
	}
	r2 := r
	r2.Metric = 9 // the hash leaves the metric out: still the same route
	if err := tb.Create(r2); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate create: got %v, want ErrDuplicate", err)
	}
	if ev, changed := tb.Update(r2); ev != sdk.Update || !changed {
		t.Fatalf("update: got %v %v", ev, changed)
	}
	if got, _ := tb.Get(r.Hash()); got.Metric != 9 {
		t.Fatalf("metric after update = %d, want 9", got.Metric)
	}
	if _, changed := tb.Update(r2); changed {
		t.Fatal("identical update reported a change")
	}
	other := route("greeter", "10.0.0.2:80", "a", 1)
	if ev, _ := tb.Update(other); ev != sdk.Create {
		t.Fatalf("update of a missing route: got %v, want create", ev)
	}
	if _, err := tb.Delete(r); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Delete(r); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("delete of a missing route: got %v, want ErrNotFound", err)
	}
	if n := tb.Len(); n != 1 {
		t.Fatalf("len = %d, want 1", n)
	}
}

func TestLookupCombinationsAndOrder(t *testing.T) {
	tb := New()
	routes := []sdk.Route{
		route("greeter", "10.0.0.1:80", "a", 5),
		route("greeter", "10.0.0.2:80", "b", 1),
		route("greeter", "10.0.0.3:80", "b", 3),
		route("billing", "10.0.0.4:80", "b", 2),
	}
	routes[2].Gateway, routes[2].Link = "c", sdk.LinkNetwork
	for _, r := range routes {
		if err := tb.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		q    sdk.Query
		want []string // addresses, in order
	}{
		{sdk.Query{Service: "greeter"}, []string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80"}},
		{sdk.Query{Router: "b"}, []string{"10.0.0.2:80", "10.0.0.4:80", "10.0.0.3:80"}},
		{sdk.Query{Service: "greeter", Router: "b"}, []string{"10.0.0.2:80", "10.0.0.3:80"}},
		{sdk.Query{Gateway: "c"}, []string{"10.0.0.3:80"}},
		{sdk.Query{Link: sdk.LinkLocal, Service: "greeter"}, []string{"10.0.0.2:80", "10.0.0.1:80"}},
		{sdk.Query{Address: "10.0.0.4:80", Network: "net"}, []string{"10.0.0.4:80"}},
		{sdk.Query{}, []string{"10.0.0.2:80", "10.0.0.4:80", "10.0.0.3:80", "10.0.0.1:80"}},
	}
	for _, c := range cases {
		got, err := tb.Lookup(c.q)
		if err != nil {
			t.Fatalf("%+v: %v", c.q, err)
		}
		var addrs []string
		for _, r := range got {
			addrs = append(addrs, r.Address)
		}
		if fmt.Sprint(addrs) != fmt.Sprint(c.want) {
			t.Errorf("lookup %+v = %v, want %v", c.q, addrs, c.want)
		}
	}
	_, err := tb.Lookup(sdk.Query{Service: "nope", Router: "b"})
	if !errors.Is(err, sdk.ErrNotFound) || !strings.Contains(err.Error(), `service="nope"`) {
		t.Fatalf("unknown lookup: got %v, want ErrNotFound naming the query", err)
	}
}

func TestWatchEventsInOrder(t *testing.T) {
	tb := New()
	existing := route("existing", "10.0.0.9:80", "a", 1)
	_ = tb.Create(existing)
	w := tb.Watch()
	defer w.Stop()
	ctx := t.Context()
	// A new watcher starts from the whole table.
	ev, err := w.Next(ctx)
	if err != nil || ev.Type != sdk.Resync || len(ev.Snapshot) != 1 || ev.Snapshot[0].Service != "existing" {
		t.Fatalf("first event: %v %+v %v, want a resync of the table", ev.Type, ev.Snapshot, err)
	}
	r := route("greeter", "10.0.0.1:80", "a", 1)
	_ = tb.Create(r)
	r.Metric = 2
	tb.Update(r)
	_, _ = tb.Delete(r)
	for _, want := range []sdk.EventType{sdk.Create, sdk.Update, sdk.Delete} {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != want || ev.Route.Service != "greeter" {
			t.Fatalf("got %v %q, want %v", ev.Type, ev.Route.Service, want)
		}
	}
	w.Stop()
	if _, err := w.Next(ctx); !errors.Is(err, ErrWatchStopped) {
		t.Fatalf("after stop: %v", err)
	}
}

// A watcher that never reads must not stall writers; when it finally reads it
// gets one Resync with the whole table, then the events that follow.
func TestStalledWatcherDoesNotBlockWrites(t *testing.T) {
	tb := New(WithWatchQueue(64))
	w := tb.Watch()
	defer w.Stop()
	const n = 100_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			_ = tb.Create(route(fmt.Sprintf("svc-%d", i%1000), fmt.Sprintf("10.%d.%d.%d:80", i>>16, (i>>8)&255, i&255), "a", 1))
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("writes stalled behind a watcher that does not read")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != sdk.Resync || len(ev.Snapshot) != n {
		t.Fatalf("got %v with %d routes, want resync with %d", ev.Type, len(ev.Snapshot), n)
	}
	extra := route("late", "10.255.0.1:80", "a", 1)
	_ = tb.Create(extra)
	ev, err = w.Next(ctx)
	if err != nil || ev.Type != sdk.Create || ev.Route.Service != "late" {
		t.Fatalf("after resync: %v %v, want create of late", ev.Type, err)
	}
}

func TestNextHonoursContext(t *testing.T) {
	tb := New()
	w := tb.Watch()
	defer w.Stop()
	if ev, err := w.Next(t.Context()); err != nil || ev.Type != sdk.Resync {
		t.Fatalf("first event: %v %v", ev.Type, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func BenchmarkLookupByService(b *testing.B) {
	tb := New()
	const routes, services = 100_000, 10_000
	for i := range routes {
		_ = tb.Create(route(fmt.Sprintf("svc-%d", i%services), fmt.Sprintf("addr-%d", i), fmt.Sprintf("node-%d", i%50), int64(i%7)))
	}
	names := make([]string, services)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%d", i)
	}
	i := 0
	for b.Loop() {
		if _, err := tb.Lookup(sdk.Query{Service: names[i%services]}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
