package quictun

import (
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
