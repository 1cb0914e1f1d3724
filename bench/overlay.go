package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// overlay is two `microhost run` nodes on loopback, a and b, with the
// backend registered on a. The same client reaches the backend three ways:
// directly (the baseline), through a's proxy (a local route) and through
// b's proxy (proxy b → tunnel → proxy a → backend).
type overlay struct {
	net    *network
	stopBk func()
	conns  []*grpc.ClientConn

	direct, local, remote testpb.TestServiceClient
	// Addresses, for measurements that want connections of their own.
	backendAddr, proxyA, proxyB string
}

var overlayFixture = newShared(startOverlay)

func startOverlay(ctx context.Context) (*overlay, func(), error) {
	o := &overlay{}
	fail := func(err error) (*overlay, func(), error) {
		o.close()
		return nil, nil, err
	}
	var err error
	if o.backendAddr, o.stopBk, err = startBackend(); err != nil {
		return fail(err)
	}
	if o.net, err = newNetwork(); err != nil {
		return fail(err)
	}
	var udpA, udpB string
	for _, p := range []*string{&udpA, &udpB} {
		if *p, err = freeUDP(); err != nil {
			return fail(err)
		}
	}
	for _, p := range []*string{&o.proxyA, &o.proxyB} {
		if *p, err = freeTCP(); err != nil {
			return fail(err)
		}
	}
	service := fmt.Sprintf("service \"bench\" {\n  address   = %q\n  endpoints = [%q]\n}\n", o.backendAddr, testService)
	fmt.Println("  starting 2 nodes")
	a, err := o.net.start(ctx, nodeSpec{ID: "a", Listen: udpA, Proxy: o.proxyA, Extra: service})
	if err != nil {
		return fail(err)
	}
	if _, err := o.net.start(ctx, nodeSpec{ID: "b", Listen: udpB, Peers: []string{udpA}, Proxy: o.proxyB}); err != nil {
		return fail(err)
	}
	for addr, client := range map[string]*testpb.TestServiceClient{o.backendAddr: &o.direct, o.proxyA: &o.local, o.proxyB: &o.remote} {
		c, conn, err := dial(addr)
		if err != nil {
			return fail(err)
		}
		o.conns = append(o.conns, conn)
		*client = c
	}
	// Routes reach b, and then b's proxy's cache, a moment after start.
	for _, c := range []testpb.TestServiceClient{o.local, o.remote} {
		if err := waitCallable(ctx, c, 30*time.Second); err != nil {
			return fail(fmt.Errorf("%w\nlog of node a:\n%s", err, a.logTail()))
		}
	}
	return o, o.close, nil
}

func (o *overlay) close() {
	for _, c := range o.conns {
		c.Close()
	}
	if o.net != nil {
		o.net.close()
	}
	if o.stopBk != nil {
		o.stopBk()
	}
}

func waitCallable(ctx context.Context, c testpb.TestServiceClient, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unaryCall(ctx, c)
		if err == nil {
			return nil
		}
		if code := status.Code(err); (code != codes.NotFound && code != codes.Unavailable) || time.Now().After(deadline) {
			return fmt.Errorf("the backend is not callable through the overlay: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// payloadSize is the request and response payload of a unary call.
const payloadSize = 64

var request = &testpb.SimpleRequest{ResponseSize: payloadSize, Payload: &testpb.Payload{Body: make([]byte, payloadSize)}}

// callTimeout is the deadline of every unary call.
const callTimeout = 10 * time.Second

func unaryCall(ctx context.Context, c testpb.TestServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.UnaryCall(ctx, request)
	return err
}

// Sequential calls for the latency measurements.
const (
	warmupCalls  = 200
	latencyCalls = 2000
)

// sequentialLatencies makes n sequential calls after a warm-up and returns their
// latencies, sorted.
func sequentialLatencies(ctx context.Context, c testpb.TestServiceClient, n int) ([]time.Duration, error) {
	for range warmupCalls {
		if err := unaryCall(ctx, c); err != nil {
			return nil, err
		}
	}
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := unaryCall(ctx, c); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out, nil
}

// latencyRatio measures the baseline's and the subject's latencies back to
// back and returns the ratio of their p-th percentiles.
func latencyRatio(ctx context.Context, p float64, baseLabel string, base testpb.TestServiceClient, subjLabel string, subj testpb.TestServiceClient) (float64, error) {
	b, err := sequentialLatencies(ctx, base, latencyCalls)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", baseLabel, err)
	}
	s, err := sequentialLatencies(ctx, subj, latencyCalls)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", subjLabel, err)
	}
	recordLatencies(baseLabel, b)
	recordLatencies(subjLabel, s)
	fmt.Printf("    p%s: %s %v, %s %v\n", trimFloat(p), baseLabel, percentile(b, p), subjLabel, percentile(s, p))
	return float64(percentile(s, p)) / float64(percentile(b, p)), nil
}

func unaryP50Remote() *measurement {
	return &measurement{
		ID: "G1", Name: "unary p50 through 2 nodes", Baseline: "direct gRPC unary p50",
		Unit: "x", Target: "<= 3x (<= 5x for now)", Pass: atMost(5),
		Uses: []fixture{overlayFixture},
		Pair: func(ctx context.Context, _ int) (float64, error) {
			o, err := overlayFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			return latencyRatio(ctx, 50, "direct", o.direct, "2 nodes", o.remote)
		},
	}
}

func unaryP50Local() *measurement {
	return &measurement{
		ID: "G2", Name: "unary p50 through 1 node (local route)", Baseline: "direct gRPC unary p50",
		Unit: "x", Target: "<= 1.8x", Pass: atMost(1.8),
		Uses: []fixture{overlayFixture},
		Pair: func(ctx context.Context, _ int) (float64, error) {
			o, err := overlayFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			return latencyRatio(ctx, 50, "direct", o.direct, "1 node (local)", o.local)
		},
	}
}

// Closed-loop load for the throughput measurements: workers calling as
// fast as answers come, spread over a few connections as a real client
// with many callers would be.
const (
	loadConns   = 2
	loadWorkers = 32
	loadPeriod  = 2 * time.Second
	// openLoopPeriod is shorter: a subject that cannot keep up still has
	// every call of the period to finish.
	openLoopPeriod = time.Second
)

// maxQPS runs the closed-loop load against addr for d and returns the calls
// completed per second.
func maxQPS(ctx context.Context, addr string, d time.Duration) (float64, error) {
	var clients []testpb.TestServiceClient
	for range loadConns {
		c, conn, err := dial(addr)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		if err := unaryCall(ctx, c); err != nil { // connect outside the clock
			return 0, err
		}
		clients = append(clients, c)
	}
	var calls atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range loadWorkers {
		c := clients[w%len(clients)]
		wg.Go(func() {
			for time.Now().Before(end) {
				if err := unaryCall(ctx, c); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(calls.Load()) / time.Since(start).Seconds(), nil
}

func maxQPSRemote() *measurement {
	return &measurement{
		ID: "G4", Name: fmt.Sprintf("max unary QPS through 2 nodes (%d callers)", loadWorkers), Baseline: "direct max QPS",
		Unit: "x", Target: ">= 0.4x", Pass: atLeast(0.4),
		Uses: []fixture{overlayFixture},
		Pair: func(ctx context.Context, _ int) (float64, error) {
			o, err := overlayFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			direct, err := maxQPS(ctx, o.backendAddr, loadPeriod)
			if err != nil {
				return 0, fmt.Errorf("direct: %w", err)
			}
			remote, err := maxQPS(ctx, o.proxyB, loadPeriod)
			if err != nil {
				return 0, fmt.Errorf("2 nodes: %w", err)
			}
			fmt.Printf("    direct %.0f calls/s, 2 nodes %.0f calls/s\n", direct, remote)
			return remote / direct, nil
		},
	}
}

// openLoop calls at a fixed rate for d, whether or not answers keep up,
// and returns the latencies, sorted, and how many calls ran out of time.
// Each latency counts from when its call was due, so a subject that falls
// behind is charged for the wait (no coordinated omission). A call that
// exceeds its deadline counts with the time it took to give up: a lower
// bound of its latency.
func openLoop(ctx context.Context, addr string, rate float64, d time.Duration) ([]time.Duration, int, error) {
	var clients []testpb.TestServiceClient
	for range loadConns {
		c, conn, err := dial(addr)
		if err != nil {
			return nil, 0, err
		}
		defer conn.Close()
		if err := unaryCall(ctx, c); err != nil {
			return nil, 0, err
		}
		clients = append(clients, c)
	}
	n := int(rate * d.Seconds())
	out := make([]time.Duration, n)
	errs := make([]error, n)
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		c := clients[i%len(clients)]
		wg.Go(func() {
			errs[i] = unaryCall(ctx, c)
			out[i] = time.Since(due)
		})
	}
	wg.Wait()
	timedOut := 0
	for _, err := range errs {
		switch {
		case status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil:
			timedOut++
		case err != nil:
			return nil, 0, err
		}
	}
	slices.Sort(out)
	return out, timedOut, nil
}

// p99AtHalfLoad re-measures the direct saturation rate in every pair: on
// a shared machine the rate the backend can take moves within minutes, and
// a rate above it would measure the baseline's queue, not its latency.
func p99AtHalfLoad() *measurement {
	return &measurement{
		ID: "G3", Name: "unary p99 at 50% of direct saturation rate, through 2 nodes", Baseline: "direct p99 at that rate",
		Unit: "x", Target: "<= 4x", Pass: atMost(4),
		Uses: []fixture{overlayFixture},
		Pair: func(ctx context.Context, _ int) (float64, error) {
			o, err := overlayFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			saturation, err := maxQPS(ctx, o.backendAddr, openLoopPeriod)
			if err != nil {
				return 0, fmt.Errorf("direct saturation: %w", err)
			}
			rate := saturation / 2
			fmt.Printf("    direct saturation %.0f calls/s: calling at %.0f calls/s\n", saturation, rate)
			b, bLate, err := openLoop(ctx, o.backendAddr, rate, openLoopPeriod)
			if err != nil {
				return 0, fmt.Errorf("direct: %w", err)
			}
			s, sLate, err := openLoop(ctx, o.proxyB, rate, openLoopPeriod)
			if err != nil {
				return 0, fmt.Errorf("2 nodes: %w", err)
			}
			recordLatencies("direct at 50% load", b)
			recordLatencies("2 nodes at 50% load", s)
			fmt.Printf("    p99: direct %v, 2 nodes %v; calls past the %v deadline: direct %d of %d, 2 nodes %d of %d\n",
				percentile(b, 99), percentile(s, 99), callTimeout, bLate, len(b), sLate, len(s))
			return float64(percentile(s, 99)) / float64(percentile(b, 99)), nil
		},
	}
}
