package quictun

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"

	"github.com/microhost/microhost/sdk/pki"
)

func x509Pool(ca *pki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func tlsCert(cert *x509.Certificate, key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func throwaway(t interface {
	Helper()
	Fatal(...any)
}, id string) (*pki.Node, error) {
	t.Helper()
	n, err := pki.Throwaway(id)
	if err != nil {
		t.Fatal(err)
	}
	return n, nil
}
