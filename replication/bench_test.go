package replication

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/troupe-go/troupe/internal/benchnet"
	"github.com/troupe-go/troupe/membership"
)

// The session benchmarks save a 1 KiB session (8 attributes of 128 bytes,
// names included) changing one attribute per Save, in sync mode, between
// two in-process nodes on loopback. Run them with the floor:
//
//	go test -run '^$' -bench 'PingPongRawTCP|Save' -benchtime 3s ./replication/
const (
	benchAttrs    = 8
	benchAttrSize = 128
	benchClients  = 64
)

// BenchmarkPingPongRawTCP is the floor (see internal/benchnet): a 1 KiB
// request and a 16-byte answer on one persistent TCP connection over
// loopback, with no framing, encoding or goroutine hand-offs.
func BenchmarkPingPongRawTCP(b *testing.B) {
	p, err := benchnet.StartPingPong()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	lat := make([]time.Duration, 0, 1<<16)
	for b.Loop() {
		t0 := time.Now()
		if err := p.RoundTrip(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportLatency(b, lat)
}

// benchModes: "plain" runs without cluster keys (Insecure), to measure
// what the key costs; "key" with one.
func benchModes() []struct {
	name   string
	opts   func(int, *Options)
	mutate func(int, *membership.Config)
} {
	return []struct {
		name   string
		opts   func(int, *Options)
		mutate func(int, *membership.Config)
	}{
		{"plain", func(_ int, o *Options) { o.Insecure = true }, insecure},
		{"key", nil, func(_ int, c *membership.Config) { c.SecretKeys = [][]byte{bytes.Repeat([]byte{7}, 32)} }},
	}
}

// benchSession creates a 1 KiB session on n.
func benchSession(b *testing.B, n *node) *Session {
	h, err := n.s.Create(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for i := range benchAttrs {
		name := fmt.Sprintf("attribute-%02d", i)
		if err := h.Set(name, make([]byte, benchAttrSize-len(name))); err != nil {
			b.Fatal(err)
		}
	}
	if err := n.s.Save(context.Background(), h); err != nil {
		b.Fatal(err)
	}
	if h.Size() != benchAttrs*benchAttrSize {
		b.Fatalf("session size %d", h.Size())
	}
	return h
}

// BenchmarkSave: one client saving one session, one changed attribute
// per Save, acknowledged by the secondary. Reports p50 and p99.
func BenchmarkSave(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			c := startSessions(b, 2, m.opts, m.mutate)
			p := c.nodes[0]
			h := benchSession(b, p)
			val := make([]byte, benchAttrSize-len("attribute-00"))
			ctx := context.Background()
			lat := make([]time.Duration, 0, 1<<16)
			i := 0
			for b.Loop() {
				val[0] = byte(i)
				i++
				t0 := time.Now()
				if err := h.Set("attribute-00", val); err != nil {
					b.Fatal(err)
				}
				if err := p.s.Save(ctx, h); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatency(b, lat)
		})
	}
}

// BenchmarkSaveParallel: 64 clients, each saving its own session.
func BenchmarkSaveParallel(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			c := startSessions(b, 2, m.opts, m.mutate)
			p := c.nodes[0]
			sessions := make(chan *Session, benchClients)
			for range benchClients {
				sessions <- benchSession(b, p)
			}
			b.SetParallelism(max(1, benchClients/runtime.GOMAXPROCS(0)))
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				h := <-sessions
				val := make([]byte, benchAttrSize-len("attribute-00"))
				for i := 0; pb.Next(); i++ {
					val[0] = byte(i)
					_ = h.Set("attribute-00", val)
					if err := p.s.Save(context.Background(), h); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(benchnet.Micros(benchnet.Percentile(lat, 50)), "p50-µs")
	b.ReportMetric(benchnet.Micros(benchnet.Percentile(lat, 99)), "p99-µs")
}

// BenchmarkMiddleware: the HTTP middleware and a handler that adds one
// to a counter in the session, as bench/http's server does, with
// benchClients/4 clients in parallel, each with its own session (update)
// or starting a new one on every request (create). No HTTP connection:
// what is measured is the session's cost on both nodes, the secondary's
// included (allocs/op counts every goroutine's).
//
//	go test -run '^$' -bench Middleware -benchmem -count 6 ./replication/
func BenchmarkMiddleware(b *testing.B) {
	counter := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := FromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, _, _ := GetValue[int64](h, "counter")
		if err := SetValue(h, "counter", n+1); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, `{"value":%d}`, n+1)
	})
	for _, workload := range []string{"update", "create"} {
		b.Run(workload, func(b *testing.B) {
			c := startSessions(b, 2, func(_ int, o *Options) { o.LeaseTerm = DefaultLeaseTerm })
			handler := c.nodes[0].s.Middleware(HTTPOptions{})(counter)
			serve := func(cookie string) (string, error) {
				req := httptest.NewRequest(http.MethodPost, "/counter", nil)
				if cookie != "" {
					req.AddCookie(&http.Cookie{Name: DefaultCookieName, Value: cookie})
				}
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					return "", fmt.Errorf("status %d: %s", rec.Code, rec.Body)
				}
				for _, ck := range rec.Result().Cookies() {
					if ck.Name == DefaultCookieName {
						return ck.Value, nil
					}
				}
				return cookie, nil
			}
			b.SetParallelism(max(1, benchClients/4/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				cookie := ""
				for pb.Next() {
					if workload == "create" {
						cookie = ""
					}
					var err error
					if cookie, err = serve(cookie); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkSweep: one janitor sweep of a table of idle sessions, half
// primaries (their secondary the other node) and half secondaries, as a
// node holds them after a burst of new sessions that nobody uses again.
// Nothing is due, so what is measured is the scan itself, per session.
//
//	go test -run '^$' -bench Sweep -benchmem -count 6 ./replication/
func BenchmarkSweep(b *testing.B) {
	const sessions = 200_000
	c := startSessions(b, 2, nil)
	s, peer := c.nodes[0].s, c.nodes[1].s.self
	now := s.now()
	for i := range sessions {
		e, err := s.insert(newEntry(newKey(), now))
		require.NoError(b, err)
		st := state{role: rolePrimary, epoch: 1, members: 2, version: 1, primary: s.self, secondary: peer}
		if i%2 == 1 {
			st = state{role: roleSecondary, epoch: 1, members: 2, version: 1, primary: peer}
		}
		require.True(b, s.publish(e, st))
	}
	tick := s.opts.tick()
	var buf []*entry
	b.ResetTimer()
	for range b.N {
		buf = s.appendEntries(buf)
		s.sweep(tick, buf)
		clear(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/sessions, "ns/session")
}

// BenchmarkHeldSessions: what the sessions a pair of nodes holds cost
// while nobody uses them: 100,000 sessions with one small attribute (a
// counter, as the HTTP benchmark's), each a primary on one node and a
// secondary copy on the other, both in this process. It reports the heap
// they keep (B/session, both copies) and times one full collection
// (ns/op), which Go's collector repeats every time the program allocates
// as much again as it holds. Its B/op and allocs/op are the two nodes'
// background work (gossip, the janitor) while it collects.
//
//	go test -run '^$' -bench HeldSessions -benchmem -count 6 ./replication/
func BenchmarkHeldSessions(b *testing.B) {
	const sessions, clients = 100_000, 64
	c := startSessions(b, 2, nil)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range clients {
		n := c.nodes[g%2]
		wg.Go(func() {
			for range sessions / clients {
				h, err := n.s.Create(ctx)
				if err == nil {
					err = SetValue(h, "count", int64(1))
				}
				if err == nil {
					err = n.s.Save(ctx, h)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	held := (sessions / clients) * clients
	s0, s1 := c.nodes[0].s.Stats(), c.nodes[1].s.Stats()
	require.Equal(b, held, s0.Primaries+s1.Primaries)
	require.Equal(b, held, s0.Secondaries+s1.Secondaries)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(held), "B/session")
}
