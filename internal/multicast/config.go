package multicast

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// Defaults for the zero fields of Config.
const (
	// DefaultGroup is administratively scoped (239.192.0.0/14, the
	// organization-local scope of RFC 2365), as WebLogic's default
	// 239.192.0.0: routers at the edge of an organization do not forward it.
	DefaultGroup = "239.192.0.1"
	// DefaultPort is memberlist's default port plus one.
	DefaultPort = 7947
	// DefaultTTL keeps announcements on the local network segment: the
	// first router drops them.
	DefaultTTL = 1
	// DefaultInterval is the announcement period of a node that has no
	// peer yet: fast, so that a cluster forms within a second.
	DefaultInterval = 250 * time.Millisecond
	// DefaultSlowInterval is the announcement period once joined: slow,
	// but it still lets the halves of a healed partition find each other.
	DefaultSlowInterval = 5 * time.Second
	// DefaultMaxSkew bounds how far an announcement's timestamp may be from
	// the receiver's clock, which is also how long a captured announcement
	// can be replayed to a receiver that forgot its sender.
	DefaultMaxSkew = 30 * time.Second
)

// Limits.
const (
	// MaxNameLen bounds ClusterName, NodeName and the advertised address,
	// in bytes, so that an announcement always fits MaxDatagram.
	MaxNameLen = 255
	// MaxSenders bounds the table of the last timestamp heard from each
	// node name (replay protection and OnPeer rate limiting). Beyond it the
	// least recently heard name is forgotten, so a flood of invented names
	// costs a fixed amount of memory.
	MaxSenders = 4096
	// queueLen bounds the announcements waiting for OnPeer. A full queue
	// drops (and counts as Throttled) rather than blocking the receiver.
	queueLen = 64
	// recvBuffer is the receive socket buffer asked for, in bytes: about
	// a thousand datagrams.
	recvBuffer = 1 << 20
)

// ErrInvalidConfig is returned by Config.Validate and Start for a
// configuration that cannot work. The message says which field is wrong.
var ErrInvalidConfig = errors.New("multicast: invalid config")

// Config configures a Discoverer. Zero fields take the default written
// beside them; Start works on a copy and never writes to the caller's
// value. The callbacks are called without any lock of the Discoverer held,
// and must not block for long: Known from the receiving goroutine,
// Advertise, Keys and Joined from the announcing goroutine, OnPeer from a
// goroutine of its own.
type Config struct {
	// Group is the IPv4 multicast group. Default DefaultGroup.
	Group string
	// Port is the UDP port of the group. Default DefaultPort.
	Port int
	// Interface names the network interface to join the group on and to
	// send from. Default "": the interface the kernel routes the group to.
	Interface string
	// TTL is the IP time to live of announcements, 1..255. Default
	// DefaultTTL (1): announcements never cross a router. (0 means the
	// default, so TTL 0, host-local multicast, cannot be chosen.)
	TTL int
	// Interval is the announcement period while Joined returns false, and
	// the shortest time between two OnPeer calls for the same node.
	// Default DefaultInterval. Each period is jittered by ±10% so that
	// nodes started together do not announce in lockstep.
	Interval time.Duration
	// SlowInterval is the announcement period while Joined returns true.
	// At least Interval. Default DefaultSlowInterval.
	SlowInterval time.Duration

	// ClusterName is carried by every announcement; announcements of
	// other clusters are dropped. Required, at most MaxNameLen bytes.
	ClusterName string
	// NodeName identifies this node in its announcements; announcements
	// bearing it are taken as our own and ignored. Required, at most
	// MaxNameLen bytes.
	NodeName string

	// Advertise returns the address to announce: memberlist's "host:port"
	// that peers join. Called before each announcement, so it may change.
	// Required.
	Advertise func() string
	// Keys returns the cluster keys, primary first. Announcements are
	// signed with the primary and accepted if they verify with any key,
	// which lets keys rotate. No keys (nil function or empty result): no
	// signing, and signed announcements are dropped. Empty keys are
	// ignored.
	Keys func() [][]byte
	// Joined reports whether the node has at least one peer, which slows
	// announcements to SlowInterval. Default: never joined.
	Joined func() bool
	// Known reports whether node is already an alive member; its
	// announcements are then not reported. Default: nobody is known.
	Known func(node string) bool
	// OnPeer is called with the name and advertised address of a node of
	// this cluster that announced itself, at most once per Interval per
	// node, in order, from one goroutine. It must not call Close. Required.
	OnPeer func(node, addr string)

	// MaxSkew is how far an announcement's timestamp may differ from this
	// node's clock. Default DefaultMaxSkew. Clocks of the cluster's hosts
	// must agree to within it.
	MaxSkew time.Duration

	// Faults, when not nil, drops received announcements whose source
	// address is cut off from LocalHost (faultnet.Hook.Drop), so that
	// tests can partition multicast discovery like the other transports.
	// Announcements are never delayed: one goes to the whole group.
	Faults faultnet.Hook
	// LocalHost is this node's IP address. When set, announcements are
	// sent from it (their source address), and Faults decides with it.
	LocalHost string

	// Logger receives warnings and, at debug level, every drop. Default:
	// discard.
	Logger *slog.Logger
}

// Validate reports whether the configuration can work, after applying the
// defaults to a copy. Every problem is listed; each wraps
// ErrInvalidConfig.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns a copy of c with the defaults applied, and the
// reasons it cannot work.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}

	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if ip, err := netip.ParseAddr(c.Group); err != nil || !ip.Is4() || !ip.IsMulticast() {
		bad("Group %q is not an IPv4 multicast address (224.0.0.0/4)", c.Group)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("Port %d is outside 1..65535", c.Port)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < 1 || c.TTL > 255 {
		bad("TTL %d is outside 1..255", c.TTL)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.SlowInterval == 0 {
		c.SlowInterval = max(DefaultSlowInterval, c.Interval)
	}
	if c.Interval < 0 || c.SlowInterval < c.Interval {
		bad("Interval %v and SlowInterval %v must be positive with SlowInterval >= Interval", c.Interval, c.SlowInterval)
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = DefaultMaxSkew
	}
	if c.MaxSkew < 0 {
		bad("MaxSkew %v is negative", c.MaxSkew)
	}

	if c.ClusterName == "" || len(c.ClusterName) > MaxNameLen {
		bad("ClusterName must have 1..%d bytes, has %d", MaxNameLen, len(c.ClusterName))
	}
	if c.NodeName == "" || len(c.NodeName) > MaxNameLen {
		bad("NodeName must have 1..%d bytes, has %d", MaxNameLen, len(c.NodeName))
	}
	if c.Advertise == nil {
		bad("Advertise is required")
	}
	if c.OnPeer == nil {
		bad("OnPeer is required")
	}
	if c.LocalHost != "" {
		if ip := net.ParseIP(c.LocalHost); ip == nil || ip.To4() == nil {
			bad("LocalHost %q is not an IPv4 address", c.LocalHost)
		}
	}

	if c.Keys == nil {
		c.Keys = func() [][]byte { return nil }
	}
	if c.Joined == nil {
		c.Joined = func() bool { return false }
	}
	if c.Known == nil {
		c.Known = func(string) bool { return false }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, errors.Join(errs...)
}
