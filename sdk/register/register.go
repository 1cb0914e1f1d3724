// Package register keeps a Go gRPC service registered with its local
// microhost node, so that every node of the network can route calls to it.
//
//	go register.Service(ctx, "127.0.0.1:8086", "greeter", "127.0.0.1:50051", grpcServer)
package register

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
)

const (
	// DefaultTTL is how long the node keeps the instance without a heartbeat.
	DefaultTTL = 30 * time.Second
	// deregisterTimeout bounds the goodbye once ctx has ended.
	deregisterTimeout = 5 * time.Second
	minRetry          = 200 * time.Millisecond
	maxRetry          = 5 * time.Second
)

type options struct {
	ttl       time.Duration
	metadata  map[string]string
	endpoints []string
	log       hclog.Logger
}

// Option changes how Service registers.
type Option func(*options)

// WithTTL sets the TTL (default DefaultTTL); Service heartbeats three times
// per TTL, so that one lost heartbeat does not expire the instance.
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithMetadata attaches metadata to the instance.
func WithMetadata(md map[string]string) Option {
	return func(o *options) { o.metadata = maps.Clone(md) }
}

// WithEndpoints adds gRPC service names to those found on the server.
func WithEndpoints(names ...string) Option {
	return func(o *options) { o.endpoints = append(o.endpoints, names...) }
}

// WithLogger sets where progress and trouble are logged (default: stderr).
func WithLogger(l hclog.Logger) Option { return func(o *options) { o.log = l } }

// Endpoints returns the gRPC service names registered on s, sorted, leaving
// out gRPC's own services (health, reflection, ...: names under "grpc."),
// which every server may serve and which so name no service in particular.
func Endpoints(s *grpc.Server) []string {
	if s == nil {
		return nil
	}
	var out []string
	for name := range s.GetServiceInfo() {
		if !strings.HasPrefix(name, "grpc.") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Service registers the instance name at address with the node whose admin
// API is at adminAddr ("HOST:PORT" or "unix:/path"), with the endpoints
// served by server (may be nil), and keeps it registered until ctx ends:
// it heartbeats, registers again when the node has lost the instance (a
// node restart), and retries with backoff while the node is unreachable.
// When ctx ends it deregisters and returns nil. It returns an error at once
// for an admin address or registration the node rejects.
func Service(ctx context.Context, adminAddr, name, address string, server *grpc.Server, opts ...Option) error {
	o := options{ttl: DefaultTTL}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = hclog.New(&hclog.LoggerOptions{Name: "microhost-register"})
	}
	if o.ttl <= 0 {
		return fmt.Errorf("register %s: ttl must be positive, got %v", name, o.ttl)
	}
	endpoints := append(Endpoints(server), o.endpoints...)
	slices.Sort(endpoints)
	svc := sdk.Service{Name: name, Address: address, Endpoints: slices.Compact(endpoints), Metadata: o.metadata}

	c, err := admin.Dial(adminAddr)
	if err != nil {
		return fmt.Errorf("register %s: %w", name, err)
	}
	defer c.Close()
	log := o.log.With("service", name, "address", address, "admin", adminAddr)

	err = keep(ctx, c, svc, o.ttl, log)
	if ctx.Err() == nil {
		return fmt.Errorf("register %s: %w", name, err)
	}
	bye, cancel := context.WithTimeout(context.WithoutCancel(ctx), deregisterTimeout)
	defer cancel()
	if err := c.Deregister(bye, name, address); err != nil && !errors.Is(err, sdk.ErrNotFound) {
		log.Warn("could not deregister; the node drops the instance when its ttl runs out", "error", err)
	}
	return nil
}

// keep registers svc and heartbeats until ctx ends or the node rejects it.
func keep(ctx context.Context, c *admin.Client, svc sdk.Service, ttl time.Duration, log hclog.Logger) error {
	registered := false
	retry := minRetry
	for {
		var err error
		if registered {
			err = c.Heartbeat(ctx, svc.Name, svc.Address)
			if errors.Is(err, sdk.ErrNotFound) {
				log.Info("the node lost the instance; registering again")
				registered = false
				err = nil
				continue
			}
		} else {
			err = c.Register(ctx, svc, ttl)
			if err == nil {
				log.Info("registered", "endpoints", svc.Endpoints, "ttl", ttl)
				registered = true
			}
		}
		if errors.Is(err, admin.ErrRejected) {
			return err
		}
		wait := ttl / 3
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("cannot reach the node; retrying", "error", err, "in", retry)
			wait, retry = retry, min(retry*2, maxRetry)
		} else {
			retry = minRetry
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
