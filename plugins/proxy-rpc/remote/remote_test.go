package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
)

// pair runs a Server with handler on node "A" of an in-memory fabric and
// returns a Dialer on node "B" and B's tunnel.
func pair(t *testing.T, maxMsg int, handler grpc.StreamHandler) (*Dialer, sdk.Tunnel) {
	t.Helper()
	f := memtunnel.NewFabric()
	a, err := f.NewNode("A")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.NewNode("B")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Link("A", "B"); err != nil {
		t.Fatal(err)
	}
	lis, err := a.Listen(t.Context(), Channel)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(handler, maxMsg, hclog.NewNullLogger())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Shutdown(time.Second)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		a.Close()
		b.Close()
	})
	d := &Dialer{Tunnel: func(context.Context) (sdk.Tunnel, error) { return b, nil }, MaxMessageSize: maxMsg}
	return d, b
}

func frame(b []byte) *rawcodec.Frame { return rawcodec.FrameOf(mem.SliceBuffer(b)) }

func bodyOf(f *rawcodec.Frame) []byte { return f.Buffers().Materialize() }

// TestCallRoundTrip sends metadata both ways, a message over ChunkSize in
// each direction, and a status with details, and checks all arrive whole.
func TestCallRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (ChunkSize*2+100)/16)
	d, _ := pair(t, 4<<20, func(_ any, ss grpc.ServerStream) error {
		if m, ok := grpc.MethodFromServerStream(ss); !ok || m != "/test.S/M" {
			return status.Errorf(codes.Internal, "method %q", m)
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		if got := md.Get("key-bin"); len(got) != 2 || got[0] != "\x00\xff" || got[1] != "b" {
			return status.Errorf(codes.Internal, "request metadata %v", md)
		}
		if _, ok := ss.Context().Deadline(); !ok {
			return status.Error(codes.Internal, "no deadline")
		}
		req := new(rawcodec.Frame)
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		if !bytes.Equal(bodyOf(req), big) {
			return status.Error(codes.Internal, "request body changed")
		}
		if err := ss.RecvMsg(new(rawcodec.Frame)); err != io.EOF {
			return status.Errorf(codes.Internal, "after the request: %v", err)
		}
		if err := ss.SendHeader(metadata.Pairs("h", "1")); err != nil {
			return err
		}
		if err := ss.SendMsg(frame(big)); err != nil {
			return err
		}
		ss.SetTrailer(metadata.Pairs("t-bin", "\x01"))
		st, _ := status.New(codes.FailedPrecondition, "no").WithDetails(&errdetails.ErrorInfo{Reason: "because"})
		return st.Err()
	})
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(t.Context(), metadata.Pairs("key-bin", "\x00\xff", "key-bin", "b")), time.Minute)
	defer cancel()
	cs, err := d.NewStream(ctx, "A", "/test.S/M")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(frame(big)); err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	h, err := cs.Header()
	if err != nil || h.Get("h")[0] != "1" {
		t.Fatalf("header %v, %v", h, err)
	}
	resp := new(rawcodec.Frame)
	if err := cs.RecvMsg(resp); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bodyOf(resp), big) {
		t.Fatal("response body changed")
	}
	err = cs.RecvMsg(resp)
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "no" || len(st.Details()) != 1 {
		t.Fatalf("status %v, details %v", st, st.Details())
	}
	if got := cs.Trailer().Get("t-bin"); len(got) != 1 || got[0] != "\x01" {
		t.Fatalf("trailer %v", cs.Trailer())
	}
}

// TestCancelReachesHandler cancels a call after its last request: the
// handler at the other proxy sees its context end.
func TestCancelReachesHandler(t *testing.T) {
	ended := make(chan error, 1)
	d, _ := pair(t, 1<<20, func(_ any, ss grpc.ServerStream) error {
		for ss.RecvMsg(new(rawcodec.Frame)) == nil {
		}
		<-ss.Context().Done()
		ended <- ss.Context().Err()
		return ss.Context().Err()
	})
	ctx, cancel := context.WithCancel(t.Context())
	cs, err := d.NewStream(ctx, "A", "/test.S/M")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(frame([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	cancel()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler's context ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never saw the cancel")
	}
}

// TestTooLargeMessage refuses a request over the limit with ResourceExhausted.
func TestTooLargeMessage(t *testing.T) {
	d, _ := pair(t, 1024, func(_ any, ss grpc.ServerStream) error {
		return ss.RecvMsg(new(rawcodec.Frame))
	})
	cs, err := d.NewStream(t.Context(), "A", "/test.S/M")
	if err != nil {
		t.Fatal(err)
	}
	cs.SendMsg(frame(make([]byte, 2048)))
	cs.CloseSend()
	if err := cs.RecvMsg(new(rawcodec.Frame)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ResourceExhausted", err)
	}
}

// TestMalformedSessionsRefused: sessions that do not start with a call
// frame are closed, and the server goes on serving.
func TestMalformedSessionsRefused(t *testing.T) {
	d, b := pair(t, 1<<20, func(_ any, ss grpc.ServerStream) error { return nil })
	for _, first := range []*sdk.Message{
		{Header: map[string]string{typeKey: "bogus"}},
		{Header: map[string]string{typeKey: frameCall}, Body: []byte{0xff, 0xff, 0xff}},
		{Header: map[string]string{typeKey: frameCall}}, // no method
	} {
		sess, err := b.Dial(t.Context(), Channel, sdk.DialOptions{Node: "A"})
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Send(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		m, err := sess.Recv(ctx)
		cancel()
		if err == nil {
			t.Fatalf("after %v the server answered %v instead of closing", first.Header, m.Header)
		}
		sess.Close()
	}
	cs, err := d.NewStream(t.Context(), "A", "/test.S/M")
	if err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	if err := cs.RecvMsg(new(rawcodec.Frame)); err != io.EOF {
		t.Fatalf("a good call after the bad ones: %v", err)
	}
}

// TestNoListenerIsUnavailable: a node whose proxy does not listen fails
// the call with Unavailable, which lets the forwarder try the next route.
func TestNoListenerIsUnavailable(t *testing.T) {
	d, _ := pair(t, 1<<20, func(_ any, ss grpc.ServerStream) error { return nil })
	if _, err := d.NewStream(t.Context(), "nobody", "/test.S/M"); status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
}

// TestCallsPerNodeWait: past MaxCallsPerNode, a call waits for a slot (up
// to its deadline) and gets one when an earlier call ends.
func TestCallsPerNodeWait(t *testing.T) {
	release := make(chan struct{})
	d, _ := pair(t, 1<<20, func(_ any, ss grpc.ServerStream) error {
		<-release
		return nil
	})
	d.MaxCallsPerNode = 1
	first, err := d.NewStream(t.Context(), "A", "/test.S/M")
	if err != nil {
		t.Fatal(err)
	}
	first.CloseSend()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := d.NewStream(ctx, "A", "/test.S/M"); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a second call with the only slot taken: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := first.RecvMsg(new(rawcodec.Frame)); err != io.EOF {
		t.Fatalf("first call: %v", err)
	}
	second, err := d.NewStream(t.Context(), "A", "/test.S/M")
	if err != nil {
		t.Fatalf("a call after the first ended: %v", err)
	}
	second.CloseSend()
	if err := second.RecvMsg(new(rawcodec.Frame)); err != io.EOF {
		t.Fatalf("second call: %v", err)
	}
}
