package membership_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: Shutdown waits for all of
// ours, and memberlist's own settle right after its Shutdown.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
