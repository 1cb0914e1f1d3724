package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/microhost/microhost/plugins/proxy-rpc/callpb"
	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/sdk"
)

// cancelTimeout bounds sending the cancel frame of an abandoned call.
const cancelTimeout = time.Second

// DefaultMaxCallsPerNode bounds the calls in flight to one next-hop node.
// It stays below what a node queues for its proxy to take up (the sdk's
// data path holds 1024 accepted sessions), so that under overload calls
// wait here, for as long as their deadline allows, instead of being refused
// there.
const DefaultMaxCallsPerNode = 512

// Dialer opens calls to other nodes' proxies.
type Dialer struct {
	// Tunnel returns the tunnel to open sessions on.
	Tunnel func(context.Context) (sdk.Tunnel, error)
	// MaxMessageSize bounds a response message.
	MaxMessageSize int
	// MaxCallsPerNode bounds the calls in flight to one node; 0 means
	// DefaultMaxCallsPerNode.
	MaxCallsPerNode int

	mu    sync.Mutex
	slots map[string]chan struct{} // by node: one token per call in flight
}

// acquire waits for a call slot to node; release gives it back.
func (d *Dialer) acquire(ctx context.Context, node string) (release func(), err error) {
	d.mu.Lock()
	if d.slots == nil {
		d.slots = make(map[string]chan struct{})
	}
	slots := d.slots[node]
	if slots == nil {
		n := d.MaxCallsPerNode
		if n <= 0 {
			n = DefaultMaxCallsPerNode
		}
		slots = make(chan struct{}, n)
		d.slots[node] = slots
	}
	d.mu.Unlock()
	select {
	case slots <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-slots }) }, nil
	case <-ctx.Done():
		return nil, grpcstatus.FromContextError(ctx.Err()).Err()
	}
}

// NewStream calls method on the proxy of node, with the outgoing metadata
// of ctx. The call lives until ctx ends or its trailer arrives; as with
// grpc.ClientConn.NewStream, cancel ctx once done with the stream. Errors
// are gRPC statuses; a call that never reached the other proxy fails with
// Unavailable.
func (d *Dialer) NewStream(ctx context.Context, node, method string) (grpc.ClientStream, error) {
	tun, err := d.Tunnel(ctx)
	if err != nil {
		return nil, grpcstatus.Errorf(codes.Unavailable, "no tunnel: %v", err)
	}
	call := &callpb.Call{Method: method}
	md, _ := metadata.FromOutgoingContext(ctx)
	call.Metadata = mdToPB(md)
	if dl, ok := ctx.Deadline(); ok {
		call.Timeout = durationpb.New(time.Until(dl))
	}
	first, err := control(frameCall, call)
	if err != nil {
		return nil, grpcstatus.Errorf(codes.Internal, "encode call: %v", err)
	}
	release, err := d.acquire(ctx, node)
	if err != nil {
		return nil, err
	}
	sess, err := tun.Dial(ctx, Channel, sdk.DialOptions{Mode: sdk.Unicast, Node: node})
	if err != nil {
		release()
		return nil, sessionError(ctx, "open a session to node "+node, err)
	}
	s := &clientStream{ctx: ctx, sess: sess, release: release, node: node, body: bodyReader{max: d.MaxMessageSize}}
	if err := s.sess.Send(ctx, first); err != nil {
		err = s.endReason(err)
		s.closeSession()
		return nil, sessionError(ctx, "send the call to node "+node, err)
	}
	context.AfterFunc(ctx, s.abandon)
	return s, nil
}

// endReason returns why the tunnel ended a session that a send found
// ended, which the tunnel says in the session's last frame; sendErr when it
// does not say. Only for a session nothing else reads.
func (s *clientStream) endReason(sendErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	_, err := s.sess.Recv(ctx)
	if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return sendErr
	}
	return err
}

// sessionError turns a session failure into the call's status. Unavailable
// lets the forwarder try another route.
func sessionError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return grpcstatus.FromContextError(ctx.Err()).Err()
	}
	if _, ok := grpcstatus.FromError(err); ok {
		return err
	}
	return grpcstatus.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// clientStream is a call forwarded over a session; it implements
// grpc.ClientStream for the forwarder. SendMsg and CloseSend may run
// alongside Header, RecvMsg and Trailer, as with gRPC.
type clientStream struct {
	ctx     context.Context
	sess    sdk.Session
	release func() // gives back the call's slot at the node
	node    string

	sendMu    sync.Mutex // keeps a message's chunks together
	sentEnd   bool       // under sendMu
	cancelled bool       // under sendMu
	finished  atomic.Bool

	// Read side, used by one goroutine at a time.
	body       bodyReader
	headerRead bool
	header     metadata.MD
	pending    *sdk.Message // a frame Header read that was not the header
	trailer    metadata.MD
	done       bool
	result     error // io.EOF for a call that succeeded
}

var _ grpc.ClientStream = (*clientStream)(nil)

func (s *clientStream) Context() context.Context { return s.ctx }

func (s *clientStream) send(m *sdk.Message) error { return s.sess.Send(s.ctx, m) }

func (s *clientStream) SendMsg(m any) error {
	f, ok := m.(*rawcodec.Frame)
	if !ok {
		return grpcstatus.Errorf(codes.Internal, "proxy: cannot forward a %T", m)
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sentEnd || s.cancelled || s.finished.Load() {
		return io.EOF
	}
	if err := sendBody(s.send, f); err != nil {
		// As with gRPC, the call's status comes from RecvMsg.
		return io.EOF
	}
	return nil
}

func (s *clientStream) CloseSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sentEnd || s.cancelled || s.finished.Load() {
		return nil
	}
	s.sentEnd = true
	if m, err := control(frameEnd, nil); err == nil {
		_ = s.send(m) // a broken session shows in RecvMsg
	}
	return nil
}

// abandon runs when the call's context ends: a call still running is
// cancelled at the other proxy, and the session is closed either way.
func (s *clientStream) abandon() {
	// ctx has ended, so a send blocked on flow control gives up sendMu.
	s.sendMu.Lock()
	if !s.finished.Load() && !s.cancelled {
		s.cancelled = true
		ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		if m, err := control(frameCancel, nil); err == nil {
			_ = s.sess.Send(ctx, m)
		}
		cancel()
	}
	s.sendMu.Unlock()
	s.closeSession()
}

// closeSession ends the session and frees the call's slot; it may run
// more than once.
func (s *clientStream) closeSession() {
	s.sess.Close()
	s.release()
}

// next reads the next frame, or the frame Header put back.
func (s *clientStream) next() (*sdk.Message, error) {
	if m := s.pending; m != nil {
		s.pending = nil
		return m, nil
	}
	// The session outlives single reads: abandon closes it, which ends the read.
	m, err := s.sess.Recv(context.Background())
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("node %s ended the call without a status", s.node)
		}
		return nil, sessionError(s.ctx, "call via node "+s.node, err)
	}
	return m, nil
}

// Header waits for the response header. It returns nil metadata when the
// call ended without one (a status alone).
func (s *clientStream) Header() (metadata.MD, error) {
	if s.headerRead || s.done {
		return s.header, nil
	}
	s.headerRead = true
	m, err := s.next()
	if err != nil {
		s.finish(err, nil)
		return nil, err
	}
	switch frameType(m) {
	case frameHeader:
		var h callpb.Header
		if err := proto.Unmarshal(m.Body, &h); err != nil {
			err = decodeErr("header", err)
			s.finish(err, nil)
			return nil, err
		}
		s.header = mdFromPB(h.GetMetadata())
		return s.header, nil
	case frameTrailer:
		s.trailerFrame(m)
		return nil, nil
	default:
		s.pending = m
		return nil, nil
	}
}

func (s *clientStream) RecvMsg(m any) error {
	f, ok := m.(*rawcodec.Frame)
	if !ok {
		return grpcstatus.Errorf(codes.Internal, "proxy: cannot receive into a %T", m)
	}
	if !s.headerRead {
		if _, err := s.Header(); err != nil {
			return err
		}
	}
	for !s.done {
		msg, err := s.next()
		if err != nil {
			s.finish(err, nil)
			break
		}
		switch frameType(msg) {
		case frameMsg:
			got, err := s.body.add(msg)
			if err != nil {
				s.finish(err, nil)
				break
			}
			if got != nil {
				f.Free()
				*f = *got
				return nil
			}
		case frameTrailer:
			s.trailerFrame(msg)
		default:
			s.finish(unexpected(msg, "in a response"), nil)
		}
	}
	return s.result
}

// trailerFrame ends the call with the trailer's status.
func (s *clientStream) trailerFrame(m *sdk.Message) {
	var t callpb.Trailer
	if err := proto.Unmarshal(m.Body, &t); err != nil {
		s.finish(decodeErr("trailer", err), nil)
		return
	}
	var st status.Status
	if err := proto.Unmarshal(t.GetStatus(), &st); err != nil {
		s.finish(decodeErr("trailer status", err), nil)
		return
	}
	var result error = io.EOF
	if st.GetCode() != int32(codes.OK) {
		result = grpcstatus.FromProto(&st).Err()
	}
	s.finish(result, mdFromPB(t.GetMetadata()))
}

func (s *clientStream) finish(result error, trailer metadata.MD) {
	if s.done {
		return
	}
	s.done, s.headerRead = true, true
	s.result, s.trailer = result, trailer
	// The call is over at both ends. Closing the session also ends a send
	// blocked on flow control, so this never waits for sendMu.
	s.finished.Store(true)
	s.closeSession()
}

// Trailer returns the trailer metadata once RecvMsg has returned an error.
func (s *clientStream) Trailer() metadata.MD { return s.trailer }
