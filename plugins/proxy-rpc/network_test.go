package proxyrpc_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/forward"
)

const sixteenMiB = 16 << 20

func bigRoundTrip(t *testing.T, tc testgrpc.TestServiceClient) {
	t.Helper()
	body := make([]byte, sixteenMiB)
	for i := range body {
		body[i] = byte(i * 7)
	}
	resp, err := tc.UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: sixteenMiB, Payload: &testpb.Payload{Body: body}})
	if err != nil {
		t.Fatalf("16 MiB round trip: %v", err)
	}
	if got := len(resp.GetPayload().GetBody()); got != sixteenMiB {
		t.Fatalf("response of %d bytes", got)
	}
	// Full duplex echoes nothing, so check bytes both ways with a stream
	// whose response size follows the request's payload size.
	stream, err := tc.StreamingInputCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
		t.Fatal(err)
	}
	sum, err := stream.CloseAndRecv()
	if err != nil || sum.GetAggregatedPayloadSize() != sixteenMiB {
		t.Fatalf("16 MiB upload: %v, %d bytes arrived", err, sum.GetAggregatedPayloadSize())
	}
}

func TestSixteenMiBMessages(t *testing.T) {
	addr, _ := startInterop(t)
	t.Run("local", func(t *testing.T) {
		host := newTestHost(nil)
		host.set(localRoute(interopService, addr, 1, "A"))
		_, proxyAddr := startProxy(t, "A", host, nil)
		cc := dial(t, proxyAddr)
		waitRouted(t, cc)
		bigRoundTrip(t, testgrpc.NewTestServiceClient(cc))
	})
	t.Run("three hops", func(t *testing.T) {
		c := newChain(t, "A", "B", "C")
		c.hosts["A"].set(localRoute(interopService, addr, 1, "A"))
		c.hosts["B"].set(remoteRoute(interopService, "A", "A", 11))
		c.hosts["C"].set(remoteRoute(interopService, "B", "A", 21))
		cc := dial(t, c.addrs["C"])
		waitRouted(t, cc)
		bigRoundTrip(t, testgrpc.NewTestServiceClient(cc))
	})
}

// TestManyStreamsLeakNothing opens many concurrent streams across two
// nodes, closes them, and then shuts everything down: the streams share
// one tunnel session per node pair, and no goroutine or session is left.
func TestManyStreamsLeakNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs after every other cleanup

	streams := 1000
	if raceEnabled {
		streams = 500 // about 12 goroutines per stream on the path; the race detector caps them at 8128
	}
	c, cc := interopBehindA(t)
	tc := testgrpc.NewTestServiceClient(cc)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opened := make([]testgrpc.TestService_FullDuplexCallClient, streams)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range opened {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := tc.FullDuplexCall(ctx)
			if err == nil {
				err = s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i + 1)}}})
			}
			var resp *testpb.StreamingOutputCallResponse
			if err == nil {
				resp, err = s.Recv()
			}
			if err == nil && len(resp.GetPayload().GetBody()) != i+1 {
				err = errors.New("response of the wrong size: streams crossed")
			}
			opened[i] = s
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
	}
	// All streams are open at once here.
	if a, b := c.tunnels["A"].open.Load(), c.tunnels["B"].open.Load(); a != 1 || b != 1 {
		t.Fatalf("%d streams used %d sessions at A and %d at B, want one each", streams, a, b)
	}
	for _, s := range opened {
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("stream end: %v", err)
		}
	}
	for _, id := range []string{"A", "B"} {
		if err := c.proxies[id].Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "tunnel sessions to close", func() bool {
		return c.tunnels["A"].open.Load() == 0 && c.tunnels["B"].open.Load() == 0
	})
}

func TestUnknownServiceIsNotFound(t *testing.T) {
	host := newTestHost(nil)
	r := localRoute("known", "127.0.0.1:1", 1, "A")
	r.Endpoints = []string{"known.Service"}
	host.set(r)
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)

	_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "grpc.testing.TestService") {
		t.Fatalf("by method: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), forward.ServiceKey, "ghost")
	_, err = testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), `"ghost"`) {
		t.Fatalf("by metadata: %v", err)
	}
	ctx = metadata.AppendToOutgoingContext(t.Context(), forward.HopsKey, "many")
	_, err = testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"many"`) {
		t.Fatalf("bad hop count: %v", err)
	}
}

// TestServiceFromMethodAndMetadata: without a service authority, the
// proxy finds the service by the method's gRPC service name or by the
// micro-service metadata.
func TestServiceFromMethodAndMetadata(t *testing.T) {
	addr, _ := startInterop(t, tagInstance("real")...)
	host := newTestHost(nil)
	host.set(localRoute(interopService, addr, 1, "A"))
	r := localRoute("other", "127.0.0.1:1", 1, "A")
	r.Endpoints = nil
	host.set(r)
	_, proxyAddr := startProxy(t, "A", host, nil)
	cc := dial(t, proxyAddr, grpcAuthority(proxyAddr))
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)
	if got := instanceOf(t, tc, 3); got != "real" {
		t.Fatalf("by method: %q", got)
	}
	// micro-service overrides the authority.
	tc = testgrpc.NewTestServiceClient(dial(t, proxyAddr, grpcAuthority("other")))
	ctx := metadata.AppendToOutgoingContext(t.Context(), forward.ServiceKey, interopService)
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("by metadata: %v", err)
	}
}

// TestRoutingLoopIsRefused: two nodes whose routes point at each other
// bounce a call until max_hops, then refuse it with a clear status.
func TestRoutingLoopIsRefused(t *testing.T) {
	c := newChain(t, "A", "B")
	c.hosts["A"].set(remoteRoute(interopService, "B", "X", 5))
	c.hosts["B"].set(remoteRoute(interopService, "A", "X", 5))
	cc := dial(t, c.addrs["A"])
	waitRouted(t, cc)
	_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "max_hops") {
		t.Fatalf("got %v", err)
	}
}

// TestUnaryCallIsOneMessageEachWay: a unary call between two proxies costs
// about one tunnel message each way (HTTP/2 flushes its frames together),
// not one per HTTP/2 frame; every message is a process hand-off on each node
// it crosses, which is what a call's latency through the overlay is made of
// (bench/README.md).
func TestUnaryCallIsOneMessageEachWay(t *testing.T) {
	c, cc := interopBehindA(t)
	tc := testgrpc.NewTestServiceClient(cc)
	req := &testpb.SimpleRequest{ResponseSize: 100, Payload: &testpb.Payload{Body: make([]byte, 100)}}
	// The first calls also carry the connection's HTTP/2 preface and settings.
	for range 10 {
		if _, err := tc.UnaryCall(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	sentB, sentA := c.tunnels["B"].sends.Load(), c.tunnels["A"].sends.Load()
	const calls = 200
	for range calls {
		if _, err := tc.UnaryCall(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	// HTTP/2's writer flushes early now and then (about one call in four
	// under -race); one message per frame would be 2 out and 3 back.
	const most = 1.75
	out := float64(c.tunnels["B"].sends.Load()-sentB) / calls
	back := float64(c.tunnels["A"].sends.Load()-sentA) / calls
	t.Logf("tunnel messages per call: %.2f out, %.2f back", out, back)
	if out > most || back > most {
		t.Fatalf("tunnel messages per unary call: %.2f out, %.2f back; want at most %.1f each way", out, back, most)
	}
}

// TestRoutesFollowTheWatch: routes added, removed and resynced through the
// host's watch take effect without any call to the router.
func TestRoutesFollowTheWatch(t *testing.T) {
	addr, _ := startInterop(t)
	host := newTestHost(nil)
	_, proxyAddr := startProxy(t, "A", host, nil)
	tc := testgrpc.NewTestServiceClient(dial(t, proxyAddr))
	call := func() codes.Code {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return status.Code(err)
	}
	if got := call(); got != codes.NotFound {
		t.Fatalf("before the route: %v", got)
	}
	r := localRoute(interopService, addr, 1, "A")
	host.set(r)
	waitFor(t, "route to be used", func() bool { return call() == codes.OK })
	host.remove(r)
	waitFor(t, "route removal", func() bool { return call() == codes.NotFound })
	host.mu.Lock()
	host.routes[r.Hash()] = r // changed behind the watchers' back
	host.mu.Unlock()
	host.resync()
	waitFor(t, "resync", func() bool { return call() == codes.OK })
}

// TestBrokenWatchStartsOver: when the route watch breaks, the proxy
// watches again and starts from the table as it is then, so a route
// deleted meanwhile does not linger.
func TestBrokenWatchStartsOver(t *testing.T) {
	addr, _ := startInterop(t)
	host := newTestHost(nil)
	gone := localRoute("gone", addr, 1, "A")
	host.set(gone)
	_, proxyAddr := startProxy(t, "A", host, nil)
	tc := testgrpc.NewTestServiceClient(dial(t, proxyAddr, grpcAuthority("gone")))
	waitFor(t, "the route", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return err == nil
	})
	host.mu.Lock()
	delete(host.routes, gone.Hash()) // no event: the watch is about to break
	host.mu.Unlock()
	host.breakWatches()
	waitFor(t, "the proxy to forget the route", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return status.Code(err) == codes.NotFound
	})
}

// TestTunnelPluginRestart: when the tunnel goes away and the host hands out
// a new one, the proxy listens on the new one and calls flow again.
func TestTunnelPluginRestart(t *testing.T) {
	c, cc := interopBehindA(t)
	tc := testgrpc.NewTestServiceClient(cc)
	if _, err := tc.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}

	c.tunnels["A"].Close()
	restarted, err := c.fabric.NewNode("A")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Close() })
	if err := c.fabric.Link("A", "B"); err != nil {
		t.Fatal(err)
	}
	c.hosts["A"].setTunnel(&countingTunnel{Tunnel: restarted})
	waitFor(t, "calls through the new tunnel", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return err == nil
	})
}
