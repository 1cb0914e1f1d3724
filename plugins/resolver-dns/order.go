package resolverdns

import (
	"cmp"
	"slices"
)

// weightedOrder sorts records by ascending priority and, within each
// priority, in the weighted random order of RFC 2782: the chance of a
// record coming next is proportional to its weight, and zero-weight records
// are very unlikely to come before weighted ones. intN(n) returns a random
// number in [0, n).
func weightedOrder(recs []record, intN func(int) int) []record {
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b record) int { return cmp.Compare(a.priority, b.priority) })
	out := make([]record, 0, len(sorted))
	for start := 0; start < len(sorted); {
		end := start
		for end < len(sorted) && sorted[end].priority == sorted[start].priority {
			end++
		}
		out = appendWeighted(out, sorted[start:end], intN)
		start = end
	}
	return out
}

// appendWeighted appends group (one priority) to out in weighted random order.
func appendWeighted(out, group []record, intN func(int) int) []record {
	// RFC 2782 puts zero-weight records first so that only a draw of 0 picks them.
	rest := slices.Clone(group)
	slices.SortStableFunc(rest, func(a, b record) int { return cmp.Compare(min(a.weight, 1), min(b.weight, 1)) })
	for len(rest) > 0 {
		total := 0
		for _, r := range rest {
			total += r.weight
		}
		draw := intN(total + 1) // uniform in [0, total]
		i, sum := 0, 0
		for ; i < len(rest)-1; i++ {
			sum += rest[i].weight
			if sum >= draw {
				break
			}
		}
		out = append(out, rest[i])
		rest = slices.Delete(rest, i, i+1)
	}
	return out
}
