//go:build race

package faultsuite

// raceEnabled builds the nodes with the race detector when the test has it.
const raceEnabled = true
