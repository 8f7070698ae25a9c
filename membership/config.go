package membership

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/troupe-go/troupe/internal/multicast"
	"github.com/troupe-go/troupe/internal/transport"
)

// DefaultPort is the TCP and UDP port a node binds when Config.BindAddr
// names no port.
const DefaultPort = 7946

// Defaults for the zero fields of MulticastConfig. The multicast
// discoverer owns them; these names only show them here.
const (
	// DefaultMulticastGroup is administratively scoped (239.192.0.0/14,
	// RFC 2365), as WebLogic's default: routers at the edge of an
	// organization do not forward it.
	DefaultMulticastGroup = multicast.DefaultGroup
	// DefaultMulticastPort is DefaultPort plus one.
	DefaultMulticastPort = multicast.DefaultPort
	// DefaultMulticastTTL keeps announcements on the local network
	// segment: the first router drops them.
	DefaultMulticastTTL = multicast.DefaultTTL
	// DefaultMulticastInterval is the announcement period of a node that
	// has no peer yet: fast, so that a cluster forms within a second.
	DefaultMulticastInterval = multicast.DefaultInterval
	// DefaultMulticastSlowInterval is the announcement period once the
	// node has peers.
	DefaultMulticastSlowInterval = multicast.DefaultSlowInterval
)

// MulticastMaxSkew is how far the timestamp of a multicast announcement
// may be from the receiver's clock: the clocks of a cluster's hosts must
// agree to within it, or their announcements are dropped (counted as
// MulticastStats.Stale).
const MulticastMaxSkew = multicast.DefaultMaxSkew

// Profile selects a timing preset for failure detection, gossip and
// re-joining. The presets are memberlist's, which are tuned and measured;
// Troupe adds only its own discovery timings to them.
type Profile int

const (
	// ProfileLAN suits servers in one data centre: probes every second,
	// push/pull every 30 s. Crash detection takes about 5-10 s. Default.
	ProfileLAN Profile = iota
	// ProfileLocal suits one host or a fast, quiet network (tests, demos):
	// shorter timeouts, push/pull every 15 s.
	ProfileLocal
	// ProfileWAN tolerates high latency: probes every 5 s.
	ProfileWAN
)

func (p Profile) String() string {
	switch p {
	case ProfileLAN:
		return "lan"
	case ProfileLocal:
		return "local"
	case ProfileWAN:
		return "wan"
	}
	return "Profile(" + strconv.Itoa(int(p)) + ")"
}

// discoveryTiming is how often a node retries its well-known members and
// lost peers. It scales with the profile so that WAN clusters are not
// hammered and local ones re-merge in seconds.
type discoveryTiming struct {
	joinBackoffMin time.Duration // first retry after a failed join
	joinBackoffMax time.Duration // cap of the exponential backoff
	rejoinInterval time.Duration // once joined: how often missing peers are retried
	lostWindow     time.Duration // how long a failed member's address is retried
}

func (p Profile) discovery() discoveryTiming {
	switch p {
	case ProfileLocal:
		return discoveryTiming{100 * time.Millisecond, 2 * time.Second, 2 * time.Second, 5 * time.Minute}
	case ProfileWAN:
		return discoveryTiming{2 * time.Second, time.Minute, time.Minute, 30 * time.Minute}
	}
	return discoveryTiming{500 * time.Millisecond, 30 * time.Second, 15 * time.Second, 15 * time.Minute}
}

// Resolver resolves the host part of a well-known member address. A host
// that resolves to several addresses (a cluster DNS name) contributes all
// of them. *net.Resolver satisfies it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// MulticastConfig enables discovery by IP multicast. A node announces
// itself to the group and joins every node of its cluster that it hears.
// Zero fields take the defaults written beside them; New applies them to
// a copy and never writes to the caller's value.
type MulticastConfig struct {
	// Group is the IPv4 multicast group (224.0.0.0/4). Default
	// DefaultMulticastGroup.
	Group string
	// Port is the UDP port of the group, 1..65535. Default
	// DefaultMulticastPort.
	Port int
	// Interface names the network interface to announce and listen on.
	// Default: the one the kernel routes the group to.
	Interface string
	// TTL is the announcements' IP time to live, 1..255. Default
	// DefaultMulticastTTL: announcements never cross a router, so a
	// cluster spans one network segment.
	TTL int
	// Interval is the announcement period while the node has no peers,
	// and the shortest time between two joins of the same node heard on
	// the group. Default DefaultMulticastInterval. Each period is
	// jittered by ±10%.
	Interval time.Duration
	// SlowInterval is the announcement period once the node has peers; it
	// keeps the two halves of a healed partition finding each other. At
	// least Interval. Default DefaultMulticastSlowInterval, or Interval if
	// that is longer.
	SlowInterval time.Duration
}

// Config configures one cluster member. The zero value of every field but
// ClusterName means the default written beside it. New copies the Config;
// it never writes to the caller's value.
type Config struct {
	// ClusterName isolates clusters that share a network: it becomes
	// memberlist's label on every packet and stream, and is carried by
	// multicast announcements. Required; at most 128 bytes, no spaces.
	ClusterName string

	// NodeName must be unique among live members. Default: the host name.
	// Two processes on one host must set it; the second is refused with
	// ErrNameInUse.
	NodeName string

	// Role is what the node does: "manager", "worker", or any short string
	// (the WSO2 sub-domain). Load balancing can filter on it.
	Role string
	// Group is the replication group (machine, rack or zone). A session's
	// secondary is placed outside its primary's group when possible.
	Group string
	// Weight is the node's share in weighted load balancing. Default 100.
	Weight int
	// Tags are small string attributes, such as the node's HTTP address.
	// Role, Group, Weight and Tags together must encode to at most 512
	// bytes (MetaMaxSize).
	Tags map[string]string

	// BindAddr is the "ip:port" the node listens on for gossip (UDP) and
	// state exchange (TCP). Default "127.0.0.1:7946"; port 0 picks a free
	// port. Binding 0.0.0.0 or :: requires AdvertiseAddr.
	BindAddr string
	// AdvertiseAddr is the "ip:port" peers use to reach this node; the port
	// may be omitted. Default: BindAddr. It must be an address peers can
	// reach: a loopback address is refused when a well-known member is not
	// on loopback.
	AdvertiseAddr string

	// WellKnown lists "host:port" addresses of well-known members
	// (unicast discovery). A host that resolves to several addresses
	// contributes all of them; a missing port means DefaultPort. The node
	// retries them with backoff until one answers, and keeps re-joining the
	// ones missing from its member list.
	WellKnown []string
	// Resolver resolves WellKnown hosts. Default net.DefaultResolver.
	Resolver Resolver

	// Multicast enables discovery by IP multicast when not nil. It can be
	// used together with WellKnown.
	Multicast *MulticastConfig

	// SecretKeys are the cluster keys (16, 24 or 32 bytes each: AES-128,
	// -192 or -256). The first encrypts; all are tried when decrypting,
	// which lets keys rotate (see Cluster.InstallKey). With keys set,
	// gossip, state exchange and multicast announcements are encrypted or
	// authenticated, and a node without the key can neither join nor read.
	SecretKeys [][]byte

	// Insecure lets the node run without SecretKeys: gossip, state
	// exchange and the transport are then plaintext and unauthenticated,
	// and anyone who can reach the node's ports can join the cluster, read
	// what its layers exchange (sessions included) and forge it. New
	// refuses to start without SecretKeys unless Insecure is set, and then
	// logs a Warn. For tests and demos on one host only. (TLS alone does
	// not suffice: it covers the transport, not memberlist's gossip.)
	Insecure bool

	// JoinTimeout is how long New keeps trying the well-known members
	// before it fails with ErrNoPeers: a node that starts alone would act
	// as a cluster of one (take pins, run singletons) beside the real
	// one. A node that is itself one of the well-known members does not
	// wait: it may be the first. Negative: do not wait, start alone and
	// keep trying in the background (for a node that may start before
	// every well-known member). Default DefaultJoinTimeout.
	JoinTimeout time.Duration

	// TransportAddr is the "ip:port" of this node's transport: the one
	// listener on which it serves its peers' calls and direct messages
	// (Channel.Call, Channel.Send), shared by every layer above, over
	// pooled, multiplexed connections. Default: the advertised IP with
	// port 0 (a free port). The bound address travels in the member's
	// metadata (Member.TransportAddr); binding 0.0.0.0 publishes the
	// advertised IP with the bound port.
	TransportAddr string

	// TLS makes the transport mutual TLS: both RootCAs and ClientCAs are
	// required, so that a certificate from a public CA does not admit a
	// stranger. When nil and SecretKeys are set, transport connections are
	// authenticated and encrypted with the cluster keys; with neither,
	// they are plaintext.
	TLS *tls.Config

	// MaxMessageSize bounds one call, its answer, or one direct message on
	// the transport, in bytes: a peer that sends more is disconnected, and
	// a call that would send more fails with ErrMessageTooLarge. Memory
	// for a message is allocated only after its length is checked.
	// Default DefaultMaxMessageSize (4 MiB); at most 512 MiB.
	MaxMessageSize int

	// MaxConnections bounds the transport connections this node accepts
	// at once, and MaxConnectionsPerIP those from one IP address within
	// it; beyond them a new connection is closed at once and counted.
	// Every peer holds one connection to this node (two for a moment when
	// it reconnects), so MaxConnections is about the largest cluster the
	// node serves. Defaults 1024 and 64.
	MaxConnections      int
	MaxConnectionsPerIP int

	// Profile picks failure detection and discovery timings. Default
	// ProfileLAN.
	Profile Profile

	// Logger receives the node's logs, memberlist's included. Default: a
	// logger that discards everything.
	Logger *slog.Logger

	// Faults, when set, routes all of this node's traffic (gossip, state
	// exchange, received multicast announcements and the transport)
	// through a fault injection network, so that tests can cut, isolate
	// and delay nodes: see Network and troupetest.Network. Nil in
	// production, which is the default.
	Faults Network
}

// Defaults of Config fields.
const (
	DefaultMaxMessageSize = 4 << 20
	DefaultJoinTimeout    = 10 * time.Second
)

// Limits enforced by Validate.
const (
	// MetaMaxSize is memberlist's limit on a member's encoded metadata.
	MetaMaxSize     = 512
	maxClusterName  = 128
	maxNodeName     = 128
	defaultWeight   = 100
	maxWeight       = 1_000_000
	defaultBindHost = "127.0.0.1"
	minMessageSize  = 64 << 10
	maxMessageSize  = 512 << 20
)

// Validate reports every problem with c at once, each wrapping
// ErrInvalidConfig (or ErrMetaTooLarge). It does not modify c.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// resolved is a validated Config with defaults applied and addresses
// parsed.
type resolved struct {
	Config
	bind      netip.AddrPort
	advertise netip.AddrPort // port 0: use the bound port
	meta      []byte
}

func (c Config) withDefaults() (resolved, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	r := resolved{Config: c}

	switch {
	case c.ClusterName == "":
		bad("ClusterName is required: it keeps clusters on one network apart")
	case len(c.ClusterName) > maxClusterName:
		bad("ClusterName is %d bytes, the limit is %d", len(c.ClusterName), maxClusterName)
	case !printable(c.ClusterName):
		bad("ClusterName %q has spaces or control characters", c.ClusterName)
	}

	if r.NodeName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			bad("NodeName is empty and the host name is unknown: set NodeName")
		}
		r.NodeName = host
	}
	if len(r.NodeName) > maxNodeName || !printable(r.NodeName) {
		bad("NodeName %q must be 1-%d printable bytes without spaces", r.NodeName, maxNodeName)
	}

	if r.Weight == 0 {
		r.Weight = defaultWeight
	}
	if r.Weight < 0 || r.Weight > maxWeight {
		bad("Weight %d is outside 1..%d", r.Weight, maxWeight)
	}
	r.Tags = cloneTags(c.Tags)
	// The transport's address is known only once it is bound: count the
	// longest it can be.
	meta, err := encodeMeta(Meta{Role: r.Role, Group: r.Group, Weight: r.Weight, Tags: r.Tags}, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
	if err != nil {
		errs = append(errs, err)
	}
	r.meta = meta

	if r.BindAddr == "" {
		r.BindAddr = net.JoinHostPort(defaultBindHost, strconv.Itoa(DefaultPort))
	}
	bind, err := parseAddrPort(r.BindAddr, DefaultPort)
	if err != nil {
		bad("BindAddr: %v", err)
	}
	r.bind = bind
	if c.AdvertiseAddr != "" {
		adv, err := parseAddrPort(c.AdvertiseAddr, 0)
		switch {
		case err != nil:
			bad("AdvertiseAddr: %v", err)
		case adv.Addr().IsUnspecified():
			bad("AdvertiseAddr %s is unspecified: advertise an address peers can reach", c.AdvertiseAddr)
		}
		r.advertise = adv
	} else if bind.Addr().IsUnspecified() {
		bad("BindAddr %s listens on every interface, so peers cannot be told where to reach this node: set AdvertiseAddr to a real address of this host", r.BindAddr)
	} else {
		r.advertise = netip.AddrPortFrom(bind.Addr(), 0)
	}

	for _, wk := range c.WellKnown {
		host, _, err := splitHostPortDefault(wk, DefaultPort)
		if err != nil {
			bad("WellKnown %q: %v", wk, err)
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && r.advertise.Addr().IsLoopback() && !ip.IsLoopback() {
			bad("this node advertises loopback address %s but well-known member %s is not on this host: it could never reach us; set AdvertiseAddr to a real address", r.advertise.Addr(), wk)
		}
	}
	if r.Resolver == nil {
		r.Resolver = net.DefaultResolver
	}

	if c.Multicast != nil {
		// The discoverer owns the multicast defaults and checks; validate
		// them now so that New fails before binding anything.
		m := *c.Multicast
		if err := r.multicastConfig(&m, nil).Validate(); err != nil {
			bad("Multicast: %v", err)
		}
		r.Multicast = &m
	}

	r.SecretKeys = nil
	for i, k := range c.SecretKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			bad("SecretKeys[%d] is %d bytes; keys are 16, 24 or 32 bytes", i, n)
		}
		r.SecretKeys = append(r.SecretKeys, append([]byte(nil), k...))
	}

	if c.TransportAddr != "" {
		if _, err := parseAddrPort(c.TransportAddr, 0); err != nil {
			bad("TransportAddr: %v", err)
		}
	}
	if c.TLS != nil {
		if err := transport.ValidateTLS(c.TLS); err != nil {
			bad("TLS: %v", err)
		}
	}
	if r.MaxConnections < 0 || r.MaxConnectionsPerIP < 0 {
		bad("MaxConnections %d and MaxConnectionsPerIP %d may not be negative", r.MaxConnections, r.MaxConnectionsPerIP)
	}
	if r.MaxMessageSize == 0 {
		r.MaxMessageSize = DefaultMaxMessageSize
	}
	if r.MaxMessageSize < minMessageSize || r.MaxMessageSize > maxMessageSize {
		bad("MaxMessageSize %d is outside [%d, %d]", r.MaxMessageSize, minMessageSize, maxMessageSize)
	}

	if len(r.SecretKeys) == 0 && !r.Insecure {
		bad("SecretKeys is empty: without a cluster key anyone who can reach this node can join the cluster and read or forge what it carries; set SecretKeys on every node (make one with: head -c 32 /dev/urandom | base64), or set Insecure for a test on one host")
	}
	if r.JoinTimeout == 0 {
		r.JoinTimeout = DefaultJoinTimeout
	}

	if r.Profile < ProfileLAN || r.Profile > ProfileWAN {
		bad("unknown Profile %d", int(r.Profile))
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if len(errs) > 0 {
		return resolved{}, joinErrors(errs)
	}
	return r, nil
}

// joinErrors joins errors one per line; errors.Is sees every one.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return multiError(errs)
}

type multiError []error

func (m multiError) Error() string {
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func (m multiError) Unwrap() []error { return m }

func printable(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// parseAddrPort parses "ip:port" or a bare "ip" (taking defPort). Host
// names are refused: a node must know the exact address it binds or
// advertises.
func parseAddrPort(s string, defPort int) (netip.AddrPort, error) {
	host, port, err := splitHostPortDefault(s, defPort)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address", host)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

func splitHostPortDefault(s string, defPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (IPv6 without brackets too).
		host, portStr = strings.Trim(s, "[]"), strconv.Itoa(defPort)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", s)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has a bad port", s)
	}
	return host, port, nil
}
