package proxyrpc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	proxyrpc "github.com/microhost/microhost/plugins/proxy-rpc"
	"github.com/microhost/microhost/plugins/proxy-rpc/forward"
	"github.com/microhost/microhost/sdk"
)

func configure(t *testing.T, config map[string]any) sdk.Diagnostics {
	t.Helper()
	raw, _ := json.Marshal(config)
	p := proxyrpc.New(hclog.NewNullLogger())
	t.Cleanup(func() { p.Close() })
	return p.Configure(t.Context(), sdk.ConfigureRequest{Config: raw, Host: newTestHost(nil)})
}

func TestConfigDiagnostics(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name      string
		config    map[string]any
		attribute string
		detail    string
	}{
		{"address in use", map[string]any{"listen": busy.Addr().String()}, "listen", busy.Addr().String()},
		{"bad address", map[string]any{"listen": "nonsense"}, "listen", "nonsense"},
		{"cert without key", map[string]any{"listen": "127.0.0.1:0", "tls_cert": "c.pem"}, "tls_key", "c.pem"},
		{"key without cert", map[string]any{"listen": "127.0.0.1:0", "tls_key": "k.pem"}, "tls_cert", "k.pem"},
		{"missing cert file", map[string]any{"listen": "127.0.0.1:0", "tls_cert": "/nonexistent/c.pem", "tls_key": "/nonexistent/k.pem"}, "tls_cert", "/nonexistent/c.pem"},
		{"negative size", map[string]any{"listen": "127.0.0.1:0", "max_message_size": -1}, "max_message_size", "-1"},
		{"fractional hops", map[string]any{"listen": "127.0.0.1:0", "max_hops": 2.5}, "max_hops", "2.5"},
		{"zero streams", map[string]any{"listen": "127.0.0.1:0", "max_concurrent_streams": 0}, "max_concurrent_streams", "out of range"},
		{"wrong type", map[string]any{"listen": 9090}, "listen", "string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			diags := configure(t, tc.config)
			if !diags.HasErrors() {
				t.Fatal("configuration accepted")
			}
			d := diags[0]
			if d.Attribute != tc.attribute || !strings.Contains(d.Detail, tc.detail) {
				t.Fatalf("diagnostic %+v, want one about %q mentioning %q", d, tc.attribute, tc.detail)
			}
		})
	}
}

func TestInfoSchemaAddressHealth(t *testing.T) {
	p := proxyrpc.New(nil)
	if info := p.Info(); info.Name != "proxy-rpc" || info.Kind != sdk.KindProxy {
		t.Fatalf("info %+v", info)
	}
	names := map[string]bool{}
	for _, a := range p.Schema().Attributes {
		names[a.Name] = true
	}
	for _, want := range []string{"listen", "tls_cert", "tls_key", "max_message_size", "max_hops", "max_concurrent_streams"} {
		if !names[want] {
			t.Errorf("schema lacks %s", want)
		}
	}
	if _, err := p.Address(t.Context()); err == nil {
		t.Error("unconfigured proxy has an address")
	}
	if err := p.Health(t.Context()); err == nil {
		t.Error("unconfigured proxy is healthy")
	}
	_, addr := startProxy(t, "A", newTestHost(nil), nil)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
}

func TestHealthyOnceWatching(t *testing.T) {
	p, _ := startProxy(t, "A", newTestHost(nil), nil)
	waitFor(t, "health", func() bool { return p.Health(t.Context()) == nil })
}

// TestTLS: with tls_cert and tls_key, clients reach the proxy over TLS.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	addr, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, addr, 1, "A"))
	_, proxyAddr := startProxy(t, "A", host, map[string]any{"tls_cert": certFile, "tls_key": keyFile})
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})
	cc, err := grpc.NewClient(proxyAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), forward.ServiceKey, interopService)
	waitFor(t, "a call over TLS", func() bool {
		_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
		return err == nil
	})
}

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestCloseDrainsCallsInFlight: Close stops taking new connections but lets
// a running stream finish.
func TestCloseDrainsCallsInFlight(t *testing.T) {
	addr, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, addr, 1, "A"))
	p, proxyAddr := startProxy(t, "A", host, nil)
	cc := dial(t, proxyAddr)
	waitRouted(t, cc)
	tc := testgrpc.NewTestServiceClient(cc)
	stream, err := tc.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ping := func() error {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
			return err
		}
		_, err := stream.Recv()
		return err
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	waitFor(t, "the proxy to stop accepting connections", func() bool {
		c, err := net.Dial("tcp", proxyAddr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := ping(); err != nil {
		t.Fatalf("stream cut by Close instead of drained: %v", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a call was in flight")
	default:
	}
	stream.CloseSend()
	stream.Recv()
	<-closed
}

// TestReconfigureRebindsTheSameAddress: a second Configure replaces the
// running proxy, which first gives up its address.
func TestReconfigureRebindsTheSameAddress(t *testing.T) {
	addr, _ := startInterop(t)
	host := newTestHost(nil)
	host.set(localRoute(interopService, addr, 1, "A"))
	p, proxyAddr := startProxy(t, "A", host, nil)
	raw, _ := json.Marshal(map[string]any{"listen": proxyAddr, "max_message_size": 1024})
	if diags := p.Configure(t.Context(), sdk.ConfigureRequest{Config: raw, Host: host}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	if got, _ := p.Address(t.Context()); got != proxyAddr {
		t.Fatalf("address %s, want %s", got, proxyAddr)
	}
	tc := testgrpc.NewTestServiceClient(dial(t, proxyAddr))
	waitFor(t, "routes after reconfigure", func() bool {
		_, err := tc.EmptyCall(t.Context(), &testpb.Empty{})
		return err == nil
	})
	// The new limit applies.
	_, err := tc.UnaryCall(t.Context(), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 2048)}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("2 KiB through a 1 KiB limit: %v", err)
	}
}
