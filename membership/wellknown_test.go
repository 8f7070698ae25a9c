package membership_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// The well-known member starts last: the others must keep retrying until
// it answers, then all converge.
func TestWellKnownMemberStartsLast(t *testing.T) {
	tc := clustertest.New(t)
	wkHost := clustertest.Host(4)
	wk := net.JoinHostPort(wkHost, strconv.Itoa(clustertest.FreePort(t, wkHost)))
	for range 4 {
		tc.Add(func(c *membership.Config) { c.WellKnown, c.JoinTimeout = []string{wk}, -1 })
	}
	for _, n := range tc.Nodes {
		require.Equal(t, 1, n.NumMembers(), "nobody to join yet")
	}
	tc.Add(func(c *membership.Config) { c.BindAddr = wk })
	start := time.Now()
	tc.WaitMembers(5)
	t.Logf("converged %s after the well-known member started", time.Since(start))
	for _, n := range tc.Nodes[:4] {
		require.Positive(t, n.Stats().JoinFailures, "%s should have retried", n.Name())
	}
}

// fakeResolver maps host names to addresses; it stands in for DNS, which
// tests cannot configure.
type fakeResolver map[string][]string

func (r fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// A cluster DNS name that resolves to several members: a newcomer that
// knows only the name joins, even though some of its addresses are down.
func TestWellKnownDNSNameWithSeveralAddresses(t *testing.T) {
	tc := clustertest.New(t)
	hosts := tc.Hosts(0, 1, 2)
	port := clustertest.FreePort(t, hosts...)
	// Only nodes 1 and 2 run; the name also lists node 0's address,
	// where nobody listens.
	res := fakeResolver{"cluster.troupe.test": hosts}
	dnsName := net.JoinHostPort("cluster.troupe.test", strconv.Itoa(port))
	tc.Add(func(c *membership.Config) { c.BindAddr = "127.0.0.99:0" }) // placeholder index 0, stopped below
	tc.Nodes[0].Shutdown()
	for i := 1; i <= 2; i++ {
		tc.Add(func(c *membership.Config) {
			c.BindAddr = net.JoinHostPort(hosts[i], strconv.Itoa(port))
			c.WellKnown = []string{dnsName}
			c.Resolver = res
		})
	}
	newcomer := tc.Add(func(c *membership.Config) {
		c.WellKnown = []string{dnsName}
		c.Resolver = res
	})
	clustertest.WaitMembers(t, tc.Live(), 3)
	require.Equal(t, 3, newcomer.NumMembers())
}

// laterResolver does not know a name until told to; it stands in for a
// DNS record that appears after the node has started.
type laterResolver struct {
	mu    sync.Mutex
	addrs map[string][]string
}

func (r *laterResolver) set(host string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = map[string][]string{host: addrs}
}

func (r *laterResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fakeResolver(r.addrs).LookupHost(ctx, host)
}

// A well-known name that does not resolve yet is retried until it does.
func TestWellKnownNameResolvesLater(t *testing.T) {
	tc := clustertest.Start(t, 1)
	port := strings.TrimPrefix(tc.Nodes[0].Addr(), clustertest.Host(0)+":")
	res := &laterResolver{}
	n := tc.Add(func(c *membership.Config) {
		c.WellKnown = []string{"later.troupe.test:" + port}
		c.Resolver = res
		c.JoinTimeout = -1 // start alone, keep trying
	})
	require.Equal(t, 1, n.NumMembers(), "nothing to join while the name does not resolve")
	res.set("later.troupe.test", clustertest.Host(0))
	tc.WaitMembers(2)
}

func TestWellKnownSameNameRefused(t *testing.T) {
	tc := clustertest.Start(t, 2)
	tc.WaitMembers(2)
	cfg := clustertest.Config(t, tc.Name, 5, tc.Net)
	cfg.NodeName = tc.Nodes[1].Name()
	cfg.WellKnown = []string{tc.Nodes[0].Addr()}
	_, err := membership.New(context.Background(), cfg)
	require.ErrorIs(t, err, membership.ErrNameInUse)
	require.Contains(t, err.Error(), tc.Nodes[1].Addr(), "the error names the other node's address")
}

// A node whose well-known members do not accept it fails to start rather
// than run as a cluster of one: none is up, or it has the wrong key. A
// node that is itself a well-known member starts alone.
func TestWellKnownNoneAcceptsFailsStart(t *testing.T) {
	tc := clustertest.Start(t, 1)
	wkHost := clustertest.Host(5)
	down := net.JoinHostPort(wkHost, strconv.Itoa(clustertest.FreePort(t, wkHost)))

	cfg := clustertest.Config(t, "other", 3, nil)
	cfg.WellKnown, cfg.JoinTimeout = []string{down}, 300*time.Millisecond
	_, err := membership.New(t.Context(), cfg)
	require.ErrorIs(t, err, membership.ErrNoPeers)
	require.ErrorContains(t, err, "SecretKeys")

	cfg = clustertest.Config(t, tc.Nodes[0].ClusterName(), 3, nil)
	cfg.SecretKeys = [][]byte{membership.GenerateKey()} // not the cluster's
	cfg.WellKnown, cfg.JoinTimeout = []string{tc.Nodes[0].Addr()}, 500*time.Millisecond
	_, err = membership.New(t.Context(), cfg)
	require.ErrorIs(t, err, membership.ErrNoPeers, "a wrong key must not start alone")
	require.Equal(t, 1, tc.Nodes[0].NumMembers(), "the stranger never joined")

	self := net.JoinHostPort(clustertest.Host(4), strconv.Itoa(clustertest.FreePort(t, clustertest.Host(4))))
	cfg = clustertest.Config(t, "first", 4, nil)
	cfg.BindAddr, cfg.WellKnown = self, []string{self, down}
	n, err := membership.New(t.Context(), cfg)
	require.NoError(t, err, "a well-known member may be the first")
	n.Shutdown()
}
