//go:build !race

package proxyrpc_test

const raceEnabled = false
