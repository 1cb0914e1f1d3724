// Package sdk is what a microhost plugin author builds against: the component
// interfaces, the types they exchange with the host, and Serve, which runs a
// component as a go-plugin plugin, as a standalone service or in debug mode.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Kind names one of the four component kinds.
type Kind string

const (
	KindTunnel   Kind = "tunnel"
	KindRouter   Kind = "router"
	KindResolver Kind = "resolver"
	KindProxy    Kind = "proxy"
)

// Kinds lists every component kind in start-up order: a kind may depend on
// the ones before it, so shutdown walks this list backwards.
var Kinds = []Kind{KindTunnel, KindRouter, KindResolver, KindProxy}

// Info describes a component implementation.
type Info struct {
	Name         string   `json:"name"` // e.g. "resolver-dns"
	Kind         Kind     `json:"kind"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// Component is implemented by every plugin, whatever its kind.
type Component interface {
	Info() Info
	// Schema describes the arguments the component accepts in its config { } block.
	Schema() Schema
	// Configure applies a configuration. The host calls it after start-up and
	// again after a plugin restart. Diagnostics of severity error mean the
	// component is not configured.
	Configure(ctx context.Context, req ConfigureRequest) Diagnostics
	// Health returns nil when the component is serving.
	Health(ctx context.Context) error
	// Close drains and releases everything; it is called once, on shutdown.
	Close() error
}

// ConfigureRequest carries a component's configuration.
type ConfigureRequest struct {
	// Config is the config { } block decoded against Schema, as a JSON object.
	Config json.RawMessage
	// Node describes the node the component serves.
	Node NodeConfig
	// Host reaches back into the host (registry, routes, the tunnel's data
	// path). It is nil when the component runs standalone without a host.
	Host Host
}

// Decode unmarshals the config block into v; see DecodeConfig.
func (r ConfigureRequest) Decode(v any) Diagnostics { return DecodeConfig(r.Config, v) }

// DecodeConfig unmarshals a config object into v, rejecting unknown
// arguments, and reports a failure as a diagnostic on the argument at fault.
func DecodeConfig(raw json.RawMessage, v any) Diagnostics {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return Diagnostics{Errorf(typeErr.Field, "wrong type", "want a %s, got a JSON %s", typeName(typeErr.Type), typeErr.Value)}
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return Diagnostics{Errorf(name, "unsupported argument", "%q is not an argument of this component", name)}
	}
	return Diagnostics{Errorf("", "invalid configuration", "%v", err)}
}

// typeName names a Go type in the schema's terms.
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() == reflect.Float64 {
		return "number"
	}
	return t.String()
}

// NodeConfig is the host-owned part of the configuration that components need.
type NodeConfig struct {
	ID        string    `json:"id"`
	Network   string    `json:"network"`
	Listen    string    `json:"listen"`
	Advertise string    `json:"advertise"`
	Peers     []string  `json:"peers"`
	DataDir   string    `json:"data_dir"`
	TLS       TLSConfig `json:"tls"`
}

// TLSConfig names the node's certificate files.
type TLSConfig struct {
	CA       string `json:"ca"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
	Insecure bool   `json:"insecure"`
}

// ErrNotFound is returned (wrapped) when a lookup finds nothing.
var ErrNotFound = errors.New("not found")

// Severity of a diagnostic.
type Severity int

const (
	SeverityError Severity = iota
	SeverityWarning
)

// Diagnostic reports a problem with a configuration. Attribute names the
// argument inside config { } it is about ("" for the block as a whole), so
// the host can point at its file, line and column.
type Diagnostic struct {
	Severity  Severity
	Summary   string
	Detail    string
	Attribute string
}

// Errorf builds an error diagnostic about attribute.
func Errorf(attribute, summary, format string, args ...any) Diagnostic {
	return Diagnostic{Severity: SeverityError, Summary: summary, Detail: fmt.Sprintf(format, args...), Attribute: attribute}
}

// Diagnostics is a list of diagnostics.
type Diagnostics []Diagnostic

// HasErrors reports whether any diagnostic is an error.
func (d Diagnostics) HasErrors() bool {
	for _, x := range d {
		if x.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Err folds the error diagnostics into one error, or nil.
func (d Diagnostics) Err() error {
	var errs []error
	for _, x := range d {
		if x.Severity != SeverityError {
			continue
		}
		msg := x.Summary
		if x.Detail != "" {
			msg += ": " + x.Detail
		}
		if x.Attribute != "" {
			msg = x.Attribute + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// Reloader is implemented by components that can re-read their files, such
// as certificates, without a restart. A plugin process calls Reload on SIGHUP,
// which the host forwards to its plugins when it gets one itself.
type Reloader interface {
	Reload() error
}
