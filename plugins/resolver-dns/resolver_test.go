package resolverdns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/test/testserver"
	"github.com/miekg/dns"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newResolver(t *testing.T, config map[string]any) *Resolver {
	t.Helper()
	r := New(hclog.NewNullLogger())
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: raw}); diags.HasErrors() {
		t.Fatalf("configure %s: %v", raw, diags.Err())
	}
	if err := r.Health(t.Context()); err != nil {
		t.Fatalf("health after configure: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func addresses(nodes []sdk.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Address)
	}
	return out
}

// peersDNS serves a network of three nodes under SRV and one A/AAAA name.
func peersDNS(t *testing.T, ttl int) *testserver.Dnsmasq {
	return testserver.StartDnsmasq(t, testserver.DnsmasqConfig{
		TTL:   ttl,
		Local: []string{"test"},
		SRV: []testserver.SRV{
			{Name: "_micro._udp.net.test", Target: "a.net.test", Port: 8001, Priority: 10, Weight: 50},
			{Name: "_micro._udp.net.test", Target: "b.net.test", Port: 8002, Priority: 10, Weight: 50},
			{Name: "_micro._udp.net.test", Target: "c.net.test", Port: 8003, Priority: 20, Weight: 1},
			{Name: "_partial._udp.net.test", Target: "a.net.test", Port: 8001, Priority: 1},
			{Name: "_partial._udp.net.test", Target: "missing.net.test", Port: 8009, Priority: 1},
			{Name: "_broken._udp.net.test", Target: "missing.net.test", Port: 8009, Priority: 1},
			{Name: "_off._udp.net.test"}, // target ".": service not offered
		},
		Hosts: []testserver.Host{
			{Name: "a.net.test", Addrs: []string{"10.0.0.1"}},
			{Name: "b.net.test", Addrs: []string{"10.0.0.2", "fd00::2"}},
			{Name: "c.net.test", Addrs: []string{"10.0.0.3"}},
			{Name: "peers.net.test", Addrs: []string{"10.1.0.1", "10.1.0.2", "fd00::1:1"}},
		},
		Forward: map[string]string{
			// Nothing listens there: dnsmasq never answers for slow.test.
			"slow.test": fmt.Sprintf("127.0.0.1#%d", freePort(t)),
		},
	})
}

func freePort(t *testing.T) int {
	p, err := testserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolveSRV(t *testing.T) {
	srv := peersDNS(t, 60)
	r := newResolver(t, map[string]any{"name": "_micro._udp.net.test", "server": srv.Addr()})
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	got := addresses(nodes)
	want := []string{"10.0.0.1:8001", "10.0.0.2:8002", "[fd00::2]:8002", "10.0.0.3:8003"}
	if !sameSet(got, want) {
		t.Fatalf("nodes %v, want %v in some order", got, want)
	}
	// Priority 10 targets (in weighted order) come before the priority 20 one.
	last := nodes[len(nodes)-1]
	if last.Address != "10.0.0.3:8003" || last.Priority != 20 {
		t.Errorf("last node %+v, want 10.0.0.3:8003 at priority 20", last)
	}
	for _, n := range nodes[:3] {
		if n.Priority != 10 {
			t.Errorf("node %+v, want priority 10", n)
		}
	}
	// b's two addresses stay together: they are one SRV record.
	ib, ib6 := slices.Index(got, "10.0.0.2:8002"), slices.Index(got, "[fd00::2]:8002")
	if ib6 != ib+1 {
		t.Errorf("addresses of one target split: %v", got)
	}
}

// unbound answers SRV from local data without additional records, so the
// targets are looked up with A/AAAA queries of their own.
func TestResolveSRVFollowUpQueries(t *testing.T) {
	ub := testserver.StartUnbound(t, testserver.UnboundConfig{
		StaticZones: []string{"test"},
		LocalData: []string{
			"_micro._udp.net.test. 60 IN SRV 5 1 9001 x.net.test.",
			"_micro._udp.net.test. 60 IN SRV 1 1 9002 y.net.test.",
			"x.net.test. 60 IN A 10.2.0.1",
			"y.net.test. 60 IN AAAA fd00::2:2",
		},
	})
	r := newResolver(t, map[string]any{"name": "_micro._udp.net.test", "server": ub.Addr()})
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Node{{Address: "[fd00::2:2]:9002", Priority: 1}, {Address: "10.2.0.1:9001", Priority: 5}}
	if !slices.Equal(nodes, want) {
		t.Fatalf("nodes %+v, want %+v", nodes, want)
	}
}

func TestResolveA(t *testing.T) {
	srv := peersDNS(t, 60)
	r := newResolver(t, map[string]any{"name": "peers.net.test", "port": 7000, "server": srv.Addr()})
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.1:7000", "10.1.0.2:7000", "[fd00::1:1]:7000"}
	if got := addresses(nodes); !sameSet(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
}

func TestResolveSRVPartialTargets(t *testing.T) {
	srv := peersDNS(t, 60)
	r := newResolver(t, map[string]any{"name": "_partial._udp.net.test", "server": srv.Addr()})
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	if got := addresses(nodes); !slices.Equal(got, []string{"10.0.0.1:8001"}) {
		t.Fatalf("nodes %v, want only the target that resolves", got)
	}
}

func TestResolveErrors(t *testing.T) {
	dm := peersDNS(t, 60)
	ub := testserver.StartUnbound(t, testserver.UnboundConfig{
		StaticZones:   []string{"test"},
		LocalData:     []string{"txtonly.test. 60 IN TXT \"no addresses here\""},
		ServfailZones: []string{"broken.example"},
	})
	cases := []struct {
		name     string
		config   map[string]any
		is       error
		contains []string
	}{
		{"nxdomain", map[string]any{"name": "_nobody._udp.net.test", "server": dm.Addr()},
			ErrNXDomain, []string{"SRV _nobody._udp.net.test.", dm.Addr(), "NXDOMAIN"}},
		{"nxdomain A", map[string]any{"name": "nobody.net.test", "port": 1, "server": dm.Addr()},
			ErrNXDomain, []string{"A nobody.net.test.", dm.Addr(), "NXDOMAIN"}},
		{"no records", map[string]any{"name": "txtonly.test", "port": 1, "server": ub.Addr()},
			ErrNoRecords, []string{"txtonly.test.", ub.Addr(), "no records"}},
		{"servfail", map[string]any{"name": "_p._tcp.broken.example", "server": ub.Addr()},
			ErrServFail, []string{"SRV _p._tcp.broken.example.", ub.Addr(), "SERVFAIL"}},
		{"timeout", map[string]any{"name": "_p._tcp.slow.test", "server": dm.Addr(), "timeout": "300ms"},
			ErrTimeout, []string{"SRV _p._tcp.slow.test.", dm.Addr(), "300ms"}},
		{"target without address", map[string]any{"name": "_broken._udp.net.test", "server": dm.Addr()},
			ErrNXDomain, []string{"missing.net.test", dm.Addr()}},
		{"service not offered", map[string]any{"name": "_off._udp.net.test", "server": dm.Addr()},
			ErrNoService, []string{"_off._udp.net.test.", dm.Addr()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newResolver(t, c.config)
			nodes, err := r.Resolve(t.Context(), "net")
			if err == nil {
				t.Fatalf("got nodes %v, want an error", nodes)
			}
			if !errors.Is(err, c.is) {
				t.Errorf("error %q is not %q", err, c.is)
			}
			for _, s := range c.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			t.Log(err)
		})
	}
}

func TestNotFoundMatchesSDK(t *testing.T) {
	if !errors.Is(&QueryError{Err: ErrNXDomain}, sdk.ErrNotFound) || !errors.Is(ErrNoRecords, sdk.ErrNotFound) {
		t.Error("NXDOMAIN and no-records errors must match sdk.ErrNotFound")
	}
	if errors.Is(ErrServFail, sdk.ErrNotFound) {
		t.Error("SERVFAIL is not a not-found")
	}
}

// The cache keeps an answer exactly as long as its TTL says (fake clock).
func TestCacheHonoursTTL(t *testing.T) {
	srv := peersDNS(t, 60)
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	r := New(hclog.NewNullLogger())
	r.now = clock.Now
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(
		fmt.Sprintf(`{"name":"peers.net.test","port":7000,"server":%q}`, srv.Addr()))}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	first, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	srv.SetHosts(t, []testserver.Host{{Name: "peers.net.test", Addrs: []string{"10.9.9.9"}}})
	waitServed(t, srv.Addr(), "peers.net.test.", "10.9.9.9")

	clock.Advance(59 * time.Second)
	cached, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(addresses(cached), addresses(first)) {
		t.Fatalf("within the TTL got %v, want the cached %v", addresses(cached), addresses(first))
	}
	clock.Advance(time.Second)
	fresh, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	if got := addresses(fresh); !slices.Equal(got, []string{"10.9.9.9:7000"}) {
		t.Fatalf("after the TTL got %v, want [10.9.9.9:7000]", got)
	}
}

// A record changed on the live server is seen once its 1 s TTL runs out.
func TestRecordChangeSeenAfterTTL(t *testing.T) {
	srv := peersDNS(t, 1)
	r := newResolver(t, map[string]any{"name": "_micro._udp.net.test", "server": srv.Addr()})
	nodes, err := r.Resolve(t.Context(), "net")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addresses(nodes), "10.0.0.3:8003") {
		t.Fatalf("nodes %v lack c.net.test", addresses(nodes))
	}
	srv.SetHosts(t, []testserver.Host{
		{Name: "a.net.test", Addrs: []string{"10.0.0.1"}},
		{Name: "b.net.test", Addrs: []string{"10.0.0.2"}},
		{Name: "c.net.test", Addrs: []string{"10.0.0.33"}},
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		nodes, err = r.Resolve(t.Context(), "net")
		if err == nil && slices.Contains(addresses(nodes), "10.0.0.33:8003") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("moved target not seen in 10s: nodes %v, err %v", addresses(nodes), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestResolveBeforeConfigureAndAfterClose(t *testing.T) {
	r := New(hclog.NewNullLogger())
	if err := r.Health(t.Context()); err == nil {
		t.Error("health of an unconfigured resolver is nil")
	}
	if _, err := r.Resolve(t.Context(), "net"); err == nil {
		t.Error("resolve before configure succeeded")
	}
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{"name":"_a._udp.test","server":"127.0.0.1:1"}`)}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	r.Close()
	if _, err := r.Resolve(t.Context(), "net"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("resolve after close: %v", err)
	}
}

// waitServed polls the server until it answers name with addr.
func waitServed(t *testing.T, server, name, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		resp, err := dns.ExchangeContext(context.Background(), m, server)
		if err == nil {
			for _, rr := range resp.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == addr {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve %s %s after 10s (last: %v, %v)", server, name, addr, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
