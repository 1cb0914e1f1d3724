// Package config loads a microhost node's HCL configuration: the node and
// TLS settings, the components (tunnel, router, resolvers, proxy) with their
// plugin-owned config { } bodies, and statically declared services.
//
// Every problem is reported at once as hcl.Diagnostics with file, line and
// column. The config { } body of a component is kept undecoded: the host
// validates it later against the schema its plugin publishes, with
// DecodeComponentConfig.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/microhost/microhost/sdk"
)

// Defaults applied when the configuration leaves an argument out.
const (
	DefaultNetwork = "microhost"
	DefaultListen  = "0.0.0.0:8085"
	DefaultDataDir = ".microhost"     // relative to the config file's directory
	DefaultAdmin   = "127.0.0.1:8086" // where the CLI looks when not told

	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
)

// VarEnvPrefix prefixes environment variables that set a variable's value:
// MICROHOST_VAR_region=eu sets var.region.
const VarEnvPrefix = "MICROHOST_VAR_"

// Config is a decoded configuration file.
type Config struct {
	// Filename is the name the file was parsed under; Dir is the absolute
	// directory that relative paths in it were resolved against.
	Filename string
	Dir      string
	// Files holds the parsed sources, for WriteDiagnostics.
	Files map[string]*hcl.File
	// EvalContext resolves var.NAME and the functions (env() and friends);
	// pass it to DecodeComponentConfig.
	EvalContext *hcl.EvalContext

	Node Node
	TLS  TLS

	Tunnel    *Component
	Router    *Component
	Resolvers []*Component
	Proxy     *Component // nil for a node that only relays

	Services []*Service
}

// Source records where a block and its arguments were written, so that
// errors found later (a port in use, a plugin that rejects a value) can
// point at the line that caused them.
type Source struct {
	DeclRange hcl.Range
	Args      map[string]hcl.Range
}

// Range returns where argument name was set, or the block when it was not.
func (s Source) Range(name string) hcl.Range {
	if r, ok := s.Args[name]; ok {
		return r
	}
	return s.DeclRange
}

func (s *Source) record(attr *hcl.Attribute) {
	if s.Args == nil {
		s.Args = make(map[string]hcl.Range)
	}
	s.Args[attr.Name] = attr.Expr.Range()
}

// Node is the node { } block.
type Node struct {
	Source
	ID        string // "" means: take it from the node certificate
	Network   string
	Listen    string // tunnel (UDP) address
	Advertise string // "" means: the listen address
	Admin     string // "HOST:PORT" or "unix:/path"
	HTTP      string // "" disables /metrics and /healthz
	Peers     []string
	// MinPeers, when above 0, is how many neighbours the node keeps: with
	// fewer, it links to nodes of its network seen in its neighbours' graphs.
	MinPeers int
	DataDir  string
}

// TLS is the tls { } block. Paths are absolute.
type TLS struct {
	Source
	CA       string
	Cert     string
	Key      string
	Insecure bool
}

// Component is one `<kind> "<type>" { }` block.
type Component struct {
	Source
	Kind sdk.Kind
	Type string
	// Name identifies the instance: the name argument, else "<kind>-<type>".
	Name string
	// Plugin is an absolute path to an external plugin binary, SHA256 its
	// expected lowercase hex digest (optional). Address is a standalone
	// instance to connect to. Both empty means the builtin "<kind>-<type>".
	Plugin  string
	SHA256  string
	Address string
	// Config is the undecoded config { } body; see DecodeComponentConfig.
	Config hcl.Body
	// HasConfig says whether the block had a config { } block. A
	// standalone instance (Address) without one keeps the configuration it
	// was started with: the host neither checks nor sends one.
	HasConfig bool
	// ConfigRange is the config block's header, or the component's when the
	// block was left out.
	ConfigRange hcl.Range
}

// Builtin is the name of the builtin plugin implementing this component.
func (c *Component) Builtin() string { return string(c.Kind) + "-" + c.Type }

// Diagnostics converts what the component's plugin said about its
// configuration into hcl.Diagnostics pointing at the config { } block.
func (c *Component) Diagnostics(d sdk.Diagnostics) hcl.Diagnostics {
	return SDKDiagnostics(c.Config, c.ConfigRange, d)
}

// Service is a statically declared `service "<name>" { }`.
type Service struct {
	Source
	Name      string
	Address   string
	Endpoints []string
	Metadata  map[string]string
	Check     *Check // nil: no health check
}

// Instance is the service as the registry knows it.
func (s *Service) Instance() sdk.Service {
	return sdk.Service{Name: s.Name, Address: s.Address, Endpoints: s.Endpoints, Metadata: s.Metadata}
}

// Check is a gRPC health check (grpc.health.v1) of a service.
type Check struct {
	Source
	Interval time.Duration
	Timeout  time.Duration
	// GRPCService is the service name sent in the health check request;
	// "" asks about the server as a whole.
	GRPCService string
}

// Components lists the configured components in start-up order (sdk.Kinds).
func (c *Config) Components() []*Component {
	var out []*Component
	for _, comp := range []*Component{c.Tunnel, c.Router} {
		if comp != nil {
			out = append(out, comp)
		}
	}
	out = append(out, c.Resolvers...)
	if c.Proxy != nil {
		out = append(out, c.Proxy)
	}
	return out
}

// NodeConfig is the host-owned configuration that components receive.
func (c *Config) NodeConfig() sdk.NodeConfig {
	return sdk.NodeConfig{
		ID:        c.Node.ID,
		Network:   c.Node.Network,
		Listen:    c.Node.Listen,
		Advertise: c.Node.Advertise,
		Peers:     append([]string(nil), c.Node.Peers...),
		DataDir:   c.Node.DataDir,
		TLS:       sdk.TLSConfig{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key, Insecure: c.TLS.Insecure},
	}
}

// Load reads and decodes the configuration file at path. vars set variables
// and win over MICROHOST_VAR_<name> environment variables, which win over
// defaults. A file whose name ends in ".json" is read as HCL's JSON syntax.
//
// The returned Config is never nil: when diags has errors it is incomplete,
// but its Files still serve WriteDiagnostics.
func Load(path string, vars map[string]string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return &Config{Filename: path, Files: map[string]*hcl.File{}}, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read configuration",
			Detail:   err.Error(),
		}}
	}
	return Parse(src, path, vars)
}

// Parse decodes a configuration held in memory. filename names it in
// diagnostics, and relative paths are resolved against its directory.
func Parse(src []byte, filename string, vars map[string]string) (*Config, hcl.Diagnostics) {
	cfg := &Config{Filename: filename, Dir: baseDir(filename), Files: map[string]*hcl.File{}}
	// The parser recurses without bound: refuse what no configuration
	// needs before it can exhaust the stack.
	if len(src) > MaxSize {
		return cfg, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Configuration too large",
			Detail: fmt.Sprintf("%s is %d bytes; a configuration may have at most %d.", filename, len(src), MaxSize)}}
	}
	if depth := nesting(src); depth > MaxNesting {
		return cfg, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Configuration nested too deeply",
			Detail: fmt.Sprintf("%s nests brackets %d levels deep; a configuration may nest at most %d.", filename, depth, MaxNesting)}}
	}
	parser := hclparse.NewParser()
	var file *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(filename, ".json") {
		file, diags = parser.ParseJSON(src, filename)
	} else {
		file, diags = parser.ParseHCL(src, filename)
	}
	cfg.Files = parser.Files()
	if diags.HasErrors() || file == nil {
		return cfg, diags
	}
	return cfg, append(diags, decode(cfg, file.Body, vars)...)
}

// Limits on a configuration file, far beyond what any real one needs.
const (
	MaxSize    = 1 << 20
	MaxNesting = 64
)

// nesting is the deepest nesting of brackets, braces and parentheses in
// src outside quoted strings.
func nesting(src []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range src {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[' || c == '(':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']' || c == ')':
			depth--
		}
	}
	return deepest
}

func baseDir(filename string) string {
	dir := filepath.Dir(filename)
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}
