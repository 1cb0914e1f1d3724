package quictun

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// dialListener has listener listen on channel and dialler dial it once the
// listener's node has announced it.
func dialListener(t *testing.T, dialler, listener *testNode, channel string) (*Listener, Session) {
	t.Helper()
	ls, err := listener.Listen(channel)
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, dialler, listener.ID(), channel)
	s, err := dialler.Dial(ctxT(t), channel, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ls, s
}

// TestDrainOutlivesTheKeepaliveWhenTheDiallerLeaves closes the node that
// dialled a link while its peer is slow to read: the peer, which pings the
// link, must go on pinging it after the goodbye, or the leaving node's
// keepalive closes the link and the unread messages are lost.
func TestDrainOutlivesTheKeepaliveWhenTheDiallerLeaves(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b) // a dialled: b is the end that pings
	ls, out := dialListener(t, a, b, "x")
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
	ls, out := dialListener(t, b, a, "bulk")
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

// TestKeepaliveScheduleKeepsItsPromises checks the keepalive's thresholds
// for many settings, on the grid of checks the keepalive measures silence
// in: a check credits packets that arrived since the one before it, so a
// link measured silent for k periods has really been silent for less than
// k+1 of them.
func TestKeepaliveScheduleKeepsItsPromises(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct{ interval, timeout time.Duration }{
		{time.Second, 3 * time.Second}, {time.Second, 10 * time.Second}, {3 * time.Second, 9 * time.Second},
		{100 * ms, 300 * ms}, {100 * ms, 320 * ms}, {100 * ms, 200 * ms}, {100 * ms, 150 * ms},
		{100 * ms, 110 * ms}, {300 * ms, 360 * ms}, {80 * ms, 81 * ms}, {27 * ms, 81 * ms},
	} {
		s := newKeepaliveSchedule(tc.interval, tc.timeout)
		p := s.period
		// firstCheck is the check at which a link silent since the grid's
		// origin first reaches a threshold.
		firstCheck := func(threshold time.Duration) time.Duration {
			return max((threshold+p-1)/p, 1) * p
		}
		closeAt := firstCheck(s.closeAfter)
		name := fmt.Sprintf("interval %v, timeout %v", tc.interval, tc.timeout)
		for what, threshold := range map[string]time.Duration{
			"close": s.closeAfter, "accepting end's ping": s.acceptorPingAfter, "dialling end's ping": s.diallerPingAfter,
		} {
			if off := threshold % p; off < p/2-p/10 || off > p/2+p/10 {
				t.Errorf("%s: the %s threshold %v is %v past a check, not half the period %v: jitter would move it a check", name, what, threshold, off, p)
			}
		}
		if closeAt+p > tc.timeout {
			t.Errorf("%s: a dead link is closed up to %v after its last packet", name, closeAt+p)
		}
		if closeAt < tc.timeout-2*p {
			t.Errorf("%s: a live link is closed after %v of silence, less than the timeout less two checks", name, closeAt)
		}
		for what, threshold := range map[string]time.Duration{"accepting": s.acceptorPingAfter, "dialling": s.diallerPingAfter} {
			if pingAt := firstCheck(threshold); pingAt > closeAt-2*p {
				t.Errorf("%s: the %s end pings at %v of silence, less than two checks before the close at %v", name, what, pingAt, closeAt)
			}
		}
		// A ping's ACK is credited a check after it, so the accepting end
		// pings every firstCheck+period; while its pings come that often,
		// the dialling end (with the same settings) must not ping too.
		every := firstCheck(s.acceptorPingAfter) + p
		if every > tc.interval {
			t.Errorf("%s: the accepting end pings every %v, less often than the interval", name, every)
		}
		if diallerAt := firstCheck(s.diallerPingAfter); tc.timeout >= 2*tc.interval && diallerAt < every {
			t.Errorf("%s: the dialling end pings after %v of silence although the other's pings come every %v", name, diallerAt, every)
		}
	}
}
