package tunnelquic

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/pki"
	"github.com/quic-go/quic-go"
)

const fast = `{"keepalive_interval":"100ms","reconnect_min":"50ms","reconnect_max":"500ms","drain_timeout":"1s"}`

func configure(t *testing.T, node sdk.NodeConfig, cfg string) *Tunnel {
	t.Helper()
	tun := New(hclog.NewNullLogger())
	t.Cleanup(func() { _ = tun.Close() })
	if node.Listen == "" {
		node.Listen = "127.0.0.1:0"
	}
	diags := tun.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(cfg), Node: node})
	if diags.HasErrors() {
		t.Fatalf("configure: %v", diags.Err())
	}
	return tun
}

func addr(t *Tunnel) string { return t.node.Addr().String() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func peerListens(t *testing.T, tun *Tunnel, peer, channel string) bool {
	links, err := tun.Links(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Peer == peer && l.State == sdk.LinkUp {
			for _, c := range l.Channels {
				if c == channel {
					return true
				}
			}
		}
	}
	return false
}

func TestInfoAndSchema(t *testing.T) {
	tun := New(nil)
	if i := tun.Info(); i.Name != "tunnel-quic" || i.Kind != sdk.KindTunnel {
		t.Fatalf("info %+v", i)
	}
	seen := map[string]bool{}
	for _, a := range tun.Schema().Attributes {
		if seen[a.Name] {
			t.Fatalf("duplicate attribute %s", a.Name)
		}
		seen[a.Name] = true
		if a.Type == sdk.TypeDuration && !strings.Contains(a.Default, "×") {
			if _, err := time.ParseDuration(a.Default); err != nil {
				t.Errorf("%s default %q: %v", a.Name, a.Default, err)
			}
		}
	}
	for _, want := range []string{"keepalive_interval", "keepalive_timeout", "max_message_size", "queue_size"} {
		if !seen[want] {
			t.Errorf("schema lacks %s", want)
		}
	}
	if err := tun.Health(t.Context()); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("health before configure: %v", err)
	}
	if _, err := tun.Dial(t.Context(), "x", sdk.DialOptions{}); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("dial before configure: %v", err)
	}
}

func TestSessionsThroughTheSDKInterface(t *testing.T) {
	a := configure(t, sdk.NodeConfig{ID: "a", TLS: sdk.TLSConfig{Insecure: true}}, fast)
	b := configure(t, sdk.NodeConfig{ID: "b", TLS: sdk.TLSConfig{Insecure: true}}, fast)
	ctx := t.Context()
	if err := a.Connect(ctx, addr(b)); err != nil {
		t.Fatal(err)
	}
	ls, err := b.Listen(ctx, "rpc")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b listen", func() bool { return peerListens(t, a, "b", "rpc") })
	s, err := a.Dial(ctx, "rpc", sdk.DialOptions{Mode: sdk.Unicast})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, &sdk.Message{Header: map[string]string{"h": "1"}, Body: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	in, err := ls.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := in.Recv(ctx)
	if err != nil || string(m.Body) != "hi" || m.Header["h"] != "1" || in.Peer() != "a" || in.Mode() != sdk.Unicast {
		t.Fatalf("got %+v %v peer=%q", m, err, in.Peer())
	}
	if _, err := in.Recv(ctx); err != io.EOF {
		t.Fatalf("want io.EOF, got %v", err)
	}
	_, err = a.Dial(ctx, "nobody", sdk.DialOptions{Mode: sdk.Unicast, Timeout: 100 * time.Millisecond})
	if !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("dial to an unknown channel: want sdk.ErrNotFound, got %v", err)
	}
	if err := a.Disconnect(ctx, "127.0.0.1:1"); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("disconnect unknown address: %v", err)
	}
	if err := a.Disconnect(ctx, addr(b)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "link gone after Disconnect", func() bool {
		links, _ := a.Links(ctx)
		return len(links) == 0
	})
}

func TestConfigureDiagnostics(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.Issue(dir, "n1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, pki.CAFile)
	cases := []struct {
		name, cfg, attr, want string
		node                  sdk.NodeConfig
	}{
		{"bad duration", `{"keepalive_interval":"soon"}`, "keepalive_interval", "positive duration", sdk.NodeConfig{TLS: sdk.TLSConfig{Insecure: true}}},
		{"fractional size", `{"queue_size":1.5}`, "queue_size", "whole number", sdk.NodeConfig{TLS: sdk.TLSConfig{Insecure: true}}},
		{"timeout not above interval", `{"keepalive_interval":"2s","keepalive_timeout":"1s"}`, "keepalive_timeout", "longer than keepalive_interval", sdk.NodeConfig{TLS: sdk.TLSConfig{Insecure: true}}},
		{"unknown attribute", `{"keepalive":"1s"}`, "", "unknown field", sdk.NodeConfig{TLS: sdk.TLSConfig{Insecure: true}}},
		{"no tls files", `{}`, "", "lacks [cert key]", sdk.NodeConfig{TLS: sdk.TLSConfig{CA: ca}}},
		{"id mismatch", `{}`, "", `node id is "n2" but certificate`, sdk.NodeConfig{ID: "n2", TLS: sdk.TLSConfig{CA: ca, Cert: cert, Key: key}}},
		{"missing file", `{}`, "", "no such file", sdk.NodeConfig{TLS: sdk.TLSConfig{CA: ca, Cert: cert + ".gone", Key: key}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.node.Listen = "127.0.0.1:0"
			tun := New(nil)
			defer tun.Close()
			diags := tun.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(c.cfg), Node: c.node})
			if !diags.HasErrors() {
				t.Fatal("accepted")
			}
			found := false
			for _, d := range diags {
				if d.Attribute == c.attr && strings.Contains(d.Summary+": "+d.Detail, c.want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no diagnostic on %q containing %q: %+v", c.attr, c.want, diags)
			}
		})
	}
	// The same files with a matching id work.
	tun := configure(t, sdk.NodeConfig{ID: "n1", TLS: sdk.TLSConfig{CA: ca, Cert: cert, Key: key}}, `{}`)
	if err := tun.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := tun.Configure(t.Context(), sdk.ConfigureRequest{}); !d.HasErrors() {
		t.Fatal("second Configure accepted")
	}
	_ = tun.Close()
	if err := tun.Health(t.Context()); err == nil {
		t.Fatal("healthy after Close")
	}
}

// serverSerial returns the serial of the certificate the node at address
// presents, without completing a handshake.
func serverSerial(t *testing.T, address string) *big.Int {
	t.Helper()
	var serial *big.Int
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, _ = quic.DialAddr(ctx, address, &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"microhost-tunnel/1"}, MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			serial = cs.PeerCertificates[0].SerialNumber
			return errors.New("probe only")
		},
	}, nil)
	if serial == nil {
		t.Fatal("no server certificate seen")
	}
	return serial
}

func TestReloadKeepsLinks(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, pki.CAFile)
	issue := func(id string) sdk.TLSConfig {
		cert, key, err := pki.Issue(dir, id, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sdk.TLSConfig{CA: ca, Cert: cert, Key: key}
	}
	a := configure(t, sdk.NodeConfig{TLS: issue("a")}, fast)
	b := configure(t, sdk.NodeConfig{TLS: issue("b")}, fast)
	if err := a.Connect(t.Context(), addr(b)); err != nil {
		t.Fatal(err)
	}
	var linkID string
	waitFor(t, "link", func() bool {
		links, _ := a.Links(t.Context())
		if len(links) == 1 && links[0].State == sdk.LinkUp {
			linkID = links[0].ID
			return true
		}
		return false
	})
	before := serverSerial(t, addr(b))

	// Renew b's certificate in place and reload.
	for _, f := range []string{b.tls.Cert, b.tls.Key} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	issue("b")
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := serverSerial(t, addr(b)); after.Cmp(before) == 0 {
		t.Fatal("reload did not change the certificate presented")
	}
	time.Sleep(300 * time.Millisecond)
	links, _ := a.Links(t.Context())
	if len(links) != 1 || links[0].ID != linkID || links[0].State != sdk.LinkUp {
		t.Fatalf("link dropped by reload: %+v", links)
	}
	c := configure(t, sdk.NodeConfig{TLS: issue("c")}, fast)
	if err := c.Connect(t.Context(), addr(b)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new link with the renewed certificate", func() bool { return linkUp(t, c, "b") })

	// A certificate for another id is refused.
	for _, f := range []string{b.tls.Cert, b.tls.Key} {
		_ = os.Remove(f)
	}
	other := issue("z")
	_ = os.Rename(other.Cert, b.tls.Cert)
	_ = os.Rename(other.Key, b.tls.Key)
	if err := b.Reload(); err == nil || !strings.Contains(err.Error(), `"z"`) {
		t.Fatalf("reload with another node's certificate: %v", err)
	}
}

func linkUp(t *testing.T, tun *Tunnel, peer string) bool {
	links, _ := tun.Links(t.Context())
	for _, l := range links {
		if l.Peer == peer && l.State == sdk.LinkUp {
			return true
		}
	}
	return false
}
