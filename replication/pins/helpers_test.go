package pins

import (
	"context"
	"testing"

	"github.com/troupe-go/troupe/internal/clustertest"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	t.Cleanup(cancel)
	return ctx
}
