package resolverdns

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

func TestParseConfig(t *testing.T) {
	resolvConf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, diags := parseConfig([]byte(`{"name":"_micro._udp.example.com","timeout":"750ms"}`), resolvConf)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if !cfg.srv || cfg.name != "_micro._udp.example.com." || cfg.timeout != 750*time.Millisecond {
		t.Errorf("got %+v", cfg)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(cfg.servers, want) {
		t.Errorf("servers from resolv.conf = %v, want %v", cfg.servers, want)
	}

	cfg, diags = parseConfig([]byte(`{"name":"peers.example.com","port":8443,"server":"127.0.0.1"}`), resolvConf)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if cfg.srv || cfg.port != 8443 || !slices.Equal(cfg.servers, []string{"127.0.0.1:53"}) || cfg.timeout != defaultTimeout {
		t.Errorf("got %+v", cfg)
	}
}

func TestParseConfigDiagnostics(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-resolv.conf")
	cases := []struct {
		config    string
		attribute string
		severity  sdk.Severity
	}{
		{`{}`, "name", sdk.SeverityError},
		{`{"name":"bad name..","port":1,"server":"127.0.0.1:53"}`, "name", sdk.SeverityError},
		{`{"name":"peers.example.com","server":"127.0.0.1:53"}`, "port", sdk.SeverityError},
		{`{"name":"peers.example.com","port":70000,"server":"127.0.0.1:53"}`, "port", sdk.SeverityError},
		{`{"name":"peers.example.com","port":80.5,"server":"127.0.0.1:53"}`, "port", sdk.SeverityError},
		{`{"name":"peers.example.com","port":"80","server":"127.0.0.1:53"}`, "port", sdk.SeverityError},
		{`{"name":"_p._tcp.example.com","port":80,"server":"127.0.0.1:53"}`, "port", sdk.SeverityWarning},
		{`{"name":"_p._tcp.example.com","server":"127.0.0.1:http"}`, "server", sdk.SeverityError},
		{`{"name":"_p._tcp.example.com","server":":53"}`, "server", sdk.SeverityError},
		{`{"name":"_p._tcp.example.com"}`, "server", sdk.SeverityError}, // no resolv.conf
		{`{"name":"_p._tcp.example.com","server":"127.0.0.1:53","timeout":"soon"}`, "timeout", sdk.SeverityError},
		{`{"name":"_p._tcp.example.com","server":"127.0.0.1:53","timeout":"-1s"}`, "timeout", sdk.SeverityError},
		{`{"name":"_p._tcp.example.com","server":"127.0.0.1:53","nmae":"x"}`, "nmae", sdk.SeverityError},
	}
	for _, c := range cases {
		_, diags := parseConfig([]byte(c.config), missing)
		i := slices.IndexFunc(diags, func(d sdk.Diagnostic) bool { return d.Attribute == c.attribute && d.Severity == c.severity })
		if i < 0 {
			t.Errorf("%s: want a diagnostic of severity %d on %q, got %+v", c.config, c.severity, c.attribute, diags)
			continue
		}
		if diags[i].Summary == "" || diags[i].Detail == "" {
			t.Errorf("%s: diagnostic without summary or detail: %+v", c.config, diags[i])
		}
	}
}

func TestSchemaIsValid(t *testing.T) {
	if err := New(hclog.NewNullLogger()).Schema().Validate(); err != nil {
		t.Fatal(err)
	}
}
