package troupe_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/replication/pins"
	"github.com/troupe-go/troupe/troupetest"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

// Three nodes started with Start share names, sessions and pins; a Leave
// hands the leaving node's pin and sessions over and the others see a
// leave, not a failure.
func TestStartAndLeave(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3, troupetest.WithConfig(func(i int, c *troupe.Config) {
		c.HTTPAddr = fmt.Sprintf("127.0.0.%d:8080", i+2)
	}))
	nodes := tc.Nodes()
	ctx, cancel := context.WithTimeout(context.Background(), troupetest.DefaultTimeout)
	defer cancel()

	require.Equal(t, tc.Host(1)+":8080", nodes[1].Cluster().LocalMember().Tag(pins.DefaultHTTPTag))
	require.NoError(t, nodes[1].Names().Bind(ctx, "svc/a", []byte("x")))
	require.Eventually(t, func() bool {
		_, err := nodes[2].Names().Lookup("svc/a")
		return err == nil
	}, troupetest.DefaultTimeout, 10*time.Millisecond)

	pin, err := nodes[1].Pins().Pin(ctx, "k")
	require.NoError(t, err)
	s, err := nodes[1].Sessions().Create(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("v", []byte("1")))
	require.NoError(t, nodes[1].Sessions().Save(ctx, s))

	sub := nodes[0].Cluster().Subscribe()
	defer sub.Close()
	require.NoError(t, tc.Leave(1))
	for ev := range sub.Events() {
		if ev.Member.Name == nodes[1].Name() && (ev.Type == membership.EventLeave || ev.Type == membership.EventFail) {
			assert.Equal(t, membership.EventLeave, ev.Type)
			break
		}
	}
	tc.WaitMembers(2)
	require.Eventually(t, func() bool {
		_, err1 := nodes[0].Names().Lookup("svc/a")
		_, err2 := nodes[0].Pins().Owner("k")
		return err1 != nil && err2 != nil
	}, troupetest.DefaultTimeout, 10*time.Millisecond, "the leaver's binding and pin should be gone")
	got, err := nodes[0].Sessions().Get(ctx, s.ID())
	require.NoError(t, err)
	v, _ := got.Get("v")
	assert.Equal(t, "1", string(v))
	again, err := nodes[2].Pins().Pin(ctx, "k")
	require.NoError(t, err)
	assert.Greater(t, again.Token, pin.Token)
}

// A crash (Kill) is a failure to the others: the survivors take the
// crashed node's pin over and keep its acknowledged session.
func TestKillFailsOver(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), troupetest.DefaultTimeout)
	defer cancel()

	s, err := tc.Node(1).Sessions().Create(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("v", []byte("1")))
	require.NoError(t, tc.Node(1).Sessions().Save(ctx, s))
	_, err = tc.Node(1).Pins().Pin(ctx, "k")
	require.NoError(t, err)

	sub := tc.Node(0).Cluster().Subscribe()
	defer sub.Close()
	tc.Kill(1)
	for ev := range sub.Events() {
		if ev.Member.Name == "node-1" && (ev.Type == membership.EventLeave || ev.Type == membership.EventFail) {
			assert.Equal(t, membership.EventFail, ev.Type)
			break
		}
	}
	tc.WaitMembers(2)
	got, err := tc.Node(2).Sessions().Get(ctx, s.ID())
	require.NoError(t, err, "the acknowledged session survives its primary's crash")
	v, _ := got.Get("v")
	assert.Equal(t, "1", string(v))
	require.Eventually(t, func() bool {
		_, err := tc.Node(0).Pins().Pin(ctx, "k")
		return err == nil
	}, troupetest.DefaultTimeout, 20*time.Millisecond, "the crashed owner's pin is free again")
}

func TestConfigValidate(t *testing.T) {
	require.Error(t, troupe.Config{}.Validate(), "a cluster name is required")
	cfg := troupe.Config{Membership: membership.Config{ClusterName: "x"}, HTTPAddr: "nope"}
	require.ErrorContains(t, cfg.Validate(), "HTTPAddr")
	for _, bad := range []string{":8080", "0.0.0.0:8080", "[::]:80", "127.0.0.1:0", "127.0.0.1:http"} {
		cfg.HTTPAddr = bad
		require.ErrorContains(t, cfg.Validate(), "HTTPAddr", bad)
	}
	cfg.HTTPAddr = ""
	cfg.Services = []string{"services/web"}
	require.ErrorContains(t, cfg.Validate(), "Services need HTTPAddr")
	cfg.HTTPAddr = "127.0.0.1:80"
	cfg.Membership.Insecure = true
	require.NoError(t, cfg.Validate())
	cfg.Services = []string{"bad//name"}
	require.ErrorContains(t, cfg.Validate(), "Services")
	cfg.Services = nil
	cfg.Naming = naming.Options{MaxValueSize: -1}
	require.Error(t, cfg.Validate())
	_, err := troupe.Start(context.Background(), troupe.Config{})
	require.Error(t, err)
}

// A client node (a proxy, a console) knows the members and the naming
// tree, but holds no sessions and counts toward no quorum: two full
// members with two clients beside them still pin, which needs a
// majority of the voters to answer (or half of them with the first
// name: the clients' names sort first), and the clients run no pins to
// answer.
func TestClientIsNoVoter(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 4, troupetest.WithConfig(func(i int, c *troupe.Config) {
		c.Client = i < 2
	}))
	ctx, cancel := context.WithTimeout(context.Background(), troupetest.DefaultTimeout)
	defer cancel()
	client := tc.Node(1)
	require.Nil(t, client.Sessions())
	require.Nil(t, client.Pins())
	require.Empty(t, client.Cluster().LocalMember().Tag(replication.TagKey))
	require.Empty(t, client.Cluster().LocalMember().Tag(pins.TagKey))
	require.Eventually(t, func() bool {
		return len(tc.Node(2).Sessions().Peers()) == 1
	}, troupetest.DefaultTimeout, 10*time.Millisecond, "sessions count the clients as peers")
	p, err := tc.Node(3).Pins().Pin(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, tc.Node(3).Name(), p.Owner)
	// The clients see the binding, as any member of the tree.
	require.Eventually(t, func() bool {
		_, err := client.Names().Lookup(pins.DefaultPrefix + "/k")
		return err == nil
	}, troupetest.DefaultTimeout, 10*time.Millisecond)
	require.NoError(t, tc.Leave(1))
}

// Services bind the node's URL as a clusterable offer at Start, and Leave
// unbinds it first.
func TestServicesBoundAndUnbound(t *testing.T) {
	t.Parallel()
	tc := troupetest.Start(t, 3, troupetest.WithConfig(func(i int, c *troupe.Config) {
		c.HTTPAddr = fmt.Sprintf("127.0.0.%d:%d", i+2, 8080+i)
		c.HTTPS = i == 2
		c.Services = []string{"services/web"}
	}))
	require.Equal(t, "https://127.0.0.4:8082", tc.Node(2).URL())
	require.Eventually(t, func() bool {
		c, err := tc.Node(0).Names().Candidates("services/web")
		return err == nil && len(c) == 3 && string(c[1].Value) == "http://127.0.0.3:8081"
	}, troupetest.DefaultTimeout, 10*time.Millisecond)
	require.NoError(t, tc.Leave(1))
	require.Eventually(t, func() bool {
		c, err := tc.Node(0).Names().Candidates("services/web")
		return err == nil && len(c) == 2
	}, troupetest.DefaultTimeout, 10*time.Millisecond)
}
