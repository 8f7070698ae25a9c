package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Handler is the session-aware load balancer: an http.Handler that sends
// each request to a node offering its service, as WebLogic's proxy
// plug-in and the WSO2 load balancer do. Make one with New; it is safe
// for concurrent use.
type Handler struct {
	cfg   Config
	proxy *httputil.ReverseProxy
	rt    *router
	stats counters
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler for cfg. It starts no goroutine: Close only
// drops the idle connections to the nodes.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{cfg: cfg}
	h.rt = newRouter(h)
	h.proxy = &httputil.ReverseProxy{
		Rewrite:      h.rewrite,
		Transport:    h.rt,
		ErrorHandler: h.writeError,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		BufferPool:   &bufferPool{},
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.proxy.ServeHTTP(w, r)
}

// Close closes the idle connections to the nodes. The Handler still
// works afterwards (it opens new ones).
func (h *Handler) Close() { h.rt.transport.CloseIdleConnections() }

// rewrite sets the forwarding headers; the router chooses the node.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	var prevForwarded []string
	if h.cfg.TrustForwarded {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
		prevForwarded = pr.In.Header.Values("Forwarded")
	}
	pr.SetXForwarded()
	proto := "http"
	if pr.In.TLS != nil {
		proto = "https"
	}
	elem := "proto=" + proto
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		if strings.Contains(ip, ":") {
			ip = `"[` + ip + `]"`
		}
		elem = "for=" + ip + ";" + elem
	}
	if pr.In.Host != "" {
		elem += ";host=" + strconv.Quote(pr.In.Host)
	}
	pr.Out.Header.Set("Forwarded", strings.Join(append(prevForwarded, elem), ", "))
}

// unavailableError says that no live node offers the request's service.
type unavailableError struct {
	service string
	err     error
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("proxy: no live node offers %s: %v", e.service, e.err)
}

func (e *unavailableError) Unwrap() error { return e.err }

// failedError says that the nodes tried failed.
type failedError struct {
	tried []string
	err   error
}

func (e *failedError) Error() string {
	return fmt.Sprintf("proxy: %d node(s) tried failed (%s), the last with: %v", len(e.tried), strings.Join(e.tried, ", "), e.err)
}

func (e *failedError) Unwrap() error { return e.err }

// writeError answers a request that no node answered.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		h.stats.canceled.Add(1)
		return // nobody is listening
	}
	var ua *unavailableError
	if errors.As(err, &ua) {
		h.stats.unavailable.Add(1)
		h.cfg.Logger.Warn("no node can serve", "service", ua.service, "err", ua.err)
		w.Header().Set("Retry-After", strconv.Itoa(int(max(h.cfg.RetryAfter.Round(time.Second), time.Second)/time.Second)))
		http.Error(w, fmt.Sprintf("no server is available for %s; retry later", ua.service), http.StatusServiceUnavailable)
		return
	}
	h.stats.failed.Add(1)
	h.cfg.Logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	var fe *failedError
	reason := "the server failed to answer"
	if errors.As(err, &fe) {
		reason = fmt.Sprintf("%d server(s) failed to answer", len(fe.tried))
	}
	http.Error(w, reason, http.StatusBadGateway)
}

// bufferPool lends the ReverseProxy its copy buffers, which it would
// otherwise allocate, 32 KiB, for every response.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// downSet remembers the nodes that refused a connection or timed out.
type downSet struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (d *downSet) mark(node string, until time.Time) {
	d.mu.Lock()
	d.until[node] = until
	d.mu.Unlock()
}

// empty reports whether no node is marked down, the common case.
func (d *downSet) empty() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.until) == 0
}

func (d *downSet) isDown(node string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.until[node]
	if ok && !now.Before(t) {
		delete(d.until, node)
		return false
	}
	return ok
}
