// Package damping is route-flap damping after RFC 2439, with seconds-scale
// defaults suited to service churn.
//
// Each withdrawal of a route is a flap and adds Penalty to the route's
// figure of merit, which decays exponentially with HalfLife. The decay is
// computed in closed form from the time since the last change
// (p·2^(-dt/HalfLife)), never compounded per tick, so the result does not
// depend on how often anyone looks. When the penalty reaches Suppress the
// route is suppressed: withdrawals still pass (peers must stop using a dead
// route at once) but re-advertisements are held, keeping only the latest
// state. Once the penalty decays to Reuse, or MaxSuppress after suppression
// began, that latest state is released to be advertised; it is never lost.
//
// A restart (the route withdrawn and back a moment later) is a flap like
// any other; there is no discount that could let charges slip away. Instead
// Validate requires Suppress > Penalty, so a single flap — one restart — can
// never suppress a route with a clean history. Restarts now and then stay
// below Suppress too: flaps T apart never add up past
// Penalty/(1-2^(-T/HalfLife)), 1333 for the defaults and a restart every
// 30 s. A crash loop or a service flapping every second adds up past
// Suppress within a few flaps.
//
// History is forgotten once the penalty decays below half of Reuse or of
// Penalty, whichever is lower, so a fresh charge always outlives a half-life.
//
// All times come from an injected clock. A Damper is not safe for
// concurrent use; its owner serialises calls.
package damping

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/microhost/microhost/sdk"
)

// Config holds the damping knobs.
type Config struct {
	Penalty     float64       // added per flap
	HalfLife    time.Duration // time for the penalty to halve
	Suppress    float64       // penalty at which a route is suppressed
	Reuse       float64       // penalty at which a suppressed route is released
	MaxSuppress time.Duration // longest a route stays suppressed
}

// DefaultConfig returns the defaults: penalty 1000 per flap, half-life 15 s,
// suppress at 2000, reuse at 750, suppressed at most 60 s.
func DefaultConfig() Config {
	return Config{Penalty: 1000, HalfLife: 15 * time.Second, Suppress: 2000, Reuse: 750, MaxSuppress: 60 * time.Second}
}

// FieldError says which knob is wrong.
type FieldError struct {
	Field string // penalty, half_life, suppress, reuse or max_suppress
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate checks the knobs and returns every problem, each a *FieldError.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	penaltyOK := c.Penalty > 0 && !math.IsInf(c.Penalty, 0)
	if !penaltyOK {
		bad("penalty", "must be a positive number, got %v", c.Penalty)
	}
	if c.HalfLife <= 0 {
		bad("half_life", "must be positive, got %v", c.HalfLife)
	}
	if !(c.Suppress > 0) || math.IsInf(c.Suppress, 0) {
		bad("suppress", "must be a positive number, got %v", c.Suppress)
	} else if penaltyOK && c.Suppress <= c.Penalty {
		bad("suppress", "must exceed penalty (%v), got %v: one restart (a single withdrawal) must never suppress a route", c.Penalty, c.Suppress)
	}
	if !(c.Reuse > 0) {
		bad("reuse", "must be a positive number, got %v", c.Reuse)
	} else if c.Reuse >= c.Suppress {
		bad("reuse", "must be below suppress (%v), got %v", c.Suppress, c.Reuse)
	}
	if c.MaxSuppress <= 0 {
		bad("max_suppress", "must be positive, got %v", c.MaxSuppress)
	}
	if len(errs) == 0 && c.ceiling() < c.Suppress {
		bad("max_suppress", "%v is too short for half_life %v: the penalty is capped at reuse·2^(max_suppress/half_life) = %.0f, which never reaches suppress (%v)",
			c.MaxSuppress, c.HalfLife, c.ceiling(), c.Suppress)
	}
	return errors.Join(errs...)
}

// ceiling is the RFC 2439 maximum penalty: one that decays to Reuse in
// exactly MaxSuppress.
func (c Config) ceiling() float64 {
	return c.Reuse * math.Exp2(c.MaxSuppress.Seconds()/c.HalfLife.Seconds())
}

// forgetBelow is the penalty under which an unsuppressed entry's history is
// dropped: half the reuse threshold (RFC 2439), or half a flap's charge if
// that is lower, so that a fresh charge is never forgotten at once.
func (c Config) forgetBelow() float64 { return min(c.Reuse, c.Penalty) / 2 }

type entry struct {
	route      sdk.Route // latest state
	held       bool      // up, suppressed, and not yet advertised
	penalty    float64   // as of updated
	updated    time.Time
	flaps      int
	suppressed bool
	since      time.Time // when suppression began
}

// Damper tracks the flap history of routes, keyed by sdk.Route.Hash.
type Damper struct {
	cfg     Config
	now     func() time.Time
	entries map[uint64]*entry
	// agenda orders entries by when they next need attention, so that
	// Release touches only what is due. An entry rescheduled later leaves
	// a stale item behind, skipped when it comes up.
	agenda agenda
}

type agendaItem struct {
	at   time.Time
	hash uint64
}

type agenda []agendaItem

func (a agenda) Len() int           { return len(a) }
func (a agenda) Less(i, j int) bool { return a[i].at.Before(a[j].at) }
func (a agenda) Swap(i, j int)      { a[i], a[j] = a[j], a[i] }
func (a *agenda) Push(x any)        { *a = append(*a, x.(agendaItem)) }
func (a *agenda) Pop() any {
	old := *a
	it := old[len(old)-1]
	*a = old[:len(old)-1]
	return it
}

// New returns a Damper; cfg must be valid.
func New(cfg Config, now func() time.Time) (*Damper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Damper{cfg: cfg, now: now, entries: make(map[uint64]*entry)}, nil
}

// decayed is e's penalty at t.
func (d *Damper) decayed(e *entry, t time.Time) float64 {
	dt := t.Sub(e.updated).Seconds()
	if dt <= 0 {
		return e.penalty
	}
	return e.penalty * math.Exp2(-dt/d.cfg.HalfLife.Seconds())
}

// Apply records a change to a route and reports whether it may be
// advertised now. Withdrawals pass unless the route is already suppressed
// (then peers never got the held state and there is nothing to withdraw);
// announcements of a suppressed route are held until Release.
func (d *Damper) Apply(ev sdk.Event) bool {
	now := d.now()
	h := ev.Route.Hash()
	e := d.entries[h]
	switch ev.Type {
	case sdk.Delete:
		if e == nil {
			e = &entry{updated: now}
			d.entries[h] = e
		}
		wasSuppressed := e.suppressed
		e.route, e.held = ev.Route, false
		e.penalty = min(d.decayed(e, now)+d.cfg.Penalty, d.cfg.ceiling())
		e.updated = now
		e.flaps++
		if !e.suppressed && e.penalty >= d.cfg.Suppress {
			e.suppressed, e.since = true, now
		}
		d.schedule(h, e)
		return !wasSuppressed
	case sdk.Create, sdk.Update:
		if e == nil {
			return true
		}
		e.route = ev.Route
		if e.suppressed {
			e.held = true
			return false
		}
		return true
	}
	return true
}

// due is when e next needs attention: its release if suppressed, else when
// its history may be forgotten.
func (d *Damper) due(e *entry) time.Time {
	if e.suppressed {
		return earliest(d.reuseAt(e), e.since.Add(d.cfg.MaxSuppress))
	}
	return d.crossing(e, d.cfg.forgetBelow())
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// reuseAt is when e's penalty decays to Reuse.
func (d *Damper) reuseAt(e *entry) time.Time { return d.crossing(e, d.cfg.Reuse) }

// crossing is when e's penalty decays to level: updated + HalfLife·log2(p/level).
func (d *Damper) crossing(e *entry, level float64) time.Time {
	if e.penalty <= level {
		return e.updated
	}
	secs := d.cfg.HalfLife.Seconds() * math.Log2(e.penalty/level)
	return e.updated.Add(time.Duration(math.Ceil(secs * float64(time.Second))))
}

func (d *Damper) schedule(h uint64, e *entry) {
	heap.Push(&d.agenda, agendaItem{at: d.due(e), hash: h})
}

// NextDue is when Release should next be called (it may find nothing to
// do if a route was rescheduled since); ok is false when nothing is tracked.
func (d *Damper) NextDue() (t time.Time, ok bool) {
	if len(d.agenda) == 0 {
		return time.Time{}, false
	}
	return d.agenda[0].at, true
}

// Release ends the suppression of every route whose penalty has decayed to
// Reuse or that has been suppressed for MaxSuppress, returning the latest
// state of those that are up so the caller advertises them, and forgets
// entries whose penalty has decayed away.
func (d *Damper) Release() []sdk.Route {
	now := d.now()
	var released []sdk.Route
	for len(d.agenda) > 0 && !now.Before(d.agenda[0].at) {
		it := heap.Pop(&d.agenda).(agendaItem)
		e := d.entries[it.hash]
		if e == nil || now.Before(d.due(e)) {
			continue // forgotten, or rescheduled by a later change
		}
		if e.suppressed {
			e.penalty, e.updated = d.decayed(e, now), now
			e.suppressed, e.since = false, time.Time{}
			if e.held {
				released = append(released, e.route)
				e.held = false
			}
		}
		if !now.Before(d.due(e)) {
			delete(d.entries, it.hash)
			continue
		}
		d.schedule(it.hash, e)
	}
	return released
}

// Suppressed reports whether the route with hash h is suppressed.
func (d *Damper) Suppressed(h uint64) bool {
	e := d.entries[h]
	return e != nil && e.suppressed
}

// Len is the number of routes with a flap history.
func (d *Damper) Len() int { return len(d.entries) }

// States lists the routes that carry a penalty, as of now.
func (d *Damper) States() []sdk.DampingState {
	now := d.now()
	out := make([]sdk.DampingState, 0, len(d.entries))
	for _, e := range d.entries {
		out = append(out, sdk.DampingState{
			Route: e.route, Penalty: d.decayed(e, now), Flaps: e.flaps,
			Suppressed: e.suppressed, Since: e.since,
		})
	}
	return out
}
