package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// Serve runs a plugin binary: the one call its main makes. newComponent
// gets a logger that the host reads; it is made before anything else, so
// that nothing the component logs is lost (see Main).
func Serve(newComponent func(hclog.Logger) Component) {
	os.Exit(Main(os.Args[0], os.Args[1:], newComponent))
}

// Main is Serve without the exit: it returns the process exit code.
//
// Under a host (go-plugin's handshake cookie set, no arguments) it serves
// the plugin protocol. Otherwise the arguments choose:
//
//	serve --listen ADDR --config FILE  standalone gRPC service (health, reflection on)
//	debug                              go-plugin reattach mode, for a debugger
//	describe                           info and config schema as JSON
func Main(prog string, args []string, newComponent func(hclog.Logger) Component) int {
	log := hclog.New(&hclog.LoggerOptions{
		Level:      hclog.LevelFromString(envOr("MICROHOST_LOG_LEVEL", "info")),
		Output:     os.Stderr,
		JSONFormat: os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue,
	})
	if len(args) == 0 && os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue {
		return servePlugin(newComponent(log), log, nil)
	}
	if len(args) == 0 {
		usage(os.Stderr, prog)
		return 2
	}
	switch args[0] {
	case "describe":
		return describe(os.Stdout, newComponent(log))
	case "serve":
		return serveStandalone(prog, args[1:], newComponent(log), log)
	case "debug":
		return serveDebug(newComponent(log), log)
	case "-h", "-help", "--help", "help":
		usage(os.Stdout, prog)
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s: unknown command %q\n", prog, args[0])
	usage(os.Stderr, prog)
	return 2
}

func usage(w io.Writer, prog string) {
	fmt.Fprintf(w, `%[1]s is a microhost component plugin.

Usage:
  %[1]s describe                             print name, kind, version and config schema as JSON
  %[1]s serve --listen ADDR --config FILE    run standalone as a gRPC service
  %[1]s debug                                serve in reattach mode (MICROHOST_REATTACH) for a debugger

Under a microhost host it is started with no arguments and speaks the plugin protocol.
`, prog)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Description is what `describe` prints.
type Description struct {
	Info   Info   `json:"info"`
	Schema Schema `json:"schema"`
}

func describe(w io.Writer, c Component) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(Description{Info: c.Info(), Schema: c.Schema()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// servePlugin serves c under go-plugin. test is set only in debug mode.
func servePlugin(c Component, log hclog.Logger, test *plugin.ServeTestConfig) int {
	p := &GRPCPlugin{Impl: c, Logger: log}
	if test == nil {
		go exitWithParent(log, p)
		// A SIGTERM sent to the whole process group (a terminal, timeout(1),
		// systemd) must not kill the plugin before the host has drained it:
		// the host stops its plugins itself, and exitWithParent covers a
		// host that is gone. go-plugin already does the same for SIGINT.
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		defer signal.Stop(term)
		go func() {
			for range term {
				log.Debug("SIGTERM ignored: the host stops this plugin")
			}
		}()
	}
	// The host forwards SIGHUP to every plugin: one that has nothing to
	// reload must not die of it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			r, ok := c.(Reloader)
			if !ok {
				log.Debug("SIGHUP: nothing to reload")
				continue
			}
			if err := r.Reload(); err != nil {
				log.Error("reload failed; keeping the previous files", "error", err)
			} else {
				log.Info("reloaded")
			}
		}
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: p},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, MessageSizeServerOptions()...)...)
		},
		Logger: log,
		Test:   test,
	})
	if p.server != nil {
		if err := p.server.close(); err != nil {
			log.Error("closing the component", "error", err)
		}
	}
	return 0
}

// exitWithParent ends the plugin when the host that started it is gone,
// even if the host was killed and could not stop it: a plugin is never
// left running on its own.
func exitWithParent(log hclog.Logger, p *GRPCPlugin) {
	parent := os.Getppid()
	for range time.Tick(250 * time.Millisecond) {
		if os.Getppid() != parent {
			log.Warn("the host process is gone; exiting", "host_pid", parent)
			if p.server != nil {
				done := make(chan struct{})
				go func() { p.server.close(); close(done) }()
				select {
				case <-done:
				case <-time.After(time.Second):
				}
			}
			os.Exit(1)
		}
	}
}

func serveDebug(c Component, log hclog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ch := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	go func() {
		rc := <-ch
		cfg, _ := json.Marshal(map[string]any{c.Info().Name: map[string]any{
			"protocol": rc.Protocol, "protocol_version": rc.ProtocolVersion,
			"pid": rc.Pid, "network": rc.Addr.Network(), "address": rc.Addr.String(),
		}})
		fmt.Printf("Plugin serving in debug mode. Start the host with:\n\n  MICROHOST_REATTACH='%s'\n\n", cfg)
	}()
	return servePlugin(c, log, &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: ch, CloseCh: closed})
}

// StandaloneConfig is the file a standalone component reads: the node it
// serves, and its own config { } block.
type StandaloneConfig struct {
	Node   *standaloneNode `hcl:"node,block"`
	TLS    *standaloneTLS  `hcl:"tls,block"`
	Config *struct {
		Body hcl.Body `hcl:",remain"`
	} `hcl:"config,block"`
}

type standaloneNode struct {
	ID        string   `hcl:"id,optional"`
	Network   string   `hcl:"network,optional"`
	Listen    string   `hcl:"listen,optional"`
	Advertise string   `hcl:"advertise,optional"`
	Peers     []string `hcl:"peers,optional"`
	DataDir   string   `hcl:"data_dir,optional"`
	// Host is the address of a host's admin API whose callbacks (registry,
	// routes, tunnel data path) the component should use.
	Host string `hcl:"host,optional"`
}

type standaloneTLS struct {
	CA       string `hcl:"ca,optional"`
	Cert     string `hcl:"cert,optional"`
	Key      string `hcl:"key,optional"`
	Insecure bool   `hcl:"insecure,optional"`
}

// LoadStandalone reads a standalone config file with parser and decodes
// its config { } block against schema. It also returns the host address
// named in node { host = ... }, if any.
func LoadStandalone(parser *hclparse.Parser, path string, schema Schema) (ConfigureRequest, string, hcl.Diagnostics) {
	file, diags := parser.ParseHCLFile(path)
	if diags.HasErrors() {
		return ConfigureRequest{}, "", diags
	}
	var cfg StandaloneConfig
	if diags := gohcl.DecodeBody(file.Body, nil, &cfg); diags.HasErrors() {
		return ConfigureRequest{}, "", diags
	}
	var req ConfigureRequest
	var hostAddr string
	if n := cfg.Node; n != nil {
		req.Node = NodeConfig{ID: n.ID, Network: n.Network, Listen: n.Listen, Advertise: n.Advertise, Peers: n.Peers, DataDir: n.DataDir}
		hostAddr = n.Host
	}
	if t := cfg.TLS; t != nil {
		req.Node.TLS = TLSConfig{CA: t.CA, Cert: t.Cert, Key: t.Key, Insecure: t.Insecure}
	}
	if cfg.Config != nil {
		raw, diags := schema.Decode(cfg.Config.Body, nil, filepath.Dir(path))
		if diags.HasErrors() {
			return ConfigureRequest{}, "", diags
		}
		req.Config = raw
	}
	return req, hostAddr, nil
}

// WriteDiagnostics prints diagnostics with the source lines they point at.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) {
	wr := hcl.NewDiagnosticTextWriter(w, files, 100, false)
	wr.WriteDiagnostics(diags)
}

func serveStandalone(prog string, args []string, c Component, log hclog.Logger) int {
	fs := flag.NewFlagSet(prog+" serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve gRPC on")
	configPath := fs.String("config", "", "HCL file with optional node { }, tls { } and config { } blocks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var req ConfigureRequest
	var hostAddr string
	if *configPath != "" {
		var diags hcl.Diagnostics
		parser := hclparse.NewParser()
		req, hostAddr, diags = LoadStandalone(parser, *configPath, c.Schema())
		if diags.HasErrors() {
			WriteDiagnostics(os.Stderr, diags, parser.Files())
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if hostAddr != "" {
		conn, err := dialHostAddress(hostAddr)
		if err != nil {
			log.Error("cannot reach the host", "address", hostAddr, "error", err)
			return 1
		}
		defer conn.Close()
		req.Host = newHostClient(conn)
	}
	if diags := c.Configure(ctx, req); diags.HasErrors() {
		fmt.Fprintf(os.Stderr, "%s: configuration refused:\n%v\n", c.Info().Name, diags.Err())
		return 1
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("cannot listen", "address", *listen, "error", err)
		return 1
	}
	server := grpc.NewServer(MessageSizeServerOptions()...)
	ps := registerComponent(server, c, func(req2 *pb.ConfigureRequest) (*grpc.ClientConn, error) {
		return dialHostAddress(req2.GetHostAddress())
	}, log)
	healthServer := health.NewServer()
	healthpb.RegisterHealthServer(server, healthServer)
	reflection.Register(server)
	go watchHealth(ctx, c, healthServer)

	log.Info("serving standalone", "component", c.Info().Name, "address", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("server stopped", "error", err)
	}
	ps.close()
	stopped := make(chan struct{})
	go func() { server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		server.Stop()
	}
	return 0
}

// watchHealth mirrors the component's Health into the standard gRPC health service.
func watchHealth(ctx context.Context, c Component, hs *health.Server) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		state := healthpb.HealthCheckResponse_SERVING
		if err := c.Health(ctx); err != nil {
			state = healthpb.HealthCheckResponse_NOT_SERVING
		}
		hs.SetServingStatus("", state)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dialHostAddress connects to a host's callbacks served at an address
// ("unix:/path" or "host:port").
func dialHostAddress(addr string) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("no host address")
	}
	if !strings.HasPrefix(addr, "unix:") && !strings.Contains(addr, ":") {
		return nil, fmt.Errorf("host address %q is neither host:port nor unix:/path", addr)
	}
	return grpc.NewClient(addr, append(MessageSizeDialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
}
