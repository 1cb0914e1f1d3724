package quictun

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk/pki"
)

// testInterval is the keepalive interval of test nodes.
const testInterval = 100 * time.Millisecond

// relaxed gives bulk-transfer tests the production keepalive: on a loaded
// machine under the race detector a peer can be starved of CPU for longer
// than the short test timeout.
func relaxed(c *Config) { c.KeepaliveInterval = DefaultKeepaliveInterval }

// logBuffer collects a node's log lines for assertions.
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

type testCA struct{ ca *pki.CA }

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca}
}

func (c *testCA) identity(t testing.TB, id string) *pki.Node {
	t.Helper()
	cert, key, err := c.ca.NewNode(id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509Pool(c.ca)
	return &pki.Node{ID: id, Certificate: tlsCert(cert, key), Roots: roots}
}

type testNode struct {
	*Node
	logs *logBuffer
}

func startNode(t testing.TB, id *pki.Node, addr string, tweak ...func(*Config)) *testNode {
	t.Helper()
	logs := &logBuffer{}
	cfg := Config{
		Identity:          id,
		ListenAddr:        addr,
		KeepaliveInterval: testInterval,
		DialTimeout:       3 * time.Second,
		DrainTimeout:      2 * time.Second,
		ReconnectMin:      50 * time.Millisecond,
		ReconnectMax:      400 * time.Millisecond,
		Logger:            hclog.New(&hclog.LoggerOptions{Name: id.ID, Output: logs, Level: hclog.Debug}),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return &testNode{n, logs}
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func linkTo(n *Node, peer string) *LinkInfo {
	for _, l := range n.Links() {
		if l.Peer == peer && l.State == LinkUp {
			return &l
		}
	}
	return nil
}

// connect links a to b and waits until both see the link.
func connect(t testing.TB, a, b *testNode) {
	t.Helper()
	if err := a.Connect(b.Addr().String()); err != nil {
		t.Fatal(err)
	}
	eventually(t, fmt.Sprintf("link %s<->%s", a.ID(), b.ID()), func() bool {
		return linkTo(a.Node, b.ID()) != nil && linkTo(b.Node, a.ID()) != nil
	})
}

// waitListening waits until n sees peer listening on channel.
func waitListening(t testing.TB, n *testNode, peer, channel string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s to see %s listen on %q", n.ID(), peer, channel), func() bool {
		l := linkTo(n.Node, peer)
		return l != nil && strings.Contains(" "+strings.Join(l.Channels, " ")+" ", " "+channel+" ")
	})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
