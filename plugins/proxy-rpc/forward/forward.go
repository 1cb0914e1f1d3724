// Package forward is the proxy's data path: a gRPC stream handler that
// forwards any call, as raw bytes, to an instance of the service it is
// addressed to, or to the next-hop node's proxy for a remote route, failing
// over to the next route when a call fails before any response.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed calls
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/connpool"
	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/plugins/proxy-rpc/routetable"
	"github.com/microhost/microhost/sdk"
)

// Metadata keys the proxy reads and sets.
const (
	// ServiceKey names the service a call is for; a client may set it, and a
	// proxy sets it when it forwards a call to another node.
	ServiceKey = "micro-service"
	// HopsKey counts the proxies a call has passed through between nodes.
	HopsKey = "micro-hops"
)

// DefaultMaxHops bounds forwarding between nodes, so a routing loop ends.
const DefaultMaxHops = 8

// DefaultReplayLimit bounds the request bytes kept for failover beyond the
// first message, which is always kept.
const DefaultReplayLimit = 4 << 20

// Forwarder forwards calls. Its fields must be set before use.
type Forwarder struct {
	Table *routetable.Table
	// Local holds connections to instance addresses.
	Local *connpool.Pool
	// Remote holds connections to next-hop nodes' proxies; nil when this
	// node has no tunnel, and then remote routes are unusable.
	Remote *connpool.Pool
	// MaxHops is the most proxies a call may pass through between nodes.
	MaxHops int
	// ReplayLimit bounds the request bytes buffered for failover.
	ReplayLimit int
	Log         hclog.Logger
}

var anyStream = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Handle is a grpc.StreamHandler for grpc.UnknownServiceHandler: it
// forwards every call the server has no service for.
func (f *Forwarder) Handle(_ any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "proxy: call without a method name")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	hops, err := hopCount(md)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := f.Table.Resolve(routetable.Target{Service: first(md, ServiceKey), Authority: first(md, ":authority"), Method: method})
	switch {
	case errors.Is(err, routetable.ErrUnknownService):
		return status.Errorf(codes.NotFound, "proxy: %v", err)
	case err != nil:
		return status.Errorf(codes.Unavailable, "proxy: %v", err)
	}

	routes := res.Routes
	if hops >= f.maxHops() {
		// One more hop would pass the limit: only local instances remain.
		routes = slices.DeleteFunc(routes, func(r sdk.Route) bool { return r.Link == sdk.LinkNetwork })
		if len(routes) == 0 {
			return status.Errorf(codes.FailedPrecondition, "proxy: call to service %q has passed through %d proxies already (max_hops %d) and this node has no local instance: a routing loop?", res.Service, hops, f.maxHops())
		}
	}

	reqs := newRequests(ss, f.replayLimit())
	defer reqs.stop()
	var last error
	for i, route := range routes {
		retry, err := f.attempt(ctx, ss, reqs, method, md, hops, res.Service, route)
		if !retry {
			return err
		}
		last = err
		f.Log.Debug("route failed before any response", "service", res.Service, "method", method, "route", describe(route), "attempt", i+1, "error", err)
	}
	st := status.Convert(last)
	return status.Errorf(codes.Unavailable, "proxy: service %q: no route answered (%d tried); last: %s", res.Service, len(routes), st.Message())
}

func (f *Forwarder) replayLimit() int {
	if f.ReplayLimit > 0 {
		return f.ReplayLimit
	}
	return DefaultReplayLimit
}

func (f *Forwarder) maxHops() int {
	if f.MaxHops > 0 {
		return f.MaxHops
	}
	return DefaultMaxHops
}

// attempt forwards the call over one route. retry reports that the call
// failed before any response and can go to the next route.
func (f *Forwarder) attempt(ctx context.Context, ss grpc.ServerStream, reqs *requests, method string, in metadata.MD, hops int, service string, route sdk.Route) (retry bool, err error) {
	out := in.Copy()
	delete(out, ":authority")
	delete(out, HopsKey)
	pool, target := f.Local, route.Address
	if route.Link == sdk.LinkNetwork {
		pool, target = f.Remote, route.Gateway
		out.Set(ServiceKey, service)
		out.Set(HopsKey, strconv.Itoa(hops+1))
	}
	if pool == nil {
		return true, status.Errorf(codes.Unavailable, "route %s needs the tunnel, and this proxy has none", describe(route))
	}
	cc, release, err := pool.Get(target)
	if err != nil {
		return true, status.Errorf(codes.Unavailable, "route %s: %v", describe(route), err)
	}
	defer release()

	actx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := cc.NewStream(actx, anyStream, method)
	if err != nil {
		// Nothing reached the instance, so nothing was lost.
		return outcome(ctx, err, true)
	}
	replay := reqs.attach(cs)
	trailer, err := relayResponses(ss, cs, &reqs.committed)
	cancel() // unblocks a send to cs that waits for flow control
	<-replay
	if err == nil && ctx.Err() != nil {
		// The client went away; never report a cancelled call as a success.
		return false, status.FromContextError(ctx.Err()).Err()
	}
	retry, err = outcome(ctx, err, reqs.detach())
	if !retry {
		ss.SetTrailer(trailer)
	}
	return retry, err
}

// outcome turns an attempt's error into the call's result: retry says the
// call may go to the next route, which it does only if it failed with
// Unavailable and the next attempt can be sent all the client sent.
func outcome(ctx context.Context, err error, replayable bool) (retry bool, _ error) {
	if err == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); !ok {
		err = status.Errorf(codes.Unavailable, "proxy: %v", err)
	}
	return replayable && status.Code(err) == codes.Unavailable, err
}

// relayResponses copies the upstream's header, messages and trailer to the
// client. committed is set once anything has been sent to the client, after
// which the call can no longer move to another route.
func relayResponses(ss grpc.ServerStream, cs grpc.ClientStream, committed *atomic.Bool) (metadata.MD, error) {
	// Header is nil when the upstream ended without sending headers.
	if header, _ := cs.Header(); header != nil {
		committed.Store(true)
		if err := ss.SendHeader(header); err != nil {
			return nil, err
		}
	}
	for {
		frame := new(rawcodec.Frame)
		if err := cs.RecvMsg(frame); err != nil {
			if err == io.EOF {
				err = nil
			}
			return cs.Trailer(), err
		}
		committed.Store(true)
		err := ss.SendMsg(frame)
		frame.Free()
		if err != nil {
			return nil, err
		}
	}
}

func hopCount(md metadata.MD) (int, error) {
	v := first(md, HopsKey)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		if len(v) > 32 {
			v = v[:32] + "..." // whatever a client sent, the error stays short
		}
		return 0, fmt.Errorf("proxy: metadata %s=%q is not a hop count", HopsKey, v)
	}
	return n, nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func describe(r sdk.Route) string {
	if r.Link == sdk.LinkNetwork {
		return fmt.Sprintf("via node %s (metric %d)", r.Gateway, r.Metric)
	}
	return fmt.Sprintf("to %s (metric %d)", r.Address, r.Metric)
}
