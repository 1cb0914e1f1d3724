package memtunnel

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/microhost/microhost/sdk"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func nodes(t *testing.T, f *Fabric, ids ...string) []*Node {
	t.Helper()
	var out []*Node
	for _, id := range ids {
		n, err := f.NewNode(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		out = append(out, n)
	}
	return out
}

func mustLink(t *testing.T, f *Fabric, a, b string) {
	t.Helper()
	if err := f.Link(a, b); err != nil {
		t.Fatal(err)
	}
}

func recvBody(t *testing.T, s sdk.Session) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	m, err := s.Recv(ctx)
	if err != nil {
		t.Fatalf("recv on %s: %v", s.ID(), err)
	}
	return string(m.Body)
}

func send(t *testing.T, s sdk.Session, body string) {
	t.Helper()
	if err := s.Send(t.Context(), &sdk.Message{Header: map[string]string{"k": "v"}, Body: []byte(body)}); err != nil {
		t.Fatalf("send on %s: %v", s.ID(), err)
	}
}

func accept(t *testing.T, l sdk.Listener) sdk.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := l.Accept(ctx)
	if err != nil {
		t.Fatalf("accept on %s: %v", l.Channel(), err)
	}
	return s
}

func TestUnicastRoundTripAndEOF(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	l, err := n[0].Listen(t.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := n[1].Dial(t.Context(), "echo", sdk.DialOptions{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Peer() != "a" || c.Mode() != sdk.Unicast || c.Channel() != "echo" {
		t.Fatalf("dialled session: peer %q mode %v channel %q", c.Peer(), c.Mode(), c.Channel())
	}
	send(t, c, "ping")
	s := accept(t, l)
	defer s.Close()
	if s.Peer() != "b" {
		t.Fatalf("accepted session peer = %q, want b", s.Peer())
	}
	if got := recvBody(t, s); got != "ping" {
		t.Fatalf("got %q", got)
	}
	send(t, s, "pong")
	if got := recvBody(t, c); got != "pong" {
		t.Fatalf("got %q", got)
	}
	if err := c.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(t.Context()); err != io.EOF {
		t.Fatalf("recv after CloseSend = %v, want io.EOF", err)
	}
	if err := c.Send(t.Context(), &sdk.Message{}); err == nil {
		t.Fatal("send after CloseSend succeeded")
	}
	// The other half still works.
	send(t, s, "late")
	if got := recvBody(t, c); got != "late" {
		t.Fatalf("got %q", got)
	}
	s.Close()
	if err := c.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

func TestDialFailsFast(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b", "c")
	mustLink(t, f, "a", "b")
	if _, err := n[0].Dial(t.Context(), "nobody", sdk.DialOptions{}); err == nil {
		t.Fatal("dial to a channel nobody listens on succeeded")
	}
	l, _ := n[2].Listen(t.Context(), "x")
	defer l.Close()
	if _, err := n[0].Dial(t.Context(), "x", sdk.DialOptions{Node: "c"}); err == nil {
		t.Fatal("dial to an unlinked node succeeded")
	}
	if _, err := n[0].Dial(t.Context(), "x", sdk.DialOptions{Node: "b"}); err == nil {
		t.Fatal("dial to a node not listening succeeded")
	}
}

func TestUnicastPicksLowestRTT(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b", "c")
	mustLink(t, f, "a", "b")
	mustLink(t, f, "a", "c")
	if err := f.SetRTT("a", "b", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := f.SetRTT("a", "c", 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, x := range n[1:] {
		l, _ := x.Listen(t.Context(), "svc")
		defer l.Close()
	}
	s, err := n[0].Dial(t.Context(), "svc", sdk.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Peer() != "c" {
		t.Fatalf("best link peer = %q, want c (lower RTT)", s.Peer())
	}
}

func TestMulticastReachesListeningPeers(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "hub", "b", "c", "d", "e")
	for _, id := range []string{"b", "c", "d"} {
		mustLink(t, f, "hub", id)
	}
	var ls []sdk.Listener
	for _, x := range n[1:] {
		l, _ := x.Listen(t.Context(), "control")
		defer l.Close()
		ls = append(ls, l)
	}
	d := n[3]
	ls[2].Close() // d stops listening
	ls[2], _ = d.Listen(t.Context(), "other")
	defer ls[2].Close()

	m, err := n[0].Dial(t.Context(), "control", sdk.DialOptions{Mode: sdk.Multicast})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Peer() != "" {
		t.Fatalf("outbound multicast peer = %q, want empty", m.Peer())
	}
	send(t, m, "one")
	for _, l := range ls[:2] {
		s := accept(t, l)
		defer s.Close()
		if s.Peer() != "hub" {
			t.Fatalf("peer = %q, want hub", s.Peer())
		}
		if got := recvBody(t, s); got != "one" {
			t.Fatalf("got %q", got)
		}
		// A reply goes back to the sender.
		send(t, s, "ack-"+l.Channel())
		if got := recvBody(t, m); got != "ack-control" {
			t.Fatalf("reply = %q", got)
		}
	}
	// A peer linked later gets the next message.
	mustLink(t, f, "e", "hub")
	send(t, m, "two")
	se := accept(t, ls[3])
	defer se.Close()
	if got := recvBody(t, se); got != "two" {
		t.Fatalf("late peer got %q", got)
	}
	if err := m.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := se.Recv(t.Context()); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want io.EOF", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if s, err := ls[2].Accept(ctx); err == nil {
		t.Fatalf("node listening on another channel got session %s", s.ID())
	}
}

func TestClosingInboundSessionKeepsListener(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	l, _ := n[1].Listen(t.Context(), "network")
	defer l.Close()
	m, _ := n[0].Dial(t.Context(), "network", sdk.DialOptions{Mode: sdk.Multicast})
	defer m.Close()
	send(t, m, "1")
	s := accept(t, l)
	recvBody(t, s)
	s.Close()
	send(t, m, "2")
	s2 := accept(t, l)
	defer s2.Close()
	if got := recvBody(t, s2); got != "2" {
		t.Fatalf("got %q", got)
	}
}

func TestUnlinkBreaksSessions(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	lu, _ := n[1].Listen(t.Context(), "u")
	defer lu.Close()
	lm, _ := n[1].Listen(t.Context(), "m")
	defer lm.Close()
	u, err := n[0].Dial(t.Context(), "u", sdk.DialOptions{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	su := accept(t, lu)
	defer su.Close()
	m, _ := n[0].Dial(t.Context(), "m", sdk.DialOptions{Mode: sdk.Multicast})
	defer m.Close()
	send(t, m, "x")
	sm := accept(t, lm)
	defer sm.Close()
	recvBody(t, sm)

	if err := f.Unlink("a", "b"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []sdk.Session{u, su, sm} {
		if _, err := s.Recv(t.Context()); !errors.Is(err, ErrLinkDown) {
			t.Fatalf("%s recv after unlink = %v, want ErrLinkDown", s.ID(), err)
		}
	}
	if err := u.Send(t.Context(), &sdk.Message{}); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("send after unlink = %v", err)
	}
	links, _ := n[0].Links(t.Context())
	if len(links) != 0 {
		t.Fatalf("links after unlink: %v", links)
	}
	// Relinking gives the multicast sender a fresh session at b.
	mustLink(t, f, "a", "b")
	send(t, m, "y")
	s2 := accept(t, lm)
	defer s2.Close()
	if got := recvBody(t, s2); got != "y" {
		t.Fatalf("got %q", got)
	}
}

func TestBoundedQueueCountsDrops(t *testing.T) {
	f := NewFabric(WithQueueSize(2))
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	l, _ := n[1].Listen(t.Context(), "m")
	defer l.Close()
	m, _ := n[0].Dial(t.Context(), "m", sdk.DialOptions{Mode: sdk.Multicast})
	defer m.Close()
	for i := range 5 {
		send(t, m, string(rune('0'+i)))
	}
	st := f.Stats()
	if st.Delivered != 2 || st.Dropped != 3 {
		t.Fatalf("stats %+v, want 2 delivered and 3 dropped", st)
	}
	links, _ := n[1].Links(t.Context())
	if len(links) != 1 || links[0].Drops != 3 {
		t.Fatalf("receiver links %+v, want 3 drops", links)
	}
	s := accept(t, l)
	defer s.Close()
	if a, b := recvBody(t, s), recvBody(t, s); a != "0" || b != "1" {
		t.Fatalf("kept %q %q, want the oldest two", a, b)
	}
}

func TestUnicastWaitsInsteadOfDropping(t *testing.T) {
	f := NewFabric(WithQueueSize(1))
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	l, _ := n[1].Listen(t.Context(), "u")
	defer l.Close()
	u, _ := n[0].Dial(t.Context(), "u", sdk.DialOptions{Node: "b"})
	defer u.Close()
	send(t, u, "1")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := u.Send(ctx, &sdk.Message{Body: []byte("2")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send to a full unicast queue = %v, want deadline exceeded", err)
	}
	if f.Stats().Dropped != 0 {
		t.Fatal("unicast dropped a message")
	}
}

func TestFilterDropsBetweenTwoNodes(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b", "c")
	mustLink(t, f, "a", "b")
	mustLink(t, f, "a", "c")
	f.SetFilter(func(from, to, channel string) bool { return !(from == "a" && to == "b") })
	lb, _ := n[1].Listen(t.Context(), "m")
	defer lb.Close()
	lc, _ := n[2].Listen(t.Context(), "m")
	defer lc.Close()
	m, _ := n[0].Dial(t.Context(), "m", sdk.DialOptions{Mode: sdk.Broadcast})
	defer m.Close()
	send(t, m, "x")
	sc := accept(t, lc)
	defer sc.Close()
	recvBody(t, sc)
	if st := f.Stats(); st.Filtered != 1 || st.Delivered != 1 {
		t.Fatalf("stats %+v, want 1 filtered, 1 delivered", st)
	}
	f.SetFilter(nil)
	send(t, m, "y")
	sb := accept(t, lb)
	defer sb.Close()
	if got := recvBody(t, sb); got != "y" {
		t.Fatalf("got %q", got)
	}
}

func TestConnectBeforeNodeExistsAndLinks(t *testing.T) {
	f := NewFabric(WithRTT(3 * time.Millisecond))
	n := nodes(t, f, "a")
	if err := n[0].Connect(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := n[0].Connect(t.Context(), ""); err == nil {
		t.Fatal("connect to an empty address succeeded")
	}
	b := nodes(t, f, "b")[0]
	l, _ := b.Listen(t.Context(), "network")
	defer l.Close()
	links, err := n[0].Links(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 {
		t.Fatalf("links = %+v", links)
	}
	got := links[0]
	if got.Peer != "b" || !got.Outbound || got.State != sdk.LinkUp || got.RTT != 3*time.Millisecond ||
		len(got.Channels) != 1 || got.Channels[0] != "network" {
		t.Fatalf("link = %+v", got)
	}
	if err := n[0].Disconnect(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if f.Linked("a", "b") {
		t.Fatal("still linked after Disconnect")
	}
}

func TestNodeCloseAndComponent(t *testing.T) {
	f := NewFabric()
	n := nodes(t, f, "a", "b")
	mustLink(t, f, "a", "b")
	if n[0].Info().Kind != sdk.KindTunnel || len(n[0].Schema().Attributes) == 0 {
		t.Fatal("info or schema empty")
	}
	if d := n[0].Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{"queue_size":0}`)}); !d.HasErrors() || d[0].Attribute != "queue_size" {
		t.Fatalf("bad queue_size accepted: %v", d)
	}
	if d := n[0].Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{"queue_size":8}`)}); d.HasErrors() {
		t.Fatal(d.Err())
	}
	l, _ := n[0].Listen(t.Context(), "x")
	if err := n[0].Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	n[0].Close()
	if err := n[0].Health(t.Context()); err == nil {
		t.Fatal("closed node healthy")
	}
	if _, err := l.Accept(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept on closed node = %v", err)
	}
	if f.Linked("a", "b") || f.Node("a") != nil {
		t.Fatal("closed node still on the fabric")
	}
	if _, err := f.NewNode("a"); err != nil {
		t.Fatalf("id not reusable after close: %v", err)
	}
	if _, err := f.NewNode("b"); err == nil {
		t.Fatal("duplicate id accepted")
	}
}
