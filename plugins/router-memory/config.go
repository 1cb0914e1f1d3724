package routermemory

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/microhost/microhost/plugins/router-memory/damping"
	"github.com/microhost/microhost/plugins/router-memory/engine"
	"github.com/microhost/microhost/sdk"
)

// Schema lists the arguments of the router's config { } block.
func (r *Router) Schema() sdk.Schema {
	d := damping.DefaultConfig()
	return sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "strategy", Type: sdk.TypeString, Default: string(engine.All),
			Description: "which routes to advertise: all (best route to every instance), best (best route per service), local (own services only) or none"},
		{Name: "flush_interval", Type: sdk.TypeDuration, Default: engine.DefaultFlushInterval.String(),
			Description: "how long route changes are gathered into one advert"},
		{Name: "sync_interval", Type: sdk.TypeDuration, Default: engine.DefaultSyncInterval.String(),
			Description: "how often the full set of routes of every advertised origin is sent; a sync also withdraws what is gone"},
		{Name: "route_ttl", Type: sdk.TypeDuration,
			Description: "how long peers keep a route of ours that they stop hearing about; must exceed sync_interval (default 3 × sync_interval)"},
		{Name: "damping", Type: sdk.TypeBool, Default: "true",
			Description: "route-flap damping (RFC 2439): flapping routes are suppressed from adverts until they settle"},
		{Name: "penalty", Type: sdk.TypeNumber, Default: fmt.Sprint(d.Penalty),
			Description: "damping penalty added each time a route is withdrawn, restarts included; must be below suppress"},
		{Name: "half_life", Type: sdk.TypeDuration, Default: d.HalfLife.String(),
			Description: "time for a damping penalty to halve"},
		{Name: "suppress", Type: sdk.TypeNumber, Default: fmt.Sprint(d.Suppress),
			Description: "penalty at which a route is suppressed from adverts; must exceed penalty, so one restart never suppresses a route"},
		{Name: "reuse", Type: sdk.TypeNumber, Default: fmt.Sprint(d.Reuse),
			Description: "penalty below which a suppressed route is advertised again; must be below suppress"},
		{Name: "max_suppress", Type: sdk.TypeDuration, Default: d.MaxSuppress.String(),
			Description: "longest a route stays suppressed; its latest state is then advertised"},
		{Name: "routes", Type: sdk.TypeListString,
			Description: `static local routes as "service=address" (e.g. "greeter=10.0.0.5:9000"), for running without a host registry`},
	}}
}

// settings is a decoded, validated configuration.
type settings struct {
	engine engine.Config
	static []sdk.Service
}

// decode reads the config block attribute by attribute, so that every
// problem is reported against the attribute it is about.
func decode(raw json.RawMessage, node sdk.NodeConfig) (settings, sdk.Diagnostics) {
	var diags sdk.Diagnostics
	damp := damping.DefaultConfig()
	s := settings{engine: engine.Config{NodeID: node.ID, Network: node.Network, Damping: &damp}}
	if node.ID == "" {
		diags = append(diags, sdk.Errorf("", "node id missing", "the router needs the node id to originate routes; the host passes it in the node block"))
	}

	fields := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &fields); err != nil {
			return s, append(diags, sdk.Errorf("", "invalid configuration", "want a JSON object: %v", err))
		}
	}
	known := map[string]func(json.RawMessage) error{
		"strategy": func(v json.RawMessage) error {
			var name string
			if err := json.Unmarshal(v, &name); err != nil {
				return typeError("a string", v)
			}
			st, err := engine.ParseStrategy(name)
			s.engine.Strategy = st
			return err
		},
		"flush_interval": durationInto(&s.engine.FlushInterval),
		"sync_interval":  durationInto(&s.engine.SyncInterval),
		"route_ttl":      durationInto(&s.engine.RouteTTL),
		"half_life":      durationInto(&damp.HalfLife),
		"max_suppress":   durationInto(&damp.MaxSuppress),
		"penalty":        numberInto(&damp.Penalty),
		"suppress":       numberInto(&damp.Suppress),
		"reuse":          numberInto(&damp.Reuse),
		"damping": func(v json.RawMessage) error {
			var on bool
			if err := json.Unmarshal(v, &on); err != nil {
				return typeError("true or false", v)
			}
			if !on {
				s.engine.Damping = nil
			}
			return nil
		},
		"routes": func(v json.RawMessage) error {
			var list []string
			if err := json.Unmarshal(v, &list); err != nil {
				return typeError("a list of strings", v)
			}
			for i, entry := range list {
				name, addr, ok := strings.Cut(entry, "=")
				name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
				if !ok || name == "" || addr == "" {
					return fmt.Errorf("element %d (%q): want \"service=address\"", i, entry)
				}
				s.static = append(s.static, sdk.Service{Name: name, Address: addr})
			}
			return nil
		},
	}
	for _, name := range sortedKeys(fields) {
		apply, ok := known[name]
		if !ok {
			diags = append(diags, sdk.Errorf(name, "unsupported argument", "router-memory has no argument %q", name))
			continue
		}
		if v := fields[name]; !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			if err := apply(v); err != nil {
				diags = append(diags, sdk.Errorf(name, "invalid value for "+name, "%v", err))
			}
		}
	}
	if diags.HasErrors() {
		return s, diags
	}

	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"flush_interval", s.engine.FlushInterval}, {"sync_interval", s.engine.SyncInterval}, {"route_ttl", s.engine.RouteTTL}} {
		if _, set := fields[d.name]; set && d.v <= 0 {
			diags = append(diags, sdk.Errorf(d.name, "invalid value for "+d.name, "must be positive, got %v", d.v))
		}
	}
	sync := cmp.Or(s.engine.SyncInterval, engine.DefaultSyncInterval)
	if ttl := s.engine.RouteTTL; sync > 0 && ttl > 0 && ttl <= sync {
		diags = append(diags, sdk.Errorf("route_ttl", "invalid value for route_ttl",
			"%v must exceed sync_interval (%v), or routes lapse at peers between syncs", ttl, sync))
	}
	if flush := s.engine.FlushInterval; sync > 0 && flush >= sync {
		diags = append(diags, sdk.Errorf("flush_interval", "invalid value for flush_interval",
			"%v must be shorter than sync_interval (%v)", flush, sync))
	}
	if s.engine.Damping != nil {
		if err := damp.Validate(); err != nil {
			for _, fe := range fieldErrors(err) {
				diags = append(diags, sdk.Errorf(fe.Field, "invalid value for "+fe.Field, "%s", fe.Msg))
			}
		}
	}
	return s, diags
}

func durationInto(dst *time.Duration) func(json.RawMessage) error {
	return func(v json.RawMessage) error {
		var text string
		if err := json.Unmarshal(v, &text); err != nil {
			return typeError(`a duration string such as "30s"`, v)
		}
		d, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("%q is not a duration (want e.g. \"200ms\", \"30s\", \"1m\")", text)
		}
		*dst = d
		return nil
	}
}

func numberInto(dst *float64) func(json.RawMessage) error {
	return func(v json.RawMessage) error {
		var n float64
		if err := json.Unmarshal(v, &n); err != nil {
			return typeError("a number", v)
		}
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return fmt.Errorf("%v is not a finite number", n)
		}
		*dst = n
		return nil
	}
}

func typeError(want string, got json.RawMessage) error {
	text := string(got)
	if len(text) > 40 {
		text = text[:40] + "…"
	}
	return fmt.Errorf("want %s, got %s", want, text)
}

func fieldErrors(err error) []*damping.FieldError {
	var out []*damping.FieldError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*damping.FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
