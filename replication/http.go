package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// Defaults for HTTPOptions.
const (
	DefaultCookieName  = "TROUPESESSIONID"
	DefaultBufferLimit = 64 << 10
)

// HTTPOptions configure Middleware. Zero fields take the defaults written
// beside them.
type HTTPOptions struct {
	// CookieName is the session cookie's name. Default DefaultCookieName.
	CookieName string
	// Cookie, if set, adjusts every session cookie before it is sent
	// (Path, Domain, Secure, SameSite...). By default the cookie has
	// Path "/", HttpOnly and SameSite=Lax, and Secure when the request
	// came over TLS (behind a proxy that ends TLS, set Secure here).
	Cookie func(*http.Cookie)
	// BufferLimit is how much of a response body the middleware holds
	// back, in bytes, so that it can save the session before anything
	// reaches the client. A handler that writes more, or calls Flush,
	// gets its session saved at that point and its response streamed;
	// changes it makes to the session afterwards are saved when it
	// returns. Default 64 KiB.
	BufferLimit int
	// Error writes the response when the session cannot be loaded or
	// saved (ErrUnavailable, ErrStale, ErrTooManySessions, ErrTooLarge):
	// the handler's own response is then discarded, or cut short if it
	// was already streaming. Default: 503 Service Unavailable with a
	// Retry-After of 1 s.
	Error func(w http.ResponseWriter, r *http.Request, err error)
}

type ctxKey struct{}

// requestSession is what the middleware keeps in a request's context.
type requestSession struct {
	s        *Sessions
	r        *http.Request  // as the middleware got it
	w        *sessionWriter // the writer it is part of
	mu       sync.Mutex
	h        *Session
	incoming string // the cookie's value, "" if none; then the value last sent
}

// ctx is the context of the request's session calls: bounded by
// CallTimeout from now, and not ended by the request's, since the
// handler made its changes even if the client went away.
func (rs *requestSession) ctx() context.Context {
	return rs.s.deadlines.detached(rs.r.Context())
}

// Middleware returns the session middleware in the shape routers take
// (r.Use(sessions.Middleware(opts))). It loads the session named by the
// request's cookie, makes it available to next through FromRequest, and when next is done saves it
// and, if its route changed or it is new, sends the cookie again. In
// ModeSync, the save happens before any of the response reaches the
// client (up to HTTPOptions.BufferLimit of body): a client that saw the
// complete response knows its session change reached the secondary.
//
// A request without a session gets one only if its handler stores an
// attribute: a handler that does not ask for the session, or only reads
// it, creates nothing, stores nothing and sends no cookie. A new session
// beyond Options.MaxSessions gets the Error response (by default 503
// with a Retry-After), as does any session that cannot be saved.
//
// A cookie naming a session that no longer exists is expired (the
// handler gets a new session on demand); a session that exists but
// cannot be reached now gets the Error response, so that the client does
// not silently continue with an empty one. The cookie is sent with
// Secure when the request came over TLS, HttpOnly, SameSite=Lax and Path
// "/", then adjusted by HTTPOptions.Cookie. Handlers renew the id at
// login with RenewID and end the session at logout with Destroy.
func (s *Sessions) Middleware(o HTTPOptions) func(next http.Handler) http.Handler {
	if o.CookieName == "" {
		o.CookieName = DefaultCookieName
	}
	if o.BufferLimit <= 0 {
		o.BufferLimit = DefaultBufferLimit
	}
	if o.Error == nil {
		o.Error = func(w http.ResponseWriter, _ *http.Request, err error) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "session unavailable", http.StatusServiceUnavailable)
		}
	}
	return func(next http.Handler) http.Handler {
		return s.serveHTTP(next, &o)
	}
}

func (s *Sessions) serveHTTP(next http.Handler, o *HTTPOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for the writer and what the context carries.
		rw := &sessionWriter{w: w, r: r, o: o, code: http.StatusOK}
		rs := &rw.rs
		rs.s, rs.r, rs.w = s, r, rw
		if c, err := r.Cookie(o.CookieName); err == nil && c.Value != "" {
			rs.incoming = c.Value
			h, err := s.Get(r.Context(), c.Value)
			switch {
			case err == nil:
				rs.h = h
			case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidID):
				// Expired at commit, unless the handler stores something.
			default:
				o.Error(w, r, err)
				return
			}
		}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rs)))
		rw.finish()
	})
}

var errNoMiddleware = errors.New("replication: request did not go through Sessions.Middleware")

// FromRequest returns the request's session. For a request that has
// none, it returns a new one, which exists only once the handler stores
// an attribute in it (its ID is "" until the middleware saves it, when
// the handler is done). Every call in one request returns the same
// handle. It returns an error only if the request did not go through
// Middleware.
func FromRequest(r *http.Request) (*Session, error) {
	rs, err := requestSessionOf(r)
	if err != nil {
		return nil, err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.h == nil {
		rs.h = newSession(rs.s)
	}
	return rs.h, nil
}

// requestSessionOf returns what Middleware put in r's context.
func requestSessionOf(r *http.Request) (*requestSession, error) {
	rs, ok := r.Context().Value(ctxKey{}).(*requestSession)
	if !ok {
		return nil, errNoMiddleware
	}
	return rs, nil
}

// RenewID gives the request's session a new id, keeping its attributes:
// call it at login, so that an id known before (one an attacker may have
// planted) does not name the logged-in session. The old id stops working
// at once, everywhere; the session is created again under a new key when
// the handler is done, and its cookie sent. Handles from FromRequest stay
// valid. It returns Sessions.RenewID's errors, and an error if the
// request did not go through Middleware.
func RenewID(r *http.Request) error {
	rs, err := requestSessionOf(r)
	if err != nil {
		return err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.h == nil {
		rs.h = newSession(rs.s) // nothing to renew: a new session gets a new key
		return nil
	}
	return rs.s.RenewID(rs.ctx(), rs.h)
}

// Commit saves the request's session now, before the handler writes its
// response, as the middleware would when the handler is done: a session
// the handler created gets its id (the response can name it), and in
// ModeSync the change is on the secondary. The response is still held
// back and sent whole, with its length. (Flushing the response to save
// the session sends the status line at once, and a worker that dies
// before the body leaves a proxy holding half an answer, which it
// cannot send elsewhere.) Changes made after Commit are saved when the
// handler is done. If the save fails, the middleware has written its
// Error response, Commit returns the error, and later writes go nowhere.
func Commit(r *http.Request) error {
	rs, err := requestSessionOf(r)
	if err != nil {
		return err
	}
	w := rs.w
	switch {
	case w.failed != nil:
		return errNotSaved
	case w.streaming:
		// The response has started: saved by then, and saved again,
		// with what changed since, when the handler is done.
		return nil
	}
	if err := w.commit(); err != nil {
		return err
	}
	w.committed = true
	return nil
}

// Destroy ends the request's session, as at logout: it is invalidated
// everywhere (Sessions.Invalidate) and the cookie is expired. The
// request's handle, from FromRequest before or after, becomes an empty
// new session: an attribute stored in it afterwards (a message for the
// next page) goes into a new session with a new id. It returns
// Invalidate's errors (with ErrUnavailable the session is destroyed here
// but a node that may hold a copy could not be told), and an error if
// the request did not go through Middleware.
func Destroy(r *http.Request) error {
	rs, err := requestSessionOf(r)
	if err != nil {
		return err
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.h == nil {
		return nil
	}
	return rs.s.unmake(rs.ctx(), rs.h, false)
}

// sessionWriter holds the response back until the session is saved.
type sessionWriter struct {
	w  http.ResponseWriter
	r  *http.Request
	rs requestSession // in the request's context, as &rs
	o  *HTTPOptions

	code      int
	committed bool // Commit saved the session: unchanged since, it is not saved again
	wroteCode bool
	buf       []byte  // the response held back, in bufp
	bufp      *[]byte // from bodyBufs, nil until the handler writes
	streaming bool    // the session was saved and the response let through
	failed    error   // saving failed: the Error response was written
}

var errNotSaved = errors.New("replication: session not saved; response discarded")

// bodyBufs holds the buffers that responses are held back in: a
// response grows its buffer a few times, and the buffer is free again
// once the session is saved.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledBody bounds the buffers kept in bodyBufs, so that one large
// response does not pin its buffer.
const maxPooledBody = 64 << 10

// releaseBuf drops what is held back, returning its buffer to bodyBufs.
func (w *sessionWriter) releaseBuf() {
	if w.bufp != nil && cap(w.buf) <= maxPooledBody {
		*w.bufp = w.buf[:0]
		bodyBufs.Put(w.bufp)
	}
	w.buf, w.bufp = nil, nil
}

func (w *sessionWriter) Header() http.Header { return w.w.Header() }

func (w *sessionWriter) WriteHeader(code int) {
	if w.failed != nil || w.wroteCode {
		return
	}
	if code >= 100 && code < 200 {
		if w.streaming {
			w.w.WriteHeader(code)
		}
		return // informational answers before the final one are dropped while buffering
	}
	w.code, w.wroteCode = code, true
	if w.streaming {
		w.w.WriteHeader(code)
	}
}

func (w *sessionWriter) Write(b []byte) (int, error) {
	if w.failed != nil {
		return 0, errNotSaved
	}
	if !w.wroteCode {
		w.WriteHeader(http.StatusOK)
	}
	if w.streaming {
		return w.w.Write(b)
	}
	if len(w.buf)+len(b) <= w.o.BufferLimit {
		if w.bufp == nil {
			w.bufp = bodyBufs.Get().(*[]byte)
			w.buf = (*w.bufp)[:0]
		}
		w.buf = append(w.buf, b...)
		return len(b), nil
	}
	if err := w.startStreaming(); err != nil {
		return 0, err
	}
	return w.w.Write(b)
}

// Flush saves the session and lets the response through.
func (w *sessionWriter) Flush() {
	if w.startStreaming() != nil {
		return
	}
	if f, ok := w.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *sessionWriter) Unwrap() http.ResponseWriter { return w.w }

// Hijack saves the session first: what follows is not HTTP.
func (w *sessionWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if err := w.commit(); err != nil {
		return nil, nil, err
	}
	hj, ok := w.w.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("replication: %T cannot be hijacked", w.w)
	}
	w.streaming = true
	return hj.Hijack()
}

// startStreaming saves the session, then sends the status, headers and
// what was buffered.
func (w *sessionWriter) startStreaming() error {
	if w.failed != nil {
		return errNotSaved
	}
	if w.streaming {
		return nil
	}
	if err := w.commit(); err != nil {
		return err
	}
	w.streaming = true
	if len(w.buf) > 0 && w.w.Header().Get("Content-Length") == "" && !w.wroteCode {
		w.w.Header().Set("Content-Length", strconv.Itoa(len(w.buf)))
	}
	w.w.WriteHeader(w.code)
	w.wroteCode = true // a WriteHeader after a Flush is too late, as net/http has it
	if len(w.buf) > 0 {
		_, _ = w.w.Write(w.buf) // copies: the buffer is free again
	}
	w.releaseBuf()
	return nil
}

// commit saves the session (creating a new one that has attributes)
// and sets or expires the cookie if needed; on failure it writes the
// Error response instead of the handler's.
func (w *sessionWriter) commit() error {
	rs := &w.rs
	rs.mu.Lock()
	h := rs.h
	rs.mu.Unlock()
	want := ""
	if h != nil {
		// Saved by Commit and unchanged since, it is not saved again:
		// the session may have moved to another node meanwhile, and a
		// second Save would turn the answer into an error.
		if !w.committed || h.Changed() {
			if err := rs.s.Save(rs.ctx(), h); err != nil {
				w.fail(err)
				return err
			}
		}
		want = h.ID()
	}
	if want == rs.incoming {
		return nil
	}
	cookie := &http.Cookie{Name: w.o.CookieName, Value: want}
	if want == "" {
		cookie.MaxAge = -1 // no session any more, or the cookie named none
	}
	cookie.Path, cookie.HttpOnly, cookie.SameSite = "/", true, http.SameSiteLaxMode
	cookie.Secure = w.r.TLS != nil
	if w.o.Cookie != nil {
		w.o.Cookie(cookie)
	}
	w.w.Header().Add("Set-Cookie", cookie.String())
	rs.incoming = want
	return nil
}

func (w *sessionWriter) fail(err error) {
	w.failed = err
	w.releaseBuf()
	if w.streaming {
		return // too late to replace the response
	}
	// Headers the handler set describe a response that will not be sent.
	for k := range w.w.Header() {
		delete(w.w.Header(), k)
	}
	w.o.Error(w.w, w.r, err)
}

// finish runs when the handler returns: the final save, then whatever is
// still held back.
func (w *sessionWriter) finish() {
	if w.failed != nil {
		return
	}
	if w.streaming {
		// The client may have seen the start of the response; save what
		// the handler changed since.
		rs := &w.rs
		rs.mu.Lock()
		h := rs.h
		rs.mu.Unlock()
		switch {
		case h == nil || !h.Changed():
		case h.entry() == nil:
			// Its cookie can no longer be sent: the client could never
			// name the session.
			rs.s.log.Warn("a new session's attributes, stored after the response started, were dropped")
		default:
			if err := rs.s.Save(rs.ctx(), h); err != nil {
				rs.s.log.Warn("session changes after the response started were not saved", "err", err)
			}
		}
		return
	}
	_ = w.startStreaming()
}
