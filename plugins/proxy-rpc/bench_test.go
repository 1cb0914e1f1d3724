package proxyrpc_test

import (
	"syscall"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// These benchmarks run the client, the proxies (over an in-memory tunnel)
// and the backend in one process, so they show what the proxy's own work
// costs without process hand-offs. cpu-ns/op is the CPU the whole process
// spent per call (or per 64 KiB message), client and backend included: it
// bounds what the overlay can reach on one machine (bench/README.md).

// reportCPU reports the process's CPU time per iteration once b's loop is
// done; call it right before the loop.
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		b.ReportMetric(float64((processCPU(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchUnary(b *testing.B, tc testgrpc.TestServiceClient) {
	req := &testpb.SimpleRequest{ResponseSize: 100, Payload: &testpb.Payload{Body: make([]byte, 100)}}
	done := reportCPU(b)
	for b.Loop() {
		if _, err := tc.UnaryCall(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
	done()
}

// benchStream sends 64 KiB messages on one client-streaming call, the
// shape of the overlay's G6.
func benchStream(b *testing.B, tc testgrpc.TestServiceClient) {
	const size = 64 << 10
	msg := &testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, size)}}
	stream, err := tc.StreamingInputCall(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	done := reportCPU(b)
	for b.Loop() {
		if err := stream.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		b.Fatal(err)
	}
	done()
	if got := resp.GetAggregatedPayloadSize(); int(got) != b.N*size {
		b.Fatalf("backend counted %d bytes, want %d", got, b.N*size)
	}
}

func BenchmarkUnaryDirect(b *testing.B) {
	addr, _ := startInterop(b)
	benchUnary(b, testgrpc.NewTestServiceClient(dial(b, addr)))
}

func BenchmarkUnaryLocalRoute(b *testing.B) {
	addr, _ := startInterop(b)
	host := newTestHost(nil)
	host.set(localRoute(interopService, addr, 1, "A"))
	_, proxyAddr := startProxy(b, "A", host, nil)
	benchUnary(b, testgrpc.NewTestServiceClient(dial(b, proxyAddr)))
}

func BenchmarkUnaryTwoNodes(b *testing.B) {
	_, cc := interopBehindA(b)
	benchUnary(b, testgrpc.NewTestServiceClient(cc))
}

func BenchmarkStreamDirect(b *testing.B) {
	addr, _ := startInterop(b)
	benchStream(b, testgrpc.NewTestServiceClient(dial(b, addr)))
}

func BenchmarkStreamTwoNodes(b *testing.B) {
	_, cc := interopBehindA(b)
	benchStream(b, testgrpc.NewTestServiceClient(cc))
}
