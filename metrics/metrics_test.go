package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/metrics"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/proxy"
	"github.com/troupe-go/troupe/replication/pins"
	"github.com/troupe-go/troupe/troupetest"
)

// Every test must leave no goroutine behind.
func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clustertest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// registry returns a pedantic registry (it checks every collected metric
// against its description) with a Collector for each node.
func registry(t *testing.T, nodes ...*troupe.Node) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, n := range nodes {
		require.NoError(t, reg.Register(metrics.New(n)))
	}
	return reg
}

// sample returns the value of the metric name whose labels include the
// given name/value pairs (for a histogram: its count). It fails the test
// unless exactly one metric matches.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, err := find(g, name, labels...)
	require.NoError(t, err)
	return v
}

func find(g prometheus.Gatherer, name string, labels ...string) (float64, error) {
	families, err := g.Gather()
	if err != nil {
		return 0, err
	}
	var found []float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				found = append(found, value(f.GetType(), m))
			}
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%s%v: %d metrics match, want 1", name, labels, len(found))
	}
	return found[0], nil
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func value(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

// eventually waits until the metric has the value want.
func eventually(t *testing.T, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		v, err := find(g, name, labels...)
		return err == nil && v == want
	}, clustertest.Timeout, 10*time.Millisecond, "%s%v: want %v", name, labels, want)
}

// A three-node cluster: each node's Collector shows the members, the
// sessions created and saved on it, their copies on the others, the Save
// histogram, the traffic they caused, the naming tree, pins and a
// singleton; every metric passes the linter.
func TestCollectorOnACluster(t *testing.T) {
	tc := troupetest.Start(t, 3)
	ctx := testCtx(t)
	n0, n1, n2 := tc.Node(0), tc.Node(1), tc.Node(2)
	reg := registry(t, n0, n1, n2)

	for _, n := range []string{"node-0", "node-1", "node-2"} {
		require.Equal(t, 3.0, sample(t, reg, "troupe_members", "node", n, "state", "alive"))
		require.Equal(t, 0.0, sample(t, reg, "troupe_members", "node", n, "state", "failed"))
	}

	require.NoError(t, n0.Sessions().WaitPeers(ctx, 2))
	for i := range 3 {
		s, err := n0.Sessions().Create(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", []byte(fmt.Sprint(i))))
		require.NoError(t, n0.Sessions().Save(ctx, s))
	}
	require.Equal(t, 3.0, sample(t, reg, "troupe_sessions", "node", "node-0", "role", "primary"))
	require.Equal(t, 0.0, sample(t, reg, "troupe_sessions", "node", "node-0", "role", "secondary"))
	require.Equal(t, 3.0, sample(t, reg, "troupe_sessions_created_total", "node", "node-0"))
	require.Equal(t, 3.0, sample(t, reg, "troupe_session_saves_total", "node", "node-0"))
	require.GreaterOrEqual(t, sample(t, reg, "troupe_session_save_duration_seconds", "node", "node-0"), 3.0)
	require.Equal(t, 0.0, sample(t, reg, "troupe_session_save_duration_seconds", "node", "node-1"))
	secondaries := sample(t, reg, "troupe_sessions", "node", "node-1", "role", "secondary") +
		sample(t, reg, "troupe_sessions", "node", "node-2", "role", "secondary")
	require.Equal(t, 3.0, secondaries, "each session has one copy on another node")
	// The copies travelled as calls on the sessions channel.
	require.Positive(t, sample(t, reg, "troupe_channel_messages_total", "node", "node-0", "direction", "sent"))
	require.Positive(t, sample(t, reg, "troupe_channel_bytes_total", "node", "node-0", "direction", "sent"))

	// A confirmed bind is in every copy of the tree when it returns; it
	// was gossiped.
	require.NoError(t, n1.Names().Bind(ctx, "svc/orders", []byte("http://127.0.0.3:8080"), naming.Confirmed()))
	for _, n := range []string{"node-0", "node-1", "node-2"} {
		require.GreaterOrEqual(t, sample(t, reg, "troupe_naming_bindings", "node", n), 1.0)
		require.Positive(t, sample(t, reg, "troupe_naming_bytes", "node", n))
	}
	require.Eventually(t, func() bool {
		v, err := find(reg, "troupe_gossip_messages_total", "node", "node-1", "direction", "sent")
		return err == nil && v > 0
	}, clustertest.Timeout, 10*time.Millisecond, "the binding's broadcast leaves with the next gossip round")
	require.Positive(t, sample(t, reg, "troupe_gossip_bytes_total", "node", "node-1", "direction", "sent"))

	for _, key := range []string{"cart/1", "cart/2"} {
		pin, err := n2.Pins().Pin(ctx, key)
		require.NoError(t, err)
		require.Equal(t, "node-2", pin.Owner)
	}
	require.NoError(t, n2.Pins().Release(ctx, "cart/1"))
	require.Equal(t, 1.0, sample(t, reg, "troupe_pins_held", "node", "node-2"))
	require.Equal(t, 2.0, sample(t, reg, "troupe_pin_claims_total", "node", "node-2"))
	require.Equal(t, 1.0, sample(t, reg, "troupe_pin_releases_total", "node", "node-2"))
	require.Equal(t, 0.0, sample(t, reg, "troupe_pin_claims_total", "node", "node-0"))

	s, err := n1.Pins().RunSingleton(context.Background(), "jms/orders", func(ctx context.Context, _ uint64) { <-ctx.Done() })
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	eventually(t, reg, 1, "troupe_singletons_running", "node", "node-1")
	require.Equal(t, 1.0, sample(t, reg, "troupe_singleton_starts_total", "node", "node-1"))
	require.Equal(t, 0.0, sample(t, reg, "troupe_singleton_stops_total", "node", "node-1"))

	for _, reason := range []string{"malformed", "unknown_channel", "bad_meta"} {
		require.Equal(t, 0.0, sample(t, reg, "troupe_membership_dropped_total", "node", "node-0", "reason", reason), reason)
	}
	require.Equal(t, 0.0, sample(t, reg, "troupe_naming_dropped_total", "node", "node-0", "reason", "malformed"))

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// When a node fails, the Collectors of the others show it failed, the
// promotions of the sessions it was primary for, and the singleton's
// move.
func TestCollectorShowsAFailover(t *testing.T) {
	tc := troupetest.Start(t, 3)
	ctx := testCtx(t)
	n0, n1, n2 := tc.Node(0), tc.Node(1), tc.Node(2)
	reg := registry(t, n1, n2)

	require.NoError(t, n0.Sessions().WaitPeers(ctx, 2))
	for range 4 {
		s, err := n0.Sessions().Create(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("k", []byte("v")))
		require.NoError(t, n0.Sessions().Save(ctx, s))
	}
	fn := func(ctx context.Context, _ uint64) { <-ctx.Done() }
	for _, n := range []*troupe.Node{n0, n1} {
		s, err := n.Pins().RunSingleton(context.Background(), "jms/orders", fn, pins.PreferNode("node-0"))
		require.NoError(t, err)
		t.Cleanup(s.Stop)
	}
	require.Eventually(t, func() bool { return n0.Pins().Stats().SingletonsRunning == 1 }, clustertest.Timeout, 10*time.Millisecond)
	require.Equal(t, 0.0, sample(t, reg, "troupe_singleton_starts_total", "node", "node-1"))

	tc.Kill(0)
	for _, n := range []string{"node-1", "node-2"} {
		eventually(t, reg, 1, "troupe_members", "node", n, "state", "failed")
		require.Equal(t, 2.0, sample(t, reg, "troupe_members", "node", n, "state", "alive"))
	}
	require.Eventually(t, func() bool {
		p := sample(t, reg, "troupe_session_failovers_total", "node", "node-1", "kind", "promotion") +
			sample(t, reg, "troupe_session_failovers_total", "node", "node-2", "kind", "promotion")
		return p == 4
	}, clustertest.Timeout, 10*time.Millisecond, "the secondaries promote their copies of node-0's 4 sessions")
	require.Equal(t, 4.0, sample(t, reg, "troupe_sessions", "node", "node-1", "role", "primary")+
		sample(t, reg, "troupe_sessions", "node", "node-2", "role", "primary"))
	eventually(t, reg, 1, "troupe_singleton_starts_total", "node", "node-1")
	require.Equal(t, 1.0, sample(t, reg, "troupe_singletons_running", "node", "node-1"))
}

// A client node has no sessions and no pins: its Collector exports the
// membership and naming metrics only, and is still consistent with its
// description.
func TestCollectorOnAClientNode(t *testing.T) {
	tc := troupetest.Start(t, 2, troupetest.WithConfig(func(i int, c *troupe.Config) { c.Client = i == 1 }))
	reg := registry(t, tc.Node(1))
	require.Equal(t, 2.0, sample(t, reg, "troupe_members", "node", "node-1", "state", "alive"))
	n, err := testutil.GatherAndCount(reg, "troupe_sessions", "troupe_session_save_duration_seconds", "troupe_pins_held", "troupe_singletons_running")
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = testutil.GatherAndCount(reg, "troupe_naming_bindings", "troupe_channel_messages_total")
	require.NoError(t, err)
	require.Equal(t, 3, n, "one binding count, two directions")
}

// NewProxy exports the handler's requests by outcome.
func TestProxyCollector(t *testing.T) {
	tc := troupetest.Start(t, 2, troupetest.WithConfig(func(i int, c *troupe.Config) { c.Client = i == 1 }))
	ctx := testCtx(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(app.Close)
	require.NoError(t, tc.Node(0).Names().Bind(ctx, proxy.DefaultService, []byte(app.URL), naming.Clusterable()))
	require.Eventually(t, func() bool { _, err := tc.Node(1).Names().Lookup(proxy.DefaultService); return err == nil },
		clustertest.Timeout, 10*time.Millisecond, "the client's copy of the tree has the offer")

	h, err := proxy.New(proxy.Config{Names: tc.Node(1).Names(), Routes: []proxy.Route{{Prefix: "/console", Service: "troupe/console"}}})
	require.NoError(t, err)
	t.Cleanup(h.Close)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(metrics.NewProxy(h)))

	for _, path := range []string{"/", "/cart", "/console"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if path == "/console" {
			require.Equal(t, http.StatusServiceUnavailable, rec.Code, "nobody offers troupe/console")
		} else {
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		}
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP troupe_proxy_attempts_total Requests sent to a node, first tries and retries.
# TYPE troupe_proxy_attempts_total counter
troupe_proxy_attempts_total 2
`), "troupe_proxy_attempts_total"))
	require.Equal(t, 2.0, sample(t, reg, "troupe_proxy_requests_total", "outcome", "served"))
	require.Equal(t, 1.0, sample(t, reg, "troupe_proxy_requests_total", "outcome", "unavailable"))
	require.Equal(t, 0.0, sample(t, reg, "troupe_proxy_requests_total", "outcome", "failed"))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}
