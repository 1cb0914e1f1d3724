package config

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
)

var allTypes = sdk.Schema{Attributes: []sdk.Attribute{
	{Name: "s", Type: sdk.TypeString},
	{Name: "n", Type: sdk.TypeNumber},
	{Name: "b", Type: sdk.TypeBool},
	{Name: "d", Type: sdk.TypeDuration},
	{Name: "l", Type: sdk.TypeListString},
	{Name: "m", Type: sdk.TypeMapString},
	{Name: "unset", Type: sdk.TypeString},
	{Name: "null", Type: sdk.TypeString},
}}

// proxyConfig parses a config whose proxy "rpc" block holds body.
func proxyConfig(t *testing.T, body string) *Config {
	t.Helper()
	cfg, diags := Parse([]byte(minimal+"proxy \"rpc\" {\n"+body+"\n}\n"), "p.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return cfg
}

func TestDecodeComponentConfigJSON(t *testing.T) {
	t.Setenv("MH_TEST_HOST", "10.1.2.3")
	src := strings.Replace(minimal, "tls", `variable "port" {}
tls`, 1) + `proxy "rpc" {
  config {
    s    = "${env("MH_TEST_HOST")}:${var.port}"
    n    = 1.5e3
    b    = true
    d    = "1m30s"
    l    = ["a", 2]
    m    = { k = "v", n = 3 }
    null = null
  }
}`
	cfg, diags := Parse([]byte(src), "p.hcl", map[string]string{"port": "9090"})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	raw, diags := DecodeComponentConfig(cfg.Proxy.Config, allTypes, cfg.EvalContext, "")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	want := `{"b":true,"d":"1m30s","l":["a","2"],"m":{"k":"v","n":"3"},"n":1500,"s":"10.1.2.3:9090"}`
	if string(raw) != want {
		t.Errorf("config =\n %s\nwant\n %s", raw, want)
	}

	var decoded struct {
		S string            `json:"s"`
		N float64           `json:"n"`
		B bool              `json:"b"`
		D string            `json:"d"`
		L []string          `json:"l"`
		M map[string]string `json:"m"`
	}
	if d := (sdk.ConfigureRequest{Config: raw}).Decode(&decoded); d.HasErrors() || decoded.N != 1500 || decoded.M["n"] != "3" {
		t.Errorf("plugin-side decode = %+v, %v", decoded, d)
	}
}

func TestDecodeComponentConfigEmpty(t *testing.T) {
	cfg := proxyConfig(t, "")
	raw, diags := DecodeComponentConfig(cfg.Proxy.Config, allTypes, cfg.EvalContext, "")
	if diags.HasErrors() || string(raw) != "{}" {
		t.Errorf("got %s, %v", raw, diags)
	}
	raw, diags = DecodeComponentConfig(nil, sdk.Schema{}, nil, "")
	if diags.HasErrors() || string(raw) != "{}" {
		t.Errorf("nil body: got %s, %v", raw, diags)
	}
}

func TestDecodeComponentConfigErrors(t *testing.T) {
	schema := sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "listen", Type: sdk.TypeString, Required: true},
		{Name: "timeout", Type: sdk.TypeDuration},
		{Name: "weird", Type: "tuple"},
	}}
	cfg := proxyConfig(t, `  config {
    listen  = null
    timeout = "soon"
    listn   = 1
    nested {}
  }`)
	_, diags := DecodeComponentConfig(cfg.Proxy.Config, schema, cfg.EvalContext, "")
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary)
	}
	// The plugin schema error points at the config block; the rest at their lines.
	want := []string{"Invalid plugin schema", "Missing required argument", "Invalid duration", "Unsupported argument", "Unsupported block type"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("diagnostics = %q, want %q", got, want)
	}
	for i, line := range []int{6, 7, 8, 9, 10} {
		if diags[i].Subject.Start.Line != line {
			t.Errorf("%s at line %d, want %d", diags[i].Summary, diags[i].Subject.Start.Line, line)
		}
	}
}

func TestRequiredArgumentWithoutConfigBlock(t *testing.T) {
	cfg := proxyConfig(t, "")
	schema := sdk.Schema{Attributes: []sdk.Attribute{{Name: "listen", Type: sdk.TypeString, Required: true}}}
	_, diags := DecodeComponentConfig(cfg.Proxy.Config, schema, cfg.EvalContext, "")
	if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != 5 || diags[0].Subject.Filename != "p.hcl" {
		t.Fatalf("want one error at the proxy block (p.hcl line 5), got %v", diags)
	}
}

func TestAttributeRangeAndSDKDiagnostics(t *testing.T) {
	cfg := proxyConfig(t, `  config {
    listen = "127.0.0.1:9090"
  }`)
	c := cfg.Proxy
	if r := AttributeRange(c.Config, "listen"); r.Start.Line != 7 || r.Start.Column != 14 {
		t.Errorf("listen range = %v, want line 7 column 14", r)
	}
	if r := AttributeRange(c.Config, "other"); r != c.Config.MissingItemRange() {
		t.Errorf("unset argument range = %v, want the body", r)
	}

	diags := c.Diagnostics(sdk.Diagnostics{
		sdk.Errorf("listen", "Address in use", "port 9090 is taken"),
		sdk.Errorf("", "Not ready", "no tunnel"),
		{Severity: sdk.SeverityWarning, Summary: "Slow", Attribute: "not-set"},
	})
	if len(diags) != 3 {
		t.Fatalf("diags = %v", diags)
	}
	if diags[0].Subject.Start.Line != 7 || diags[0].Severity != hcl.DiagError || diags[0].Detail != "port 9090 is taken" {
		t.Errorf("attribute diagnostic = %+v at %v", diags[0], diags[0].Subject)
	}
	if *diags[1].Subject != c.ConfigRange || c.ConfigRange.Start.Line != 6 {
		t.Errorf("block diagnostic at %v, want config block %v", diags[1].Subject, c.ConfigRange)
	}
	if *diags[2].Subject != c.ConfigRange || diags[2].Severity != hcl.DiagWarning {
		t.Errorf("unset-attribute warning = %+v at %v", diags[2], diags[2].Subject)
	}
}

func TestDecodeComponents(t *testing.T) {
	src := minimal + `resolver "consul" {}
resolver "dns" {
  address = "127.0.0.1:7000"
  config {}
}
resolver "dns" {
  name    = "standalone"
  address = "127.0.0.1:7001"
}
resolver "dns" {
  name = "other"
  config {
    name = "_m._udp.example.test"
  }
}
proxy "rpc" {
  config {
    listen = "127.0.0.1:9091"
  }
}`
	cfg, diags := Parse([]byte(src), "p.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	configs, diags := cfg.DecodeComponents(func(c *Component) (sdk.Schema, error) {
		if c.Address != "" {
			return sdk.Schema{}, errors.New("connection refused")
		}
		return testSchemaOf(c)
	})
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary+"@"+strconv.Itoa(d.Subject.Start.Line))
	}
	if want := []string{`Cannot load resolver "resolver-consul"@5`, `Cannot load resolver "resolver-dns"@7`}; !reflect.DeepEqual(got, want) {
		t.Errorf("diagnostics = %q, want %q", got, want)
	}
	// A standalone instance without a config block keeps its own: it is
	// neither checked nor given one.
	if _, ok := configs["standalone"]; ok {
		t.Errorf("the standalone instance without a config block got one: %s", configs["standalone"])
	}
	if string(configs["proxy-rpc"]) != `{"listen":"127.0.0.1:9091"}` || string(configs["other"]) != `{"name":"_m._udp.example.test"}` || len(configs) != 4 {
		t.Errorf("configs = %s", configs)
	}
}

// A relative path in a config { } block means the same file wherever the
// plugin process runs: it is resolved against the config file's directory.
func TestPathArgumentsResolveAgainstTheConfigFile(t *testing.T) {
	schema := sdk.Schema{Attributes: []sdk.Attribute{{Name: "rel", Type: sdk.TypePath}, {Name: "abs", Type: sdk.TypePath}}}
	cfg, diags := Parse([]byte(minimal+`proxy "rpc" {
  config {
    rel = "certs/proxy.pem"
    abs = "/etc/proxy.pem"
  }
}`), "/srv/microhost/node.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	raw, diags := DecodeComponentConfig(cfg.Proxy.Config, schema, cfg.EvalContext, cfg.Dir)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if want := `{"abs":"/etc/proxy.pem","rel":"/srv/microhost/certs/proxy.pem"}`; string(raw) != want {
		t.Errorf("got %s, want %s", raw, want)
	}
}
