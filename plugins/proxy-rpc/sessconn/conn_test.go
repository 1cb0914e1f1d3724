package sessconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
	"github.com/microhost/microhost/sdk/memtunnel"
)

// pair returns the two ends of a unicast session from a to b over an
// in-memory tunnel, as Conns.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	f := memtunnel.NewFabric()
	a, err := f.NewNode("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.NewNode("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Link("a", "b"); err != nil {
		t.Fatal(err)
	}
	tl, err := b.Listen(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	lis := NewListener(tl)
	t.Cleanup(func() { lis.Close() })
	sess, err := a.Dial(t.Context(), "c", sdk.DialOptions{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	client = New(sess)
	server, err = lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestBytesFlowInOrderAcrossMessageBoundaries(t *testing.T) {
	client, server := pair(t)
	if got := server.RemoteAddr().String(); got != "a/c" {
		t.Errorf("remote address %q", got)
	}
	want := bytes.Repeat([]byte("0123456789"), 1000)
	go func() {
		for chunk := range chunks(want, 777) {
			client.Write(chunk)
		}
		client.Close() // the peer reads what was sent, then EOF
	}()
	got, err := io.ReadAll(server) // reads of 512 bytes cut messages in parts
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d, or in the wrong order", len(got), len(want))
	}
}

func chunks(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func TestWriteCopiesTheCallersBuffer(t *testing.T) {
	client, server := pair(t)
	buf := []byte("first")
	client.Write(buf)
	copy(buf, "XXXXX")
	got := make([]byte, 5)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "first" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestReadDeadline(t *testing.T) {
	client, server := pair(t)
	server.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %v", err)
	}
	// A deadline that passes while Read waits interrupts it.
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("passing deadline: %v", err)
	}
	// Clearing it makes reads wait for data again.
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("x"))
	if _, err := server.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestCloseUnblocksReadAndEndsThePeer(t *testing.T) {
	client, server := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		done <- err
	}()
	client.Close()
	if err := <-done; err != io.EOF {
		t.Fatalf("peer read after close: %v", err)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestClosedListenerStopsAccept(t *testing.T) {
	f := memtunnel.NewFabric()
	n, _ := f.NewNode("n")
	tl, err := n.Listen(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	lis := NewListener(tl)
	go lis.Close()
	if _, err := lis.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}
