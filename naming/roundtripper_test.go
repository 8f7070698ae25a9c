package naming

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// providers starts 3 nodes, each with an HTTP server answering its node
// name, and binds each server's URL as an offer of "http/orders".
func providers(t *testing.T) (*tcluster, []*httptest.Server) {
	tc := startTrees(t, 3)
	servers := make([]*httptest.Server, 3)
	for i, tr := range tc.trees {
		name := tr.self
		servers[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if r.URL.Path == "/api/cut" {
				// Took the request, then died before answering.
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			io.WriteString(w, name+" "+r.Method+" "+r.URL.Path+" "+string(body))
		}))
		t.Cleanup(servers[i].Close)
		require.NoError(t, tr.Bind(ctx(t), "http/orders", []byte(servers[i].URL+"/api"), Clusterable()))
	}
	eventually(t, tc.trees, "three offers", func(tr *Tree) bool {
		b, err := tr.Lookup("http/orders")
		return err == nil && len(b.Offers) == 3 && len(*tr.members.Load()) == 3
	})
	return tc, servers
}

func do(t *testing.T, client *http.Client, method, body string, header ...string) (string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://orders/items/7", r)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Kill the provider a sticky client uses: a GET fails over to another
// provider at once (before the cluster even notices the failure); a POST
// does not, unless it carries an Idempotency-Key or the caller allows it.
func TestRoundTripperFailoverGETNotPOST(t *testing.T) {
	t.Parallel()
	tc, servers := providers(t)
	client := tc.trees[0]

	sticky := NewSticky(First())
	rt, err := NewRoundTripper(client, "http/orders", sticky, RoundTripperOptions{Base: &http.Transport{}})
	require.NoError(t, err)
	hc := &http.Client{Transport: rt}
	got, err := do(t, hc, "GET", "")
	require.NoError(t, err)
	require.Equal(t, "node-0 GET /api/items/7 ", got)

	// Stick to node-1 and kill it.
	sticky.node.Store(ptr("node-1"))
	got, err = do(t, hc, "POST", "hello")
	require.NoError(t, err)
	require.Equal(t, "node-1 POST /api/items/7 hello", got)
	servers[1].Close()
	tc.kill(1)
	b, _ := client.Lookup("http/orders")
	require.Len(t, b.Offers, 3, "the failure is not detected yet: the dead offer is still there")

	sticky.node.Store(ptr("node-1"))
	got, err = do(t, hc, "GET", "")
	require.NoError(t, err, "GET fails over")
	assert.Equal(t, "node-0 GET /api/items/7 ", got)
	assert.Equal(t, "node-0", sticky.Node(), "the sticky policy moved to the live provider")

	sticky.node.Store(ptr("node-1"))
	got, err = do(t, hc, "POST", "create")
	require.NoError(t, err, "a POST that the dead provider refused fails over: it was never sent")
	assert.Equal(t, "node-0 POST /api/items/7 create", got)

	// A provider that took the POST and then cut the connection may have
	// processed it: the POST does not fail over.
	sticky.node.Store(ptr("node-0"))
	req, err := http.NewRequest("POST", "http://orders/cut", strings.NewReader("maybe done"))
	require.NoError(t, err)
	_, err = hc.Do(req)
	require.Error(t, err, "POST does not fail over")
	assert.Contains(t, err.Error(), "node-0")

	sticky.node.Store(ptr("node-1"))
	got, err = do(t, hc, "POST", "with key", "Idempotency-Key", "k1")
	require.NoError(t, err, "a POST with an Idempotency-Key fails over")
	assert.Equal(t, "node-0 POST /api/items/7 with key", got)

	sticky.node.Store(ptr("node-1"))
	got, err = do(t, hc, "PUT", "replayed body")
	require.NoError(t, err, "PUT fails over with its body replayed")
	assert.Equal(t, "node-0 PUT /api/items/7 replayed body", got)

	rtAny, err := NewRoundTripper(client, "http/orders", sticky, RoundTripperOptions{Base: &http.Transport{}, RetryNonIdempotent: true})
	require.NoError(t, err)
	sticky.node.Store(ptr("node-1"))
	got, err = do(t, &http.Client{Transport: rtAny}, "POST", "allowed")
	require.NoError(t, err, "POST fails over when the caller allows it")
	assert.Equal(t, "node-0 POST /api/items/7 allowed", got)

	// A body that cannot be replayed is not retried.
	sticky.node.Store(ptr("node-1"))
	req, err = http.NewRequest("PUT", "http://orders/x", io.NopCloser(bytes.NewReader([]byte("once"))))
	require.NoError(t, err)
	_, err = hc.Do(req)
	require.Error(t, err)

	// Once the failure is detected, the dead offer is gone.
	eventually(t, []*Tree{client}, "failed provider's offer removed", func(tr *Tree) bool {
		b, err := tr.Lookup("http/orders")
		return err == nil && len(b.Offers) == 2
	})
}

func TestRoundTripperErrors(t *testing.T) {
	t.Parallel()
	tc := startTrees(t, 1)
	tr := tc.trees[0]
	_, err := NewRoundTripper(tr, "bad//name", nil, RoundTripperOptions{})
	require.ErrorIs(t, err, ErrInvalidName)
	rt, err := NewRoundTripper(tr, "http/none", nil, RoundTripperOptions{})
	require.NoError(t, err)
	_, err = do(t, &http.Client{Transport: rt}, "GET", "")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, tr.Bind(ctx(t), "http/bad", []byte("not a url")))
	rt, err = NewRoundTripper(tr, "http/bad", nil, RoundTripperOptions{})
	require.NoError(t, err)
	_, err = do(t, &http.Client{Transport: rt}, "GET", "")
	require.ErrorContains(t, err, "not an http(s) base URL")
}

func ptr[T any](v T) *T { return &v }
