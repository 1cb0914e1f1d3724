package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
)

// mustParse parses src as dir/config.hcl and fails on any error.
func mustParse(t *testing.T, dir, src string, vars map[string]string) *Config {
	t.Helper()
	cfg, diags := Parse([]byte(src), filepath.Join(dir, "config.hcl"), vars)
	if diags.HasErrors() {
		t.Fatalf("unexpected errors: %s", diags.Error())
	}
	return cfg
}

// parseErrors parses src and returns its error diagnostics as "line: summary: detail".
func parseErrors(t *testing.T, src string, vars map[string]string) []string {
	t.Helper()
	_, diags := Parse([]byte(src), "test.hcl", vars)
	var out []string
	for _, d := range diags.Errs() {
		diag := d.(*hcl.Diagnostic)
		line := 0
		if diag.Subject != nil {
			line = diag.Subject.Start.Line
		}
		out = append(out, strings.Join([]string{strconv.Itoa(line), diag.Summary, diag.Detail}, ": "))
	}
	return out
}

const minimal = `
tls { insecure = true }
tunnel "quic" {}
router "memory" {}
`

func TestExampleConfigLoads(t *testing.T) {
	cfg, diags := loadAll(t, "../../config.hcl", nil)
	if diags.HasErrors() {
		t.Fatalf("config.hcl: %s", diags.Error())
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Node
	if n.Listen != "127.0.0.1:8085" || n.Admin != "127.0.0.1:8086" || n.HTTP != "127.0.0.1:8087" {
		t.Errorf("addresses = %q %q %q", n.Listen, n.Admin, n.HTTP)
	}
	if n.DataDir != filepath.Join(root, ".microhost") {
		t.Errorf("data_dir = %q, want it under %s", n.DataDir, root)
	}
	if !cfg.TLS.Insecure || cfg.Tunnel.Name != "tunnel-quic" || cfg.Router.Name != "router-memory" || cfg.Proxy.Name != "proxy-rpc" {
		t.Errorf("components: tls=%+v tunnel=%+v router=%+v proxy=%+v", cfg.TLS, cfg.Tunnel, cfg.Router, cfg.Proxy)
	}
	raw, diags := DecodeComponentConfig(cfg.Proxy.Config, testSchemas["proxy-rpc"], cfg.EvalContext, "")
	if diags.HasErrors() || string(raw) != `{"listen":"127.0.0.1:9090"}` {
		t.Errorf("proxy config = %s, %v", raw, diags)
	}
}

func TestFullConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := mustParse(t, dir, `
node {
  id        = "a"
  network   = "demo"
  listen    = ":8085"
  advertise = "203.0.113.5:8085"
  admin     = "unix:run/admin.sock"
  http      = "127.0.0.1:8087"
  peers     = ["127.0.0.1:8095", "[::1]:8096", "node-b.example.test:8085"]
  data_dir  = "/var/lib/microhost"
}
tls {
  ca   = "certs/ca.pem"
  cert = "/etc/microhost/a.pem"
  key  = "certs/a-key.pem"
}
tunnel "quic" {
  plugin = "bin/tunnel"
  sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
}
router "memory" { address = "10.0.0.9:7000" }
resolver "dns" {
  config {
    name = "_microhost._udp.example.test"
  }
}
resolver "dns"  {
  name = "backup-dns"
  config {
    name = "_microhost._udp.backup.test"
  }
}
resolver "http" {
  config {
    url = "http://127.0.0.1:18080/network"
  }
}
proxy "rpc" {
  config {
    listen = "127.0.0.1:9090"
  }
}
service "greeter" {
  address   = "127.0.0.1:50051"
  endpoints = ["helloworld.Greeter"]
  metadata  = { version = "1" }
  check {
    interval = "5s"
  }
}
service "plain" { address = "localhost:50052" }
`, nil)

	wantNode := Node{ID: "a", Network: "demo", Listen: ":8085", Advertise: "203.0.113.5:8085",
		Admin: "unix:" + filepath.Join(dir, "run/admin.sock"), HTTP: "127.0.0.1:8087",
		Peers:   []string{"127.0.0.1:8095", "[::1]:8096", "node-b.example.test:8085"},
		DataDir: "/var/lib/microhost"}
	gotNode := cfg.Node
	gotNode.Source = Source{}
	if !reflect.DeepEqual(gotNode, wantNode) {
		t.Errorf("node:\n got %+v\nwant %+v", gotNode, wantNode)
	}
	if r := cfg.Node.Range("listen"); r.Start.Line != 5 {
		t.Errorf("listen range = %v, want line 5", r)
	}
	if r := cfg.Node.Range("not-set"); r != cfg.Node.DeclRange || r.Start.Line != 2 {
		t.Errorf("range of unset argument = %v, want the node block", r)
	}

	if cfg.TLS.CA != filepath.Join(dir, "certs/ca.pem") || cfg.TLS.Cert != "/etc/microhost/a.pem" || cfg.TLS.Key != filepath.Join(dir, "certs/a-key.pem") || cfg.TLS.Insecure {
		t.Errorf("tls = %+v", cfg.TLS)
	}
	if cfg.Tunnel.Plugin != filepath.Join(dir, "bin/tunnel") || cfg.Tunnel.SHA256 != "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789" {
		t.Errorf("tunnel = %+v", cfg.Tunnel)
	}
	if cfg.Router.Address != "10.0.0.9:7000" || cfg.Router.Plugin != "" {
		t.Errorf("router = %+v", cfg.Router)
	}
	var names []string
	for _, c := range cfg.Components() {
		names = append(names, c.Name)
	}
	if want := []string{"tunnel-quic", "router-memory", "resolver-dns", "backup-dns", "resolver-http", "proxy-rpc"}; !reflect.DeepEqual(names, want) {
		t.Errorf("components = %v, want %v", names, want)
	}
	if cfg.Resolvers[1].Builtin() != "resolver-dns" {
		t.Errorf("named resolver builtin = %q", cfg.Resolvers[1].Builtin())
	}

	if len(cfg.Services) != 2 {
		t.Fatalf("services = %+v", cfg.Services)
	}
	g := cfg.Services[0]
	wantInstance := sdk.Service{Name: "greeter", Address: "127.0.0.1:50051", Endpoints: []string{"helloworld.Greeter"}, Metadata: map[string]string{"version": "1"}}
	if !reflect.DeepEqual(g.Instance(), wantInstance) {
		t.Errorf("greeter = %+v", g.Instance())
	}
	if g.Check == nil || g.Check.Interval != 5*time.Second || g.Check.Timeout != DefaultCheckTimeout {
		t.Errorf("greeter check = %+v", g.Check)
	}
	if cfg.Services[1].Check != nil {
		t.Errorf("plain has a check: %+v", cfg.Services[1].Check)
	}

	nc := cfg.NodeConfig()
	if nc.ID != "a" || nc.TLS.CA != cfg.TLS.CA || len(nc.Peers) != 3 {
		t.Errorf("NodeConfig = %+v", nc)
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg, diags := Parse([]byte(minimal), filepath.Join(dir, "config.hcl"), nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || diags[0].Summary != "Insecure development mode" {
		t.Errorf("want exactly the insecure-mode warning, got %v", diags)
	}
	n := cfg.Node
	dataDir := filepath.Join(dir, DefaultDataDir)
	if n.Network != DefaultNetwork || n.Listen != DefaultListen || n.DataDir != dataDir ||
		n.Admin != DefaultAdmin || n.HTTP != "" || n.ID != "" {
		t.Errorf("defaults = %+v", n)
	}
	if cfg.Proxy != nil || len(cfg.Resolvers) != 0 {
		t.Errorf("unexpected components: %+v %+v", cfg.Proxy, cfg.Resolvers)
	}
	if _, ok := cfg.Tunnel.Config.(absentBody); !ok {
		t.Errorf("tunnel without config block has body %T", cfg.Tunnel.Config)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // substrings of the errors, in order
	}{
		{"unknown top-level block", minimal + `listner {}`, []string{"5: Unsupported block type"}},
		{"unknown argument with suggestion", minimal + `node { netwrok = "x" }`, []string{`Did you mean "network"?`}},
		{"plugin argument outside config", minimal + `proxy "rpc" { listen = ":9090" }`, []string{"go inside the config { } block"}},
		{"duplicate router", minimal + `router "memory" {}`, []string{"5: Duplicate router block"}},
		{"duplicate node", minimal + "node {}\nnode {}", []string{"6: Duplicate node block"}},
		{"duplicate config block", minimal + `proxy "rpc" {
config {}
config {}
}`, []string{"7: Duplicate config block"}},
		{"plugin and address", minimal + `proxy "rpc" {
plugin = "x"
address = "127.0.0.1:1"
}`, []string{"7: Conflicting arguments"}},
		{"sha256 without plugin", minimal + `proxy "rpc" { sha256 = "00" }`, []string{"Argument sha256 without plugin", "Invalid sha256"}},
		{"bad type label", minimal + `resolver "DNS!" {}`, []string{"Invalid resolver type"}},
		{"duplicate resolver name", minimal + `resolver "dns" { name = "r" }
resolver "http" { name = "r" }`, []string{"6: Duplicate resolver \"r\""}},
		{"name clashes with builtin name", minimal + `resolver "dns" { name = "router-memory" }`, []string{"Duplicate resolver \"router-memory\""}},
		{"duplicate service", minimal + `service "a" { address = "127.0.0.1:1" }
service "a" { address = "127.0.0.1:2" }`, []string{"6: Duplicate service"}},
		{"service without address", minimal + `service "a" {}`, []string{`"address" is required`}},
		{"bad service name", minimal + `service "a b" { address = "127.0.0.1:1" }`, []string{"Invalid service name"}},
		{"bad node id", minimal + `node { id = "../etc" }`, []string{"Invalid node id"}},
		{"bad min_peers", minimal + `node { min_peers = 2.5 }`, []string{"Invalid min_peers"}},
		{"negative min_peers", minimal + `node { min_peers = -1 }`, []string{"Invalid min_peers"}},
		{"port zero peer", minimal + `node { peers = ["127.0.0.1:0"] }`, []string{"port 0 cannot be connected to"}},
		{"null peer", minimal + `node { peers = ["127.0.0.1:1", null] }`, []string{"must not be null"}},
		{"empty unix socket", minimal + `node { admin = "unix:" }`, []string{"needs a path"}},
		{"long unix socket", minimal + `node { admin = "unix:/` + strings.Repeat("x", 120) + `" }`, []string{"the limit is 107"}},
		{"empty path", minimal + `proxy "rpc" { plugin = "" }`, []string{"must not be empty"}},
		{"missing tls", `tunnel "quic" {}
router "memory" {}`, []string{"Missing tls block"}},
		{"syntax error", `node {`, []string{"Unclosed configuration block"}},
		{"many errors at once", minimal + `node {
listen = "x"
admin = "y"
}
service "s" {}`, []string{"6: Invalid address", "7: Invalid address", "9: Missing required argument"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := parseErrors(t, tc.src, nil)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(tc.want), strings.Join(errs, "\n"))
			}
			for i, want := range tc.want {
				if !strings.Contains(errs[i], want) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i], want)
				}
			}
		})
	}
}

func TestInsecureWithCertificatesWarns(t *testing.T) {
	_, diags := Parse([]byte(`
tls {
  insecure = true
  ca       = "ca.pem"
}
tunnel "quic" {}
router "memory" {}
`), "t.hcl", nil)
	if diags.HasErrors() || len(diags) != 1 || !strings.Contains(diags[0].Detail, "are ignored") {
		t.Errorf("diags = %v", diags)
	}
}

func TestLoadMissingFile(t *testing.T) {
	cfg, diags := Load(filepath.Join(t.TempDir(), "nope.hcl"), nil)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "no such file") {
		t.Errorf("diags = %v", diags)
	}
	if cfg == nil || cfg.Files == nil {
		t.Errorf("Load must return a Config with Files even on failure")
	}
}

func TestJSONSyntax(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	src := `{
  "node": {"listen": "127.0.0.1:8085", "peers": ["127.0.0.1:8095"]},
  "tls": {"insecure": true},
  "tunnel": {"quic": {}},
  "router": {"memory": {}},
  "resolver": {"dns": {"config": {"name": "_m._udp.example.test", "timeout": "5s"}}}
}`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := Load(path, nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	raw, diags := DecodeComponentConfig(cfg.Resolvers[0].Config, testSchemas["resolver-dns"], cfg.EvalContext, "")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil || got["name"] != "_m._udp.example.test" || got["timeout"] != "5s" {
		t.Errorf("config = %s (%v)", raw, err)
	}
	if cfg.Node.Peers[0] != "127.0.0.1:8095" {
		t.Errorf("peers = %v", cfg.Node.Peers)
	}
}

func TestWriteDiagnosticsNamesFileAndLine(t *testing.T) {
	cfg, diags := Parse([]byte(minimal+"bogus {}\n"), "my.hcl", nil)
	var b strings.Builder
	if err := WriteDiagnostics(&b, diags, cfg.Files); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "on my.hcl line 5") || !strings.Contains(out, "5: bogus {}") {
		t.Errorf("output:\n%s", out)
	}
}

func TestPeerErrorPointsAtElement(t *testing.T) {
	_, diags := Parse([]byte(minimal+`node {
  peers = ["10.0.0.1:8085", "10.0.0.2"]
}`), "t.hcl", nil)
	errs := diags.Errs()
	if len(errs) != 1 {
		t.Fatalf("diags = %v", diags)
	}
	if s := errs[0].(*hcl.Diagnostic).Subject; s.Start.Line != 6 || s.Start.Column != 29 {
		t.Errorf("error at %v, want line 6 column 29 (the second peer)", s)
	}
}

// Inputs built to exhaust the parser are refused before it runs.
func TestAbsurdInputsAreRefused(t *testing.T) {
	deep := "variable \"x\" {\n  default = " + strings.Repeat("{a=", 100) + "1" + strings.Repeat("}", 100) + "\n}\n"
	interp := "node {\n  id = \"" + strings.Repeat("${", 70) + "1" + strings.Repeat("}", 70) + "\"\n}\n"
	for name, src := range map[string]string{
		"nesting":       deep,
		"interpolation": interp,
		"size":          "# " + strings.Repeat("x", MaxSize) + "\n",
	} {
		_, diags := Parse([]byte(src), "big.hcl", nil)
		if !diags.HasErrors() || !strings.Contains(diags.Error(), "big.hcl") {
			t.Errorf("%s: %v, want an error naming the file", name, diags)
		}
	}
	// Brackets inside strings do not count.
	if nesting([]byte(`x = "`+strings.Repeat("{", 100)+`"`)) != 0 {
		t.Error("brackets inside a string were counted")
	}
}

func TestMinPeers(t *testing.T) {
	cfg, diags := Parse([]byte(minimal+"node {\n  min_peers = 3\n}\n"), "m.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if cfg.Node.MinPeers != 3 {
		t.Fatalf("min_peers = %d, want 3", cfg.Node.MinPeers)
	}
}
