package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

// logBuffer collects what a plugin logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// servedTunnel is a memtunnel node served through the shim: the host's
// client of it, where its data path is, and what the shim logged.
type servedTunnel struct {
	host sdk.Tunnel
	info *pb.DataPathInfo
	log  *logBuffer
}

func serveTunnel(t *testing.T, node *memtunnel.Node) servedTunnel {
	t.Helper()
	logs := &logBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{sdk.PluginName: &sdk.GRPCPlugin{Impl: node, Logger: log}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(sdk.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.NewClient(raw.(*sdk.PluginConn).Conn, sdk.KindTunnel, sdk.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	host := c.(sdk.Tunnel)
	info, err := sdk.TunnelDataPath(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	return servedTunnel{host: host, info: info, log: logs}
}

// consumer is a client of the data path, as the proxy holds one.
func (s servedTunnel) consumer(t *testing.T) sdk.Tunnel {
	t.Helper()
	c, err := sdk.DialDataPath(s.info)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds, failing after a generous bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("still not so after 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, tun sdk.Tunnel, channel, node string) sdk.Session {
	t.Helper()
	s, err := tun.Dial(t.Context(), channel, sdk.DialOptions{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func listen(t *testing.T, tun sdk.Tunnel, channel string) sdk.Listener {
	t.Helper()
	l, err := tun.Listen(t.Context(), channel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func accept(t *testing.T, l sdk.Listener) sdk.Session {
	t.Helper()
	s, err := l.Accept(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Sessions that arrive before anyone calls Accept, more than there are
// parked connections, are all accepted, each with its own messages.
func TestDataPathParkedAccept(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	l := listen(t, serveTunnel(t, nodes["a"]).consumer(t), "burst")
	const sessions = 25
	for i := range sessions {
		send(t, dial(t, nodes["b"], "burst", "a"), fmt.Sprint(i))
	}
	seen := map[string]bool{}
	for range sessions {
		in := accept(t, l)
		if in.Peer() != "b" || in.Channel() != "burst" {
			t.Fatalf("accepted session: peer %q channel %q", in.Peer(), in.Channel())
		}
		seen[recvBody(t, in)] = true
	}
	if len(seen) != sessions {
		t.Fatalf("%d distinct sessions accepted, want %d: %v", len(seen), sessions, seen)
	}
}

// A session that finds no parked connection waits a bounded time, then is
// closed and logged.
func TestDataPathUnclaimedSessionIsClosedAndLogged(t *testing.T) {
	defer sdk.SetUnclaimedSessionTimeout(50 * time.Millisecond)()
	nodes := newFabric(t, "a", "b")
	a := serveTunnel(t, nodes["a"])
	listen(t, a.consumer(t), "nobody-accepts")
	// The listener parked a few connections and never asks for more: the
	// sessions beyond them have nowhere to go.
	var last sdk.Session
	for range 20 {
		last = dial(t, nodes["b"], "nobody-accepts", "a")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := last.Recv(ctx); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the unclaimed session was not closed")
	}
	eventually(t, "the unclaimed session is logged", func() bool {
		return strings.Contains(a.log.String(), "closing an accepted session that no consumer took up")
	})
}

// Close delivers everything sent before it, even while the tunnel is
// blocked writing to a consumer that does not read.
func TestDataPathCloseDeliversEverything(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	l := listen(t, nodes["b"], "flood")
	out := dial(t, serveTunnel(t, nodes["a"]).consumer(t), "flood", "b")
	send(t, out, "first")
	in := accept(t, l)
	// Fill the consumer's socket with messages it never reads.
	go func() {
		big := &sdk.Message{Body: make([]byte, 16<<10)}
		for in.Send(t.Context(), big) == nil {
		}
	}()
	const n = 100
	body := bytes.Repeat([]byte("x"), 4<<10)
	for i := range n {
		if err := out.Send(t.Context(), &sdk.Message{Header: map[string]string{"i": fmt.Sprint(i)}, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	out.Close()
	if got := recvBody(t, in); got != "first" {
		t.Fatalf("got %q", got)
	}
	for i := range n {
		m, err := in.Recv(t.Context())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Header["i"] != fmt.Sprint(i) || !bytes.Equal(m.Body, body) {
			t.Fatalf("message %d: header %v, %d bytes", i, m.Header, len(m.Body))
		}
	}
	if _, err := in.Recv(t.Context()); !errors.Is(err, io.EOF) {
		t.Fatalf("after the consumer's Close: %v, want io.EOF", err)
	}
}

// Ending the ctx of a waiting Recv or Accept returns at once and leaves the
// session and the listener working.
func TestDataPathCancelKeepsSessionAndListener(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	c := serveTunnel(t, nodes["a"]).consumer(t)
	l := listen(t, c, "patient")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("accept: %v, want the ctx's error", err)
	}
	out := dial(t, nodes["b"], "patient", "a")
	send(t, out, "hello")
	in := accept(t, l)
	if got := recvBody(t, in); got != "hello" {
		t.Fatalf("got %q", got)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := in.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv: %v, want the ctx's error", err)
	}
	send(t, out, "later")
	if got := recvBody(t, in); got != "later" {
		t.Fatalf("got %q", got)
	}
	send(t, in, "reply")
	if got := recvBody(t, out); got != "reply" {
		t.Fatalf("got %q", got)
	}
}

// When the tunnel goes away, a waiting Recv and Accept end with an error,
// not io.EOF and not a hang.
func TestDataPathTunnelGoesAway(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := serveTunnel(t, nodes["a"])
	c := a.consumer(t)
	l := listen(t, c, "doomed")
	bl := listen(t, nodes["b"], "doomed-too")
	out := dial(t, c, "doomed-too", "b")
	send(t, out, "hi")
	accept(t, bl)
	recvDone, acceptDone := make(chan error, 1), make(chan error, 1)
	go func() { _, err := out.Recv(t.Context()); recvDone <- err }()
	go func() { _, err := l.Accept(t.Context()); acceptDone <- err }()
	if err := a.host.Close(); err != nil { // the plugin stops its data path and the node
		t.Fatal(err)
	}
	for what, ch := range map[string]chan error{"recv": recvDone, "accept": acceptDone} {
		select {
		case err := <-ch:
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("%s after the tunnel went away: %v, want an error", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still waits after the tunnel went away", what)
		}
	}
}

// A consumer that dies takes its sessions and listeners with it.
func TestDataPathConsumerDies(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := serveTunnel(t, nodes["a"])
	bl := listen(t, nodes["b"], "call")
	conn, err := sdk.RawDial(t.Context(), a.info, "call", "b")
	if err != nil {
		t.Fatal(err)
	}
	in := accept(t, bl)
	conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := in.Recv(ctx); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the peer's session outlived the consumer")
	}

	lc, err := sdk.RawListen(t.Context(), a.info, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes["b"].Dial(t.Context(), "orphan", sdk.DialOptions{Node: "a"}); err != nil {
		t.Fatalf("dial while the consumer listens: %v", err)
	}
	lc.Close()
	eventually(t, "the listener closes with its consumer", func() bool {
		_, err := nodes["b"].Dial(t.Context(), "orphan", sdk.DialOptions{Node: "a"})
		return errors.Is(err, sdk.ErrNotFound)
	})

	// Closing a Listener closes the tunnel's too.
	l := listen(t, a.consumer(t), "short-lived")
	l.Close()
	eventually(t, "the listener closes with Close", func() bool {
		_, err := nodes["b"].Dial(t.Context(), "short-lived", sdk.DialOptions{Node: "a"})
		return errors.Is(err, sdk.ErrNotFound)
	})
}

// Garbage on the socket is logged and its connection closed; sessions on
// other connections do not notice.
func TestDataPathGarbage(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	a := serveTunnel(t, nodes["a"])
	c := a.consumer(t)
	bl := listen(t, nodes["b"], "steady")
	out := dial(t, c, "steady", "b")
	send(t, out, "before")
	in := accept(t, bl)

	for _, garbage := range []string{"GET / HTTP/1.1\r\n\r\n", "\x00\x00\x00\x02\x63\x00", "\x00\x00\x00\x03\x01\xff\xff"} {
		raw, err := net.Dial("unix", strings.TrimPrefix(a.info.GetAddress(), "unix:"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Write([]byte(garbage)); err != nil {
			t.Fatal(err)
		}
		raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Closed with the garbage unread, the connection may read as reset.
		if n, err := io.Copy(io.Discard, raw); n != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("garbage %q: %d bytes back, %v; want the connection closed", garbage, n, err)
		}
		raw.Close()
	}
	eventually(t, "the garbage is logged", func() bool {
		return strings.Count(a.log.String(), "dropping a connection that did not say hello") == 3
	})

	send(t, out, "after")
	if got := recvBody(t, in) + recvBody(t, in); got != "beforeafter" {
		t.Fatalf("got %q", got)
	}
	send(t, in, "reply")
	if got := recvBody(t, out); got != "reply" {
		t.Fatalf("got %q", got)
	}
	if _, err := c.Dial(t.Context(), "nobody-listens", sdk.DialOptions{Node: "b"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("dial to a channel nobody listens on: %v, want sdk.ErrNotFound", err)
	}
}

// A session's messages cross the data path whole, large or small, with
// their headers, in both directions.
func TestDataPathMessages(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	bl := listen(t, nodes["b"], "sizes")
	out := dial(t, serveTunnel(t, nodes["a"]).consumer(t), "sizes", "b")
	send(t, out, "open")
	in := accept(t, bl)
	recvBody(t, in)
	for _, size := range []int{0, 1, 8 << 10, 8<<10 + 1, 1 << 20, 3 << 20} {
		body := bytes.Repeat([]byte{byte(size)}, size)
		m := &sdk.Message{Header: map[string]string{"size": fmt.Sprint(size), "": "empty key"}, Body: body}
		for _, dir := range [][2]sdk.Session{{out, in}, {in, out}} {
			if err := dir[0].Send(t.Context(), m); err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			got, err := dir[1].Recv(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got.Header["size"] != fmt.Sprint(size) || got.Header[""] != "empty key" || !bytes.Equal(got.Body, body) {
				t.Fatalf("size %d: got header %v and %d bytes", size, got.Header, len(got.Body))
			}
		}
	}
}

// A connection whose session was closed carries the next one, and nothing
// of the old session leaks into the new: not what the peer sent after the
// consumer stopped reading, nor its end.
func TestDataPathReusesConnections(t *testing.T) {
	nodes := newFabric(t, "a", "b")
	c := serveTunnel(t, nodes["a"]).consumer(t)
	bl := listen(t, nodes["b"], "reuse")
	for round := range 5 {
		out := dial(t, c, "reuse", "b")
		if got := sdk.IdleConns(c); got != 0 {
			t.Fatalf("round %d: %d idle connections while the only one carries a session", round, got)
		}
		send(t, out, "ping")
		in := accept(t, bl)
		recvBody(t, in)
		send(t, in, fmt.Sprint("reply ", round))
		if got := recvBody(t, out); got != fmt.Sprint("reply ", round) {
			t.Fatalf("round %d: got %q", round, got)
		}
		// Unread by the consumer: what the closed session must take along.
		send(t, in, "stale")
		in.CloseSend()
		out.Close()
		if got := sdk.IdleConns(c); got != 1 {
			t.Fatalf("round %d: %d idle connections after Close, want 1", round, got)
		}
	}

	// Accepted sessions give their connections back too, and the listener
	// parks them again.
	l := listen(t, c, "reuse-in")
	for round := range 3 {
		out := dial(t, nodes["b"], "reuse-in", "a")
		send(t, out, fmt.Sprint("in ", round))
		in := accept(t, l)
		if got := recvBody(t, in); got != fmt.Sprint("in ", round) {
			t.Fatalf("round %d: got %q", round, got)
		}
		in.Close()
		out.Close()
	}
}

// swapConn is a gRPC connection whose target a test replaces, as the
// host's supervisor does when it restarts a plugin.
type swapConn struct {
	conn atomic.Pointer[grpc.ClientConn]
}

func (s *swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return s.conn.Load().Invoke(ctx, method, args, reply, opts...)
}

func (s *swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return s.conn.Load().NewStream(ctx, desc, method, opts...)
}

// After the tunnel plugin is restarted, the host's client finds the new
// data path by itself, though it held connections to the old one.
func TestHostClientFollowsARestartedTunnel(t *testing.T) {
	f := memtunnel.NewFabric()
	b, err := f.NewNode("b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	bl := listen(t, b, "svc")
	conn := &swapConn{}
	host, err := sdk.NewClient(conn, sdk.KindTunnel, sdk.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tun := host.(sdk.Tunnel)
	for round := range 2 {
		a, err := f.NewNode("a")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Link("a", "b"); err != nil {
			t.Fatal(err)
		}
		client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{sdk.PluginName: &sdk.GRPCPlugin{Impl: a}})
		raw, err := client.Dispense(sdk.PluginName)
		if err != nil {
			t.Fatal(err)
		}
		conn.conn.Store(raw.(*sdk.PluginConn).Conn)
		for i := range 3 {
			s, err := tun.Dial(t.Context(), "svc", sdk.DialOptions{Node: "b"})
			if err != nil {
				t.Fatalf("round %d, dial %d: %v", round, i, err)
			}
			send(t, s, "hi")
			in := accept(t, bl)
			if got := recvBody(t, in); got != "hi" {
				t.Fatalf("got %q", got)
			}
			s.Close()
		}
		// The plugin goes away: its data path and node with it.
		if err := tun.Close(); err != nil {
			t.Fatal(err)
		}
		client.Close()
	}
}

// Many sessions at once between two data path consumers, as a proxy opens
// one per call: each gets its own answer, whatever the interleaving.
func TestDataPathConcurrentSessions(t *testing.T) {
	a, b := dataPathPair(t)
	go echo(t.Context(), listen(t, b, "echo"))
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			s, err := a.Dial(t.Context(), "echo", sdk.DialOptions{Node: "b"})
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			defer s.Close()
			for j := range 3 {
				want := fmt.Sprint(i, "/", j)
				if err := s.Send(t.Context(), &sdk.Message{Body: []byte(want)}); err != nil {
					t.Errorf("session %d: %v", i, err)
					return
				}
				m, err := s.Recv(t.Context())
				if err != nil || string(m.Body) != want {
					t.Errorf("session %d: got %v, %v; want %q", i, m, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
