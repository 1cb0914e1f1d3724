package engine

import (
	"errors"
	"fmt"
	"slices"

	"github.com/microhost/microhost/sdk"
)

// Process applies an advert from a peer. The host has already added the
// link cost to each metric, set the gateway to the advertising peer and
// checked that the peer may speak for each origin.
//
// Announce events apply per route, newer Seq winning; Sync replaces
// whatever Origin's routes we hold via the advertiser (a.ID as gateway),
// withdrawing those it does not list. Learned routes expire TTL after they
// were last heard of. Routes that loop — through this node, or originated by
// it — are skipped. Malformed events are reported in the error, after the
// well-formed ones have been applied.
func (e *Engine) Process(a *sdk.Advert) error {
	if a == nil {
		return errors.New("process advert: advert is nil")
	}
	if a.ID == "" {
		return errors.New("process advert: advertising node id is empty")
	}
	if a.TTL < 0 {
		return fmt.Errorf("process advert from %s: negative TTL %v", a.ID, a.TTL)
	}
	switch a.Type {
	case sdk.Announce:
	case sdk.Sync:
		if a.Origin == "" {
			return fmt.Errorf("process sync from %s: origin is empty", a.ID)
		}
	default:
		return fmt.Errorf("process advert from %s: unknown advert type %d", a.ID, a.Type)
	}
	ttl := a.TTL
	if ttl == 0 {
		ttl = e.cfg.RouteTTL
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.closed:
		return ErrClosed
	default:
	}
	e.stats.Processed++
	expires := e.now().Add(ttl)
	var errs []error
	listed := make(map[uint64]struct{})
	for i, ev := range a.Events {
		r := ev.Route
		if err := e.checkLearned(a, ev); err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			continue
		}
		if e.loops(r) {
			e.stats.Looped++
			continue
		}
		if ev.Type == sdk.Delete {
			e.withdrawLocked(r)
			continue
		}
		listed[r.Hash()] = struct{}{}
		r.Expires = expires
		e.learnLocked(r)
	}
	if a.Type == sdk.Sync && a.Origin != e.id {
		for _, r := range e.table.Select(sdk.Query{Router: a.Origin, Gateway: a.ID}) {
			if _, ok := listed[r.Hash()]; !ok {
				_ = e.deleteLocked(r)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("process %s from %s: %w", advertKind(a.Type), a.ID, errors.Join(errs...))
	}
	return nil
}

func advertKind(t sdk.AdvertType) string {
	if t == sdk.Sync {
		return "sync"
	}
	return "announce"
}

func (e *Engine) checkLearned(a *sdk.Advert, ev sdk.Event) error {
	r := ev.Route
	switch {
	case ev.Type == sdk.Resync:
		return errors.New("resync events are not exchanged between routers")
	case a.Type == sdk.Sync && ev.Type == sdk.Delete:
		return errors.New("a sync lists routes; it cannot carry a delete")
	case ev.Type != sdk.Create && ev.Type != sdk.Update && ev.Type != sdk.Delete:
		return fmt.Errorf("unknown event type %d", ev.Type)
	case r.Service == "" || r.Router == "":
		return fmt.Errorf("route service %q router %q: both must be set", r.Service, r.Router)
	case a.Type == sdk.Sync && r.Router != a.Origin:
		return fmt.Errorf("route of service %q has origin %q in a sync of origin %q", r.Service, r.Router, a.Origin)
	case r.Metric < 0:
		return fmt.Errorf("route of service %q has negative metric %d", r.Service, r.Metric)
	}
	return nil
}

// loops reports a route that this node originated or that passed through it.
func (e *Engine) loops(r sdk.Route) bool {
	return r.Router == e.id || r.Gateway == e.id || slices.Contains(r.Path, e.id)
}

func (e *Engine) learnLocked(r sdk.Route) {
	if old, ok := e.table.Get(r.Hash()); ok && r.Seq < old.Seq {
		e.stats.Stale++
		return
	}
	e.updateLocked(r)
	e.noteExpiryLocked(r.Expires)
}

func (e *Engine) withdrawLocked(r sdk.Route) {
	old, ok := e.table.Get(r.Hash())
	if !ok {
		return
	}
	if r.Seq < old.Seq {
		e.stats.Stale++
		return
	}
	_ = e.deleteLocked(old)
}
