package pins

import (
	"fmt"
	"log/slog"
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
)

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
	// to which Handler forwards requests for the keys it owns. Default
	// "troupe.http".
	HTTPTag string

	// QuorumWindow: a node takes a pin or starts a singleton only while it
	// sees at least half of the members that were alive within the last
	// QuorumWindow (itself included; members that left do not count), and
	// gives up what it holds when it stops seeing them. Default 1 min.
	QuorumWindow time.Duration

	// PreferDelay is how long a registered node that is not the preferred
	// one (see PreferRole, PreferNode) waits, once a singleton has no
	// owner, before it claims it anyway. Default 500 ms.
	PreferDelay time.Duration

	// Logger receives pins lost and singletons started and stopped at
	// Info. Default: discard.
	Logger *slog.Logger
}

// Validate reports the first problem with o, after applying defaults.
func (o Options) Validate() error {
	o = o.withDefaults()
	if strings.Trim(o.Prefix, "/") == "" {
		return fmt.Errorf("%w: empty pin Prefix", ErrInvalidOptions)
	}
	if o.QuorumWindow < minTimeout || o.PreferDelay < 0 {
		return fmt.Errorf("%w: QuorumWindow %v must be at least %v and PreferDelay %v not negative",
			ErrInvalidOptions, o.QuorumWindow, minTimeout, o.PreferDelay)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	o.Prefix = strings.Trim(o.Prefix, "/")
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.HTTPTag == "" {
		o.HTTPTag = DefaultHTTPTag
	}
	if o.QuorumWindow == 0 {
		o.QuorumWindow = DefaultQuorumWindow
	}
	if o.PreferDelay == 0 {
		o.PreferDelay = DefaultPreferDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
