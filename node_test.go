package troupe

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication/pins"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

func startNodes(t *testing.T, n int) []*Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	defer cancel()
	name := fmt.Sprintf("troupe-%d", time.Now().UnixNano())
	var nodes []*Node
	for i := range n {
		cfg := Config{
			Membership: clustertest.Config(t, name, i, nil),
			HTTPAddr:   fmt.Sprintf("%s:%d", clustertest.Host(i), 8080),
		}
		if i > 0 {
			cfg.Membership.WellKnown = []string{nodes[0].Cluster().Addr()}
		}
		node, err := Start(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(node.Shutdown)
		nodes = append(nodes, node)
	}
	var clusters []*membership.Cluster
	for _, n := range nodes {
		clusters = append(clusters, n.Cluster())
	}
	clustertest.WaitMembers(t, clusters, n)
	return nodes
}

// Three nodes started with Start share names, sessions and pins; a Leave
// hands the leaving node's pin and sessions over and the others see a
// leave, not a failure.
func TestStartAndLeave(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	defer cancel()

	require.Equal(t, fmt.Sprintf("%s:8080", clustertest.Host(1)), nodes[1].Cluster().LocalMember().Tag(pins.DefaultHTTPTag))
	require.NoError(t, nodes[1].Names().Bind(ctx, "svc/a", []byte("x")))
	require.Eventually(t, func() bool {
		_, err := nodes[2].Names().Lookup("svc/a")
		return err == nil
	}, clustertest.Timeout, 10*time.Millisecond)

	pin, err := nodes[1].Pins().Pin(ctx, "k")
	require.NoError(t, err)
	s, err := nodes[1].Sessions().Create(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("v", []byte("1")))
	require.NoError(t, nodes[1].Sessions().Save(ctx, s))

	sub := nodes[0].Cluster().Subscribe()
	defer sub.Close()
	require.NoError(t, nodes[1].Leave(ctx))
	for ev := range sub.Events() {
		if ev.Member.Name == nodes[1].Name() && (ev.Type == membership.EventLeave || ev.Type == membership.EventFail) {
			assert.Equal(t, membership.EventLeave, ev.Type)
			break
		}
	}
	require.Eventually(t, func() bool {
		_, err1 := nodes[0].Names().Lookup("svc/a")
		_, err2 := nodes[0].Pins().Owner("k")
		return err1 != nil && err2 != nil
	}, clustertest.Timeout, 10*time.Millisecond, "the leaver's binding and pin should be gone")
	got, err := nodes[0].Sessions().Get(ctx, s.ID())
	require.NoError(t, err)
	v, _ := got.Get("v")
	assert.Equal(t, "1", string(v))
	again, err := nodes[2].Pins().Pin(ctx, "k")
	require.NoError(t, err)
	assert.Greater(t, again.Token, pin.Token)
}

func TestConfigValidate(t *testing.T) {
	require.Error(t, Config{}.Validate(), "a cluster name is required")
	cfg := Config{Membership: membership.Config{ClusterName: "x"}, HTTPAddr: "nope"}
	require.ErrorContains(t, cfg.Validate(), "HTTPAddr")
	cfg.HTTPAddr = "127.0.0.1:80"
	cfg.Naming = naming.Options{MaxValueSize: -1}
	require.Error(t, cfg.Validate())
	_, err := Start(context.Background(), Config{})
	require.Error(t, err)
}
