package sdk

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tokenKey is the metadata key that carries the data path token.
const tokenKey = "microhost-token"

// unclaimedSessionTimeout bounds how long an accepted session waits for its
// consumer to take it up with a Session call before it is closed.
const unclaimedSessionTimeout = 10 * time.Second

type tunnelServer struct {
	pb.UnimplementedTunnelServer
	impl Tunnel

	mu      sync.Mutex
	pending map[string]Session
	data    *dataPath
}

func newTunnelServer(impl Tunnel) *tunnelServer {
	return &tunnelServer{impl: impl, pending: make(map[string]Session)}
}

func (s *tunnelServer) Connect(ctx context.Context, req *pb.PeerAddress) (*pb.TunnelEmpty, error) {
	return &pb.TunnelEmpty{}, toStatus(s.impl.Connect(ctx, req.GetAddress()))
}

func (s *tunnelServer) Disconnect(ctx context.Context, req *pb.PeerAddress) (*pb.TunnelEmpty, error) {
	return &pb.TunnelEmpty{}, toStatus(s.impl.Disconnect(ctx, req.GetAddress()))
}

func (s *tunnelServer) Links(ctx context.Context, _ *pb.TunnelEmpty) (*pb.LinkList, error) {
	links, err := s.impl.Links(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.LinkList{}
	for _, l := range links {
		out.Links = append(out.Links, LinkToPB(l))
	}
	return out, nil
}

func (s *tunnelServer) Listen(req *pb.ListenRequest, stream grpc.ServerStreamingServer[pb.SessionInfo]) error {
	ctx := stream.Context()
	l, err := s.impl.Listen(ctx, req.GetChannel())
	if err != nil {
		return toStatus(err)
	}
	defer l.Close()
	// An empty SessionInfo tells the client the listener exists, so that a
	// Listen call returns only once peers can dial the channel.
	if err := stream.Send(&pb.SessionInfo{}); err != nil {
		return err
	}
	for {
		sess, err := l.Accept(ctx)
		if err != nil {
			return toStatus(err)
		}
		s.park(sess)
		if err := stream.Send(sessionInfo(sess)); err != nil {
			return err
		}
	}
}

// park holds an accepted session until a Session call claims it.
func (s *tunnelServer) park(sess Session) {
	s.mu.Lock()
	s.pending[sess.ID()] = sess
	s.mu.Unlock()
	time.AfterFunc(unclaimedSessionTimeout, func() {
		if sess := s.claim(sess.ID()); sess != nil {
			sess.Close()
		}
	})
}

func (s *tunnelServer) claim(id string) Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.pending[id]
	delete(s.pending, id)
	return sess
}

func sessionInfo(sess Session) *pb.SessionInfo {
	return &pb.SessionInfo{Id: sess.ID(), Channel: sess.Channel(), Mode: pb.Mode(sess.Mode()), Peer: sess.Peer()}
}

func (s *tunnelServer) Session(stream grpc.BidiStreamingServer[pb.SessionFrame, pb.SessionEvent]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	var sess Session
	switch f := first.GetFrame().(type) {
	case *pb.SessionFrame_Dial:
		d := f.Dial
		sess, err = s.impl.Dial(ctx, d.GetChannel(), DialOptions{
			Mode: Mode(d.GetMode()), Node: d.GetNode(), Timeout: DurationFromPB(d.GetTimeout()),
		})
		if err != nil {
			return toStatus(err)
		}
	case *pb.SessionFrame_Accept:
		if sess = s.claim(f.Accept); sess == nil {
			return status.Errorf(codes.NotFound, "no pending session %q: it was claimed already or timed out", f.Accept)
		}
	default:
		return status.Error(codes.InvalidArgument, "the first frame of a session must be dial or accept")
	}
	defer sess.Close()
	if err := stream.Send(&pb.SessionEvent{Event: &pb.SessionEvent_Opened{Opened: sessionInfo(sess)}}); err != nil {
		return err
	}

	// Both halves run until each is done, and the call ends when both are.
	// When the session fails, the call ends at once: the consumer may be
	// sending nothing, so the half reading from it would never wake up.
	toConsumer, toPeer := make(chan error, 1), make(chan error, 1)
	go func() { toConsumer <- pumpToConsumer(ctx, sess, stream) }()
	go func() { toPeer <- pumpToPeer(ctx, sess, stream) }()
	closed := false
	for toConsumer != nil || toPeer != nil {
		select {
		case err := <-toConsumer:
			toConsumer = nil
			if err != nil && !closed {
				sess.Close()
				return toStatus(err) // ends the read pumpToPeer is blocked in
			}
		case err := <-toPeer:
			toPeer = nil
			switch {
			case errors.Is(err, errConsumerClosed):
				// Closing the session ends its Recv too: what pumpToConsumer
				// says now is only the close echoing back.
				closed = true
				sess.Close()
			case err != nil:
				// pumpToConsumer may be sending: let it finish before the
				// call ends, which closing the session makes it do.
				sess.Close()
				<-toConsumer
				return toStatus(err)
			}
		}
	}
	return nil
}

// errConsumerClosed ends pumpToPeer when the consumer closed the session.
var errConsumerClosed = errors.New("session closed by its consumer")

func pumpToConsumer(ctx context.Context, sess Session, stream grpc.BidiStreamingServer[pb.SessionFrame, pb.SessionEvent]) error {
	for {
		m, err := sess.Recv(ctx)
		if errors.Is(err, io.EOF) {
			return stream.Send(&pb.SessionEvent{Event: &pb.SessionEvent_Eof{Eof: true}})
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.SessionEvent{Event: &pb.SessionEvent_Message{Message: &pb.Message{Header: m.Header, Body: m.Body}}}); err != nil {
			return err
		}
	}
}

// pumpToPeer applies the consumer's frames in order, so that a close
// frame takes effect only after every message before it was sent.
func pumpToPeer(ctx context.Context, sess Session, stream grpc.BidiStreamingServer[pb.SessionFrame, pb.SessionEvent]) error {
	for {
		f, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return sess.CloseSend()
		}
		if err != nil {
			return err
		}
		switch f := f.GetFrame().(type) {
		case *pb.SessionFrame_Message:
			if err := sess.Send(ctx, &Message{Header: f.Message.GetHeader(), Body: f.Message.GetBody()}); err != nil {
				return err
			}
		case *pb.SessionFrame_CloseSend:
			if err := sess.CloseSend(); err != nil {
				return err
			}
		case *pb.SessionFrame_Close:
			return errConsumerClosed
		default:
			return status.Error(codes.InvalidArgument, "only message, close_send and close frames may follow the first frame of a session")
		}
	}
}

func (s *tunnelServer) DataPath(context.Context, *pb.TunnelEmpty) (*pb.DataPathInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		return nil, status.Error(codes.FailedPrecondition, "the tunnel is not configured yet, so it has no data path")
	}
	return &pb.DataPathInfo{Address: "unix:" + s.data.socket, Token: s.data.token}, nil
}

// dataPath serves the session API on a unix socket of its own, so that
// consumers such as the proxy reach the tunnel without the host relaying
// their bytes. The socket lives in a fresh 0700 directory, and every call
// must carry a random token the host hands out: both must be had to use it.
type dataPath struct {
	dir    string
	socket string
	token  string
	server *grpc.Server
}

func (s *tunnelServer) startDataPath() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data != nil {
		return nil
	}
	// Under a host, the socket goes in the directory go-plugin gives the
	// plugin for its sockets, which the host clears; standalone, in the temp
	// dir. Both keep the path short: unix socket paths are limited to ~104 bytes.
	dir, err := os.MkdirTemp(os.Getenv(plugin.EnvUnixSocketDir), "tun-")
	if err != nil {
		return err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	d := &dataPath{dir: dir, socket: filepath.Join(dir, "s"), token: hex.EncodeToString(raw)}
	ln, err := net.Listen("unix", d.socket)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	d.server = grpc.NewServer(append(MessageSizeServerOptions(),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := d.authorize(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := d.authorize(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)...)
	pb.RegisterTunnelServer(d.server, s)
	go d.server.Serve(ln)
	s.data = d
	return nil
}

func (d *dataPath) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(tokenKey)
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte(d.token)) != 1 {
		return status.Error(codes.Unauthenticated, "the tunnel data path wants the token the host hands out")
	}
	return nil
}

func (s *tunnelServer) stopDataPath() {
	s.mu.Lock()
	d := s.data
	s.data = nil
	s.mu.Unlock()
	if d != nil {
		d.server.Stop()
		os.RemoveAll(d.dir)
	}
}

// DialDataPath connects to a tunnel's direct local endpoint. Closing the
// returned Tunnel closes the connection.
func DialDataPath(info *pb.DataPathInfo) (Tunnel, error) {
	token := info.GetToken()
	addToken := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, tokenKey, token)
	}
	conn, err := grpc.NewClient(info.GetAddress(),
		append(MessageSizeDialOptions(),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(addToken(ctx), method, req, reply, cc, opts...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(addToken(ctx), desc, cc, method, opts...)
			}),
		)...)
	if err != nil {
		return nil, fmt.Errorf("tunnel data path %s: %w", info.GetAddress(), err)
	}
	return &dataPathTunnel{
		tunnelClient: &tunnelClient{componentClient: newComponentClient(conn, KindTunnel), rpc: pb.NewTunnelClient(conn)},
		conn:         conn,
	}, nil
}

// dataPathTunnel is a tunnel client that owns its connection.
type dataPathTunnel struct {
	*tunnelClient
	conn *grpc.ClientConn
}

func (t *dataPathTunnel) Close() error { return t.conn.Close() }

type tunnelClient struct {
	*componentClient
	rpc pb.TunnelClient
}

func (c *tunnelClient) Connect(ctx context.Context, address string) error {
	_, err := c.rpc.Connect(ctx, &pb.PeerAddress{Address: address})
	return fromStatus(err)
}

func (c *tunnelClient) Disconnect(ctx context.Context, address string) error {
	_, err := c.rpc.Disconnect(ctx, &pb.PeerAddress{Address: address})
	return fromStatus(err)
}

func (c *tunnelClient) Links(ctx context.Context) ([]Link, error) {
	res, err := c.rpc.Links(ctx, &pb.TunnelEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	var out []Link
	for _, l := range res.GetLinks() {
		out = append(out, LinkFromPB(l))
	}
	return out, nil
}

// Listen opens the listener; like Dial, the listener outlives ctx, which
// bounds only the wait for it to be in place.
func (c *tunnelClient) Listen(ctx context.Context, channel string) (Listener, error) {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopWaiting := context.AfterFunc(ctx, cancel)
	stream, err := c.rpc.Listen(lctx, &pb.ListenRequest{Channel: channel})
	if err == nil {
		_, err = stream.Recv() // the listener exists
	}
	if !stopWaiting() && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	return &listenerClient{client: c, channel: channel, stream: stream, cancel: cancel}, nil
}

func (c *tunnelClient) Dial(ctx context.Context, channel string, opts DialOptions) (Session, error) {
	return c.openSession(ctx, &pb.SessionFrame{Frame: &pb.SessionFrame_Dial{Dial: &pb.DialRequest{
		Channel: channel, Mode: pb.Mode(opts.Mode), Node: opts.Node, Timeout: DurationToPB(opts.Timeout),
	}}})
}

// openSession starts a Session call. The call outlives ctx, which bounds
// only the wait for the session to open.
func (c *tunnelClient) openSession(ctx context.Context, first *pb.SessionFrame) (Session, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopWaiting := context.AfterFunc(ctx, cancel)
	stream, err := c.rpc.Session(sctx)
	if err == nil {
		err = stream.Send(first)
	}
	var ev *pb.SessionEvent
	if err == nil {
		ev, err = stream.Recv()
	}
	if !stopWaiting() && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	info := ev.GetOpened()
	if info == nil {
		cancel()
		return nil, errors.New("tunnel session: the tunnel did not open the session")
	}
	sc := &sessionClient{
		info: info, stream: stream, cancel: cancel,
		events: make(chan *Message, sessionBuffer), ended: make(chan struct{}), closed: make(chan struct{}),
	}
	go sc.read()
	return sc, nil
}

// sessionBuffer is how many received messages a session client holds
// before gRPC's flow control pushes back on the tunnel.
const sessionBuffer = 64

type listenerClient struct {
	client  *tunnelClient
	channel string
	stream  grpc.ServerStreamingClient[pb.SessionInfo]
	cancel  context.CancelFunc
	mu      sync.Mutex // Recv on the Listen stream is not safe for concurrent use
}

func (l *listenerClient) Accept(ctx context.Context) (Session, error) {
	stop := context.AfterFunc(ctx, l.cancel)
	defer stop()
	l.mu.Lock()
	info, err := l.stream.Recv()
	l.mu.Unlock()
	if err != nil {
		return nil, fromStatus(err)
	}
	return l.client.openSession(ctx, &pb.SessionFrame{Frame: &pb.SessionFrame_Accept{Accept: info.GetId()}})
}

func (l *listenerClient) Channel() string { return l.channel }

func (l *listenerClient) Close() error {
	l.cancel()
	return nil
}

// sessionClient is a session carried by a Session call. One goroutine
// reads the call, so that Close can wait for the tunnel to finish the
// session while a consumer may still be in Recv.
type sessionClient struct {
	info   *pb.SessionInfo
	stream grpc.BidiStreamingClient[pb.SessionFrame, pb.SessionEvent]
	cancel context.CancelFunc

	events chan *Message // received messages; closed at the peer's EOF or the call's end
	ended  chan struct{} // closed when the call has ended
	endErr error         // why the call ended, set before ended is closed
	closed chan struct{} // closed by Close
	once   sync.Once

	sendMu     sync.Mutex
	sendClosed bool
}

func (s *sessionClient) ID() string      { return s.info.GetId() }
func (s *sessionClient) Channel() string { return s.info.GetChannel() }
func (s *sessionClient) Mode() Mode      { return Mode(s.info.GetMode()) }
func (s *sessionClient) Peer() string    { return s.info.GetPeer() }

func (s *sessionClient) read() {
	eof := false
	// ended (with endErr) is closed before events, so that a Recv that sees
	// events closed also sees why.
	defer func() {
		if !eof {
			close(s.events)
		}
	}()
	defer close(s.ended)
	for {
		ev, err := s.stream.Recv()
		if err != nil {
			s.endErr = fromStatus(err)
			return
		}
		switch e := ev.GetEvent().(type) {
		case *pb.SessionEvent_Message:
			select {
			case s.events <- &Message{Header: e.Message.GetHeader(), Body: e.Message.GetBody()}:
			case <-s.closed:
			}
		case *pb.SessionEvent_Eof:
			if !eof {
				eof = true
				close(s.events)
			}
		}
	}
}

func (s *sessionClient) send(f *pb.SessionFrame) error {
	err := s.stream.Send(f)
	if errors.Is(err, io.EOF) {
		// The call ended; its status says why.
		<-s.ended
		if s.endErr != nil && !errors.Is(s.endErr, io.EOF) {
			return s.endErr
		}
		return fmt.Errorf("tunnel session %s: %w", s.ID(), io.ErrClosedPipe)
	}
	return fromStatus(err)
}

func (s *sessionClient) Send(_ context.Context, m *Message) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		return fmt.Errorf("tunnel session %s: send side closed: %w", s.ID(), io.ErrClosedPipe)
	}
	return s.send(&pb.SessionFrame{Frame: &pb.SessionFrame_Message{Message: &pb.Message{Header: m.Header, Body: m.Body}}})
}

// Recv returns the next message, io.EOF after the peer's CloseSend, or
// why the session ended. ctx bounds only this wait.
func (s *sessionClient) Recv(ctx context.Context) (*Message, error) {
	select {
	case m, ok := <-s.events:
		if ok {
			return m, nil
		}
		select {
		case <-s.ended:
			if s.endErr != nil && !errors.Is(s.endErr, io.EOF) {
				return nil, s.endErr
			}
		default:
		}
		return nil, io.EOF
	case <-s.closed:
		return nil, fmt.Errorf("tunnel session %s: closed", s.ID())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *sessionClient) CloseSend() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		return nil
	}
	s.sendClosed = true
	return s.send(&pb.SessionFrame{Frame: &pb.SessionFrame_CloseSend{CloseSend: true}})
}

// sessionCloseTimeout bounds how long Close waits for the tunnel to send
// what the session queued before the call is cut.
const sessionCloseTimeout = 5 * time.Second

// Close ends the session after everything sent before it has reached the
// tunnel, which still delivers it to the peer.
func (s *sessionClient) Close() error {
	s.once.Do(func() {
		close(s.closed)
		s.sendMu.Lock()
		s.sendClosed = true
		err := s.stream.Send(&pb.SessionFrame{Frame: &pb.SessionFrame_Close{Close: true}})
		if err == nil {
			err = s.stream.CloseSend()
		}
		s.sendMu.Unlock()
		if err == nil {
			select {
			case <-s.ended:
			case <-time.After(sessionCloseTimeout):
			}
		}
		s.cancel()
	})
	return nil
}
