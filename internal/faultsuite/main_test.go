package faultsuite

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine of the workload and of the process watchers must be
// gone when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
