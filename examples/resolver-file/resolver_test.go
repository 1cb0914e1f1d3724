package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// Run as the plugin itself when the test re-executes its own binary.
func TestMain(m *testing.M) {
	if os.Getenv("RESOLVER_FILE_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParsePeers(t *testing.T) {
	want := []sdk.Node{{Address: "10.0.0.1:9000", Priority: 0}, {Address: "[fd00::1]:9000", Priority: 1}, {Address: "b.example:443", Priority: 5}}
	lines := "# peers of the test network\n\nb.example:443 5\n10.0.0.1:9000   # no priority: 0\n[fd00::1]:9000 1\n10.0.0.1:9000 7\n"
	jsonDoc := `{"nodes":[{"address":"b.example:443","priority":5},{"address":"10.0.0.1:9000"},{"address":"[fd00::1]:9000","priority":1}]}`
	for name, data := range map[string]string{"lines": lines, "json": jsonDoc} {
		got, err := parsePeers(name, []byte(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
}

func TestParsePeersErrors(t *testing.T) {
	cases := []struct{ data, want string }{
		{"a:1\nnoport 3\n", "peers:2: address \"noport\" is not host:port"},
		{"a:1 high\n", `peers:1: priority "high" is not an integer`},
		{"a:1 1 extra\n", "peers:1: want \"host:port [priority]\", got 3 fields"},
		{"a:0\n", "port between 1 and 65535"},
		{"# nothing\n\n", "lists no peers"},
		{`{"nodes":[{"address":"a:1","priority":"x"}]}`, "peers: json: cannot unmarshal"},
		{`{"nodes":[{"address":"a"}]}`, "peers: nodes[0]: address \"a\" is not host:port"},
		{`{"peers":[]}`, `unknown field "peers"`},
	}
	for _, c := range cases {
		_, err := parsePeers("peers", []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.data, err, c.want)
		}
	}
	if _, err := parsePeers("peers", nil); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("empty file: %v, want sdk.ErrNotFound", err)
	}
}

func TestResolveRereadsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(path, []byte("10.0.0.1:9000 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newFileResolver(hclog.NewNullLogger())
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{"path":"` + path + `"}`)}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if err := r.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("10.0.0.2:9000 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	if want := []sdk.Node{{Address: "10.0.0.2:9000", Priority: 1}}; !slices.Equal(nodes, want) {
		t.Errorf("got %+v, want %+v", nodes, want)
	}
}

func TestConfigureDiagnostics(t *testing.T) {
	for _, config := range []string{`{}`, `{"path":"/nonexistent/peers"}`} {
		r := newFileResolver(hclog.NewNullLogger())
		diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(config)})
		if !diags.HasErrors() || diags[0].Attribute != "path" {
			t.Errorf("%s: diagnostics %+v, want an error on path", config, diags)
		}
		if r.Health(t.Context()) == nil {
			t.Errorf("%s: healthy without a configuration", config)
		}
	}
}

// The binary built from main speaks the sdk's command line.
func TestDescribe(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "describe")
	cmd.Env = append(os.Environ(), "RESOLVER_FILE_RUN_MAIN=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("describe: %v", err)
	}
	var d sdk.Description
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("describe printed %q: %v", out, err)
	}
	if d.Info.Name != "resolver-file" || d.Info.Kind != sdk.KindResolver || len(d.Schema.Attributes) != 1 || d.Schema.Attributes[0].Name != "path" {
		t.Errorf("describe: %+v", d)
	}
}
