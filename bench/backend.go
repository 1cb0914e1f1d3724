package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// testService is the gRPC service behind every data-plane measurement:
// grpc's interop TestService, of which it implements the two methods the
// bench calls.
const testService = "grpc.testing.TestService"

type backend struct {
	testpb.UnimplementedTestServiceServer
}

// UnaryCall answers with a payload of the requested size.
func (backend) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

// StreamingInputCall counts the bytes the client streams.
func (backend) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var total int32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		total += int32(len(req.GetPayload().GetBody()))
	}
}

// startBackend serves the test service on a loopback port.
func startBackend() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, backend{})
	go s.Serve(ln)
	return ln.Addr().String(), s.Stop, nil
}

// dial returns a plaintext client of addr: the backend or a node's proxy.
func dial(addr string) (testpb.TestServiceClient, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return testpb.NewTestServiceClient(conn), conn, nil
}
