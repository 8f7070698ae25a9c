package pins

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/testcerts"
	"github.com/troupe-go/troupe/membership"
)

// clientIP is the address the tests' HTTP clients send from, so that the
// X-Forwarded-For an owner sees can be checked exactly.
const clientIP = "127.0.0.30"

// seen is what a local handler saw of one request.
type seen struct {
	node, xff, forwarded, hop, cookie, auth, by string
	viaTLS, clientCert                          bool
}

// fwdCluster is n pin nodes, each with an HTTP server running Handler in
// front of a local handler that records what it saw.
type fwdCluster struct {
	t      *testing.T
	nodes  []*pinNode
	addrs  []string    // HTTP "ip:port" of each node
	tls    *tls.Config // of the servers and the client, when they use https
	mu     sync.Mutex
	seen   []seen
	scheme string
}

func startForwarding(t *testing.T, n int) *fwdCluster {
	return startForwardingWith(t, n, nil, nil)
}

// startForwardingWith starts n nodes whose Pins options popts adjusts and
// whose HTTP servers serve https with tlsCfg, when it is not nil.
func startForwardingWith(t *testing.T, n int, popts func(i int, o *Options), tlsCfg *tls.Config) *fwdCluster {
	t.Helper()
	fc := &fwdCluster{t: t, nodes: startPinsWith(t, n, popts), tls: tlsCfg, scheme: "http"}
	if tlsCfg != nil {
		fc.scheme = "https"
	}
	ctx := testCtx(t)
	for i, nd := range fc.nodes {
		ln, err := net.Listen("tcp", clustertest.Host(i)+":0")
		require.NoError(t, err)
		local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fc.mu.Lock()
			fc.seen = append(fc.seen, seen{node: nd.name(), xff: r.Header.Get("X-Forwarded-For"),
				forwarded: r.Header.Get("Forwarded"), hop: r.Header.Get(ForwardedHeader),
				cookie: r.Header.Get("Cookie"), auth: r.Header.Get("Authorization"), by: ForwardedBy(r),
				viaTLS: r.TLS != nil, clientCert: r.TLS != nil && len(r.TLS.VerifiedChains) > 0})
			fc.mu.Unlock()
			fmt.Fprintf(w, "%s served %s", nd.name(), r.URL.Path)
		})
		srv := &http.Server{Handler: nd.pins.Handler(func(r *http.Request) string {
			return strings.TrimPrefix(r.URL.Path, "/")
		}, local), TLSConfig: tlsCfg}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		fc.addrs = append(fc.addrs, ln.Addr().String())
		fc.publish(ctx, i, ln.Addr().String())
	}
	return fc
}

// publish sets node i's HTTP tag to addr and waits until every node sees
// it.
func (fc *fwdCluster) publish(ctx context.Context, i int, addr string) {
	fc.t.Helper()
	require.NoError(fc.t, fc.nodes[i].c.UpdateMeta(ctx, func(m *membership.Meta) {
		m.Tags = map[string]string{DefaultHTTPTag: addr}
	}))
	require.Eventually(fc.t, func() bool { // the tags travel by gossip
		for _, nd := range fc.nodes {
			if m, ok := nd.c.Member(fc.nodes[i].name()); !ok || m.Tag(DefaultHTTPTag) != addr {
				return false
			}
		}
		return true
	}, clustertest.Timeout, 10*time.Millisecond)
}

// pin pins key on node i and waits until every node sees it.
func (fc *fwdCluster) pin(ctx context.Context, i int, key string) {
	fc.t.Helper()
	_, err := fc.nodes[i].pins.Pin(ctx, key)
	require.NoError(fc.t, err)
	require.Eventually(fc.t, func() bool {
		for _, nd := range fc.nodes {
			if pin, err := nd.pins.Owner(key); err != nil || pin.Owner != fc.nodes[i].name() {
				return false
			}
		}
		return true
	}, clustertest.Timeout, 10*time.Millisecond)
}

func (fc *fwdCluster) lastSeen() seen {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	require.NotEmpty(fc.t, fc.seen, "no local handler was reached")
	return fc.seen[len(fc.seen)-1]
}

// client sends from clientIP and gives up after 10 s.
func (fc *fwdCluster) client() *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: fc.tls}}
}

// get sends GET path to node i's HTTP server with the given headers.
func (fc *fwdCluster) get(i int, path string, hdr map[string]string) (int, string) {
	fc.t.Helper()
	req, err := http.NewRequest(http.MethodGet, fc.scheme+"://"+fc.addrs[i]+path, nil)
	require.NoError(fc.t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return fc.do(req)
}

func (fc *fwdCluster) do(req *http.Request) (int, string) {
	fc.t.Helper()
	resp, err := fc.client().Do(req)
	require.NoError(fc.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A client that sends the internal hop header itself neither stops its
// request from being forwarded nor gets it believed; the owner sees the
// X-Forwarded-For and Forwarded that the forwarding node wrote, with the
// client's own replaced.
func TestForwardClientHopHeaderNotTrusted(t *testing.T) {
	t.Parallel()
	fc := startForwarding(t, 3)
	ctx := testCtx(t)
	fc.pin(ctx, 1, "queue")

	// Sent to a node that does not own the key, with the header a
	// forwarding node would write: forwarded all the same.
	code, body := fc.get(0, "/queue", map[string]string{
		ForwardedHeader:   fc.nodes[2].name(),
		"X-Forwarded-For": "6.6.6.6",
		"Forwarded":       "for=6.6.6.6",
	})
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, fc.nodes[1].name()+" served /queue", body)
	s := fc.lastSeen()
	assert.Equal(t, clientIP, s.xff, "X-Forwarded-For names the client, and only it")
	assert.Equal(t, `for=`+clientIP+`;host="`+fc.addrs[0]+`";proto=http`, s.forwarded)
	assert.Empty(t, s.hop, "the local handler never sees the hop header")
	assert.Equal(t, fc.nodes[0].name(), s.by, "the owner knows who forwarded the request")

	// Sent to the owner directly: served, and the forged header does not
	// reach the local handler.
	code, body = fc.get(1, "/queue", map[string]string{ForwardedHeader: fc.nodes[0].name()})
	require.Equal(t, http.StatusOK, code, body)
	assert.Empty(t, fc.lastSeen().hop)
	assert.Empty(t, fc.lastSeen().by, "a client's hop header names no forwarding member")
}

// A member that publishes an HTTP address on another host than its own
// (a stranger's) is never forwarded to: the client's cookie and bearer
// token stay with the node they were sent to.
func TestForwardNeverToAStranger(t *testing.T) {
	t.Parallel()
	fc := startForwarding(t, 3)
	ctx := testCtx(t)
	stranger, err := net.Listen("tcp", "127.0.0.31:0")
	require.NoError(t, err)
	var accepted atomic.Int32
	go func() {
		for {
			c, err := stranger.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { stranger.Close() })
	fc.publish(ctx, 1, stranger.Addr().String())
	fc.pin(ctx, 1, "queue")
	code, body := fc.get(0, "/queue", map[string]string{"Cookie": "session=secret", "Authorization": "Bearer secret"})
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.Zero(t, accepted.Load(), "the stranger's address was dialled")
}

// An owner whose HTTP server accepts connections and never answers (a
// stopped process, SIGSTOP) costs a forwarded request the header timeout,
// not a minute.
func TestForwardHangingOwnerTimesOut(t *testing.T) {
	t.Parallel()
	fc := startForwardingWith(t, 2, func(_ int, o *Options) { o.ForwardHeaderTimeout = 300 * time.Millisecond }, nil)
	ctx := testCtx(t)
	hang, err := net.Listen("tcp", clustertest.Host(1)+":0")
	require.NoError(t, err)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		hang.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	fc.publish(ctx, 1, hang.Addr().String())
	fc.pin(ctx, 1, "queue")
	start := time.Now()
	code, body := fc.get(0, "/queue", nil)
	took := time.Since(start)
	assert.Equal(t, http.StatusGatewayTimeout, code, body)
	assert.Less(t, took, 5*time.Second)
}

// A hop header that verifies (signed with the cluster key by a live
// member, for this node and this request) is believed: a node that does
// not own the key answers 503 rather than forwarding again. One signed for
// another receiver, another request, or too long ago is not: the request
// is forwarded as any client's.
func TestForwardSignedHopHeader(t *testing.T) {
	t.Parallel()
	fc := startForwarding(t, 3)
	ctx := testCtx(t)
	fc.pin(ctx, 2, "queue")
	send := func(sign func(req *http.Request) string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, "http://"+fc.addrs[1]+"/queue", nil)
		require.NoError(t, err)
		req.Header.Set(ForwardedHeader, sign(req))
		return fc.do(req)
	}
	from0 := fc.nodes[0].pins
	code, body := send(func(req *http.Request) string { return from0.signHop(req, fc.nodes[1].name(), time.Now()) })
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.Contains(t, body, "moved")

	for what, sign := range map[string]func(*http.Request) string{
		"another receiver": func(req *http.Request) string { return from0.signHop(req, fc.nodes[2].name(), time.Now()) },
		"too old": func(req *http.Request) string {
			return from0.signHop(req, fc.nodes[1].name(), time.Now().Add(-time.Hour))
		},
		"another request": func(req *http.Request) string {
			other := req.Clone(context.Background())
			other.URL.Path = "/other"
			return from0.signHop(other, fc.nodes[1].name(), time.Now())
		},
		"a made-up MAC": func(*http.Request) string {
			return fc.nodes[0].name() + " " + fmt.Sprint(time.Now().Unix()) + " AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		},
	} {
		code, body := send(sign)
		require.Equal(t, http.StatusOK, code, "%s: %s", what, body)
		s := fc.lastSeen()
		assert.Equal(t, fc.nodes[2].name(), s.node, what)
		assert.Equal(t, fc.nodes[1].name(), s.by, what)
	}
}

// A load balancer listed in TrustedProxies keeps its X-Forwarded-For and
// Forwarded: the forwarding node appends its client to them.
func TestForwardTrustedProxyAppended(t *testing.T) {
	t.Parallel()
	fc := startForwardingWith(t, 2, func(_ int, o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(clientIP + "/32")}
	}, nil)
	ctx := testCtx(t)
	fc.pin(ctx, 1, "queue")
	code, body := fc.get(0, "/queue", map[string]string{
		"X-Forwarded-For":   "6.6.6.6",
		"Forwarded":         "for=6.6.6.6;proto=https",
		"X-Forwarded-Proto": "https",
	})
	require.Equal(t, http.StatusOK, code, body)
	s := fc.lastSeen()
	assert.Equal(t, "6.6.6.6, "+clientIP, s.xff)
	assert.Equal(t, `for=6.6.6.6;proto=https, for=`+clientIP+`;host="`+fc.addrs[0]+`";proto=http`, s.forwarded)
}

// With ForwardTLS, requests are forwarded over https, presenting the
// node's certificate to an owner that requires one.
func TestForwardMutualTLS(t *testing.T) {
	t.Parallel()
	ca := testcerts.NewCA(t)
	node := ca.TLSConfig(t)
	server := node.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	fc := startForwardingWith(t, 2, func(_ int, o *Options) { o.ForwardTLS = node }, server)
	ctx := testCtx(t)
	fc.pin(ctx, 1, "queue")
	code, body := fc.get(0, "/queue", nil)
	require.Equal(t, http.StatusOK, code, body)
	s := fc.lastSeen()
	assert.Equal(t, fc.nodes[1].name(), s.node)
	assert.True(t, s.viaTLS && s.clientCert, "forwarded over mutual TLS")
	assert.Equal(t, fc.nodes[0].name(), s.by)
	assert.Equal(t, `for=`+clientIP+`;host="`+fc.addrs[0]+`";proto=https`, s.forwarded)
}

// An owner that sends its response headers and then stalls costs the
// client ForwardBodyTimeout, not a hung connection.
func TestForwardStalledBodyCut(t *testing.T) {
	t.Parallel()
	fc := startForwardingWith(t, 2, func(_ int, o *Options) { o.ForwardBodyTimeout = 300 * time.Millisecond }, nil)
	ctx := testCtx(t)
	stall, err := net.Listen("tcp", clustertest.Host(1)+":0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		stall.Close()
		close(done)
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				<-done
			})
		}
	})
	fc.publish(ctx, 1, stall.Addr().String())
	fc.pin(ctx, 1, "queue")
	start := time.Now()
	resp, err := fc.client().Get("http://" + fc.addrs[0] + "/queue")
	if err == nil { // the response's headers reached the client before the cut
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	require.Error(t, err, "the cut response must not look complete")
	assert.NotContains(t, err.Error(), "Client.Timeout")
	assert.Less(t, time.Since(start), 5*time.Second)
}

// parseHop accepts exactly what signHop wrote, for the receiver it was
// written for, with any installed key.
func TestParseHop(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	k1, k2 := []byte("key one, in use"), []byte("key two, installed")
	sign := func(key []byte, sender, receiver string, ts time.Time, target string) string {
		mac := hopMAC(key, sender, receiver, ts.Unix(), "GET", "h:1", target)
		return sender + " " + fmt.Sprint(ts.Unix()) + " " + base64URL(mac)
	}
	good := sign(k1, "node 0", "node-1", now, "/a?b")
	got, ok := parseHop(good, "node-1", "GET", "h:1", "/a?b", now, [][]byte{k1})
	require.True(t, ok)
	require.Equal(t, "node 0", got, "a name with a space survives")
	_, ok = parseHop(sign(k2, "node-0", "node-1", now, "/a?b"), "node-1", "GET", "h:1", "/a?b", now, [][]byte{k1, k2})
	require.True(t, ok, "a key being rotated in or out verifies")
	for what, v := range map[string]string{
		"no keys":       "",
		"other key":     sign(k2, "node-0", "node-1", now, "/a?b"),
		"other target":  sign(k1, "node-0", "node-1", now, "/a?c"),
		"to itself":     sign(k1, "node-1", "node-1", now, "/a?b"),
		"future":        sign(k1, "node-0", "node-1", now.Add(hopMaxAge+time.Second), "/a?b"),
		"old":           sign(k1, "node-0", "node-1", now.Add(-hopMaxAge-time.Second), "/a?b"),
		"plain name":    "node-0",
		"garbage":       "a b c d",
		"short mac":     "node-0 1700000000 AAAA",
		"empty":         " ",
		"no sender":     " 1700000000 " + base64URL(make([]byte, 32)),
		"bad timestamp": "node-0 x " + base64URL(make([]byte, 32)),
	} {
		keys := [][]byte{k1}
		if what == "no keys" {
			v, keys = good, nil
		}
		_, ok := parseHop(v, "node-1", "GET", "h:1", "/a?b", now, keys)
		assert.False(t, ok, what)
	}
}

func TestForwardOptionsValidate(t *testing.T) {
	o := Options{}.withDefaults()
	require.Equal(t, DefaultForwardDialTimeout, o.ForwardDialTimeout)
	require.Equal(t, DefaultForwardHeaderTimeout, o.ForwardHeaderTimeout)
	require.ErrorIs(t, Options{ForwardHeaderTimeout: -time.Second}.Validate(), ErrInvalidOptions)
	require.ErrorIs(t, Options{TrustedProxies: []netip.Prefix{{}}}.Validate(), ErrInvalidOptions)
	tr := newForwardTransport(o)
	require.Equal(t, DefaultForwardHeaderTimeout, tr.ResponseHeaderTimeout)
	require.Equal(t, DefaultForwardIdleTimeout, tr.IdleConnTimeout)
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
