package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microhost/microhost/plugins/router-memory/damping"
	"github.com/microhost/microhost/sdk"
)

// clock is simulated time, safe for concurrent reads.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEngine(t *testing.T, c *clock, id string, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{NodeID: id, Network: "net", Clock: c.now}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// step advances simulated time in small steps, ticking every engine.
func step(c *clock, d time.Duration, engines ...*Engine) {
	const dt = 50 * time.Millisecond
	for end := c.now().Add(d); c.now().Before(end); {
		c.advance(dt)
		for _, e := range engines {
			e.Tick()
		}
	}
}

// pending returns the adverts queued on s without waiting.
func pending(t *testing.T, s *Stream) []*sdk.Advert {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out []*sdk.Advert
	for {
		a, err := s.Next(ctx)
		if err != nil {
			return out
		}
		out = append(out, a)
	}
}

func stream(t *testing.T, e *Engine) *Stream {
	t.Helper()
	s, err := e.Advertise()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// deliver processes at `to` whatever `from` has advertised.
func deliver(t *testing.T, from *Stream, to *Engine) {
	t.Helper()
	for _, a := range pending(t, from) {
		if err := to.Process(a); err != nil {
			t.Fatal(err)
		}
	}
}

func service(name, addr string) sdk.ServiceEvent {
	return sdk.ServiceEvent{Type: sdk.Create, Service: sdk.Service{Name: name, Address: addr, Endpoints: []string{name + ".v1.Svc"}}}
}

func mustApply(t *testing.T, e *Engine, ev sdk.ServiceEvent) {
	t.Helper()
	if err := e.ApplyService(ev); err != nil {
		t.Fatal(err)
	}
}

func TestLocalRoutesFromRegistry(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "a", nil)
	mustApply(t, e, service("greeter", "10.0.0.1:80"))
	rs, err := e.Lookup(sdk.Query{Service: "greeter"})
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Router != "a" || r.Network != "net" || r.Gateway != "" || r.Link != sdk.LinkLocal || r.Metric != 1 || r.Seq == 0 {
		t.Fatalf("local route %+v", r)
	}
	upd := service("greeter", "10.0.0.1:80")
	upd.Type = sdk.Update
	upd.Service.Metadata = map[string]string{"v": "2"}
	mustApply(t, e, upd)
	rs, _ = e.Lookup(sdk.Query{Service: "greeter"})
	if rs[0].Seq <= r.Seq || rs[0].Metadata["v"] != "2" {
		t.Fatalf("update: seq %d→%d metadata %v", r.Seq, rs[0].Seq, rs[0].Metadata)
	}
	del := upd
	del.Type = sdk.Delete
	mustApply(t, e, del)
	if _, err := e.Lookup(sdk.Query{Service: "greeter"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := e.ApplyService(del); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("delete of unknown instance: %v", err)
	}
	if err := e.ApplyService(sdk.ServiceEvent{Type: sdk.Create}); err == nil {
		t.Fatal("event without a name was accepted")
	}
}

func TestAnnounceIsBatchedAndCoalesced(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "a", nil)
	s := stream(t, e)
	mustApply(t, e, service("greeter", "10.0.0.1:80"))
	for i := range 3 {
		ev := service("greeter", "10.0.0.1:80")
		ev.Type = sdk.Update
		ev.Service.Metadata = map[string]string{"rev": fmt.Sprint(i)}
		mustApply(t, e, ev)
	}
	mustApply(t, e, service("billing", "10.0.0.2:80"))
	del := service("billing", "10.0.0.2:80")
	del.Type = sdk.Delete
	mustApply(t, e, del) // created and gone within one batch: nothing to say
	c.advance(150 * time.Millisecond)
	e.Tick()
	if got := pending(t, s); len(got) != 0 {
		t.Fatalf("%d adverts before the flush interval", len(got))
	}
	c.advance(60 * time.Millisecond)
	e.Tick()
	got := pending(t, s)
	if len(got) != 1 || got[0].Type != sdk.Announce || len(got[0].Events) != 1 {
		t.Fatalf("got %d adverts %+v, want one announce with one event", len(got), got)
	}
	ev := got[0].Events[0]
	if ev.Type != sdk.Create || ev.Route.Metadata["rev"] != "2" || ev.Route.Gateway != "a" || !slices.Equal(ev.Route.Path, []string{"a"}) {
		t.Fatalf("event %v %+v, want create of the latest state", ev.Type, ev.Route)
	}
	if a := got[0]; a.ID != "a" || a.TTL != 3*DefaultSyncInterval {
		t.Fatalf("advert id %q ttl %v", a.ID, a.TTL)
	}
}

func learned(svc, addr, origin, via string, seq uint64) sdk.Route {
	return sdk.Route{Service: svc, Address: addr, Router: origin, Gateway: via, Network: "net",
		Link: sdk.LinkNetwork, Metric: 10, Seq: seq, Path: []string{origin, via}}
}

func syncOf(via, origin string, routes ...sdk.Route) *sdk.Advert {
	a := &sdk.Advert{ID: via, Type: sdk.Sync, Origin: origin, TTL: time.Minute}
	for _, r := range routes {
		a.Events = append(a.Events, sdk.Event{Type: sdk.Create, Route: r})
	}
	return a
}

func TestSyncWithdrawsWhatIsMissing(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	r1 := learned("greeter", "10.0.0.1:80", "x", "p", 1)
	r2 := learned("greeter", "10.0.0.2:80", "x", "p", 1)
	other := learned("greeter", "10.0.0.2:80", "x", "q", 1) // same origin, via another peer
	if err := e.Process(syncOf("p", "x", r1, r2)); err != nil {
		t.Fatal(err)
	}
	if err := e.Process(syncOf("q", "x", other)); err != nil {
		t.Fatal(err)
	}
	if err := e.Process(syncOf("p", "x", r1)); err != nil {
		t.Fatal(err)
	}
	rs, _ := e.Lookup(sdk.Query{Router: "x"})
	var got []string
	for _, r := range rs {
		got = append(got, r.Gateway+"/"+r.Address)
	}
	slices.Sort(got)
	if fmt.Sprint(got) != "[p/10.0.0.1:80 q/10.0.0.2:80]" {
		t.Fatalf("after sync: %v, want r2 via p withdrawn only", got)
	}
	if err := e.Process(syncOf("p", "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Lookup(sdk.Query{Router: "x", Gateway: "p"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal("empty sync did not withdraw everything of x via p")
	}
}

func TestNewerSeqWinsAndStaleIsIgnored(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	announce := func(typ sdk.EventType, r sdk.Route) {
		t.Helper()
		if err := e.Process(&sdk.Advert{ID: "p", Type: sdk.Announce, TTL: time.Minute, Events: []sdk.Event{{Type: typ, Route: r}}}); err != nil {
			t.Fatal(err)
		}
	}
	r := learned("greeter", "10.0.0.1:80", "x", "p", 5)
	announce(sdk.Create, r)
	old := r
	old.Seq, old.Metric = 4, 99
	announce(sdk.Update, old)
	announce(sdk.Delete, old)
	rs, err := e.Lookup(sdk.Query{Service: "greeter"})
	if err != nil || rs[0].Metric != 10 || rs[0].Seq != 5 {
		t.Fatalf("stale update or delete applied: %+v %v", rs, err)
	}
	newer := r
	newer.Seq, newer.Metric = 6, 20
	announce(sdk.Update, newer)
	if rs, _ := e.Lookup(sdk.Query{Service: "greeter"}); rs[0].Metric != 20 {
		t.Fatalf("newer update ignored: %+v", rs[0])
	}
	announce(sdk.Delete, newer)
	if _, err := e.Lookup(sdk.Query{Service: "greeter"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal("delete not applied")
	}
	if st := e.Stats(); st.Stale != 2 {
		t.Fatalf("stale = %d, want 2", st.Stale)
	}
}

func TestLoopsAreNeverInstalled(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	viaMe := learned("a", "10.0.0.1:80", "x", "p", 1)
	viaMe.Path = []string{"x", "me", "p"}
	gwMe := learned("b", "10.0.0.1:80", "x", "me", 1)
	mine := learned("c", "10.0.0.1:80", "me", "p", 1)
	a := &sdk.Advert{ID: "p", Type: sdk.Announce}
	for _, r := range []sdk.Route{viaMe, gwMe, mine} {
		a.Events = append(a.Events, sdk.Event{Type: sdk.Create, Route: r})
	}
	if err := e.Process(a); err != nil {
		t.Fatal(err)
	}
	if n := len(e.List()); n != 0 {
		t.Fatalf("installed %d looping routes", n)
	}
}

func TestMalformedAdvertsAreReported(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	good := learned("greeter", "10.0.0.1:80", "x", "p", 1)
	bad := learned("", "10.0.0.2:80", "x", "p", 1)
	wrongOrigin := learned("greeter", "10.0.0.3:80", "y", "p", 1)
	err := e.Process(syncOf("p", "x", good, bad, wrongOrigin))
	if err == nil {
		t.Fatal("malformed sync accepted")
	}
	for _, want := range []string{"event 1", "event 2", `origin "y"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := len(e.List()); n != 1 {
		t.Fatalf("%d routes installed, want the well-formed one", n)
	}
	for _, a := range []*sdk.Advert{nil, {Type: sdk.Announce}, {ID: "p", Type: sdk.Sync}, {ID: "p", Type: 7}} {
		if err := e.Process(a); err == nil {
			t.Errorf("advert %+v accepted", a)
		}
	}
}

func TestLearnedRoutesExpireUnlessRefreshed(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	a := syncOf("p", "x", learned("greeter", "10.0.0.1:80", "x", "p", 1))
	a.TTL = 90 * time.Second
	if err := e.Process(a); err != nil {
		t.Fatal(err)
	}
	step(c, 60*time.Second, e)
	if err := e.Process(a); err != nil { // refreshed at 60 s: now lives to 150 s
		t.Fatal(err)
	}
	step(c, 85*time.Second, e)
	if _, err := e.Lookup(sdk.Query{Service: "greeter"}); err != nil {
		t.Fatalf("refreshed route gone at 145 s: %v", err)
	}
	step(c, 10*time.Second, e)
	if _, err := e.Lookup(sdk.Query{Service: "greeter"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal("route still there after its TTL without refresh")
	}
	if e.Stats().Expired != 1 {
		t.Fatalf("expired = %d", e.Stats().Expired)
	}
}

func TestPeriodicSyncPerOrigin(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", func(cfg *Config) { cfg.SyncInterval = 10 * time.Second })
	s := stream(t, e)
	mustApply(t, e, service("greeter", "10.0.0.1:80"))
	if err := e.Process(syncOf("p", "x", learned("billing", "10.0.0.9:80", "x", "p", 3))); err != nil {
		t.Fatal(err)
	}
	step(c, time.Second, e)
	pending(t, s)
	step(c, 9*time.Second, e)
	got := pending(t, s)
	origins := map[string][]string{}
	for _, a := range got {
		if a.Type != sdk.Sync || a.TTL != 30*time.Second {
			t.Fatalf("advert %+v, want syncs with ttl 30s", a)
		}
		for _, ev := range a.Events {
			origins[a.Origin] = append(origins[a.Origin], ev.Route.Service)
		}
	}
	if fmt.Sprint(origins) != "map[me:[greeter] x:[billing]]" {
		t.Fatalf("sync contents %v", origins)
	}
	// x goes away: the next sync says so with an empty sync of x, once.
	if err := e.Process(syncOf("p", "x")); err != nil {
		t.Fatal(err)
	}
	step(c, 10*time.Second, e)
	var empty []string
	for _, a := range pending(t, s) {
		if a.Type == sdk.Sync && len(a.Events) == 0 {
			empty = append(empty, a.Origin)
		}
	}
	if fmt.Sprint(empty) != "[x]" {
		t.Fatalf("empty syncs for %v, want [x]", empty)
	}
	step(c, 10*time.Second, e)
	for _, a := range pending(t, s) {
		if a.Origin == "x" {
			t.Fatal("x still synced after it was withdrawn")
		}
	}
}

// A node with no routes of its own says so with an empty sync at the first
// periodic sync (a previous run may have left routes at its peers) and when
// it loses its last route, not every interval.
func TestEmptySyncOfOwnOriginOnlyWhenNews(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", func(cfg *Config) { cfg.SyncInterval = 10 * time.Second })
	s := stream(t, e)
	syncs := func() []string {
		t.Helper()
		var out []string
		for _, a := range pending(t, s) {
			if a.Type == sdk.Sync {
				out = append(out, fmt.Sprintf("%s:%d", a.Origin, len(a.Events)))
			}
		}
		return out
	}
	step(c, 10*time.Second, e)
	if got := fmt.Sprint(syncs()); got != "[me:0]" {
		t.Fatalf("first periodic sync %s, want one empty sync of me", got)
	}
	step(c, 10*time.Second, e)
	if got := syncs(); len(got) != 0 {
		t.Fatalf("second periodic sync %v, want none", got)
	}
	mustApply(t, e, service("greeter", "10.0.0.1:80"))
	step(c, 10*time.Second, e)
	if got := fmt.Sprint(syncs()); got != "[me:1]" {
		t.Fatalf("sync with a route %s, want [me:1]", got)
	}
	del := service("greeter", "10.0.0.1:80")
	del.Type = sdk.Delete
	mustApply(t, e, del)
	step(c, 10*time.Second, e)
	if got := fmt.Sprint(syncs()); got != "[me:0]" {
		t.Fatalf("sync after the last route went %s, want [me:0]", got)
	}
	step(c, 10*time.Second, e)
	if got := syncs(); len(got) != 0 {
		t.Fatalf("sync after that %v, want none", got)
	}
}

func TestStrategies(t *testing.T) {
	for _, tc := range []struct {
		strategy Strategy
		want     string
	}{
		{All, "[greeter/10.0.0.1:80/me greeter/10.0.0.2:80/x greeter/10.0.0.3:80/x]"},
		{Best, "[greeter/10.0.0.1:80/me]"},
		{Local, "[greeter/10.0.0.1:80/me]"},
		{None, "[]"},
	} {
		t.Run(string(tc.strategy), func(t *testing.T) {
			c := newClock()
			e := newEngine(t, c, "me", func(cfg *Config) { cfg.Strategy = tc.strategy })
			mustApply(t, e, service("greeter", "10.0.0.1:80"))
			far := learned("greeter", "10.0.0.2:80", "x", "p", 1)
			near := far
			near.Gateway, near.Metric, near.Path = "q", 5, []string{"x", "q"}
			third := learned("greeter", "10.0.0.3:80", "x", "p", 1)
			for _, r := range []sdk.Route{far, near, third} {
				if err := e.Process(&sdk.Advert{ID: r.Gateway, Events: []sdk.Event{{Route: r}}}); err != nil {
					t.Fatal(err)
				}
			}
			step(c, time.Second, e)
			a, err := e.Solicit()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range a.Events {
				got = append(got, ev.Route.Service+"/"+ev.Route.Address+"/"+ev.Route.Router)
				if ev.Route.Address == "10.0.0.2:80" && (ev.Route.Metric != 5 || !slices.Equal(ev.Route.Path, []string{"x", "q", "me"})) {
					t.Errorf("advertised %+v, want the metric-5 path via q with me appended", ev.Route)
				}
			}
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("advertised %v, want %s", got, tc.want)
			}
		})
	}
}

// Two engines wired back to back in simulated time: B learns A's services,
// a lost withdrawal is repaired by the next sync, and A's routes expire at B
// when A falls silent.
func TestTwoNodes(t *testing.T) {
	c := newClock()
	mod := func(cfg *Config) { cfg.SyncInterval = 5 * time.Second }
	a := newEngine(t, c, "a", mod)
	b := newEngine(t, c, "b", mod)
	sa := stream(t, a)
	mustApply(t, a, service("greeter", "10.0.0.1:80"))
	mustApply(t, a, service("billing", "10.0.0.2:80"))
	step(c, time.Second, a, b)
	deliver(t, sa, b)
	if rs, err := b.Lookup(sdk.Query{Router: "a"}); err != nil || len(rs) != 2 || rs[0].Gateway != "a" {
		t.Fatalf("b learned %+v %v", rs, err)
	}
	del := service("billing", "10.0.0.2:80")
	del.Type = sdk.Delete
	mustApply(t, a, del)
	step(c, time.Second, a, b)
	pending(t, sa) // the withdrawal is lost on the way
	if _, err := b.Lookup(sdk.Query{Service: "billing"}); err != nil {
		t.Fatal("setup: billing should still be at b")
	}
	step(c, 4*time.Second, a, b)
	deliver(t, sa, b) // the periodic sync
	if _, err := b.Lookup(sdk.Query{Service: "billing"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal("sync did not withdraw the route whose withdrawal was lost")
	}
	step(c, 16*time.Second, a, b) // a's adverts no longer reach b: ttl 15 s
	if rs, err := b.Lookup(sdk.Query{Router: "a"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("routes of a silent origin did not expire: %+v", rs)
	}
}

// TestEqualPathHeardLaterChangesNothing: of two equal paths the one
// advertised first stays, whichever sorts first, so a node that hears an
// equal path later sends nothing; it moves to the other when the first goes.
func TestEqualPathHeardLaterChangesNothing(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "me", nil)
	s := stream(t, e)
	announced := func(when string) []string {
		t.Helper()
		step(c, time.Second, e)
		var paths []string
		for _, a := range pending(t, s) {
			if a.Type != sdk.Announce {
				continue
			}
			for _, ev := range a.Events {
				paths = append(paths, ev.Type.String()+" "+strings.Join(ev.Route.Path, ">"))
			}
		}
		t.Logf("%s: %v", when, paths)
		return paths
	}
	if err := e.Process(syncOf("q", "x", learned("greeter", "10.0.0.1:80", "x", "q", 1))); err != nil {
		t.Fatal(err)
	}
	if got := announced("path via q"); len(got) != 1 || !strings.HasSuffix(got[0], "x>q>me") {
		t.Fatalf("announced %v, want the path via q", got)
	}
	// Via p sorts before via q and costs the same.
	if err := e.Process(syncOf("p", "x", learned("greeter", "10.0.0.1:80", "x", "p", 1))); err != nil {
		t.Fatal(err)
	}
	if got := announced("equal path via p"); len(got) != 0 {
		t.Fatalf("an equal path re-advertised the route: %v", got)
	}
	if err := e.Process(syncOf("q", "x")); err != nil { // q no longer has it
		t.Fatal(err)
	}
	if got := announced("path via q gone"); len(got) != 1 || !strings.HasSuffix(got[0], "x>p>me") {
		t.Fatalf("announced %v, want the path via p", got)
	}
}

// flapAdverts counts the adverts and route events a flapping service causes
// in 10 minutes of simulated time (down for downFor, up for upFor, over and
// over), and reports whether the last event advertised was the route coming
// back up once the flapping stopped.
func flapAdverts(t *testing.T, damp *damping.Config, downFor, upFor time.Duration) (adverts, events int, finalUp bool) {
	c := newClock()
	e := newEngine(t, c, "a", func(cfg *Config) {
		cfg.Damping = damp
		cfg.SyncInterval = time.Hour // count announces only
		cfg.RouteTTL = 2 * time.Hour
	})
	s := stream(t, e)
	svc := service("flappy", "10.0.0.1:80")
	down := svc
	down.Type = sdk.Delete
	var last sdk.EventType
	count := func() {
		for _, a := range pending(t, s) {
			if a.Type != sdk.Announce {
				t.Fatalf("unexpected %s advert", advertKind(a.Type))
			}
			adverts++
			for _, ev := range a.Events {
				events++
				last = ev.Type
			}
		}
	}
	mustApply(t, e, svc)
	for c.now().Before(time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)) {
		mustApply(t, e, down)
		step(c, downFor, e)
		mustApply(t, e, svc)
		step(c, upFor, e)
		count()
	}
	step(c, 2*time.Minute, e) // quiet: the suppressed route comes back
	count()
	return adverts, events, last == sdk.Create || last == sdk.Update
}

func TestFlappingServiceIsDamped(t *testing.T) {
	for _, tc := range []struct {
		name           string
		downFor, upFor time.Duration
	}{
		{"down 1.5s up 1s", 1500 * time.Millisecond, time.Second},
		{"1 Hz restarts: down 0.5s up 0.5s", 500 * time.Millisecond, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			undampedAdverts, undampedEvents, _ := flapAdverts(t, nil, tc.downFor, tc.upFor)
			cfg := damping.DefaultConfig()
			dampedAdverts, dampedEvents, up := flapAdverts(t, &cfg, tc.downFor, tc.upFor)
			t.Logf("adverts: undamped %d, damped %d; route events: undamped %d, damped %d",
				undampedAdverts, dampedAdverts, undampedEvents, dampedEvents)
			if cycles := int(10 * time.Minute / (tc.downFor + tc.upFor)); undampedAdverts < cycles {
				t.Fatalf("setup: only %d undamped adverts in %d flaps", undampedAdverts, cycles)
			}
			if dampedAdverts*10 > undampedAdverts || dampedEvents*10 > undampedEvents {
				t.Fatal("damped adverts are more than 10% of undamped ones")
			}
			if !up {
				t.Fatal("after the flapping stopped the route's latest state (up) was not advertised")
			}
		})
	}
}

// routeEvents lists the types of the route events in ads.
func routeEvents(ads []*sdk.Advert) []sdk.EventType {
	var out []sdk.EventType
	for _, a := range ads {
		for _, ev := range a.Events {
			out = append(out, ev.Type)
		}
	}
	return out
}

func TestRestartDoesNotSuppress(t *testing.T) {
	c := newClock()
	cfg := damping.DefaultConfig()
	e := newEngine(t, c, "a", func(c *Config) {
		c.Damping = &cfg
		c.FlushInterval = 50 * time.Millisecond
	})
	s := stream(t, e)
	svc := service("greeter", "10.0.0.1:80")
	down := svc
	down.Type = sdk.Delete
	mustApply(t, e, svc)
	step(c, time.Second, e)
	pending(t, s)

	// One restart on a clean route: down and back 0.2 s later, both
	// advertised; the withdrawal is charged a full flap, short of suppress.
	mustApply(t, e, down)
	step(c, 200*time.Millisecond, e)
	if got := routeEvents(pending(t, s)); !slices.Equal(got, []sdk.EventType{sdk.Delete}) {
		t.Fatalf("after the withdrawal advertised %v, want one delete", got)
	}
	mustApply(t, e, svc)
	step(c, 200*time.Millisecond, e)
	if got := routeEvents(pending(t, s)); !slices.Equal(got, []sdk.EventType{sdk.Create}) {
		t.Fatalf("after the route came back advertised %v, want one create", got)
	}
	if st := e.Damping(); len(st) != 1 || st[0].Suppressed || st[0].Flaps != 1 || st[0].Penalty < 950 {
		t.Fatalf("damping after one restart: %+v, want one flap of about 1000, not suppressed", st)
	}

	for range 5 { // five more restarts, a minute apart, each 400 ms down
		step(c, time.Minute, e)
		pending(t, s)
		mustApply(t, e, down)
		step(c, 400*time.Millisecond, e)
		mustApply(t, e, svc)
		step(c, time.Second, e)
		a, _ := e.Solicit()
		if len(a.Events) != 1 {
			t.Fatal("restarted service is not advertised")
		}
	}
	for _, st := range e.Damping() {
		if st.Suppressed {
			t.Fatalf("suppressed after restarts: %+v", st)
		}
	}
}

func TestSlowAdvertReaderGetsSyncs(t *testing.T) {
	c := newClock()
	e := newEngine(t, c, "a", func(cfg *Config) { cfg.AdvertQueue = 4 })
	s := stream(t, e)
	for i := range 20 {
		mustApply(t, e, service(fmt.Sprintf("svc-%d", i), "10.0.0.1:80"))
		step(c, 250*time.Millisecond, e)
	}
	got := pending(t, s)
	if len(got) != 1 || got[0].Type != sdk.Sync || got[0].Origin != "a" || len(got[0].Events) != 20 {
		t.Fatalf("got %d adverts, first %+v; want one sync of all 20 routes", len(got), got[0])
	}
}

// 100 goroutines write, watch, advertise, process and look up at once on a
// real clock with Run going; afterwards nothing is left running.
func TestConcurrentUse(t *testing.T) {
	e, err := New(Config{NodeID: "me", Network: "net", FlushInterval: 5 * time.Millisecond,
		SyncInterval: 50 * time.Millisecond, WatchQueue: 16, AdvertQueue: 8, Damping: ptr(damping.DefaultConfig())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(ctx) }()

	var wg sync.WaitGroup
	for g := range 100 {
		wg.Go(func() {
			switch g % 5 {
			case 0: // registry writer
				for i := range 200 {
					ev := service(fmt.Sprintf("svc-%d", i%10), fmt.Sprintf("10.0.%d.%d:80", g, i%7))
					if i%3 == 2 {
						ev.Type = sdk.Delete
					}
					_ = e.ApplyService(ev)
				}
			case 1: // peer adverts
				for i := range 200 {
					r := learned(fmt.Sprintf("svc-%d", i%10), fmt.Sprintf("10.1.%d.%d:80", g, i%5), fmt.Sprintf("x%d", g%3), fmt.Sprintf("p%d", g), uint64(i))
					a := &sdk.Advert{ID: r.Gateway, Events: []sdk.Event{{Route: r}}}
					if i%50 == 49 {
						a = syncOf(r.Gateway, r.Router, r)
					}
					if err := e.Process(a); err != nil {
						t.Error(err)
						return
					}
				}
			case 2: // watcher
				w := e.Watch()
				defer w.Stop()
				for range 300 {
					if _, err := w.Next(ctx); err != nil {
						return
					}
				}
			case 3: // advert reader
				s, err := e.Advertise()
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Stop()
				for range 30 {
					if _, err := s.Next(ctx); err != nil {
						return
					}
				}
			case 4: // readers
				for i := range 200 {
					_, _ = e.Lookup(sdk.Query{Service: fmt.Sprintf("svc-%d", i%10)})
					if i%20 == 0 {
						_ = e.List()
						_, _ = e.Solicit()
						_ = e.Damping()
					}
				}
			}
		})
	}
	// Watchers and advert readers may wait for events that never come once
	// the writers finish; closing the engine releases them.
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	select {
	case <-writersDone:
	case <-time.After(20 * time.Second):
		e.Close()
		<-writersDone
	}
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	e.Close()
}

func ptr[T any](v T) *T { return &v }
