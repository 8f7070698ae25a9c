package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/troupe-go/troupe/replication"
)

// Session attributes of the application.
const (
	attrCounter    = "counter"      // int64
	attrCounterKey = "counter.idem" // string: the Idempotency-Key of the last increment
	attrCart       = "cart"         // map[string]int: item -> quantity
	attrCartKey    = "cart.idem"    // string: the Idempotency-Key of the last cart change
	attrUser       = "user"         // string: who logged in
)

// idempotencyHeader carries a client's key for one change: a POST whose
// key equals that of the session's last change of the same kind is a
// retry, answered without applying it again.
const idempotencyHeader = "Idempotency-Key"

// Limits on what a client stores in its session.
const (
	maxBody     = 64 << 10
	maxItemLen  = 100
	maxItems    = 100
	maxQty      = 1000
	maxUserLen  = 64
	maxKeyLen   = 200
	defaultQty  = 1
	retryAfter  = "1"
	jsonContent = "application/json"
)

// app is a worker's application: a counter and a cart in each client's
// session, and a login.
type app struct {
	node string
	log  *slog.Logger
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /counter", a.getCounter)
	mux.HandleFunc("POST /counter", a.postCounter)
	mux.HandleFunc("GET /cart", a.getCart)
	mux.HandleFunc("POST /cart", a.postCart)
	mux.HandleFunc("DELETE /cart", a.deleteCart)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /logout", a.logout)
	return mux
}

// sessionError answers a request whose session cannot be loaded or saved
// (the middleware's HTTPOptions.Error): 503, so that the client retries,
// naming this node like every other response.
func (a *app) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	a.log.Warn("session unavailable", "path", r.URL.Path, "err", err)
	w.Header().Set(nodeHeader, a.node)
	w.Header().Set("Retry-After", retryAfter)
	http.Error(w, "session unavailable: retry", http.StatusServiceUnavailable)
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, `appserver worker %s

GET    /counter          this session's counter
POST   /counter          add one (header Idempotency-Key: a retry with the last key is not applied again)
GET    /cart             the items in this session's cart
POST   /cart             item=...&qty=... (form or JSON; qty may be negative; Idempotency-Key as above)
DELETE /cart             empty the cart
POST   /login            user=... (the session gets a new id)
POST   /logout           end the session
GET    %s   this node's status
`, a.node, statusPath)
}

// reply is the body of every answer of the application.
type reply struct {
	Value   *int64     `json:"value,omitzero"` // the counter
	Items   []cartItem `json:"items,omitzero"` // the cart, sorted by item (never nil in a cart's answer)
	User    string     `json:"user,omitempty"`
	Node    string     `json:"node"`
	Session string     `json:"session"` // the session's id, "" when the client has none
}

type cartItem struct {
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

// respond writes rep as JSON. If the handler changed the session, it is
// saved first (Commit; in sync mode the change is then on the secondary),
// so that rep can carry the id of a session created by this request. The
// answer then goes out whole, status and body together: a worker killed
// in between leaves the proxy no half answer, which it could not send
// elsewhere. If the save fails, the middleware has answered 503 instead.
func (a *app) respond(w http.ResponseWriter, r *http.Request, s *replication.Session, rep reply) {
	if s.Changed() {
		if err := replication.Commit(r); err != nil {
			return
		}
	}
	w.Header().Set("Content-Type", jsonContent)
	w.Header().Set("Cache-Control", "no-store")
	rep.Node, rep.Session = a.node, s.ID()
	if u, _, _ := replication.GetValue[string](s, attrUser); u != "" {
		rep.User = u
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// session returns the request's session, or answers 500 and returns nil.
func session(w http.ResponseWriter, r *http.Request) *replication.Session {
	s, err := replication.FromRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	}
	return s
}

// storeError answers a failure to store an attribute.
func storeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, replication.ErrTooLarge) {
		code = http.StatusRequestEntityTooLarge
	}
	http.Error(w, err.Error(), code)
}

// idempotencyKey returns the request's Idempotency-Key, or answers 400
// and returns false when it is too long.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	k := r.Header.Get(idempotencyHeader)
	if len(k) > maxKeyLen {
		http.Error(w, fmt.Sprintf("%s is over %d bytes", idempotencyHeader, maxKeyLen), http.StatusBadRequest)
		return "", false
	}
	return k, true
}

// isRetry reports whether key is the key of the session's last change
// stored under attr.
func isRetry(s *replication.Session, attr, key string) bool {
	if key == "" {
		return false
	}
	last, _, err := replication.GetValue[string](s, attr)
	return err == nil && last == key
}

// remember stores key as that of the session's last change under attr;
// a change without a key forgets the previous one, which is then no
// longer the last.
func remember(s *replication.Session, attr, key string) error {
	if key == "" {
		s.Delete(attr)
		return nil
	}
	return replication.SetValue(s, attr, key)
}

func (a *app) getCounter(w http.ResponseWriter, r *http.Request) {
	s := session(w, r)
	if s == nil {
		return
	}
	v, _, err := replication.GetValue[int64](s, attrCounter)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	a.respond(w, r, s, reply{Value: &v})
}

func (a *app) postCounter(w http.ResponseWriter, r *http.Request) {
	s := session(w, r)
	if s == nil {
		return
	}
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	v, _, err := replication.GetValue[int64](s, attrCounter)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !isRetry(s, attrCounterKey, key) {
		v++
		if err := replication.SetValue(s, attrCounter, v); err != nil {
			storeError(w, err)
			return
		}
		if err := remember(s, attrCounterKey, key); err != nil {
			storeError(w, err)
			return
		}
	}
	a.respond(w, r, s, reply{Value: &v})
}

// cart reads the session's cart.
func cart(s *replication.Session) (map[string]int, error) {
	c, _, err := replication.GetValue[map[string]int](s, attrCart)
	if c == nil {
		c = map[string]int{}
	}
	return c, err
}

func cartItems(c map[string]int) []cartItem {
	out := make([]cartItem, 0, len(c))
	for _, item := range slices.Sorted(maps.Keys(c)) {
		out = append(out, cartItem{item, c[item]})
	}
	return out
}

func (a *app) getCart(w http.ResponseWriter, r *http.Request) {
	s := session(w, r)
	if s == nil {
		return
	}
	c, err := cart(s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	a.respond(w, r, s, reply{Items: cartItems(c)})
}

// cartChange is the body of POST /cart.
type cartChange struct {
	Item string `json:"item"`
	Qty  *int   `json:"qty"`
}

// parseCartChange reads item and qty from a form or a JSON body.
func parseCartChange(w http.ResponseWriter, r *http.Request) (item string, qty int, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var ch cartChange
	if ct == jsonContent {
		if err := json.NewDecoder(r.Body).Decode(&ch); err != nil {
			return "", 0, fmt.Errorf("JSON body: %w", err)
		}
	} else {
		if err := r.ParseForm(); err != nil {
			return "", 0, err
		}
		ch.Item = r.PostForm.Get("item")
		if q := r.PostForm.Get("qty"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil {
				return "", 0, fmt.Errorf("qty %q is not a number", q)
			}
			ch.Qty = &n
		}
	}
	item, qty = strings.TrimSpace(ch.Item), defaultQty
	if ch.Qty != nil {
		qty = *ch.Qty
	}
	switch {
	case item == "" || len(item) > maxItemLen:
		return "", 0, fmt.Errorf("item must be 1-%d bytes", maxItemLen)
	case qty == 0 || qty < -maxQty || qty > maxQty:
		return "", 0, fmt.Errorf("qty must be a non-zero number within ±%d", maxQty)
	}
	return item, qty, nil
}

func (a *app) postCart(w http.ResponseWriter, r *http.Request) {
	s := session(w, r)
	if s == nil {
		return
	}
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	item, qty, err := parseCartChange(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c, err := cart(s)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !isRetry(s, attrCartKey, key) {
		if _, in := c[item]; !in && len(c) >= maxItems && qty > 0 {
			http.Error(w, fmt.Sprintf("the cart holds %d items at most", maxItems), http.StatusRequestEntityTooLarge)
			return
		}
		if c[item] += qty; c[item] <= 0 {
			delete(c, item)
		}
		if err := replication.SetValue(s, attrCart, c); err != nil {
			storeError(w, err)
			return
		}
		if err := remember(s, attrCartKey, key); err != nil {
			storeError(w, err)
			return
		}
	}
	a.respond(w, r, s, reply{Items: cartItems(c)})
}

func (a *app) deleteCart(w http.ResponseWriter, r *http.Request) {
	s := session(w, r)
	if s == nil {
		return
	}
	s.Delete(attrCart)
	s.Delete(attrCartKey)
	a.respond(w, r, s, reply{Items: []cartItem{}})
}

func (a *app) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	user := strings.TrimSpace(r.PostForm.Get("user"))
	if user == "" || len(user) > maxUserLen {
		http.Error(w, fmt.Sprintf("user must be 1-%d bytes", maxUserLen), http.StatusBadRequest)
		return
	}
	s := session(w, r)
	if s == nil {
		return
	}
	// A new id at login: an id known before (one an attacker planted)
	// does not name the logged-in session.
	if err := replication.RenewID(r); err != nil {
		if !errors.Is(err, replication.ErrUnavailable) {
			a.sessionError(w, r, err)
			return
		}
		// The old id no longer works here; a node that may hold a copy
		// was not told, and its copy expires.
		a.log.Warn("login: a copy of the session under its old id may remain until it expires", "err", err)
	}
	if err := replication.SetValue(s, attrUser, user); err != nil {
		storeError(w, err)
		return
	}
	a.respond(w, r, s, reply{})
}

func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	if err := replication.Destroy(r); err != nil {
		if !errors.Is(err, replication.ErrUnavailable) {
			a.sessionError(w, r, err)
			return
		}
		// Destroyed here; a node that may hold a copy was not told, and
		// its copy expires.
		a.log.Warn("logout: a copy of the session may remain until it expires", "err", err)
	}
	s := session(w, r)
	if s == nil {
		return
	}
	a.respond(w, r, s, reply{})
}
