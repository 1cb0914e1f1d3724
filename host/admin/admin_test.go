package admin_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/admin/admintest"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var since = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func fullNode(t *testing.T) *admintest.Node {
	n := admintest.New(t, "a", "net")
	n.NodeList = []admin.NodeInfo{
		{ID: "a", Address: "10.0.0.1:8085"},
		{ID: "b", Address: "10.0.0.2:8085", Hops: 1, Metric: 12},
		{ID: "c", Hops: 2, Metric: 30, Via: "b"},
	}
	n.Edges = []admin.Edge{{From: "a", To: "b", Metric: 12}, {From: "b", To: "c", Metric: 18}}
	n.RouteTable = []sdk.Route{
		{Service: "greeter", Address: "10.0.0.3:50051", Gateway: "b", Network: "net", Router: "c", Link: sdk.LinkNetwork, Metric: 30, Seq: 4, Path: []string{"c", "b"}, Expires: since, Endpoints: []string{"pkg.Greeter"}},
		{Service: "greeter", Address: "127.0.0.1:50051", Network: "net", Router: "a", Link: sdk.LinkLocal, Metric: 1, Seq: 1},
		{Service: "store", Address: "127.0.0.1:6000", Network: "net", Router: "a", Link: sdk.LinkLocal, Metric: 1, Metadata: map[string]string{"v": "2"}},
	}
	n.LinkList = []sdk.Link{{ID: "l1", Peer: "b", Address: "10.0.0.2:8085", Outbound: true, State: sdk.LinkUp, RTT: 6 * time.Millisecond, BytesIn: 10, BytesOut: 20, Errors: 1, Drops: 2, Channels: []string{"network", "control"}}}
	n.PluginList = []admin.PluginStatus{
		{Name: "tunnel.quic", Kind: sdk.KindTunnel, Type: "quic", PID: 4242, State: "running", Since: since},
		{Name: "resolver.dns", Kind: sdk.KindResolver, Type: "dns", Address: "10.0.0.9:7000", State: "restarting", Restarts: 3, LastError: "exit status 2"},
	}
	n.DampingList = []sdk.DampingState{{Route: n.RouteTable[0], Penalty: 1500.5, Flaps: 3, Suppressed: true, Since: since}}
	n.Proxy = "127.0.0.1:9090"
	return n
}

func dial(t *testing.T, addr string) *admin.Client {
	c, err := admin.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRoundTrip checks that every call carries the node's answer unchanged.
func TestRoundTrip(t *testing.T) {
	n := fullNode(t)
	c := dial(t, admintest.Serve(t, n))
	ctx := t.Context()

	id, network, err := c.Info(ctx)
	if err != nil || id != "a" || network != "net" {
		t.Fatalf("Info = %q, %q, %v", id, network, err)
	}
	same := func(what string, got, want any, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
		}
	}
	nodes, err := c.Nodes(ctx)
	same("Nodes", nodes, n.NodeList, err)
	g, err := c.Graph(ctx)
	same("Graph", g, admin.Graph{Local: "a", Nodes: n.NodeList, Edges: n.Edges}, err)
	links, err := c.Links(ctx)
	same("Links", links, n.LinkList, err)
	plugins, err := c.Plugins(ctx)
	same("Plugins", plugins, n.PluginList, err)
	damping, err := c.Damping(ctx)
	for i := range damping { // time zones do not survive the wire; instants do
		damping[i].Since = damping[i].Since.UTC()
		damping[i].Route.Expires = damping[i].Route.Expires.UTC()
	}
	same("Damping", damping, n.DampingList, err)
	proxy, err := c.ProxyAddress(ctx)
	same("ProxyAddress", proxy, "127.0.0.1:9090", err)

	routes, err := c.Routes(ctx, sdk.Query{Service: "greeter"})
	if err != nil || len(routes) != 2 || routes[0].Link != sdk.LinkLocal || routes[1].Gateway != "b" || !slices.Equal(routes[1].Path, []string{"c", "b"}) {
		t.Fatalf("Routes(greeter) = %+v, %v", routes, err)
	}
	routes, err = c.Routes(ctx, sdk.Query{Service: "nothing"})
	if err != nil || len(routes) != 0 {
		t.Fatalf("Routes with no match = %+v, %v; want an empty list", routes, err)
	}
	all, err := c.Routes(ctx, sdk.Query{})
	if err != nil || len(all) != 3 {
		t.Fatalf("all routes = %d, %v", len(all), err)
	}
}

func TestRegisterThroughAPI(t *testing.T) {
	n := admintest.New(t, "a", "net")
	if err := n.Registry.AddStatic(sdk.Service{Name: "db", Address: "10.0.0.5:5432"}, nil); err != nil {
		t.Fatal(err)
	}
	c := dial(t, admintest.Serve(t, n))
	ctx := t.Context()

	svc := sdk.Service{Name: "greeter", Address: "127.0.0.1:50051", Endpoints: []string{"pkg.Greeter"}, Metadata: map[string]string{"zone": "x"}}
	if err := c.Register(ctx, svc, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Heartbeat(ctx, "greeter", "127.0.0.1:50051"); err != nil {
		t.Fatal(err)
	}
	svcs, err := c.Services(ctx)
	if err != nil || len(svcs) != 2 {
		t.Fatalf("Services = %+v, %v", svcs, err)
	}
	got := svcs[1]
	if !reflect.DeepEqual(got.Service, svc) || got.Source != registry.SourceAPI || got.TTL != 30*time.Second || got.Expires.IsZero() || got.Health != registry.HealthNone {
		t.Fatalf("registered instance = %+v", got)
	}
	if db := svcs[0]; db.Source != registry.SourceStatic || db.TTL != 0 || !db.Expires.IsZero() {
		t.Fatalf("static instance = %+v", db)
	}

	if err := c.Deregister(ctx, "greeter", "127.0.0.1:50051"); err != nil {
		t.Fatal(err)
	}
	if err := c.Heartbeat(ctx, "greeter", "127.0.0.1:50051"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("Heartbeat after Deregister = %v, want ErrNotFound", err)
	}
	if err := c.Deregister(ctx, "greeter", "127.0.0.1:50051"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("second Deregister = %v, want ErrNotFound", err)
	}
	if err := c.Deregister(ctx, "db", "10.0.0.5:5432"); err == nil || !strings.Contains(err.Error(), "declared in the config") {
		t.Fatalf("Deregister of a static service = %v", err)
	}
}

func TestRegisterRejectsBadInput(t *testing.T) {
	n := admintest.New(t, "a", "net")
	c := dial(t, admintest.Serve(t, n))
	ctx := t.Context()
	for _, tc := range []struct {
		svc  sdk.Service
		ttl  time.Duration
		want string
	}{
		{sdk.Service{Address: "127.0.0.1:1"}, 0, "is not a valid service name"},
		{sdk.Service{Name: "a", Address: "nowhere"}, 0, `address "nowhere" is not HOST:PORT`},
		{sdk.Service{Name: "a", Address: "127.0.0.1:1"}, -time.Second, "negative ttl"},
	} {
		if err := c.Register(ctx, tc.svc, tc.ttl); !errors.Is(err, admin.ErrRejected) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%+v, %v) = %v, want %q", tc.svc, tc.ttl, err, tc.want)
		}
	}
	if err := c.Heartbeat(ctx, "", ""); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("Heartbeat with no name = %v", err)
	}
	if svcs, _ := c.Services(ctx); len(svcs) != 0 {
		t.Fatalf("bad input was registered: %+v", svcs)
	}
}

func TestUnixSocketIsPrivate(t *testing.T) {
	n := admintest.New(t, "a", "net")
	addr := admintest.Serve(t, n)
	fi, err := os.Stat(strings.TrimPrefix(addr, "unix:"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("socket mode = %v, want 0600", perm)
	}
	// A second node cannot take over a live socket.
	if _, err := admin.Listen(addr); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Listen on a live socket = %v", err)
	}
}

func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "mh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "admin.sock")
	// A socket file nobody serves, as a killed node leaves behind.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()

	lis, err := admin.Listen("unix:" + path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	lis.Close()

	plain := filepath.Join(filepath.Dir(path), "file")
	os.WriteFile(plain, nil, 0o600)
	if _, err := admin.Listen("unix:" + plain); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Fatalf("Listen over a regular file = %v", err)
	}
}

func TestBadAddresses(t *testing.T) {
	for _, addr := range []string{"", "unix:", "localhost"} {
		if _, err := admin.Listen(addr); err == nil {
			t.Errorf("Listen(%q) succeeded", addr)
		}
		if _, err := admin.Dial(addr); err == nil {
			t.Errorf("Dial(%q) succeeded", addr)
		}
	}
}

func TestUnreachable(t *testing.T) {
	c := dial(t, "unix:"+filepath.Join(shortDir(t), "none.sock"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Nodes(ctx)
	if !errors.Is(err, admin.ErrUnreachable) || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("call to nothing = %v, want ErrUnreachable naming the address", err)
	}
}

func TestTCPAndExtraServices(t *testing.T) {
	n := admintest.New(t, "tcp-node", "net")
	lis, err := admin.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(n)
	if _, ok := srv.GetServiceInfo()["grpc.reflection.v1.ServerReflection"]; !ok {
		t.Fatalf("reflection missing: %v", srv.GetServiceInfo())
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-done }()

	c := dial(t, lis.Addr().String())
	if id, _, err := c.Info(t.Context()); err != nil || id != "tcp-node" {
		t.Fatalf("Info over TCP = %q, %v", id, err)
	}
}
