package quictun

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func recvText(t *testing.T, s Session) string {
	t.Helper()
	m, err := s.Recv(ctxT(t))
	if err != nil {
		t.Fatalf("recv on %s: %v", s.ID(), err)
	}
	return string(m.Body)
}

func send(t *testing.T, s Session, body string) {
	t.Helper()
	if err := s.Send(ctxT(t), &Message{Header: map[string]string{"k": "v"}, Body: []byte(body)}); err != nil {
		t.Fatalf("send on %s: %v", s.ID(), err)
	}
}

func accept(t *testing.T, ls *Listener) Session {
	t.Helper()
	s, err := ls.Accept(ctxT(t))
	if err != nil {
		t.Fatalf("accept on %q: %v", ls.Channel(), err)
	}
	return s
}

// echoOnce checks a unicast round trip from dialler to the listener's node,
// including half-close in both directions.
func echoOnce(t *testing.T, dialler, listener *testNode, channel string) {
	ls, err := listener.Listen(channel)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	waitListening(t, dialler, listener.ID(), channel)
	s, err := dialler.Dial(ctxT(t), channel, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Peer() != listener.ID() {
		t.Fatalf("dialled session peer %q, want %q", s.Peer(), listener.ID())
	}
	send(t, s, "ping")
	in := accept(t, ls)
	defer in.Close()
	if in.Peer() != dialler.ID() || in.Channel() != channel || in.Mode() != Unicast {
		t.Fatalf("accepted session peer=%q channel=%q mode=%v", in.Peer(), in.Channel(), in.Mode())
	}
	if got := recvText(t, in); got != "ping" {
		t.Fatalf("listener got %q", got)
	}
	send(t, in, "pong")
	if got := recvText(t, s); got != "pong" {
		t.Fatalf("dialler got %q", got)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Recv(ctxT(t)); err != io.EOF {
		t.Fatalf("after CloseSend the listener's Recv: want io.EOF, got %v", err)
	}
	send(t, in, "still open the other way")
	if got := recvText(t, s); got != "still open the other way" {
		t.Fatalf("after half-close got %q", got)
	}
	_ = in.CloseSend()
	if _, err := s.Recv(ctxT(t)); err != io.EOF {
		t.Fatalf("dialler Recv after the peer's CloseSend: want io.EOF, got %v", err)
	}
}

func TestUnicastBothWaysAndNATReversal(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b) // a dialled b
	echoOnce(t, a, b, "forward")
	// b was dialled (as if a were behind NAT) and still opens sessions to a.
	echoOnce(t, b, a, "reverse")
	l := linkTo(a.Node, "b")
	if !l.Outbound || linkTo(b.Node, "a").Outbound {
		t.Fatal("link direction misreported")
	}
	eventually(t, "RTT measured", func() bool { return linkTo(a.Node, "b").RTT > 0 && linkTo(b.Node, "a").RTT > 0 })
	for _, l := range []*LinkInfo{linkTo(a.Node, "b"), linkTo(b.Node, "a")} {
		if l.MinRTT <= 0 || l.MinRTT > l.RTT {
			t.Fatalf("link to %s: lowest RTT %v, smoothed %v; want 0 < lowest <= smoothed", l.Peer, l.MinRTT, l.RTT)
		}
	}
	if l := linkTo(a.Node, "b"); l.BytesIn == 0 || l.BytesOut == 0 {
		t.Fatalf("byte counters not moving: %+v", l)
	}
}

func TestMulticastReachesListenersOnThreeNodes(t *testing.T) {
	ca := newTestCA(t)
	hub := startNode(t, ca.identity(t, "hub"), "127.0.0.1:0")
	var listeners []*Listener
	for i := range 3 {
		n := startNode(t, ca.identity(t, "n"+strconv.Itoa(i)), "127.0.0.1:0")
		connect(t, hub, n)
		ls, err := n.Listen("events")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, ls)
		waitListening(t, hub, n.ID(), "events")
	}
	// A fourth peer that does not listen must not be reached by multicast.
	quiet := startNode(t, ca.identity(t, "quiet"), "127.0.0.1:0")
	connect(t, hub, quiet)

	s, err := hub.Dial(ctxT(t), "events", DialOptions{Mode: Multicast})
	if err != nil {
		t.Fatal(err)
	}
	if s.Peer() != "" {
		t.Fatalf("outbound multicast peer %q, want empty", s.Peer())
	}
	send(t, s, "hello all")
	for i, ls := range listeners {
		in := accept(t, ls)
		if in.Peer() != "hub" || in.Mode() != Multicast {
			t.Fatalf("listener %d: peer %q mode %v", i, in.Peer(), in.Mode())
		}
		if got := recvText(t, in); got != "hello all" {
			t.Fatalf("listener %d got %q", i, got)
		}
		send(t, in, "reply"+strconv.Itoa(i))
		in.Close()
	}
	replies := map[string]bool{}
	for range 3 {
		replies[recvText(t, s)] = true
	}
	if len(replies) != 3 {
		t.Fatalf("replies %v", replies)
	}
	s.Close()
	if _, err := s.Recv(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: want ErrClosed, got %v", err)
	}
}

// A multicast session reaches the peers that listen at each Send, even
// those linked or listening only after the Dial: one long-lived session
// serves a control channel for the life of a node.
func TestMulticastReachesPeersThatJoinLater(t *testing.T) {
	ca := newTestCA(t)
	hub := startNode(t, ca.identity(t, "hub"), "127.0.0.1:0")
	s, err := hub.Dial(ctxT(t), "events", DialOptions{Mode: Multicast})
	if err != nil {
		t.Fatalf("a multicast dial with nobody listening yet: %v", err)
	}
	defer s.Close()
	send(t, s, "to nobody") // nobody listens: nothing to deliver, not an error

	late := startNode(t, ca.identity(t, "late"), "127.0.0.1:0")
	connect(t, hub, late)
	ls, err := late.Listen("events")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, hub, "late", "events")
	send(t, s, "first")
	send(t, s, "second")
	in := accept(t, ls)
	if got := recvText(t, in) + " " + recvText(t, in); got != "first second" {
		t.Fatalf("the late peer got %q", got)
	}
}

func TestMulticastDialSendCloseKeepsListener(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	ls, err := b.Listen("control")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "b", "control")
	got := make(chan string, 200)
	errs := make(chan error, 1)
	go func() {
		for {
			in, err := ls.Accept(t.Context())
			if err != nil {
				errs <- err
				return
			}
			go func() {
				defer in.Close()
				for {
					m, err := in.Recv(t.Context())
					if err != nil {
						return
					}
					got <- string(m.Body)
				}
			}()
		}
	}()
	for i := range 100 {
		s, err := a.Dial(ctxT(t), "control", DialOptions{Mode: Multicast})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		send(t, s, strconv.Itoa(i))
		s.Close()
	}
	seen := map[string]bool{}
	for len(seen) < 100 {
		select {
		case m := <-got:
			seen[m] = true
		case err := <-errs:
			t.Fatalf("listener failed: %v", err)
		case <-ctxT(t).Done():
			t.Fatalf("only %d of 100 messages arrived", len(seen))
		}
	}
	// The listener survived every remote close and still takes sessions.
	s, err := a.Dial(ctxT(t), "control", DialOptions{Mode: Unicast, Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	send(t, s, "after")
	select {
	case m := <-got:
		if m != "after" {
			t.Fatalf("got %q", m)
		}
	case err := <-errs:
		t.Fatalf("listener failed: %v", err)
	case <-ctxT(t).Done():
		t.Fatal("listener deaf after 100 multicast sessions")
	}
	s.Close()
	if l := linkTo(a.Node, "b"); l.Drops != 0 {
		t.Fatalf("%d drops", l.Drops)
	}
}

func TestDialUnknownChannelFailsFastWithoutLeaks(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	time.Sleep(3 * testInterval) // let link goroutines settle before the baseline
	base := runtime.NumGoroutine()
	for i := range 1000 {
		_, err := a.Dial(t.Context(), "nobody", DialOptions{Timeout: 100 * time.Millisecond})
		if !errors.Is(err, ErrNoListener) || !strings.Contains(err.Error(), `"nobody"`) {
			t.Fatalf("dial %d: want ErrNoListener naming the channel, got %v", i, err)
		}
	}
	if _, err := a.Dial(t.Context(), "nobody", DialOptions{Node: "b"}); !errors.Is(err, ErrNoListener) {
		t.Fatalf("dial to a node that does not listen: %v", err)
	}
	if _, err := a.Dial(t.Context(), "x", DialOptions{Node: "zz"}); !errors.Is(err, ErrNoLink) {
		t.Fatalf("dial to an unknown node: %v", err)
	}
	if _, err := a.Dial(t.Context(), "bad channel", DialOptions{}); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("dial with a bad channel name: %v", err)
	}
	eventually(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base+2 })
}

// TestStaleAnnouncementRefused covers a dial that races the peer's
// unlisten: the session fails with ErrNoListener instead of hanging.
func TestStaleAnnouncementRefused(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	ls, err := b.Listen("gone")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "b", "gone")
	// Remove b's listener without telling a, as if the unlisten were in flight.
	b.mu.Lock()
	delete(b.listeners, "gone")
	b.mu.Unlock()
	time.Sleep(3 * testInterval)
	base := runtime.NumGoroutine()
	for i := range 200 {
		s, err := a.Dial(ctxT(t), "gone", DialOptions{Mode: Mode(i % 2)})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // unicast: the refusal reaches the dialler
			if _, err := s.Recv(ctxT(t)); !errors.Is(err, ErrNoListener) {
				t.Fatalf("want ErrNoListener from a refused session, got %v", err)
			}
		}
		if i%4 < 2 {
			s.Close() // half the callers forget to close a failed session
		}
	}
	eventually(t, "goroutines back to baseline after refused sessions", func() bool { return runtime.NumGoroutine() <= base+2 })
	ls.Close()
}

func TestDeadLinkDetectedAndReconnected(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	bID := ca.identity(t, "b")
	b := startNode(t, bID, "127.0.0.1:0")
	c := startNode(t, ca.identity(t, "c"), "127.0.0.1:0")
	connect(t, a, b)
	connect(t, a, c)
	ls, err := c.Listen("work")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "c", "work")
	toC, err := a.Dial(ctxT(t), "work", DialOptions{Node: "c"})
	if err != nil {
		t.Fatal(err)
	}
	send(t, toC, "before")
	inC := accept(t, ls)
	if recvText(t, inC) != "before" {
		t.Fatal("bad message")
	}

	// b vanishes without a word: its socket is gone, nothing is sent.
	bAddr := b.Addr().String()
	_ = b.udp.Close()
	eventually(t, "a to drop the dead link to b", func() bool { return linkTo(a.Node, "b") == nil })
	if !strings.Contains(a.logs.String(), "keepalive timeout") {
		t.Fatalf("link to b was not closed by the keepalive (3 intervals) but by something slower:\n%s", a.logs.String())
	}
	// The session to c never noticed.
	send(t, toC, "after")
	if recvText(t, inC) != "after" {
		t.Fatal("bad message")
	}
	if linkTo(a.Node, "c") == nil {
		t.Fatal("link to c lost")
	}
	_ = b.Close()

	// b comes back on the same address; a's connector redials it.
	startNode(t, bID, bAddr)
	eventually(t, "a to reconnect to b", func() bool { return linkTo(a.Node, "b") != nil })
	toC.Close()
	inC.Close()
}

// TestIdleLinkStaysUpAndDeadDiallerIsDetected leaves a link idle for many
// keepalive timeouts (only keepalive keeps it alive), then makes the node
// that dialled it vanish: the node that accepted it must notice too.
func TestIdleLinkStaysUpAndDeadDiallerIsDetected(t *testing.T) {
	const interval = 250 * time.Millisecond
	slower := func(c *Config) { c.KeepaliveInterval = interval }
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0", slower)
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0", slower)
	connect(t, a, b) // a dialled b
	before := linkTo(b.Node, "a")
	time.Sleep(8 * interval)
	after := linkTo(b.Node, "a")
	if after == nil || after.ID != before.ID || strings.Contains(a.logs.String()+b.logs.String(), "keepalive timeout") {
		t.Fatalf("an idle link did not stay up:\n%s%s", a.logs.String(), b.logs.String())
	}

	_ = a.udp.Close() // the dialler vanishes without a word
	eventually(t, "b to drop the dead link to a", func() bool { return linkTo(b.Node, "a") == nil })
	if !strings.Contains(b.logs.String(), "keepalive timeout") {
		t.Fatalf("link to a was not closed by b's keepalive but by something slower:\n%s", b.logs.String())
	}
}

func TestOrderlyCloseIsSeenAtOnce(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	_ = b.Close()
	eventually(t, "a to see b leave", func() bool { return linkTo(a.Node, "b") == nil })
	if strings.Contains(a.logs.String(), "keepalive timeout") {
		t.Fatal("an orderly close was detected only by keepalive")
	}
	if err := a.Disconnect(b.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := a.Disconnect(b.Addr().String()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("second Disconnect: %v", err)
	}
}

func TestSimultaneousDialsKeepOneLink(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	for range 3 {
		go a.Connect(b.Addr().String())
		go b.Connect(a.Addr().String())
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		la, lb := linkTo(a.Node, "b"), linkTo(b.Node, "a")
		if la != nil && lb != nil && len(a.Links()) == 1 && len(b.Links()) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single link each side:\na: %+v\nb: %+v\n%s\n%s", a.Links(), b.Links(), a.logs, b.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The survivor is the connection dialled by the smaller id ("a"), and
	// it stays: nobody keeps redialling.
	first := linkTo(a.Node, "b").ID
	time.Sleep(10 * testInterval)
	la, lb := linkTo(a.Node, "b"), linkTo(b.Node, "a")
	if la == nil || lb == nil || la.ID != first || !la.Outbound || lb.Outbound {
		t.Fatalf("link churned or wrong winner: a=%+v b=%+v", la, lb)
	}
}

func TestRefusesForeignCAAndMissingCertificate(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	foreign := startNode(t, newTestCA(t).identity(t, "mallory"), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := foreign.dial(ctx, a.Addr().String()); err == nil {
		t.Fatal("a node with a foreign CA joined")
	}
	// The foreign node refused a's certificate first; now a client that
	// skips that check presents its foreign certificate to a.
	id := foreign.identity.Load()
	conn, err := quic.DialAddr(ctx, a.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{id.Certificate}, InsecureSkipVerify: true,
		NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}, nil)
	if err == nil {
		<-conn.Context().Done()
	}
	eventually(t, "refusal logged", func() bool {
		return strings.Contains(a.logs.String(), "refused peer") && strings.Contains(a.logs.String(), "not trusted")
	})
	// Dialling out to the foreign node is refused on our side too.
	if _, err := a.dial(ctx, foreign.Addr().String()); err == nil {
		t.Fatal("dialled a server with a foreign certificate")
	}

	// A client without any certificate.
	conn, err = quic.DialAddr(ctx, a.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}, nil)
	if err == nil {
		// TLS 1.3 clients finish before the server checks them; the server
		// must then close the connection.
		<-conn.Context().Done()
	}
	eventually(t, "no-certificate refusal logged", func() bool {
		return strings.Contains(a.logs.String(), "peer presented no certificate")
	})
	if len(a.Links()) != 0 {
		t.Fatalf("links after refusals: %+v", a.Links())
	}
}

func TestInsecureModeAcceptsThrowawayPeers(t *testing.T) {
	idA, _ := throwaway(t, "a")
	idB, _ := throwaway(t, "b")
	a := startNode(t, idA, "127.0.0.1:0")
	b := startNode(t, idB, "127.0.0.1:0")
	connect(t, a, b)
	if !strings.Contains(a.logs.String(), "INSECURE") {
		t.Fatal("insecure mode did not warn")
	}
	echoOnce(t, a, b, "dev")
}

func TestUDPGarbageDisturbsNothing(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	udp, err := net.Dial("udp", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	buf := make([]byte, 1500)
	for i := range 2000 {
		n := 1 + i%len(buf)
		_, _ = rand.Read(buf[:n])
		if i%2 == 0 {
			buf[0] |= 0xc0 // looks like a QUIC long header
		}
		_, _ = udp.Write(buf[:n])
	}
	echoOnce(t, b, a, "still-works")
	c := startNode(t, ca.identity(t, "c"), "127.0.0.1:0")
	connect(t, c, a)
}

func TestSlowPeerDropsAreCountedAndDoNotStallOthers(t *testing.T) {
	ca := newTestCA(t)
	small := func(c *Config) { c.QueueSize = 4 }
	hub := startNode(t, ca.identity(t, "hub"), "127.0.0.1:0", small, relaxed)
	fast := startNode(t, ca.identity(t, "fast"), "127.0.0.1:0", relaxed)
	slow := startNode(t, ca.identity(t, "slow"), "127.0.0.1:0", relaxed)
	connect(t, hub, fast)
	connect(t, hub, slow)
	lf, _ := fast.Listen("feed")
	_, _ = slow.Listen("feed") // never accepts: the slow peer
	waitListening(t, hub, "fast", "feed")
	waitListening(t, hub, "slow", "feed")
	s, err := hub.Dial(ctxT(t), "feed", DialOptions{Mode: Multicast})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan struct{}, 1)
	go func() {
		in, err := lf.Accept(t.Context())
		if err != nil {
			return
		}
		for {
			if _, err := in.Recv(t.Context()); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	body := make([]byte, 1<<20)
	const total = 80 // 80 MB: far beyond the slow peer's flow-control windows and buffers
	for i := range total {
		if err := s.Send(ctxT(t), &Message{Body: body}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		select {
		case <-got:
		case <-ctxT(t).Done():
			t.Fatalf("fast peer stalled at message %d\nhub:\n%s\nfast:\n%s", i, hub.logs, fast.logs)
		}
	}
	if d := linkTo(hub.Node, "slow").Drops; d == 0 {
		t.Fatalf("the slow peer overflow was not counted: %+v\nhub:\n%s\nslow:\n%s", hub.Links(), hub.logs, slow.logs)
	}
	if d := linkTo(hub.Node, "fast").Drops; d != 0 {
		t.Fatalf("fast peer dropped %d", d)
	}
}

func TestLargeTransferKeepsOrder(t *testing.T) {
	size := int64(1 << 30)
	switch {
	case raceEnabled: // the race detector slows QUIC ~10×
		size = 128 << 20
	case testing.Short():
		size = 256 << 20
	}
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0", relaxed)
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0", relaxed)
	connect(t, a, b)
	ls, _ := b.Listen("bulk")
	waitListening(t, a, "b", "bulk")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	s, err := a.Dial(ctx, "bulk", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const chunk = 1 << 20
	type result struct {
		sum [32]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		in, err := ls.Accept(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer in.Close()
		h := sha256.New()
		for seq := 0; ; seq++ {
			m, err := in.Recv(ctx)
			if err == io.EOF {
				var r result
				copy(r.sum[:], h.Sum(nil))
				done <- r
				return
			}
			if err != nil {
				done <- result{err: err}
				return
			}
			if m.Header["seq"] != strconv.Itoa(seq) {
				done <- result{err: fmt.Errorf("message %d arrived as %s", seq, m.Header["seq"])}
				return
			}
			h.Write(m.Body)
		}
	}()
	h := sha256.New()
	body := make([]byte, chunk)
	start := time.Now()
	for seq := 0; int64(seq)*chunk < size; seq++ {
		_, _ = rand.Read(body[:64]) // vary content cheaply
		body[100] = byte(seq)
		h.Write(body)
		if err := s.Send(ctx, &Message{Header: map[string]string{"seq": strconv.Itoa(seq)}, Body: body}); err != nil {
			t.Fatalf("send %d: %v", seq, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := h.Sum(nil); string(want) != string(r.sum[:]) {
		t.Fatal("checksum mismatch")
	}
	t.Logf("%d MB in %s (%.0f MB/s)", size>>20, time.Since(start).Round(time.Millisecond), float64(size>>20)/time.Since(start).Seconds())
}

// TestAnnouncementsConverge flips a listener many times: the peer must end
// up with the final state, whatever order the announcements raced in.
func TestAnnouncementsConverge(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	for range 50 {
		ls, err := b.Listen("flip")
		if err != nil {
			t.Fatal(err)
		}
		_ = ls.Close()
	}
	if _, err := b.Listen("stays"); err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "b", "stays")
	eventually(t, "flip to be withdrawn", func() bool {
		l := linkTo(a.Node, "b")
		return l != nil && !strings.Contains(strings.Join(l.Channels, " "), "flip")
	})
	if _, err := b.Listen("stays"); !errors.Is(err, ErrChannelInUse) {
		t.Fatalf("second listener on a channel: %v", err)
	}
}
