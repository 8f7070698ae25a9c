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
	// Path "/", HttpOnly and SameSite=Lax.
	Cookie func(*http.Cookie)
	// BufferLimit is how much of a response body the middleware holds
	// back, in bytes, so that it can save the session before anything
	// reaches the client. A handler that writes more, or calls Flush,
	// gets its session saved at that point and its response streamed;
	// changes it makes to the session afterwards are saved when it
	// returns. Default 64 KiB.
	BufferLimit int
	// Error writes the response when the session cannot be loaded or
	// saved (ErrUnavailable, ErrStale): the handler's own response is
	// then discarded, or cut short if it was already streaming. Default:
	// 503 Service Unavailable with a Retry-After of 1 s.
	Error func(w http.ResponseWriter, r *http.Request, err error)
}

type ctxKey struct{}

// requestSession is what the middleware keeps in a request's context.
type requestSession struct {
	s        *Sessions
	ctx      context.Context
	mu       sync.Mutex
	h        *Session
	incoming string // the cookie's value, "" if none
	badIn    bool   // the cookie named a session that does not exist
}

// Middleware loads the session named by the request's cookie, makes it
// available to next through FromRequest, and when next is done saves it
// and, if its route changed or it is new, sends the cookie again. In
// ModeSync, the save happens before any of the response reaches the
// client (up to HTTPOptions.BufferLimit of body): a client that saw the
// complete response knows its session change reached the secondary.
//
// A cookie naming a session that no longer exists is dropped (the
// handler gets a new session on demand); a session that exists but
// cannot be reached now gets the Error response, so that the client does
// not silently continue with an empty one.
func (s *Sessions) Middleware(next http.Handler, o HTTPOptions) http.Handler {
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Sessions are saved even if the client goes away: the handler
		// made its changes.
		rs := &requestSession{s: s, ctx: context.WithoutCancel(r.Context())}
		if c, err := r.Cookie(o.CookieName); err == nil && c.Value != "" {
			rs.incoming = c.Value
			h, err := s.Get(r.Context(), c.Value)
			switch {
			case err == nil:
				rs.h = h
			case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidID):
				rs.badIn = true
			default:
				o.Error(w, r, err)
				return
			}
		}
		rw := &sessionWriter{w: w, r: r, rs: rs, o: &o, code: http.StatusOK}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rs)))
		rw.finish()
	})
}

// FromRequest returns the request's session, creating one if the request
// has none yet (the middleware then sends its cookie). It returns an
// error if the request did not go through Middleware, or if Create
// failed. Every call in one request returns the same handle.
func FromRequest(r *http.Request) (*Session, error) {
	rs, ok := r.Context().Value(ctxKey{}).(*requestSession)
	if !ok {
		return nil, errors.New("replication: request did not go through Sessions.Middleware")
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.h == nil {
		h, err := rs.s.Create(r.Context())
		if err != nil {
			return nil, err
		}
		rs.h = h
	}
	return rs.h, nil
}

// sessionWriter holds the response back until the session is saved.
type sessionWriter struct {
	w  http.ResponseWriter
	r  *http.Request
	rs *requestSession
	o  *HTTPOptions

	code      int
	wroteCode bool
	buf       []byte
	streaming bool  // the session was saved and the response let through
	failed    error // saving failed: the Error response was written
}

var errNotSaved = errors.New("replication: session not saved; response discarded")

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
	if len(w.buf) > 0 {
		_, _ = w.w.Write(w.buf)
		w.buf = nil
	}
	return nil
}

// commit saves the session and sets the cookie if needed; on failure it
// writes the Error response instead of the handler's.
func (w *sessionWriter) commit() error {
	rs := w.rs
	rs.mu.Lock()
	h := rs.h
	rs.mu.Unlock()
	var cookie *http.Cookie
	switch {
	case h != nil:
		if err := rs.s.Save(rs.ctx, h); err != nil {
			w.fail(err)
			return err
		}
		if id := h.ID(); id != rs.incoming {
			cookie = &http.Cookie{Name: w.o.CookieName, Value: id}
		}
	case rs.badIn:
		cookie = &http.Cookie{Name: w.o.CookieName, MaxAge: -1}
	}
	if cookie != nil {
		cookie.Path, cookie.HttpOnly, cookie.SameSite = "/", true, http.SameSiteLaxMode
		if w.o.Cookie != nil {
			w.o.Cookie(cookie)
		}
		w.w.Header().Add("Set-Cookie", cookie.String())
		rs.incoming = cookie.Value
	}
	return nil
}

func (w *sessionWriter) fail(err error) {
	w.failed = err
	w.buf = nil
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
		rs := w.rs
		rs.mu.Lock()
		h := rs.h
		rs.mu.Unlock()
		if h != nil && h.Changed() {
			if err := rs.s.Save(rs.ctx, h); err != nil {
				rs.s.log.Warn("session changes after the response started were not saved", "err", err)
			}
		}
		return
	}
	_ = w.startStreaming()
}
