// Package engine is the router of router-memory: it keeps the routing table
// from the local registry and from peers' adverts, damps flapping routes,
// and produces the adverts this node sends. Everything time-based runs off
// an injected clock in Tick, so tests drive it in simulated time; Run calls
// Tick on real timers.
//
// What is advertised is kept as state, not as a stream of table events: a
// flush recomputes, for each service that changed, the routes the strategy
// wants advertised (skipping suppressed ones) and sends the difference from
// what was advertised before. Several changes to one route within a flush
// interval thus coalesce into one event, or none if they cancel out.
//
// Per destination instance (service, address, network, origin) only the
// lowest-metric route is advertised, as in any distance-vector protocol: a
// receiver keys what it learns from us by our node id as gateway, so two of
// our routes to one instance would collide there. Outgoing routes carry our
// id appended to Path, our id as Gateway and LinkNetwork; the receiving host
// adds its link cost to the metric.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/microhost/microhost/plugins/router-memory/damping"
	"github.com/microhost/microhost/plugins/router-memory/table"
	"github.com/microhost/microhost/sdk"
)

// ErrClosed is returned once the engine is closed.
var ErrClosed = errors.New("router engine closed")

// maxEventsPerAnnounce splits large batches so that no advert grows without bound.
const maxEventsPerAnnounce = 1000

// destination is what one advertised route leads to.
type destination struct{ service, address, network, router string }

func destinationOf(r sdk.Route) destination {
	return destination{r.Service, r.Address, r.Network, r.Router}
}

// Engine is safe for concurrent use.
type Engine struct {
	cfg    Config
	id     string
	now    func() time.Time
	table  *table.Table
	wake   chan struct{}
	closed chan struct{}
	once   sync.Once

	mu     sync.Mutex
	damper *damping.Damper // nil when damping is off
	seq    uint64          // last sequence number given to a local route

	dirty    map[string]struct{} // services to recompute at the next flush
	flushAt  time.Time           // zero: nothing to flush
	syncAt   time.Time
	expireAt time.Time // earliest expiry of a learned route; zero: none

	advertised   map[destination]sdk.Route
	advByService map[string]map[destination]struct{}
	advOrigins   map[string]int      // routes advertised per origin
	goneOrigins  map[string]struct{} // origins that lost their last route since the last sync
	syncedSelf   bool                // a periodic sync of our own origin went out since start
	streams      map[*Stream]struct{}

	stats Stats
}

// Stats counts what the engine did.
type Stats struct {
	Announces, Syncs       int // adverts produced
	Processed              int // adverts processed
	Looped, Stale, Expired int // routes rejected or dropped
}

// New returns an engine; nothing runs until Tick or Run.
func New(cfg Config) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("router engine: %w", err)
	}
	e := &Engine{
		cfg:          cfg,
		id:           cfg.NodeID,
		now:          cfg.Clock,
		table:        table.New(table.WithClock(cfg.Clock), table.WithWatchQueue(cfg.WatchQueue)),
		wake:         make(chan struct{}, 1),
		closed:       make(chan struct{}),
		dirty:        make(map[string]struct{}),
		advertised:   make(map[destination]sdk.Route),
		advByService: make(map[string]map[destination]struct{}),
		advOrigins:   make(map[string]int),
		goneOrigins:  make(map[string]struct{}),
		streams:      make(map[*Stream]struct{}),
	}
	if cfg.Damping != nil {
		d, err := damping.New(*cfg.Damping, cfg.Clock)
		if err != nil {
			return nil, fmt.Errorf("router engine: %w", err)
		}
		e.damper = d
	}
	// The first sync waits a full interval: syncing an empty table at start
	// would withdraw, at every peer, the routes the registry is about to re-add.
	e.syncAt = e.now().Add(cfg.SyncInterval)
	return e, nil
}

// Table exposes the routing table for reads and watches.
func (e *Engine) Table() *table.Table { return e.table }

// Stats returns the counters so far.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// nextSeq is monotonic across restarts of the process too, because it
// never falls behind the wall clock in nanoseconds.
func (e *Engine) nextSeq() uint64 {
	e.seq = max(e.seq+1, uint64(e.now().UnixNano()))
	return e.seq
}

// ApplyService turns a local registry event into a local route.
func (e *Engine) ApplyService(ev sdk.ServiceEvent) error {
	s := ev.Service
	if s.Name == "" || s.Address == "" {
		return fmt.Errorf("registry %s event: service name %q and address %q must both be set", ev.Type, s.Name, s.Address)
	}
	r := e.LocalRoute(s)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch ev.Type {
	case sdk.Create, sdk.Update:
		if old, ok := e.table.Get(r.Hash()); ok {
			r.Seq = old.Seq
			if table.Equal(old, r) {
				return nil // a re-listed instance that did not change
			}
		}
		r.Seq = e.nextSeq()
		e.updateLocked(r)
		return nil
	case sdk.Delete:
		return e.deleteLocked(r)
	}
	return fmt.Errorf("registry event of type %s for service %q: want create, update or delete", ev.Type, s.Name)
}

// LocalRoute is the route of a local instance, without its sequence number.
func (e *Engine) LocalRoute(s sdk.Service) sdk.Route {
	return sdk.Route{
		Service: s.Name, Address: s.Address, Network: e.cfg.Network, Router: e.id,
		Link: sdk.LinkLocal, Metric: 1, Path: []string{e.id},
		Endpoints: s.Endpoints, Metadata: s.Metadata,
	}
}

// Create inserts a route given by the host, failing if it exists.
func (e *Engine) Create(r sdk.Route) error {
	if err := e.checkRoute(r); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if r.Router == e.id && r.Seq == 0 {
		r.Seq = e.nextSeq()
	}
	if err := e.table.Create(r); err != nil {
		return err
	}
	e.changedLocked(sdk.Create, r)
	return nil
}

// Update stores a route given by the host, inserting it if missing.
func (e *Engine) Update(r sdk.Route) error {
	if err := e.checkRoute(r); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if r.Router == e.id && r.Seq == 0 {
		r.Seq = e.nextSeq()
	}
	e.updateLocked(r)
	return nil
}

// Delete removes a route, failing with sdk.ErrNotFound if it is missing.
func (e *Engine) Delete(r sdk.Route) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.deleteLocked(r)
}

func (e *Engine) checkRoute(r sdk.Route) error {
	if r.Service == "" || r.Router == "" {
		return fmt.Errorf("route service %q router %q: both must be set", r.Service, r.Router)
	}
	return nil
}

func (e *Engine) updateLocked(r sdk.Route) {
	if typ, changed := e.table.Update(r); changed {
		e.changedLocked(typ, r)
	}
}

func (e *Engine) deleteLocked(r sdk.Route) error {
	old, err := e.table.Delete(r)
	if err != nil {
		return err
	}
	e.changedLocked(sdk.Delete, old)
	return nil
}

// changedLocked feeds a table change to damping and schedules a flush.
func (e *Engine) changedLocked(typ sdk.EventType, r sdk.Route) {
	if e.damper != nil {
		e.damper.Apply(sdk.Event{Type: typ, Route: r})
	}
	e.markDirtyLocked(r.Service)
}

func (e *Engine) markDirtyLocked(service string) {
	e.dirty[service] = struct{}{}
	if e.flushAt.IsZero() {
		e.flushAt = e.now().Add(e.cfg.FlushInterval)
		e.poke()
	}
}

// poke wakes Run to recompute its timer.
func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Lookup returns matching routes, lowest metric first.
func (e *Engine) Lookup(q sdk.Query) ([]sdk.Route, error) { return e.table.Lookup(q) }

// List returns every route.
func (e *Engine) List() []sdk.Route { return e.table.List() }

// Watch subscribes to table changes.
func (e *Engine) Watch() *table.Watcher { return e.table.Watch() }

// Damping lists the routes that carry a flap penalty.
func (e *Engine) Damping() []sdk.DampingState {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.damper == nil {
		return nil
	}
	out := e.damper.States()
	slices.SortFunc(out, func(a, b sdk.DampingState) int {
		return cmp.Or(cmp.Compare(a.Route.Service, b.Route.Service), cmp.Compare(a.Route.Address, b.Route.Address))
	})
	return out
}

// Tick does whatever is due at the engine clock's now: releasing damped
// routes, expiring learned routes, flushing changes and the periodic sync.
// It returns when it next has work.
func (e *Engine) Tick() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if e.damper != nil {
		for _, r := range e.damper.Release() {
			e.markDirtyLocked(r.Service)
		}
	}
	if !e.expireAt.IsZero() && !now.Before(e.expireAt) {
		e.expireLocked(now)
	}
	if !e.flushAt.IsZero() && !now.Before(e.flushAt) {
		e.flushLocked(now)
	}
	if !now.Before(e.syncAt) {
		e.flushLocked(now) // so the sync cannot carry older news than the stream
		if e.cfg.Strategy != None {
			adverts := e.syncAdvertsLocked(now, !e.syncedSelf)
			e.goneOrigins = make(map[string]struct{})
			e.syncedSelf = true
			e.stats.Syncs += len(adverts)
			e.publishLocked(adverts)
		}
		e.syncAt = now.Add(e.cfg.SyncInterval)
	}
	next := e.syncAt
	for _, t := range []time.Time{e.flushAt, e.expireAt} {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if e.damper != nil {
		if t, ok := e.damper.NextDue(); ok && t.Before(next) {
			next = t
		}
	}
	return next
}

// Run calls Tick whenever it has work, until ctx ends or Close.
func (e *Engine) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// Sleep until then: whatever brings work sooner pokes wake, and
		// times carry the monotonic clock, so a wall clock that jumps
		// does not move them.
		next := e.Tick()
		timer.Reset(max(next.Sub(e.now()), 0))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.closed:
			return nil
		case <-timer.C:
		case <-e.wake:
		}
	}
}

// Close ends Run, every advert stream and every watch.
func (e *Engine) Close() {
	e.once.Do(func() {
		close(e.closed)
		e.table.Close()
		e.mu.Lock()
		streams := e.streams
		e.streams = make(map[*Stream]struct{})
		e.mu.Unlock()
		for s := range streams {
			s.Stop()
		}
	})
}

func (e *Engine) expireLocked(now time.Time) {
	expired, next := e.table.Expiring(now)
	for _, r := range expired {
		if err := e.deleteLocked(r); err == nil {
			e.stats.Expired++
			e.cfg.Log.Debug("learned route expired", "service", r.Service, "router", r.Router, "gateway", r.Gateway)
		}
	}
	e.expireAt = next
}

func (e *Engine) noteExpiryLocked(t time.Time) {
	if !t.IsZero() && (e.expireAt.IsZero() || t.Before(e.expireAt)) {
		e.expireAt = t
		e.poke()
	}
}

// outbound is r as peers should receive it from us.
func (e *Engine) outbound(r sdk.Route) sdk.Route {
	if n := len(r.Path); n == 0 || r.Path[n-1] != e.id {
		r.Path = append(slices.Clip(r.Path), e.id)
	}
	r.Gateway, r.Link, r.Expires = e.id, sdk.LinkNetwork, time.Time{}
	return r
}

// wanted is what the strategy advertises for one service now.
func (e *Engine) wanted(service string) map[destination]sdk.Route {
	if e.cfg.Strategy == None {
		return nil
	}
	best := make(map[destination]sdk.Route)
	e.table.Range(sdk.Query{Service: service}, func(r sdk.Route) bool {
		if e.damper != nil && e.damper.Suppressed(r.Hash()) {
			return true
		}
		if e.cfg.Strategy == Local && (r.Router != e.id || r.Link != sdk.LinkLocal) {
			return true
		}
		d := destinationOf(r)
		if old, ok := best[d]; !ok || e.preferred(r, old) {
			best[d] = r
		}
		return true
	})
	if e.cfg.Strategy == Best && len(best) > 1 {
		var top sdk.Route
		for _, r := range best {
			if top.Service == "" || table.Better(r, top) {
				top = r
			}
		}
		best = map[destination]sdk.Route{destinationOf(top): top}
	}
	for d, r := range best {
		best[d] = e.outbound(r)
	}
	return best
}

// preferred reports whether r is a better route to its destination than
// old: a lower metric, or, between equal metrics, the one we advertise
// already, then table.Better's stable order. Keeping the incumbent means
// an equal path heard later changes nothing for our peers; switching to it
// would re-advertise the destination with a new path over every link, and
// which of two equal paths arrives first depends only on timing (BGP keeps
// its oldest path for the same reason).
func (e *Engine) preferred(r, old sdk.Route) bool {
	if r.Metric != old.Metric {
		return r.Metric < old.Metric
	}
	if adv, ok := e.advertised[destinationOf(r)]; ok {
		switch {
		case slices.Equal(e.outbound(r).Path, adv.Path):
			return true
		case slices.Equal(e.outbound(old).Path, adv.Path):
			return false
		}
	}
	return table.Better(r, old)
}

func (e *Engine) flushLocked(now time.Time) {
	e.flushAt = time.Time{}
	if len(e.dirty) == 0 {
		return
	}
	var events []sdk.Event
	for _, service := range slices.Sorted(maps.Keys(e.dirty)) {
		events = e.diffLocked(service, now, events)
	}
	e.dirty = make(map[string]struct{})
	var adverts []*sdk.Advert
	for chunk := range slices.Chunk(events, maxEventsPerAnnounce) {
		adverts = append(adverts, e.advert(sdk.Announce, "", now, chunk))
	}
	e.stats.Announces += len(adverts)
	e.publishLocked(adverts)
}

// diffLocked appends the events that take what peers have of service to
// what the strategy wants, and records the result as advertised.
func (e *Engine) diffLocked(service string, now time.Time, events []sdk.Event) []sdk.Event {
	want := e.wanted(service)
	have := e.advByService[service]
	for d := range have {
		if _, ok := want[d]; ok {
			continue
		}
		r := e.advertised[d]
		if r.Router == e.id {
			r.Seq = e.nextSeq() // our withdrawal is news newer than the route
		}
		events = append(events, sdk.Event{Type: sdk.Delete, Timestamp: now, Route: r})
		e.unadvertiseLocked(d)
	}
	for d, r := range want {
		old, ok := e.advertised[d]
		switch {
		case !ok:
			events = append(events, sdk.Event{Type: sdk.Create, Timestamp: now, Route: r})
		case !table.Equal(old, r):
			events = append(events, sdk.Event{Type: sdk.Update, Timestamp: now, Route: r})
		default:
			continue
		}
		e.advertiseLocked(d, r, !ok)
	}
	return events
}

func compareDestinations(a, b destination) int {
	return cmp.Or(cmp.Compare(a.router, b.router), cmp.Compare(a.address, b.address), cmp.Compare(a.network, b.network))
}

func (e *Engine) advertiseLocked(d destination, r sdk.Route, added bool) {
	e.advertised[d] = r
	if !added {
		return
	}
	set := e.advByService[d.service]
	if set == nil {
		set = make(map[destination]struct{})
		e.advByService[d.service] = set
	}
	set[d] = struct{}{}
	e.advOrigins[d.router]++
	delete(e.goneOrigins, d.router)
}

func (e *Engine) unadvertiseLocked(d destination) {
	delete(e.advertised, d)
	set := e.advByService[d.service]
	delete(set, d)
	if len(set) == 0 {
		delete(e.advByService, d.service)
	}
	if e.advOrigins[d.router]--; e.advOrigins[d.router] <= 0 {
		delete(e.advOrigins, d.router)
		e.goneOrigins[d.router] = struct{}{}
	}
}

// syncAdvertsLocked builds one Sync per origin we advertise, and an empty
// one, which withdraws everything peers still hold of an origin, for each
// origin that lost its last route since the last periodic sync, and with
// self for our own origin in any case: at the first periodic sync, peers
// may still hold routes that a previous run of this node advertised. A
// node without routes of its own thus does not send an empty sync every
// interval to say so again.
func (e *Engine) syncAdvertsLocked(now time.Time, self bool) []*sdk.Advert {
	byOrigin := map[string][]sdk.Event{}
	if self {
		byOrigin[e.id] = nil
	}
	for o := range e.goneOrigins {
		byOrigin[o] = nil
	}
	for _, r := range e.advertised {
		byOrigin[r.Router] = append(byOrigin[r.Router], sdk.Event{Type: sdk.Create, Timestamp: now, Route: r})
	}
	adverts := make([]*sdk.Advert, 0, len(byOrigin))
	for _, o := range slices.Sorted(maps.Keys(byOrigin)) {
		adverts = append(adverts, e.advert(sdk.Sync, o, now, byOrigin[o]))
	}
	return adverts
}

func (e *Engine) advert(typ sdk.AdvertType, origin string, now time.Time, events []sdk.Event) *sdk.Advert {
	return &sdk.Advert{ID: e.id, Type: typ, Origin: origin, Timestamp: now, TTL: e.cfg.RouteTTL, Events: events}
}

// Solicit returns the whole advertised table as one Announce with a Create
// per route; a new peer has nothing to withdraw, and the periodic Syncs
// take over from there.
func (e *Engine) Solicit() (*sdk.Advert, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.closed:
		return nil, ErrClosed
	default:
	}
	now := e.now()
	events := make([]sdk.Event, 0, len(e.advertised))
	for _, d := range slices.SortedFunc(maps.Keys(e.advertised), func(a, b destination) int {
		return cmp.Or(cmp.Compare(a.service, b.service), compareDestinations(a, b))
	}) {
		events = append(events, sdk.Event{Type: sdk.Create, Timestamp: now, Route: e.advertised[d]})
	}
	return e.advert(sdk.Announce, "", now, events), nil
}

// Config returns the configuration in use, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }
