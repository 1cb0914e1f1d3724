package remote

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/microhost/microhost/plugins/proxy-rpc/callpb"
	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/sdk"
)

// callFrameTimeout bounds the wait for a session's call frame, so a peer
// that opens sessions and sends nothing holds nothing for long.
const callFrameTimeout = 10 * time.Second

// Server serves the calls other proxies forward over sessions, handing
// each to a gRPC stream handler as if a client had called this proxy.
type Server struct {
	handler grpc.StreamHandler
	maxMsg  int
	log     hclog.Logger

	acceptCtx   context.Context // ends when Shutdown begins
	stopAccept  context.CancelFunc
	callsCtx    context.Context // ends when Shutdown gives up waiting
	cancelCalls context.CancelFunc

	mu       sync.Mutex
	stopping bool
	calls    sync.WaitGroup
}

// NewServer returns a server that hands calls to handler and accepts
// request messages up to maxMessageSize bytes.
func NewServer(handler grpc.StreamHandler, maxMessageSize int, log hclog.Logger) *Server {
	srv := &Server{handler: handler, maxMsg: maxMessageSize, log: log}
	srv.acceptCtx, srv.stopAccept = context.WithCancel(context.Background())
	srv.callsCtx, srv.cancelCalls = context.WithCancel(context.Background())
	return srv
}

// Serve takes the sessions lis accepts until lis fails, which it returns,
// or Shutdown, when it returns nil. It may be called again with a new
// listener after a failure.
func (srv *Server) Serve(lis sdk.Listener) error {
	defer lis.Close()
	for {
		sess, err := lis.Accept(srv.acceptCtx)
		if err != nil {
			if srv.acceptCtx.Err() != nil {
				return nil
			}
			return err
		}
		srv.mu.Lock()
		if srv.stopping {
			srv.mu.Unlock()
			sess.Close()
			return nil
		}
		srv.calls.Add(1)
		srv.mu.Unlock()
		go func() {
			defer srv.calls.Done()
			srv.serve(sess)
		}()
	}
}

// Shutdown stops accepting calls, lets the ones in flight finish for at
// most timeout, then cancels the rest and waits for them to end.
func (srv *Server) Shutdown(timeout time.Duration) {
	srv.mu.Lock()
	srv.stopping = true
	srv.mu.Unlock()
	srv.stopAccept()
	done := make(chan struct{})
	go func() {
		srv.calls.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.cancelCalls()
		<-done
	}
	srv.cancelCalls()
}

func (srv *Server) serve(sess sdk.Session) {
	defer sess.Close()
	call, err := readCall(sess)
	if err != nil {
		srv.log.Warn("call from another proxy refused", "peer", sess.Peer(), "error", err)
		return
	}
	ctx, cancel := context.WithCancel(srv.callsCtx)
	if t := call.GetTimeout(); t != nil {
		ctx, cancel = context.WithTimeout(srv.callsCtx, t.AsDuration())
	}
	defer cancel()
	ss := &serverStream{method: call.GetMethod(), sess: sess, cancel: cancel, body: bodyReader{max: srv.maxMsg}}
	ss.ctx = grpc.NewContextWithServerTransportStream(metadata.NewIncomingContext(ctx, mdFromPB(call.GetMetadata())), transportStream{ss})
	result := srv.handler(nil, ss)
	if err := ss.sendTrailer(result); err != nil && srv.callsCtx.Err() == nil {
		srv.log.Debug("call status not delivered to the calling proxy", "peer", sess.Peer(), "method", ss.method, "error", err)
	}
	// A session no read is waiting on can carry the tunnel's next one.
	ss.stopWatching()
}

func readCall(sess sdk.Session) (*callpb.Call, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callFrameTimeout)
	defer cancel()
	m, err := sess.Recv(ctx)
	if err != nil {
		return nil, err
	}
	if frameType(m) != frameCall {
		return nil, unexpected(m, "first in a session")
	}
	var call callpb.Call
	if err := proto.Unmarshal(m.Body, &call); err != nil {
		return nil, decodeErr("call", err)
	}
	if call.GetMethod() == "" {
		return nil, decodeErr("call", errors.New("no method"))
	}
	return &call, nil
}

// serverStream is a forwarded call as the handler sees it.
type serverStream struct {
	ctx    context.Context
	cancel context.CancelFunc
	method string
	sess   sdk.Session
	body   bodyReader // used by RecvMsg's goroutine only

	mu         sync.Mutex // the fields below, and sends
	header     metadata.MD
	headerSent bool
	trailer    metadata.MD

	// Set by RecvMsg at the caller's end frame, when watchCancel starts.
	stopWatch context.CancelFunc
	watched   chan struct{} // closed when watchCancel returns
}

var _ grpc.ServerStream = (*serverStream)(nil)

// transportStream is the grpc.ServerTransportStream that
// grpc.MethodFromServerStream and grpc.SetHeader look for in a call's context.
type transportStream struct{ *serverStream }

func (t transportStream) SetTrailer(md metadata.MD) error {
	t.serverStream.SetTrailer(md)
	return nil
}

func (s *serverStream) Method() string           { return s.method }
func (s *serverStream) Context() context.Context { return s.ctx }

func (s *serverStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent {
		return status.Error(codes.Internal, "proxy: header already sent")
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *serverStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent {
		return status.Error(codes.Internal, "proxy: header already sent")
	}
	s.header = metadata.Join(s.header, md)
	return s.sendHeaderLocked()
}

func (s *serverStream) sendHeaderLocked() error {
	s.headerSent = true
	m, err := control(frameHeader, &callpb.Header{Metadata: mdToPB(s.header)})
	if err != nil {
		return status.Errorf(codes.Internal, "proxy: encode header: %v", err)
	}
	return s.sess.Send(s.ctx, m)
}

func (s *serverStream) SetTrailer(md metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
}

func (s *serverStream) SendMsg(m any) error {
	f, ok := m.(*rawcodec.Frame)
	if !ok {
		return status.Errorf(codes.Internal, "proxy: cannot forward a %T", m)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.headerSent {
		if err := s.sendHeaderLocked(); err != nil {
			return err
		}
	}
	return sendBody(func(m *sdk.Message) error { return s.sess.Send(s.ctx, m) }, f)
}

// RecvMsg returns the caller's next request message, or io.EOF once the
// caller has sent them all. A cancel from the caller, or a broken session,
// cancels the call.
func (s *serverStream) RecvMsg(m any) error {
	f, ok := m.(*rawcodec.Frame)
	if !ok {
		return status.Errorf(codes.Internal, "proxy: cannot receive into a %T", m)
	}
	for {
		msg, err := s.sess.Recv(context.Background()) // the session outlives one read
		if err != nil {
			s.cancel()
			return status.Errorf(codes.Canceled, "proxy: the calling proxy went away: %v", err)
		}
		switch frameType(msg) {
		case frameMsg:
			got, err := s.body.add(msg)
			if err != nil {
				s.cancel()
				return err
			}
			if got != nil {
				f.Free()
				*f = *got
				return nil
			}
		case frameEnd:
			ctx, stop := context.WithCancel(context.Background())
			s.mu.Lock()
			s.stopWatch, s.watched = stop, make(chan struct{})
			s.mu.Unlock()
			go s.watchCancel(ctx)
			return io.EOF
		case frameCancel:
			s.cancel()
			return status.Error(codes.Canceled, "proxy: the caller cancelled the call")
		default:
			s.cancel()
			return unexpected(msg, "in a request")
		}
	}
}

// watchCancel reads on after the caller's last request, so that a cancel,
// or the calling proxy going away, still cancels the call; stopWatching
// ends it once the call is over.
func (s *serverStream) watchCancel(ctx context.Context) {
	defer close(s.watched)
	_, err := s.sess.Recv(ctx)
	if ctx.Err() == nil && (err == nil || !errors.Is(err, io.EOF)) {
		s.cancel()
	}
}

// stopWatching ends watchCancel, if it runs, and waits for it.
func (s *serverStream) stopWatching() {
	s.mu.Lock()
	stop, watched := s.stopWatch, s.watched
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-watched
	}
}

// sendTrailer ends the call with the handler's result and the trailer.
func (s *serverStream) sendTrailer(result error) error {
	st, err := proto.Marshal(status.Convert(result).Proto())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := control(frameTrailer, &callpb.Trailer{Status: st, Metadata: mdToPB(s.trailer)})
	if err != nil {
		return err
	}
	// The call's own context may have ended (a deadline): the status must
	// still reach the caller.
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	return s.sess.Send(ctx, m)
}
