// Package node runs a microhost node: it starts the configured component
// plugins, configures them, joins the network, and serves the admin API,
// /metrics and /healthz. It is what `microhost run` and `microhost demo` run.
package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/host/config"
	"github.com/microhost/microhost/host/network"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/host/registry/grpccheck"
	"github.com/microhost/microhost/host/supervisor"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/pki"
)

// Options configure a node.
type Options struct {
	Config *config.Config
	// Decoded holds each component's config { } block as JSON, by instance
	// name, as DecodeComponents returned it.
	Decoded map[string]json.RawMessage
	Log     hclog.Logger
	// Self is the executable that serves the builtin plugins; default: this one.
	Self string
	// Reattach attaches to plugins running under a debugger.
	Reattach map[string]*plugin.ReattachConfig
}

// Node is a running node.
type Node struct {
	cfg  *config.Config
	log  hclog.Logger
	id   string
	node sdk.NodeConfig

	registry *registry.Registry
	sup      *supervisor.Supervisor
	admin    *adminServer
	httpSrv  *http.Server

	tunnel    sdk.Tunnel
	router    sdk.Router
	resolvers []namedResolver
	proxy     sdk.Proxy

	mu      sync.Mutex
	network *network.Node

	stopOnce sync.Once
}

// pluginSocketDir makes the directory of this node's plugin sockets. Its
// path is short (unix socket paths are limited to ~104 bytes) and the same
// for every run of the node, so what a killed run left there is cleared.
func pluginSocketDir(dataDir string) (string, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	dir := filepath.Join(os.TempDir(), "mh-"+hex.EncodeToString(sum[:6]))
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("clearing the plugin socket directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("plugin socket directory: %w", err)
	}
	return dir, nil
}

// namedResolver is a resolver with its instance name, for logs.
type namedResolver struct {
	name     string
	resolver sdk.Resolver
}

// DiagnosticsError reports configuration problems found while starting,
// such as a plugin refusing a value, at their place in the file.
type DiagnosticsError struct {
	Diags hcl.Diagnostics
	Files map[string]*hcl.File
}

func (e *DiagnosticsError) Error() string {
	var b bytes.Buffer
	config.WriteDiagnostics(&b, e.Diags, e.Files)
	return strings.TrimSpace(b.String())
}

// Start starts a node and returns once its plugins are configured, the
// network protocol runs and the admin API serves. Peers are linked in the
// background: an unreachable peer never delays start-up.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	cfg := opts.Config
	log := opts.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	n := &Node{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n.Stop(stopCtx)
		}
	}()

	if err := os.MkdirAll(cfg.Node.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	id, diags := Identity(cfg)
	if diags.HasErrors() {
		return nil, &DiagnosticsError{Files: cfg.Files, Diags: diags}
	}
	n.id = id
	n.node = cfg.NodeConfig()
	n.node.ID = n.id
	if cfg.TLS.Insecure {
		log.Warn("INSECURE: tls { insecure = true } gives this node a throwaway certificate and accepts any peer; use it for development only")
	}
	n.log = log.With("node", n.id)

	n.registry = registry.New(registry.WithLogger(n.log.Named("registry")), registry.WithChecker(grpccheck.Check))
	for _, s := range cfg.Services {
		var check *registry.Check
		if s.Check != nil {
			check = &registry.Check{Interval: s.Check.Interval, Timeout: s.Check.Timeout, GRPCService: s.Check.GRPCService}
		}
		if err := n.registry.AddStatic(s.Instance(), check); err != nil {
			return nil, fmt.Errorf("service %q (%s): %w", s.Name, s.DeclRange, err)
		}
	}

	// The admin API serves first: standalone components call back into it
	// while they are configured.
	if n.admin, err = startAdmin(n, cfg.Node.Admin); err != nil {
		return nil, n.argumentError(cfg.Node.Source, "admin", "Cannot serve the admin API", err)
	}
	socketDir, err := pluginSocketDir(cfg.Node.DataDir)
	if err != nil {
		return nil, err
	}
	if n.sup, err = supervisor.New(supervisor.Options{
		Log: n.log.Named("plugin"), Self: opts.Self, SocketDir: socketDir,
		HostAddress: n.admin.address, Reattach: opts.Reattach,
		// A plugin that exits is noticed within a second (and one that
		// hangs by its health checks); checking five times a second, per
		// plugin, was most of what woke an idle node.
		PollInterval: time.Second,
	}); err != nil {
		return nil, err
	}
	if err := n.startComponents(ctx, opts.Decoded); err != nil {
		return nil, err
	}
	if err := n.startNetwork(ctx); err != nil {
		return nil, err
	}
	if cfg.Node.HTTP != "" {
		if n.httpSrv, err = startHTTP(n, cfg.Node.HTTP); err != nil {
			return nil, n.argumentError(cfg.Node.Source, "http", "Cannot serve /metrics and /healthz", err)
		}
	}
	n.log.Info("node running", "network", n.node.Network, "listen", n.node.Listen, "admin", n.admin.address)
	return n, nil
}

// argumentError points err at the argument of the config that caused it.
func (n *Node) argumentError(src config.Source, arg, summary string, err error) error {
	return &DiagnosticsError{Files: n.cfg.Files, Diags: hcl.Diagnostics{{
		Severity: hcl.DiagError, Summary: summary, Detail: err.Error(), Subject: src.Range(arg).Ptr(),
	}}}
}

// Identity is the node's id: the configured one, else the one in its
// certificate. It checks the certificate, key and CA against each other and
// reports a problem at the argument that names the file at fault.
func Identity(cfg *config.Config) (string, hcl.Diagnostics) {
	at := func(src config.Source, arg, summary string, err error) (string, hcl.Diagnostics) {
		return "", hcl.Diagnostics{{Severity: hcl.DiagError, Summary: summary, Detail: err.Error(), Subject: src.Range(arg).Ptr()}}
	}
	if cfg.TLS.Insecure || cfg.TLS.Cert == "" {
		if cfg.Node.ID != "" {
			return cfg.Node.ID, nil
		}
		host, err := os.Hostname()
		if err != nil {
			return at(cfg.Node.Source, "id", "Node id unknown", fmt.Errorf("node { id } is not set and the host name is unknown: %w", err))
		}
		return host, nil
	}
	for _, f := range []struct{ arg, path string }{{"ca", cfg.TLS.CA}, {"cert", cfg.TLS.Cert}, {"key", cfg.TLS.Key}} {
		if _, err := os.Stat(f.path); err != nil {
			return at(cfg.TLS.Source, f.arg, "Cannot read the "+f.arg+" file", err)
		}
	}
	ident, err := pki.LoadNode(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return at(cfg.TLS.Source, "cert", "Unusable node certificate", err)
	}
	if cfg.Node.ID != "" && cfg.Node.ID != ident.ID {
		return at(cfg.Node.Source, "id", "Node id does not match the certificate",
			fmt.Errorf("node { id = %q } but certificate %s is for node %q: leave id out to take it from the certificate", cfg.Node.ID, cfg.TLS.Cert, ident.ID))
	}
	return ident.ID, nil
}

// startComponents starts and configures the plugins in dependency order.
func (n *Node) startComponents(ctx context.Context, decoded map[string]json.RawMessage) error {
	for _, c := range n.cfg.Components() {
		spec := supervisor.Spec{Name: c.Name, Kind: c.Kind, Path: c.Plugin, SHA256: c.SHA256, Address: c.Address}
		if c.Plugin == "" && c.Address == "" {
			spec.Builtin = c.Builtin()
		}
		inst, err := n.sup.Start(ctx, spec)
		if err != nil {
			return &DiagnosticsError{Files: n.cfg.Files, Diags: hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Cannot start %s", c.Name),
				Detail:   err.Error(),
				Subject:  c.DeclRange.Ptr(),
			}}}
		}
		var diags sdk.Diagnostics
		if c.Address == "" || c.HasConfig {
			diags = inst.Configure(ctx, sdk.ConfigureRequest{Config: decoded[c.Name], Node: n.node, Host: n})
		}
		if len(diags) > 0 {
			hdiags := c.Diagnostics(diags)
			if diags.HasErrors() {
				return &DiagnosticsError{Files: n.cfg.Files, Diags: hdiags}
			}
			n.log.Warn("component configured with warnings", "component", c.Name, "warnings", (&DiagnosticsError{Diags: hdiags, Files: n.cfg.Files}).Error())
		}
		inst.MarkRunning()
		switch comp := inst.Component().(type) {
		case sdk.Tunnel:
			n.tunnel = comp
			inst.OnRestart(n.restartNetwork)
		case sdk.Router:
			n.router = comp
			inst.OnRestart(n.restartNetwork)
		case sdk.Resolver:
			n.resolvers = append(n.resolvers, namedResolver{name: c.Name, resolver: comp})
		case sdk.Proxy:
			n.proxy = comp
		}
	}
	if n.tunnel == nil || n.router == nil {
		return errors.New("a node needs a tunnel { } and a router { } block")
	}
	return nil
}

func (n *Node) newNetwork() (*network.Node, error) {
	addr := n.node.Advertise
	if addr == "" {
		addr = n.node.Listen
	}
	return network.New(network.Config{
		NodeID: n.id, Network: n.node.Network, Address: addr,
		Tunnel: n.tunnel, Router: n.router, Peers: n.node.Peers, MinPeers: n.cfg.Node.MinPeers,
		Resolve: n.resolvePeers, Log: n.log,
	})
}

func (n *Node) startNetwork(ctx context.Context) error {
	nw, err := n.newNetwork()
	if err != nil {
		return err
	}
	if err := nw.Start(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	n.network = nw
	n.mu.Unlock()
	return nil
}

// restartNetwork runs the network protocol afresh after the tunnel or the
// router plugin was restarted: its sessions and streams died with the
// plugin, and a fresh start re-solicits every peer, so a restarted router
// gets its learned routes back.
func (n *Node) restartNetwork(inst *supervisor.Instance) {
	n.log.Info("restarting the network protocol after a plugin restart", "plugin", inst.Spec().Name)
	n.mu.Lock()
	old := n.network
	n.network = nil
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if old != nil {
		old.Stop(ctx)
	}
	if err := n.startNetwork(ctx); err != nil {
		n.log.Error("cannot restart the network protocol", "error", err)
	}
}

// resolvePeers asks every resolver at once for peers of this network, each
// within the time ctx leaves: a slow one does not hold up the others. A
// resolver that fails is logged and skipped.
func (n *Node) resolvePeers(ctx context.Context) ([]sdk.Node, error) {
	type answer struct {
		nodes []sdk.Node
		err   error
	}
	answers := make([]answer, len(n.resolvers))
	var wg sync.WaitGroup
	for i, r := range n.resolvers {
		wg.Go(func() {
			nodes, err := r.resolver.Resolve(ctx, n.node.Network)
			answers[i] = answer{nodes, err}
		})
	}
	wg.Wait()
	best := map[string]int{}
	var errs []error
	for i, a := range answers {
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.resolvers[i].name, a.err))
			n.log.Warn("resolver failed", "resolver", n.resolvers[i].name, "error", a.err)
			continue
		}
		for _, nd := range a.nodes {
			if p, ok := best[nd.Address]; !ok || nd.Priority < p {
				best[nd.Address] = nd.Priority
			}
		}
	}
	var out []sdk.Node
	for addr, prio := range best {
		out = append(out, sdk.Node{Address: addr, Priority: prio})
	}
	slices.SortFunc(out, func(a, b sdk.Node) int {
		if a.Priority != b.Priority {
			return a.Priority - b.Priority
		}
		return strings.Compare(a.Address, b.Address)
	})
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// protocol returns the running network protocol, or nil while it restarts.
func (n *Node) protocol() *network.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.network
}

// ID is the node's id.
func (n *Node) ID() string { return n.id }

// AdminAddress is where the admin API serves.
func (n *Node) AdminAddress() string { return n.admin.address }

// Reload forwards a reload (SIGHUP) to every plugin process: the tunnel
// re-reads its certificates without dropping links.
func (n *Node) Reload() {
	for _, inst := range n.sup.Instances() {
		if err := inst.Signal(syscall.SIGHUP); err != nil {
			n.log.Warn("cannot signal plugin", "plugin", inst.Spec().Name, "error", err)
		}
	}
}

// Stop leaves the network (peers drop this node and its routes at once),
// then stops the plugins in reverse dependency order and the servers.
func (n *Node) Stop(ctx context.Context) {
	n.stopOnce.Do(func() {
		if nw := n.protocol(); nw != nil {
			if err := nw.Stop(ctx); err != nil {
				n.log.Warn("network stop", "error", err)
			}
		}
		if n.sup != nil {
			n.sup.StopAll()
		}
		if n.registry != nil {
			n.registry.Close()
		}
		if n.httpSrv != nil {
			n.httpSrv.Shutdown(ctx)
		}
		if n.admin != nil {
			n.admin.stop()
		}
	})
}

// The sdk.Host the components call back into.

func (n *Node) WatchServices(ctx context.Context) (sdk.ServiceWatcher, error) {
	return n.registry.WatchServices(ctx)
}

func (n *Node) WatchRoutes(ctx context.Context) (sdk.Watcher, error) {
	if n.router == nil {
		return nil, errors.New("the router is not running yet")
	}
	return n.router.Watch(ctx)
}

func (n *Node) Tunnel(context.Context) (sdk.Tunnel, error) {
	if n.tunnel == nil {
		return nil, errors.New("the tunnel is not running yet")
	}
	return n.tunnel, nil
}
