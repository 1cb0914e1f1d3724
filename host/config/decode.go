package config

import (
	"fmt"
	"math/big"
	"net"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
	"github.com/zclconf/go-cty/cty"
)

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "node"},
		{Type: "tls"},
		{Type: string(sdk.KindTunnel), LabelNames: []string{"type"}},
		{Type: string(sdk.KindRouter), LabelNames: []string{"type"}},
		{Type: string(sdk.KindResolver), LabelNames: []string{"type"}},
		{Type: string(sdk.KindProxy), LabelNames: []string{"type"}},
		{Type: "service", LabelNames: []string{"name"}},
	},
}

var nodeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "id"}, {Name: "network"}, {Name: "listen"}, {Name: "advertise"},
		{Name: "admin"}, {Name: "http"}, {Name: "peers"}, {Name: "min_peers"}, {Name: "data_dir"},
	},
}

var tlsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "ca"}, {Name: "cert"}, {Name: "key"}, {Name: "insecure"}},
}

var componentSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "name"}, {Name: "plugin"}, {Name: "sha256"}, {Name: "address"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "config"}},
}

var serviceSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "address", Required: true}, {Name: "endpoints"}, {Name: "metadata"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "check"}},
}

var checkSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "interval"}, {Name: "timeout"}, {Name: "grpc_service"}},
}

// decode fills cfg from the file's body. It carries on past errors so that
// one run reports every problem.
func decode(cfg *Config, body hcl.Body, vars map[string]string) hcl.Diagnostics {
	content, diags := body.Content(rootSchema)
	byType := make(map[string]hcl.Blocks)
	for _, b := range content.Blocks {
		byType[b.Type] = append(byType[b.Type], b)
	}

	ctx, vdiags := evalContext(byType["variable"], vars)
	cfg.EvalContext = ctx
	d := &decoder{ctx: ctx, dir: cfg.Dir, diags: append(diags, vdiags...)}

	fileStart := body.MissingItemRange()
	cfg.Node = d.node(d.single(byType["node"]), fileStart)
	cfg.TLS = d.tls(d.single(byType["tls"]), fileStart)
	d.components(cfg, byType, fileStart)
	cfg.Services = d.services(byType["service"])

	sortDiagnostics(d.diags)
	return d.diags
}

// single returns the one block of a kind that may appear once, reporting
// the others as duplicates.
func (d *decoder) single(blocks hcl.Blocks) *hcl.Block {
	if len(blocks) == 0 {
		return nil
	}
	for _, dup := range blocks[1:] {
		d.errorf(dup.DefRange, fmt.Sprintf("Duplicate %s block", dup.Type),
			"Only one %s block is allowed; the first one is at %s.", dup.Type, blocks[0].DefRange)
	}
	return blocks[0]
}

// elementRange is where element i of a list expression is written, when
// the list is a literal; otherwise the whole expression.
func elementRange(expr hcl.Expression, i, n int) hcl.Range {
	elems, diags := hcl.ExprList(expr)
	if diags.HasErrors() || len(elems) != n {
		return expr.Range()
	}
	return elems[i].Range()
}

// name checks an identifier such as a node id, network or service name.
func (d *decoder) name(rng hcl.Range, what, s string) bool {
	if err := sdk.ValidateName(what, s); err != nil {
		d.errorf(rng, "Invalid "+what, "%s.", err)
		return false
	}
	return true
}

func (d *decoder) node(block *hcl.Block, fileStart hcl.Range) Node {
	n := Node{Network: DefaultNetwork, Listen: DefaultListen, DataDir: d.resolve(DefaultDataDir)}
	n.DeclRange = fileStart
	if block != nil {
		n.DeclRange = block.DefRange
		content, diags := block.Body.Content(nodeSchema)
		d.diags = append(d.diags, diags...)
		attrs := content.Attributes
		for _, attr := range attrs {
			n.record(attr)
		}
		if a := attrs["id"]; a != nil {
			if s, ok := d.str(a); ok && d.name(a.Expr.Range(), "node id", s) {
				n.ID = s
			}
		}
		if a := attrs["network"]; a != nil {
			if s, ok := d.str(a); ok && d.name(a.Expr.Range(), "network name", s) {
				n.Network = s
			}
		}
		if a := attrs["listen"]; a != nil {
			if s, ok := d.str(a); ok && d.hostPort(a.Expr.Range(), "listen", s, bindAddr) {
				n.Listen = s
			}
		}
		if a := attrs["advertise"]; a != nil {
			if s, ok := d.str(a); ok && d.hostPort(a.Expr.Range(), "advertise", s, dialAddr) {
				n.Advertise = s
			}
		}
		if a := attrs["http"]; a != nil {
			if s, ok := d.str(a); ok && d.hostPort(a.Expr.Range(), "http", s, bindAddr) {
				n.HTTP = s
			}
		}
		if a := attrs["peers"]; a != nil {
			if peers, ok := d.strList(a); ok {
				for i, p := range peers {
					if d.hostPort(elementRange(a.Expr, i, len(peers)), "peer", p, dialAddr) {
						n.Peers = append(n.Peers, p)
					}
				}
			}
		}
		if a := attrs["min_peers"]; a != nil {
			if v, ok := d.value(a, cty.Number); ok {
				if i, acc := v.AsBigFloat().Int64(); acc != big.Exact || i < 0 || i > 64 {
					d.errorf(a.Expr.Range(), "Invalid min_peers", "min_peers is a whole number from 0 to 64, not %s.", v.AsBigFloat().String())
				} else {
					n.MinPeers = int(i)
				}
			}
		}
		if a := attrs["data_dir"]; a != nil {
			if p, ok := d.path(a); ok {
				n.DataDir = p
			}
		}
		if a := attrs["admin"]; a != nil {
			if s, ok := d.str(a); ok {
				n.Admin, _ = d.endpoint(a, s, bindAddr)
				if host, _, err := net.SplitHostPort(n.Admin); err == nil && !isLoopback(host) {
					d.diags = append(d.diags, &hcl.Diagnostic{
						Severity: hcl.DiagWarning,
						Summary:  "Admin API reachable from other machines",
						Detail:   fmt.Sprintf("The admin API has no authentication: whoever reaches %s can register and remove this node's services, which every node then routes to. Keep it on a loopback address or a unix socket, or behind a firewall.", n.Admin),
						Subject:  a.Expr.Range().Ptr(),
					})
				}
				return n
			}
		}
	}
	n.Admin = DefaultAdmin
	return n
}

// isLoopback reports whether host names only this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (d *decoder) tls(block *hcl.Block, fileStart hcl.Range) TLS {
	var t TLS
	t.DeclRange = fileStart
	if block == nil {
		d.errorf(fileStart, "Missing tls block",
			"Every node needs a certificate from the network's CA: add tls { ca = \"...\" cert = \"...\" key = \"...\" }, "+
				"or tls { insecure = true } to run with a throwaway development certificate.")
		return t
	}
	t.DeclRange = block.DefRange
	content, diags := block.Body.Content(tlsSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	for _, attr := range attrs {
		t.record(attr)
	}
	// A broken insecure argument already has its diagnostic; do not add
	// "missing ca/cert/key" on top of it.
	insecureBroken := false
	if a := attrs["insecure"]; a != nil {
		errs := len(d.diags)
		t.Insecure, _ = d.boolean(a)
		insecureBroken = len(d.diags) > errs
	}
	files := []struct {
		name string
		dst  *string
	}{{"ca", &t.CA}, {"cert", &t.Cert}, {"key", &t.Key}}
	for _, f := range files {
		a := attrs[f.name]
		switch {
		case a == nil && !t.Insecure && !insecureBroken:
			d.errorf(block.Body.MissingItemRange(), "Missing required argument",
				"The argument %q is required unless insecure = true.", f.name)
		case a != nil:
			*f.dst, _ = d.path(a)
		}
	}
	if t.Insecure {
		detail := "This node will generate a throwaway certificate and accept any peer that does the same. Never use it on a network you care about."
		if t.CA != "" || t.Cert != "" || t.Key != "" {
			detail += " The ca, cert and key arguments are ignored in this mode."
		}
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Insecure development mode",
			Detail:   detail,
			Subject:  attrs["insecure"].Expr.Range().Ptr(),
		})
	}
	return t
}

var typePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

var hexSHA256 = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (d *decoder) component(kind sdk.Kind, block *hcl.Block) *Component {
	c := &Component{Kind: kind, Type: block.Labels[0], Config: absentBody{rng: block.DefRange}, ConfigRange: block.DefRange}
	c.DeclRange = block.DefRange
	c.Name = c.Builtin()
	if !typePattern.MatchString(c.Type) {
		d.errorf(block.LabelRanges[0], "Invalid "+string(kind)+" type",
			"%q is not a valid type: use lowercase letters, digits, dashes and underscores, such as %q.", c.Type, exampleType(kind))
	}

	content, diags := block.Body.Content(componentSchema)
	for _, diag := range diags {
		if diag.Summary == "Unsupported argument" && !strings.Contains(diag.Detail, "Did you mean") {
			diag.Detail += " Arguments of the plugin itself go inside the config { } block."
		}
	}
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	for _, attr := range attrs {
		c.record(attr)
	}

	if a := attrs["name"]; a != nil {
		if s, ok := d.str(a); ok && d.name(a.Expr.Range(), "component name", s) {
			c.Name = s
		}
	}
	if a := attrs["plugin"]; a != nil {
		c.Plugin, _ = d.path(a)
	}
	if a := attrs["sha256"]; a != nil {
		if s, ok := d.str(a); ok {
			if hexSHA256.MatchString(s) {
				c.SHA256 = strings.ToLower(s)
			} else {
				d.errorf(a.Expr.Range(), "Invalid sha256", "%q is not a SHA-256 digest: write 64 hexadecimal digits, as printed by sha256sum.", s)
			}
		}
		if attrs["plugin"] == nil {
			d.errorf(a.NameRange, "Argument sha256 without plugin", "sha256 checks the binary named by plugin, so it needs plugin = \"PATH\" as well.")
		}
	}
	if a := attrs["address"]; a != nil {
		if s, ok := d.str(a); ok {
			c.Address, _ = d.endpoint(a, s, dialAddr)
		}
		if p := attrs["plugin"]; p != nil {
			d.errorf(a.NameRange, "Conflicting arguments",
				"Only one of plugin (at %s) and address may be set: plugin starts a binary, address connects to an instance that is already running.", p.NameRange)
		}
	}

	configs := content.Blocks.OfType("config")
	if len(configs) > 0 {
		c.Config = configs[0].Body
		c.ConfigRange = configs[0].DefRange
		c.HasConfig = true
		d.single(configs)
	}
	return c
}

func exampleType(kind sdk.Kind) string {
	switch kind {
	case sdk.KindTunnel:
		return "quic"
	case sdk.KindRouter:
		return "memory"
	case sdk.KindResolver:
		return "dns"
	default:
		return "rpc"
	}
}

// components decodes the tunnel, router, resolver and proxy blocks: one
// tunnel and one router are required, the proxy is optional, resolvers may
// repeat. Instance names are unique across all of them.
func (d *decoder) components(cfg *Config, byType map[string]hcl.Blocks, fileStart hcl.Range) {
	names := make(map[string]*Component)
	for _, kind := range sdk.Kinds {
		blocks := byType[string(kind)]
		if kind != sdk.KindResolver {
			block := d.single(blocks)
			if block == nil {
				if kind == sdk.KindTunnel || kind == sdk.KindRouter {
					d.errorf(fileStart, fmt.Sprintf("Missing %s block", kind),
						"A node needs a %s: add %s %q { }.", kind, kind, exampleType(kind))
				}
				continue
			}
			blocks = hcl.Blocks{block}
		}
		for _, block := range blocks {
			c := d.component(kind, block)
			if prev, dup := names[c.Name]; dup {
				d.errorf(c.DeclRange, fmt.Sprintf("Duplicate %s %q", kind, c.Name),
					"Another component named %q is declared at %s. Give each a distinct name = \"...\" argument.", c.Name, prev.DeclRange)
				continue
			}
			names[c.Name] = c
			switch kind {
			case sdk.KindTunnel:
				cfg.Tunnel = c
			case sdk.KindRouter:
				cfg.Router = c
			case sdk.KindResolver:
				cfg.Resolvers = append(cfg.Resolvers, c)
			case sdk.KindProxy:
				cfg.Proxy = c
			}
		}
	}
}

func (d *decoder) services(blocks hcl.Blocks) []*Service {
	var out []*Service
	seen := make(map[string]*Service)
	for _, block := range blocks {
		s := &Service{Name: block.Labels[0]}
		s.DeclRange = block.DefRange
		valid := d.name(block.LabelRanges[0], "service name", s.Name)
		content, diags := block.Body.Content(serviceSchema)
		d.diags = append(d.diags, diags...)
		attrs := content.Attributes
		for _, attr := range attrs {
			s.record(attr)
		}
		if a := attrs["address"]; a != nil {
			if addr, ok := d.str(a); ok && d.hostPort(a.Expr.Range(), "address", addr, dialAddr) {
				s.Address = addr
			}
		}
		if a := attrs["endpoints"]; a != nil {
			s.Endpoints, _ = d.strList(a)
		}
		if a := attrs["metadata"]; a != nil {
			s.Metadata, _ = d.strMap(a)
		}
		if check := d.single(content.Blocks.OfType("check")); check != nil {
			s.Check = d.check(check)
		}
		if prev, dup := seen[s.Name]; dup {
			d.errorf(block.DefRange, "Duplicate service",
				"A service named %q was already declared at %s.", s.Name, prev.DeclRange)
			continue
		}
		if valid {
			seen[s.Name] = s
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) check(block *hcl.Block) *Check {
	c := &Check{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout}
	c.DeclRange = block.DefRange
	content, diags := block.Body.Content(checkSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	for _, attr := range attrs {
		c.record(attr)
	}
	if a := attrs["interval"]; a != nil {
		if v, ok := d.duration(a); ok {
			c.Interval = v
		}
	}
	if a := attrs["timeout"]; a != nil {
		if v, ok := d.duration(a); ok {
			c.Timeout = v
		}
	}
	if a := attrs["grpc_service"]; a != nil {
		c.GRPCService, _ = d.str(a)
	}
	return c
}

// sortDiagnostics orders diagnostics by position so they read top to
// bottom; those without a position come first.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
}
