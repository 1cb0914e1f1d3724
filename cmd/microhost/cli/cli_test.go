package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/admin/admintest"
	"github.com/microhost/microhost/sdk"
	"github.com/spf13/cobra"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testNode(t *testing.T) *admintest.Node {
	n := admintest.New(t, "a", "net")
	n.NodeList = []admin.NodeInfo{
		{ID: "c", Hops: 2, Via: "b"},
		{ID: "a", Address: "10.0.0.1:8085"},
		{ID: "b", Address: "10.0.0.2:8085", Hops: 1, Metric: 12},
	}
	// Both ends report the a-b link, each with its own measurement.
	n.Edges = []admin.Edge{{From: "a", To: "b", Metric: 12}, {From: "b", To: "a", Metric: 14}, {From: "b", To: "c", Metric: 18}}
	n.RouteTable = []sdk.Route{
		{Service: "greeter", Address: "10.0.0.3:50051", Gateway: "b", Network: "net", Router: "c", Link: sdk.LinkNetwork, Metric: 30},
		{Service: "greeter", Address: "127.0.0.1:50051", Network: "net", Router: "a", Link: sdk.LinkLocal, Metric: 1},
		{Service: "store", Address: "127.0.0.1:6000", Network: "net", Router: "a", Link: sdk.LinkLocal, Metric: 1},
	}
	n.LinkList = []sdk.Link{{ID: "l1", Peer: "b", Address: "10.0.0.2:8085", Outbound: true, State: sdk.LinkUp, RTT: 6 * time.Millisecond, MinRTT: 400 * time.Microsecond, BytesIn: 10, BytesOut: 20, Errors: 1, Drops: 2}}
	n.PluginList = []admin.PluginStatus{
		{Name: "tunnel.quic", Kind: sdk.KindTunnel, Type: "quic", PID: 4242, State: "running"},
		{Name: "resolver.dns", Kind: sdk.KindResolver, Type: "dns", Address: "10.0.0.9:7000", State: "restarting", Restarts: 3, LastError: "exit status 2"},
	}
	n.DampingList = []sdk.DampingState{{Route: n.RouteTable[0], Penalty: 1500, Flaps: 3, Suppressed: true}}
	return n
}

// run executes the CLI in-process, as main attaches it.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "microhost", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(Commands()...)
	plugin := &cobra.Command{Use: "plugin"}
	plugin.AddCommand(PluginStatusCommand())
	root.AddCommand(plugin)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("microhost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func decode[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return v
}

// table collapses the column padding so that a check does not depend on widths.
func table(out string) string {
	var lines []string
	for line := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n") {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	return strings.Join(lines, "\n")
}

func expectTable(t *testing.T, out, want string) {
	t.Helper()
	if got := table(out); got != strings.TrimSpace(want) {
		t.Fatalf("table:\n%s\nwant:\n%s", got, strings.TrimSpace(want))
	}
}

func TestNetworkNodes(t *testing.T) {
	addr := admintest.Serve(t, testNode(t))
	expectTable(t, mustRun(t, "network", "nodes", "--admin", addr), `
ID ADDRESS HOPS METRIC VIA
a 10.0.0.1:8085 0 - -
b 10.0.0.2:8085 1 12 -
c - 2 - b`)

	nodes := decode[[]map[string]any](t, mustRun(t, "network", "nodes", "--admin", addr, "--json"))
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n["id"].(string))
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) || nodes[2]["via"] != "b" {
		t.Fatalf("nodes JSON = %v", nodes)
	}
}

func TestNetworkRoutes(t *testing.T) {
	addr := admintest.Serve(t, testNode(t))
	expectTable(t, mustRun(t, "network", "routes", "--admin", addr), `
SERVICE ADDRESS GATEWAY ROUTER NETWORK LINK METRIC
greeter 127.0.0.1:50051 - a net local 1
greeter 10.0.0.3:50051 b c net network 30
store 127.0.0.1:6000 - a net local 1`)

	routes := decode[[]map[string]any](t, mustRun(t, "network", "routes", "--service", "greeter", "--json", "--admin", addr))
	if len(routes) != 2 {
		t.Fatalf("routes of greeter = %v", routes)
	}
	for _, field := range []string{"service", "address", "gateway", "network", "router", "link", "metric"} {
		if _, ok := routes[1][field]; !ok {
			t.Errorf("route JSON lacks %q: %v", field, routes[1])
		}
	}
	if r := routes[1]; r["gateway"] != "b" || r["router"] != "c" || r["metric"] != 30.0 || r["link"] != "network" {
		t.Fatalf("remote route JSON = %v", r)
	}
	if out := mustRun(t, "network", "routes", "--service", "none", "--json", "--admin", addr); strings.TrimSpace(out) != "[]" {
		t.Fatalf("no routes as JSON = %q, want []", out)
	}
}

func TestNetworkConnectionsDampingPlugins(t *testing.T) {
	addr := admintest.Serve(t, testNode(t))
	expectTable(t, mustRun(t, "network", "connections", "--admin", addr), `
PEER ADDRESS DIRECTION STATE RTT MIN RTT BYTES IN BYTES OUT ERRORS DROPS
b 10.0.0.2:8085 out up 6ms 400µs 10 20 1 2`)
	links := decode[[]sdk.Link](t, mustRun(t, "network", "connections", "--json", "--admin", addr))
	if len(links) != 1 || links[0].Peer != "b" || links[0].RTT != 6*time.Millisecond || links[0].MinRTT != 400*time.Microsecond {
		t.Fatalf("links JSON = %+v", links)
	}

	expectTable(t, mustRun(t, "network", "damping", "--admin", addr), `
SERVICE ADDRESS ROUTER PENALTY FLAPS SUPPRESSED SINCE
greeter 10.0.0.3:50051 c 1500 3 yes -`)

	expectTable(t, mustRun(t, "plugin", "status", "--admin", addr), `
NAME KIND TYPE PROCESS STATE SINCE RESTARTS LAST ERROR
tunnel.quic tunnel quic pid 4242 running - 0 -
resolver.dns resolver dns 10.0.0.9:7000 restarting - 3 exit status 2`)
	plugins := decode[[]map[string]any](t, mustRun(t, "plugin", "status", "--json", "--admin", addr))
	if len(plugins) != 2 || plugins[0]["pid"] != 4242.0 || plugins[1]["last_error"] != "exit status 2" {
		t.Fatalf("plugins JSON = %v", plugins)
	}
}

func TestNetworkGraph(t *testing.T) {
	addr := admintest.Serve(t, testNode(t))
	expectTable(t, mustRun(t, "network", "graph", "--admin", addr), `
NODE PEERS (METRIC)
a (local) b (12)
b a (12), c (18)
c b (18)`)

	dot := mustRun(t, "network", "graph", "--format", "dot", "--admin", addr)
	lines := strings.Split(strings.TrimSpace(dot), "\n")
	if !regexp.MustCompile(`^(di)?graph \w* ?\{$`).MatchString(lines[0]) || lines[len(lines)-1] != "}" {
		t.Fatalf("not a DOT graph:\n%s", dot)
	}
	edge := regexp.MustCompile(`^\s*"([^"]+)" -- "([^"]+)" \[label="(\d+)"\];$`)
	var edges []string
	for _, l := range lines[1 : len(lines)-1] {
		if m := edge.FindStringSubmatch(l); m != nil {
			edges = append(edges, m[1]+"-"+m[2]+":"+m[3])
		} else if !regexp.MustCompile(`^\s*"[^"]+"( \[style=bold\])?;$`).MatchString(l) {
			t.Fatalf("unexpected DOT line %q in\n%s", l, dot)
		}
	}
	if !slices.Equal(edges, []string{"a-b:12", "b-c:18"}) {
		t.Fatalf("DOT edges = %v in\n%s", edges, dot)
	}
	if !strings.Contains(dot, `"a" [style=bold];`) {
		t.Fatalf("the local node is not marked:\n%s", dot)
	}

	for _, args := range [][]string{{"--format", "json"}, {"--json"}} {
		g := decode[admin.Graph](t, mustRun(t, append([]string{"network", "graph", "--admin", addr}, args...)...))
		if g.Local != "a" || len(g.Nodes) != 3 || len(g.Edges) != 3 {
			t.Fatalf("graph JSON = %+v", g)
		}
	}
	if _, err := run(t, "network", "graph", "--format", "svg", "--admin", addr); err == nil || !strings.Contains(err.Error(), "want table, dot or json") {
		t.Fatalf("--format svg = %v", err)
	}
}

func TestServiceRegisterListDeregister(t *testing.T) {
	n := testNode(t)
	addr := admintest.Serve(t, n)

	out := mustRun(t, "service", "register", "greeter", "--address", "127.0.0.1:50051",
		"--endpoint", "helloworld.Greeter", "--endpoint", "grpc.health.v1.Health", "--metadata", "zone=x", "--ttl", "30s", "--admin", addr)
	if !strings.Contains(out, "registered greeter at 127.0.0.1:50051 (ttl 30s") {
		t.Fatalf("register output = %q", out)
	}
	mustRun(t, "service", "register", "store", "--address", "127.0.0.1:6000", "--admin", addr)
	mustRun(t, "service", "heartbeat", "greeter", "--address", "127.0.0.1:50051", "--admin", addr)

	list := mustRun(t, "service", "list", "--admin", addr)
	if rows := strings.Split(table(list), "\n"); len(rows) != 3 ||
		rows[0] != "NAME ADDRESS ENDPOINTS SOURCE HEALTH TTL EXPIRES" ||
		!strings.HasPrefix(rows[1], "greeter 127.0.0.1:50051 helloworld.Greeter,grpc.health.v1.Health api none 30s ") ||
		rows[2] != "store 127.0.0.1:6000 - api none - -" {
		t.Fatalf("service list:\n%s", list)
	}
	if again := mustRun(t, "network", "services", "--admin", addr); table(again) != table(list) {
		t.Fatalf("network services differs from service list:\n%s", again)
	}
	svcs := decode[[]map[string]any](t, mustRun(t, "service", "list", "--json", "--admin", addr))
	if len(svcs) != 2 || svcs[0]["name"] != "greeter" || svcs[0]["source"] != "api" || svcs[0]["metadata"].(map[string]any)["zone"] != "x" {
		t.Fatalf("services JSON = %v", svcs)
	}

	mustRun(t, "service", "deregister", "greeter", "--address", "127.0.0.1:50051", "--admin", addr)
	mustRun(t, "service", "deregister", "store", "--address", "127.0.0.1:6000", "--admin", addr)
	if out := mustRun(t, "service", "list", "--json", "--admin", addr); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list as JSON = %q", out)
	}

	_, err := run(t, "service", "deregister", "greeter", "--address", "127.0.0.1:50051", "--admin", addr)
	if err == nil || !strings.Contains(err.Error(), `service "greeter" at 127.0.0.1:50051 is not registered`) {
		t.Fatalf("deregistering twice = %v", err)
	}
	_, err = run(t, "service", "register", "greeter", "--address", "nowhere", "--admin", addr)
	if err == nil || !strings.Contains(err.Error(), `address "nowhere" is not HOST:PORT`) {
		t.Fatalf("register with a bad address = %v", err)
	}
	_, err = run(t, "service", "register", "greeter", "--admin", addr)
	if err == nil || !strings.Contains(err.Error(), `"address" not set`) {
		t.Fatalf("register without --address = %v", err)
	}
}

func TestUnreachableAdmin(t *testing.T) {
	addr := "unix:" + filepath.Join(t.TempDir(), "none.sock")
	_, err := run(t, "network", "nodes", "--admin", addr)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the admin API at "+addr) ||
		!strings.Contains(err.Error(), "is `microhost run` running? set --admin or MICROHOST_ADMIN") {
		t.Fatalf("unreachable admin = %v", err)
	}
	_, err = run(t, "network", "nodes", "--admin", "nonsense")
	if err == nil || !strings.Contains(err.Error(), `admin address "nonsense" is neither HOST:PORT nor unix:/path`) {
		t.Fatalf("bad --admin = %v", err)
	}
}

func TestAdminAddressFromEnvironment(t *testing.T) {
	addr := admintest.Serve(t, testNode(t))
	t.Setenv(EnvAdmin, addr)
	if out := mustRun(t, "network", "nodes"); !strings.Contains(out, "10.0.0.2:8085") {
		t.Fatalf("nodes via %s = %q", EnvAdmin, out)
	}
}
