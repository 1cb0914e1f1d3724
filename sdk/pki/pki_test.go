package pki

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestInitIssueLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(dir); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA: want ErrExists, got %v", err)
	}
	certFile, keyFile, err := Issue(dir, "node-1", []string{"node1.example"}, []net.IP{net.ParseIP("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Issue(dir, "node-1", nil, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("second Issue: want ErrExists, got %v", err)
	}
	for _, f := range []string{filepath.Join(dir, CAKeyFile), keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	n, err := LoadNode(filepath.Join(dir, CAFile), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != "node-1" || n.Insecure {
		t.Fatalf("loaded node %q insecure=%v", n.ID, n.Insecure)
	}
	leaf := n.Certificate.Leaf
	if leaf.Subject.CommonName != "node-1" || len(leaf.DNSNames) != 1 || len(leaf.IPAddresses) != 1 {
		t.Fatalf("unexpected certificate contents: cn=%q dns=%v ips=%v", leaf.Subject.CommonName, leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.URIs[0].String() != "microhost://node/node-1" {
		t.Fatalf("URI SAN %q", leaf.URIs[0])
	}
}

func TestLoadNodeRejectsForeignCA(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := InitCA(d); err != nil {
			t.Fatal(err)
		}
	}
	certFile, keyFile, err := Issue(b, "x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNode(filepath.Join(a, CAFile), certFile, keyFile); err == nil {
		t.Fatal("certificate from another CA was accepted")
	}
}

func TestIDValidationAndNodeID(t *testing.T) {
	for _, bad := range []string{"", "a/b", "..", "a b", string(make([]byte, 129))} {
		if err := ValidateID(bad); err == nil {
			t.Errorf("ValidateID(%q) accepted", bad)
		}
	}
	if _, _, err := Issue(t.TempDir(), "../evil", nil, nil); err == nil {
		t.Fatal("Issue accepted a path-like id")
	}
	ca, err := NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NodeID(ca.Cert); !errors.Is(err, ErrNoNodeID) {
		t.Fatalf("CA cert: want ErrNoNodeID, got %v", err)
	}
	cert, _, err := ca.NewNode("n", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert.URIs = append(cert.URIs, NodeURI("other"))
	if _, err := NodeID(cert); err == nil {
		t.Fatal("two node ids accepted")
	}
}

func TestThrowaway(t *testing.T) {
	n, err := Throwaway("dev")
	if err != nil {
		t.Fatal(err)
	}
	if !n.Insecure || n.ID != "dev" {
		t.Fatalf("throwaway %+v", n)
	}
	if id, err := Verify(n.Certificate.Leaf, nil, n.Roots, x509.ExtKeyUsageClientAuth); err != nil || id != "dev" {
		t.Fatalf("verify throwaway: %q %v", id, err)
	}
}
