// Package tunnelquic adapts the QUIC tunnel (package quictun) to sdk.Tunnel:
// it reads the plugin's config block and the node's TLS files, starts the
// node, and converts types and errors.
package tunnelquic

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/plugins/tunnel-quic/quictun"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/pki"
)

// Version of the plugin.
const Version = "0.1.0"

// ErrNotConfigured is returned before Configure has succeeded.
var ErrNotConfigured = errors.New("tunnel-quic is not configured")

// Tunnel is the tunnel-quic component.
type Tunnel struct {
	log hclog.Logger

	mu   sync.Mutex
	node *quictun.Node
	tls  sdk.TLSConfig // files to re-read on Reload
}

var _ sdk.Tunnel = (*Tunnel)(nil)

// New returns an unconfigured tunnel that logs to log.
func New(log hclog.Logger) *Tunnel {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Tunnel{log: log}
}

// Info describes the plugin.
func (t *Tunnel) Info() sdk.Info {
	return sdk.Info{Name: "tunnel-quic", Kind: sdk.KindTunnel, Version: Version,
		Capabilities: []string{"unicast", "multicast", "broadcast", "mtls", "keepalive", "reconnect"}}
}

// Schema lists the arguments of the config { } block.
func (t *Tunnel) Schema() sdk.Schema {
	return sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "keepalive_interval", Type: sdk.TypeDuration, Default: "1s",
			Description: "A link from which nothing has arrived for this long is pinged by the end that accepted it, and by the end that dialled it if the other's ping is late; the peer's QUIC acknowledges."},
		{Name: "keepalive_timeout", Type: sdk.TypeDuration, Default: "3 × keepalive_interval",
			Description: "A link that has been silent this long is closed as dead. A third of it, and keepalive_interval, must exceed a round trip plus 25 ms."},
		{Name: "max_message_size", Type: sdk.TypeNumber, Default: "4194304",
			Description: "Largest message (headers and body, in bytes) a session sends or accepts."},
		{Name: "queue_size", Type: sdk.TypeNumber, Default: "256",
			Description: "Messages queued per link for each multicast or broadcast session (memory is taken only for those queued); beyond it messages for that link are dropped and counted."},
		{Name: "accept_backlog", Type: sdk.TypeNumber, Default: "128",
			Description: "Incoming sessions waiting for Accept per channel; beyond it sessions are refused and counted."},
		{Name: "dial_timeout", Type: sdk.TypeDuration, Default: "5s",
			Description: "Bound on a QUIC handshake and on a Dial without its own timeout."},
		{Name: "drain_timeout", Type: sdk.TypeDuration, Default: "5s",
			Description: "On close, how long peers get to read what this node already sent before links are cut."},
		{Name: "reconnect_min", Type: sdk.TypeDuration, Default: "250ms",
			Description: "First delay before redialling a configured peer; doubles per failure."},
		{Name: "reconnect_max", Type: sdk.TypeDuration, Default: "30s",
			Description: "Longest delay between redials of a configured peer."},
	}}
}

// config is the decoded config { } block.
type config struct {
	KeepaliveInterval *string  `json:"keepalive_interval"`
	KeepaliveTimeout  *string  `json:"keepalive_timeout"`
	MaxMessageSize    *float64 `json:"max_message_size"`
	QueueSize         *float64 `json:"queue_size"`
	AcceptBacklog     *float64 `json:"accept_backlog"`
	DialTimeout       *string  `json:"dial_timeout"`
	DrainTimeout      *string  `json:"drain_timeout"`
	ReconnectMin      *string  `json:"reconnect_min"`
	ReconnectMax      *string  `json:"reconnect_max"`
}

// Configure checks the configuration, loads the node's identity, starts
// listening and connects to the node's static peers.
func (t *Tunnel) Configure(_ context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.node != nil {
		return sdk.Diagnostics{sdk.Errorf("", "already configured", "tunnel-quic is running as node %q; restart the plugin to change its configuration", t.node.ID())}
	}
	cfg, diags := parseConfig(req.Config)
	id, idDiags := loadIdentity(req.Node)
	diags = append(diags, idDiags...)
	if diags.HasErrors() {
		return diags
	}
	cfg.Identity = id
	cfg.ListenAddr = req.Node.Listen
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = ":0"
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Summary: "no listen address",
			Detail: "node.listen is empty: the tunnel listens on an ephemeral UDP port, so peers can only reach this node over links it dials"})
	}
	cfg.Logger = t.log
	node, err := quictun.Start(cfg)
	if err != nil {
		return append(diags, sdk.Errorf("", "tunnel did not start", "%v", err))
	}
	t.node = node
	t.tls = req.Node.TLS
	for _, p := range req.Node.Peers {
		if err := node.Connect(p); err != nil {
			diags = append(diags, sdk.Errorf("", "bad peer", "peer %q: %v", p, err))
		}
	}
	return diags
}

func parseConfig(raw json.RawMessage) (quictun.Config, sdk.Diagnostics) {
	var cfg quictun.Config
	var c config
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return cfg, sdk.Diagnostics{sdk.Errorf("", "invalid tunnel-quic configuration", "%v", err)}
		}
	}
	var diags sdk.Diagnostics
	duration := func(name string, v *string, dst *time.Duration) {
		if v == nil {
			return
		}
		d, err := time.ParseDuration(*v)
		if err != nil || d <= 0 {
			diags = append(diags, sdk.Errorf(name, "invalid duration", "%q is not a positive duration such as \"1s\" or \"250ms\"", *v))
			return
		}
		*dst = d
	}
	count := func(name string, v *float64, lo, hi int, dst *int) {
		if v == nil {
			return
		}
		if *v != math.Trunc(*v) || *v < float64(lo) || *v > float64(hi) {
			diags = append(diags, sdk.Errorf(name, "invalid number", "%v must be a whole number from %d to %d", *v, lo, hi))
			return
		}
		*dst = int(*v)
	}
	duration("keepalive_interval", c.KeepaliveInterval, &cfg.KeepaliveInterval)
	duration("keepalive_timeout", c.KeepaliveTimeout, &cfg.KeepaliveTimeout)
	duration("dial_timeout", c.DialTimeout, &cfg.DialTimeout)
	duration("drain_timeout", c.DrainTimeout, &cfg.DrainTimeout)
	duration("reconnect_min", c.ReconnectMin, &cfg.ReconnectMin)
	duration("reconnect_max", c.ReconnectMax, &cfg.ReconnectMax)
	count("max_message_size", c.MaxMessageSize, 1024, quictun.MaxMessageLimit, &cfg.MaxMessageSize)
	count("queue_size", c.QueueSize, 1, 1<<20, &cfg.QueueSize)
	count("accept_backlog", c.AcceptBacklog, 1, 1<<20, &cfg.AcceptBacklog)
	interval := cfg.KeepaliveInterval
	if interval == 0 {
		interval = quictun.DefaultKeepaliveInterval
	}
	if cfg.KeepaliveTimeout != 0 && cfg.KeepaliveTimeout <= interval {
		diags = append(diags, sdk.Errorf("keepalive_timeout", "keepalive timeout too short",
			"%s must be longer than keepalive_interval (%s); three intervals is usual", cfg.KeepaliveTimeout, interval))
	}
	if cfg.ReconnectMin != 0 && cfg.ReconnectMax != 0 && cfg.ReconnectMax < cfg.ReconnectMin {
		diags = append(diags, sdk.Errorf("reconnect_max", "reconnect_max below reconnect_min",
			"%s is shorter than reconnect_min %s", cfg.ReconnectMax, cfg.ReconnectMin))
	}
	return cfg, diags
}

// loadIdentity reads the node certificate, or makes a throwaway one in
// insecure mode.
func loadIdentity(nc sdk.NodeConfig) (*pki.Node, sdk.Diagnostics) {
	if nc.TLS.Insecure {
		id := nc.ID
		if id == "" {
			var b [4]byte
			_, _ = rand.Read(b[:])
			id = "dev-" + hex.EncodeToString(b[:])
		}
		if err := pki.ValidateID(id); err != nil {
			return nil, sdk.Diagnostics{sdk.Errorf("", "invalid node id", "%v", err)}
		}
		n, err := pki.Throwaway(id)
		if err != nil {
			return nil, sdk.Diagnostics{sdk.Errorf("", "cannot create a throwaway certificate", "%v", err)}
		}
		return n, sdk.Diagnostics{{Severity: sdk.SeverityWarning, Summary: "insecure tunnel",
			Detail: fmt.Sprintf("tls.insecure is set: node %q uses a throwaway certificate and accepts any peer; for development only", id)}}
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"ca", nc.TLS.CA}, {"cert", nc.TLS.Cert}, {"key", nc.TLS.Key}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, sdk.Diagnostics{sdk.Errorf("", "node TLS files missing",
			"tls { } lacks %v; every node needs a CA, certificate and key (create them with `microhost ca init` and `microhost ca issue`), or set insecure = true for development", missing)}
	}
	n, err := pki.LoadNode(nc.TLS.CA, nc.TLS.Cert, nc.TLS.Key)
	if err != nil {
		return nil, sdk.Diagnostics{sdk.Errorf("", "cannot load the node certificate", "%v", err)}
	}
	if nc.ID != "" && nc.ID != n.ID {
		return nil, sdk.Diagnostics{sdk.Errorf("", "node id does not match its certificate",
			"node id is %q but certificate %s was issued to %q; the certificate is authoritative: set id = %q or issue a certificate for %q",
			nc.ID, nc.TLS.Cert, n.ID, n.ID, nc.ID)}
	}
	return n, nil
}

// Reload re-reads the certificate, key and CA files without dropping links;
// new handshakes use them. The node id must stay the same.
func (t *Tunnel) Reload() error {
	t.mu.Lock()
	node, files := t.node, t.tls
	t.mu.Unlock()
	if node == nil {
		return ErrNotConfigured
	}
	if files.Insecure {
		t.log.Info("reload: insecure mode has no certificate files to re-read")
		return nil
	}
	id, err := pki.LoadNode(files.CA, files.Cert, files.Key)
	if err != nil {
		return fmt.Errorf("reload certificates: %w", err)
	}
	if err := node.SetIdentity(id); err != nil {
		return fmt.Errorf("reload certificates: %w", err)
	}
	t.log.Info("certificates reloaded", "node", id.ID, "not_after", id.Certificate.Leaf.NotAfter)
	return nil
}

// Health fails until Configure has succeeded and after Close.
func (t *Tunnel) Health(context.Context) error {
	n, err := t.running()
	if err != nil {
		return err
	}
	return n.Err()
}

// Close closes every link and session.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	node := t.node
	t.mu.Unlock()
	if node == nil {
		return nil
	}
	return node.Close()
}

func (t *Tunnel) running() (*quictun.Node, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.node == nil {
		return nil, ErrNotConfigured
	}
	return t.node, nil
}

// Connect keeps a link to address.
func (t *Tunnel) Connect(_ context.Context, address string) error {
	n, err := t.running()
	if err != nil {
		return err
	}
	return n.Connect(address)
}

// Disconnect stops keeping a link to address.
func (t *Tunnel) Disconnect(_ context.Context, address string) error {
	n, err := t.running()
	if err != nil {
		return err
	}
	return convertErr(n.Disconnect(address))
}

// Links lists links and their metrics.
func (t *Tunnel) Links(context.Context) ([]sdk.Link, error) {
	n, err := t.running()
	if err != nil {
		return nil, err
	}
	infos := n.Links()
	out := make([]sdk.Link, len(infos))
	for i, l := range infos {
		out[i] = sdk.Link{ID: l.ID, Peer: l.Peer, Address: l.Address, Outbound: l.Outbound,
			State: sdk.LinkState(l.State), RTT: l.RTT, MinRTT: l.MinRTT, BytesIn: l.BytesIn, BytesOut: l.BytesOut,
			Errors: l.Errors, Drops: l.Drops, Channels: l.Channels}
	}
	return out, nil
}

// Listen accepts sessions on channel.
func (t *Tunnel) Listen(_ context.Context, channel string) (sdk.Listener, error) {
	n, err := t.running()
	if err != nil {
		return nil, err
	}
	ls, err := n.Listen(channel)
	if err != nil {
		return nil, err
	}
	return listener{ls}, nil
}

// Dial opens a session on channel.
func (t *Tunnel) Dial(ctx context.Context, channel string, opts sdk.DialOptions) (sdk.Session, error) {
	n, err := t.running()
	if err != nil {
		return nil, err
	}
	if opts.Mode < sdk.Unicast || opts.Mode > sdk.Broadcast {
		return nil, fmt.Errorf("dial %q: unknown mode %d", channel, opts.Mode)
	}
	s, err := n.Dial(ctx, channel, quictun.DialOptions{Mode: quictun.Mode(opts.Mode), Node: opts.Node, Timeout: opts.Timeout})
	if err != nil {
		return nil, convertErr(err)
	}
	return session{s}, nil
}

type listener struct{ l *quictun.Listener }

func (l listener) Channel() string { return l.l.Channel() }
func (l listener) Close() error    { return l.l.Close() }
func (l listener) Accept(ctx context.Context) (sdk.Session, error) {
	s, err := l.l.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return session{s}, nil
}

// session converts messages by pointer: quictun.Message and sdk.Message
// have the same layout, so nothing is copied.
type session struct{ s quictun.Session }

func (s session) ID() string      { return s.s.ID() }
func (s session) Channel() string { return s.s.Channel() }
func (s session) Mode() sdk.Mode  { return sdk.Mode(s.s.Mode()) }
func (s session) Peer() string    { return s.s.Peer() }
func (s session) CloseSend() error {
	return s.s.CloseSend()
}
func (s session) Close() error { return s.s.Close() }
func (s session) Send(ctx context.Context, m *sdk.Message) error {
	return convertErr(s.s.Send(ctx, (*quictun.Message)(m)))
}
func (s session) Recv(ctx context.Context) (*sdk.Message, error) {
	m, err := s.s.Recv(ctx)
	return (*sdk.Message)(m), convertErr(err)
}

// notFound marks an error as sdk.ErrNotFound too, so the condition survives
// the plugin's gRPC boundary, without changing its message.
type notFound struct{ err error }

func (e notFound) Error() string   { return e.err.Error() }
func (e notFound) Unwrap() []error { return []error{e.err, sdk.ErrNotFound} }

func convertErr(err error) error {
	if errors.Is(err, quictun.ErrNoListener) || errors.Is(err, quictun.ErrNoLink) || errors.Is(err, quictun.ErrNotConnected) {
		return notFound{err}
	}
	return err
}
