package quictun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBroadcastReachesEveryListeningPeer(t *testing.T) {
	ca := newTestCA(t)
	hub := startNode(t, ca.identity(t, "hub"), "127.0.0.1:0")
	var lss []*Listener
	for _, id := range []string{"p1", "p2"} {
		n := startNode(t, ca.identity(t, id), "127.0.0.1:0")
		connect(t, hub, n)
		ls, _ := n.Listen("all")
		lss = append(lss, ls)
		waitListening(t, hub, id, "all")
	}
	quiet := startNode(t, ca.identity(t, "quiet"), "127.0.0.1:0")
	connect(t, hub, quiet)
	s, err := hub.Dial(ctxT(t), "all", DialOptions{Mode: Broadcast})
	if err != nil {
		t.Fatal(err)
	}
	send(t, s, "news")
	for _, ls := range lss {
		in := accept(t, ls)
		if in.Mode() != Broadcast || recvText(t, in) != "news" {
			t.Fatal("broadcast not delivered")
		}
		in.Close()
	}
	s.Close()
	// The peer without a listener refused its copy; that is neither an
	// error nor a drop on the link.
	eventually(t, "quiet peer's refusal", func() bool { return quiet.logs.String() != "" })
	if l := linkTo(hub.Node, "quiet"); l.Errors != 0 || l.Drops != 0 {
		t.Fatalf("refused broadcast counted as failure: %+v", l)
	}
}

func TestSessionContextsAndLimits(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0", func(c *Config) { c.MaxMessageSize = 4096 })
	connect(t, a, b)
	ls, _ := b.Listen("s")
	waitListening(t, a, "b", "s")
	s, err := a.Dial(ctxT(t), "s", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A Recv that times out leaves the session usable.
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	if _, err := s.Recv(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv with a short deadline: %v", err)
	}
	cancel()
	done, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Send(done, &Message{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("send with a cancelled context: %v", err)
	}
	send(t, s, "ok")
	in := accept(t, ls)
	if recvText(t, in) != "ok" {
		t.Fatal("session broken by a timed-out Recv")
	}
	send(t, in, "reply")
	if recvText(t, s) != "reply" {
		t.Fatal("a Recv with another context after a timed-out one failed")
	}
	// A context that ends between calls spoils no call with another one.
	ended, cancel := context.WithCancel(t.Context())
	if err := s.Send(ended, &Message{Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := in.Send(ended, &Message{Body: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(ended); err != nil || string(m.Body) != "2" {
		t.Fatalf("recv: %v", err)
	}
	cancel()
	time.Sleep(10 * time.Millisecond) // let the context's end reach the streams
	send(t, s, "3")
	if got := recvText(t, in) + recvText(t, in); got != "13" {
		t.Fatalf("after the context ended got %q, want \"13\"", got)
	}
	send(t, in, "4")
	if recvText(t, s) != "4" {
		t.Fatal("recv after the context ended failed")
	}
	// b accepts at most 4096 bytes: a bigger message is refused with a
	// message that says so, and the too-large error reaches the sender.
	if err := s.Send(ctxT(t), &Message{Body: make([]byte, 10000)}); err != nil {
		t.Fatalf("a's own limit is 4 MiB: %v", err)
	}
	if _, err := in.Recv(ctxT(t)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("receiver: want ErrMessageTooLarge, got %v", err)
	}
	eventually(t, "sender to learn of the refusal", func() bool {
		err := s.Send(ctxT(t), &Message{Body: []byte("more")})
		return errors.Is(err, ErrMessageTooLarge)
	})
	in.Close()
}

// TestCloseDrains closes a node with unicast and multicast sessions still
// open and messages in flight: the peer reads every message, then io.EOF.
func TestCloseDrains(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, ca.identity(t, "a"), "127.0.0.1:0")
	b := startNode(t, ca.identity(t, "b"), "127.0.0.1:0")
	connect(t, a, b)
	ls, _ := b.Listen("m")
	waitListening(t, a, "b", "m")
	const n = 200
	results := make(chan error, 2)
	go func() {
		for range 2 {
			in, err := ls.Accept(t.Context())
			if err != nil {
				results <- err
				return
			}
			go func() {
				for i := range n {
					m, err := in.Recv(t.Context())
					if err != nil {
						results <- fmt.Errorf("%v session: message %d lost: %w", in.Mode(), i, err)
						return
					}
					if string(m.Body) != strconv.Itoa(i) {
						results <- fmt.Errorf("%v session: message %d arrived as %q", in.Mode(), i, m.Body)
						return
					}
				}
				_, err := in.Recv(t.Context())
				if err != io.EOF {
					err = fmt.Errorf("%v session after the last message: want io.EOF, got %v", in.Mode(), err)
				} else {
					err = nil
				}
				results <- err
			}()
		}
	}()
	uni, err := a.Dial(ctxT(t), "m", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	multi, err := a.Dial(ctxT(t), "m", DialOptions{Mode: Multicast})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		send(t, uni, strconv.Itoa(i))
		send(t, multi, strconv.Itoa(i))
	}
	_ = a.Close() // without closing the sessions first
	for range 2 {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("a session was never read to its end; b's log:\n%s", b.logs.String())
		}
	}
	// b closes the link on a's goodbye once its readers are done.
	eventually(t, "b to close the link after reading", func() bool {
		return linkTo(b.Node, "a") == nil && strings.Contains(b.logs.String(), "reason=\"peer left\"")
	})
}

func TestJitterStaysInRange(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Second); d < 500*time.Millisecond || d >= time.Second {
			t.Fatalf("jitter(1s) = %s", d)
		}
	}
}
