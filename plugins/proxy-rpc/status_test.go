package proxyrpc_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// failingService fails every call with details and trailers, without
// sending headers (a trailers-only response).
type failingService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (failingService) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	grpc.SetTrailer(ctx, metadata.Pairs("x-why", "because", "x-bin-bin", "\x00\x01"))
	st, _ := status.New(codes.InvalidArgument, "bad ünïcode\n%request").WithDetails(&errdetails.ErrorInfo{Reason: "R", Domain: "d"})
	return nil, st.Err()
}

// TestErrorStatusDetailsAndTrailersPassThrough: an error status keeps its
// code, message and details, and its trailers reach the client.
func TestErrorStatusDetailsAndTrailersPassThrough(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, failingService{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)

	c := newChain(t, "A", "B")
	c.hosts["A"].set(localRoute(interopService, lis.Addr().String(), 1, "A"))
	c.hosts["B"].set(remoteRoute(interopService, "A", "A", 11))
	for _, node := range []string{"A", "B"} {
		cc := dial(t, c.addrs[node])
		waitRouted(t, cc)
		var trailer metadata.MD
		_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{}, grpc.Trailer(&trailer))
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || st.Message() != "bad ünïcode\n%request" {
			t.Fatalf("via %s: status %v", node, err)
		}
		if d := st.Details(); len(d) != 1 || !proto.Equal(d[0].(proto.Message), &errdetails.ErrorInfo{Reason: "R", Domain: "d"}) {
			t.Fatalf("via %s: details %v", node, d)
		}
		if strings.Join(trailer.Get("x-why"), ",") != "because" || strings.Join(trailer.Get("x-bin-bin"), ",") != "\x00\x01" {
			t.Fatalf("via %s: trailer %v", node, trailer)
		}
	}
}
