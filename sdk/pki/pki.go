// Package pki issues and loads the certificates that give microhost nodes
// their identity: one CA per network, one certificate per node.
//
// The node id is carried in the certificate as a URI SAN of the form
// microhost://node/ID, which is authoritative; the CommonName repeats the id
// for people reading the certificate and is never trusted on its own.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// URIScheme and URIHost form the node id SAN: microhost://node/ID.
const (
	URIScheme = "microhost"
	URIHost   = "node"
)

// Validity periods of issued certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 2 * 365 * 24 * time.Hour
)

// File names inside a PKI directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// ErrExists is returned (wrapped) when a file would be overwritten.
var ErrExists = errors.New("refusing to overwrite existing file")

// ErrNoNodeID is returned (wrapped) when a certificate carries no node id.
var ErrNoNodeID = errors.New("certificate carries no microhost node id")

// NodeFiles names the certificate and key files of node id inside dir.
func NodeFiles(dir, id string) (certFile, keyFile string) {
	return filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
}

// ValidateID checks that id can name a node: 1–128 characters from
// [A-Za-z0-9._-], so that it is safe in a file name and a URI path.
func ValidateID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("node id %q: must be 1 to 128 characters", id)
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("node id %q: character %q not allowed (use letters, digits, '.', '_', '-')", id, r)
		}
	}
	if id == "." || id == ".." {
		return fmt.Errorf("node id %q is not allowed", id)
	}
	return nil
}

// NodeURI is the URI SAN that names node id.
func NodeURI(id string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: URIHost, Path: "/" + id}
}

// NodeID returns the node id from cert's microhost://node/ID URI SAN.
func NodeID(cert *x509.Certificate) (string, error) {
	var ids []string
	for _, u := range cert.URIs {
		if u.Scheme == URIScheme && u.Host == URIHost {
			ids = append(ids, strings.TrimPrefix(u.Path, "/"))
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("%w (subject %q has no %s://%s/ID URI SAN)", ErrNoNodeID, cert.Subject.CommonName, URIScheme, URIHost)
	case 1:
		if err := ValidateID(ids[0]); err != nil {
			return "", fmt.Errorf("certificate URI SAN: %w", err)
		}
		return ids[0], nil
	}
	return "", fmt.Errorf("certificate carries %d node ids %v; exactly one is allowed", len(ids), ids)
}

// CA is a certificate authority able to issue node certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// InitCA creates a new CA in dir (ca.pem, ca-key.pem). It never overwrites.
func InitCA(dir string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	if err := refuseExisting(certFile, keyFile); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create CA directory: %w", err)
	}
	ca, err := NewCA("microhost CA")
	if err != nil {
		return nil, err
	}
	if err := writeKeyPair(certFile, keyFile, ca.Cert, ca.Key); err != nil {
		return nil, err
	}
	return ca, nil
}

// NewCA creates a CA in memory.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"microhost"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads the CA and its key from dir.
func LoadCA(dir string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA from %s: key cannot sign", dir)
	}
	if !pair.Leaf.IsCA {
		return nil, fmt.Errorf("load CA from %s: %s is not a CA certificate", dir, CAFile)
	}
	return &CA{Cert: pair.Leaf, Key: signer}, nil
}

// Issue loads the CA from dir and writes a certificate for node id to
// dir/ID.pem and dir/ID-key.pem. It never overwrites.
func Issue(dir, id string, dnsNames []string, ips []net.IP) (certFile, keyFile string, err error) {
	if err := ValidateID(id); err != nil {
		return "", "", err
	}
	certFile, keyFile = NodeFiles(dir, id)
	if err := refuseExisting(certFile, keyFile); err != nil {
		return "", "", err
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return "", "", err
	}
	cert, key, err := ca.NewNode(id, dnsNames, ips)
	if err != nil {
		return "", "", err
	}
	return certFile, keyFile, writeKeyPair(certFile, keyFile, cert, key)
}

// NewNode issues a certificate for node id, usable as both TLS client and
// server (links are symmetric).
func (ca *CA) NewNode(id string, dnsNames []string, ips []net.IP) (*x509.Certificate, crypto.Signer, error) {
	if err := ValidateID(id); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: id, Organization: []string{"microhost"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{NodeURI(id)},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("create node certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse node certificate: %w", err)
	}
	return cert, key, nil
}

// Node is what a tunnel needs to authenticate itself and its peers.
type Node struct {
	ID          string
	Certificate tls.Certificate // leaf first; Leaf is set
	Roots       *x509.CertPool  // CAs that peers' certificates must chain to
	// Insecure marks a throwaway identity: peers are not verified.
	Insecure bool
}

// LoadNode reads a node's certificate, key and CA, and checks that the
// certificate is valid now, chains to the CA and carries a node id.
func LoadNode(caFile, certFile, keyFile string) (*Node, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load node certificate %s with key %s: %w", certFile, keyFile, err)
	}
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate chain in %s: %w", certFile, err)
		}
		intermediates.AddCert(c)
	}
	if _, err := Verify(pair.Leaf, intermediates, roots, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("certificate %s does not verify against CA %s: %w", certFile, caFile, err)
	}
	id, err := NodeID(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	return &Node{ID: id, Certificate: pair, Roots: roots}, nil
}

// Verify checks that cert chains to roots for usage and returns its node id.
func Verify(cert *x509.Certificate, intermediates, roots *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return "", err
	}
	return NodeID(cert)
}

// Throwaway makes an in-memory CA and a certificate for node id, for the
// insecure development mode. Peers are not verified in that mode.
func Throwaway(id string) (*Node, error) {
	ca, err := NewCA("microhost throwaway CA")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.NewNode(id, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &Node{
		ID:          id,
		Certificate: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		Roots:       roots,
		Insecure:    true,
	}, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return n, nil
}

func refuseExisting(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check %s: %w", f, err)
		}
	}
	return nil
}

func writeKeyPair(certFile, keyFile string, cert *x509.Certificate, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeExclusive(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeExclusive(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

// writeExclusive creates path with data, failing if it exists (O_EXCL closes
// the race between the existence check and the write).
func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
