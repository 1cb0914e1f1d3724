package quictun

import (
	"context"
	"crypto/tls"
	"io"
	"strconv"
	"testing"

	"github.com/quic-go/quic-go"
)

const benchChunk = 1 << 20

// benchPair starts two linked nodes with b listening on "bench".
func benchPair(b *testing.B) (*testNode, *Listener) {
	ca := newTestCA(b)
	x := startNode(b, ca.identity(b, "x"), "127.0.0.1:0", relaxed)
	y := startNode(b, ca.identity(b, "y"), "127.0.0.1:0", relaxed)
	connect(b, x, y)
	ls, err := y.Listen("bench")
	if err != nil {
		b.Fatal(err)
	}
	waitListening(b, x, "y", "bench")
	return x, ls
}

// BenchmarkSessionThroughput measures one unicast session carrying 1 MiB
// messages, and 64 KiB ones (the size of a proxied stream's messages), with
// a cancellable context as the tunnel's consumers use; compare with
// BenchmarkRawStreamThroughput.
func BenchmarkSessionThroughput(b *testing.B) {
	for _, size := range []int{benchChunk, 64 << 10} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) { benchThroughput(b, size) })
	}
}

func benchThroughput(b *testing.B, size int) {
	x, ls := benchPair(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := x.Dial(ctx, "bench", DialOptions{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		in, err := ls.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		defer in.Close()
		for {
			if _, err := in.Recv(ctx); err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- err
				return
			}
		}
	}()
	msg := &Message{Body: make([]byte, size)}
	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		if err := s.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	_ = s.CloseSend()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	s.Close()
}

// BenchmarkSessionRoundTrip measures a small request and reply on an open
// unicast session. Both ends use a cancellable context, as the tunnel's
// consumers do.
func BenchmarkSessionRoundTrip(b *testing.B) {
	x, ls := benchPair(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := x.Dial(ctx, "bench", DialOptions{})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		in, err := ls.Accept(ctx)
		if err != nil {
			return
		}
		defer in.Close()
		for {
			m, err := in.Recv(ctx)
			if err != nil || in.Send(ctx, m) != nil {
				return
			}
		}
	}()
	msg := &Message{Header: map[string]string{"method": "/svc/M"}, Body: make([]byte, 128)}
	b.ResetTimer()
	for range b.N {
		if err := s.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s.Close()
}

// BenchmarkRawStreamThroughput is the baseline: one bare quic-go stream with
// the same QUIC configuration and no framing.
func BenchmarkRawStreamThroughput(b *testing.B) {
	ca := newTestCA(b)
	id := ca.identity(b, "raw")
	n := &Node{cfg: Config{KeepaliveInterval: DefaultKeepaliveInterval}}
	_ = n.cfg.fill()
	qc := n.quicConfig()
	tlsConf := &tls.Config{Certificates: []tls.Certificate{id.Certificate}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, qc)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			done <- err
			return
		}
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(io.Discard, str)
		done <- err
		_ = conn.CloseWithError(0, "")
	}()
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}, qc)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for range b.N {
		if _, err := str.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = str.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
