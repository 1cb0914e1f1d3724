package proxyrpc_test

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	proxyrpc "github.com/microhost/microhost/plugins/proxy-rpc"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
)

const (
	interopService = "interop"
	bigMessage     = 64 << 20
)

var interopEndpoints = []string{"grpc.testing.TestService"}

// startInterop runs grpc-go's interop test server on loopback; extra
// options let a test wrap it.
func startInterop(t testing.TB, opts ...grpc.ServerOption) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(bigMessage), grpc.MaxSendMsgSize(bigMessage)}, opts...)...)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go s.Serve(lis)
	var once sync.Once
	stop = func() { once.Do(s.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// startProxy configures a proxy under host and returns it with its address.
func startProxy(t testing.TB, id string, host sdk.Host, config map[string]any) (*proxyrpc.Proxy, string) {
	t.Helper()
	if config == nil {
		config = map[string]any{}
	}
	if _, ok := config["listen"]; !ok {
		config["listen"] = "127.0.0.1:0"
	}
	raw, _ := json.Marshal(config)
	p := proxyrpc.New(hclog.New(&hclog.LoggerOptions{Name: "proxy-" + id, Level: hclog.Warn, Output: testWriter{t}}))
	req := sdk.ConfigureRequest{Config: raw, Node: sdk.NodeConfig{ID: id}}
	if host != nil {
		req.Host = host
	}
	if diags := p.Configure(t.Context(), req); diags.HasErrors() {
		t.Fatalf("configure proxy %s: %v", id, diags.Err())
	}
	t.Cleanup(func() { p.Close() })
	addr, err := p.Address(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return p, addr
}

// dial connects a client to a proxy, naming the service in the authority.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(interopService),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(bigMessage), grpc.MaxCallSendMsgSize(bigMessage)),
	}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func localRoute(service, addr string, metric int64, router string) sdk.Route {
	return sdk.Route{Service: service, Address: addr, Link: sdk.LinkLocal, Metric: metric, Router: router, Endpoints: interopEndpoints}
}

func remoteRoute(service, gateway, origin string, metric int64) sdk.Route {
	return sdk.Route{Service: service, Address: "masked", Gateway: gateway, Link: sdk.LinkNetwork, Metric: metric, Router: origin, Endpoints: interopEndpoints}
}

// chain is nodes linked in a line over an in-memory tunnel, each with a
// host and a proxy.
type chain struct {
	fabric  *memtunnel.Fabric
	hosts   map[string]*testHost
	tunnels map[string]*countingTunnel
	proxies map[string]*proxyrpc.Proxy
	addrs   map[string]string
}

func newChain(t testing.TB, ids ...string) *chain {
	t.Helper()
	c := &chain{fabric: memtunnel.NewFabric(), hosts: map[string]*testHost{}, tunnels: map[string]*countingTunnel{}, proxies: map[string]*proxyrpc.Proxy{}, addrs: map[string]string{}}
	for i, id := range ids {
		n, err := c.fabric.NewNode(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		c.tunnels[id] = &countingTunnel{Tunnel: n}
		c.hosts[id] = newTestHost(c.tunnels[id])
		if i > 0 {
			if err := c.fabric.Link(ids[i-1], id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids {
		c.proxies[id], c.addrs[id] = startProxy(t, id, c.hosts[id], nil)
	}
	// Wait until every proxy listens on the tunnel, so that the first call
	// does not race the listeners.
	for i, id := range ids {
		for _, peer := range []int{i - 1, i + 1} {
			if peer >= 0 && peer < len(ids) {
				waitFor(t, "node "+ids[peer]+" sees "+id+" listen", func() bool { return listens(t, c.tunnels[ids[peer]], id) })
			}
		}
	}
	return c
}

// interopBehindA links A and B, runs grpc's interop server behind A and
// routes it from B; it returns the chain and a connection to B's proxy
// once B has the route.
func interopBehindA(t testing.TB) (*chain, *grpc.ClientConn) {
	t.Helper()
	addr, _ := startInterop(t)
	c := newChain(t, "A", "B")
	c.hosts["A"].set(localRoute(interopService, addr, 1, "A"))
	c.hosts["B"].set(remoteRoute(interopService, "A", "A", 11))
	cc := dial(t, c.addrs["B"])
	waitRouted(t, cc)
	return c, cc
}

func listens(t testing.TB, tun sdk.Tunnel, peer string) bool {
	return listensOn(t, tun, peer, proxyrpc.Channel)
}

// listensOn reports whether tun sees peer listen on channel.
func listensOn(t testing.TB, tun sdk.Tunnel, peer, channel string) bool {
	links, err := tun.Links(t.Context())
	if err != nil {
		return false
	}
	for _, l := range links {
		if l.Peer == peer && slices.Contains(l.Channels, channel) {
			return true
		}
	}
	return false
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countingTunnel counts the sessions of a tunnel that are open, so tests can
// show that none leak.
type countingTunnel struct {
	sdk.Tunnel
	open  atomic.Int64
	sends atomic.Int64 // messages sent on its sessions
}

func (c *countingTunnel) Dial(ctx context.Context, channel string, opts sdk.DialOptions) (sdk.Session, error) {
	s, err := c.Tunnel.Dial(ctx, channel, opts)
	if err != nil {
		return nil, err
	}
	return c.track(s), nil
}

func (c *countingTunnel) Listen(ctx context.Context, channel string) (sdk.Listener, error) {
	l, err := c.Tunnel.Listen(ctx, channel)
	if err != nil {
		return nil, err
	}
	return countingListener{Listener: l, c: c}, nil
}

func (c *countingTunnel) track(s sdk.Session) sdk.Session {
	c.open.Add(1)
	return &countingSession{Session: s, c: c}
}

type countingListener struct {
	sdk.Listener
	c *countingTunnel
}

func (l countingListener) Accept(ctx context.Context) (sdk.Session, error) {
	s, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return l.c.track(s), nil
}

type countingSession struct {
	sdk.Session
	c    *countingTunnel
	once sync.Once
}

func (s *countingSession) Send(ctx context.Context, m *sdk.Message) error {
	s.c.sends.Add(1)
	return s.Session.Send(ctx, m)
}

func (s *countingSession) Close() error {
	s.once.Do(func() { s.c.open.Add(-1) })
	return s.Session.Close()
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

func grpcAuthority(a string) grpc.DialOption { return grpc.WithAuthority(a) }

// waitRouted waits until the proxies behind cc route the interop service:
// routes reach a proxy through its watch, after Configure has returned.
// The probe is an EmptyCall, which an instance may see.
func waitRouted(t testing.TB, cc *grpc.ClientConn) {
	t.Helper()
	tc := testgrpc.NewTestServiceClient(cc)
	waitFor(t, "the proxy to learn its routes", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return status.Code(err) != codes.NotFound
	})
}
