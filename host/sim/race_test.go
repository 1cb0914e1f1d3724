//go:build race

package sim

// raceDetector is true when the tests run under the race detector, which
// makes the real-time simulation of 1000 nodes too slow to be meaningful.
const raceDetector = true
