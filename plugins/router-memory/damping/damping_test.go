package damping

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
)

// clock is simulated time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newDamper(t *testing.T) (*Damper, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, err := New(DefaultConfig(), c.now)
	if err != nil {
		t.Fatal(err)
	}
	return d, c
}

func svc(name string) sdk.Route {
	return sdk.Route{Service: name, Address: "10.0.0.1:80", Router: "a", Link: sdk.LinkLocal, Metric: 1}
}

func down(d *Damper, r sdk.Route) bool { return d.Apply(sdk.Event{Type: sdk.Delete, Route: r}) }
func up(d *Damper, r sdk.Route) bool   { return d.Apply(sdk.Event{Type: sdk.Create, Route: r}) }

func penalty(t *testing.T, d *Damper, r sdk.Route) (float64, bool) {
	t.Helper()
	for _, s := range d.States() {
		if s.Route.Hash() == r.Hash() {
			return s.Penalty, s.Suppressed
		}
	}
	return 0, false
}

func near(a, b float64) bool { return math.Abs(a-b) < 0.01 }

func TestDecayIsClosedFormAndIndependentOfPolling(t *testing.T) {
	polled, c1 := newDamper(t)
	idle, c2 := newDamper(t)
	r := svc("greeter")
	down(polled, r)
	down(idle, r)
	for range 150 { // look every 100 ms for 15 s
		c1.advance(100 * time.Millisecond)
		polled.Release()
		polled.States()
	}
	c2.advance(15 * time.Second)
	p1, _ := penalty(t, polled, r)
	p2, _ := penalty(t, idle, r)
	if !near(p1, 500) || !near(p2, 500) {
		t.Fatalf("penalty after one half-life: polled %.3f, idle %.3f; want 500", p1, p2)
	}
	// Below half of reuse the history is forgotten.
	c1.advance(15*time.Second*time.Duration(math.Log2(500.0/375)*1000)/1000 + time.Millisecond)
	polled.Release()
	if polled.Len() != 0 {
		t.Fatal("decayed-away entry was kept")
	}
}

// flap withdraws r, brings it back after downFor and waits upFor, calling
// Release along the way as the engine's ticks do. It reports whether the
// withdrawal and the announcement passed.
func flap(d *Damper, c *clock, r sdk.Route, downFor, upFor time.Duration) (downPassed, upPassed bool) {
	downPassed = down(d, r)
	d.Release()
	c.advance(downFor)
	d.Release()
	upPassed = up(d, r)
	c.advance(upFor)
	d.Release()
	return downPassed, upPassed
}

func TestSingleRestartIsNotSuppressed(t *testing.T) {
	d, c := newDamper(t)
	r := svc("greeter")
	if down, up := flap(d, c, r, 200*time.Millisecond, 0); !down || !up {
		t.Fatalf("restart on a clean route: withdrawal passed %v, announcement passed %v; want both", down, up)
	}
	// The restart is charged a full flap, and the charge is kept.
	p, s := penalty(t, d, r)
	if want := 1000 * math.Exp2(-0.2/15); s || !near(p, want) {
		t.Fatalf("after a restart: penalty %.2f suppressed %v; want %.2f, not suppressed", p, s, want)
	}
}

// The regression: sub-second downs (restarts back to back) must add up.
func TestFourRapidFlapsAreSuppressed(t *testing.T) {
	for _, tc := range []struct {
		name           string
		downFor, upFor time.Duration
		second         float64 // penalty at the second withdrawal
	}{
		{"down 1.5s up 1.5s", 1500 * time.Millisecond, 1500 * time.Millisecond, 1000*math.Exp2(-3.0/15) + 1000},
		{"restarts: down 0.5s up 0.5s", 500 * time.Millisecond, 500 * time.Millisecond, 1000*math.Exp2(-1.0/15) + 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, c := newDamper(t)
			r := svc("greeter")
			var passed []bool
			for i := range 4 {
				_, ok := flap(d, c, r, tc.downFor, 0)
				passed = append(passed, ok)
				if i == 1 { // every charge was kept
					want := tc.second * math.Exp2(-tc.downFor.Seconds()/15)
					if p, _ := penalty(t, d, r); !near(p, want) {
						t.Fatalf("penalty %.2f after the second flap, want %.2f", p, want)
					}
				}
				c.advance(tc.upFor)
				d.Release()
			}
			// The third withdrawal takes the penalty past 2000.
			if fmt.Sprint(passed) != "[true true false false]" {
				t.Fatalf("announcements passed: %v, want the third and fourth held", passed)
			}
			if _, s := penalty(t, d, r); !s {
				t.Fatal("route not suppressed after four rapid flaps")
			}
		})
	}
}

// A service that restarts now and then is never suppressed; one that
// restarts every few seconds is, and comes back once it settles.
func TestPeriodicRestarts(t *testing.T) {
	t.Run("every 30s never suppressed", func(t *testing.T) {
		d, c := newDamper(t)
		r := svc("greeter")
		for i := range 200 { // 100 simulated minutes
			if down, up := flap(d, c, r, 500*time.Millisecond, 29500*time.Millisecond); !down || !up {
				t.Fatalf("restart %d: withdrawal passed %v, announcement passed %v", i+1, down, up)
			}
		}
		down(d, r)
		// Even kept forever the charges would settle at 1000/(1-2^-2) =
		// 1333 < 2000; in fact 30 s decays the 1333 to 333, below reuse/2,
		// so the history is forgotten and each restart starts clean.
		if p, s := penalty(t, d, r); s || !near(p, 1000) {
			t.Fatalf("penalty %.2f suppressed %v; want 1000 (history forgotten between restarts), not suppressed", p, s)
		}
	})
	t.Run("every 5s suppressed", func(t *testing.T) {
		d, c := newDamper(t)
		r := svc("crashy")
		var held []bool
		for range 3 {
			_, ok := flap(d, c, r, 500*time.Millisecond, 4500*time.Millisecond)
			held = append(held, !ok)
		}
		// 1000, 1793.7, 2423.7: suppressed at the third restart.
		if fmt.Sprint(held) != "[false false true]" {
			t.Fatalf("held: %v", held)
		}
		c.advance(DefaultConfig().MaxSuppress)
		if got := d.Release(); len(got) != 1 {
			t.Fatalf("released %v, want the restarting route once it settled", got)
		}
	})
}

// However small the penalty, a fresh charge outlives the next Release, so
// charges add up.
func TestSmallPenaltyIsNotForgottenAtOnce(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Penalty = 300 // below reuse/2
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, err := New(cfg, c.now)
	if err != nil {
		t.Fatal(err)
	}
	r := svc("greeter")
	flaps := 0
	for {
		_, ok := flap(d, c, r, 500*time.Millisecond, 500*time.Millisecond)
		flaps++
		if !ok {
			break
		}
		if flaps > 20 {
			t.Fatal("a route flapping every second with penalty 300 was never suppressed")
		}
	}
	// 300·(1-q^n)/(1-q) with q = 2^(-1/15) reaches 2000 at the eighth flap.
	if flaps != 8 {
		t.Fatalf("suppressed at flap %d, want 8", flaps)
	}
}

func TestReleaseAtReuseWithLatestState(t *testing.T) {
	d, c := newDamper(t)
	r := svc("greeter")
	for range 3 {
		down(d, r)
		c.advance(1500 * time.Millisecond)
		up(d, r)
		c.advance(1500 * time.Millisecond)
	}
	latest := r
	latest.Metric = 42
	latest.Endpoints = []string{"greeter.v2.Greeter"}
	if d.Apply(sdk.Event{Type: sdk.Update, Route: latest}) {
		t.Fatal("update of a suppressed route passed")
	}
	// The third flap at t=6 s left 2628.5 (decayed from 1870.6 at t=3 s);
	// reuse is when it decays to 750: 6 s + 15 s·log2(p/750).
	p3 := (1000*math.Exp2(-3.0/15)+1000)*math.Exp2(-3.0/15) + 1000
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reuse := start.Add(6*time.Second + time.Duration(15*math.Log2(p3/750)*float64(time.Second)))
	c.t = reuse.Add(-time.Millisecond)
	if got := d.Release(); len(got) != 0 || !d.Suppressed(r.Hash()) {
		t.Fatalf("released %d routes a millisecond before reuse", len(got))
	}
	if due, ok := d.NextDue(); !ok || due.Sub(reuse).Abs() > time.Millisecond {
		t.Fatalf("next due %v, want %v", due, reuse)
	}
	c.t = reuse.Add(time.Millisecond)
	got := d.Release()
	if len(got) != 1 || got[0].Metric != 42 || len(got[0].Endpoints) != 1 {
		t.Fatalf("released %+v, want the latest state (metric 42)", got)
	}
	if d.Suppressed(r.Hash()) {
		t.Fatal("still suppressed after release")
	}
	if len(d.Release()) != 0 {
		t.Fatal("released twice")
	}
}

func TestWithdrawnWhileSuppressedReleasesNothing(t *testing.T) {
	d, c := newDamper(t)
	r := svc("greeter")
	for range 3 {
		down(d, r)
		c.advance(1500 * time.Millisecond)
		up(d, r)
		c.advance(1500 * time.Millisecond)
	}
	if down(d, r) {
		t.Fatal("withdrawal of a held (never advertised) route passed")
	}
	c.advance(2 * time.Minute)
	if got := d.Release(); len(got) != 0 {
		t.Fatalf("released %v for a route that is down", got)
	}
}

func TestMaxSuppressReleasesLatestState(t *testing.T) {
	d, c := newDamper(t)
	r := svc("greeter")
	var since time.Time
	released := 0
	// Flap every 3 s for 90 s: the penalty never decays to reuse.
	for i := range 30 {
		down(d, r)
		if since.IsZero() && d.Suppressed(r.Hash()) {
			since = c.now()
		}
		c.advance(1500 * time.Millisecond)
		r.Metric = int64(i)
		up(d, r)
		if got := d.Release(); len(got) > 0 {
			released++
			if got[0].Metric != int64(i) {
				t.Fatalf("released metric %d, want latest %d", got[0].Metric, i)
			}
			if c.now().Sub(since) > 60*time.Second+3*time.Second {
				t.Fatalf("released %v after suppression began, want about max_suppress", c.now().Sub(since))
			}
		}
		c.advance(1500 * time.Millisecond)
	}
	if since.IsZero() || released == 0 {
		t.Fatalf("suppressed at %v, released %d times: want release at max_suppress", since, released)
	}
}

// RFC 2439 arithmetic for periodic flaps: after n flaps T apart the penalty
// is P·(1-q^n)/(1-q) with q = 2^(-T/halflife).
func TestPeriodicFlaps(t *testing.T) {
	t.Run("20s apart never suppressed", func(t *testing.T) {
		d, c := newDamper(t)
		r := svc("greeter")
		for range 50 {
			down(d, r)
			c.advance(time.Second + 500*time.Millisecond)
			if !up(d, r) {
				t.Fatal("suppressed")
			}
			c.advance(18*time.Second + 500*time.Millisecond)
		}
		down(d, r)
		q := math.Exp2(-20.0 / 15)
		limit := 1000 / (1 - q) // 1658.3 < suppress 2000
		p, s := penalty(t, d, r)
		if s || !near(p, 1000*(1-math.Pow(q, 51))/(1-q)) || math.Abs(p-limit) > 0.5 {
			t.Fatalf("penalty %.2f suppressed %v; want about %.1f and not suppressed", p, s, limit)
		}
	})
	t.Run("10s apart suppressed at the third flap", func(t *testing.T) {
		d, c := newDamper(t)
		r := svc("greeter")
		var held []bool
		for range 3 {
			down(d, r)
			c.advance(2 * time.Second)
			held = append(held, !up(d, r))
			c.advance(8 * time.Second)
		}
		// 1000, 1630.0, 2027.5
		if fmt.Sprint(held) != "[false false true]" {
			t.Fatalf("held: %v", held)
		}
	})
}

func TestMemoryBoundedAfterMaxSuppress(t *testing.T) {
	d, c := newDamper(t)
	const n = 10_000
	routes := make([]sdk.Route, n)
	for i := range routes {
		routes[i] = svc(fmt.Sprintf("svc-%d", i))
	}
	for range 4 {
		for _, r := range routes {
			down(d, r)
		}
		c.advance(1500 * time.Millisecond)
		for _, r := range routes {
			up(d, r)
		}
		c.advance(1500 * time.Millisecond)
	}
	if d.Len() != n {
		t.Fatalf("tracking %d routes, want %d", d.Len(), n)
	}
	released := map[uint64]bool{}
	end := c.now().Add(DefaultConfig().MaxSuppress)
	for c.now().Before(end) {
		c.advance(time.Second)
		for _, r := range d.Release() {
			if released[r.Hash()] {
				t.Fatalf("%s released twice", r.Service)
			}
			released[r.Hash()] = true
		}
	}
	if len(released) != n {
		t.Fatalf("released %d suppressed routes, want %d", len(released), n)
	}
	if d.Len() != 0 {
		t.Fatalf("%d entries left after max_suppress, want 0", d.Len())
	}
	if _, ok := d.NextDue(); ok {
		t.Fatal("work still scheduled with nothing tracked")
	}
}

func TestValidate(t *testing.T) {
	bad := DefaultConfig()
	bad.Reuse = 2000
	var fe *FieldError
	if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != "reuse" {
		t.Fatalf("reuse >= suppress: got %v", err)
	}
	short := DefaultConfig()
	short.MaxSuppress = 10 * time.Second // ceiling 750·2^(2/3) = 1190 < 2000
	if err := short.Validate(); !errors.As(err, &fe) || fe.Field != "max_suppress" {
		t.Fatalf("short max_suppress: got %v", err)
	}
	for _, suppress := range []float64{1000, 900} {
		oneFlap := DefaultConfig()
		oneFlap.Suppress, oneFlap.Reuse = suppress, 500
		err := oneFlap.Validate()
		if !errors.As(err, &fe) || fe.Field != "suppress" || !strings.Contains(fe.Msg, "one restart") {
			t.Fatalf("suppress %v with penalty 1000: got %v, want a suppress error saying one restart must not suppress", suppress, err)
		}
	}
	nan := DefaultConfig()
	nan.Penalty = math.NaN()
	if err := nan.Validate(); !errors.As(err, &fe) || fe.Field != "penalty" || strings.Contains(err.Error(), "suppress:") {
		t.Fatalf("NaN penalty: got %v, want a penalty error only", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}
