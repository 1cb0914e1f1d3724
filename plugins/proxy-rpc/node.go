package proxyrpc

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/microhost/microhost/plugins/proxy-rpc/connpool"
	"github.com/microhost/microhost/plugins/proxy-rpc/forward"
	"github.com/microhost/microhost/plugins/proxy-rpc/pubsub"
	"github.com/microhost/microhost/plugins/proxy-rpc/pubsubpb"
	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/plugins/proxy-rpc/routetable"
	"github.com/microhost/microhost/plugins/proxy-rpc/sessconn"
	"github.com/microhost/microhost/sdk"
)

// Channel is the tunnel channel proxies forward calls to each other on.
const Channel = "proxy"

// Connection pool upkeep: a connection no route needs is closed after it
// has been idle this long.
const (
	sweepEvery = 30 * time.Second
	idleAfter  = time.Minute
)

// HTTP/2 flow-control windows of the proxy's connections, those to other
// proxies over the tunnel included. Fixed windows turn off gRPC's
// bandwidth estimation, whose pings cost a round trip's worth of frames on
// short calls; these are large enough for a stream to run at full speed.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// node is a configured, running proxy.
type node struct {
	log    hclog.Logger
	s      settings
	lis    net.Listener
	table  *routetable.Table
	local  *connpool.Pool
	remote *connpool.Pool // nil without a host (and so without a tunnel)
	fwd    *forward.Forwarder
	broker *pubsub.Broker
	mc     *multicaster // nil without a host

	server       *grpc.Server // serves clients on lis
	tunnelServer *grpc.Server // serves other nodes' proxies over the tunnel

	host    sdk.Host
	tunMu   sync.Mutex
	tun     sdk.Tunnel
	watchOK atomic.Bool
	// loaded is closed once the first watch has delivered the table (its
	// first event is a Resync holding every route).
	loaded     chan struct{}
	loadedOnce sync.Once
	lastErr    atomic.Value // string: why the route watch is failing

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func start(s settings, lis net.Listener, host sdk.Host, nodeID string, log hclog.Logger) *node {
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{log: log, s: s, lis: lis, table: routetable.New(), host: host, cancel: cancel, loaded: make(chan struct{})}
	n.local = connpool.New(n.dialLocal, nil)
	sendPublished := func(pubsub.Message) error { return nil } // a node alone has no peers
	if host != nil {
		n.remote = connpool.New(n.dialRemote, nil)
		n.mc = &multicaster{tunnel: n.tunnel, ctx: ctx}
		sendPublished = n.mc.send
	}
	n.broker = pubsub.NewBroker(nodeID, sendPublished, s.maxHops)
	n.fwd = &forward.Forwarder{Table: n.table, Local: n.local, Remote: n.remote, MaxHops: s.maxHops, Log: log.Named("forward")}

	var creds []grpc.ServerOption
	if s.tls != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	n.server = grpc.NewServer(append(creds, n.serverOptions()...)...)
	pubsubpb.RegisterPubSubServer(n.server, &pubsubService{broker: n.broker})
	n.tunnelServer = grpc.NewServer(n.serverOptions()...)

	n.spawn(func() {
		if err := n.server.Serve(lis); err != nil {
			log.Error("proxy stopped serving", "address", lis.Addr().String(), "error", err)
		}
	})
	n.spawn(func() { n.sweep(ctx) })
	if host != nil {
		n.spawn(func() { n.watchRoutes(ctx) })
		n.spawn(func() { n.serveTunnel(ctx) })
		n.spawn(func() { n.servePubSub(ctx) })
	} else {
		n.watchOK.Store(true)
		n.markLoaded()
	}
	return n
}

func (n *node) markLoaded() { n.loadedOnce.Do(func() { close(n.loaded) }) }

// spawn runs f in a goroutine that close waits for.
func (n *node) spawn(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *node) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnknownServiceHandler(n.fwd.Handle),
		grpc.ForceServerCodecV2(rawcodec.Codec{}),
		grpc.MaxRecvMsgSize(n.s.maxMessageSize),
		grpc.MaxSendMsgSize(n.s.maxMessageSize),
		grpc.MaxConcurrentStreams(uint32(n.s.maxStreams)),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		// Clients that ping to keep idle connections through NATs and load
		// balancers alive are not cut off as abusive.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

func (n *node) clientOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(rawcodec.Codec{}),
			grpc.MaxCallRecvMsgSize(n.s.maxMessageSize),
			grpc.MaxCallSendMsgSize(n.s.maxMessageSize),
		),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		// A restarted instance is found again within seconds, not after
		// gRPC's default two-minute backoff ceiling.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}, MinConnectTimeout: 5 * time.Second}),
	}
}

// dialLocal connects to an instance address.
func (n *node) dialLocal(address string) (*grpc.ClientConn, error) {
	target := address
	if !strings.Contains(address, "://") && !strings.HasPrefix(address, "unix:") {
		target = "passthrough:///" + address
	}
	return grpc.NewClient(target, append(n.clientOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
}

// dialRemote connects to the proxy of node id over the tunnel: every
// connection attempt is one unicast session on Channel, which carries
// HTTP/2 and so multiplexes all calls to that node. The tunnel encrypts
// and authenticates, so gRPC runs in plaintext inside it.
func (n *node) dialRemote(id string) (*grpc.ClientConn, error) {
	dialer := func(ctx context.Context, node string) (net.Conn, error) {
		tun, err := n.tunnel(ctx)
		if err != nil {
			return nil, err
		}
		sess, err := tun.Dial(ctx, Channel, sdk.DialOptions{Mode: sdk.Unicast, Node: node})
		if err != nil {
			return nil, err
		}
		return sessconn.New(sess), nil
	}
	opts := append(n.clientOptions(), grpc.WithContextDialer(dialer), grpc.WithTransportCredentials(insecure.NewCredentials()))
	return grpc.NewClient("passthrough:///"+id, opts...)
}

// tunnel returns the tunnel client, asking the host for it until it has one.
func (n *node) tunnel(ctx context.Context) (sdk.Tunnel, error) {
	n.tunMu.Lock()
	defer n.tunMu.Unlock()
	if n.tun != nil {
		return n.tun, nil
	}
	tun, err := n.host.Tunnel(ctx)
	if err != nil {
		return nil, err
	}
	n.tun = tun
	return tun, nil
}

// dropTunnel forgets tun after it failed in a way that suggests the tunnel
// plugin went away, so that the next use asks the host for a new client.
func (n *node) dropTunnel(tun sdk.Tunnel) {
	n.tunMu.Lock()
	defer n.tunMu.Unlock()
	if tun == nil || n.tun != tun {
		return
	}
	n.tun = nil
	tun.Close()
}

// watchRoutes keeps the route table current; a broken watch is started
// again, and its first event, a Resync, replaces the whole table.
func (n *node) watchRoutes(ctx context.Context) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		w, err := n.host.WatchRoutes(ctx)
		if err != nil {
			n.watchFailed(ctx, "start", err)
			if !sleep(ctx, wait) {
				return
			}
			wait = nextWait(wait)
			continue
		}
		n.watchOK.Store(true)
		wait = 100 * time.Millisecond
		// A watch starts with a Resync holding the whole table, which
		// replaces whatever an earlier watch left.
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				w.Stop()
				n.watchFailed(ctx, "read", err)
				break
			}
			if err := n.table.Apply(ev); err != nil {
				n.log.Warn("ignoring route event", "error", err)
			}
			if ev.Type == sdk.Resync {
				n.markLoaded()
			}
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

func (n *node) watchFailed(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return
	}
	n.watchOK.Store(false)
	n.lastErr.Store(op + " route watch: " + err.Error())
	n.log.Warn("route watch failed; retrying", "op", op, "error", err)
}

// serveTunnel serves calls from other nodes' proxies that arrive as
// sessions on Channel.
func (n *node) serveTunnel(ctx context.Context) {
	n.keepListening(ctx, Channel, "calls from other nodes cannot reach this proxy", func(lis sdk.Listener) error {
		err := n.tunnelServer.Serve(sessconn.NewListener(lis))
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	})
}

// servePubSub hands the messages peers multicast on PubSubChannel to the
// broker.
func (n *node) servePubSub(ctx context.Context) {
	n.keepListening(ctx, PubSubChannel, "messages published on other nodes cannot reach this node", func(lis sdk.Listener) error {
		defer lis.Close()
		for {
			sess, err := lis.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			n.spawn(func() { n.receivePublished(ctx, sess) })
		}
	})
}

func (n *node) receivePublished(ctx context.Context, sess sdk.Session) {
	defer sess.Close()
	for {
		msg, err := sess.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, io.EOF) {
				n.log.Debug("pubsub session ended", "peer", sess.Peer(), "error", err)
			}
			return
		}
		m, err := decode(msg)
		if err == nil {
			_, err = n.broker.Receive(m)
		}
		if err != nil {
			n.log.Warn("published message from a peer not handled", "peer", sess.Peer(), "error", err)
		}
	}
}

// keepListening listens on channel and runs serve with the listener,
// listening again with backoff when that fails, until serve returns nil or
// ctx ends. lost says what does not work meanwhile.
func (n *node) keepListening(ctx context.Context, channel, lost string, serve func(sdk.Listener) error) {
	wait := 100 * time.Millisecond
	warned := false
	for ctx.Err() == nil {
		tun, err := n.tunnel(ctx)
		var lis sdk.Listener
		if err == nil {
			lis, err = tun.Listen(ctx, channel)
		}
		if err == nil {
			wait, warned = 100*time.Millisecond, false
			err = serve(lis)
			if err == nil || ctx.Err() != nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		n.dropTunnel(tun)
		// Said once at warning level; the retries would only repeat it.
		log := n.log.Debug
		if !warned {
			log, warned = n.log.Warn, true
		}
		log("tunnel listener unavailable; retrying", "channel", channel, "meanwhile", lost, "error", err)
		if !sleep(ctx, wait) {
			return
		}
		wait = nextWait(wait)
	}
}

func (n *node) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addresses, gateways := n.table.Targets()
		n.local.Sweep(func(a string) bool { return addresses[a] }, idleAfter)
		if n.remote != nil {
			n.remote.Sweep(func(g string) bool { return gateways[g] }, idleAfter)
		}
	}
}

func (n *node) health() error {
	if !n.watchOK.Load() {
		msg, _ := n.lastErr.Load().(string)
		if msg == "" {
			msg = "route watch not started yet"
		}
		return errors.New(msg)
	}
	return nil
}

// close drains calls in flight for at most timeout, then stops everything.
func (n *node) close(timeout time.Duration) {
	var wg sync.WaitGroup
	for _, s := range []*grpc.Server{n.server, n.tunnelServer} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drain(s, timeout)
		}()
	}
	wg.Wait()
	n.cancel()
	n.wg.Wait()
	n.local.Close()
	if n.remote != nil {
		n.remote.Close()
		n.mc.close()
	}
	// The tunnel client the host handed out is this proxy's own connection.
	n.tunMu.Lock()
	defer n.tunMu.Unlock()
	if n.tun != nil {
		if err := n.tun.Close(); err != nil {
			n.log.Warn("closing the tunnel client", "error", err)
		}
		n.tun = nil
	}
}

// drain stops s gracefully, cutting the calls still running after timeout.
func drain(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.Stop()
		<-done
	}
}
