package membership_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/netns"
	"github.com/troupe-go/troupe/membership"
)

// Multicast tests run inside a network namespace of their own (netns.Run),
// so that no announcement can leave the machine.

// multicastOnly configures a node with no addresses at all: it must find
// its peers on the group.
func multicastOnly(group string) func(int, *membership.Config) {
	return func(_ int, c *membership.Config) {
		c.WellKnown = nil
		c.Multicast = &membership.MulticastConfig{Group: group, Interface: "lo"}
	}
}

func TestMulticastDiscovery(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	start := time.Now()
	tc := clustertest.Start(t, 5, multicastOnly("239.192.10.1"))
	tc.WaitMembers(5)
	t.Logf("5 nodes formed a cluster by multicast in %s", time.Since(start))
	// No node was given an address: every join came from an announcement.
	var heard uint64
	for _, n := range tc.Nodes {
		require.Positive(t, n.Stats().Multicast.Sent, n.Name())
		heard += n.Stats().Multicast.Accepted
	}
	require.Positive(t, heard)
}

// Two clusters on one group stay apart: each node hears the other
// cluster's announcements and drops them.
func TestMulticastOtherClusterStaysSeparate(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	a := clustertest.Start(t, 3, multicastOnly("239.192.10.2"))
	b := clustertest.New(t)
	b.Name += "-other"
	for i := range 3 {
		b.Add(func(c *membership.Config) {
			// Hosts after cluster a's, names that would clash if they mixed.
			*c = clustertest.Config(t, b.Name, 3+i, b.Net)
			multicastOnly("239.192.10.2")(i, c)
		})
	}
	a.WaitMembers(3)
	b.WaitMembers(3)
	require.Eventually(t, func() bool { return a.Nodes[0].Stats().Multicast.Foreign > 0 }, clustertest.Timeout, 50*time.Millisecond)
	for _, n := range a.Nodes {
		for _, m := range n.Members() {
			require.Contains(t, []string{"node-0", "node-1", "node-2"}, m.Name)
		}
	}
}

// A node with the wrong key hears the cluster but is not taken in, and
// cannot take anyone in.
func TestMulticastWrongKeyIgnored(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	key := []byte("0123456789abcdef")
	tc := clustertest.Start(t, 3, multicastOnly("239.192.10.3"), func(_ int, c *membership.Config) {
		c.SecretKeys = [][]byte{key}
	})
	tc.WaitMembers(3)
	intruder := tc.Add(func(c *membership.Config) {
		multicastOnly("239.192.10.3")(0, c)
		c.SecretKeys = [][]byte{[]byte("fedcba9876543210")}
	})
	require.Eventually(t, func() bool { return tc.Nodes[0].Stats().Multicast.Forged > 0 }, clustertest.Timeout, 50*time.Millisecond)
	require.Eventually(t, func() bool { return intruder.Stats().Multicast.Forged > 0 }, clustertest.Timeout, 50*time.Millisecond)
	// Give the intruder's own join attempts time to fail: it keeps
	// hearing (and dropping) the cluster's announcements meanwhile.
	require.Eventually(t, func() bool { return intruder.Stats().Multicast.Received > 20 }, clustertest.Timeout, 50*time.Millisecond)
	require.Equal(t, 1, intruder.NumMembers())
	for _, n := range tc.Nodes[:3] {
		require.Equal(t, 3, n.NumMembers())
	}
}

// TestMulticastColdStart10 measures (and logs) how long ten nodes take to
// form a cluster from a cold start by multicast alone, and, as the
// reference in the same run, ten nodes that join a well-known member (the
// first node); BENCHMARKS.md quotes both. It asserts convergence, not a
// time.
func TestMulticastColdStart10(t *testing.T) {
	if !netns.Run(t) {
		return
	}
	coldStart := func(multicast bool) time.Duration {
		tc := clustertest.New(t)
		start := time.Now()
		for i := range 10 {
			tc.Add(func(c *membership.Config) {
				if multicast {
					multicastOnly("239.192.10.5")(i, c)
				} else if i > 0 {
					c.WellKnown = []string{tc.Nodes[0].Addr()}
				}
			})
		}
		tc.WaitMembers(10)
		d := time.Since(start)
		for _, n := range tc.Nodes {
			n.Shutdown()
		}
		return d
	}
	mcast, wka := coldStart(true), coldStart(false)
	t.Logf("cold start of 10 nodes: multicast %s, well-known member %s, ratio %.2f", mcast, wka, mcast.Seconds()/wka.Seconds())
}
