//go:build race

package quictun

const raceEnabled = true
