// Package table is the routing table of router-memory: routes keyed by
// sdk.Route.Hash, indexed by service and origin so lookups stay fast with a
// large table, and watched through bounded per-subscriber queues that never
// hold up a write.
package table

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/microhost/microhost/sdk"
)

// ErrDuplicate is returned (wrapped) by Create when the route already exists.
var ErrDuplicate = errors.New("route already exists")

// DefaultWatchQueue is how many events a watcher may have unread before it
// is told to resync.
const DefaultWatchQueue = 1024

// Table is safe for concurrent use. Routes it returns share their Path,
// Endpoints and Metadata with the table and must not be modified.
type Table struct {
	now        func() time.Time
	watchQueue int

	mu        sync.RWMutex
	routes    map[uint64]sdk.Route
	byService map[string]map[uint64]struct{}
	byRouter  map[string]map[uint64]struct{}
	watchers  map[*Watcher]struct{}
	closed    bool
}

// Option configures a Table.
type Option func(*Table)

// WithClock sets the clock that stamps events.
func WithClock(now func() time.Time) Option { return func(t *Table) { t.now = now } }

// WithWatchQueue sets how many unread events a watcher may hold.
func WithWatchQueue(n int) Option {
	return func(t *Table) {
		if n > 0 {
			t.watchQueue = n
		}
	}
}

// New returns an empty table.
func New(opts ...Option) *Table {
	t := &Table{
		now:        time.Now,
		watchQueue: DefaultWatchQueue,
		routes:     make(map[uint64]sdk.Route),
		byService:  make(map[string]map[uint64]struct{}),
		byRouter:   make(map[string]map[uint64]struct{}),
		watchers:   make(map[*Watcher]struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Create inserts r, or fails with ErrDuplicate if a route with its hash exists.
func (t *Table) Create(r sdk.Route) error {
	h := r.Hash()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.routes[h]; ok {
		return fmt.Errorf("create route %s: %w", describe(r), ErrDuplicate)
	}
	r = clone(r)
	t.insert(h, r)
	t.publish(sdk.Create, r)
	return nil
}

// Update stores r, inserting it if missing. It reports which event it
// published, and changed=false when r equals the stored route in everything
// but Expires (then only the expiry is refreshed and nobody is told).
func (t *Table) Update(r sdk.Route) (ev sdk.EventType, changed bool) {
	h := r.Hash()
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.routes[h]
	if ok && Equal(old, r) {
		old.Expires = r.Expires
		t.routes[h] = old
		return sdk.Update, false
	}
	r = clone(r)
	t.insert(h, r)
	ev = sdk.Update
	if !ok {
		ev = sdk.Create
	}
	t.publish(ev, r)
	return ev, true
}

// Delete removes the route with r's hash and returns what was stored, or an
// error wrapping sdk.ErrNotFound.
func (t *Table) Delete(r sdk.Route) (sdk.Route, error) {
	h := r.Hash()
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.routes[h]
	if !ok {
		return sdk.Route{}, fmt.Errorf("delete route %s: %w", describe(r), sdk.ErrNotFound)
	}
	delete(t.routes, h)
	unindex(t.byService, old.Service, h)
	unindex(t.byRouter, old.Router, h)
	t.publish(sdk.Delete, old)
	return old, nil
}

// Get returns the route stored under hash.
func (t *Table) Get(hash uint64) (sdk.Route, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.routes[hash]
	return r, ok
}

// Len is the number of routes.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.routes)
}

// List returns every route, ordered by service then metric.
func (t *Table) List() []sdk.Route {
	t.mu.RLock()
	out := slices.Collect(maps.Values(t.routes))
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b sdk.Route) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), compareRoutes(a, b))
	})
	return out
}

// Select returns the routes matching every non-empty field of q, lowest
// metric first; it is Lookup without the not-found error.
func (t *Table) Select(q sdk.Query) []sdk.Route {
	t.mu.RLock()
	out := t.selectLocked(q)
	t.mu.RUnlock()
	slices.SortFunc(out, compareRoutes)
	return out
}

// Range calls fn for every route matching q, in no particular order, until
// fn returns false. fn runs under the table's read lock: it must not write
// to the table.
func (t *Table) Range(q sdk.Query, fn func(sdk.Route) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if h, ok := t.indexFor(q); ok {
		for h := range h {
			if r := t.routes[h]; matches(r, q) && !fn(r) {
				return
			}
		}
		return
	}
	for _, r := range t.routes {
		if matches(r, q) && !fn(r) {
			return
		}
	}
}

// Lookup is Select that fails with an error wrapping sdk.ErrNotFound when
// nothing matches.
func (t *Table) Lookup(q sdk.Query) ([]sdk.Route, error) {
	out := t.Select(q)
	if len(out) == 0 {
		return nil, fmt.Errorf("no route for %s: %w", describeQuery(q), sdk.ErrNotFound)
	}
	return out, nil
}

// Expiring returns the routes whose Expires is set and not after now, and
// the earliest expiry of the others (zero if none expire).
func (t *Table) Expiring(now time.Time) (expired []sdk.Route, next time.Time) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.routes {
		switch {
		case r.Expires.IsZero():
		case !r.Expires.After(now):
			expired = append(expired, r)
		case next.IsZero() || r.Expires.Before(next):
			next = r.Expires
		}
	}
	return expired, next
}

func (t *Table) selectLocked(q sdk.Query) []sdk.Route {
	var out []sdk.Route
	if candidates, ok := t.indexFor(q); ok {
		for h := range candidates {
			if r := t.routes[h]; matches(r, q) {
				out = append(out, r)
			}
		}
		return out
	}
	for _, r := range t.routes {
		if matches(r, q) {
			out = append(out, r)
		}
	}
	return out
}

// indexFor picks the smallest index the query can use; ok is false when it
// can use none and the whole table must be scanned.
func (t *Table) indexFor(q sdk.Query) (candidates map[uint64]struct{}, ok bool) {
	if q.Service != "" {
		candidates, ok = t.byService[q.Service], true
	}
	if q.Router != "" {
		if c := t.byRouter[q.Router]; !ok || len(c) < len(candidates) {
			candidates, ok = c, true
		}
	}
	return candidates, ok
}

func (t *Table) insert(h uint64, r sdk.Route) {
	t.routes[h] = r
	index(t.byService, r.Service, h)
	index(t.byRouter, r.Router, h)
}

func index(idx map[string]map[uint64]struct{}, key string, h uint64) {
	set := idx[key]
	if set == nil {
		set = make(map[uint64]struct{})
		idx[key] = set
	}
	set[h] = struct{}{}
}

func unindex(idx map[string]map[uint64]struct{}, key string, h uint64) {
	set := idx[key]
	delete(set, h)
	if len(set) == 0 {
		delete(idx, key)
	}
}

func matches(r sdk.Route, q sdk.Query) bool {
	return (q.Service == "" || r.Service == q.Service) &&
		(q.Address == "" || r.Address == q.Address) &&
		(q.Gateway == "" || r.Gateway == q.Gateway) &&
		(q.Network == "" || r.Network == q.Network) &&
		(q.Router == "" || r.Router == q.Router) &&
		(q.Link == "" || r.Link == q.Link)
}

// Better reports whether a is preferred to b: lower metric, then a stable
// order on identity.
func Better(a, b sdk.Route) bool { return compareRoutes(a, b) < 0 }

// compareRoutes orders by metric, then by identity so that results are stable.
func compareRoutes(a, b sdk.Route) int {
	return cmp.Or(
		cmp.Compare(a.Metric, b.Metric),
		cmp.Compare(a.Router, b.Router),
		cmp.Compare(a.Address, b.Address),
		cmp.Compare(a.Gateway, b.Gateway),
		cmp.Compare(a.Network, b.Network),
		cmp.Compare(a.Link, b.Link),
	)
}

// Equal reports whether two routes are the same in everything but Expires.
func Equal(a, b sdk.Route) bool {
	return a.Service == b.Service && a.Address == b.Address && a.Gateway == b.Gateway &&
		a.Network == b.Network && a.Router == b.Router && a.Link == b.Link &&
		a.Metric == b.Metric && a.Seq == b.Seq &&
		slices.Equal(a.Path, b.Path) && slices.Equal(a.Endpoints, b.Endpoints) &&
		maps.Equal(a.Metadata, b.Metadata)
}

// clone detaches r from the caller's slices and map.
func clone(r sdk.Route) sdk.Route {
	r.Path = slices.Clone(r.Path)
	r.Endpoints = slices.Clone(r.Endpoints)
	r.Metadata = maps.Clone(r.Metadata)
	return r
}

func describe(r sdk.Route) string {
	return fmt.Sprintf("service=%q address=%q router=%q gateway=%q network=%q link=%q",
		r.Service, r.Address, r.Router, r.Gateway, r.Network, r.Link)
}

func describeQuery(q sdk.Query) string {
	s := ""
	for _, f := range []struct{ k, v string }{
		{"service", q.Service}, {"address", q.Address}, {"gateway", q.Gateway},
		{"network", q.Network}, {"router", q.Router}, {"link", q.Link},
	} {
		if f.v != "" {
			if s != "" {
				s += " "
			}
			s += fmt.Sprintf("%s=%q", f.k, f.v)
		}
	}
	if s == "" {
		return "any query (the table is empty)"
	}
	return s
}
