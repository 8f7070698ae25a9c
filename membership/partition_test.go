package membership_test

import (
	"testing"
	"time"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/netns"
	"github.com/troupe-go/troupe/membership"
)

// partitionAndHeal cuts a 6-node cluster into two halves, waits until each
// half has declared the other failed, heals the cut, and waits until the
// cluster has re-merged by itself.
func partitionAndHeal(t *testing.T, tc *clustertest.Cluster) {
	t.Helper()
	tc.WaitMembers(6)
	left, right := tc.Nodes[:3], tc.Nodes[3:]
	tc.Net.Partition(tc.Hosts(0, 1, 2), tc.Hosts(3, 4, 5))
	start := time.Now()
	clustertest.WaitMembers(t, left, 3)
	clustertest.WaitMembers(t, right, 3)
	t.Logf("each side declared the other failed after %s", time.Since(start))

	tc.Net.Heal()
	start = time.Now()
	tc.WaitMembers(6)
	t.Logf("re-merged %s after the heal", time.Since(start))
}

// Nodes 1..5 know only node 0; after the heal the right half re-joins it
// because it is well-known, and the left half re-joins the right half's
// last known addresses.
func TestPartitionWellKnown(t *testing.T) {
	tc := clustertest.Start(t, 6)
	partitionAndHeal(t, tc)
}

// Nobody knows any address: the halves find each other again only because
// announcements continue, slowly, after joining.
func TestPartitionMulticast(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	tc := clustertest.Start(t, 6, multicastOnly("239.192.10.4"), func(_ int, c *membership.Config) {
		c.Multicast.SlowInterval = time.Second
	})
	partitionAndHeal(t, tc)
}
