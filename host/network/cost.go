package network

import "time"

// Link cost, the metric a route pays for crossing one link:
//
//	cost(rtt) = clamp(round(rtt / 100µs), 1, 1_000_000)
//	cost(0)   = 1000   (an unmeasured link costs as much as a 100 ms one)
//
// A local route has metric 1 and a learned route has the advertised metric
// plus the cost of the link to the peer it came from, so the metric of a
// route is 1 + the sum of link costs along its path, and a local route
// always beats a remote one. An unmeasured link must never look best (a
// go-micro bug did exactly that).
const (
	costUnit       = 100 * time.Microsecond
	unmeasuredCost = 1000
	maxLinkCost    = 1_000_000
	// minCostChange is the least change of a link's cost (1 ms) that is
	// taken up; see settleCost.
	minCostChange = 10
	// maxMetric bounds accumulated metrics far below overflow.
	maxMetric = 1 << 40
)

func linkCost(rtt time.Duration) int64 {
	if rtt <= 0 {
		return unmeasuredCost
	}
	c := int64((rtt + costUnit/2) / costUnit)
	return max(1, min(c, maxLinkCost))
}

// settleCost applies hysteresis: RTTs jitter, and every change of a link's
// cost changes the metric of every route through it and is advertised, so
// the cost in use moves only when the measured one differs by more than a
// quarter and by more than minCostChange. Below a millisecond, RTTs on a
// LAN or loopback wander by several times under load without telling one
// path from another.
func settleCost(current, measured int64) int64 {
	if current == 0 {
		return measured
	}
	diff := measured - current
	if diff < 0 {
		diff = -diff
	}
	if diff > max(minCostChange, current/4) {
		return measured
	}
	return current
}

// addMetric adds a link cost to an advertised metric; a metric below 1 (an
// older peer that sent none) counts as a local route's 1.
func addMetric(advertised, cost int64) int64 {
	return min(max(advertised, 1)+cost, maxMetric)
}
