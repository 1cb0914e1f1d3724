package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microhost/microhost/plugins/router-memory/damping"
)

// Strategy says which routes a node advertises.
type Strategy string

const (
	// All advertises the best route to every instance of every service.
	All Strategy = "all"
	// Best advertises only the best route of each service.
	Best Strategy = "best"
	// Local advertises only the node's own local routes.
	Local Strategy = "local"
	// None advertises nothing.
	None Strategy = "none"
)

// ParseStrategy checks a strategy name.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case All, Best, Local, None:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q: want all, best, local or none", s)
}

// Defaults.
const (
	DefaultFlushInterval = 200 * time.Millisecond
	DefaultSyncInterval  = 30 * time.Second
	// DefaultTTLFactor times the sync interval is the default route TTL: a
	// route survives two lost syncs.
	DefaultTTLFactor   = 3
	DefaultAdvertQueue = 256
)

// Config configures an Engine. Zero durations take the defaults.
type Config struct {
	NodeID   string
	Network  string
	Strategy Strategy // "" means All
	// FlushInterval is how long changes are gathered into one advert.
	FlushInterval time.Duration
	// SyncInterval is how often every advertised origin gets a full Sync.
	SyncInterval time.Duration
	// RouteTTL is put in adverts: peers drop a route not refreshed for this long.
	RouteTTL time.Duration
	// Damping knobs; nil disables flap damping.
	Damping *damping.Config
	// Clock drives every timer of the engine; nil is time.Now.
	Clock func() time.Time
	Log   hclog.Logger
	// WatchQueue and AdvertQueue bound each subscriber's backlog.
	WatchQueue, AdvertQueue int
}

func (c *Config) setDefaults() {
	if c.Strategy == "" {
		c.Strategy = All
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.RouteTTL == 0 {
		c.RouteTTL = DefaultTTLFactor * c.SyncInterval
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = hclog.NewNullLogger()
	}
	if c.AdvertQueue <= 0 {
		c.AdvertQueue = DefaultAdvertQueue
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is empty"))
	}
	if _, err := ParseStrategy(string(c.Strategy)); err != nil {
		errs = append(errs, err)
	}
	if c.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("flush interval %v is negative", c.FlushInterval))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("sync interval %v is negative", c.SyncInterval))
	}
	if c.RouteTTL <= c.SyncInterval {
		errs = append(errs, fmt.Errorf("route TTL %v must exceed the sync interval %v, or routes lapse between syncs", c.RouteTTL, c.SyncInterval))
	}
	if c.Damping != nil {
		if err := c.Damping.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
