package multicast

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines in the test process and in every
// child that netns.Run starts: Close must leave nothing behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
