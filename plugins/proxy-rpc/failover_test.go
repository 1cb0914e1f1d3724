package proxyrpc_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
)

// tagInstance makes a server name itself in the x-instance header of every
// call, so a test can see which instance answered.
func tagInstance(name string) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			grpc.SetHeader(ctx, metadata.Pairs("x-instance", name))
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ss.SetHeader(metadata.Pairs("x-instance", name))
			return h(srv, ss)
		}),
	}
}

func instanceOf(t *testing.T, tc testgrpc.TestServiceClient, size int32) string {
	t.Helper()
	var header metadata.MD
	resp, err := tc.UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: size}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	if got := len(resp.GetPayload().GetBody()); got != int(size) {
		t.Fatalf("response of %d bytes, asked for %d: the request did not arrive intact", got, size)
	}
	return strings.Join(header.Get("x-instance"), ",")
}

// TestFailoverWhenBestInstanceDies: calls go to the lowest metric instance
// and, once it is killed, continue on the other without an error.
func TestFailoverWhenBestInstanceDies(t *testing.T) {
	best, stopBest := startInterop(t, tagInstance("best")...)
	backup, _ := startInterop(t, tagInstance("backup")...)
	host := newTestHost(nil)
	host.set(localRoute(interopService, best, 1, "A"))
	host.set(localRoute(interopService, backup, 5, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)

	for i := range 5 {
		if got := instanceOf(t, tc, int32(100+i)); got != "best" {
			t.Fatalf("call %d answered by %q, want the lowest metric instance", i, got)
		}
	}
	stopBest()
	for i := range 20 {
		if got := instanceOf(t, tc, int32(200+i)); got != "backup" {
			t.Fatalf("call %d after the kill answered by %q", i, got)
		}
	}
}

// startRefuser runs a server that reads a whole call and then fails it
// with Unavailable before any response, as an instance that is going
// away does; sendHeader makes it send headers first.
func startRefuser(t *testing.T, sendHeader bool) (addr string, calls chan int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	calls = make(chan int, 100)
	s := grpc.NewServer(grpc.ForceServerCodecV2(rawcodec.Codec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		n := 0
		for {
			f := new(rawcodec.Frame)
			if err := ss.RecvMsg(f); err == io.EOF {
				break
			} else if err != nil {
				return err
			}
			f.Free()
			n++
		}
		calls <- n
		if sendHeader {
			ss.SendHeader(metadata.Pairs("x-instance", "refuser"))
		}
		return status.Error(codes.Unavailable, "refuser: going away")
	}))
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), calls
}

// TestFailoverReplaysConsumedRequests: the first instance consumes the
// whole request and then fails; the proxy sends the same messages to the
// next instance (go-micro's failover re-read a consumed body and sent
// nothing).
func TestFailoverReplaysConsumedRequests(t *testing.T) {
	refuser, calls := startRefuser(t, false)
	good, _ := startInterop(t, tagInstance("good")...)
	host := newTestHost(nil)
	host.set(localRoute(interopService, refuser, 1, "A"))
	host.set(localRoute(interopService, good, 2, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)
	<-calls // the probe

	// Unary: the response size asked for in the request proves it arrived.
	if got := instanceOf(t, tc, 31415); got != "good" {
		t.Fatalf("answered by %q", got)
	}
	if n := <-calls; n != 1 {
		t.Fatalf("refuser saw %d messages, want 1", n)
	}

	// Client streaming: every message is replayed, in order.
	stream, err := tc.StreamingInputCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{27182, 8, 1828, 45904}
	for _, n := range sizes {
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetAggregatedPayloadSize(); got != 74922 {
		t.Fatalf("aggregated size %d, want 74922", got)
	}
	if n := <-calls; n != len(sizes) {
		t.Fatalf("refuser saw %d messages, want %d", n, len(sizes))
	}
}

// TestNoFailoverAfterResponse: once the client has a response (here its
// headers), the call's outcome is the instance's, not another instance's.
func TestNoFailoverAfterResponse(t *testing.T) {
	refuser, _ := startRefuser(t, true)
	good, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, refuser, 1, "A"))
	host.set(localRoute(interopService, good, 2, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)

	var header metadata.MD
	_, err := tc.UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: 1}, grpc.Header(&header))
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "refuser: going away" {
		t.Fatalf("got %v, want the refuser's status unchanged", err)
	}
	if got := header.Get("x-instance"); len(got) != 1 || got[0] != "refuser" {
		t.Fatalf("header %v", header)
	}
}

// TestAllRoutesDown: with every instance gone the call fails with
// Unavailable naming the service, quickly rather than at the deadline.
func TestAllRoutesDown(t *testing.T) {
	a, stopA := startInterop(t)
	b, stopB := startInterop(t)
	stopA()
	stopB()
	host := newTestHost(nil)
	host.set(localRoute(interopService, a, 1, "A"))
	host.set(localRoute(interopService, b, 2, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := tc.EmptyCall(ctx, &testpb.Empty{})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), `"interop"`) || !strings.Contains(st.Message(), "2 tried") {
		t.Fatalf("got %v", err)
	}
}

func streamIn(t *testing.T, tc testgrpc.TestServiceClient, messages, size int) (int32, error) {
	t.Helper()
	stream, err := tc.StreamingInputCall(t.Context())
	if err != nil {
		return 0, err
	}
	for range messages {
		if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, size)}}); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetAggregatedPayloadSize(), err
}

// TestLongStreamsPastTheReplayLimit: a client stream larger than the
// replay buffer arrives whole at a healthy instance after a dead one was
// skipped; past a refusing instance that consumed it, it cannot be
// replayed, and the client gets that instance's status instead of a
// partial replay.
func TestLongStreamsPastTheReplayLimit(t *testing.T) {
	dead, stopDead := startInterop(t)
	stopDead()
	good, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, dead, 1, "A"))
	host.set(localRoute(interopService, good, 3, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)
	if got, err := streamIn(t, tc, 10, 1<<20); err != nil || got != 10<<20 {
		t.Fatalf("past a dead instance: %d bytes arrived, %v", got, err)
	}

	refuser, calls := startRefuser(t, false)
	host.remove(localRoute(interopService, dead, 1, "A"))
	host.set(localRoute(interopService, refuser, 1, "A"))
	waitFor(t, "the refuser's route", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return err == nil && len(calls) == 1
	})
	<-calls
	_, err := streamIn(t, tc, 10, 1<<20)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "refuser") {
		t.Fatalf("got %v, want the refuser's status (refuser calls: %d)", err, len(calls))
	}
	if n := <-calls; n != 10 {
		t.Fatalf("refuser saw %d of 10 messages", n)
	}
}

// TestReplayWhileTheInstanceAnswers: a replayed stream whose instance
// answers each message at length before reading the next is read while it
// is replayed, rather than deadlocking on flow control.
func TestReplayWhileTheInstanceAnswers(t *testing.T) {
	refuser, calls := startRefuser(t, false)
	good, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, refuser, 1, "A"))
	host.set(localRoute(interopService, good, 2, "A"))
	_, addr := startProxy(t, "A", host, nil)
	cc := dial(t, addr)
	waitRouted(t, cc)
	<-calls // the probe

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const requests, requestSize, responseSize = 6, 512 << 10, 2 << 20
	for range requests {
		req := &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: responseSize}},
			Payload:            &testpb.Payload{Body: make([]byte, requestSize)},
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	for i := range requests {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if len(resp.GetPayload().GetBody()) != responseSize {
			t.Fatalf("response %d of %d bytes", i, len(resp.GetPayload().GetBody()))
		}
	}
	if n := <-calls; n != requests {
		t.Fatalf("refuser saw %d messages", n)
	}
}
