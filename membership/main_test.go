package membership_test

import (
	"testing"

	"github.com/troupe-go/troupe/internal/clustertest"
)

// Every test must leave no goroutine behind.
func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }
