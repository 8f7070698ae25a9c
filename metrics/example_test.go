package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/metrics"
)

// A node's metrics on a registry of its own, served at /metrics: after
// a session is saved and a key pinned, the scrape shows them.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node, err := troupe.Start(ctx, troupe.Config{
		Membership: membership.Config{
			ClusterName: "example",
			NodeName:    "node-1",
			BindAddr:    "127.0.0.1:0",
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{membership.GenerateKey()},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Shutdown()

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(node))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	s, _ := node.Sessions().Create(ctx)
	_ = s.Set("user", []byte("ana"))
	_ = node.Sessions().Save(ctx, s)
	_, _ = node.Pins().Pin(ctx, "cart/42")

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range []string{`troupe_members{node="node-1",state="alive"}`, `troupe_sessions{`, "troupe_session_save_duration_seconds_count", "troupe_pins_held"} {
			if strings.HasPrefix(line, name) {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// troupe_members{node="node-1",state="alive"} 1
	// troupe_pins_held{node="node-1"} 1
	// troupe_session_save_duration_seconds_count{node="node-1"} 1
	// troupe_sessions{node="node-1",role="primary"} 1
	// troupe_sessions{node="node-1",role="secondary"} 0
}
