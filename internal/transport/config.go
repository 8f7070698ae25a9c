package transport

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// Defaults applied by New and Validate to zero Config fields.
const (
	DefaultMaxFrameSize          = 4 << 20
	DefaultMaxConcurrentRequests = 64
	DefaultDialTimeout           = 5 * time.Second
	DefaultIdleTimeout           = 2 * time.Minute
	DefaultMaxConns              = 1024
	DefaultMaxConnsPerIP         = 64
)

// minTimeout bounds DialTimeout and IdleTimeout from below: the janitor
// checks connections at half the shorter of them.
const minTimeout = 10 * time.Millisecond

// Limits on Config.MaxFrameSize. The lower bound leaves room for the
// frame header and a useful body; the upper bound keeps the length in a
// uint32 and one frame's allocation sane.
const (
	minFrameSize = 1 << 10
	maxFrameSize = 1 << 30
)

// Config configures a Transport. Zero fields take the documented
// defaults; only BindAddr is required. New works on a copy: changing the
// Config (or the slices and TLS config it points to) after New has no
// effect.
type Config struct {
	// Name is this node's name, sent in the handshake: the handlers of
	// the peers it dials see it as the sender of its requests (the from
	// of ServeRequest). At most 255 bytes. Default: BindAddr.
	Name string

	// BindAddr is the host:port to listen on. Port 0 picks a free port;
	// Transport.Addr reports it. Outgoing connections are dialled from the
	// same host, so that peers (and faultnet) see this node's address.
	BindAddr string

	// MaxFrameSize is the largest frame this node accepts, in bytes,
	// counting its 9-byte header and, for requests, 1 byte plus the
	// method name; bodies are limited to a little less. Peers learn it in
	// the handshake and refuse to send more, with ErrFrameTooLarge. A
	// frame is allocated only after its length is checked against this
	// limit, and its buffer then grows as its bytes arrive (from 16 KiB,
	// doubling), so a peer that claims a large frame and sends little
	// makes this node hold little. The frames one connection holds are
	// bounded by MaxFrameSize × (MaxConcurrentRequests + its write queue
	// of 64 frames). Default 4 MiB.
	MaxFrameSize int

	// MaxConns bounds the incoming connections open at once, counted from
	// accept, so handshakes in progress count. A connection beyond it is
	// closed at once, before its handshake, and counted in
	// Stats.RefusedConns. Connections this node dials do not count. A
	// peer keeps one connection to this node (two for a moment while it
	// reconnects), so MaxConns is roughly the largest cluster it serves.
	// With the per-connection buffers (64 KiB) and MaxConcurrentRequests,
	// it bounds what strangers can make this node hold before any of them
	// proved a key. Default 1024.
	MaxConns int

	// MaxConnsPerIP bounds, within MaxConns, the incoming connections from
	// one IP address, so that one host cannot take every slot. Several
	// nodes behind one address (one host, a NAT) need one each. Default 64.
	MaxConnsPerIP int

	// MaxConcurrentRequests bounds the handlers running at once for one
	// incoming connection. When it is reached the connection stops
	// reading until a handler returns, pings included: if no handler
	// returns within DialTimeout, the caller declares the connection
	// dead. It also bounds the handler goroutines that the connection
	// keeps, idle, for its next requests; beyond a few, the janitor ends
	// half of the idle ones at each look (every DialTimeout/2 or
	// IdleTimeout/2), so a burst does not leave them all behind.
	// Default 64.
	MaxConcurrentRequests int

	// DialTimeout bounds connecting to a peer and the handshake, in both
	// directions. It is also how long a connection with calls in flight
	// may stay silent (no answer to a ping) before it is declared dead,
	// which is what detects a peer that vanished without closing its
	// connections. Default 5s.
	DialTimeout time.Duration

	// IdleTimeout closes an outgoing connection that carried no call for
	// this long; the next call dials again. Incoming connections are
	// closed after twice this long without a frame: that reclaims those
	// whose dialer vanished, and leaves closing live ones to the dialer,
	// which knows that no call is about to use them. Default 2m.
	IdleTimeout time.Duration

	// TLS, when set, makes every connection mutual TLS. The same config
	// serves both directions: Certificates (or GetCertificate) is this
	// node's certificate, presented as a server and as a client; RootCAs
	// verifies the peers this node dials and ClientCAs verifies the peers
	// that dial it, usually both the cluster's CA. Both pools are
	// required, so that a certificate from a public CA does not admit a
	// stranger. ClientAuth is forced to RequireAndVerifyClientCert. When
	// ServerName is empty it is set to the dialled host, so certificates
	// need the node's IP or name in their SANs; set ServerName to one
	// cluster-wide name to avoid per-node certificates. Keys are not used
	// when TLS is set.
	TLS *tls.Config

	// Keys are the cluster keys, 16, 24 or 32 bytes each and at most 16,
	// as in memberlist's keyring. When TLS is nil and Keys is not empty,
	// connections are authenticated and encrypted with them. Two nodes
	// connect when they share any key, the dialer's first (primary) key
	// preferred, so a key can be rotated in and the old one out without
	// a cut in traffic: add the new key everywhere, make it primary,
	// then remove the old one.
	//
	// With neither TLS nor Keys, traffic is plaintext and anyone who can
	// reach BindAddr can call the handler.
	Keys [][]byte

	// KeySource, when set with Keys, is asked for the current keys at
	// each handshake, so that a key rotation (see Keys) reaches new
	// connections without a restart. Connections already open keep the
	// key they were made with until Transport.KeysChanged is called,
	// which moves this node's connections to the new primary key and
	// closes those made with a key that KeySource no longer returns. It
	// must not block: it runs during handshakes.
	KeySource func() [][]byte

	// Logger receives connection-level events: refused handshakes and
	// malformed frames at Warn, connections opened and closed at Debug.
	// Default: discard.
	Logger *slog.Logger

	// Faults, when set, can partition and delay this node in tests:
	// every dialled and accepted connection is checked and tracked by it.
	// Nil in production.
	Faults faultnet.Hook
}

// Validate reports the first problem with c, after applying defaults. It
// does not modify c.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.BindAddr == "" {
		return errors.New("transport: BindAddr is required")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("transport: BindAddr %q: %w", c.BindAddr, err)
	}
	if len(c.Name) > maxName {
		return fmt.Errorf("transport: Name is %d bytes, at most %d", len(c.Name), maxName)
	}
	if c.MaxFrameSize < minFrameSize || c.MaxFrameSize > maxFrameSize {
		return fmt.Errorf("transport: MaxFrameSize %d is outside [%d, %d]", c.MaxFrameSize, minFrameSize, maxFrameSize)
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < 0 {
		return fmt.Errorf("transport: MaxConns %d and MaxConnsPerIP %d may not be negative", c.MaxConns, c.MaxConnsPerIP)
	}
	if c.MaxConcurrentRequests < 0 {
		return fmt.Errorf("transport: MaxConcurrentRequests %d is negative", c.MaxConcurrentRequests)
	}
	if c.DialTimeout < minTimeout || c.IdleTimeout < minTimeout {
		return fmt.Errorf("transport: DialTimeout and IdleTimeout must be at least %v", minTimeout)
	}
	if c.TLS != nil {
		if err := ValidateTLS(c.TLS); err != nil {
			return fmt.Errorf("transport: %w", err)
		}
		return nil
	}
	if len(c.Keys) > maxKeys {
		return fmt.Errorf("transport: %d Keys, at most %d", len(c.Keys), maxKeys)
	}
	for i, k := range c.Keys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("transport: Keys[%d] is %d bytes, want 16, 24 or 32", i, len(k))
		}
	}
	return nil
}

// ValidateTLS reports what keeps cfg from serving as Config.TLS: mutual
// TLS presents this node's certificate both ways and verifies peers both
// ways. Layers that take a TLS config to pass on (replication.Options)
// check it with this too.
func ValidateTLS(cfg *tls.Config) error {
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil {
		return errors.New("TLS needs Certificates or GetCertificate: mutual TLS presents this node's certificate both ways")
	}
	if cfg.RootCAs == nil || cfg.ClientCAs == nil {
		return errors.New("TLS needs both RootCAs and ClientCAs (usually the cluster CA) to verify peers")
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.Name = cmp.Or(c.Name, c.BindAddr)
	c.MaxFrameSize = cmp.Or(c.MaxFrameSize, DefaultMaxFrameSize)
	c.MaxConcurrentRequests = cmp.Or(c.MaxConcurrentRequests, DefaultMaxConcurrentRequests)
	c.MaxConns = cmp.Or(c.MaxConns, DefaultMaxConns)
	c.MaxConnsPerIP = cmp.Or(c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultDialTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.Logger = cmp.Or(c.Logger, slog.New(slog.DiscardHandler))
	return c
}
