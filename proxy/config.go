package proxy

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/troupe-go/troupe/naming"
)

// Defaults of Config.
const (
	DefaultService           = "services/web"
	DefaultMaxBodyBuffer     = 1 << 20
	DefaultMaxResponseBuffer = 64 << 10
	DefaultMaxAttempts       = 3
	DefaultDialTimeout       = time.Second
	DefaultHeaderTimeout     = 10 * time.Second
	DefaultBodyTimeout       = 60 * time.Second
	DefaultDownFor           = 5 * time.Second
	DefaultRetryAfter        = time.Second
)

// Route sends the requests whose path starts with Prefix to the offers
// of Service instead of Config.Service, as WebLogic's plug-in passes the
// console's path to the administration server.
type Route struct {
	Prefix  string // a path prefix: "/console"; it matches "/console" and "/console/…"
	Service string // the naming name whose offers serve it
}

// Config configures a Handler. Only Names is required; zero fields take
// the defaults written beside them.
type Config struct {
	// Names is the naming tree of a node that knows the cluster, usually a
	// client node (troupe.Config.Client), which holds no sessions and
	// counts toward no quorum. Its live offers of a service are where
	// requests go; an offer whose node failed or left (or unbound it,
	// as a leaving node does first) is never chosen.
	Names *naming.Tree

	// Service is the name whose offers (base URLs, "http://10.0.0.7:8080")
	// serve every request that no Route claims. Default "services/web".
	Service string
	// Routes send some path prefixes to other services; the longest
	// matching prefix wins.
	Routes []Route

	// Policy chooses the offer for each attempt among those not yet
	// tried. Default: CookieRoute(CookieName, FromNaming(naming.RoundRobin())),
	// which sends a request that carries a session cookie to its primary,
	// then to its secondary, then to any offer.
	Policy Policy
	// CookieName is the session cookie the default Policy reads. Default
	// replication.DefaultCookieName.
	CookieName string

	// MaxBodyBuffer is how much of a request body the handler keeps so
	// that it can send the request again to another node, in bytes. A
	// larger body is streamed to the first node and never retried.
	// Default 1 MiB.
	MaxBodyBuffer int64
	// MaxResponseBuffer: a response whose Content-Length is at most this
	// is read whole from the node before any of it is sent on, so that a
	// node that dies in the middle of it costs a retry (for a request
	// that may be repeated) rather than a response cut short. Larger and
	// chunked responses stream. Default 64 KiB.
	MaxResponseBuffer int64
	// MaxAttempts bounds the nodes one request is sent to. Default 3.
	MaxAttempts int
	// RetryUnsafe lets a request that is not idempotent (POST, PATCH
	// without an Idempotency-Key header) go to another node after it was
	// sent to one that then failed (a reset connection, a timeout): the
	// first node may have processed it. A request that never reached a
	// node (connection refused, dial timeout) is always sent on. Default
	// false.
	RetryUnsafe bool

	// DialTimeout bounds connecting to a node, with the TLS handshake.
	// Default 1 s.
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for a node's response headers once
	// the request is sent; a node that exceeds it (paused, overloaded) is
	// marked down. Default 10 s.
	HeaderTimeout time.Duration
	// BodyTimeout bounds the whole response body, after the headers.
	// Default 60 s.
	BodyTimeout time.Duration
	// DownFor is how long a node that refused a connection, or timed out,
	// gets no request while another node can take it. Default 5 s.
	DownFor time.Duration
	// RetryAfter is the Retry-After of a 503 that the handler writes
	// itself when no node can serve. Default 1 s.
	RetryAfter time.Duration

	// TrustForwarded keeps the X-Forwarded-For and Forwarded headers of
	// incoming requests and appends to them, for a handler behind another
	// proxy that sets them. Default false: they are replaced, since a
	// client could forge them.
	TrustForwarded bool

	// TLS is the client configuration for https offers (RootCAs for the
	// workers' certificates; a certificate to present for mutual TLS).
	// Default nil: the system roots.
	TLS *tls.Config

	// Logger logs nodes marked down and failed requests. Default:
	// discard.
	Logger *slog.Logger
}

// ErrInvalidConfig is returned by Validate and New for a configuration
// they refuse.
var ErrInvalidConfig = errors.New("proxy: invalid config")

// Validate reports every problem with c. It does not modify c.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Names == nil {
		bad("Names is nil")
	}
	if c.Service != "" {
		if _, err := naming.NormalizeName(c.Service); err != nil {
			bad("Service: %v", err)
		}
	}
	for _, r := range c.Routes {
		if !strings.HasPrefix(r.Prefix, "/") {
			bad("Route prefix %q does not start with /", r.Prefix)
		}
		if _, err := naming.NormalizeName(r.Service); err != nil {
			bad("Route %q: %v", r.Prefix, err)
		}
	}
	for name, v := range map[string]int64{
		"MaxBodyBuffer": c.MaxBodyBuffer, "MaxResponseBuffer": c.MaxResponseBuffer, "MaxAttempts": int64(c.MaxAttempts),
		"DialTimeout": int64(c.DialTimeout), "HeaderTimeout": int64(c.HeaderTimeout),
		"BodyTimeout": int64(c.BodyTimeout), "DownFor": int64(c.DownFor), "RetryAfter": int64(c.RetryAfter),
	} {
		if v < 0 {
			bad("%s is negative", name)
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of c with every zero field set, and the
// routes sorted longest prefix first.
func (c Config) withDefaults() Config {
	c.Service = cmp.Or(c.Service, DefaultService)
	c.MaxBodyBuffer = cmp.Or(c.MaxBodyBuffer, DefaultMaxBodyBuffer)
	c.MaxResponseBuffer = cmp.Or(c.MaxResponseBuffer, DefaultMaxResponseBuffer)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, DefaultMaxAttempts)
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	c.HeaderTimeout = cmp.Or(c.HeaderTimeout, DefaultHeaderTimeout)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	c.DownFor = cmp.Or(c.DownFor, DefaultDownFor)
	c.RetryAfter = cmp.Or(c.RetryAfter, DefaultRetryAfter)
	if c.Policy == nil {
		c.Policy = CookieRoute(c.CookieName, FromNaming(naming.RoundRobin()))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Routes = slices.Clone(c.Routes)
	slices.SortStableFunc(c.Routes, func(a, b Route) int { return len(b.Prefix) - len(a.Prefix) })
	return c
}

// service returns the service that serves path.
func (c *Config) service(path string) string {
	for _, r := range c.Routes {
		p := strings.TrimSuffix(r.Prefix, "/")
		if path == p || strings.HasPrefix(path, p+"/") {
			return r.Service
		}
	}
	return c.Service
}
