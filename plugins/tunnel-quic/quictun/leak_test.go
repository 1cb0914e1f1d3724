package quictun

import (
	"io"
	"testing"

	"go.uber.org/goleak"
)

// TestCloseReleasesEverything leaves sessions of every kind open, some
// with unread messages, and checks that Close ends every goroutine.
func TestCloseReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	lsB, _ := b.Listen("x")
	lsA, _ := a.Listen("y")
	waitListening(t, a, "b", "x")
	waitListening(t, b, "a", "y")
	uni, err := a.Dial(ctxT(t), "x", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	multi, err := a.Dial(ctxT(t), "x", DialOptions{Mode: Multicast})
	if err != nil {
		t.Fatal(err)
	}
	bcast, err := b.Dial(ctxT(t), "y", DialOptions{Mode: Broadcast})
	if err != nil {
		t.Fatal(err)
	}
	for range 40 { // more than a session buffers: readers block on delivery
		send(t, uni, "unread")
		send(t, multi, "unread")
		send(t, bcast, "unread")
	}
	accept(t, lsB) // accepted, never read
	_ = lsA
	if err := a.Connect("127.0.0.1:1"); err != nil { // a connector that never succeeds
		t.Fatal(err)
	}
	_ = a.Close()
	_ = b.Close()
}

// tracked counts what a node holds for sessions: stream sessions whose
// sending half is open, outbound multicast sessions still sending, and
// readers each link waits for before it may close.
func tracked(n *Node) (sessions, multis int, readers int32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.links {
		readers += l.readers.Load()
	}
	return len(n.sessions), len(n.multis), readers
}

// TestFinishedSessionsAreForgotten finishes many sessions of every kind,
// half of them closed by the side that did not open them, whose consumer
// then reads to the end but never closes its own session. Once every
// session has finished, neither node may track any of them.
func TestFinishedSessionsAreForgotten(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	ls, err := b.Listen("x")
	if err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, "b", "x")
	// readToEnd is a consumer that never closes its session.
	readToEnd := func(s Session) {
		for {
			if _, err := s.Recv(ctxT(t)); err != nil {
				if err != io.EOF {
					t.Errorf("session %s ended with %v, want io.EOF", s.ID(), err)
				}
				return
			}
		}
	}
	for i := range 30 {
		mode := []Mode{Unicast, Multicast, Broadcast}[i%3]
		out, err := a.Dial(ctxT(t), "x", DialOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		send(t, out, "hello")
		in := accept(t, ls)
		if got := recvText(t, in); got != "hello" {
			t.Fatalf("got %q", got)
		}
		if i%2 == 0 || mode != Unicast {
			// The dialler closes; the listener's side reads to the end and
			// is left open.
			out.Close()
			readToEnd(in)
		} else {
			// The listener closes; the dialler's side reads to the end and
			// is left open.
			in.Close()
			readToEnd(out)
		}
	}
	for _, n := range []*testNode{a, b} {
		eventually(t, n.ID()+" to forget finished sessions", func() bool {
			s, m, r := tracked(n.Node)
			return s == 0 && m == 0 && r == 0
		})
	}
}
