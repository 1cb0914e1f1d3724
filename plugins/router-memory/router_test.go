package routermemory

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"go.uber.org/goleak"

	"github.com/microhost/microhost/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var node = sdk.NodeConfig{ID: "n1", Network: "net"}

func configure(t *testing.T, r *Router, cfg string, host sdk.Host) sdk.Diagnostics {
	t.Helper()
	return r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(cfg), Node: node, Host: host})
}

func TestInfoAndSchema(t *testing.T) {
	r := New(hclog.NewNullLogger())
	if i := r.Info(); i.Name != "router-memory" || i.Kind != sdk.KindRouter {
		t.Fatalf("info %+v", i)
	}
	have := map[string]sdk.Type{}
	for _, a := range r.Schema().Attributes {
		have[a.Name] = a.Type
	}
	for name, typ := range map[string]sdk.Type{
		"strategy": sdk.TypeString, "flush_interval": sdk.TypeDuration, "sync_interval": sdk.TypeDuration,
		"route_ttl": sdk.TypeDuration, "penalty": sdk.TypeNumber, "half_life": sdk.TypeDuration,
		"suppress": sdk.TypeNumber, "reuse": sdk.TypeNumber, "max_suppress": sdk.TypeDuration,
		"routes": sdk.TypeListString, "damping": sdk.TypeBool,
	} {
		if have[name] != typ {
			t.Errorf("schema attribute %s: type %q, want %q", name, have[name], typ)
		}
	}
}

func TestConfigureDiagnostics(t *testing.T) {
	for _, tc := range []struct{ cfg, attr string }{
		{`{"reuse": 2500}`, "reuse"},
		{`{"reuse": 2000, "suppress": 2000}`, "reuse"},
		{`{"sync_interval": "soon"}`, "sync_interval"},
		{`{"sync_interval": 30}`, "sync_interval"},
		{`{"flush_interval": "-1s"}`, "flush_interval"},
		{`{"flush_interval": "1m"}`, "flush_interval"},
		{`{"route_ttl": "10s"}`, "route_ttl"},
		{`{"penalty": "lots"}`, "penalty"},
		{`{"half_life": "0s"}`, "half_life"},
		{`{"max_suppress": "5s"}`, "max_suppress"},
		{`{"penalty": 2000}`, "suppress"},
		{`{"strategy": "most"}`, "strategy"},
		{`{"routes": ["greeter"]}`, "routes"},
		{`{"stratgy": "all"}`, "stratgy"},
		{`[1]`, ""},
	} {
		r := New(nil)
		diags := configure(t, r, tc.cfg, nil)
		found := false
		for _, d := range diags {
			if d.Severity == sdk.SeverityError && d.Attribute == tc.attr {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: diagnostics %+v, want an error about %q", tc.cfg, diags, tc.attr)
		}
		if err := r.Health(t.Context()); !errors.Is(err, errNotConfigured) {
			t.Errorf("%s: health after a failed configure: %v", tc.cfg, err)
		}
		r.Close()
	}
	r := New(nil)
	defer r.Close()
	d := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{}`)})
	if !d.HasErrors() {
		t.Fatal("configure without a node id succeeded")
	}
}

func TestNotConfigured(t *testing.T) {
	r := New(nil)
	if _, err := r.Lookup(t.Context(), sdk.Query{}); !errors.Is(err, errNotConfigured) {
		t.Fatalf("lookup before configure: %v", err)
	}
	if _, err := r.Advertise(t.Context()); !errors.Is(err, errNotConfigured) {
		t.Fatalf("advertise before configure: %v", err)
	}
}

// eventually polls cond for a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStaticRoutesAreAdvertised(t *testing.T) {
	r := New(nil)
	defer r.Close()
	if d := configure(t, r, `{"routes": ["greeter=10.0.0.5:9000", "greeter = 10.0.0.6:9000"], "flush_interval": "20ms", "strategy": "local", "damping": false}`, nil); d.HasErrors() {
		t.Fatal(d.Err())
	}
	rs, err := r.Lookup(t.Context(), sdk.Query{Service: "greeter"})
	if err != nil || len(rs) != 2 || rs[0].Router != "n1" || rs[0].Link != sdk.LinkLocal {
		t.Fatalf("static routes %+v %v", rs, err)
	}
	eventually(t, "the static routes are advertised", func() bool {
		a, err := r.Solicit(t.Context())
		return err == nil && len(a.Events) == 2
	})
	if err := r.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// fakeHost serves registry watches from a script: watch i yields lists[i]
// and then fails, except the last, which stays open.
type fakeHost struct {
	mu      sync.Mutex
	lists   [][]sdk.ServiceEvent
	watches int
}

func (h *fakeHost) WatchServices(ctx context.Context) (sdk.ServiceWatcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watches++
	if h.watches == 1 {
		return nil, errors.New("registry not ready")
	}
	i := min(h.watches-2, len(h.lists)-1)
	return &fakeWatch{events: h.lists[i], last: i == len(h.lists)-1, done: make(chan struct{})}, nil
}

func (h *fakeHost) WatchRoutes(context.Context) (sdk.Watcher, error) {
	return nil, errors.New("not used")
}

func (h *fakeHost) Tunnel(context.Context) (sdk.Tunnel, error) { return nil, errors.New("not used") }

type fakeWatch struct {
	events []sdk.ServiceEvent
	last   bool
	done   chan struct{}
	once   sync.Once
}

func (w *fakeWatch) Next(ctx context.Context) (sdk.ServiceEvent, error) {
	if len(w.events) > 0 {
		ev := w.events[0]
		w.events = w.events[1:]
		return ev, nil
	}
	if !w.last {
		return sdk.ServiceEvent{}, errors.New("connection reset")
	}
	select {
	case <-ctx.Done():
		return sdk.ServiceEvent{}, ctx.Err()
	case <-w.done:
		return sdk.ServiceEvent{}, errors.New("stopped")
	}
}

func (w *fakeWatch) Stop() { w.once.Do(func() { close(w.done) }) }

func created(name, addr string) sdk.ServiceEvent {
	return sdk.ServiceEvent{Type: sdk.Create, Service: sdk.Service{Name: name, Address: addr}}
}

// The registry watch fails to open, then drops after listing two services;
// the third watch lists only one of them, so the other is withdrawn.
func TestRegistryWatchReconnects(t *testing.T) {
	host := &fakeHost{lists: [][]sdk.ServiceEvent{
		{created("greeter", "10.0.0.1:80"), created("billing", "10.0.0.2:80")},
		{created("greeter", "10.0.0.1:80")},
	}}
	r := New(nil)
	defer r.Close()
	if d := configure(t, r, `{"routes": ["static=10.9.9.9:1"]}`, host); d.HasErrors() {
		t.Fatal(d.Err())
	}
	eventually(t, "greeter is routed", func() bool {
		_, err := r.Lookup(t.Context(), sdk.Query{Service: "greeter"})
		return err == nil
	})
	eventually(t, "billing, missing from the relisted registry, is withdrawn", func() bool {
		_, err := r.Lookup(t.Context(), sdk.Query{Service: "billing"})
		return errors.Is(err, sdk.ErrNotFound)
	})
	for _, svc := range []string{"greeter", "static"} {
		if _, err := r.Lookup(t.Context(), sdk.Query{Service: svc}); err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
	}
	host.mu.Lock()
	watches := host.watches
	host.mu.Unlock()
	if watches != 3 {
		t.Fatalf("%d watches, want 3", watches)
	}
}

func TestReconfigureAndClose(t *testing.T) {
	r := New(nil)
	if d := configure(t, r, `{"routes": ["a=1.1.1.1:1"]}`, nil); d.HasErrors() {
		t.Fatal(d.Err())
	}
	w, err := r.Watch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := configure(t, r, `{"routes": ["b=1.1.1.1:1"], "strategy": "best"}`, nil); d.HasErrors() {
		t.Fatal(d.Err())
	}
	if _, err := w.Next(t.Context()); err == nil {
		t.Fatal("watch of the replaced engine still open")
	}
	if _, err := r.Lookup(t.Context(), sdk.Query{Service: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if d := configure(t, r, `{}`, nil); !d.HasErrors() {
		t.Fatal("configure after close succeeded")
	}
}

// An HCL config block, decoded by the sdk as the host does, configures the router.
func TestConfigureFromHCL(t *testing.T) {
	src := `
strategy       = "best"
flush_interval = "100ms"
sync_interval  = "10s"
route_ttl      = "25s"
penalty        = 500
half_life      = "20s"
suppress       = 1500
reuse          = 600
max_suppress   = "2m"
routes         = ["greeter=10.0.0.5:9000"]
`
	f, diags := hclsyntax.ParseConfig([]byte(src), "router.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r := New(nil)
	defer r.Close()
	raw, diags := r.Schema().Decode(f.Body, nil, "")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if d := r.Configure(t.Context(), sdk.ConfigureRequest{Config: raw, Node: node}); d.HasErrors() {
		t.Fatal(d.Err())
	}
	e, _ := r.engine()
	cfg := e.Config()
	if cfg.Strategy != "best" || cfg.FlushInterval != 100*time.Millisecond || cfg.SyncInterval != 10*time.Second ||
		cfg.RouteTTL != 25*time.Second || cfg.Damping == nil || cfg.Damping.Penalty != 500 ||
		cfg.Damping.HalfLife != 20*time.Second || cfg.Damping.Suppress != 1500 || cfg.Damping.Reuse != 600 ||
		cfg.Damping.MaxSuppress != 2*time.Minute {
		t.Fatalf("engine config %+v damping %+v", cfg, cfg.Damping)
	}
}
