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
	cfg.HTTPAddr = "127.0.0.1:80"
	cfg.Naming = naming.Options{MaxValueSize: -1}
	require.Error(t, cfg.Validate())
	_, err := troupe.Start(context.Background(), troupe.Config{})
	require.Error(t, err)
}
