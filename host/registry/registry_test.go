package registry

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock the test moves by hand; Advance runs the timers that
// fall due, in order, before it returns.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Time
	f    func()
	done bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var due *fakeTimer
		for len(c.timers) > 0 && due == nil {
			t := c.timers[0]
			c.timers = c.timers[1:]
			if t.done {
				continue
			}
			if t.at.After(end) {
				c.timers = append([]*fakeTimer{t}, c.timers...)
				break
			}
			t.done = true
			due = t
			c.now = t.at
		}
		if due == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		due.f()
	}
}

func svc(name, addr string, endpoints ...string) sdk.Service {
	return sdk.Service{Name: name, Address: addr, Endpoints: endpoints}
}

// next waits a generous while for the next event.
func next(t *testing.T, w sdk.ServiceWatcher) sdk.ServiceEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("watcher Next: %v", err)
	}
	return e
}

func expectEvent(t *testing.T, w sdk.ServiceWatcher, typ sdk.EventType, name, addr string) sdk.ServiceEvent {
	t.Helper()
	e := next(t, w)
	if e.Type != typ || e.Service.Name != name || e.Service.Address != addr {
		t.Fatalf("event = %v %s@%s, want %v %s@%s", e.Type, e.Service.Name, e.Service.Address, typ, name, addr)
	}
	return e
}

// expectNoEvent checks that nothing is queued. Every change in these tests
// is published before the call that made it returns, so nothing can be late.
func expectNoEvent(t *testing.T, w sdk.ServiceWatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if e, err := w.Next(ctx); err == nil {
		t.Fatalf("unexpected event %v %s@%s", e.Type, e.Service.Name, e.Service.Address)
	}
}

func names(insts []Instance) []string {
	var out []string
	for _, i := range insts {
		out = append(out, i.Name+"@"+i.Address)
	}
	return out
}

func newRegistry(t *testing.T, opts ...Option) *Registry {
	r := New(opts...)
	t.Cleanup(r.Close)
	return r
}

func watch(t *testing.T, r *Registry) sdk.ServiceWatcher {
	w, err := r.WatchServices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

func TestTTLExpiresWithoutHeartbeat(t *testing.T) {
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock))
	w := watch(t, r)

	if err := r.Register(svc("greeter", "127.0.0.1:5000"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w, sdk.Create, "greeter", "127.0.0.1:5000")
	if got := r.List()[0].Expires; !got.Equal(clock.Now().Add(10 * time.Second)) {
		t.Fatalf("expires = %v, want now+10s", got)
	}

	clock.Advance(6 * time.Second)
	if err := r.Heartbeat("greeter", "127.0.0.1:5000"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(6 * time.Second) // 12s after registering, 6s after the heartbeat
	if got := names(r.List()); len(got) != 1 {
		t.Fatalf("after heartbeat the instance is gone: %v", got)
	}
	expectNoEvent(t, w)

	clock.Advance(4 * time.Second) // 10s after the heartbeat
	expectEvent(t, w, sdk.Delete, "greeter", "127.0.0.1:5000")
	if got := r.List(); len(got) != 0 {
		t.Fatalf("expired instance still listed: %v", names(got))
	}
	if err := r.Heartbeat("greeter", "127.0.0.1:5000"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("heartbeat after expiry = %v, want ErrNotFound", err)
	}
}

func TestZeroTTLStaysUntilDeregister(t *testing.T) {
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock))
	w := watch(t, r)
	if err := r.Register(svc("a", "10.0.0.1:80"), 0); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w, sdk.Create, "a", "10.0.0.1:80")
	clock.Advance(1000 * time.Hour)
	if err := r.Heartbeat("a", "10.0.0.1:80"); err != nil {
		t.Fatalf("heartbeat of a ttl-less instance: %v", err)
	}
	if got := r.List(); len(got) != 1 || !got[0].Expires.IsZero() || got[0].Source != SourceAPI {
		t.Fatalf("list = %+v", got)
	}
	if err := r.Deregister("a", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w, sdk.Delete, "a", "10.0.0.1:80")
	if err := r.Deregister("a", "10.0.0.1:80"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("second deregister = %v, want ErrNotFound", err)
	}
}

func TestReregisterUpdatesOnlyOnChange(t *testing.T) {
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock))
	w := watch(t, r)
	r.Register(svc("a", "10.0.0.1:80", "pkg.A"), time.Minute)
	expectEvent(t, w, sdk.Create, "a", "10.0.0.1:80")

	clock.Advance(50 * time.Second)
	if err := r.Register(svc("a", "10.0.0.1:80", "pkg.A"), time.Minute); err != nil {
		t.Fatal(err)
	}
	expectNoEvent(t, w)
	clock.Advance(50 * time.Second) // re-registering refreshed the ttl
	if len(r.List()) != 1 {
		t.Fatal("re-registering did not refresh the ttl")
	}

	r.Register(svc("a", "10.0.0.1:80", "pkg.A", "pkg.B"), 0)
	e := expectEvent(t, w, sdk.Update, "a", "10.0.0.1:80")
	if !slices.Equal(e.Service.Endpoints, []string{"pkg.A", "pkg.B"}) {
		t.Fatalf("update endpoints = %v", e.Service.Endpoints)
	}
	clock.Advance(time.Hour) // ttl is now 0: never expires
	if len(r.List()) != 1 {
		t.Fatal("instance expired after its ttl was set to 0")
	}
}

func TestRegisterRejectsBadInput(t *testing.T) {
	r := newRegistry(t)
	for _, tc := range []struct {
		svc  sdk.Service
		ttl  time.Duration
		want string
	}{
		{svc("", "127.0.0.1:1"), 0, "not a valid service name"},
		{svc("bad name!", "127.0.0.1:1"), 0, "not a valid service name"},
		{svc("a", "127.0.0.1"), 0, "not HOST:PORT"},
		{svc("a", "127.0.0.1:http"), 0, "port \"http\""},
		{svc("a", "127.0.0.1:70000"), 0, "1-65535"},
		{svc("a", ":80"), 0, "no host"},
		{svc("a", "127.0.0.1:80"), -time.Second, "negative ttl"},
	} {
		err := r.Register(tc.svc, tc.ttl)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%+v, %v) = %v, want an error containing %q", tc.svc, tc.ttl, err, tc.want)
		}
	}
	if len(r.List()) != 0 {
		t.Fatal("a bad registration was stored")
	}
}

func TestWatchStartsWithSnapshot(t *testing.T) {
	r := newRegistry(t)
	r.Register(svc("b", "10.0.0.2:80"), 0)
	r.Register(svc("a", "10.0.0.1:80"), 0)
	r.Register(svc("a", "10.0.0.3:80"), 0)
	w := watch(t, r)
	expectEvent(t, w, sdk.Create, "a", "10.0.0.1:80")
	expectEvent(t, w, sdk.Create, "a", "10.0.0.3:80")
	expectEvent(t, w, sdk.Create, "b", "10.0.0.2:80")
	r.Deregister("b", "10.0.0.2:80")
	expectEvent(t, w, sdk.Delete, "b", "10.0.0.2:80")
}

func TestSlowWatcherIsDroppedNotBlocking(t *testing.T) {
	r := newRegistry(t, WithWatchQueue(2))
	r.Register(svc("s", "10.0.0.9:80"), 0)
	slow := watch(t, r)
	fast := watch(t, r)
	expectEvent(t, fast, sdk.Create, "s", "10.0.0.9:80")

	for _, addr := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"} {
		if err := r.Register(svc("a", addr), 0); err != nil { // must not block on slow
			t.Fatal(err)
		}
		expectEvent(t, fast, sdk.Create, "a", addr)
	}
	_, err := slow.Next(t.Context())
	if !errors.Is(err, ErrWatcherBehind) || !strings.Contains(err.Error(), "watch again") {
		t.Fatalf("slow watcher Next = %v, want ErrWatcherBehind", err)
	}

	// Watching again starts from a snapshot of everything.
	again := watch(t, r)
	for range 4 {
		next(t, again)
	}
	expectNoEvent(t, again)
}

func TestWatcherEnds(t *testing.T) {
	r := New()
	ctx, cancel := context.WithCancel(t.Context())
	byCtx, _ := r.WatchServices(ctx)
	stopped, _ := r.WatchServices(t.Context())
	closed, _ := r.WatchServices(t.Context())
	r.Register(svc("a", "10.0.0.1:80"), 0)

	cancel()
	// The Create may still come first: the watcher ends soon after ctx does.
	wait, done := context.WithTimeout(t.Context(), 10*time.Second)
	defer done()
	for {
		_, err := byCtx.Next(wait)
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) || wait.Err() != nil {
			t.Fatalf("Next after ctx ended = %v, want context.Canceled", err)
		}
		break
	}
	stopped.Stop()
	if _, err := stopped.Next(t.Context()); err == nil {
		t.Fatal("Next after Stop returned an event")
	}
	r.Close()
	// Closing delivers what was queued, then ends the watcher.
	expectEvent(t, closed, sdk.Create, "a", "10.0.0.1:80")
	if _, err := closed.Next(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	if err := r.Register(svc("b", "10.0.0.1:80"), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Close = %v, want ErrClosed", err)
	}
	if _, err := r.WatchServices(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchServices after Close = %v, want ErrClosed", err)
	}
}

func TestStaticWithoutCheck(t *testing.T) {
	r := newRegistry(t)
	w := watch(t, r)
	if err := r.AddStatic(svc("db", "10.0.0.5:5432"), nil); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, w, sdk.Create, "db", "10.0.0.5:5432")
	if err := r.Deregister("db", "10.0.0.5:5432"); err == nil || !strings.Contains(err.Error(), "declared in the config") {
		t.Fatalf("Deregister of a static service = %v", err)
	}
	if err := r.Register(svc("db", "10.0.0.5:5432"), 0); err == nil {
		t.Fatal("Register over a static service succeeded")
	}
	if err := r.AddStatic(svc("db", "10.0.0.5:5432"), nil); err == nil {
		t.Fatal("a duplicate static service was accepted")
	}
	if got := r.List(); len(got) != 1 || got[0].Source != SourceStatic || got[0].Health != HealthNone {
		t.Fatalf("list = %+v", got)
	}
	if err := r.AddStatic(svc("x", "10.0.0.5:1"), &Check{}); err == nil || !strings.Contains(err.Error(), "no checker") {
		t.Fatalf("a check without a checker = %v", err)
	}
	checked := newRegistry(t, WithChecker(func(context.Context, string, string) error { return nil }))
	if err := checked.AddStatic(svc("x", "10.0.0.5:1"), &Check{Interval: -time.Second}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("a negative interval = %v", err)
	}
	if err := checked.AddStatic(svc("x", "nowhere"), nil); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Fatalf("a static service without a port = %v", err)
	}
}
