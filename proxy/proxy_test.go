package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/proxy"
	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/troupetest"
)

func TestMain(m *testing.M) { clustertest.VerifyTestMain(m) }

const wait = troupetest.DefaultTimeout

// fixture is a cluster whose node 0 is a client running the proxy, and
// whose other nodes are workers: real HTTP servers on loopback with the
// session middleware, bound under proxy.DefaultService.
type fixture struct {
	t       *testing.T
	tc      *troupetest.Cluster
	servers []*http.Server // by node index; nil for node 0
	proxy   *proxy.Handler
	front   *httptest.Server

	mu     sync.Mutex
	paused map[string]chan struct{} // worker name → closed when it resumes
}

func start(t *testing.T, workers int, mutate func(*proxy.Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, servers: make([]*http.Server, workers+1), paused: map[string]chan struct{}{}}
	lns := make([]net.Listener, workers+1)
	f.tc = troupetest.Start(t, workers+1, troupetest.WithConfig(func(i int, c *troupe.Config) {
		if i == 0 {
			c.Client = true
			return
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+2))
		require.NoError(t, err)
		lns[i] = ln
		c.HTTPAddr = ln.Addr().String()
		c.Services = []string{proxy.DefaultService}
	}))
	for i := 1; i <= workers; i++ {
		n := f.tc.Node(i)
		srv := &http.Server{Handler: n.Sessions().Middleware(replication.HTTPOptions{})(f.app(n.Name()))}
		f.servers[i] = srv
		go func() { _ = srv.Serve(lns[i]) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	cfg := proxy.Config{Names: f.tc.Node(0).Names(), HeaderTimeout: 2 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	var err error
	f.proxy, err = proxy.New(cfg)
	require.NoError(t, err)
	t.Cleanup(f.proxy.Close)
	f.front = httptest.NewServer(f.proxy)
	t.Cleanup(f.front.Close)
	f.waitOffers(workers)
	return f
}

// waitOffers waits until the proxy's node sees n live offers.
func (f *fixture) waitOffers(n int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		c, err := f.tc.Node(0).Names().Candidates(proxy.DefaultService)
		return err == nil && len(c) == n
	}, wait, 10*time.Millisecond, "the proxy never saw %d offers", n)
}

// app is a worker's application: a counter in the session, an echo of
// the forwarding headers, and a body echo.
func (f *fixture) app(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/counter", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		p := f.paused[name]
		f.mu.Unlock()
		if p != nil {
			select {
			case <-p:
			case <-r.Context().Done():
				return
			}
		}
		s, err := replication.FromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, _, _ := replication.GetValue[int](s, "n")
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if string(body) != "add" {
				http.Error(w, "bad body "+strconv.Quote(string(body)), http.StatusBadRequest)
				return
			}
			n++
			if err := replication.SetValue(s, "n", n); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("X-Node", name)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		if name != f.tc.Node(1).Name() {
			w.Header().Set("X-Node", name)
			fmt.Fprint(w, "whole")
			return
		}
		// Dies in the middle of its answer: headers and half the body.
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Node: " + name + "\r\n\r\nhalf")
		_ = buf.Flush()
		_ = conn.Close()
	})
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Node", name)
		if name == f.tc.Node(1).Name() {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Node", name)
		fmt.Fprintf(w, "%s|%s|%s|%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("Forwarded"), r.Host, r.URL.Path)
	})
	return mux
}

// pause makes worker name's counter hang until resume is called.
func (f *fixture) pause(name string) (resume func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.paused[name] = ch
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.paused, name)
		f.mu.Unlock()
		close(ch)
	}
}

func (f *fixture) client() *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(f.t, err)
	return &http.Client{Jar: jar, Timeout: wait}
}

// do sends one request through the proxy and returns status, body and
// the node that served it.
func (f *fixture) do(c *http.Client, method, path, body string, header ...string) (int, string, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.front.URL+path, strings.NewReader(body))
	require.NoError(f.t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return resp.StatusCode, string(b), resp.Header.Get("X-Node")
}

func (f *fixture) index(name string) int {
	for i := 1; i < len(f.servers); i++ {
		if f.tc.Node(i).Name() == name {
			return i
		}
	}
	f.t.Fatalf("no worker %s", name)
	return -1
}

// A session stays on its primary: every request of one client is
// served by the node that created its session, while requests without
// a session spread over the workers.
func TestSessionStaysOnItsPrimary(t *testing.T) {
	t.Parallel()
	f := start(t, 3, nil)
	c := f.client()
	_, _, first := f.do(c, http.MethodPost, "/counter", "add")
	for i := 2; i <= 20; i++ {
		code, body, node := f.do(c, http.MethodPost, "/counter", "add")
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, strconv.Itoa(i), body)
		require.Equal(t, first, node, "request %d left the primary", i)
	}
	seen := map[string]bool{}
	for range 6 {
		_, _, node := f.do(&http.Client{Timeout: wait}, http.MethodGet, "/counter", "")
		seen[node] = true
	}
	require.Len(t, seen, 3, "requests without a session all went to %v", seen)
	st := f.proxy.Stats()
	require.EqualValues(t, 26, st.Served)
	require.EqualValues(t, 26, st.Attempts)
}

// When a session's primary dies (its port refuses connections), a POST
// with a body goes on to the secondary, which serves the session intact;
// the dead node is marked down and gets no further attempt.
func TestPrimaryDeadFailsOverToSecondary(t *testing.T) {
	t.Parallel()
	f := start(t, 3, nil)
	c := f.client()
	var primary string
	for i := 1; i <= 10; i++ {
		code, body, node := f.do(c, http.MethodPost, "/counter", "add")
		require.Equal(t, http.StatusOK, code, body)
		primary = node
	}
	u, _ := http.NewRequest(http.MethodGet, f.front.URL, nil)
	var cookie string
	for _, ck := range c.Jar.Cookies(u.URL) {
		if ck.Name == replication.DefaultCookieName {
			cookie = ck.Value
		}
	}
	id, err := replication.ParseID(cookie)
	require.NoError(t, err)
	require.NotEmpty(t, id.Secondary, "the session has no secondary")

	i := f.index(primary)
	require.NoError(t, f.servers[i].Close())
	f.tc.Kill(i)
	// A kept-alive connection that the dead node closed may take the
	// plain POST before the proxy's transport notices the close, and
	// such a failure cannot tell whether the node processed it (clients
	// send an Idempotency-Key for that); a new connection is refused,
	// which can be retried whatever the method.
	f.proxy.Close()

	code, body, node := f.do(c, http.MethodPost, "/counter", "add")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "11", body, "the session lost updates")
	require.NotEqual(t, primary, node)
	require.Equal(t, id.Secondary, replication.NodeID(node), "the request did not go to the secondary")
	st := f.proxy.Stats()
	require.EqualValues(t, 1, st.Retried)
	require.EqualValues(t, 1, st.MarkedDown)

	// Marked down: the next requests do not try it again, although its
	// offer is live until failure detection drops it.
	before := f.proxy.Stats().Attempts
	for range 5 {
		code, body, _ := f.do(f.client(), http.MethodGet, "/counter", "")
		require.Equal(t, http.StatusOK, code, body)
	}
	require.EqualValues(t, before+5, f.proxy.Stats().Attempts, "a request tried the dead node")
}

// A node that does not answer within HeaderTimeout is marked down. An
// idempotent request, or a POST with an Idempotency-Key, goes on to
// another node; a plain POST, which the slow node may yet process, gets
// 502 and is not sent twice.
func TestPausedNodeTimesOut(t *testing.T) {
	t.Parallel()
	f := start(t, 2, func(c *proxy.Config) { c.HeaderTimeout = 300 * time.Millisecond })
	c := f.client()
	code, _, primary := f.do(c, http.MethodPost, "/counter", "add")
	require.Equal(t, http.StatusOK, code)
	resume := f.pause(primary)
	defer resume()

	code, body, node := f.do(c, http.MethodPost, "/counter", "add")
	require.Equal(t, http.StatusBadGateway, code, body)
	require.Empty(t, node)
	require.EqualValues(t, 1, f.proxy.Stats().Failed)

	code, body, node = f.do(c, http.MethodGet, "/counter", "")
	require.Equal(t, http.StatusOK, code, body)
	require.NotEqual(t, primary, node)

	code, body, node = f.do(c, http.MethodPost, "/counter", "add", "Idempotency-Key", "k1")
	require.Equal(t, http.StatusOK, code, body)
	require.NotEqual(t, primary, node)
	require.GreaterOrEqual(t, f.proxy.Stats().MarkedDown, uint64(1))
}

// With no live offer the proxy answers 503 with a reason and a
// Retry-After, and counts it.
func TestNoNodeIs503(t *testing.T) {
	t.Parallel()
	f := start(t, 1, func(c *proxy.Config) {
		c.Routes = []proxy.Route{{Prefix: "/console", Service: "troupe/console"}}
		c.RetryAfter = 3 * time.Second
	})
	resp, err := http.Get(f.front.URL + "/console/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "troupe/console")
	require.EqualValues(t, 1, f.proxy.Stats().Unavailable)
}

// Routes send a prefix to another service; the longest prefix wins.
func TestRoutes(t *testing.T) {
	t.Parallel()
	f := start(t, 2, func(c *proxy.Config) {
		c.Routes = []proxy.Route{{Prefix: "/admin", Service: "console"}, {Prefix: "/admin/web", Service: proxy.DefaultService}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Node 2 also offers "console", at a base URL with a path.
	require.NoError(t, f.tc.Node(2).Names().Bind(ctx, "console", []byte(f.tc.Node(2).URL()+"/base")))
	require.Eventually(t, func() bool {
		_, err := f.tc.Node(0).Names().Candidates("console")
		return err == nil
	}, wait, 10*time.Millisecond)
	for range 4 {
		code, body, node := f.do(&http.Client{}, http.MethodGet, "/admin/x", "")
		require.Equal(t, http.StatusNotFound, code, body) // /base/admin/x: the mux has no such path
		require.Empty(t, node)
		code, body, _ = f.do(&http.Client{}, http.MethodGet, "/admin/web/echo", "")
		require.Equal(t, http.StatusNotFound, code, body)
	}
	require.NoError(t, f.tc.Node(2).Names().Rebind(ctx, "console", []byte(f.tc.Node(2).URL())))
	require.Eventually(t, func() bool {
		code, body, node := f.do(&http.Client{}, http.MethodGet, "/echo", "")
		return code == http.StatusOK && node != "" && strings.HasSuffix(body, "|/echo")
	}, wait, 10*time.Millisecond)
}

// The forwarding headers name the client; a client's own forged ones
// are dropped unless TrustForwarded.
func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprint("trust=", trust), func(t *testing.T) {
			t.Parallel()
			f := start(t, 1, func(c *proxy.Config) { c.TrustForwarded = trust })
			code, body, _ := f.do(&http.Client{}, http.MethodGet, "/echo", "", "X-Forwarded-For", "6.6.6.6", "Forwarded", "for=6.6.6.6")
			require.Equal(t, http.StatusOK, code)
			parts := strings.Split(body, "|")
			require.Len(t, parts, 4)
			host := strings.TrimPrefix(f.front.URL, "http://")
			if trust {
				require.Equal(t, "6.6.6.6, 127.0.0.1", parts[0])
				require.Equal(t, `for=6.6.6.6, for=127.0.0.1;proto=http;host="`+host+`"`, parts[1])
			} else {
				require.Equal(t, "127.0.0.1", parts[0])
				require.Equal(t, `for=127.0.0.1;proto=http;host="`+host+`"`, parts[1])
			}
			require.Equal(t, host, parts[2], "the client's Host was not kept")
		})
	}
}

// A body larger than MaxBodyBuffer is streamed to the first node, and
// not retried when that node refuses.
func TestLargeBodyIsStreamedNotRetried(t *testing.T) {
	t.Parallel()
	f := start(t, 2, func(c *proxy.Config) { c.MaxBodyBuffer = 2 })
	code, body, _ := f.do(f.client(), http.MethodPost, "/counter", "add")
	require.Equal(t, http.StatusOK, code, body) // 3 bytes: streamed, served
	require.NoError(t, f.servers[1].Close())
	failed := 0
	for range 4 {
		code, _, _ := f.do(&http.Client{}, http.MethodPost, "/counter", "add", "Idempotency-Key", "k")
		if code == http.StatusBadGateway {
			failed++
		}
	}
	require.Equal(t, 1, failed, "the refusing node got %d requests; it is marked down after the first", failed)
}

func TestConfigValidate(t *testing.T) {
	err := proxy.Config{}.Validate()
	require.ErrorIs(t, err, proxy.ErrInvalidConfig)
	_, err = proxy.New(proxy.Config{Names: nil})
	require.True(t, errors.Is(err, proxy.ErrInvalidConfig))
	f := start(t, 1, nil)
	err = proxy.Config{Names: f.tc.Node(0).Names(), Routes: []proxy.Route{{Prefix: "x", Service: ""}}, DialTimeout: -1}.Validate()
	require.ErrorContains(t, err, "does not start with /")
	require.ErrorContains(t, err, "DialTimeout is negative")
}

// A node's 503 sends a request that is safe to repeat on to another
// node; a POST without an Idempotency-Key gets the 503 as it is.
func TestPasses503ForSafeRequests(t *testing.T) {
	t.Parallel()
	f := start(t, 2, nil)
	busy := f.tc.Node(1).Name()
	for range 4 {
		code, body, node := f.do(&http.Client{}, http.MethodGet, "/busy", "")
		require.Equal(t, http.StatusOK, code, body)
		require.NotEqual(t, busy, node)
	}
	require.GreaterOrEqual(t, f.proxy.Stats().Passed503, uint64(1))
	got503 := false
	for range 4 {
		code, _, node := f.do(&http.Client{}, http.MethodPost, "/busy", "x")
		if code == http.StatusServiceUnavailable {
			require.Equal(t, busy, node)
			got503 = true
		}
	}
	require.True(t, got503, "round robin never sent a POST to the busy node")
}

// A node that dies in the middle of a small response: the proxy, which
// read it whole before answering, sends a request that may be repeated
// on to another node, and the client gets a whole answer; a plain POST
// gets a 502, never half a body.
func TestResponseCutShortIsRetried(t *testing.T) {
	t.Parallel()
	f := start(t, 2, nil)
	for range 4 {
		code, body, node := f.do(&http.Client{}, http.MethodGet, "/cut", "")
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, "whole", body)
		require.NotEqual(t, f.tc.Node(1).Name(), node)
	}
	for range 4 {
		code, body, _ := f.do(&http.Client{}, http.MethodPost, "/cut", "x")
		require.Contains(t, []int{http.StatusOK, http.StatusBadGateway}, code)
		if code == http.StatusOK {
			require.Equal(t, "whole", body)
		}
	}
}
