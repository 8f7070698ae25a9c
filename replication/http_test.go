package replication

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// counter is a handler that counts visits in the session.
func counter(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := FromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		n, _, _ := GetValue[int](h, "visits")
		n++
		if err := SetValue(h, "visits", n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if r.URL.Query().Get("big") != "" {
			_, _ = w.Write([]byte(strings.Repeat("x", 100<<10)))
		}
		_, _ = io.WriteString(w, strconv.Itoa(n))
	})
}

func TestMiddleware(t *testing.T) {
	c := startSessions(t, 3, nil)
	servers := make([]*httptest.Server, 3)
	for i, n := range c.nodes {
		servers[i] = httptest.NewServer(n.s.Middleware(counter(t), HTTPOptions{}))
		t.Cleanup(servers[i].Close)
	}
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	get := func(i int, query string) (string, *http.Response) {
		t.Helper()
		resp, err := client.Get(servers[i].URL + "/?" + query)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		return string(body), resp
	}
	cookie := func(i int) string {
		u, _ := url.Parse(servers[i].URL)
		for _, ck := range jar.Cookies(u) {
			if ck.Name == DefaultCookieName {
				return ck.Value
			}
		}
		return ""
	}

	body, resp := get(0, "")
	require.Equal(t, "1", body)
	require.Len(t, resp.Cookies(), 1, "a new session sends its cookie")
	id := cookie(0)
	rid, err := ParseID(id)
	require.NoError(t, err)
	require.Equal(t, c.nodes[0].s.NodeID(), rid.Primary)

	// The response arrives only once the secondary has the change.
	body, resp = get(0, "")
	require.Equal(t, "2", body)
	require.Empty(t, resp.Cookies(), "same route: no new cookie")
	secIdx, sec := c.byID(rid.Secondary)
	n, _, err := GetValue[int](newHandle(sec.s, sec.s.lookup(rid.Key), sec.s.lookup(rid.Key).state()), "visits")
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// A large response streams; the session was saved before it started.
	body, _ = get(0, "big=1")
	require.True(t, strings.HasSuffix(body, "3"))

	// The same client on the third node: the session moves there and the
	// cookie follows the new route. (All test servers share 127.0.0.1,
	// so the jar sends the cookie to every one.)
	third := 3 - secIdx
	body, resp = get(third, "")
	require.Equal(t, "4", body)
	require.Len(t, resp.Cookies(), 1, "route changed: cookie rewritten")
	rid2, err := ParseID(cookie(third))
	require.NoError(t, err)
	require.Equal(t, rid.Key, rid2.Key)
	require.Equal(t, c.nodes[third].s.NodeID(), rid2.Primary)

	// An unknown session is replaced by a new one.
	require.NoError(t, c.nodes[third].s.Invalidate(testCtx(t), cookie(third)))
	body, resp = get(0, "")
	require.Equal(t, "1", body)
	require.Len(t, resp.Cookies(), 1)
	require.NotEqual(t, rid.Key, mustParse(t, cookie(0)).Key)
}

func mustParse(t *testing.T, id string) ID {
	t.Helper()
	r, err := ParseID(id)
	require.NoError(t, err)
	return r
}

// TestMiddlewareNoSession: a handler that never asks for a session gets
// none, and no cookie is sent; a request outside the middleware gets an
// error from FromRequest.
func TestMiddlewareNoSession(t *testing.T) {
	c := startSessions(t, 1, nil)
	srv := httptest.NewServer(c.nodes[0].s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "no session")
	}), HTTPOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusTeapot, resp.StatusCode)
	require.Equal(t, "no session", string(body))
	require.Empty(t, resp.Cookies())

	_, err = FromRequest(httptest.NewRequest("GET", "/", nil))
	require.Error(t, err)
}

// TestMiddlewareSaveFails: when the session cannot be saved, the client
// gets the Error response, not the handler's.
func TestMiddlewareSaveFails(t *testing.T) {
	c := startSessions(t, 1, func(_ int, o *Options) { o.MaxSessionSize = 1 << 10 })
	srv := httptest.NewServer(c.nodes[0].s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := FromRequest(r)
		require.NoError(t, err)
		require.NoError(t, h.Set("a", make([]byte, 600)))
		// Another request's handle grows the session meanwhile.
		other, err := c.nodes[0].s.Get(r.Context(), h.ID())
		require.NoError(t, err)
		require.NoError(t, c.nodes[0].s.Save(r.Context(), other))
		require.NoError(t, other.Set("b", make([]byte, 600)))
		require.NoError(t, c.nodes[0].s.Save(r.Context(), other))
		w.Header().Set("X-Handler", "yes")
		_, _ = io.WriteString(w, "handler response")
	}), HTTPOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	require.Empty(t, resp.Header.Get("X-Handler"))
}
