package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/proxy"
	"github.com/troupe-go/troupe/troupetest"
)

// BenchmarkProxy sends GETs of a small answer through the proxy to one
// of two workers, and, as the same run's reference, straight to a
// worker: the ratio is the proxy's own cost. Each uses its own
// keep-alive client.
//
//	go test -run '^$' -bench Proxy -benchmem ./proxy/
func BenchmarkProxy(b *testing.B) {
	lns := make([]net.Listener, 3)
	tc := troupetest.Start(b, 3, troupetest.WithConfig(func(i int, c *troupe.Config) {
		if i == 0 {
			c.Client = true
			return
		}
		ln, err := net.Listen("tcp", c.Membership.BindAddr[:len(c.Membership.BindAddr)-2]+":0")
		if err != nil {
			b.Fatal(err)
		}
		lns[i] = ln
		c.HTTPAddr = ln.Addr().String()
		c.Services = []string{proxy.DefaultService}
	}))
	answer := []byte(`{"value":1}`)
	for i := 1; i < 3; i++ {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(answer) })}
		go func() { _ = srv.Serve(lns[i]) }()
		b.Cleanup(func() { _ = srv.Close() })
	}
	h, err := proxy.New(proxy.Config{Names: tc.Node(0).Names()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	front := httptest.NewServer(h)
	b.Cleanup(front.Close)
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := tc.Node(0).Names().Candidates(proxy.DefaultService)
		if err == nil && len(c) == 2 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the proxy never saw both workers")
		}
		time.Sleep(10 * time.Millisecond) // a benchmark's setup, not a test's wait
	}
	run := func(b *testing.B, url string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	b.Run("direct", func(b *testing.B) { run(b, tc.Node(1).URL()+"/counter") })
	b.Run("proxy", func(b *testing.B) { run(b, front.URL+"/counter") })
}
