package registry

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/host/registry/grpccheck"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// serve starts a gRPC server on loopback; withHealth adds the standard
// health service and returns it so the test can flip its status.
func serve(t *testing.T, withHealth bool) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	var hs *health.Server
	if withHealth {
		hs = health.NewServer()
		healthpb.RegisterHealthServer(s, hs)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), hs
}

// nextChecked advances the clock one check interval at a time until the
// watcher yields an event, for at most 10 seconds.
func nextChecked(t *testing.T, clock *fakeClock, w sdk.ServiceWatcher, interval time.Duration) sdk.ServiceEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		e, err := w.Next(ctx)
		cancel()
		if err == nil {
			return e
		}
		clock.Advance(interval)
	}
	t.Fatalf("no registry event within 10s: %+v", listOf(w))
	return sdk.ServiceEvent{}
}

func TestStaticHealthCheckFollowsServer(t *testing.T) {
	addr, hs := serve(t, true)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock), WithChecker(grpccheck.Check))
	w := watch(t, r)
	check := &Check{Interval: 5 * time.Second, Timeout: 5 * time.Second}
	if err := r.AddStatic(svc("greeter", addr), check); err != nil {
		t.Fatal(err)
	}

	if e := nextChecked(t, clock, w, check.Interval); e.Type != sdk.Create || e.Service.Address != addr {
		t.Fatalf("first event = %+v, want Create", e)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if e := nextChecked(t, clock, w, check.Interval); e.Type != sdk.Delete {
		t.Fatalf("after NOT_SERVING: %+v, want Delete", e)
	}
	inst := r.List()[0]
	if inst.Health != HealthCritical || !strings.Contains(inst.LastError, "NOT_SERVING") {
		t.Fatalf("unhealthy instance = %+v", inst)
	}
	// A watcher that starts now does not see the unhealthy instance.
	late := watch(t, r)
	expectNoEvent(t, late)

	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if e := nextChecked(t, clock, w, check.Interval); e.Type != sdk.Create {
		t.Fatalf("healthy again: %+v, want Create", e)
	}
	if inst := r.List()[0]; inst.Health != HealthPassing || inst.LastError != "" {
		t.Fatalf("healthy instance = %+v", inst)
	}
}

func TestStaticHealthCheckNamedService(t *testing.T) {
	addr, hs := serve(t, true)
	hs.SetServingStatus("pkg.Greeter", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock), WithChecker(grpccheck.Check))
	w := watch(t, r)
	check := &Check{Interval: time.Second, GRPCService: "pkg.Greeter"}
	r.AddStatic(svc("greeter", addr), check)
	if e := nextChecked(t, clock, w, check.Interval); e.Type != sdk.Create {
		t.Fatalf("event = %+v, want Create", e)
	}
}

func TestStaticWithoutHealthServiceUsesTCP(t *testing.T) {
	addr, _ := serve(t, false)
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock), WithChecker(grpccheck.Check))
	w := watch(t, r)
	r.AddStatic(svc("plain", addr), &Check{Interval: time.Second})
	if e := nextChecked(t, clock, w, time.Second); e.Type != sdk.Create {
		t.Fatalf("event = %+v, want Create", e)
	}
}

func TestStaticUnreachableStaysInactive(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	clock := newFakeClock()
	r := newRegistry(t, WithClock(clock), WithChecker(grpccheck.Check))
	w := watch(t, r)
	r.AddStatic(svc("gone", addr), &Check{Interval: time.Second, Timeout: 5 * time.Second})

	deadline := time.Now().Add(10 * time.Second)
	for r.List()[0].Health == HealthPending && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	inst := r.List()[0]
	if inst.Health != HealthCritical || inst.LastError == "" {
		t.Fatalf("unreachable instance = %+v", inst)
	}
	expectNoEvent(t, w)
}

// listOf shows the registry state in a failure message.
func listOf(w sdk.ServiceWatcher) any { return w.(*watcher).r.List() }
