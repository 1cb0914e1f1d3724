package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/test/netns"
	"github.com/microhost/microhost/test/testserver"
)

// The interop cases the proxy must pass, as against the server itself.
var interopCases = []string{
	"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
	"empty_stream", "timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response",
	"custom_metadata", "status_code_and_message", "special_status_message",
	"unimplemented_method", "unimplemented_service",
}

const (
	quicPort    = 8085
	proxyAddr   = "127.0.0.1:9090"
	interopPort = 10000
	// interopService is the name the interop server is registered under.
	// The client names it in :authority (its TLS server name), so calls to
	// grpc.testing.UnimplementedService reach the real server too and get
	// its Unimplemented, not the proxy's NotFound.
	interopService = "interop"
	srvName        = "_microhost._udp.e2e.test"
)

// TestNetworkAcrossNamespaces runs three nodes on three hosts (network
// namespaces joined pairwise by veth links). Each link is found one way
// only: host 1 dials host 2 from its static peers, host 2 dials host 3
// found through a real dnsmasq (SRV), host 3 dials host 1 found through a
// real nginx serving the node list. grpc-go's interop server runs behind
// host 1, its client on host 3 calls through host 3's proxy.
func TestNetworkAcrossNamespaces(t *testing.T) {
	lab := netns.New(t, 3)
	h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	server, client := interopBinaries(t)

	// Discovery servers each run inside the host that uses them, on its
	// loopback: that node has no other way to learn the peer they name.
	var dnsAddr, nodesURL string
	inNetns(t, h2.NS, func() {
		dnsAddr = testserver.StartDnsmasq(t, testserver.DnsmasqConfig{
			TTL:   1,
			Local: []string{"e2e.test"},
			SRV:   []testserver.SRV{{Name: srvName, Target: "h3.e2e.test", Port: quicPort, Priority: 1, Weight: 1}},
			Hosts: []testserver.Host{{Name: "h3.e2e.test", Addrs: []string{h3.LinkAddr(2)}}},
		}).Addr()
	})
	root := t.TempDir()
	list := fmt.Sprintf(`{"nodes":[{"address":%q,"priority":1}]}`, hostPort(h1.LinkAddr(3), quicPort))
	if err := os.WriteFile(filepath.Join(root, "nodes.json"), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	inNetns(t, h3.NS, func() {
		nodesURL = testserver.StartNginx(t, testserver.NginxConfig{Root: root}).URL() + "/nodes.json"
	})

	startInteropServerIn(t, h1, server)

	// The proxy on host 3 serves its clients over TLS with a certificate
	// for the name "interop", which is then the calls' :authority.
	issueCert(t, "interop-proxy", "--dns", interopService)

	spec := func(h *netns.Host, extra string) nodeSpec {
		return nodeSpec{
			ID:     fmt.Sprintf("h%d", h.Index),
			Listen: hostPort("0.0.0.0", quicPort),
			Wrap:   []string{"ip", "netns", "exec", h.NS},
			// A restarted peer is redialled within a second.
			Tunnel: "    reconnect_max = \"1s\"\n",
			Extra:  extra,
		}
	}
	s1 := spec(h1, proxyBlock(proxyAddr, "", "")+fmt.Sprintf("service %q {\n  address = %q\n}\n", interopService, hostPort("127.0.0.1", interopPort)))
	s1.Peers = []string{hostPort(h2.LinkAddr(1), quicPort)}
	s2 := spec(h2, proxyBlock(proxyAddr, "", "")+fmt.Sprintf(`resolver "dns" {
  config {
    name   = %q
    server = %q
  }
}
`, srvName, dnsAddr))
	s3 := spec(h3, proxyBlock(proxyAddr, filepath.Join(certDir, "interop-proxy.pem"), filepath.Join(certDir, "interop-proxy-key.pem"))+fmt.Sprintf(`resolver "http" {
  config {
    url = %q
  }
}
`, nodesURL))
	n1, n2, n3 := startNode(t, s1), startNode(t, s2), startNode(t, s3)

	// Each link exists, dialled by the node whose only source names it.
	waitLink(t, n1, "h2", hostPort(h2.LinkAddr(1), quicPort), "the static peer list")
	waitLink(t, n2, "h3", hostPort(h3.LinkAddr(2), quicPort), "dnsmasq's SRV record")
	waitLink(t, n3, "h1", hostPort(h1.LinkAddr(3), quicPort), "nginx's node list")

	interop := func(ctx context.Context, testCase string) error {
		return runInterop(ctx, h3, client, testCase)
	}
	waitFor(t, 20*time.Second, "host 3 learns the interop service from host 1", func() bool {
		return len(n3.routes(interopService)) > 0
	})
	runAllInterop(t, interop)
	t.Logf("host 3's routes before the cut:\n%s", n3.cli("network", "routes"))

	// Cut host 1 from host 3: their direct link dies, calls go through host 2.
	// A call waiting for its response when its link goes must not hang.
	inflight := awaitAcrossCut(t, h3)
	lab.Cut(1, 3)
	since := time.Now()
	waitFor(t, 15*time.Second, "host 3 routes the interop service only through host 2", func() bool {
		rs := n3.routes(interopService)
		return len(rs) > 0 && allGateways(rs, "h2")
	})
	// Checked before any other call: a call cancelled on the dead session
	// makes the proxy write to it, which would end the stream even if the
	// session's failure itself were never passed on.
	if err := inflight(); err != nil {
		t.Error(err)
	}
	waitFor(t, 15*time.Second, "calls from host 3 go through host 2 after the cut", func() bool {
		return interop(t.Context(), "empty_unary") == nil
	})
	t.Logf("calls pass through host 2 %s after the cut", time.Since(since).Round(time.Millisecond))
	runAllInterop(t, interop)
	t.Logf("host 3's routes after the cut:\n%s", n3.cli("network", "routes"))

	// Kill host 2: the routes through it disappear and host 3 is cut off.
	n2.kill()
	since = time.Now()
	waitFor(t, 10*time.Second, "host 3 drops the routes through the killed host 2", func() bool {
		for _, r := range n3.routes("") {
			if r.Gateway == "h2" {
				return false
			}
		}
		return true
	})
	t.Logf("host 3 dropped the routes through host 2 %s after it was killed", time.Since(since).Round(time.Millisecond))
	if err := interop(t.Context(), "empty_unary"); err == nil {
		t.Fatal("a call from host 3 succeeded with host 1 cut off and host 2 dead")
	}

	// Restart host 2: the network converges again.
	n2.restart()
	since = time.Now()
	waitFor(t, 30*time.Second, "calls from host 3 go through the restarted host 2", func() bool {
		return interop(t.Context(), "empty_unary") == nil
	})
	t.Logf("calls pass again %s after host 2 answers its admin API", time.Since(since).Round(time.Millisecond))
	for _, r := range n3.routes(interopService) {
		if r.Gateway != "h2" {
			t.Fatalf("host 3 routes through %q with the link to host 1 cut: %+v", r.Gateway, r)
		}
	}
	runAllInterop(t, interop)

	// Mend the link: host 3 redials host 1 and routes directly again.
	lab.Mend(1, 3)
	waitFor(t, 20*time.Second, "host 3 routes directly to host 1 again", func() bool {
		for _, r := range n3.routes(interopService) {
			if r.Gateway == "h1" {
				return true
			}
		}
		return false
	})
	if err := interop(t.Context(), "large_unary"); err != nil {
		t.Fatal(err)
	}
}

// awaitAcrossCut opens a bidirectional stream through h's proxy, makes a
// round trip on it, then asks for a response that the server sends after
// a pause. The returned function waits for that response or an error
// (which one depends on whether the stream used the link the test cuts)
// and returns an error only if neither came: the call hung.
func awaitAcrossCut(t *testing.T, h *netns.Host) (wait func() error) {
	t.Helper()
	roots := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil || !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("reading the CA certificate: %v", err)
	}
	cc, err := grpc.NewClient("passthrough:///"+proxyAddr,
		grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(roots, interopService)),
		grpc.WithContextDialer(netnsDialer(h.NS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	pause := 3 * time.Second
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	ask := func(after time.Duration) error {
		return stream.Send(&testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 10, IntervalUs: int32(after / time.Microsecond)}},
		})
	}
	if err == nil {
		err = ask(0)
	}
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil {
		err = ask(pause)
	}
	if err != nil {
		t.Fatalf("a stream through host %d's proxy: %v", h.Index, err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		got <- err
	}()
	limit := pause + 10*time.Second
	deadline := time.Now().Add(limit)
	return func() error {
		defer cancel()
		select {
		case err := <-got:
			if err != nil {
				t.Logf("the stream open across the cut ended: %v", err)
			}
			return nil
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("a call waiting for its response when its link was cut got neither the response nor an error within %s: "+
				"the failure of the tunnel session under it never reached the proxy", limit)
		}
	}
}

// netnsDialer dials TCP from inside the network namespace ns.
func netnsDialer(ns string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := enterNetns(ns, func() error {
			var err error
			c, err = new(net.Dialer).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// runAllInterop runs every interop case and fails the test for each that fails.
func runAllInterop(t *testing.T, interop func(context.Context, string) error) {
	t.Helper()
	for _, c := range interopCases {
		if err := interop(t.Context(), c); err != nil {
			t.Errorf("interop case %s: %v", c, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// runInterop runs one case of grpc-go's interop client in h against the
// node's TLS proxy, naming the interop service as the TLS server name.
func runInterop(ctx context.Context, h *netns.Host, client, testCase string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	args := []string{"netns", "exec", h.NS, client,
		"--server_host=127.0.0.1", "--server_port=" + strings.TrimPrefix(proxyAddr, "127.0.0.1:"),
		"--use_tls=true", "--use_test_ca=true", "--ca_file=" + filepath.Join(certDir, "ca.pem"),
		"--server_host_override=" + interopService, "--test_case=" + testCase}
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v:\n%s", err, tail(string(out), 20))
	}
	return nil
}

// startInteropServerIn runs the interop server in h until the test ends.
func startInteropServerIn(t *testing.T, h *netns.Host, bin string) {
	t.Helper()
	cmd := h.Command(bin, fmt.Sprintf("--port=%d", interopPort))
	log, err := os.Create(filepath.Join(t.TempDir(), "interop-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("interop server log:\n%s", tail(string(b), 50))
		}
	})
	inNetns(t, h.NS, func() {
		waitFor(t, 10*time.Second, "the interop server listens", func() bool {
			c, err := net.DialTimeout("tcp", hostPort("127.0.0.1", interopPort), time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	})
}

// inNetns runs fn with the calling goroutine's thread in the network
// namespace ns, so that servers fn starts (and the sockets it opens) live
// there.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	if err := enterNetns(ns, func() error { fn(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// enterNetns runs fn on a thread moved into the network namespace ns. The
// thread is given back to the runtime only once it is back in its own
// namespace; otherwise it ends with the goroutine.
func enterNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer own.Close()
	target, err := os.Open(filepath.Join("/var/run/netns", ns))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", ns, err)
	}
	defer func() {
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// waitLink waits until n has an outbound link up to peer at addr.
func waitLink(t *testing.T, n *node, peer, addr, source string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s dials %s at %s, found through %s", n.name, peer, addr, source), func() bool {
		for _, l := range n.links() {
			if l.Peer == peer && l.Address == addr && l.Outbound && l.State == sdk.LinkUp {
				return true
			}
		}
		return false
	})
}

// links lists n's links to its peers.
func (n *node) links() []sdk.Link {
	n.t.Helper()
	out := n.cli("network", "connections", "--json")
	var links []sdk.Link
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		n.t.Fatalf("network connections --json: %v\n%s", err, out)
	}
	return links
}

// routes lists n's routes, of one service or ("") all.
func (n *node) routes(service string) []sdk.Route {
	n.t.Helper()
	args := []string{"network", "routes", "--json"}
	if service != "" {
		args = append(args, "--service", service)
	}
	out := n.cli(args...)
	var routes []sdk.Route
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		n.t.Fatalf("network routes --json: %v\n%s", err, out)
	}
	return routes
}

func allGateways(routes []sdk.Route, gateway string) bool {
	for _, r := range routes {
		if r.Gateway != gateway {
			return false
		}
	}
	return true
}

func hostPort(host string, port int) string { return fmt.Sprintf("%s:%d", host, port) }
