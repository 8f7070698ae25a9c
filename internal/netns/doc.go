// Package netns runs a test inside a fresh Linux network namespace, so
// that tests which send IP multicast can never put a packet on a real
// network.
//
// A test opts in with one call at its top:
//
//	func TestMulticastDiscovery(t *testing.T) {
//		if !netns.Run(t) {
//			return // the parent: the body ran (and was reported) in the child
//		}
//		// From here on the test runs inside its own namespace.
//	}
//
// The lifecycle has two halves, one per process:
//
//  1. In the test process, Run re-executes the test binary for this one
//     test (-test.run=^Name$) with CLONE_NEWNET, so the child starts in a
//     namespace of its own, holding only a loopback interface that is down.
//     Run waits for the child, reports its output (a failure fails the
//     test, a skip skips it) and returns false.
//  2. In the child, which knows it is the child from an environment
//     variable naming the test, Run checks that lo really is the only
//     interface, brings it up with multicast enabled, routes 224.0.0.0/4
//     to it, and returns true: the test body runs there. Multicast sent in
//     the namespace loops back on lo and has nowhere else to go.
//
// Creating a namespace needs root or CAP_SYS_ADMIN, and Linux. Without
// them Run skips the test and says why, except when the environment has
// CI=true: there a skipped multicast test would hide a broken CI setup, so
// it fails instead.
//
// Run keeps no state between calls; the child inherits the binary's race
// detector and coverage instrumentation, and its coverage counters are
// merged into the parent's profile when go test gives the binary a
// -test.gocoverdir.
package netns
