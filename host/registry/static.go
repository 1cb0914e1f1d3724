package registry

import (
	"context"
	"fmt"

	"github.com/microhost/microhost/sdk"
)

// AddStatic adds a service declared in the config. Without a check it is
// active at once and for good. With a check it becomes active when a check
// passes and inactive (watchers see a Delete) when one fails; the first
// check runs straight away, then one every interval.
func (r *Registry) AddStatic(svc sdk.Service, check *Check) error {
	if err := Validate(svc, 0); err != nil {
		return err
	}
	if check != nil {
		if r.checker == nil {
			return fmt.Errorf("service %q: has a health check but the registry has no checker", svc.Name)
		}
		if check.Interval < 0 || check.Timeout < 0 {
			return fmt.Errorf("service %q: check interval and timeout must not be negative", svc.Name)
		}
		c := *check
		if c.Interval == 0 {
			c.Interval = defaultCheckInterval
		}
		if c.Timeout == 0 {
			c.Timeout = defaultCheckTimeout
		}
		check = &c
	}
	svc = cloneService(svc)
	k := key{svc.Name, svc.Address}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if old := r.entries[k]; old != nil {
		return fmt.Errorf("service %q at %s is already registered (%s)", svc.Name, svc.Address, old.Source)
	}
	e := &entry{Instance: Instance{Service: svc, Source: SourceStatic, Health: HealthNone}, check: check}
	r.entries[k] = e
	if check == nil {
		r.publish(sdk.Create, svc)
		return nil
	}
	e.Health = HealthPending
	r.gen++
	e.gen = r.gen
	r.startCheck(k, e.gen)
	return nil
}

// startCheck runs one health check in the background. r.mu is held.
func (r *Registry) startCheck(k key, gen uint64) {
	r.checks.Add(1)
	go func() {
		defer r.checks.Done()
		r.runCheck(k, gen)
	}()
}

func (r *Registry) runCheck(k key, gen uint64) {
	r.mu.Lock()
	e := r.entries[k]
	if r.closed || e == nil || e.gen != gen {
		r.mu.Unlock()
		return
	}
	check := *e.check
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.ctx, check.Timeout)
	err := r.checker(ctx, k.address, check.GRPCService)
	cancel()

	r.mu.Lock()
	defer r.mu.Unlock()
	e = r.entries[k]
	if r.closed || e == nil || e.gen != gen {
		return
	}
	r.applyCheck(e, err)
	e.timer = r.clock.AfterFunc(check.Interval, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.closed {
			r.startCheck(k, gen)
		}
	})
}

// applyCheck records a check result and tells watchers when it changes
// whether the instance is active. r.mu is held.
func (r *Registry) applyCheck(e *entry, err error) {
	was, before := e.Active(), e.Health
	if err == nil {
		e.Health, e.LastError = HealthPassing, ""
	} else {
		e.Health, e.LastError = HealthCritical, err.Error()
	}
	switch {
	case e.Active() && !was:
		r.log.Info("service is healthy: registered", "service", e.Name, "address", e.Address)
		r.publish(sdk.Create, e.Service)
	case was && !e.Active():
		r.log.Warn("service is unhealthy: deregistered", "service", e.Name, "address", e.Address, "error", err)
		r.publish(sdk.Delete, e.Service)
	case before == HealthPending && err != nil:
		r.log.Warn("service is unhealthy: not registered until a check passes", "service", e.Name, "address", e.Address, "error", err)
	}
}
