package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"

	"github.com/quic-go/quic-go"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// Bytes moved per stream in G6, in chunks (gRPC messages, stream writes).
const (
	streamBytes = 32 << 20
	streamChunk = 64 << 10
)

// rawQUIC is the G6 baseline: a quic-go server on loopback that reads a
// stream to its end and answers with the byte count.
type rawQUIC struct {
	ln     *quic.Listener
	client *tls.Config
}

// quicConfig matches the windows of the tunnel-quic plugin, so the
// baseline is quic-go as the tunnel uses it, without the layers above.
func quicConfig() *quic.Config {
	return &quic.Config{
		InitialStreamReceiveWindow: 1 << 20,
		MaxStreamReceiveWindow:     16 << 20,
		MaxConnectionReceiveWindow: 64 << 20,
	}
}

var rawQUICFixture = newShared(startRawQUIC)

func startRawQUIC(context.Context) (*rawQUIC, func(), error) {
	cert, pool, err := selfSigned()
	if err != nil {
		return nil, nil, err
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"bench"}}, quicConfig())
	if err != nil {
		return nil, nil, err
	}
	r := &rawQUIC{ln: ln, client: &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"bench"}}}
	go r.serve()
	return r, func() { ln.Close() }, nil
}

func (r *rawQUIC) serve() {
	for {
		conn, err := r.ln.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			defer conn.CloseWithError(0, "")
			s, err := conn.AcceptStream(context.Background())
			if err != nil {
				return
			}
			n, err := io.Copy(io.Discard, s)
			if err != nil {
				return
			}
			binary.Write(s, binary.BigEndian, n)
			s.Close()
			// Wait for the client to close, so the count gets out.
			<-conn.Context().Done()
		}()
	}
}

// throughput moves streamBytes over one stream of a fresh connection and
// returns MB/s, from the first write until the server's count arrives.
func (r *rawQUIC) throughput(ctx context.Context) (float64, error) {
	conn, err := quic.DialAddr(ctx, r.ln.Addr().String(), r.client, quicConfig())
	if err != nil {
		return 0, err
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, err
	}
	chunk := make([]byte, streamChunk)
	start := time.Now()
	for sent := 0; sent < streamBytes; sent += len(chunk) {
		if _, err := s.Write(chunk); err != nil {
			return 0, err
		}
	}
	if err := s.Close(); err != nil {
		return 0, err
	}
	var got int64
	if err := binary.Read(s, binary.BigEndian, &got); err != nil {
		return 0, fmt.Errorf("reading the byte count: %w", err)
	}
	elapsed := time.Since(start)
	if got != streamBytes {
		return 0, fmt.Errorf("the server counted %d bytes, want %d", got, streamBytes)
	}
	return streamBytes / elapsed.Seconds() / 1e6, nil
}

// grpcThroughput moves streamBytes in one client-streaming call and
// returns MB/s, from the call's start until its answer.
func grpcThroughput(ctx context.Context, c testpb.TestServiceClient) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req := &testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, streamChunk)}}
	start := time.Now()
	stream, err := c.StreamingInputCall(ctx)
	if err != nil {
		return 0, err
	}
	for sent := 0; sent < streamBytes; sent += streamChunk {
		if err := stream.Send(req); err != nil {
			return 0, err
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if got := resp.GetAggregatedPayloadSize(); got != streamBytes {
		return 0, fmt.Errorf("the backend counted %d bytes, want %d", got, streamBytes)
	}
	return streamBytes / elapsed.Seconds() / 1e6, nil
}

func streamThroughput() *measurement {
	return &measurement{
		ID: "G6", Name: fmt.Sprintf("one gRPC stream's throughput through 2 nodes (%d MiB)", streamBytes>>20), Baseline: "raw quic-go single stream",
		Unit: "x", Target: ">= 0.8x", Pass: atLeast(0.8),
		Uses: []fixture{overlayFixture, rawQUICFixture},
		Pair: func(ctx context.Context, _ int) (float64, error) {
			r, err := rawQUICFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			o, err := overlayFixture.get(ctx)
			if err != nil {
				return 0, err
			}
			raw, err := r.throughput(ctx)
			if err != nil {
				return 0, fmt.Errorf("raw quic-go: %w", err)
			}
			overlay, err := grpcThroughput(ctx, o.remote)
			if err != nil {
				return 0, fmt.Errorf("gRPC through 2 nodes: %w", err)
			}
			fmt.Printf("    raw quic-go %.0f MB/s, gRPC through 2 nodes %.0f MB/s\n", raw, overlay)
			return overlay / raw, nil
		},
	}
}

// selfSigned makes a certificate for localhost and a pool that trusts it.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
