package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testSchemas stand in for the schemas the builtin plugins publish.
var testSchemas = map[string]sdk.Schema{
	"tunnel-quic":   {},
	"router-memory": {},
	"resolver-dns": {Attributes: []sdk.Attribute{
		{Name: "name", Type: sdk.TypeString, Required: true, Description: "DNS name to resolve"},
		{Name: "server", Type: sdk.TypeString},
		{Name: "timeout", Type: sdk.TypeDuration},
		{Name: "port", Type: sdk.TypeNumber},
	}},
	"resolver-http": {Attributes: []sdk.Attribute{
		{Name: "url", Type: sdk.TypeString, Required: true},
		{Name: "timeout", Type: sdk.TypeDuration},
		{Name: "max_body", Type: sdk.TypeNumber},
		{Name: "ca", Type: sdk.TypeString},
		{Name: "insecure_skip_verify", Type: sdk.TypeBool},
	}},
	"proxy-rpc": {Attributes: []sdk.Attribute{{Name: "listen", Type: sdk.TypeString}}},
}

func testSchemaOf(c *Component) (sdk.Schema, error) {
	if s, ok := testSchemas[c.Builtin()]; ok {
		return s, nil
	}
	return sdk.Schema{}, fmt.Errorf("there is no builtin %s", c.Builtin())
}

// loadAll loads a file and validates every component's config block the
// way the host does, returning all diagnostics.
func loadAll(t *testing.T, path string, vars map[string]string) (*Config, hcl.Diagnostics) {
	t.Helper()
	cfg, diags := Load(path, vars)
	_, cdiags := cfg.DecodeComponents(testSchemaOf)
	return cfg, append(diags, cdiags...)
}

// TestGoldenDiagnostics checks the exact text users see for each broken
// file in testdata, and that every diagnostic names the file and a line.
func TestGoldenDiagnostics(t *testing.T) {
	files, err := filepath.Glob("testdata/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".hcl"), func(t *testing.T) {
			cfg, diags := loadAll(t, path, nil)
			if !diags.HasErrors() {
				t.Fatalf("%s: expected errors, got none", path)
			}
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != path || d.Subject.Start.Line < 1 {
					t.Errorf("diagnostic %q does not point into %s: %v", d.Summary, path, d.Subject)
				}
			}
			var buf bytes.Buffer
			if err := WriteDiagnostics(&buf, diags, cfg.Files); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(path, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("diagnostics for %s differ from %s (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", path, golden, got, want)
			}
		})
	}
}
