package pins

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Defaults of Options.
const (
	DefaultPrefix       = "troupe/pins"
	DefaultHTTPTag      = "troupe.http"
	DefaultChannel      = "troupe.pins"
	DefaultPreferDelay  = 500 * time.Millisecond
	DefaultQuorumWindow = time.Minute
	DefaultOwnerLease   = 2 * time.Second

	DefaultForwardDialTimeout   = 5 * time.Second
	DefaultForwardHeaderTimeout = 30 * time.Second
	DefaultForwardBodyTimeout   = 30 * time.Second
	DefaultForwardIdleTimeout   = 90 * time.Second
)

// TagKey is the member tag that marks a node running pins. Only such
// members count toward the pins' quorum: a member that runs membership
// and the naming tree alone (a client, a proxy) is no voter.
const TagKey = "troupe.pins"

// minTimeout is the shortest QuorumWindow Validate accepts.
const minTimeout = 10 * time.Millisecond

// Options configure Pins. The zero value is usable.
type Options struct {
	// Prefix is where pins live in the naming tree: a pin of key k is the
	// name Prefix/k, and a singleton s is Prefix/singletons/s. Every node
	// must use the same. Default "troupe/pins".
	Prefix string

	// Channel is the membership channel on which nodes ask each other to
	// take a pin (On). Default "troupe.pins".
	Channel string

	// HTTPTag is the member tag holding a node's HTTP address ("ip:port"),
	// to which Handler forwards requests for the keys it owns. Without
	// ForwardTLS the address must be on the member's own IP (or leave the
	// host out, or unspecified, to mean that IP). Default "troupe.http".
	HTTPTag string

	// ForwardTLS, when set, makes Handler forward over https with a clone
	// of it: RootCAs (or the system roots) verify the owner's certificate
	// for the host it publishes, which may then be any host; a
	// certificate in Certificates is presented to the owner (mutual TLS).
	// Default nil: plain http, to the owner's own IP only.
	ForwardTLS *tls.Config

	// ForwardDialTimeout bounds connecting to an owner, and the TLS
	// handshake. Default 5 s.
	ForwardDialTimeout time.Duration

	// ForwardHeaderTimeout bounds the wait for an owner's response headers
	// once the request is sent: an owner that accepts and never answers (a
	// stopped process) costs a request this, then 504. Default 30 s.
	ForwardHeaderTimeout time.Duration

	// ForwardBodyTimeout is how long the request or response body of a
	// forwarded request may make no progress (no byte read from the client
	// or the owner, or written on) before the forward is abandoned: 504
	// before the response started, a cut response after. Choose it above
	// the longest pause of a streamed response. Default 30 s.
	ForwardBodyTimeout time.Duration

	// ForwardIdleTimeout is how long an idle connection to an owner is
	// kept for the next forwarded request. Default 90 s.
	ForwardIdleTimeout time.Duration

	// TrustedProxies are the addresses of the proxies in front of the
	// nodes (a load balancer) whose X-Forwarded-For, Forwarded,
	// X-Forwarded-Host and X-Forwarded-Proto Handler keeps, and appends
	// to, when it forwards a request. From any other client those headers
	// are replaced by the client's address. Default: none.
	TrustedProxies []netip.Prefix

	// QuorumWindow: a node takes a pin or starts a singleton only while it
	// sees a strict majority of the members that were alive within the
	// last QuorumWindow (itself included; members that left do not count),
	// or exactly half of them including the one whose name sorts first,
	// and gives up what it holds when it stops seeing them. Default 1 min.
	QuorumWindow time.Duration

	// OwnerLease: a node holds its pins and singletons only while it
	// reaches a quorum of the members, which it checks every OwnerLease/4
	// while it holds any; once OwnerLease passes without, it gives them
	// up. In turn no node claims a pin or a singleton within OwnerLease
	// of a member failure it saw, so that a failed owner cut off on the
	// other side of a partition has let go first. It bounds how long a
	// partitioned owner may go on, and adds up to that much to a
	// singleton's failover. Default 2 s.
	OwnerLease time.Duration

	// PreferDelay is how long a registered node that is not the preferred
	// one (see PreferRole, PreferNode) waits, once a singleton has no
	// owner, before it claims it anyway. Default 500 ms.
	PreferDelay time.Duration

	// Logger receives pins lost and singletons started and stopped at
	// Info. Default: discard.
	Logger *slog.Logger
}

// Validate reports every problem with o, after applying defaults, each
// wrapping ErrInvalidOptions.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if strings.Trim(o.Prefix, "/") == "" {
		bad("empty pin Prefix")
	}
	if o.QuorumWindow < minTimeout || o.PreferDelay < 0 {
		bad("QuorumWindow %v must be at least %v and PreferDelay %v not negative", o.QuorumWindow, minTimeout, o.PreferDelay)
	}
	if o.OwnerLease < 4*minTimeout {
		bad("OwnerLease %v is under %v", o.OwnerLease, 4*minTimeout)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"ForwardDialTimeout", o.ForwardDialTimeout}, {"ForwardHeaderTimeout", o.ForwardHeaderTimeout},
		{"ForwardBodyTimeout", o.ForwardBodyTimeout}, {"ForwardIdleTimeout", o.ForwardIdleTimeout}} {
		if f.d < minTimeout {
			bad("%s %v is under %v", f.name, f.d, minTimeout)
		}
	}
	for _, pf := range o.TrustedProxies {
		if !pf.IsValid() {
			bad("TrustedProxies holds an invalid prefix %v", pf)
		}
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	o.Prefix = strings.Trim(cmp.Or(o.Prefix, DefaultPrefix), "/")
	o.Channel = cmp.Or(o.Channel, DefaultChannel)
	o.HTTPTag = cmp.Or(o.HTTPTag, DefaultHTTPTag)
	o.QuorumWindow = cmp.Or(o.QuorumWindow, DefaultQuorumWindow)
	o.PreferDelay = cmp.Or(o.PreferDelay, DefaultPreferDelay)
	o.OwnerLease = cmp.Or(o.OwnerLease, DefaultOwnerLease)
	o.ForwardDialTimeout = cmp.Or(o.ForwardDialTimeout, DefaultForwardDialTimeout)
	o.ForwardHeaderTimeout = cmp.Or(o.ForwardHeaderTimeout, DefaultForwardHeaderTimeout)
	o.ForwardBodyTimeout = cmp.Or(o.ForwardBodyTimeout, DefaultForwardBodyTimeout)
	o.ForwardIdleTimeout = cmp.Or(o.ForwardIdleTimeout, DefaultForwardIdleTimeout)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	return o
}
