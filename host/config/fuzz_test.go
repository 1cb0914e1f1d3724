package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary sources to Parse and to the component config
// decoder: whatever the input, they must return diagnostics, never panic.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.hcl")
	seeds = append(seeds, "../../config.hcl")
	for _, path := range seeds {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src), false)
	}
	f.Add(`{"tls": {"insecure": true}, "tunnel": {"quic": {"config": {"x": 1}}}}`, true)
	f.Add(varsSrc, false)

	f.Fuzz(func(t *testing.T, src string, json bool) {
		name := "fuzz.hcl"
		if json {
			name = "fuzz.json"
		}
		cfg, diags := Parse([]byte(src), name, map[string]string{"port": "1"})
		if cfg == nil {
			t.Fatal("Parse returned a nil Config")
		}
		for _, c := range cfg.Components() {
			schema := allTypes
			if s, ok := testSchemas[c.Builtin()]; ok {
				schema = s
			}
			_, cdiags := DecodeComponentConfig(c.Config, schema, cfg.EvalContext, "")
			diags = append(diags, cdiags...)
			_ = c.Diagnostics(nil)
			_ = AttributeRange(c.Config, "name")
		}
		var out strings.Builder
		if err := WriteDiagnostics(&out, diags, cfg.Files); err != nil {
			t.Fatal(err)
		}
	})
}
