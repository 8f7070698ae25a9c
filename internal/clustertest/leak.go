package clustertest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakGrace is how long goroutines may take to end after the last test.
// Our own Shutdown waits for every goroutine it started; memberlist's does
// not wait for a probe already under way, which ends within one probe
// interval (1 s in the Local and LAN profiles), plus the TCP fallback
// ping's deadline.
const leakGrace = 10 * time.Second

// VerifyTestMain runs the tests and then fails the package if any
// goroutine is still running after leakGrace. Use it as the package's
// TestMain.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(leakGrace)
		for {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goroutines still running %s after the last test:\n%v\n", leakGrace, err)
				code = 1
				break
			}
			time.Sleep(100 * time.Millisecond) // polling until the deadline
		}
	}
	os.Exit(code)
}
