// Package resolverdns finds a network's peer nodes in DNS: SRV records
// (priority, weight and port per target) or A/AAAA records with a
// configured port. Answers are cached for their TTL.
package resolverdns

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// Version of this component.
const Version = "0.1.0"

// Resolver is the DNS resolver component.
type Resolver struct {
	log        hclog.Logger
	now        func() time.Time
	resolvConf string

	randMu sync.Mutex
	rand   *rand.Rand

	mu     sync.Mutex
	cfg    *config
	cached *cacheEntry // for cfg; nil when empty
	closed bool
}

type cacheEntry struct {
	answer  answer
	expires time.Time
}

// New returns an unconfigured DNS resolver.
func New(log hclog.Logger) *Resolver {
	return &Resolver{
		log:        log,
		now:        time.Now,
		resolvConf: "/etc/resolv.conf",
		rand:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

var _ sdk.Resolver = (*Resolver)(nil)

// Info describes the component.
func (r *Resolver) Info() sdk.Info {
	return sdk.Info{Name: "resolver-dns", Kind: sdk.KindResolver, Version: Version}
}

// Schema describes the config block.
func (r *Resolver) Schema() sdk.Schema { return schema }

// Configure validates and applies a configuration, dropping the cache.
func (r *Resolver) Configure(_ context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	cfg, diags := parseConfig(req.Config, r.resolvConf)
	if cfg == nil {
		return diags
	}
	r.mu.Lock()
	r.cfg, r.cached = cfg, nil
	r.mu.Unlock()
	r.log.Debug("configured", "name", cfg.name, "srv", cfg.srv, "servers", cfg.servers, "timeout", cfg.timeout.String())
	return diags
}

// Health returns nil once configured.
func (r *Resolver) Health(context.Context) error {
	_, err := r.config()
	return err
}

// Close stops the resolver; later calls fail.
func (r *Resolver) Close() error {
	r.mu.Lock()
	r.closed, r.cached = true, nil
	r.mu.Unlock()
	return nil
}

func (r *Resolver) config() (*config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return nil, errors.New("resolver-dns: closed")
	case r.cfg == nil:
		return nil, errors.New("resolver-dns: not configured")
	}
	return r.cfg, nil
}

// Resolve returns the peers listed under the configured name, lowest
// priority first; within a priority, SRV targets are shuffled by weight
// (RFC 2782). The network is not part of the query: one resolver block
// names one DNS name.
func (r *Resolver) Resolve(ctx context.Context, network string) ([]sdk.Node, error) {
	cfg, err := r.config()
	if err != nil {
		return nil, err
	}
	if ans, ok := r.fromCache(cfg); ok {
		return r.order(ans), nil
	}
	ans, err := lookup(ctx, cfg)
	if len(ans.records) == 0 {
		return nil, err
	}
	if err != nil {
		r.log.Warn("some SRV targets did not resolve; using the rest", "name", cfg.name, "error", err)
	}
	r.log.Debug("resolved", "network", network, "name", cfg.name, "records", len(ans.records), "ttl", ans.ttl.String())
	r.store(cfg, ans)
	return r.order(ans), nil
}

func (r *Resolver) fromCache(cfg *config) (answer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg != cfg || r.cached == nil || !r.now().Before(r.cached.expires) {
		return answer{}, false
	}
	return r.cached.answer, true
}

func (r *Resolver) store(cfg *config, ans answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A Configure during the lookup made this answer stale.
	if r.cfg != cfg || r.closed {
		return
	}
	r.cached = &cacheEntry{answer: ans, expires: r.now().Add(ans.ttl)}
}

func (r *Resolver) order(ans answer) []sdk.Node {
	r.randMu.Lock()
	recs := weightedOrder(ans.records, r.rand.IntN)
	r.randMu.Unlock()
	var nodes []sdk.Node
	seen := map[string]bool{}
	for _, rec := range recs {
		for _, addr := range rec.addrs {
			if seen[addr] {
				continue
			}
			seen[addr] = true
			nodes = append(nodes, sdk.Node{Address: addr, Priority: rec.priority})
		}
	}
	return nodes
}
