package sdk_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// servePlugin serves impl through go-plugin's in-process test transport,
// with a real broker, and returns the host-side client of kind.
func servePlugin(t testing.TB, impl sdk.Component, kind sdk.Kind) sdk.Component {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{sdk.PluginName: &sdk.GRPCPlugin{Impl: impl}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	pc := raw.(*sdk.PluginConn)
	c, err := sdk.NewClient(pc.Conn, kind, sdk.ClientOptions{ServeHost: sdk.ServeHostOverBroker(pc.Broker)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testHost is a small real sdk.Host: a list of services fed to watchers,
// and the tunnel client the host holds.
type testHost struct {
	services []sdk.Service
	tunnel   sdk.Tunnel
}

func (h *testHost) WatchServices(ctx context.Context) (sdk.ServiceWatcher, error) {
	ch := make(chan sdk.ServiceEvent, len(h.services))
	for _, s := range h.services {
		ch <- sdk.ServiceEvent{Type: sdk.Create, Service: s}
	}
	return &chanWatcher{ch: ch}, nil
}

func (h *testHost) WatchRoutes(context.Context) (sdk.Watcher, error) {
	return nil, errors.New("no routes here")
}

func (h *testHost) Tunnel(context.Context) (sdk.Tunnel, error) { return h.tunnel, nil }

type chanWatcher struct{ ch chan sdk.ServiceEvent }

func (w *chanWatcher) Next(ctx context.Context) (sdk.ServiceEvent, error) {
	select {
	case e := <-w.ch:
		return e, nil
	case <-ctx.Done():
		return sdk.ServiceEvent{}, ctx.Err()
	}
}
func (w *chanWatcher) Stop() {}

func newFabric(t testing.TB, ids ...string) map[string]*memtunnel.Node {
	t.Helper()
	f := memtunnel.NewFabric()
	nodes := map[string]*memtunnel.Node{}
	for _, id := range ids {
		n, err := f.NewNode(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[id] = n
	}
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			if err := f.Link(ids[i], ids[j]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return nodes
}

func recvBody(t *testing.T, s sdk.Session) string {
	t.Helper()
	m, err := s.Recv(t.Context())
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return string(m.Body)
}

func send(t *testing.T, s sdk.Session, body string) {
	t.Helper()
	if err := s.Send(t.Context(), &sdk.Message{Header: map[string]string{"k": "v"}, Body: []byte(body)}); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// A session accepted through the plugin boundary keeps order, headers,
// peer identity and half-close in both directions.
func TestTunnelSessionAcrossPlugin(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := servePlugin(t, nodes["a"], sdk.KindTunnel).(sdk.Tunnel)

	l, err := a.Listen(t.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, err := nodes["b"].Dial(t.Context(), "echo", sdk.DialOptions{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	send(t, out, "one")
	in, err := l.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if in.Peer() != "b" || in.Channel() != "echo" {
		t.Fatalf("accepted session: peer %q channel %q", in.Peer(), in.Channel())
	}
	send(t, out, "two")
	if got := recvBody(t, in) + recvBody(t, in); got != "onetwo" {
		t.Fatalf("got %q", got)
	}
	if err := out.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Recv(t.Context()); !errors.Is(err, io.EOF) {
		t.Fatalf("after the peer's CloseSend: %v, want io.EOF", err)
	}
	// The other half still works.
	send(t, in, "reply")
	if got := recvBody(t, out); got != "reply" {
		t.Fatalf("got %q", got)
	}
	if err := in.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Recv(t.Context()); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend through the plugin: %v, want io.EOF", err)
	}
}

func TestTunnelDialAcrossPlugin(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := servePlugin(t, nodes["a"], sdk.KindTunnel).(sdk.Tunnel)
	l, err := nodes["b"].Listen(t.Context(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := a.Dial(t.Context(), "svc", sdk.DialOptions{Node: "b", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	send(t, s, "hello")
	in, err := l.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if in.Peer() != "a" || recvBody(t, in) != "hello" {
		t.Fatal("wrong peer or body")
	}

	_, err = a.Dial(t.Context(), "nobody-listens", sdk.DialOptions{Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "nobody-listens") {
		t.Fatalf("dial to an unknown channel: %v", err)
	}
	links, err := a.Links(t.Context())
	if err != nil || len(links) != 1 || links[0].Peer != "b" {
		t.Fatalf("links: %+v %v", links, err)
	}
}

// The data path serves the same API on its own socket, only to callers
// with the token the host hands out.
func TestTunnelDataPath(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := servePlugin(t, nodes["a"], sdk.KindTunnel).(sdk.Tunnel)
	if diags := a.Configure(t.Context(), sdk.ConfigureRequest{Node: sdk.NodeConfig{DataDir: t.TempDir()}}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	info, err := sdk.TunnelDataPath(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := sdk.DialDataPath(info)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	l, err := nodes["b"].Listen(t.Context(), "data")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := direct.Dial(t.Context(), "data", sdk.DialOptions{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	send(t, s, "direct")
	in, err := l.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if recvBody(t, in) != "direct" {
		t.Fatal("wrong body")
	}

	forged, err := sdk.DialDataPath(&pb.DataPathInfo{Address: info.GetAddress(), Token: "guess"})
	if err != nil {
		t.Fatal(err)
	}
	defer forged.Close()
	if _, err := forged.Dial(t.Context(), "data", sdk.DialOptions{Node: "b"}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "token") {
		t.Fatalf("a dial with a wrong token must be refused, got %v", err)
	}
	if _, err := forged.Listen(t.Context(), "data"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a listen with a wrong token must be refused, got %v", err)
	}
}

// recorder is a resolver that reads the host's registry during Configure:
// it proves the host's callbacks reach a plugin through the broker.
type recorder struct {
	mu   sync.Mutex
	seen []sdk.Node
}

func (r *recorder) Info() sdk.Info {
	return sdk.Info{Name: "resolver-recorder", Kind: sdk.KindResolver}
}
func (r *recorder) Schema() sdk.Schema { return sdk.Schema{} }
func (r *recorder) Configure(ctx context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	w, err := req.Host.WatchServices(ctx)
	if err != nil {
		return sdk.Diagnostics{sdk.Errorf("", "watch", "%v", err)}
	}
	defer w.Stop()
	for range 2 {
		e, err := w.Next(ctx)
		if err != nil {
			return sdk.Diagnostics{sdk.Errorf("", "watch", "%v", err)}
		}
		r.mu.Lock()
		r.seen = append(r.seen, sdk.Node{Address: e.Service.Address})
		r.mu.Unlock()
	}
	return sdk.Diagnostics{{Severity: sdk.SeverityWarning, Summary: "saw services", Attribute: "x"}}
}
func (r *recorder) Health(context.Context) error { return nil }
func (r *recorder) Close() error                 { return nil }
func (r *recorder) Resolve(context.Context, string) ([]sdk.Node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sdk.Node(nil), r.seen...), nil
}

func TestHostCallbacksOverBroker(t *testing.T) {
	c := servePlugin(t, &recorder{}, sdk.KindResolver).(sdk.Resolver)
	host := &testHost{services: []sdk.Service{{Name: "s", Address: "10.0.0.1:1"}, {Name: "s", Address: "10.0.0.2:1"}}}
	diags := c.Configure(t.Context(), sdk.ConfigureRequest{Host: host})
	if diags.HasErrors() || len(diags) != 1 || diags[0].Attribute != "x" || diags[0].Severity != sdk.SeverityWarning {
		t.Fatalf("diagnostics did not cross intact: %+v", diags)
	}
	nodes, err := c.Resolve(t.Context(), "n")
	if err != nil || len(nodes) != 2 || nodes[1].Address != "10.0.0.2:1" {
		t.Fatalf("resolve: %+v %v", nodes, err)
	}
}

func TestKindAndNotFoundCrossTheBoundary(t *testing.T) {
	nodes := newFabric(t, "a")
	c := servePlugin(t, nodes["a"], sdk.KindTunnel)
	info, err := c.(interface {
		FetchInfo(context.Context) (sdk.Info, error)
	}).FetchInfo(t.Context())
	if err != nil || info.Kind != sdk.KindTunnel {
		t.Fatalf("info: %+v %v", info, err)
	}
	wrong := servePlugin(t, nodes["a"], sdk.KindRouter)
	if _, err := wrong.(interface {
		FetchInfo(context.Context) (sdk.Info, error)
	}).FetchInfo(t.Context()); err == nil || !strings.Contains(err.Error(), "not a router") {
		t.Fatalf("kind mismatch: %v", err)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// What a consumer sends right before Close still reaches the peer: Close
// travels in order behind the messages instead of cutting the call.
func TestTunnelCloseDeliversWhatWasSent(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := servePlugin(t, nodes["a"], sdk.KindTunnel).(sdk.Tunnel)
	l, err := nodes["b"].Listen(t.Context(), "last-words")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 50 {
		s, err := a.Dial(t.Context(), "last-words", sdk.DialOptions{Node: "b"})
		if err != nil {
			t.Fatal(err)
		}
		send(t, s, "bye")
		s.Close()
		in, err := l.Accept(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got := recvBody(t, in); got != "bye" {
			t.Fatalf("round %d: got %q", i, got)
		}
		in.Close()
	}
}

// A session whose link is cut while the consumer only waits for a reply
// ends with the link's error, not a clean io.EOF or a timeout. (The hang
// this once caused over QUIC is covered by the namespace end-to-end test,
// which cuts a real link under a waiting call.)
func TestTunnelSessionEndsWhenItsLinkIsCut(t *testing.T) {
	f := memtunnel.NewFabric()
	nodes := map[string]*memtunnel.Node{}
	for _, id := range []string{"a", "b"} {
		n, err := f.NewNode(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes[id] = n
	}
	if err := f.Link("a", "b"); err != nil {
		t.Fatal(err)
	}
	a := servePlugin(t, nodes["a"], sdk.KindTunnel).(sdk.Tunnel)
	l, err := nodes["b"].Listen(t.Context(), "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := a.Dial(t.Context(), "slow", sdk.DialOptions{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	send(t, s, "question")
	if _, err := l.Accept(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Unlink("a", "b"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = s.Recv(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) {
		t.Fatalf("after the link was cut: %v, want the session's error at once", err)
	}
}
