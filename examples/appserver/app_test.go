package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/troupetest"
)

// appClient sends requests to the application of two in-process
// workers with one cookie jar (both listen on 127.0.0.1, so the jar
// sends the cookie to both).
type appClient struct {
	t    *testing.T
	http *http.Client
}

type appAnswer struct {
	status    int
	setCookie string
	reply     reply
	body      string
}

func (c *appClient) do(srv *httptest.Server, method, path, contentType, body, key string) appAnswer {
	c.t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set(idempotencyHeader, key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := appAnswer{status: resp.StatusCode, setCookie: resp.Header.Get("Set-Cookie"), body: string(b)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &a.reply); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return a
}

const form = "application/x-www-form-urlencoded"

// TestApp runs the application on two in-process workers and checks
// the counter, the cart, their Idempotency-Key rule, login and logout.
func TestApp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	tc := troupetest.Start(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var srvs []*httptest.Server
	for _, node := range tc.Nodes() {
		if err := node.Sessions().WaitPeers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		a := &app{node: node.Name(), log: slog.New(slog.DiscardHandler)}
		srv := httptest.NewServer(node.Sessions().Middleware(replication.HTTPOptions{Error: a.sessionError})(a.routes()))
		t.Cleanup(srv.Close)
		srvs = append(srvs, srv)
	}
	a, b := srvs[0], srvs[1]
	jar, _ := cookiejar.New(nil)
	c := &appClient{t: t, http: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
	value := func(r appAnswer) int64 {
		t.Helper()
		if r.status != http.StatusOK || r.reply.Value == nil {
			t.Fatalf("answer %d %s", r.status, r.body)
		}
		return *r.reply.Value
	}

	// Reading creates nothing.
	r := c.do(a, http.MethodGet, "/counter", "", "", "")
	if value(r) != 0 || r.reply.Session != "" || r.setCookie != "" || r.reply.Node != "node-0" {
		t.Fatalf("GET /counter without a session: %+v, Set-Cookie %q", r.reply, r.setCookie)
	}

	// The counter and its Idempotency-Key: only the last key is a retry.
	for _, step := range []struct {
		key  string
		want int64
	}{{"k1", 1}, {"k1", 1}, {"k2", 2}, {"k2", 2}, {"", 3}, {"k2", 4}} {
		r := c.do(a, http.MethodPost, "/counter", "", "", step.key)
		if got := value(r); got != step.want || r.reply.Session == "" {
			t.Fatalf("POST /counter with key %q: %+v, want value %d", step.key, r.reply, step.want)
		}
	}
	first := c.do(a, http.MethodGet, "/counter", "", "", "").reply.Session

	// The cart, as a form and as JSON, with the same rule.
	for _, step := range []struct {
		ct, body, key string
		want          []cartItem
	}{
		{form, "item=book&qty=2", "c1", []cartItem{{"book", 2}}},
		{"application/json", `{"item":"pen"}`, "c2", []cartItem{{"book", 2}, {"pen", 1}}},
		{"application/json", `{"item":"pen"}`, "c2", []cartItem{{"book", 2}, {"pen", 1}}},
		{form, "item=book&qty=-2", "", []cartItem{{"pen", 1}}},
	} {
		r := c.do(b, http.MethodPost, "/cart", step.ct, step.body, step.key) // on the other worker: it takes the session over
		if r.status != http.StatusOK || !equalItems(r.reply.Items, step.want) || r.reply.Node != "node-1" {
			t.Fatalf("POST /cart %s: %d %s, want %v", step.body, r.status, r.body, step.want)
		}
	}
	for _, body := range []string{"qty=2", "item=x&qty=0", "item=x&qty=many", "item=" + strings.Repeat("x", maxItemLen+1)} {
		if r := c.do(b, http.MethodPost, "/cart", form, body, ""); r.status != http.StatusBadRequest {
			t.Errorf("POST /cart %s: %d, want 400", body, r.status)
		}
	}
	if r := c.do(a, http.MethodGet, "/cart", "", "", ""); !equalItems(r.reply.Items, []cartItem{{"pen", 1}}) {
		t.Errorf("GET /cart: %s", r.body)
	}
	if r := c.do(a, http.MethodDelete, "/cart", "", "", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"items":[]`) {
		t.Errorf("DELETE /cart: %d %s", r.status, r.body)
	}

	// Login gives the session a new id and keeps what it holds.
	r = c.do(a, http.MethodPost, "/login", form, "user=ana", "")
	if r.status != http.StatusOK || r.reply.User != "ana" || r.setCookie == "" {
		t.Fatalf("POST /login: %d %s, Set-Cookie %q", r.status, r.body, r.setCookie)
	}
	if key := func(id string) string { k, _, _ := strings.Cut(id, "!"); return k }; key(r.reply.Session) == key(first) {
		t.Errorf("login kept the session's key: %s, was %s", r.reply.Session, first)
	}
	if r := c.do(b, http.MethodGet, "/counter", "", "", ""); value(r) != 4 || r.reply.User != "ana" {
		t.Errorf("GET /counter after login: %+v", r.reply)
	}
	if r := c.do(a, http.MethodPost, "/login", form, "user=", ""); r.status != http.StatusBadRequest {
		t.Errorf("POST /login without a user: %d", r.status)
	}

	// Logout ends the session.
	r = c.do(b, http.MethodPost, "/logout", "", "", "")
	if r.status != http.StatusOK || r.reply.Session != "" || !strings.Contains(r.setCookie, "Max-Age=0") {
		t.Fatalf("POST /logout: %d %s, Set-Cookie %q", r.status, r.body, r.setCookie)
	}
	if r := c.do(a, http.MethodGet, "/counter", "", "", ""); value(r) != 0 || r.reply.Session != "" || r.reply.User != "" {
		t.Errorf("GET /counter after logout: %+v", r.reply)
	}
}

func equalItems(got, want []cartItem) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
