package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/examples/greeter"
	"github.com/microhost/microhost/examples/greeter/greeterpb"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/register"
)

// grpc-go's interop server and client, built once (their packages are
// tool dependencies in go.mod).
var (
	interopOnce                  sync.Once
	interopServer, interopClient string
	interopBuildFailed           bool
)

func interopBinaries(t *testing.T) (server, client string) {
	t.Helper()
	interopOnce.Do(func() {
		interopBuildFailed = true
		dir, err := os.MkdirTemp(filepath.Dir(microhost), "interop-")
		if err != nil {
			t.Fatal(err)
		}
		interopServer, interopClient = filepath.Join(dir, "interop-server"), filepath.Join(dir, "interop-client")
		for bin, pkg := range map[string]string{interopServer: "google.golang.org/grpc/interop/server", interopClient: "google.golang.org/grpc/interop/client"} {
			if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
				t.Fatalf("go build %s: %v\n%s", pkg, err, out)
			}
		}
		interopBuildFailed = false
	})
	if interopBuildFailed {
		t.Fatal("building grpc-go's interop binaries failed in an earlier test")
	}
	return interopServer, interopClient
}

// startLoopbackInterop runs grpc-go's interop server process on loopback.
func startLoopbackInterop(t *testing.T, bin string) string {
	t.Helper()
	addr := freeTCP(t, "127.0.0.1")
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port)
	out, err := os.Create(filepath.Join(t.TempDir(), "interop-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); out.Close() })
	waitFor(t, 10*time.Second, "the interop server listens", func() bool { return listening(addr) })
	return addr
}

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// proxyBlock is a proxy "rpc" block; tls files may be empty for plaintext.
func proxyBlock(listen, tlsCert, tlsKey string) string {
	extra := ""
	if tlsCert != "" {
		extra = fmt.Sprintf("    tls_cert = %q\n    tls_key  = %q\n", tlsCert, tlsKey)
	}
	return fmt.Sprintf("proxy \"rpc\" {\n  config {\n    listen = %q\n%s  }\n}\n", listen, extra)
}

// linkedTo reports whether n has a link to peer.
func (n *node) linkedTo(peer string) bool {
	n.t.Helper()
	var links []sdk.Link
	if err := json.Unmarshal([]byte(n.cli("network", "connections", "--json")), &links); err != nil {
		n.t.Fatalf("network connections --json: %v", err)
	}
	return slices.ContainsFunc(links, func(l sdk.Link) bool { return l.Peer == peer })
}

func dialProxy(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// waitServed waits until a call through the proxy reaches an instance, so
// that the proxy's route cache has caught up with the routes.
func waitServed(t *testing.T, what string, call func(context.Context) error) {
	t.Helper()
	waitFor(t, 20*time.Second, what, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		err := call(ctx)
		if err != nil {
			t.Logf("not yet: %v", err)
		}
		return err == nil
	})
}

// TestInteropThroughOneNodeAndAChain runs grpc-go's interop client against
// its interop server through one node, and through a chain C–B–A in which
// C has no link to A. Each case is a separate client process; it exits
// non-zero when anything differs from the gRPC spec.
func TestInteropThroughOneNodeAndAChain(t *testing.T) {
	serverBin, clientBin := interopBinaries(t)
	server := startLoopbackInterop(t, serverBin)

	// A's proxy serves TLS with a certificate for the name "interop", so
	// that the client's --server_host_override becomes the :authority.
	issueCert(t, "interop-tls", "--dns", interopService, "--ip", "127.0.0.1")
	tlsCert, tlsKey := filepath.Join(certDir, "interop-tls.pem"), filepath.Join(certDir, "interop-tls-key.pem")
	aUDP, bUDP := freeUDP(t, "127.0.0.1"), freeUDP(t, "127.0.0.1")
	aProxy, cProxy := freeTCP(t, "127.0.0.1"), freeTCP(t, "127.0.0.1")
	a := startNode(t, nodeSpec{ID: "a", Listen: aUDP, Extra: proxyBlock(aProxy, tlsCert, tlsKey) + fmt.Sprintf(`
service "interop" {
  address   = %q
  endpoints = ["grpc.testing.TestService"]
}
`, server)})
	startNode(t, nodeSpec{ID: "b", Listen: bUDP, Peers: []string{aUDP}, Proxy: freeTCP(t, "127.0.0.1")})
	c := startNode(t, nodeSpec{ID: "c", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{bUDP}, Proxy: cProxy})

	waitFor(t, 20*time.Second, "c learns the route to interop at a, through b", func() bool {
		return slices.ContainsFunc(c.routes(interopService), func(r sdk.Route) bool { return r.Router == "a" && r.Gateway == "b" })
	})
	if c.linkedTo("a") || a.linkedTo("c") {
		t.Fatal("a and c are linked; the chain test needs b in between")
	}
	cc := dialProxy(t, cProxy)
	waitServed(t, "c's proxy routes calls to interop", func(ctx context.Context) error {
		_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
		return err
	})

	_, aPort, _ := net.SplitHostPort(aProxy)
	_, cPort, _ := net.SplitHostPort(cProxy)
	runCases := func(t *testing.T, cases []string, args ...string) {
		for _, tc := range cases {
			t.Run(tc, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, clientBin, append(args, "--test_case="+tc)...).CombinedOutput()
				if err != nil {
					t.Errorf("interop client %s: %v\n%s", tc, err, out)
				}
			})
		}
	}
	t.Run("one node, service named by authority", func(t *testing.T) {
		runCases(t, interopCases, "--server_host=127.0.0.1", "--server_port="+aPort,
			"--use_tls", "--use_test_ca", "--ca_file="+filepath.Join(certDir, "ca.pem"), "--server_host_override="+interopService)
	})
	t.Run("chain, service named by metadata", func(t *testing.T) {
		runCases(t, interopCases, "--server_host=127.0.0.1", "--server_port="+cPort, "--additional_metadata=micro-service:"+interopService)
	})
	// Without a service name, the method's gRPC service picks it; a gRPC
	// service no instance serves is NotFound from the proxy, since there
	// is no server to answer Unimplemented.
	t.Run("chain, service found by method", func(t *testing.T) {
		runCases(t, slices.DeleteFunc(slices.Clone(interopCases), func(tc string) bool { return tc == "unimplemented_service" }),
			"--server_host=127.0.0.1", "--server_port="+cPort)
		_, err := testgrpc.NewUnimplementedServiceClient(cc).UnimplementedCall(t.Context(), &testpb.Empty{})
		if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "grpc.testing.UnimplementedService") {
			t.Errorf("unnamed call to a gRPC service nobody serves: %v, want NotFound naming it", err)
		}
	})
	if c.linkedTo("a") {
		t.Error("a link between c and a appeared: the calls did not have to cross b")
	}
}

// startGreeter serves the example greeter on loopback, naming servedBy in
// its replies; md receives the metadata of each call.
func startGreeter(t *testing.T, servedBy string, md chan<- metadata.MD) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if md != nil {
			in, _ := metadata.FromIncomingContext(ctx)
			select {
			case md <- in:
			default:
			}
		}
		return handler(ctx, req)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(record))
	greeter.Register(s, servedBy)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return s, lis.Addr().String()
}

// registerWithSDK keeps the instance registered with the node through
// sdk/register until the returned stop is called or the test ends.
func registerWithSDK(t *testing.T, n *node, name, address string, s *grpc.Server, opts ...register.Option) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts = append(opts, register.WithLogger(hclog.New(&hclog.LoggerOptions{Name: "register", Output: testWriter{t}, Level: hclog.Warn})))
	go func() { done <- register.Service(ctx, n.admin, name, address, s, opts...) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("register.Service %s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// testWriter sends log output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestReflectionClientsThroughANode: grpcurl and `microhost call` use a
// reflection-enabled service registered with sdk/register on another node.
func TestReflectionClientsThroughANode(t *testing.T) {
	aUDP, bProxy := freeUDP(t, "127.0.0.1"), freeTCP(t, "127.0.0.1")
	a := startNode(t, nodeSpec{ID: "a", Listen: aUDP, Proxy: freeTCP(t, "127.0.0.1")})
	b := startNode(t, nodeSpec{ID: "b", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{aUDP}, Proxy: bProxy})

	seen := make(chan metadata.MD, 16)
	s, addr := startGreeter(t, "A", seen)
	stopRegister := registerWithSDK(t, a, "greeter", addr, s, register.WithTTL(3*time.Second))
	waitFor(t, 20*time.Second, "b learns the greeter at a, with the endpoints sdk/register found", func() bool {
		return slices.ContainsFunc(b.routes("greeter"), func(r sdk.Route) bool {
			return r.Router == "a" && slices.Equal(r.Endpoints, []string{greeter.ServiceName})
		})
	})
	cc := dialProxy(t, bProxy)
	waitServed(t, "b's proxy routes calls to the greeter by method", func(ctx context.Context) error {
		_, err := greeterpb.NewGreeterClient(cc).SayHello(ctx, &greeterpb.HelloRequest{Name: "x"})
		return err
	})

	t.Run("microhost call", func(t *testing.T) {
		for len(seen) > 0 {
			<-seen
		}
		out := b.cli("call", "greeter", greeter.ServiceName+"/SayHello", `{"name": "e2e"}`, "--metadata", "x-trace=t-42")
		var reply struct {
			Message  string `json:"message"`
			ServedBy string `json:"servedBy"`
		}
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			t.Fatalf("call printed no JSON reply: %v\n%s", err, out)
		}
		if reply.Message != "Hello, e2e!" || reply.ServedBy != "A" {
			t.Errorf("reply %+v", reply)
		}
		var md metadata.MD
		select {
		case md = <-seen: // the unary SayHello; reflection is a stream
		case <-time.After(5 * time.Second):
			t.Fatal("the greeter saw no call")
		}
		if got := md.Get("x-trace"); !slices.Equal(got, []string{"t-42"}) {
			t.Errorf("x-trace metadata at the instance: %q", got)
		}
		// The service's error reaches the user with its code and message.
		out, err := b.cliErr("call", "greeter", "microhost.examples.greeter.Greeter.SayHello", `{}`)
		if err == nil || !strings.Contains(out, "InvalidArgument") || !strings.Contains(out, "name is empty") {
			t.Errorf("call with an empty name: err %v, output:\n%s", err, out)
		}
		out, err = b.cliErr("call", "greeter", greeter.ServiceName+"/SayHello", `{"nom": "x"}`)
		if err == nil || !strings.Contains(out, "nom") {
			t.Errorf("call with a bad field: err %v, output:\n%s", err, out)
		}
	})

	t.Run("grpcurl", func(t *testing.T) {
		grpcurl := lookGrpcurl(t)
		out := run(t, grpcurl, "-plaintext", "-authority", "greeter", bProxy, "list")
		if !strings.Contains(out, greeter.ServiceName) {
			t.Errorf("grpcurl list through the proxy:\n%s", out)
		}
		out = run(t, grpcurl, "-plaintext", "-authority", "greeter", bProxy, "describe", greeter.ServiceName)
		if !strings.Contains(out, "rpc SayHello") {
			t.Errorf("grpcurl describe through the proxy:\n%s", out)
		}
		out = run(t, grpcurl, "-plaintext", "-H", "micro-service: greeter", "-d", `{"name": "grpcurl"}`, bProxy, greeter.ServiceName+"/SayHello")
		if !strings.Contains(out, `"Hello, grpcurl!"`) || !strings.Contains(out, `"servedBy": "A"`) {
			t.Errorf("grpcurl call through the proxy:\n%s", out)
		}
	})

	t.Run("sdk/register deregisters when its context ends", func(t *testing.T) {
		stopRegister()
		waitFor(t, 10*time.Second, "the greeter's route is withdrawn at b", func() bool { return len(b.routes("greeter")) == 0 })
	})
}

// lookGrpcurl finds grpcurl on PATH: CI must have it (.ci/run installs it);
// elsewhere the test is skipped, saying how to install it.
func lookGrpcurl(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("grpcurl")
	if err == nil {
		return path
	}
	const install = "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 (and put $(go env GOPATH)/bin on PATH)"
	if os.Getenv("CI") != "" {
		t.Fatalf("grpcurl is not on PATH; install it: %s", install)
	}
	t.Skipf("grpcurl is not on PATH; install it to run this test: %s", install)
	return ""
}

// callRecord is one call of the failover test.
type callRecord struct {
	start, end time.Time
	servedBy   string
	err        error
}

// TestFailoverToTheOtherInstance: two instances of a service on two nodes;
// at B the local one (lower metric) serves. It is killed (its server
// stops, its heartbeats stop); calls go on at A's instance at once, and
// only calls in flight at the kill may fail.
func TestFailoverToTheOtherInstance(t *testing.T) {
	aUDP, bProxy := freeUDP(t, "127.0.0.1"), freeTCP(t, "127.0.0.1")
	a := startNode(t, nodeSpec{ID: "a", Listen: aUDP, Proxy: freeTCP(t, "127.0.0.1")})
	b := startNode(t, nodeSpec{ID: "b", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{aUDP}, Proxy: bProxy})

	sa, addrA := startGreeter(t, "A", nil)
	registerWithSDK(t, a, "greeter", addrA, sa)
	sb, addrB := startGreeter(t, "B", nil)
	// B's instance registers with a TTL and heartbeats through the CLI, as a
	// process would; its kill stops the heartbeats without a goodbye.
	const ttl = 4 * time.Second
	b.cli("service", "register", "greeter", "--address", addrB, "--endpoint", greeter.ServiceName, "--ttl", ttl.String())
	heartbeatCtx, stopHeartbeats := context.WithCancel(context.Background())
	heartbeatsDone := make(chan struct{})
	go func() {
		defer close(heartbeatsDone)
		for {
			select {
			case <-heartbeatCtx.Done():
				return
			case <-time.After(ttl / 4):
			}
			if out, err := b.cliErr("service", "heartbeat", "greeter", "--address", addrB); err != nil && heartbeatCtx.Err() == nil {
				t.Logf("heartbeat: %v: %s", err, out)
			}
		}
	}()
	t.Cleanup(func() { stopHeartbeats(); <-heartbeatsDone })

	waitFor(t, 20*time.Second, "b has both routes to the greeter", func() bool {
		rs := b.routes("greeter")
		return slices.ContainsFunc(rs, func(r sdk.Route) bool { return r.Link == sdk.LinkLocal && r.Address == addrB }) &&
			slices.ContainsFunc(rs, func(r sdk.Route) bool { return r.Router == "a" })
	})
	client := greeterpb.NewGreeterClient(dialProxy(t, bProxy, grpc.WithAuthority("greeter")))
	waitServed(t, "b's proxy serves the greeter", func(ctx context.Context) error {
		_, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "x"})
		return err
	})
	for i := range 20 {
		r, err := client.SayHello(t.Context(), &greeterpb.HelloRequest{Name: "x"})
		if err != nil || r.GetServedBy() != "B" {
			t.Fatalf("call %d before the kill: served by %q, err %v; want the local instance B (lower metric)", i, r.GetServedBy(), err)
		}
	}

	// Four clients call without pause while B's instance is killed, until
	// B has dropped its route and a while after.
	var (
		mu      sync.Mutex
		calls   []callRecord
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for !stopped.Load() {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				c := callRecord{start: time.Now()}
				r, err := client.SayHello(ctx, &greeterpb.HelloRequest{Name: "x"})
				c.end, c.servedBy, c.err = time.Now(), r.GetServedBy(), err
				cancel()
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	killStart := time.Now()
	stopHeartbeats()
	sb.Stop()
	killEnd := time.Now()
	waitFor(t, 3*ttl, "b drops the killed instance's route after its ttl", func() bool {
		return !slices.ContainsFunc(b.routes("greeter"), func(r sdk.Route) bool { return r.Address == addrB })
	})
	time.Sleep(500 * time.Millisecond)
	stopped.Store(true)
	wg.Wait()

	var before, after, failed int
	var wrong []string // at most a few, for the report
	bad := func(format string, args ...any) {
		if len(wrong) < 5 {
			wrong = append(wrong, fmt.Sprintf(format, args...))
		}
	}
	at := func(t time.Time) string { return t.Format(time.StampMicro) }
	for _, c := range calls {
		inFlight := c.start.Before(killEnd) && c.end.After(killStart)
		switch {
		case c.err != nil && !inFlight:
			bad("call %s–%s failed outside the kill (%s–%s): %v", at(c.start), at(c.end), at(killStart), at(killEnd), c.err)
		case c.err != nil:
			failed++
		case c.end.Before(killStart):
			before++
			if c.servedBy != "B" {
				bad("call before the kill served by %q, want B", c.servedBy)
			}
		case c.start.After(killEnd):
			after++
			if c.servedBy != "A" {
				bad("call after the kill served by %q, want A", c.servedBy)
			}
		}
	}
	t.Logf("%d calls: %d before the kill (B), %d after (A), %d in flight at the kill failed", len(calls), before, after, failed)
	if len(wrong) > 0 {
		t.Errorf("calls that went wrong (first %d):\n%s", len(wrong), strings.Join(wrong, "\n"))
	}
	if before == 0 || after == 0 {
		t.Fatalf("the calls did not span the kill: %d before, %d after", before, after)
	}
}

// TestThousandStreamsLeaveNothingBehind opens 1000 concurrent bidi streams
// from node B to a service at node A, closes them (half by the client
// half-closing, half by cancelling), and then checks that nothing is left:
// the instance sees every stream end, the goroutine dumps of both proxies
// show no call still being forwarded, and those of both tunnels no session
// beyond the hosts' and the one the proxies share.
func TestThousandStreamsLeaveNothingBehind(t *testing.T) {
	const streams = 1000
	aUDP, bProxy := freeUDP(t, "127.0.0.1"), freeTCP(t, "127.0.0.1")
	a := startNode(t, nodeSpec{ID: "a", Listen: aUDP, Proxy: freeTCP(t, "127.0.0.1")})
	b := startNode(t, nodeSpec{ID: "b", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{aUDP}, Proxy: bProxy})

	var open atomic.Int64 // streams the instance is serving
	count := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		open.Add(1)
		defer open.Add(-1)
		return handler(srv, ss)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.StreamInterceptor(count))
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	registerWithSDK(t, a, interopService, lis.Addr().String(), s)

	client := testgrpc.NewTestServiceClient(dialProxy(t, bProxy, grpc.WithAuthority(interopService)))
	waitServed(t, "b's proxy serves interop at a", func(ctx context.Context) error {
		_, err := client.EmptyCall(ctx, &testpb.Empty{})
		return err
	})

	req := &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 16}}}
	type stream struct {
		s      testgrpc.TestService_FullDuplexCallClient
		cancel context.CancelFunc
	}
	opened := make([]stream, streams)
	errs := make(chan error, streams)
	var wg sync.WaitGroup
	for i := range opened {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(t.Context())
			st, err := client.FullDuplexCall(ctx)
			if err == nil {
				err = st.Send(req)
			}
			if err == nil {
				_, err = st.Recv()
			}
			if err != nil {
				cancel()
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			opened[i] = stream{st, cancel}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := open.Load(); n != streams {
		t.Fatalf("the instance serves %d streams, want all %d open at once", n, streams)
	}

	for i, st := range opened {
		wg.Go(func() {
			if i%2 == 1 {
				st.cancel()
				return
			}
			defer st.cancel()
			if err := st.s.CloseSend(); err != nil {
				t.Errorf("stream %d: close send: %v", i, err)
				return
			}
			if _, err := st.s.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("stream %d: after close send: %v, want the end of the stream", i, err)
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "the instance sees every stream end", func() bool { return open.Load() == 0 })

	// The tunnels dump first, while the proxies still hold whatever
	// sessions they have; each node's pair dumps at once, so that neither
	// dump sees the other plugin gone.
	tunnels := dumpGoroutines(t, "tunnel-quic", a, b)
	proxies := dumpGoroutines(t, "proxy-rpc", a, b)
	for _, n := range []*node{a, b} {
		var sessions int
		for _, g := range tunnels[n.name] {
			// The tunnel carries each session to its consumer in one goroutine.
			if strings.Contains(g, "sdk.(*carrier).toConsumer") {
				sessions++
			}
		}
		gs := proxies[n.name]
		var forwarding int
		for _, g := range gs {
			if strings.Contains(g, "plugins/proxy-rpc/forward.") {
				forwarding++
			}
		}
		t.Logf("%s: proxy runs %d goroutines, %d forwarding a call; tunnel carries %d sessions", n.name, len(gs), forwarding, sessions)
		// An idle proxy runs about 50 goroutines; 1000 leaked streams
		// would leave thousands.
		if forwarding > 0 || len(gs) > 200 {
			t.Errorf("proxy of %s after all streams closed: %d goroutines, %d of them still forwarding a call; the first:\n%s",
				n.name, len(gs), forwarding, strings.Join(gs[:min(len(gs), 20)], "\n\n"))
		}
		// What remains are the host's few control sessions and the one
		// the proxies of a and b share; the streams must not have left
		// sessions of their own behind.
		if sessions > 20 {
			t.Errorf("tunnel of %s still carries %d sessions after every call ended", n.name, sessions)
		}
	}
}

// dumpGoroutines makes the plugin processes named plugin of nodes dump
// their goroutines (SIGQUIT, which ends them; their nodes start them again)
// and returns them by node, one string per goroutine, read from each
// node's log, where the host writes what its plugins print.
func dumpGoroutines(t *testing.T, plugin string, nodes ...*node) map[string][]string {
	t.Helper()
	pids := map[string]int{}
	for _, n := range nodes {
		for _, p := range n.plugins() {
			if p.Name == plugin {
				pids[n.name] = p.PID
			}
		}
		if pids[n.name] == 0 {
			t.Fatalf("%s runs no %s plugin process", n.name, plugin)
		}
	}
	for _, n := range nodes {
		if err := syscall.Kill(pids[n.name], syscall.SIGQUIT); err != nil {
			t.Fatal(err)
		}
	}
	dumps := map[string][]string{}
	for _, n := range nodes {
		exited := fmt.Sprintf("plugin process exited: node=%s plugin=%s id=%d", n.name, microhost, pids[n.name])
		var log string
		waitFor(t, 10*time.Second, n.name+"'s "+plugin+" goroutine dump", func() bool {
			b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
			log = string(b)
			return strings.Contains(log, exited)
		})
		dumps[n.name] = parseGoroutines(log, "microhost.plugin."+plugin+".", exited)
	}
	return dumps
}

var goroutineHeader = regexp.MustCompile(`^goroutine \d+ .*\[.*\]:$`)

// parseGoroutines collects the goroutines of a Go traceback that the host
// logged line by line under logger prefix, up to the line containing end.
func parseGoroutines(log, prefix, end string) []string {
	var gs []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			gs = append(gs, strings.Join(cur, "\n"))
		}
		cur = nil
	}
	for line := range strings.Lines(log) {
		if strings.Contains(line, end) {
			break
		}
		_, msg, ok := strings.Cut(line, prefix)
		if !ok {
			continue
		}
		// "<logger suffix>: <message>: node=<id>"
		_, msg, _ = strings.Cut(msg, ": ")
		if i := strings.LastIndex(msg, ": node="); i >= 0 {
			msg = msg[:i]
		}
		switch {
		case msg == "SIGQUIT: quit":
			gs, cur = nil, nil // a dump starts; anything before is not part of it
		case goroutineHeader.MatchString(msg):
			flush()
			cur = []string{msg}
		case cur != nil && strings.TrimSpace(msg) != "":
			cur = append(cur, msg)
		}
	}
	flush()
	return gs
}
