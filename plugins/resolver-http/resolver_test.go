package resolverhttp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/test/testserver"
)

func newResolver(t *testing.T, config map[string]any) *Resolver {
	t.Helper()
	r := New(hclog.NewNullLogger())
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: raw}); diags.HasErrors() {
		t.Fatalf("configure %s: %v", raw, diags.Err())
	}
	if err := r.Health(t.Context()); err != nil {
		t.Fatalf("health after configure: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// bigAnswer is a valid answer of at least size bytes.
func bigAnswer(size int) string {
	var b strings.Builder
	b.WriteString(`{"nodes":[`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"address":"10.%d.%d.%d:9000","priority":%d}`, i>>16&255, i>>8&255, i&255, i%7)
	}
	b.WriteString("]}")
	return b.String()
}

// startPeerServer runs nginx over a directory of answers:
// /peers?name=N serves networks/N.json, other files are served as they are.
func startPeerServer(t *testing.T) string {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "networks", "alpha.json"),
		`{"nodes":[{"address":"10.0.0.2:9000","priority":20},{"address":"10.0.0.1:9000","priority":10},{"address":"[fd00::3]:9000","priority":30}]}`)
	writeFile(t, filepath.Join(root, "networks", "beta.json"), `{"nodes":[{"address":"beta.example:443","priority":0}]}`)
	writeFile(t, filepath.Join(root, "malformed.json"), `{"nodes":[{"address":"10.0.0.1:9000",}]}`)
	writeFile(t, filepath.Join(root, "wrong-types.json"), `{"nodes":[{"address":"10.0.0.1:9000","priority":"first"}]}`)
	writeFile(t, filepath.Join(root, "missing-address.json"), `{"nodes":[{"address":"10.0.0.1:9000"},{"priority":2}]}`)
	writeFile(t, filepath.Join(root, "bad-address.json"), `{"nodes":[{"address":"10.0.0.1"}]}`)
	writeFile(t, filepath.Join(root, "big.json"), bigAnswer(10<<20))
	writeFile(t, filepath.Join(root, "large.json"), bigAnswer(3<<20))
	writeFile(t, filepath.Join(root, "slow.json"), `{"nodes":[{"address":"10.0.0.1:9000","priority":1}]}`)
	ng := testserver.StartNginx(t, testserver.NginxConfig{
		Root: root,
		Server: strings.Join([]string{
			`location = /peers { try_files /networks/$arg_name.json =404; }`,
			`location = /fail { return 500 "database exploded\n"; }`,
			// One byte a second: the answer takes far longer than any timeout.
			`location = /slow.json { limit_rate 1; }`,
			// gzip makes nginx stream without a Content-Length.
			`location /gz/ { alias ` + root + `/; gzip on; gzip_types application/json; gzip_min_length 1; }`,
		}, "\n    "),
	})
	return ng.URL()
}

func TestResolveFromNginx(t *testing.T) {
	base := startPeerServer(t)
	r := newResolver(t, map[string]any{"url": base + "/peers"})
	nodes, err := r.Resolve(t.Context(), "alpha")
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Node{{Address: "10.0.0.1:9000", Priority: 10}, {Address: "10.0.0.2:9000", Priority: 20}, {Address: "[fd00::3]:9000", Priority: 30}}
	if !slices.Equal(nodes, want) {
		t.Errorf("alpha: got %+v, want %+v", nodes, want)
	}
	// The network name picks the answer: it reached nginx as ?name=.
	nodes, err = r.Resolve(t.Context(), "beta")
	if err != nil {
		t.Fatal(err)
	}
	if want := []sdk.Node{{Address: "beta.example:443"}}; !slices.Equal(nodes, want) {
		t.Errorf("beta: got %+v, want %+v", nodes, want)
	}
}

func TestResolveBadAnswers(t *testing.T) {
	base := startPeerServer(t)
	cases := []struct {
		name, path string
		config     map[string]any
		want       []string
		is         error
	}{
		{"unknown network", "/peers", nil, []string{"?name=gamma", "status 404 Not Found"}, nil},
		{"server error", "/fail", nil, []string{"status 500 Internal Server Error", "database exploded"}, nil},
		{"malformed JSON", "/malformed.json", nil, []string{"malformed JSON at byte"}, nil},
		{"wrong field type", "/wrong-types.json", nil, []string{"nodes[0]: priority: want an integer, got a JSON string"}, nil},
		{"missing address", "/missing-address.json", nil, []string{`nodes[1]: missing "address"`}, nil},
		{"bad host:port", "/bad-address.json", nil, []string{`nodes[0]: address "10.0.0.1" is not host:port`}, nil},
		{"10 MB body", "/big.json", nil, []string{"exceeds max_body (1048576 bytes)"}, nil},
		{"10 MB streamed body", "/gz/big.json", nil, []string{"answer exceeds max_body (1048576 bytes)"}, nil},
		{"slow body", "/slow.json", map[string]any{"timeout": "500ms"}, []string{"no complete answer within 500ms"}, ErrTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			config := map[string]any{"url": base + c.path}
			for k, v := range c.config {
				config[k] = v
			}
			r := newResolver(t, config)
			nodes, err := r.Resolve(t.Context(), "gamma")
			if err == nil {
				t.Fatalf("got nodes %v, want an error", nodes)
			}
			url := base + c.path + "?name=gamma"
			for _, s := range append(c.want, "GET "+url) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %q", err, c.is)
			}
			t.Log(err)
		})
	}
}

// A 3 MB answer is fine when max_body allows it, streamed or not.
func TestResolveLargeAnswerWithinLimit(t *testing.T) {
	base := startPeerServer(t)
	for _, path := range []string{"/large.json", "/gz/large.json"} {
		r := newResolver(t, map[string]any{"url": base + path, "max_body": 4 << 20, "timeout": "30s"})
		nodes, err := r.Resolve(t.Context(), "big")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(nodes) < 50_000 || nodes[0].Priority != 0 || nodes[len(nodes)-1].Priority != 6 {
			t.Errorf("%s: %d nodes from %v to %v", path, len(nodes), nodes[0], nodes[len(nodes)-1])
		}
	}
}

// nginx sends headers at once and can only slow the body; a server that
// holds back its headers is a local Go server sleeping in its handler.
func TestResolveSlowHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	t.Cleanup(srv.Close)
	r := newResolver(t, map[string]any{"url": srv.URL, "timeout": "300ms"})
	_, err := r.Resolve(t.Context(), "net")
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("error %v, want a timeout naming %s", err, srv.URL)
	}
}

func TestResolveHTTPSWithPrivateCA(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTLSFiles(t, dir)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "peers.json"), `{"nodes":[{"address":"10.0.0.1:9000","priority":1}]}`)
	ng := testserver.StartNginx(t, testserver.NginxConfig{Root: root, TLSCert: certFile, TLSKey: keyFile,
		Server: `location = /downgrade { return 302 http://127.0.0.1:1/peers.json; }`})
	url := ng.URL() + "/peers.json"
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("nginx URL %s is not https", url)
	}

	r := newResolver(t, map[string]any{"url": url, "ca": caFile})
	if nodes, err := r.Resolve(t.Context(), "net"); err != nil || len(nodes) != 1 {
		t.Fatalf("with the CA: nodes %v, error %v", nodes, err)
	}

	r = newResolver(t, map[string]any{"url": url})
	_, err := r.Resolve(t.Context(), "net")
	if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), url) {
		t.Fatalf("without the CA: error %v, want a certificate error naming %s", err, url)
	}
	t.Log(err)

	r = newResolver(t, map[string]any{"url": url, "insecure_skip_verify": true})
	if _, err := r.Resolve(t.Context(), "net"); err != nil {
		t.Fatalf("with insecure_skip_verify: %v", err)
	}

	r = newResolver(t, map[string]any{"url": ng.URL() + "/downgrade", "ca": caFile})
	if _, err := r.Resolve(t.Context(), "net"); err == nil || !strings.Contains(err.Error(), "refusing redirect from https to http://127.0.0.1:1/peers.json") {
		t.Fatalf("redirect to plain http: error %v, want a refusal", err)
	}
}

// writeTLSFiles writes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTLSFiles(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, leafKey := newKey(), newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return caFile, certFile, keyFile
}

func TestConfigureDiagnostics(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	writeFile(t, notPEM, "hello")
	cases := []struct {
		config    string
		attribute string
		severity  sdk.Severity
	}{
		{`{}`, "url", sdk.SeverityError},
		{`{"url":"ftp://example.com/peers"}`, "url", sdk.SeverityError},
		{`{"url":"http:///peers"}`, "url", sdk.SeverityError},
		{`{"url":"http://example.com/peers?name=x"}`, "url", sdk.SeverityError},
		{`{"url":"http://exa mple.com/"}`, "url", sdk.SeverityError},
		{`{"url":42}`, "url", sdk.SeverityError},
		{`{"url":"http://example.com","timeout":"fast"}`, "timeout", sdk.SeverityError},
		{`{"url":"http://example.com","timeout":"0s"}`, "timeout", sdk.SeverityError},
		{`{"url":"http://example.com","max_body":0}`, "max_body", sdk.SeverityError},
		{`{"url":"http://example.com","max_body":"1MB"}`, "max_body", sdk.SeverityError},
		{`{"url":"https://example.com","ca":"/nonexistent/ca.pem"}`, "ca", sdk.SeverityError},
		{`{"url":"https://example.com","ca":"` + notPEM + `"}`, "ca", sdk.SeverityError},
		{`{"url":"https://example.com","insecure_skip_verify":"yes"}`, "insecure_skip_verify", sdk.SeverityError},
		{`{"url":"https://example.com","insecure_skip_verify":true}`, "insecure_skip_verify", sdk.SeverityWarning},
		{`{"url":"http://example.com","insecure_skip_verify":true}`, "url", sdk.SeverityWarning},
		{`{"url":"http://example.com","max_bdy":10}`, "max_bdy", sdk.SeverityError},
	}
	for _, c := range cases {
		r := New(hclog.NewNullLogger())
		diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(c.config)})
		i := slices.IndexFunc(diags, func(d sdk.Diagnostic) bool { return d.Attribute == c.attribute && d.Severity == c.severity })
		if i < 0 {
			t.Errorf("%s: want a diagnostic of severity %d on %q, got %+v", c.config, c.severity, c.attribute, diags)
			continue
		}
		if diags[i].Summary == "" || diags[i].Detail == "" {
			t.Errorf("%s: diagnostic without summary or detail: %+v", c.config, diags[i])
		}
		if (r.Health(t.Context()) == nil) == diags.HasErrors() {
			t.Errorf("%s: health %v with diagnostics %v", c.config, r.Health(t.Context()), diags)
		}
	}
}

func TestResolveBeforeConfigureAndAfterClose(t *testing.T) {
	r := New(hclog.NewNullLogger())
	if _, err := r.Resolve(t.Context(), "net"); err == nil {
		t.Error("resolve before configure succeeded")
	}
	if diags := r.Configure(t.Context(), sdk.ConfigureRequest{Config: json.RawMessage(`{"url":"http://127.0.0.1:1/"}`)}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	r.Close()
	if _, err := r.Resolve(t.Context(), "net"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("resolve after close: %v", err)
	}
}

func TestSchemaIsValid(t *testing.T) {
	if err := New(hclog.NewNullLogger()).Schema().Validate(); err != nil {
		t.Fatal(err)
	}
}
