package connpool

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

func TestPoolReusesAndSweeps(t *testing.T) {
	now := time.Unix(0, 0)
	dials := 0
	p := New(func(target string) (*grpc.ClientConn, error) {
		dials++
		return grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}, func() time.Time { return now })
	defer p.Close()

	a1, releaseA1, err := p.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	a2, releaseA2, _ := p.Get("a")
	_, releaseB, _ := p.Get("b")
	if a1 != a2 || dials != 2 {
		t.Fatalf("connection not shared: %d dials", dials)
	}
	releaseB()
	releaseB() // a second release is harmless
	releaseA1()

	none := func(string) bool { return false }
	now = now.Add(time.Hour)
	if closed := p.Sweep(none, time.Minute); !slices.Equal(closed, []string{"b"}) {
		t.Fatalf("swept %v; a is still in use", closed)
	}
	releaseA2()
	if closed := p.Sweep(none, time.Minute); len(closed) != 0 {
		t.Fatalf("swept %v right after use", closed)
	}
	now = now.Add(time.Minute)
	if closed := p.Sweep(func(target string) bool { return target == "a" }, time.Minute); len(closed) != 0 {
		t.Fatalf("swept %v that a route needs", closed)
	}
	if closed := p.Sweep(none, time.Minute); !slices.Equal(closed, []string{"a"}) {
		t.Fatalf("swept %v", closed)
	}
	if a1.GetState() != connectivity.Shutdown || p.Len() != 0 {
		t.Fatal("swept connection not closed")
	}
}

func TestPoolDialErrorsAndClose(t *testing.T) {
	p := New(func(target string) (*grpc.ClientConn, error) { return nil, errors.New("boom") }, nil)
	if _, _, err := p.Get("x"); err == nil || err.Error() != "connect to x: boom" {
		t.Fatalf("got %v", err)
	}
	p.Close()
	if _, _, err := p.Get("x"); err == nil {
		t.Fatal("closed pool handed out a connection")
	}
}
