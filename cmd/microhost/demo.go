package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/examples/greeter"
	"github.com/microhost/microhost/examples/greeter/greeterpb"
	"github.com/microhost/microhost/host/config"
	"github.com/microhost/microhost/host/node"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/pki"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// shutdownTimeout bounds a graceful stop of a node.
const shutdownTimeout = 15 * time.Second

// demoNodeConfig is the configuration of each demo node. The nodes form a
// chain, node-3 → node-2 → node-1, so that node-3 reaches node-1's service
// through node-2.
const demoNodeConfig = `
node {
  id       = %[1]q
  network  = "demo"
  listen   = %[2]q
  admin    = %[3]q
  peers    = %[4]s
  data_dir = %[5]q
}
tls {
  ca   = %[6]q
  cert = %[7]q
  key  = %[8]q
}
tunnel "quic" {
  config {
    keepalive_interval = "500ms"
  }
}
router "memory" {
  config {
    flush_interval = "50ms"
  }
}
proxy "rpc" {
  config {
    listen = %[9]q
  }
}
%[10]s
`

func demoCommand() *cobra.Command {
	var once bool
	var logLevel string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a 3-node network on this machine and call a service across it",
		Long: `Start a network of three nodes on loopback, each with a certificate from a
throwaway CA and the builtin plugins, as a chain node-3 → node-2 → node-1. A
greeter gRPC service (with server reflection) runs behind node-1; the demo calls
it through node-3's proxy and prints the reply and what node-3 knows of the
network. It then runs until Ctrl-C; with --once it stops after the call.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := hclog.New(&hclog.LoggerOptions{Name: "demo", Level: hclog.LevelFromString(logLevel), Output: cmd.ErrOrStderr()})
			return runDemo(ctx, cmd.OutOrStdout(), log, once)
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "exit after the call, with a clean shutdown")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "log level of the nodes")
	return cmd
}

func runDemo(ctx context.Context, out io.Writer, log hclog.Logger, once bool) error {
	dir, err := os.MkdirTemp("", "mh-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certs := filepath.Join(dir, "certs")
	if _, err := pki.InitCA(certs); err != nil {
		return err
	}

	greeterAddr, stopGreeter, err := startGreeter("node-1")
	if err != nil {
		return err
	}
	defer stopGreeter()

	ports, err := freeUDPPorts(3)
	if err != nil {
		return err
	}
	var nodes []*node.Node
	defer func() {
		shutdown, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for k := len(nodes) - 1; k >= 0; k-- {
			nodes[k].Stop(shutdown)
		}
	}()
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("node-%d", i)
		cert, key, err := pki.Issue(certs, id, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		peers := "[]"
		if i > 1 {
			peers = fmt.Sprintf("[%q]", fmt.Sprintf("127.0.0.1:%d", ports[i-2]))
		}
		service := ""
		if i == 1 {
			service = fmt.Sprintf("service \"greeter\" {\n  address = %q\n  endpoints = [%q]\n}", greeterAddr, greeter.ServiceName)
		}
		proxyAddr, err := freeTCPAddr()
		if err != nil {
			return err
		}
		src := fmt.Sprintf(demoNodeConfig, id, fmt.Sprintf("127.0.0.1:%d", ports[i-1]),
			"unix:"+filepath.Join(dir, id+".sock"), peers, filepath.Join(dir, id),
			filepath.Join(certs, pki.CAFile), cert, key, proxyAddr, service)
		cfg, diags := config.Parse([]byte(src), filepath.Join(dir, id+".hcl"), nil)
		var decoded map[string]json.RawMessage
		if !diags.HasErrors() {
			var more = diags
			decoded, more = node.DecodeComponents(ctx, cfg)
			diags = append(diags, more...)
		}
		if diags.HasErrors() {
			config.WriteDiagnostics(os.Stderr, diags, cfg.Files)
			return errors.New("the demo's embedded configuration is invalid")
		}
		n, err := node.Start(ctx, node.Options{Config: cfg, Decoded: decoded, Log: log.Named(id)})
		if err != nil {
			return fmt.Errorf("starting %s: %w", id, err)
		}
		nodes = append(nodes, n)
		fmt.Fprintf(out, "started %s: tunnel udp/127.0.0.1:%d, proxy %s\n", id, ports[i-1], proxyAddr)
	}

	last := nodes[2]
	fmt.Fprintln(out, "waiting for node-3 to learn the greeter's route...")
	if err := waitForRoute(ctx, last, "greeter", 30*time.Second); err != nil {
		return err
	}
	proxyAddr, err := last.ProxyAddress(ctx)
	if err != nil {
		return err
	}
	// The proxy's route cache follows the router a moment later.
	var reply *greeterpb.HelloReply
	for deadline := time.Now().Add(10 * time.Second); ; {
		reply, err = callGreeter(ctx, proxyAddr)
		if c := status.Code(err); (c != codes.NotFound && c != codes.Unavailable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("calling greeter through node-3: %w", err)
	}
	fmt.Fprintf(out, "\ncalled greeter through node-3's proxy (%s):\n  %q, served by %s\n\n", proxyAddr, reply.GetMessage(), reply.GetServedBy())

	admin := last.AdminAddress()
	for _, args := range [][]string{{"network", "nodes"}, {"network", "routes"}} {
		fmt.Fprintf(out, "$ microhost %s %s --admin %s\n", args[0], args[1], admin)
		root := rootCommand()
		root.SetOut(out)
		root.SetArgs(append(args, "--admin", admin))
		if err := root.ExecuteContext(ctx); err != nil {
			return err
		}
		fmt.Fprintln(out)
	}
	if once {
		fmt.Fprintln(out, "demo done; stopping the nodes")
		return nil
	}
	fmt.Fprintf(out, "the network keeps running; try:\n  microhost call greeter %s/SayHello '{\"name\":\"you\"}' --admin %s\nCtrl-C stops it.\n", greeter.ServiceName, admin)
	<-ctx.Done()
	return nil
}

func startGreeter(servedBy string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := grpc.NewServer()
	greeter.Register(s, servedBy)
	go s.Serve(ln)
	return ln.Addr().String(), s.Stop, nil
}

func waitForRoute(ctx context.Context, n *node.Node, service string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if routes, err := n.Routes(ctx, sdk.Query{Service: service}); err == nil && len(routes) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no route to %q reached the node within %s", service, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func callGreeter(ctx context.Context, proxyAddr string) (*greeterpb.HelloReply, error) {
	conn, err := grpc.NewClient(proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "micro-service", "greeter")
	return greeterpb.NewGreeterClient(conn).SayHello(ctx, &greeterpb.HelloRequest{Name: "microhost"})
}

func freeUDPPorts(n int) ([]int, error) {
	var ports []int
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

func freeTCPAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
