package quictun

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestDrainOutlivesTheKeepaliveWhenTheDiallerLeaves closes the node that
// dialled a link while its peer is slow to read: the peer, which pings the
// link, must go on pinging it after the goodbye, or the leaving node's
// keepalive closes the link and the unread messages are lost.
func TestDrainOutlivesTheKeepaliveWhenTheDiallerLeaves(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b) // a dialled: b is the end that pings
	ls, err := b.Listen("x")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "b", "x")
	out, err := a.Dial(ctxT(t), "x", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const count = 50
	body := strings.Repeat("x", 1000)
	for range count {
		send(t, out, body)
	}
	in := accept(t, ls)
	closed := make(chan struct{})
	go func() { _ = a.Close(); close(closed) }()
	// b's reader is busy for several keepalive timeouts (300 ms), well
	// within the drain timeout (2 s).
	time.Sleep(time.Second)
	for i := range count {
		if _, err := in.Recv(ctxT(t)); err != nil {
			t.Fatalf("message %d of %d lost although read within the drain timeout: %v", i, count, err)
		}
	}
	if _, err := in.Recv(ctxT(t)); err != io.EOF {
		t.Fatalf("after the last message: want io.EOF, got %v", err)
	}
	<-closed
	if strings.Contains(a.logs.String(), "keepalive timeout") {
		t.Fatalf("the leaving node closed the link for silence:\n%s", a.logs.String())
	}
}

// TestKeepaliveSettingsMayDiffer leaves idle links between nodes whose
// keepalive settings differ: a node dialling a hub that pings less often,
// as one tuned for CPU would, must ping the link itself rather than take it
// for dead, and a timeout barely above the interval must still leave room
// for a ping and its ACK.
func TestKeepaliveSettingsMayDiffer(t *testing.T) {
	keepalive := func(interval, timeout time.Duration) func(*Config) {
		return func(c *Config) { c.KeepaliveInterval, c.KeepaliveTimeout = interval, timeout }
	}
	ms := time.Millisecond
	for _, tc := range []struct {
		name              string
		dialler, acceptor func(*Config)
	}{
		{"hub pings three times less often", keepalive(100*ms, 300*ms), keepalive(300*ms, 900*ms)},
		{"hub at the defaults, dialler ten times faster", keepalive(100*ms, 300*ms), keepalive(time.Second, 3*time.Second)},
		{"dialler timeout twice its interval", keepalive(150*ms, 300*ms), keepalive(300*ms, 900*ms)},
		{"dialler timeout just above its interval", keepalive(300*ms, 360*ms), keepalive(time.Second, 3*time.Second)},
		{"acceptor timeout just above its interval", keepalive(time.Second, 3*time.Second), keepalive(300*ms, 360*ms)},
		{"dialler slower", keepalive(300*ms, 900*ms), keepalive(100*ms, 300*ms)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := newTestCA(t)
			dialler := startNode(t, ca.identity(t, "dialler"), "127.0.0.1:0", tc.dialler)
			acceptor := startNode(t, ca.identity(t, "acceptor"), "127.0.0.1:0", tc.acceptor)
			connect(t, dialler, acceptor)
			before := linkTo(dialler.Node, "acceptor")
			time.Sleep(4 * time.Second) // many of the shorter timeouts
			after := linkTo(dialler.Node, "acceptor")
			if logs := dialler.logs.String() + acceptor.logs.String(); after == nil || after.ID != before.ID || strings.Contains(logs, "keepalive timeout") {
				t.Fatalf("an idle link did not stay up:\n%s", logs)
			}
		})
	}
}

// TestStalledReaderDoesNotLookDead fills the connection's flow-control
// window towards a node whose reader has paused: the sender's keepalive
// pings must still reach it, or it closes a healthy link for silence.
func TestStalledReaderDoesNotLookDead(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b) // a dialled: b pings, while sending a more than a window
	ls, err := a.Listen("bulk")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, b, "a", "bulk")
	out, err := b.Dial(ctxT(t), "bulk", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := accept(t, ls)
	const count = 64
	body := []byte(strings.Repeat("z", 32<<10)) // 2 MiB in all
	sent := make(chan error, 1)
	go func() {
		for range count {
			if err := out.Send(ctxT(t), &Message{Body: body}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	time.Sleep(15 * testInterval) // a's reader pauses for five keepalive timeouts
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for i := range count {
		if _, err := in.Recv(ctx); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	_ = out.Close()
	_ = in.Close()
}

// TestDeadLinkClosedWithinTheTimeout makes the dialler vanish just after
// the accepting end received a packet, and times how long that end takes
// to close the link: never longer than keepalive_timeout, also when the
// timeout is not a whole number of check periods. Where the packet falls
// between two checks is chance, so it tries three links.
func TestDeadLinkClosedWithinTheTimeout(t *testing.T) {
	const interval, timeout = 100 * time.Millisecond, 320 * time.Millisecond
	settings := func(c *Config) { c.KeepaliveInterval, c.KeepaliveTimeout = interval, timeout }
	ca := newTestCA(t)
	for range 3 {
		a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0", settings)
		b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0", settings)
		connect(t, a, b)
		b.mu.Lock()
		l := b.links["a"]
		b.mu.Unlock()
		time.Sleep(3 * timeout) // idle: only keepalive packets from here on

		seen := l.conn.ConnectionStats().PacketsReceived
		for l.conn.ConnectionStats().PacketsReceived == seen {
			time.Sleep(100 * time.Microsecond)
		}
		lastHeard := time.Now()
		_ = a.udp.Close() // the dialler vanishes without a word
		<-l.ctx.Done()
		if took := time.Since(lastHeard); took > timeout {
			t.Fatalf("a dead link was closed %v after its last packet; keepalive_timeout is %v", took, timeout)
		}
		if !errors.Is(context.Cause(l.ctx), ErrKeepaliveTimeout) {
			t.Fatalf("closed by %v, not by the keepalive", context.Cause(l.ctx))
		}
		_ = a.Close()
		_ = b.Close()
	}
}
