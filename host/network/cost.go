package network

import (
	"time"

	"github.com/microhost/microhost/sdk"
)

// Link cost, the metric a route pays for crossing one link:
//
//	cost(rtt) = clamp(round(rtt / 100µs), 10, 1_000_000)
//	cost(0)   = 1000   (an unmeasured link costs as much as a 100 ms one)
//
// where rtt is the lowest RTT the link reported within the cost window
// (Config.CostWindow, 30 s by default), its MinRTT where the tunnel
// measures one (costRTT). A local route has metric 1 and a
// learned route has the advertised metric plus the cost of the link to the
// peer it came from, so the metric of a route is 1 + the sum of link costs
// along its path, and a local route always beats a remote one. An
// unmeasured link must never look best (a go-micro bug did exactly that).
//
// Why the lowest RTT, taken up slowly: the RTT a tunnel reports is a
// moving average of round trips, and on a loaded machine a round trip
// waits for the CPU, so the average jumps by tens or hundreds of
// milliseconds, loopback included, and takes seconds to come back down, a
// step at a time. A cost that followed it re-advertised every route over
// the link at each step. The lowest RTT is what the link takes when
// nothing queues; it rises only when a whole window went by without a
// faster sample, so a link that became slower for good is re-costed within
// a window. The cost in use moves only by more than a quarter
// (settleCost), at most once per half window (peerCost.update).
//
// Why MinRTT, where there is one: a QUIC tunnel's smoothed RTT also holds
// the time a peer took to be scheduled before it acknowledged, which on a
// busy machine is milliseconds. With 40 node processes on 2 cores, loopback
// links cost 10 to 200 and rose and fell for minutes, so shorter paths
// often cost more than longer ones, and routes were re-advertised as their
// adverts arrived in the wrong order. QUIC's lowest sample is what the path
// itself takes.
//
// Why a floor of 1 ms: crossing a node (its proxy and tunnel) costs about a
// millisecond itself, and differences below that are noise on a LAN or
// loopback, so near links cost the same and the path with fewer hops wins,
// which is also the one whose advert arrives first.
const (
	costUnit       = 100 * time.Microsecond
	unmeasuredCost = 1000
	minLinkCost    = 10
	maxLinkCost    = 1_000_000
	// maxMetric bounds accumulated metrics far below overflow.
	maxMetric = 1 << 40
)

func linkCost(rtt time.Duration) int64 {
	if rtt <= 0 {
		return unmeasuredCost
	}
	c := int64((rtt + costUnit/2) / costUnit)
	return max(minLinkCost, min(c, maxLinkCost))
}

// settleCost applies hysteresis: every change of a link's cost changes the
// metric of every route through it and is advertised, so the cost in use
// moves only when the measured one differs from it by more than a quarter.
func settleCost(current, measured int64) int64 {
	if current == 0 {
		return measured
	}
	diff := measured - current
	if diff < 0 {
		diff = -diff
	}
	if 4*diff > current {
		return measured
	}
	return current
}

// peerCost is the cost of the link to one peer.
type peerCost struct {
	cost    int64     // in use
	changed time.Time // when a measured cost was last taken up
	lowest  lowestRTT
}

// update takes the RTT the link reports now and returns the cost to use:
// that of the lowest RTT of the window, through settleCost, changing at
// most once per half window. A moving average coming down from a stall
// takes several polls, each more than a quarter lower; taking one step
// per half window re-advertises the routes over the link once instead of
// at every step. The first measurement is taken at once.
func (c *peerCost) update(now time.Time, rtt, window time.Duration) int64 {
	lowest := c.lowest.observe(now, rtt, window)
	switch {
	case lowest == 0:
		c.cost = unmeasuredCost
	case c.changed.IsZero():
		c.cost, c.changed = linkCost(lowest), now
	case now.Sub(c.changed) >= window/2:
		if settled := settleCost(c.cost, linkCost(lowest)); settled != c.cost {
			c.cost, c.changed = settled, now
		}
	}
	return c.cost
}

// lowestRTT is the lowest RTT a link reported within about a window: the
// lower of the minima of the current and the previous half window, so a
// sample counts for between half a window and a whole one.
type lowestRTT struct {
	current, previous time.Duration // 0: no sample
	since             time.Time     // start of the current half window
}

// observe records a sample (0 is "not measured yet" and records nothing)
// and returns the lowest RTT of the window, or 0 if there is none.
func (w *lowestRTT) observe(now time.Time, rtt, window time.Duration) time.Duration {
	if elapsed := now.Sub(w.since); elapsed >= window/2 {
		w.previous = w.current
		if elapsed >= window {
			w.previous = 0
		}
		w.current, w.since = 0, now
	}
	if rtt > 0 && (w.current == 0 || rtt < w.current) {
		w.current = rtt
	}
	if w.current == 0 || (w.previous > 0 && w.previous < w.current) {
		return w.previous
	}
	return w.current
}

// addMetric adds a link cost to an advertised metric; a metric below 1 (an
// older peer that sent none) counts as a local route's 1.
func addMetric(advertised, cost int64) int64 {
	return min(max(advertised, 1)+cost, maxMetric)
}

// costRTT is the RTT a link's cost follows: its lowest measured round trip,
// or its smoothed RTT from a tunnel that does not report the lowest.
func costRTT(l sdk.Link) time.Duration {
	if l.MinRTT > 0 {
		return l.MinRTT
	}
	return l.RTT
}
