// Package routermemory is the router-memory component: an in-memory routing
// table with adverts, withdrawals, expiry and route-flap damping. This
// package adapts the engine to the sdk.Router contract and feeds it the
// host's registry; the protocol logic lives in engine, table and damping.
package routermemory

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microhost/microhost/plugins/router-memory/engine"
	"github.com/microhost/microhost/sdk"
)

// Version of the component.
const Version = "0.1.0"

var errNotConfigured = errors.New("router-memory: not configured yet")

// Registry watch back-off bounds.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Router implements sdk.Router.
type Router struct {
	log hclog.Logger

	mu     sync.Mutex
	eng    *engine.Engine
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

var _ sdk.Router = (*Router)(nil)

// New returns an unconfigured router.
func New(log hclog.Logger) *Router {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Router{log: log}
}

// Info describes the component.
func (r *Router) Info() sdk.Info {
	return sdk.Info{Name: "router-memory", Kind: sdk.KindRouter, Version: Version,
		Capabilities: []string{"damping", "sync", "expiry", "strategies"}}
}

// Configure validates the config block and (re)starts the engine. A
// reconfiguration starts a fresh table: local routes return from the
// registry watch and learned ones with the peers' next adverts; open
// watches and advert streams end and must be reopened.
func (r *Router) Configure(ctx context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	s, diags := decode(req.Config, req.Node)
	if diags.HasErrors() {
		return diags
	}
	s.engine.Log = r.log.Named("engine")
	eng, err := engine.New(s.engine)
	if err != nil {
		return append(diags, sdk.Errorf("", "cannot start the router", "%v", err))
	}
	for _, svc := range s.static {
		if err := eng.ApplyService(sdk.ServiceEvent{Type: sdk.Update, Service: svc}); err != nil {
			eng.Close()
			return append(diags, sdk.Errorf("routes", "invalid static route", "%v", err))
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		eng.Close()
		return append(diags, sdk.Errorf("", "router closed", "Configure called after Close"))
	}
	r.stopLocked()
	static := make(map[uint64]bool, len(s.static))
	for _, svc := range s.static {
		static[eng.LocalRoute(svc).Hash()] = true
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r.eng, r.cancel = eng, cancel
	r.wg.Go(func() {
		if err := eng.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			r.log.Error("router engine stopped", "error", err)
		}
	})
	if req.Host != nil {
		r.wg.Go(func() { r.watchRegistry(runCtx, req.Host, eng, static) })
	}
	r.log.Info("router configured", "strategy", eng.Config().Strategy,
		"flush_interval", eng.Config().FlushInterval.String(), "sync_interval", eng.Config().SyncInterval.String(),
		"route_ttl", eng.Config().RouteTTL.String(), "damping", s.engine.Damping != nil, "static_routes", len(s.static))
	return diags
}

// stopLocked ends the running engine and its goroutines.
func (r *Router) stopLocked() {
	if r.eng == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	r.eng.Close()
	r.eng, r.cancel = nil, nil
}

// relistGrace is how long after a reconnect the registry has to list its
// instances again before local routes it did not list are withdrawn.
const relistGrace = 5 * time.Second

// watchRegistry feeds the host's registry into the engine, reconnecting
// with exponential back-off whenever the watch fails. Instances removed
// while the watch was down are not announced as deletes; after a reconnect,
// the local routes the registry has not listed again within relistGrace
// are withdrawn. static holds the hashes of the configured static routes,
// which the registry never lists.
func (r *Router) watchRegistry(ctx context.Context, host sdk.Host, eng *engine.Engine, static map[uint64]bool) {
	backoff := minBackoff
	for connects := 0; ctx.Err() == nil; {
		w, err := host.WatchServices(ctx)
		if err == nil {
			connects++
			err = r.session(ctx, w, eng, connects > 1, static, func() { backoff = minBackoff })
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("registry watch failed; retrying", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session applies the events of one registry watch until it fails. After a
// reconnect it withdraws, once relistGrace has passed, the local routes the
// registry did not list again.
func (r *Router) session(ctx context.Context, w sdk.ServiceWatcher, eng *engine.Engine, reconnect bool, static map[uint64]bool, healthy func()) error {
	defer w.Stop()
	var mu sync.Mutex
	listed := map[uint64]bool{}
	ended := false
	if reconnect {
		timer := time.AfterFunc(relistGrace, func() {
			mu.Lock()
			defer mu.Unlock()
			if !ended {
				r.withdrawUnlisted(eng, listed, static)
			}
		})
		defer func() {
			timer.Stop()
			mu.Lock()
			ended = true // a callback already running has finished once we hold mu
			mu.Unlock()
		}()
	}
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			return err
		}
		healthy()
		mu.Lock()
		listed[eng.LocalRoute(ev.Service).Hash()] = ev.Type != sdk.Delete
		mu.Unlock()
		if err := eng.ApplyService(ev); err != nil {
			if ev.Type == sdk.Delete && errors.Is(err, sdk.ErrNotFound) {
				continue // already gone, e.g. withdrawn after a reconnect
			}
			r.log.Warn("ignoring registry event", "type", ev.Type, "service", ev.Service.Name, "error", err)
		}
	}
}

func (r *Router) withdrawUnlisted(eng *engine.Engine, listed, static map[uint64]bool) {
	local, _ := eng.Lookup(sdk.Query{Router: eng.Config().NodeID, Link: sdk.LinkLocal})
	for _, rt := range local {
		if h := rt.Hash(); listed[h] || static[h] {
			continue
		}
		ev := sdk.ServiceEvent{Type: sdk.Delete, Service: sdk.Service{Name: rt.Service, Address: rt.Address}}
		if err := eng.ApplyService(ev); err == nil {
			r.log.Info("withdrew a local route the registry no longer lists", "service", rt.Service, "address", rt.Address)
		}
	}
}

func (r *Router) engine() (*engine.Engine, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eng == nil {
		return nil, errNotConfigured
	}
	return r.eng, nil
}

// Health reports whether the router is configured and running.
func (r *Router) Health(ctx context.Context) error {
	_, err := r.engine()
	return err
}

// Close stops everything; it is safe to call more than once.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.stopLocked()
	return nil
}

func (r *Router) Create(ctx context.Context, rt sdk.Route) error {
	e, err := r.engine()
	if err != nil {
		return err
	}
	return e.Create(rt)
}

func (r *Router) Update(ctx context.Context, rt sdk.Route) error {
	e, err := r.engine()
	if err != nil {
		return err
	}
	return e.Update(rt)
}

func (r *Router) Delete(ctx context.Context, rt sdk.Route) error {
	e, err := r.engine()
	if err != nil {
		return err
	}
	return e.Delete(rt)
}

func (r *Router) List(ctx context.Context) ([]sdk.Route, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	return e.List(), nil
}

func (r *Router) Lookup(ctx context.Context, q sdk.Query) ([]sdk.Route, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	return e.Lookup(q)
}

// Watch streams table changes; a watcher that falls behind gets a Resync.
func (r *Router) Watch(ctx context.Context) (sdk.Watcher, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	return e.Watch(), nil
}

// Advertise streams this node's adverts; a reader that falls behind gets
// one Sync per advertised origin instead of the adverts it missed.
func (r *Router) Advertise(ctx context.Context) (sdk.AdvertStream, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	s, err := e.Advertise()
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (r *Router) Process(ctx context.Context, a *sdk.Advert) error {
	e, err := r.engine()
	if err != nil {
		return err
	}
	return e.Process(a)
}

// Solicit returns one Announce carrying every route this node advertises.
func (r *Router) Solicit(ctx context.Context) (*sdk.Advert, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	return e.Solicit()
}

func (r *Router) Damping(ctx context.Context) ([]sdk.DampingState, error) {
	e, err := r.engine()
	if err != nil {
		return nil, err
	}
	return e.Damping(), nil
}
