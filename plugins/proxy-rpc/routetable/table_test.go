package routetable

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
)

func local(service, addr string, metric int64, endpoints ...string) sdk.Route {
	return sdk.Route{Service: service, Address: addr, Link: sdk.LinkLocal, Metric: metric, Router: "n1", Endpoints: endpoints}
}

func remote(service, gateway string, metric int64) sdk.Route {
	return sdk.Route{Service: service, Gateway: gateway, Link: sdk.LinkNetwork, Metric: metric, Router: "n9"}
}

func apply(t *testing.T, tab *Table, typ sdk.EventType, r sdk.Route) {
	t.Helper()
	if err := tab.Apply(sdk.Event{Type: typ, Route: r}); err != nil {
		t.Fatal(err)
	}
}

func addrs(rs []sdk.Route) string {
	var out []string
	for _, r := range rs {
		if r.Link == sdk.LinkNetwork {
			out = append(out, "via:"+r.Gateway)
		} else {
			out = append(out, r.Address)
		}
	}
	return strings.Join(out, ",")
}

func TestResolveOrderAndPrecedence(t *testing.T) {
	tab := New()
	apply(t, tab, sdk.Create, remote("greeter", "n2", 5))
	apply(t, tab, sdk.Create, local("greeter", "10.0.0.2:1", 20, "hello.Greeter"))
	apply(t, tab, sdk.Create, local("other", "10.0.0.3:1", 1, "hello.Other"))

	// The explicit service wins over authority and method.
	res, err := tab.Resolve(Target{Service: "greeter", Authority: "other:9090", Method: "/hello.Other/X"})
	if err != nil || res.Service != "greeter" {
		t.Fatalf("got %+v, %v", res, err)
	}
	if got := addrs(res.Routes); got != "via:n2,10.0.0.2:1" {
		t.Fatalf("routes not lowest metric first: %s", got)
	}
	// The authority's host part names a known service.
	res, err = tab.Resolve(Target{Authority: "other:9090", Method: "/hello.Greeter/Hi"})
	if err != nil || res.Service != "other" {
		t.Fatalf("authority: got %+v, %v", res, err)
	}
	// An authority that is no service falls through to the method.
	res, err = tab.Resolve(Target{Authority: "127.0.0.1:9090", Method: "/hello.Greeter/Hi"})
	if err != nil || res.Service != "greeter" {
		t.Fatalf("method: got %+v, %v", res, err)
	}
	// A service named like the gRPC service also matches.
	apply(t, tab, sdk.Create, local("pkg.Named", "10.0.0.4:1", 1))
	res, err = tab.Resolve(Target{Method: "/pkg.Named/Call"})
	if err != nil || res.Service != "pkg.Named" {
		t.Fatalf("named: got %+v, %v", res, err)
	}
}

func TestResolveErrorsNameWhatWasSought(t *testing.T) {
	tab := New()
	_, err := tab.Resolve(Target{Service: "ghost"})
	if !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), `"ghost"`) {
		t.Fatalf("explicit: %v", err)
	}
	_, err = tab.Resolve(Target{Authority: "localhost:1", Method: "/a.B/C"})
	if !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), `"a.B"`) {
		t.Fatalf("method: %v", err)
	}
	_, err = tab.Resolve(Target{Method: "bogus"})
	if !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("bad method: %v", err)
	}
}

// TestIncompleteRoutesAreUnusable: routes without the address or gateway
// a call needs are skipped. A route whose Expires has passed is still
// used: the router renews routes without telling watchers and withdraws
// the ones that really expire.
func TestIncompleteRoutesAreUnusable(t *testing.T) {
	tab := New()
	apply(t, tab, sdk.Create, sdk.Route{Service: "svc", Link: sdk.LinkNetwork, Metric: 1}) // no gateway
	_, err := tab.Resolve(Target{Service: "svc"})
	if !errors.Is(err, ErrNoRoute) || !strings.Contains(err.Error(), `"svc"`) {
		t.Fatalf("a route without a gateway: %v", err)
	}
	r := remote("svc", "n2", 3)
	r.Expires = time.Unix(1000, 0) // long past
	apply(t, tab, sdk.Create, r)
	res, err := tab.Resolve(Target{Service: "svc"})
	if err != nil || len(res.Routes) != 1 || res.Routes[0].Gateway != "n2" {
		t.Fatalf("a renewed route the watch last saw with an old expiry: %+v, %v", res, err)
	}
}

func TestUpdateDeleteAndResync(t *testing.T) {
	tab := New()
	a, b := local("svc", "a:1", 10), local("svc", "b:1", 20)
	apply(t, tab, sdk.Create, a)
	apply(t, tab, sdk.Create, b)
	b.Metric = 5
	apply(t, tab, sdk.Update, b) // same route (hash ignores metric), now better
	res, _ := tab.Resolve(Target{Service: "svc"})
	if got := addrs(res.Routes); got != "b:1,a:1" {
		t.Fatalf("after update: %s", got)
	}
	apply(t, tab, sdk.Delete, b)
	res, _ = tab.Resolve(Target{Service: "svc"})
	if got := addrs(res.Routes); got != "a:1" {
		t.Fatalf("after delete: %s", got)
	}
	if err := tab.Apply(sdk.Event{Type: sdk.Resync, Snapshot: []sdk.Route{local("new", "c:1", 1)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Resolve(Target{Service: "svc"}); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("resync kept old routes: %v", err)
	}
	if _, err := tab.Resolve(Target{Service: "new"}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Apply(sdk.Event{Type: sdk.EventType(42)}); err == nil {
		t.Fatal("unknown event type accepted")
	}
}

func TestEqualMetricRoutesRotate(t *testing.T) {
	tab := New()
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		apply(t, tab, sdk.Create, local("svc", a, 1))
	}
	apply(t, tab, sdk.Create, local("svc", "slow:1", 9))
	firsts := map[string]int{}
	for range 30 {
		res, err := tab.Resolve(Target{Service: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Routes) != 4 || res.Routes[3].Address != "slow:1" {
			t.Fatalf("worse route moved: %s", addrs(res.Routes))
		}
		firsts[res.Routes[0].Address]++
	}
	if firsts["a:1"] != 10 || firsts["b:1"] != 10 || firsts["c:1"] != 10 {
		t.Fatalf("calls not spread over equal routes: %v", firsts)
	}
}

func TestTargets(t *testing.T) {
	tab := New()
	tab.Replace([]sdk.Route{local("s", "a:1", 1), remote("s", "n2", 3)})
	addresses, gateways := tab.Targets()
	if !addresses["a:1"] || !gateways["n2"] || len(addresses) != 1 || len(gateways) != 1 {
		t.Fatalf("targets: %v %v", addresses, gateways)
	}
}

func TestMethodService(t *testing.T) {
	for in, want := range map[string]string{"/a.B/C": "a.B", "/grpc.testing.TestService/EmptyCall": "grpc.testing.TestService"} {
		if got, ok := MethodService(in); !ok || got != want {
			t.Errorf("MethodService(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "/", "a.B/C", "/a.B", "/a.B/", "//C", "/a/b/c"} {
		if _, ok := MethodService(in); ok {
			t.Errorf("MethodService(%q) accepted", in)
		}
	}
}
