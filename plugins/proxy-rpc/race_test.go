//go:build race

package proxyrpc_test

// raceEnabled: the race detector allows at most 8128 live goroutines.
const raceEnabled = true
