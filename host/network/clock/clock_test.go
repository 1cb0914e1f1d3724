package clock

import (
	"testing"
	"time"
)

func TestFakeFiresDueWaitersOnly(t *testing.T) {
	start := time.Unix(100, 0)
	f := NewFake(start)
	early, late := f.After(time.Second), f.After(3*time.Second)
	if f.Waiters() != 2 {
		t.Fatalf("waiters = %d", f.Waiters())
	}
	f.Advance(2 * time.Second)
	select {
	case got := <-early:
		if !got.Equal(start.Add(2 * time.Second)) {
			t.Fatalf("fired with %v", got)
		}
	default:
		t.Fatal("due waiter did not fire")
	}
	select {
	case <-late:
		t.Fatal("waiter fired early")
	default:
	}
	f.Advance(time.Second)
	<-late
	if f.Waiters() != 0 || !f.Now().Equal(start.Add(3*time.Second)) {
		t.Fatalf("waiters %d, now %v", f.Waiters(), f.Now())
	}
	select {
	case <-f.After(0):
	default:
		t.Fatal("After(0) did not fire at once")
	}
}
