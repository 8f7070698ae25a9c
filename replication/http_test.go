package replication

import (
	"crypto/tls"
	"io"
	"log"
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
		servers[i] = httptest.NewServer(n.s.Middleware(HTTPOptions{})(counter(t)))
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
	srv := httptest.NewServer(c.nodes[0].s.Middleware(HTTPOptions{})(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "no session")
	})))
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
	srv := httptest.NewServer(c.nodes[0].s.Middleware(HTTPOptions{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := FromRequest(r)
		require.NoError(t, err)
		require.NoError(t, h.Set("new", []byte("y")))
		require.NoError(t, c.nodes[0].s.Save(r.Context(), h)) // creates it
		require.NoError(t, h.Set("a", make([]byte, 600)))
		// Another request's handle grows the session meanwhile.
		other, err := c.nodes[0].s.Get(r.Context(), h.ID())
		require.NoError(t, err)
		require.NoError(t, c.nodes[0].s.Save(r.Context(), other))
		require.NoError(t, other.Set("b", make([]byte, 600)))
		require.NoError(t, c.nodes[0].s.Save(r.Context(), other))
		w.Header().Set("X-Handler", "yes")
		_, _ = io.WriteString(w, "handler response")
	})))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	require.Empty(t, resp.Header.Get("X-Handler"))
}

// serve runs one request through h and returns the recorded response.
func serve(h http.Handler, path, cookie string, overTLS bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", path, nil)
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: DefaultCookieName, Value: cookie})
	}
	if overTLS {
		r.TLS = &tls.ConnectionState{}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// sessionCookie returns the session cookie a response sets, or nil.
func sessionCookie(w *httptest.ResponseRecorder) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == DefaultCookieName {
			return c
		}
	}
	return nil
}

// TestMiddlewareLazyCreation: 20,000 requests without a cookie whose
// handler reads the session but stores nothing create no session, store
// nothing, set no cookie and leave the heap as it was.
func TestMiddlewareLazyCreation(t *testing.T) {
	c := startSessions(t, 2, nil)
	n := c.nodes[0]
	h := n.s.Middleware(HTTPOptions{})(sessionHandler(func(w http.ResponseWriter, _ *http.Request, s *Session) {
		if _, ok := s.Get("user"); !ok {
			_, _ = io.WriteString(w, "anonymous")
		}
	}))
	heap0 := heapInUse()
	for range 20000 {
		w := serve(h, "/", "", false)
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, "anonymous", w.Body.String())
		require.Empty(t, w.Header().Values("Set-Cookie"))
	}
	grew := int64(heapInUse()) - int64(heap0)
	st := n.s.Stats()
	require.Zero(t, st.Created)
	require.Zero(t, st.Primaries)
	require.Zero(t, c.nodes[1].s.Stats().Secondaries)
	require.Less(t, grew, int64(4<<20), "the heap grew by %d bytes", grew)
}

// TestMiddlewareMaxSessions: a flood of 20,000 requests without a cookie
// whose handler stores something creates MaxSessions sessions; the rest
// get 503 with Retry-After, memory stays within the bound, and a client
// with a session keeps being served.
func TestMiddlewareMaxSessions(t *testing.T) {
	const limit = 500
	c := startSessions(t, 2, func(_ int, o *Options) { o.MaxSessions = limit })
	n := c.nodes[0]
	h := n.s.Middleware(HTTPOptions{})(counter(t))
	first := sessionCookie(serve(h, "/", "", false))
	require.NotNil(t, first)

	heap0 := heapInUse()
	refused := 0
	for range 20000 {
		w := serve(h, "/", "", false)
		switch w.Code {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			refused++
			require.NotEmpty(t, w.Header().Get("Retry-After"))
			require.Nil(t, sessionCookie(w))
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	grew := int64(heapInUse()) - int64(heap0)
	t.Logf("heap grew by %d bytes for %d sessions (primary and secondary copies)", grew, limit-1)
	require.Equal(t, uint64(limit), n.s.Stats().Created)
	require.Equal(t, limit, n.s.Stats().Primaries)
	require.Equal(t, 20000-(limit-1), refused)
	// Both nodes run in this process: 500 small sessions on each, and
	// room for the garbage collector's pacing.
	require.Less(t, grew, int64(16<<20), "the heap grew by %d bytes", grew)

	w := serve(h, "/", first.Value, false)
	require.Equal(t, http.StatusOK, w.Code, "an existing session is served at the bound")
	require.Equal(t, "2", w.Body.String())
	_, err := n.s.Create(testCtx(t))
	require.ErrorIs(t, err, ErrTooManySessions)
}

// TestMiddlewareRenewAndDestroy: a handler renews the session id at
// login (the old id stops working, the attributes move to the new one)
// and destroys the session at logout (the cookie is expired), both
// without a 503; the cookie is Secure when the request came over TLS.
func TestMiddlewareRenewAndDestroy(t *testing.T) {
	c := startSessions(t, 2, nil)
	n := c.nodes[0]
	mux := http.NewServeMux()
	handle := func(path string, f func(r *http.Request) error) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if err := f(r); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, "ok")
		})
	}
	store := func(r *http.Request, k, v string) error {
		s, err := FromRequest(r)
		if err != nil {
			return err
		}
		return s.Set(k, []byte(v))
	}
	handle("/cart", func(r *http.Request) error { return store(r, "cart", "book") })
	handle("/login", func(r *http.Request) error {
		if err := store(r, "user", "ana"); err != nil {
			return err
		}
		return RenewID(r)
	})
	handle("/logout", Destroy)
	handle("/logout-flash", func(r *http.Request) error {
		if err := Destroy(r); err != nil {
			return err
		}
		return store(r, "flash", "bye")
	})
	h := n.s.Middleware(HTTPOptions{})(mux)
	attr := func(id, k string) string {
		s, err := n.s.Get(testCtx(t), id)
		require.NoError(t, err)
		v, _ := s.Get(k)
		return string(v)
	}
	gone := func(id string) {
		t.Helper()
		_, err := n.s.Get(testCtx(t), id)
		require.ErrorIs(t, err, ErrNotFound)
	}

	w := serve(h, "/cart", "", false)
	require.Equal(t, http.StatusOK, w.Code)
	c1 := sessionCookie(w)
	require.NotNil(t, c1)
	require.False(t, c1.Secure)

	// Login renews the id: a new key, the old one no longer works.
	w = serve(h, "/login", c1.Value, true)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	c2 := sessionCookie(w)
	require.NotNil(t, c2, "the renewed id is sent")
	require.True(t, c2.Secure, "over TLS the cookie is Secure")
	require.NotEqual(t, mustParse(t, c1.Value).Key, mustParse(t, c2.Value).Key)
	gone(c1.Value)
	require.Equal(t, "book", attr(c2.Value, "cart"))
	require.Equal(t, "ana", attr(c2.Value, "user"))

	// Logout destroys the session and expires the cookie.
	w = serve(h, "/logout", c2.Value, true)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	c3 := sessionCookie(w)
	require.NotNil(t, c3)
	require.Negative(t, c3.MaxAge, "the cookie is expired")
	require.True(t, c3.Secure)
	gone(c2.Value)

	// A handler may store into a new session after destroying one.
	c4 := sessionCookie(serve(h, "/cart", "", false))
	w = serve(h, "/logout-flash", c4.Value, false)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	c5 := sessionCookie(w)
	require.NotNil(t, c5)
	require.NotEqual(t, mustParse(t, c4.Value).Key, mustParse(t, c5.Value).Key)
	gone(c4.Value)
	require.Equal(t, "bye", attr(c5.Value, "flash"))
	require.Empty(t, attr(c5.Value, "cart"))

	// Login without a session: one new session, one cookie.
	w = serve(h, "/login", "", false)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Len(t, w.Header().Values("Set-Cookie"), 1)
	require.Equal(t, "ana", attr(sessionCookie(w).Value, "user"))
}

// TestMiddlewareFlushThenWriteHeader: a handler that flushes (which
// saves the session and sends the status) and then sets a status, as
// net/http allows and ignores, does not make the middleware send a
// second status line.
func TestMiddlewareFlushThenWriteHeader(t *testing.T) {
	c := startSessions(t, 1, nil)
	var logs logBuffer
	srv := httptest.NewUnstartedServer(c.nodes[0].s.Middleware(HTTPOptions{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := FromRequest(r)
		require.NoError(t, err)
		require.NoError(t, SetValue(s, "k", 1))
		w.(http.Flusher).Flush()
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "saved")
	})))
	srv.Config.ErrorLog = log.New(&logs, "", 0)
	srv.Start()
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the status went out with the flush")
	require.Equal(t, "saved", string(body))
	require.Len(t, resp.Cookies(), 1)
	srv.Close() // flushes the server's log
	require.NotContains(t, logs.String(), "superfluous")
}

// TestMiddlewareCommit: Commit saves a session the handler created, so
// that the response can name its id, and the response is still sent
// whole, with its length, after it (a flush to save it started the
// response at once, and a worker killed before the body left a proxy
// with half an answer).
func TestMiddlewareCommit(t *testing.T) {
	c := startSessions(t, 2, nil)
	n := c.nodes[0]
	h := n.s.Middleware(HTTPOptions{})(sessionHandler(func(w http.ResponseWriter, r *http.Request, s *Session) {
		require.NoError(t, s.Set("cart", []byte("1 book")))
		if err := Commit(r); err != nil {
			return // the middleware answered
		}
		require.NotEmpty(t, s.ID())
		_, _ = io.WriteString(w, s.ID())
		require.NoError(t, s.Set("cart", []byte("2 books"))) // saved when the handler is done
	}))
	resp, body := postOnce(t, h)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, int64(len(body)), resp.ContentLength, "the response was not sent whole")
	require.Empty(t, resp.TransferEncoding)
	var cookie string
	for _, ck := range resp.Cookies() {
		if ck.Name == DefaultCookieName {
			cookie = ck.Value
		}
	}
	require.Equal(t, string(body), cookie, "the body names the session the cookie carries")
	s, err := n.s.Get(testCtx(t), cookie)
	require.NoError(t, err)
	v, ok := s.Get("cart")
	require.True(t, ok)
	require.Equal(t, "2 books", string(v))

	// Outside the middleware, Commit says so.
	require.Error(t, Commit(httptest.NewRequest(http.MethodGet, "/", nil)))
}

// TestMiddlewareCommitThenSessionMoves: a session saved by Commit and
// unchanged since is not saved again when the handler is done. It may
// have moved to another node meanwhile (a graceful leave hands it on),
// and a second Save there would turn the committed answer into a 503
// (the app server's graceful-leave test saw this).
func TestMiddlewareCommitThenSessionMoves(t *testing.T) {
	c := startSessions(t, 2, nil)
	n, other := c.nodes[0], c.nodes[1]
	h := n.s.Middleware(HTTPOptions{})(sessionHandler(func(w http.ResponseWriter, r *http.Request, s *Session) {
		require.NoError(t, s.Set("cart", []byte("1 book")))
		if err := Commit(r); err != nil {
			return
		}
		_, err := other.s.Get(testCtx(t), s.ID())
		require.NoError(t, err, "the other node takes the session over")
		_, _ = io.WriteString(w, "committed")
	}))
	resp, body := postOnce(t, h)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, "committed", string(body))
}

// postOnce serves h and sends it one POST, returning the response and
// its body, read whole.
func postOnce(t *testing.T, h http.Handler) (*http.Response, []byte) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/", "text/plain", nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	return resp, body
}

// sessionHandler is a handler that works on the request's session, or
// answers 500 when the request has none.
func sessionHandler(fn func(w http.ResponseWriter, r *http.Request, s *Session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := FromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fn(w, r, s)
	})
}
