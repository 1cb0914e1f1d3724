// Package registry keeps the node's local service instances: those that
// register through the admin API with a TTL they must heartbeat, and those
// declared in the config, kept or withdrawn by a health check. Watchers (the
// router, through the host) see an instance while it is active.
//
// The package does no I/O of its own: time comes from a Clock and health
// checks from a Checker, so tests drive both by hand.
package registry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// Source says how an instance came to be registered.
type Source string

const (
	SourceAPI    Source = "api"    // Register through the admin API
	SourceStatic Source = "static" // a service block in the config
)

// Health is the state of an instance's health check.
type Health string

const (
	HealthNone     Health = "none"     // no check: registered, active
	HealthPending  Health = "pending"  // checked, no answer yet: not active
	HealthPassing  Health = "passing"  // last check passed: active
	HealthCritical Health = "critical" // last check failed: not active
)

// Instance is one entry of the registry.
type Instance struct {
	sdk.Service
	Source Source `json:"source"`
	// TTL is how long the instance lives without a heartbeat; 0 for ever.
	TTL time.Duration `json:"ttl,omitempty"`
	// Expires is when the instance lapses unless it heartbeats; zero never.
	Expires time.Time `json:"expires,omitzero"`
	Health  Health    `json:"health"`
	// LastError is why the last health check failed.
	LastError string `json:"last_error,omitempty"`
}

// Active reports whether watchers see the instance.
func (i Instance) Active() bool { return i.Health == HealthNone || i.Health == HealthPassing }

// Check is a periodic health check of a static service.
type Check struct {
	Interval time.Duration // default 10s
	Timeout  time.Duration // default 2s
	// GRPCService is passed to the checker; "" asks about the server as a whole.
	GRPCService string
}

const (
	defaultCheckInterval = 10 * time.Second
	defaultCheckTimeout  = 2 * time.Second
	defaultQueue         = 256
)

// Checker reports whether the service at address is healthy (nil) or why not.
type Checker func(ctx context.Context, address, grpcService string) error

var (
	// ErrClosed is returned once the registry is closed.
	ErrClosed = errors.New("the registry is closed")
	// ErrStatic is wrapped by the refusal to change a service declared in
	// the config through the API.
	ErrStatic = errors.New("declared in the config")
)

// Option configures a Registry.
type Option func(*Registry)

// WithClock sets the clock (default: the system clock).
func WithClock(c Clock) Option { return func(r *Registry) { r.clock = c } }

// WithChecker sets the health checker used for static services with a check.
func WithChecker(c Checker) Option { return func(r *Registry) { r.checker = c } }

// WithLogger sets the logger.
func WithLogger(l hclog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithWatchQueue bounds how many events a watcher may have pending before
// it is dropped (default 256).
func WithWatchQueue(n int) Option { return func(r *Registry) { r.queue = max(n, 1) } }

type key struct{ name, address string }

type entry struct {
	Instance
	check *Check
	// timer is the pending TTL expiry or next health check; gen changes each
	// time it is replaced, so that a timer that fires late does nothing.
	timer Timer
	gen   uint64
}

// Registry is the node's registry of local service instances. It is safe
// for concurrent use.
type Registry struct {
	clock   Clock
	checker Checker
	log     hclog.Logger
	queue   int

	ctx    context.Context // ends on Close, cancelling checks in flight
	cancel context.CancelFunc
	checks sync.WaitGroup

	mu       sync.Mutex
	entries  map[key]*entry
	watchers map[*watcher]struct{}
	gen      uint64
	closed   bool
}

// New returns an empty registry.
func New(opts ...Option) *Registry {
	r := &Registry{
		clock:    realClock{},
		log:      hclog.NewNullLogger(),
		queue:    defaultQueue,
		entries:  make(map[key]*entry),
		watchers: make(map[*watcher]struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// Validate checks that svc can be registered with ttl.
func Validate(svc sdk.Service, ttl time.Duration) error {
	if err := sdk.ValidateName("service name", svc.Name); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(svc.Address)
	if err != nil {
		return fmt.Errorf("service %q: address %q is not HOST:PORT: %v", svc.Name, svc.Address, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("service %q: address %q: port %q is not a number in 1-65535", svc.Name, svc.Address, port)
	}
	if host == "" {
		return fmt.Errorf("service %q: address %q has no host", svc.Name, svc.Address)
	}
	if ttl < 0 {
		return fmt.Errorf("service %q: negative ttl %v", svc.Name, ttl)
	}
	if ttl > 0 && ttl < MinTTL {
		return fmt.Errorf("service %q: ttl %v is shorter than %v: no heartbeat could keep up", svc.Name, ttl, MinTTL)
	}
	return nil
}

// MinTTL is the shortest ttl a registration may have.
const MinTTL = 100 * time.Millisecond

// Register adds or updates an instance. With ttl > 0 the instance must
// heartbeat within every ttl or it is removed; with ttl 0 it stays until
// Deregister. Re-registering an instance is an update: watchers hear of it
// only if its endpoints or metadata changed.
func (r *Registry) Register(svc sdk.Service, ttl time.Duration) error {
	if err := Validate(svc, ttl); err != nil {
		return err
	}
	svc = cloneService(svc)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	k := key{svc.Name, svc.Address}
	e := r.entries[k]
	if e != nil && e.Source == SourceStatic {
		return fmt.Errorf("service %q at %s is %w and cannot be changed through the API", svc.Name, svc.Address, ErrStatic)
	}
	if e == nil {
		e = &entry{Instance: Instance{Service: svc, Source: SourceAPI, Health: HealthNone}}
		r.entries[k] = e
		r.publish(sdk.Create, svc)
	} else if !sameService(e.Service, svc) {
		e.Service = svc
		r.publish(sdk.Update, svc)
	}
	e.TTL = ttl
	r.scheduleExpiry(k, e)
	return nil
}

// Heartbeat postpones the expiry of an instance by its TTL. It fails with
// an error wrapping sdk.ErrNotFound when the instance is not registered
// (it expired, or never was): the caller should register again.
func (r *Registry) Heartbeat(name, address string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	e := r.entries[key{name, address}]
	if e == nil {
		return fmt.Errorf("service %q at %s is not registered: %w", name, address, sdk.ErrNotFound)
	}
	if e.Source == SourceAPI {
		r.scheduleExpiry(key{name, address}, e)
	}
	return nil
}

// Deregister removes an instance registered through the API.
func (r *Registry) Deregister(name, address string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	k := key{name, address}
	e := r.entries[k]
	if e == nil {
		return fmt.Errorf("service %q at %s is not registered: %w", name, address, sdk.ErrNotFound)
	}
	if e.Source == SourceStatic {
		return fmt.Errorf("service %q at %s is %w and cannot be deregistered through the API", name, address, ErrStatic)
	}
	r.remove(k, e)
	return nil
}

// List returns every instance, active or not, sorted by name and address.
func (r *Registry) List() []Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listLocked()
}

func (r *Registry) listLocked() []Instance {
	out := make([]Instance, 0, len(r.entries))
	for _, e := range r.entries {
		inst := e.Instance
		inst.Service = cloneService(inst.Service)
		out = append(out, inst)
	}
	slices.SortFunc(out, func(a, b Instance) int {
		if a.Name != b.Name {
			return strings.Compare(a.Name, b.Name)
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out
}

// Close stops every timer and check and ends every watcher with ErrClosed.
func (r *Registry) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	for _, e := range r.entries {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	for w := range r.watchers {
		w.fail(ErrClosed, false)
	}
	clear(r.watchers)
	r.mu.Unlock()
	r.cancel()
	r.checks.Wait()
}

// scheduleExpiry (re)starts the TTL timer of an API instance.
func (r *Registry) scheduleExpiry(k key, e *entry) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	r.gen++
	e.gen = r.gen
	if e.TTL == 0 {
		e.Expires = time.Time{}
		return
	}
	e.Expires = r.clock.Now().Add(e.TTL)
	gen := e.gen
	e.timer = r.clock.AfterFunc(e.TTL, func() { r.expire(k, gen) })
}

func (r *Registry) expire(k key, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[k]
	if r.closed || e == nil || e.gen != gen {
		return
	}
	r.log.Info("service expired: no heartbeat within its ttl", "service", k.name, "address", k.address, "ttl", e.TTL)
	r.remove(k, e)
}

func (r *Registry) remove(k key, e *entry) {
	if e.timer != nil {
		e.timer.Stop()
	}
	delete(r.entries, k)
	if e.Active() {
		r.publish(sdk.Delete, e.Service)
	}
}

func sameService(a, b sdk.Service) bool {
	return slices.Equal(a.Endpoints, b.Endpoints) && maps.Equal(a.Metadata, b.Metadata)
}

// cloneService copies the slices and maps so that callers cannot change an
// instance behind the registry's back.
func cloneService(s sdk.Service) sdk.Service {
	s.Endpoints = slices.Clone(s.Endpoints)
	s.Metadata = maps.Clone(s.Metadata)
	return s
}
