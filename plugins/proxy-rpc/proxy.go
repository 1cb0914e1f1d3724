// Package proxyrpc is the proxy-rpc component: a transparent gRPC proxy
// through which any gRPC client calls any service of the network by name,
// on this node or, over the tunnel, on another.
package proxyrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microhost/microhost/sdk"
)

// Version of the component.
const Version = "0.1.0"

// drainTimeout bounds how long Close waits for calls in flight.
const drainTimeout = 10 * time.Second

// loadTimeout bounds how long Configure waits for the routing table.
const loadTimeout = 3 * time.Second

// Proxy implements sdk.Proxy.
type Proxy struct {
	log hclog.Logger

	mu  sync.Mutex
	run *node // nil until configured
}

var _ sdk.Proxy = (*Proxy)(nil)

// New returns an unconfigured proxy that logs to log.
func New(log hclog.Logger) *Proxy {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Proxy{log: log}
}

func (p *Proxy) Info() sdk.Info {
	return sdk.Info{
		Name:         "proxy-rpc",
		Kind:         sdk.KindProxy,
		Version:      Version,
		Capabilities: []string{"unary", "streaming", "failover", "multi-hop", "pubsub"},
	}
}

func (p *Proxy) Schema() sdk.Schema { return schema() }

// Configure validates the configuration and (re)starts the proxy with it.
func (p *Proxy) Configure(ctx context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	s, diags := parseConfig(req)
	if diags.HasErrors() {
		return diags
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A reconfigure replaces the running proxy. The new one binds first, so
	// clients see no gap; when it needs the old one's address, the old one
	// drains first.
	lis, err := net.Listen("tcp", s.listen)
	if err != nil && p.run != nil {
		p.run.close(drainTimeout)
		p.run = nil
		lis, err = net.Listen("tcp", s.listen)
	}
	if err != nil {
		return append(diags, sdk.Errorf("listen", "cannot listen", "proxy cannot listen on %q: %v", s.listen, err))
	}
	if req.Host == nil {
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Summary: "no host", Detail: "the proxy runs without a host, so it knows no routes and every call fails with NotFound"})
	}
	if p.run != nil {
		p.run.close(drainTimeout)
	}
	p.run = start(s, lis, req.Host, req.Node.ID, p.log)
	// Calls that come right after Configure should find the routes that
	// exist; an unusually slow watch only delays start-up, within bounds.
	select {
	case <-p.run.loaded:
	case <-time.After(loadTimeout):
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Summary: "routes not loaded yet", Detail: fmt.Sprintf("the route watch did not replay the table within %s; calls may fail with NotFound until it does", loadTimeout)})
	case <-ctx.Done():
	}
	p.log.Info("proxy serving", "address", lis.Addr().String(), "tls", s.tls != nil, "max_message_size", s.maxMessageSize, "max_hops", s.maxHops)
	return diags
}

// Address returns the address gRPC clients connect to.
func (p *Proxy) Address(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return "", errors.New("proxy is not configured")
	}
	return p.run.lis.Addr().String(), nil
}

// Health returns nil while the proxy serves and follows the routing table.
func (p *Proxy) Health(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		return errors.New("proxy is not configured")
	}
	return p.run.health()
}

// Close drains the calls in flight (for at most drainTimeout) and stops.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		p.run.close(drainTimeout)
		p.run = nil
	}
	return nil
}

// sleep waits for d or until ctx ends, reporting whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextWait doubles d up to a ceiling.
func nextWait(d time.Duration) time.Duration {
	return min(2*d, 5*time.Second)
}
