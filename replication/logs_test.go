package replication

import (
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
)

// TestLogsCarryNoSecrets runs a whole scenario with every logger, the
// members' included, at Debug into one buffer: a session created and
// saved through the middleware, its primary crashed and the session
// promoted on its secondary, taken over by a third node, renewed at
// login, destroyed at logout, and one more created and invalidated. No
// session key, session id, cookie or cluster key it used appears in the
// logs; the sessions appear there by their short hash.
func TestLogsCarryNoSecrets(t *testing.T) {
	var logs logBuffer
	lg := logs.logger(slog.LevelDebug)
	c := startSessions(t, 3,
		func(_ int, o *Options) { o.Logger = lg },
		func(_ int, cfg *membership.Config) { cfg.Logger = lg })
	var secrets, keys []string
	note := func(id string) {
		t.Helper()
		rid := mustParse(t, id)
		secrets = append(secrets, id, rid.Key)
		keys = append(keys, rid.Key)
	}
	noteCookie := func(w interface{ Header() http.Header }) string {
		t.Helper()
		var value string
		for _, line := range w.Header().Values("Set-Cookie") {
			secrets = append(secrets, line)
			if v, ok := strings.CutPrefix(line, DefaultCookieName+"="); ok {
				value, _, _ = strings.Cut(v, ";")
			}
		}
		return value
	}
	app := func(s *Sessions) http.Handler {
		mux := http.NewServeMux()
		mux.HandleFunc("/cart", func(w http.ResponseWriter, r *http.Request) {
			h, err := FromRequest(r)
			require.NoError(t, err)
			require.NoError(t, h.Set("cart", []byte("book")))
			_, _ = io.WriteString(w, "ok")
		})
		mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
			h, err := FromRequest(r)
			require.NoError(t, err)
			require.NoError(t, h.Set("user", []byte("ana")))
			require.NoError(t, RenewID(r))
		})
		mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
			require.NoError(t, Destroy(r))
		})
		return s.Middleware(HTTPOptions{})(mux)
	}

	// Create and save through the middleware on node 0.
	w := serve(app(c.nodes[0].s), "/cart", "", false)
	require.Equal(t, http.StatusOK, w.Code)
	id := noteCookie(w)
	note(id)
	w = serve(app(c.nodes[0].s), "/cart", id, false)
	require.Equal(t, http.StatusOK, w.Code)

	// The primary crashes: its secondary promotes the session.
	rid := mustParse(t, id)
	secIdx, sec := c.byID(rid.Secondary)
	c.crash(0)
	require.Eventually(t, func() bool {
		e := sec.s.lookup(rid.Key)
		return e != nil && e.state().role == rolePrimary
	}, clustertest.Timeout, 10*time.Millisecond)

	// A third node takes it over, then renews its id at login and
	// destroys it at logout.
	third := c.nodes[3-secIdx]
	h, err := third.s.Get(testCtx(t), id)
	require.NoError(t, err)
	note(h.ID())
	w = serve(app(third.s), "/login", h.ID(), false)
	require.Equal(t, http.StatusOK, w.Code)
	renewed := noteCookie(w)
	note(renewed)
	w = serve(app(third.s), "/logout", renewed, false)
	require.Equal(t, http.StatusOK, w.Code)
	noteCookie(w)

	// One more, invalidated by id.
	h, err = sec.s.Create(testCtx(t))
	require.NoError(t, err)
	set(t, sec, h, "user", "bo")
	note(h.ID())
	require.NoError(t, third.s.Invalidate(testCtx(t), h.ID()))

	for _, n := range c.live() {
		n.s.Shutdown()
		n.c.Shutdown()
	}
	key := clustertest.Key(c.tc.Name)
	secrets = append(secrets, string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key))
	out := logs.String()
	require.NotEmpty(t, out)
	for _, s := range secrets {
		if i := strings.Index(out, s); i >= 0 {
			line := out[strings.LastIndexByte(out[:i], '\n')+1:]
			line, _, _ = strings.Cut(line, "\n")
			t.Errorf("a secret is in the logs: %q\nin: %s", s, line)
		}
	}
	for _, k := range keys {
		require.Contains(t, out, keyRef(k).String(), "per-session events are logged at Debug by hash")
	}
}
