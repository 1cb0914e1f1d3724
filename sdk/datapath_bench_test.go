package sdk_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/microhost/microhost/sdk"
)

// dataPathPair serves two linked memtunnel nodes through the shim and
// returns a consumer of each one's data path, as a proxy would hold them.
func dataPathPair(tb testing.TB) (a, b sdk.Tunnel) {
	tb.Helper()
	nodes := newFabric(tb, "a", "b")
	direct := func(id string) sdk.Tunnel {
		c := servePlugin(tb, nodes[id], sdk.KindTunnel).(sdk.Tunnel)
		info, err := sdk.TunnelDataPath(tb.Context(), c)
		if err != nil {
			tb.Fatal(err)
		}
		t, err := sdk.DialDataPath(info)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { t.Close() })
		return t
	}
	return direct("a"), direct("b")
}

// echo accepts sessions on l and sends every message back until the
// dialler closes its sending half.
func echo(ctx context.Context, l sdk.Listener) {
	for {
		s, err := l.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			for {
				m, err := s.Recv(ctx)
				if err != nil {
					return
				}
				if s.Send(ctx, m) != nil {
					return
				}
			}
		}()
	}
}

// echoPair returns node a's data path tunnel, with node b echoing
// whatever sessions on channel "echo" carry.
func echoPair(b *testing.B) sdk.Tunnel {
	a, bt := dataPathPair(b)
	l, err := bt.Listen(b.Context(), "echo")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go echo(b.Context(), l)
	return a
}

// BenchmarkDataPathSession is what a short-lived session costs the data
// path: open a session from one node's consumer to another's, one message
// there and back, close. Both ends go through a tunnel shim's data path.
func BenchmarkDataPathSession(b *testing.B) {
	a := echoPair(b)
	ctx := b.Context()
	msg := &sdk.Message{Header: map[string]string{"method": "/pkg.Svc/Call"}, Body: make([]byte, 100)}
	b.ReportAllocs()
	for b.Loop() {
		s, err := a.Dial(ctx, "echo", sdk.DialOptions{Node: "b"})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Recv(ctx); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkDataPathRoundTrip is one small message there and back on an
// open session.
func BenchmarkDataPathRoundTrip(b *testing.B) {
	a := echoPair(b)
	ctx := b.Context()
	s, err := a.Dial(ctx, "echo", sdk.DialOptions{Node: "b"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	msg := &sdk.Message{Header: map[string]string{"method": "/pkg.Svc/Call"}, Body: make([]byte, 100)}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataPathThroughput streams 64 KiB messages one way through both
// data paths.
func BenchmarkDataPathThroughput(b *testing.B) {
	a, bt := dataPathPair(b)
	l, err := bt.Listen(b.Context(), "sink")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := b.Context()
	received := make(chan int, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			received <- -1
			return
		}
		defer s.Close()
		n := 0
		for {
			m, err := s.Recv(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					n = -1
				}
				received <- n
				return
			}
			n += len(m.Body)
		}
	}()
	s, err := a.Dial(ctx, "sink", sdk.DialOptions{Node: "b"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	msg := &sdk.Message{Body: make([]byte, 64<<10)}
	b.SetBytes(int64(len(msg.Body)))
	b.ReportAllocs()
	sent := 0
	for b.Loop() {
		if err := s.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
		sent += len(msg.Body)
	}
	if err := s.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if got := <-received; got != sent {
		b.Fatalf("received %d bytes, sent %d", got, sent)
	}
}
