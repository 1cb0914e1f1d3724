package registry

import "time"

// Clock is the registry's source of time, so that tests can drive TTLs and
// check intervals by hand.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed, never from within AfterFunc
	// itself (the registry holds its lock when it calls AfterFunc).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it did.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
