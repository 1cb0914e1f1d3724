// Package quictun is microhost's tunnel over QUIC: one mutually
// authenticated connection (a link) per pair of nodes, named channels with
// unicast, multicast and broadcast sessions, keepalive with a timeout, link
// metrics, and reconnection with backoff. It imports no gRPC; the plugin
// package adapts it to sdk.Tunnel.
package quictun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk/pki"
	"github.com/quic-go/quic-go"
)

// Mode says which links a session reaches. The values match sdk.Mode.
type Mode uint8

const (
	Unicast Mode = iota
	Multicast
	Broadcast
)

func (m Mode) String() string {
	switch m {
	case Unicast:
		return "unicast"
	case Multicast:
		return "multicast"
	case Broadcast:
		return "broadcast"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Errors returned (wrapped) by the tunnel.
var (
	ErrClosed       = errors.New("tunnel closed")
	ErrNoListener   = errors.New("no peer listens on the channel")
	ErrNoLink       = errors.New("no link to the node")
	ErrChannelInUse = errors.New("channel already has a listener on this node")
	ErrNotConnected = errors.New("address is not being connected")
	ErrLinkDown     = errors.New("link down")
	ErrRefused      = errors.New("peer refused the session")
)

// Config configures a Node. Zero values take the defaults noted.
type Config struct {
	Identity          *pki.Node // required
	ListenAddr        string    // UDP address; default ":0"
	KeepaliveInterval time.Duration
	KeepaliveTimeout  time.Duration // default 3 × KeepaliveInterval
	MaxMessageSize    int           // default 4 MiB
	QueueSize         int           // per link, per multicast session; default 256
	AcceptBacklog     int           // sessions waiting for Accept per listener; default 128
	DialTimeout       time.Duration // default 5s
	DrainTimeout      time.Duration // bound on Close's drain; default 5s
	ReconnectMin      time.Duration // default 250ms
	ReconnectMax      time.Duration // default 30s
	Logger            hclog.Logger
}

// Defaults.
const (
	DefaultKeepaliveInterval = time.Second
	DefaultMaxMessageSize    = 4 << 20
	DefaultQueueSize         = 256
	DefaultAcceptBacklog     = 128
	DefaultDialTimeout       = 5 * time.Second
	DefaultDrainTimeout      = 5 * time.Second
	DefaultReconnectMin      = 250 * time.Millisecond
	DefaultReconnectMax      = 30 * time.Second
	// MaxMessageLimit caps MaxMessageSize (the length prefix is 32 bits).
	MaxMessageLimit = 1 << 30
)

func (c *Config) fill() error {
	if c.Identity == nil {
		return errors.New("quictun: Config.Identity is required")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = 3 * c.KeepaliveInterval
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.AcceptBacklog == 0 {
		c.AcceptBacklog = DefaultAcceptBacklog
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	switch {
	case c.KeepaliveInterval < 0:
		return fmt.Errorf("keepalive interval %s must be positive", c.KeepaliveInterval)
	case c.KeepaliveTimeout <= c.KeepaliveInterval:
		return fmt.Errorf("keepalive timeout %s must exceed the interval %s", c.KeepaliveTimeout, c.KeepaliveInterval)
	case c.MaxMessageSize < 1024 || c.MaxMessageSize > MaxMessageLimit:
		return fmt.Errorf("max message size %d must be between 1024 and %d", c.MaxMessageSize, MaxMessageLimit)
	case c.QueueSize < 1 || c.AcceptBacklog < 1:
		return fmt.Errorf("queue size %d and accept backlog %d must be positive", c.QueueSize, c.AcceptBacklog)
	case c.DialTimeout < 0 || c.DrainTimeout < 0:
		return fmt.Errorf("dial timeout %s and drain timeout %s must be positive", c.DialTimeout, c.DrainTimeout)
	case c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin:
		return fmt.Errorf("reconnect backoff %s..%s: min must be positive and not above max", c.ReconnectMin, c.ReconnectMax)
	}
	return nil
}

// alpn names the tunnel protocol in the TLS handshake.
const alpn = "microhost-tunnel/1"

// Node is one tunnel endpoint: a UDP socket shared by the QUIC listener and
// every outbound dial, so peers see one address per node.
type Node struct {
	cfg      Config
	log      hclog.Logger
	identity atomic.Pointer[pki.Node]
	clock    time.Time // monotonic origin of now()

	udp *net.UDPConn
	tr  *quic.Transport
	ql  *quic.Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	links      map[string]*link // live links by peer node id
	leaving    map[*link]bool   // links whose peer said goodbye, until they close
	listeners  map[string]*Listener
	connectors map[string]*connector       // by address
	multis     map[*multiSession]struct{}  // outbound multicast sessions still writing
	sessions   map[*streamSession]struct{} // stream sessions not yet finished
	nextID     uint64
	closed     bool
}

// Start listens on cfg.ListenAddr and returns a running node.
func Start(cfg Config) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.ListenAddr, err)
	}
	udp, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	n := &Node{
		cfg:        cfg,
		log:        cfg.Logger,
		clock:      time.Now(),
		udp:        udp,
		links:      map[string]*link{},
		leaving:    map[*link]bool{},
		listeners:  map[string]*Listener{},
		connectors: map[string]*connector{},
		multis:     map[*multiSession]struct{}{},
		sessions:   map[*streamSession]struct{}{},
	}
	n.identity.Store(cfg.Identity)
	if cfg.Identity.Insecure {
		n.log.Warn("INSECURE MODE: throwaway certificate, peers are NOT authenticated; any node can join and claim any id. Never use this outside development.", "node", cfg.Identity.ID)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.tr = &quic.Transport{Conn: udp}
	n.ql, err = n.tr.Listen(n.serverTLS(), n.quicConfig())
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("start QUIC listener: %w", err)
	}
	// The node holds one count on wg until Close, so goroutines started from
	// callers' goroutines never raise the counter from zero while Close waits.
	n.wg.Add(3)
	go n.acceptLoop()
	go n.keepalive()
	n.log.Info("tunnel listening", "node", cfg.Identity.ID, "address", udp.LocalAddr().String())
	return n, nil
}

// ID is this node's id, from its certificate.
func (n *Node) ID() string { return n.id() }

func (n *Node) id() string { return n.identity.Load().ID }

// Err returns ErrClosed once Close has been called, else nil.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	return nil
}

// Addr is the UDP address the node listens on.
func (n *Node) Addr() net.Addr { return n.udp.LocalAddr() }

// now is the node's monotonic clock in nanoseconds.
func (n *Node) now() int64 { return int64(time.Since(n.clock)) }

// SetIdentity replaces the node's certificate (for reloads). The node id
// cannot change: links and peers know the node by it.
func (n *Node) SetIdentity(id *pki.Node) error {
	if cur := n.id(); id.ID != cur {
		return fmt.Errorf("new certificate is for node %q, this node is %q; restart to change the node id", id.ID, cur)
	}
	if id.Insecure != n.identity.Load().Insecure {
		return errors.New("cannot switch between insecure and verified mode without a restart")
	}
	n.identity.Store(id)
	return nil
}

func (n *Node) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: n.cfg.DialTimeout,
		// Node.keepalive sends the keepalive pings, as datagrams, and
		// detects dead links; QUIC's idle timeout is a backstop.
		MaxIdleTimeout:             2 * n.cfg.KeepaliveTimeout,
		EnableDatagrams:            true,
		MaxIncomingStreams:         1 << 16,
		MaxIncomingUniStreams:      1,
		InitialStreamReceiveWindow: 1 << 20,
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 64 << 20,
	}
}

// serverTLS builds the listener's TLS config. The certificate and CA are
// read per handshake so that Reload takes effect without dropping links.
//
// Client certificates are requested and then verified by verifyPeer against
// the CA pool with the same checks as tls.RequireAndVerifyClientCert; doing it
// ourselves lets every refusal be logged with the peer address and reason,
// which crypto/tls and quic-go would otherwise swallow.
func (n *Node) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			id := n.identity.Load()
			remote := "unknown"
			if hello.Conn != nil {
				remote = hello.Conn.RemoteAddr().String()
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{alpn},
				Certificates: []tls.Certificate{id.Certificate},
				ClientAuth:   tls.RequestClientCert,
				VerifyConnection: func(cs tls.ConnectionState) error {
					return n.verifyPeer(id, cs, remote, "inbound")
				},
			}, nil
		},
	}
}

// clientTLS builds a dial's TLS config. Peers are dialled by address, not by
// name, so the server certificate is checked against the CA and its node id
// rather than a host name.
func (n *Node) clientTLS(remote string) *tls.Config {
	id := n.identity.Load()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		ServerName:         "microhost",
		Certificates:       []tls.Certificate{id.Certificate},
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return n.verifyPeer(id, cs, remote, "outbound")
		},
	}
}

// verifyPeer authenticates a peer's certificate and logs any refusal.
func (n *Node) verifyPeer(id *pki.Node, cs tls.ConnectionState, remote, dir string) error {
	peer, err := peerID(id, cs, dir == "inbound")
	if err == nil && peer == id.ID {
		err = fmt.Errorf("peer presents this node's own id %q", peer)
	}
	if err != nil {
		n.log.Warn("refused peer", "direction", dir, "remote", remote, "reason", err.Error())
		return err
	}
	return nil
}

func peerID(id *pki.Node, cs tls.ConnectionState, client bool) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if id.Insecure {
		return pki.NodeID(leaf)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	peer, err := pki.Verify(leaf, inter, id.Roots, usage)
	if err != nil {
		return "", fmt.Errorf("certificate of %q (issuer %q) not trusted: %w", leaf.Subject.CommonName, leaf.Issuer.CommonName, err)
	}
	return peer, nil
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		conn, err := n.ql.Accept(n.ctx)
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Error("QUIC listener stopped", "error", err)
			}
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if _, err := n.setupLink(n.ctx, conn, false); err != nil {
				n.log.Debug("inbound link failed", "remote", conn.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

// dial connects to address and returns the live link to that peer, which
// may be an existing link if the new connection lost the duplicate tie-break.
func (n *Node) dial(ctx context.Context, address string) (*link, error) {
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	conn, err := n.tr.Dial(ctx, addr, n.clientTLS(address), n.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	return n.setupLink(ctx, conn, true)
}

// setupLink exchanges hellos on a fresh connection and registers the link.
func (n *Node) setupLink(ctx context.Context, conn *quic.Conn, outbound bool) (*link, error) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	peer := ""
	if len(certs) > 0 {
		peer, _ = pki.NodeID(certs[0]) // verified during the handshake
	}
	if peer == "" {
		_ = conn.CloseWithError(codeProtocol, "no peer identity")
		return nil, errors.New("handshake finished without a peer identity")
	}
	n.mu.Lock()
	n.nextID++
	lid := "L" + strconv.FormatUint(n.nextID, 10)
	n.mu.Unlock()
	l := &link{node: n, id: lid, peer: peer, conn: conn, outbound: outbound, announce: make(chan struct{}, 1),
		pingable: conn.ConnectionState().SupportsDatagrams.Remote}
	if outbound {
		l.dialStamp = time.Now().UnixNano()
	}
	l.ctx, l.cancel = context.WithCancelCause(n.ctx)
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	err := l.openControl()
	if err == nil {
		err = l.acceptControl(ctx)
	}
	if err != nil {
		l.close(codeProtocol, fmt.Errorf("link setup: %w", err))
		if isDuplicate(context.Cause(conn.Context())) || isDuplicate(err) {
			// The peer kept another connection between us: use that one.
			n.mu.Lock()
			kept := n.links[peer]
			n.mu.Unlock()
			if kept != nil && kept.ctx.Err() == nil {
				return kept, nil
			}
			return nil, &duplicateError{peer: peer}
		}
		return nil, fmt.Errorf("link setup with %s at %s: %w", peer, conn.RemoteAddr(), err)
	}
	return n.register(l)
}

// duplicateError says the peer closed a new connection in favour of
// another one between the same two nodes, not yet registered here.
type duplicateError struct{ peer string }

func (e *duplicateError) Error() string {
	return "peer " + e.peer + " kept another connection between us"
}

// register makes l the link to its peer unless a preferred link exists.
//
// When two connections to one peer exist (both sides dialled at once), both
// nodes keep the one dialled by the node with the smaller id, so they agree
// without talking. Between two connections from the same dialler the newer
// one (by the dialler's clock, sent in its hello) wins: the dialler only
// redials when it believes the old one dead.
func (n *Node) register(l *link) (*link, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		l.close(codeClosed, ErrClosed)
		return nil, ErrClosed
	}
	old := n.links[l.peer]
	if old != nil && old.ctx.Err() == nil {
		keepOld := old.dialStamp >= l.dialStamp
		if old.dialler() != l.dialler() {
			keepOld = old.dialler() == min(n.id(), l.peer)
		}
		if keepOld {
			n.mu.Unlock()
			n.log.Debug("duplicate link closed", "peer", l.peer, "kept", old.id, "closed", l.id)
			l.close(codeDuplicate, errDuplicate)
			return old, nil
		}
	}
	st := l.conn.ConnectionStats()
	l.sampleRTT(st)
	l.packetsSeen, l.heardAt = st.PacketsReceived, n.now()
	n.links[l.peer] = l
	l.mu.Lock()
	l.up = true
	l.mu.Unlock()
	n.mu.Unlock()
	if old != nil && old.ctx.Err() == nil {
		n.log.Debug("link replaced", "peer", l.peer, "old", old.id, "new", l.id)
		old.close(codeDuplicate, errDuplicate)
	}
	n.log.Info("link up", "link", l.id, "peer", l.peer, "address", l.conn.RemoteAddr().String(), "outbound", l.outbound)
	// Our hello may predate a Listen or Close made while the link was
	// being set up; one announcement after registering catches up.
	select {
	case l.announce <- struct{}{}:
	default: // announce() got there first
	}
	n.wg.Add(4)
	go func() { defer n.wg.Done(); l.announcer() }()
	go func() { defer n.wg.Done(); l.readControl() }()
	go func() { defer n.wg.Done(); n.acceptStreams(l) }()
	go func() { defer n.wg.Done(); n.watchLink(l) }()
	return l, nil
}

// keepaliveChecks is how many times per keepalive timeout the links are
// checked for signs of life.
const keepaliveChecks = 6

// keepalive closes links that have been silent for the keepalive timeout,
// pings idle links, and refreshes every link's RTT.
//
// The end that accepted a link pings it: at a check that finds it has
// heard nothing for about an interval, it sends a ping (a QUIC datagram,
// see pingDatagram), which the dialling end's QUIC acknowledges. An idle
// link costs one ping and one ACK per interval, and a link carrying traffic
// nothing extra; any packet from the peer is a sign of life, so a link
// saturated with session data is not mistaken for a dead one. Pinging from
// one end, at this goroutine's checks, sends a node's pings together: a hub
// that many nodes dial wakes once for all its links' pings instead of once
// per link, at times set by each link's own timer (G14-cpu in
// bench/README.md: 2.5% of a core for a node with 50 links, then 1%).
//
// The dialling end pings too, but only when the peer's ping is late: when
// the peer's keepalive_interval is longer than ours, or a ping was lost. So each end keeps its own view of the link alive whatever
// the other's settings. Links whose peer said goodbye are checked and
// pinged until they close: the peer is waiting for us to read what it sent.
//
// One goroutine checks every link keepaliveChecks times per timeout, and at
// least twice per interval, so an idle node wakes a few times a second
// however many links it has. A check that sees new packets credits them to
// itself, so the silence it measures is whole check periods, give or take
// the timers' jitter, and up to one period less than the real one. Every
// threshold therefore sits half a period off that grid, or jitter would
// move what it triggers by a whole check. A link is closed at the last
// check on the grid that is a period short of the timeout: a dead link
// within the timeout of its last packet, and a live one only if it was
// silent for at least the timeout less two periods (less one with the
// default settings, where the timeout is six periods).
//
// The accepting end's pings go about one interval apart when their ACKs
// come within a check, and every ping at the latest two checks before the
// close: its ACK, which QUIC may hold back for 25 ms, has two checks to
// arrive. A link therefore needs a round trip plus 25 ms below two periods,
// the lesser of the interval and a third of the timeout. With a timeout
// below about 1.7 intervals both ends ping at that latest check.
func (n *Node) keepalive() {
	defer n.wg.Done()
	timeout := n.cfg.KeepaliveTimeout
	sched := newKeepaliveSchedule(n.cfg.KeepaliveInterval, timeout)
	tick := time.NewTicker(sched.period)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := n.now()
		for _, l := range n.checkedLinks() {
			st := l.conn.ConnectionStats()
			l.sampleRTT(st)
			if st.PacketsReceived != l.packetsSeen {
				l.packetsSeen, l.heardAt = st.PacketsReceived, now
				continue
			}
			silent := time.Duration(now - l.heardAt)
			pingAfter := sched.acceptorPingAfter
			if l.outbound {
				pingAfter = sched.diallerPingAfter
			}
			switch {
			case silent >= sched.closeAfter:
				l.errs.Add(1)
				n.log.Warn("link dead: keepalive timeout", "link", l.String(), "silent", silent.String(), "timeout", timeout.String())
				l.close(codeKeepalive, fmt.Errorf("%w: nothing heard for %s", ErrKeepaliveTimeout, silent))
			case silent >= pingAfter:
				l.ping()
			}
		}
	}
}

// keepaliveSchedule says when Node.keepalive checks its links, and after how
// much measured silence it pings or closes one.
type keepaliveSchedule struct {
	period                              time.Duration // between checks
	closeAfter                          time.Duration
	acceptorPingAfter, diallerPingAfter time.Duration
}

func newKeepaliveSchedule(interval, timeout time.Duration) keepaliveSchedule {
	period := max(min(timeout/keepaliveChecks, interval/2), time.Millisecond)
	closeCheck := time.Duration(timeout/period-1) * period
	latestPing := closeCheck - 2*period - period/2
	return keepaliveSchedule{
		period:            period,
		closeAfter:        closeCheck - period/2,
		acceptorPingAfter: min(interval-period-period/2, latestPing),
		diallerPingAfter:  min(interval+period/2, latestPing),
	}
}

// watchLink removes l once its connection ends.
func (n *Node) watchLink(l *link) {
	select {
	case <-l.conn.Context().Done():
		l.cancel(context.Cause(l.conn.Context()))
	case <-l.ctx.Done():
	}
	n.mu.Lock()
	if n.links[l.peer] == l {
		delete(n.links, l.peer)
	}
	delete(n.leaving, l)
	l.mu.Lock()
	l.up = false
	l.mu.Unlock()
	n.mu.Unlock()
	cause := context.Cause(l.ctx)
	if !isDuplicate(cause) {
		n.log.Info("link down", "link", l.id, "peer", l.peer, "reason", describeClose(cause))
	}
}

// errDuplicate is the cause of a link closed in favour of another link to
// the same peer.
var errDuplicate = errors.New("duplicate link to the same peer")

func isDuplicate(err error) bool {
	var ae *quic.ApplicationError
	return errors.Is(err, errDuplicate) || errors.As(err, &ae) && ae.ErrorCode == codeDuplicate
}

func describeClose(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// listenedChannels lists the channels this node listens on.
func (n *Node) listenedChannels() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.listeners))
	for ch := range n.listeners {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

func (n *Node) upLinks() []*link {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		if l.ctx.Err() == nil {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b *link) int { return compareStrings(a.peer, b.peer) })
	return out
}

// checkedLinks returns the links the keepalive checks: the live ones and
// those whose peer is leaving.
func (n *Node) checkedLinks() []*link {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*link, 0, len(n.links)+len(n.leaving))
	for l := range n.leaving {
		out = append(out, l)
	}
	for _, l := range n.links {
		out = append(out, l)
	}
	return slices.DeleteFunc(out, func(l *link) bool { return l.ctx.Err() != nil })
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// announce tells every peer that our channel set changed.
func (n *Node) announce() {
	for _, l := range n.upLinks() {
		select {
		case l.announce <- struct{}{}:
		default: // an announcement is already pending; it will send the latest set
		}
	}
}

// LinkState is the state of a link.
type LinkState string

const (
	LinkConnecting LinkState = "connecting"
	LinkUp         LinkState = "up"
	LinkDown       LinkState = "down"
)

// LinkInfo describes a link and its measured metrics. It mirrors sdk.Link.
type LinkInfo struct {
	ID       string
	Peer     string
	Address  string
	Outbound bool
	State    LinkState
	RTT      time.Duration
	MinRTT   time.Duration
	BytesIn  uint64
	BytesOut uint64
	Errors   uint64
	Drops    uint64
	Channels []string
}

// Links lists live links, then configured addresses that have no link.
func (n *Node) Links() []LinkInfo {
	var out []LinkInfo
	live := map[string]bool{}
	for _, l := range n.upLinks() {
		st := l.conn.ConnectionStats()
		live[l.peer] = true
		out = append(out, LinkInfo{
			ID: l.id, Peer: l.peer, Address: l.conn.RemoteAddr().String(), Outbound: l.outbound,
			State: LinkUp, RTT: l.measuredRTT(), MinRTT: time.Duration(l.minRTT.Load()),
			BytesIn: st.BytesReceived, BytesOut: st.BytesSent,
			Errors: l.errs.Load(), Drops: l.drops.Load(), Channels: l.channelList(),
		})
	}
	n.mu.Lock()
	addrs := slices.Sorted(maps.Keys(n.connectors))
	for _, addr := range addrs {
		peer, state := n.connectors[addr].status()
		if peer != "" && live[peer] {
			continue
		}
		out = append(out, LinkInfo{ID: "connect:" + addr, Peer: peer, Address: addr, Outbound: true, State: state})
	}
	n.mu.Unlock()
	return out
}

// drain ends every session's sending half (after what is queued or
// buffered), then says goodbye on every link and waits, up to the drain
// timeout, for each peer to close the link once it has read everything.
// A QUIC connection close discards data the peer has not read yet, so
// closing first would lose the tail of every session.
func (n *Node) drain(links []*link) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	n.mu.Lock()
	sessions := slices.Collect(maps.Keys(n.sessions))
	multis := slices.Collect(maps.Keys(n.multis))
	n.mu.Unlock()
	var ended sync.WaitGroup
	for _, s := range sessions {
		ended.Add(1)
		n.wg.Add(1)
		go func() { // CloseSend waits for a Send blocked on flow control
			defer n.wg.Done()
			defer ended.Done()
			_ = s.CloseSend()
		}()
	}
	for _, s := range multis {
		_ = s.CloseSend()
	}
	allEnded := make(chan struct{})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ended.Wait()
		for _, s := range multis {
			select {
			case <-s.drained:
			case <-ctx.Done():
			}
		}
		close(allEnded)
	}()
	select {
	case <-allEnded:
	case <-ctx.Done():
		n.log.Warn("close: sessions did not finish sending in time; the rest is dropped", "timeout", n.cfg.DrainTimeout.String())
		return
	}
	for _, l := range links {
		_ = l.sendControl(opGoodbye, strconv.AppendInt(nil, l.opened.Load(), 10))
	}
	for _, l := range links {
		select {
		case <-l.ctx.Done():
		case <-ctx.Done():
			n.log.Warn("close: peer did not finish reading in time", "peer", l.peer, "timeout", n.cfg.DrainTimeout.String())
			return
		}
	}
}

// peerLeaving handles a goodbye: the link takes no new sessions and is
// closed once the opened session streams the goodbye counted have all been
// taken and every reader has pulled the peer's data off them.
func (n *Node) peerLeaving(l *link, opened int64) {
	n.mu.Lock()
	if n.links[l.peer] == l {
		delete(n.links, l.peer)
	}
	if l.ctx.Err() == nil {
		n.leaving[l] = true // watchLink forgets it
	}
	n.mu.Unlock()
	l.mu.Lock()
	l.up = false
	l.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		deadline := time.NewTimer(n.cfg.DrainTimeout)
		defer deadline.Stop()
		poll := time.NewTicker(5 * time.Millisecond)
		defer poll.Stop()
		// The goodbye can overtake the first frames of the peer's last
		// streams, which then are not readers yet.
		for l.handled.Load() < opened || l.readers.Load() > 0 {
			select {
			case <-l.ctx.Done():
				return
			case <-deadline.C:
				n.log.Warn("peer left before its data was read; the rest is dropped", "peer", l.peer)
				l.close(codeClosed, errPeerLeft)
				return
			case <-poll.C:
			}
		}
		l.close(codeClosed, errPeerLeft)
	}()
}

var errPeerLeft = errors.New("peer left")

func (n *Node) forget(s *streamSession) {
	n.mu.Lock()
	delete(n.sessions, s)
	n.mu.Unlock()
}

// Close drains and closes every link (peers see an orderly close at once),
// listener and session, and waits for the node's goroutines.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	links := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		links = append(links, l)
	}
	listeners := make([]*Listener, 0, len(n.listeners))
	for _, ls := range n.listeners {
		listeners = append(listeners, ls)
	}
	n.mu.Unlock()
	for _, ls := range listeners {
		_ = ls.Close()
	}
	n.drain(links)
	for _, l := range links {
		l.close(codeClosed, errors.New("node closing"))
	}
	n.cancel()
	err := n.ql.Close()
	if terr := n.tr.Close(); err == nil {
		err = terr
	}
	if uerr := n.udp.Close(); err == nil && !errors.Is(uerr, net.ErrClosed) {
		err = uerr
	}
	n.wg.Done()
	n.wg.Wait()
	return err
}
