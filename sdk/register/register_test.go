package register_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/admin/admintest"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk/register"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock drives the node's registry: instances expire only when the
// test says time has passed.
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

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) registry.Timer {
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

// Advance moves time on and runs the timers that fell due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

// echoServer serves one made-up service next to health and reflection.
func echoServer() *grpc.Server {
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Echo", HandlerType: (*any)(nil)}, struct{}{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	return s
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func find(n *admintest.Node, name string) (registry.Instance, bool) {
	for _, i := range n.Registry.List() {
		if i.Name == name {
			return i, true
		}
	}
	return registry.Instance{}, false
}

type result struct{ err error }

func start(t *testing.T, ctx context.Context, addr, name, address string, s *grpc.Server, opts ...register.Option) chan result {
	done := make(chan result, 1)
	opts = append(opts, register.WithLogger(hclog.NewNullLogger()))
	go func() { done <- result{register.Service(ctx, addr, name, address, s, opts...)} }()
	return done
}

func wait(t *testing.T, done chan result) error {
	t.Helper()
	select {
	case r := <-done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("register.Service did not return within 10s")
		return nil
	}
}

func TestEndpointsLeaveOutGRPCServices(t *testing.T) {
	s := echoServer()
	if got := register.Endpoints(s); !slices.Equal(got, []string{"test.Echo"}) {
		t.Fatalf("Endpoints = %v", got)
	}
	if register.Endpoints(nil) != nil {
		t.Fatal("Endpoints(nil) is not empty")
	}
}

func TestKeepsRegisteredThenDeregisters(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	n := admintest.New(t, "a", "net", registry.WithClock(clock))
	addr := admintest.Serve(t, n)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const ttl = 900 * time.Millisecond // heartbeats every 300ms of real time
	done := start(t, ctx, addr, "echo", "127.0.0.1:7001", echoServer(), register.WithTTL(ttl),
		register.WithMetadata(map[string]string{"v": "1"}), register.WithEndpoints("extra.Svc"))

	eventually(t, "registered", func() bool { _, ok := find(n, "echo"); return ok })
	inst, _ := find(n, "echo")
	if !slices.Equal(inst.Endpoints, []string{"extra.Svc", "test.Echo"}) || inst.Metadata["v"] != "1" || inst.TTL != ttl {
		t.Fatalf("registered instance = %+v", inst)
	}

	// Move the node's time on by less than the ttl, several times: only
	// heartbeats arriving in between keep the instance alive.
	for range 3 {
		clock.Advance(ttl / 2)
		want := clock.Now().Add(ttl)
		eventually(t, "a heartbeat after the clock moved", func() bool {
			i, ok := find(n, "echo")
			return ok && i.Expires.Equal(want)
		})
	}

	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Service after ctx ended = %v, want nil", err)
	}
	if _, ok := find(n, "echo"); ok {
		t.Fatal("still registered after ctx ended")
	}
}

func TestRegistersAgainWhenTheNodeLostIt(t *testing.T) {
	n := admintest.New(t, "a", "net")
	addr := admintest.Serve(t, n)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := start(t, ctx, addr, "echo", "127.0.0.1:7001", nil, register.WithTTL(600*time.Millisecond))
	eventually(t, "registered", func() bool { _, ok := find(n, "echo"); return ok })

	// As if the node restarted and forgot its registry.
	if err := n.Registry.Deregister("echo", "127.0.0.1:7001"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "registered again", func() bool { _, ok := find(n, "echo"); return ok })
	cancel()
	wait(t, done)
}

func TestWaitsForTheNode(t *testing.T) {
	dir, err := os.MkdirTemp("", "mh")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	addr := "unix:" + filepath.Join(dir, "admin.sock")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := start(t, ctx, addr, "echo", "127.0.0.1:7001", nil)

	time.Sleep(300 * time.Millisecond) // let it fail at least once
	n := admintest.New(t, "a", "net")
	lis, err := admin.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(n)
	go srv.Serve(lis)
	defer srv.Stop()
	eventually(t, "registered once the node is up", func() bool { _, ok := find(n, "echo"); return ok })
	cancel()
	wait(t, done)
}

func TestRejectedRegistrationFails(t *testing.T) {
	n := admintest.New(t, "a", "net")
	addr := admintest.Serve(t, n)
	err := wait(t, start(t, t.Context(), addr, "echo", "no-port", nil))
	if err == nil || !strings.Contains(err.Error(), `address "no-port" is not HOST:PORT`) || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("Service with a bad address = %v", err)
	}
	if err := register.Service(t.Context(), "nonsense", "echo", "127.0.0.1:1", nil); err == nil {
		t.Fatal("a bad admin address was accepted")
	}
	if err := register.Service(t.Context(), addr, "echo", "127.0.0.1:1", nil, register.WithTTL(0)); err == nil {
		t.Fatal("a zero ttl was accepted")
	}
}
