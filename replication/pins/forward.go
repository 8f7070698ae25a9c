package pins

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/membership"
)

// ForwardedHeader is the hop header of a request that one node's Handler
// forwarded to a key's owner. Its value is the sender's name, the time it
// was sent and an HMAC-SHA256, with a key derived from the cluster key
// (membership's SecretKeys), over both names, the time and the request's
// method, host and target; it is valid for hopMaxAge. A Handler trusts it
// only when it verifies and names a live member: a node that receives a
// trusted forwarded request for a key it does not own (the pin moved
// meanwhile) answers 503 rather than forwarding again, and the owner's
// local handler learns the sender from ForwardedBy. Any other value (a
// client's, or every value in a cluster without keys) is removed and the
// request is served, or forwarded, as any client's. The local handler
// never sees the header.
const ForwardedHeader = "Troupe-Forwarded-By"

// hopMaxAge is how old (or how far in the future, for clocks that
// differ) a hop header may be. A header that is too old only makes the
// request an ordinary client request.
const hopMaxAge = 2 * time.Minute

// hopLabel derives the hop-header key from a cluster key, so that the
// cluster key itself signs nothing but memberlist's traffic.
const hopLabel = "troupe pins forwarded-by v1"

type (
	forwardKey  struct{} // context key of the *forward a request is on
	forwardedBy struct{} // context key: the sender of a trusted hop
)

// forward is one request on its way to a key's owner.
type forward struct {
	target *url.URL // where it goes
	owner  string   // the member it goes to (members may share an IP)
	stall  *stall
}

func forwardOf(r *http.Request) *forward {
	f, _ := r.Context().Value(forwardKey{}).(*forward)
	return f
}

// errStalled ends a forward whose body made no progress for
// Options.ForwardBodyTimeout.
var errStalled = errors.New("pins: forwarded body stalled")

// ForwardedBy returns the member whose Handler forwarded r to this node,
// when r reached a local handler of Handler that way and its hop header
// verified (see ForwardedHeader); "" otherwise.
func ForwardedBy(r *http.Request) string {
	s, _ := r.Context().Value(forwardedBy{}).(string)
	return s
}

// Handler serves requests for pinned objects from any node. keyOf names
// the key a request is for. When this node owns the key, local serves
// the request; when another live member does, the request is forwarded
// to that member's HTTP address (its member tag Options.HTTPTag), where
// the same Handler serves it locally.
//
// Forwarding goes to the owner's own IP (a published address without a
// host, or with an unspecified one, means that IP) over http; with
// Options.ForwardTLS it goes over https, to any host the owner publishes
// whose certificate verifies. The forwarded request carries the client's
// headers, cookies and credentials included, an X-Forwarded-For and a
// Forwarded (RFC 7239) element naming the client (appended to those of an
// Options.TrustedProxies client, replacing anyone else's), and the
// signed hop header ForwardedHeader. The Options.Forward* timeouts bound
// it.
//
// When the key has no owner (never pinned, released, or its owner
// failed), or the owner publishes no usable address, the answer is 503
// Service Unavailable with the reason in the body; when the owner cannot
// be reached it is 503, or 504 Gateway Timeout when it did not answer in
// time. The client, or the application, pins the key again. Forwarded
// requests are sent once, never retried.
func (p *Pins) Handler(keyOf func(*http.Request) string, local http.Handler) http.Handler {
	proxy := &httputil.ReverseProxy{
		Transport: p.proxy,
		Rewrite:   p.rewrite,
		ErrorLog:  slog.NewLogLogger(p.log.Handler(), slog.LevelDebug), // not the process-wide logger
		ModifyResponse: func(resp *http.Response) error {
			if f := forwardOf(resp.Request); f != nil && resp.Body != nil {
				f.stall.touch()
				resp.Body = &stallBody{ReadCloser: resp.Body, s: f.stall}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && context.Cause(r.Context()) == context.Canceled {
				return // the client went away
			}
			target := forwardOf(r).target
			var nerr net.Error
			if errors.Is(context.Cause(r.Context()), errStalled) || errors.Is(err, context.DeadlineExceeded) ||
				(errors.As(err, &nerr) && nerr.Timeout()) {
				reply(w, http.StatusGatewayTimeout, fmt.Sprintf("the key's owner at %s did not answer in time: %v", target.Host, err))
				return
			}
			serviceUnavailable(w, fmt.Sprintf("the key's owner at %s is unreachable: %v", target.Host, err))
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hop, trusted := p.verifyHop(r)
		if hop {
			r.Header.Del(ForwardedHeader)
		}
		key := keyOf(r)
		pin, err := p.Owner(key)
		switch {
		case err != nil:
			serviceUnavailable(w, fmt.Sprintf("key %q has no owner (not pinned, released, or its owner failed): %v", key, err))
			return
		case pin.Owner == p.self:
			if trusted != "" {
				r = r.WithContext(context.WithValue(r.Context(), forwardedBy{}, trusted))
			}
			local.ServeHTTP(w, r)
			return
		case trusted != "":
			serviceUnavailable(w, fmt.Sprintf("key %q moved to %s while the request was forwarded", key, pin.Owner))
			return
		}
		target, err := p.target(pin.Owner)
		if err != nil {
			serviceUnavailable(w, fmt.Sprintf("key %q: %v", key, err))
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		s := newStall(p.opts.ForwardBodyTimeout, cancel)
		defer s.stop()
		r = r.WithContext(context.WithValue(ctx, forwardKey{}, &forward{target: target, owner: pin.Owner, stall: s}))
		if r.Body != nil && r.Body != http.NoBody {
			s.touch()
			r.Body = &stallBody{ReadCloser: r.Body, s: s}
		}
		proxy.ServeHTTP(w, r)
	})
}

// target returns where to forward a request for a key that owner holds:
// the HTTP address that the live member owner publishes, on its own IP
// unless ForwardTLS authenticates another host.
func (p *Pins) target(owner string) (*url.URL, error) {
	m, ok := p.cluster.Member(owner)
	if !ok || m.State != membership.StateAlive {
		return nil, fmt.Errorf("owner %s is not a live member", owner)
	}
	addr := m.Tag(p.opts.HTTPTag)
	if addr == "" {
		return nil, fmt.Errorf("owner %s publishes no HTTP address (member tag %q)", owner, p.opts.HTTPTag)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return nil, fmt.Errorf("owner %s publishes an HTTP address %q that is not host:port", owner, addr)
	}
	own, err := netip.ParseAddrPort(m.Addr)
	if err != nil {
		return nil, fmt.Errorf("owner %s has no IP address (%q)", owner, m.Addr)
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "" || (err == nil && ip.IsUnspecified()):
		host = own.Addr().Unmap().String()
	case err == nil && ip.Unmap() == own.Addr().Unmap():
	case p.opts.ForwardTLS != nil:
		// Another host: its certificate must verify.
	default:
		return nil, fmt.Errorf("owner %s publishes the HTTP address %s, which is not on its own IP %s (forwarding elsewhere needs ForwardTLS)",
			owner, addr, own.Addr())
	}
	scheme := "http"
	if p.opts.ForwardTLS != nil {
		scheme = "https"
	}
	return &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}, nil
}

// rewrite builds the forwarded request: the target, the client's Host,
// the forwarding headers and a signed hop header.
func (p *Pins) rewrite(r *httputil.ProxyRequest) {
	f := forwardOf(r.In)
	r.SetURL(f.target)
	r.Out.Host = r.In.Host
	// ReverseProxy removed every forwarding header from Out; keep (and
	// append to) a trusted proxy's.
	trusted := p.trustedProxy(r.In.RemoteAddr)
	if trusted {
		for _, h := range []string{"X-Forwarded-For", "Forwarded"} {
			if v := r.In.Header.Values(h); len(v) > 0 {
				r.Out.Header[h] = v
			}
		}
	}
	r.SetXForwarded()
	if trusted {
		for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := r.In.Header.Get(h); v != "" {
				r.Out.Header.Set(h, v)
			}
		}
	}
	proto := "http"
	if r.In.TLS != nil {
		proto = "https"
	}
	el := "for=" + forwardedNode(r.In.RemoteAddr) + ";host=" + forwardedValue(r.In.Host) + ";proto=" + proto
	if prev := strings.Join(r.Out.Header.Values("Forwarded"), ", "); prev != "" {
		el = prev + ", " + el
	}
	r.Out.Header.Set("Forwarded", el)
	r.Out.Header.Del(ForwardedHeader)
	if v := p.signHop(r.Out, f.owner, time.Now()); v != "" {
		r.Out.Header.Set(ForwardedHeader, v)
	}
}

func (p *Pins) trustedProxy(remote string) bool {
	if len(p.opts.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	for _, pf := range p.opts.TrustedProxies {
		if pf.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// forwardedNode renders a client address as an RFC 7239 node: the IP,
// bracketed and quoted when it is IPv6.
func forwardedNode(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return "unknown"
	}
	if a := ap.Addr().Unmap(); a.Is4() {
		return a.String()
	}
	return `"[` + ap.Addr().String() + `]"`
}

// forwardedValue renders v as an RFC 7239 value: a token, or a quoted
// string when it holds anything else.
func forwardedValue(v string) string {
	for _, c := range []byte(v) {
		if !isTokenChar(c) {
			return strconv.Quote(v)
		}
	}
	if v == "" {
		return `""`
	}
	return v
}

func isTokenChar(c byte) bool {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ---- the hop header ----

// hopKeys returns the hop-header keys derived from the cluster keys, the
// one in use first; none in a cluster without keys.
func (p *Pins) hopKeys() [][]byte {
	keys := p.cluster.Keys()
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(hopLabel))
		out = append(out, m.Sum(nil))
	}
	return out
}

// hopMAC is the MAC of a forwarded request from sender to receiver sent at
// unix second ts.
func hopMAC(key []byte, sender, receiver string, ts int64, method, host, target string) []byte {
	m := hmac.New(sha256.New, key)
	for _, s := range []string{sender, receiver, strconv.FormatInt(ts, 10), method, host, target} {
		var n [8]byte
		m.Write(strconv.AppendUint(n[:0], uint64(len(s)), 10))
		m.Write([]byte{':'})
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

// signHop returns the hop header of out, a request to receiver: "sender
// unix-time mac", or "" in a cluster without keys.
func (p *Pins) signHop(out *http.Request, receiver string, now time.Time) string {
	keys := p.hopKeys()
	if len(keys) == 0 || receiver == "" {
		return ""
	}
	ts := now.Unix()
	mac := hopMAC(keys[0], p.self, receiver, ts, out.Method, out.Host, out.URL.RequestURI())
	return p.self + " " + strconv.FormatInt(ts, 10) + " " + base64.RawURLEncoding.EncodeToString(mac)
}

// verifyHop reports whether r carries a hop header and, when it verifies
// with one of the cluster's keys, names a live member other than this
// node and is recent, that member.
func (p *Pins) verifyHop(r *http.Request) (present bool, sender string) {
	vals := r.Header.Values(ForwardedHeader)
	if len(vals) == 0 {
		return false, ""
	}
	if len(vals) != 1 {
		return true, ""
	}
	sender, ok := parseHop(vals[0], p.self, r.Method, r.Host, r.RequestURI, time.Now(), p.hopKeys())
	if !ok {
		return true, ""
	}
	if _, live := p.cluster.Member(sender); !live { // Member knows only live members
		return true, ""
	}
	return true, sender
}

// parseHop checks a hop header received by receiver: its sender, time
// and MAC under one of keys.
func parseHop(v, receiver, method, host, target string, now time.Time, keys [][]byte) (string, bool) {
	if len(keys) == 0 || len(v) > 1024 {
		return "", false
	}
	i := strings.LastIndexByte(v, ' ')
	if i < 0 {
		return "", false
	}
	mac, err := base64.RawURLEncoding.DecodeString(v[i+1:])
	if err != nil || len(mac) != sha256.Size {
		return "", false
	}
	v = v[:i]
	j := strings.LastIndexByte(v, ' ')
	if j <= 0 {
		return "", false
	}
	sender := v[:j]
	ts, err := strconv.ParseInt(v[j+1:], 10, 64)
	if err != nil || sender == receiver {
		return "", false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > hopMaxAge || d < -hopMaxAge {
		return "", false
	}
	for _, k := range keys {
		if hmac.Equal(mac, hopMAC(k, sender, receiver, ts, method, host, target)) {
			return sender, true
		}
	}
	return "", false
}

// ---- the body timeout ----

// stall cancels a forward when its request or response body makes no
// progress for d. It is armed while a body is being read and stopped
// when the body ends.
type stall struct {
	d      time.Duration
	mu     sync.Mutex
	t      *time.Timer
	done   atomic.Bool
	cancel context.CancelCauseFunc
}

func newStall(d time.Duration, cancel context.CancelCauseFunc) *stall {
	return &stall{d: d, cancel: cancel}
}

// touch (re)arms the timer: the body moved.
func (s *stall) touch() {
	if s.done.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t == nil {
		s.t = time.AfterFunc(s.d, func() { s.cancel(errStalled) })
		return
	}
	s.t.Reset(s.d)
}

// pause disarms the timer: the body ended.
func (s *stall) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		s.t.Stop()
	}
}

func (s *stall) stop() {
	s.done.Store(true)
	s.pause()
}

// stallBody is a body whose reads keep its stall timer from firing.
type stallBody struct {
	io.ReadCloser
	s *stall
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.s.pause()
	} else {
		b.s.touch()
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.s.pause()
	return b.ReadCloser.Close()
}

func serviceUnavailable(w http.ResponseWriter, reason string) {
	reply(w, http.StatusServiceUnavailable, reason)
}

func reply(w http.ResponseWriter, code int, reason string) {
	http.Error(w, "troupe: "+reason, code)
}

// newForwardTransport is the transport of Handler's forwarded requests.
func newForwardTransport(o Options) *http.Transport {
	d := &net.Dialer{Timeout: o.ForwardDialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       o.ForwardTLS.Clone(),
		TLSHandshakeTimeout:   o.ForwardDialTimeout,
		ResponseHeaderTimeout: o.ForwardHeaderTimeout,
		IdleConnTimeout:       o.ForwardIdleTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   16,
	}
}
