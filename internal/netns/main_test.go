package netns_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines in both processes: the test process,
// which only waits for its children, and each child, which runs a body.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
