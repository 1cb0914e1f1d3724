package proxyrpc_test

import (
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func benchUnary(b *testing.B, tc testgrpc.TestServiceClient) {
	req := &testpb.SimpleRequest{ResponseSize: 100, Payload: &testpb.Payload{Body: make([]byte, 100)}}
	for b.Loop() {
		if _, err := tc.UnaryCall(b.Context(), req); err != nil {
			b.Fatal(err)
		}
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
	addr, _ := startInterop(b)
	c := newChain(b, "A", "B")
	c.hosts["A"].set(localRoute(interopService, addr, 1, "A"))
	c.hosts["B"].set(remoteRoute(interopService, "A", "A", 11))
	benchUnary(b, testgrpc.NewTestServiceClient(dial(b, c.addrs["B"])))
}
