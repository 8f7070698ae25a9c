package troupe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/replication/pins"
)

// Config configures a Node: one section per layer, each with the defaults
// its package documents. Only Membership.ClusterName is required.
type Config struct {
	// Membership: cluster name, node name, addresses, discovery (well-known
	// members or multicast), keys, timings.
	Membership membership.Config
	// Naming: the naming tree's limits and channel.
	Naming naming.Options
	// Sessions: sync or async replication, expiry and size limits. Sessions
	// ride the cluster's transport, which Membership configures (TLS,
	// TransportAddr, MaxMessageSize).
	Sessions replication.Options
	// Pins: where pins live in the tree, the quorum window, the member tag
	// that carries HTTP addresses.
	Pins pins.Options

	// HTTPAddr is the "ip:port" of this node's HTTP server, if it has one.
	// It is published in the member tag Pins.HTTPTag, so that a
	// Pins().Handler on another node can forward requests for the keys this
	// node owns. Optional.
	HTTPAddr string

	// Logger is the logger of every section that has none of its own.
	// Default: discard.
	Logger *slog.Logger
}

// Validate reports every problem with the configuration, section by
// section. It does not modify c.
func (c Config) Validate() error {
	var errs []error
	c = c.withDefaults()
	errs = append(errs, c.Membership.Validate(), c.Naming.Validate(), c.Sessions.Validate(), c.Pins.Validate())
	if min := c.Sessions.MinMessageSize(); c.Membership.MaxMessageSize < min {
		errs = append(errs, fmt.Errorf("troupe: Membership.MaxMessageSize %d cannot carry a session of Sessions.MaxSessionSize: it must be at least %d",
			c.Membership.MaxMessageSize, min))
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("troupe: HTTPAddr %q: %w", c.HTTPAddr, err))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with the shared logger filled in and the HTTP
// address in the member tags (on a copy of the caller's map).
func (c Config) withDefaults() Config {
	if c.Logger != nil {
		if c.Membership.Logger == nil {
			c.Membership.Logger = c.Logger
		}
		if c.Naming.Logger == nil {
			c.Naming.Logger = c.Logger
		}
		if c.Sessions.Logger == nil {
			c.Sessions.Logger = c.Logger
		}
		if c.Pins.Logger == nil {
			c.Pins.Logger = c.Logger
		}
	}
	// One opt-out covers the node: a cluster started Insecure carries
	// sessions insecurely too, and says so once for each part.
	if c.Membership.Insecure {
		c.Sessions.Insecure = true
	}
	// A full copy of a session travels in one transport message: a large
	// MaxSessionSize raises the default message limit with it.
	if c.Membership.MaxMessageSize == 0 {
		c.Membership.MaxMessageSize = max(membership.DefaultMaxMessageSize, c.Sessions.MinMessageSize())
	}
	if c.HTTPAddr != "" {
		tag := c.Pins.HTTPTag
		if tag == "" {
			tag = pins.DefaultHTTPTag
		}
		tags := maps.Clone(c.Membership.Tags)
		if tags == nil {
			tags = map[string]string{}
		}
		tags[tag] = c.HTTPAddr
		c.Membership.Tags = tags
	}
	return c
}

// Node is one member of a Troupe cluster with all four parts running:
// membership, the naming tree, sessions and pins.
type Node struct {
	cluster  *membership.Cluster
	tree     *naming.Tree
	sessions *replication.Sessions
	pins     *pins.Pins

	stopOnce sync.Once
}

// Start joins (or forms) the cluster and starts the naming tree, the
// session store and pins on it. ctx bounds the start: discovery of the
// first well-known member, the transport's listener. On error,
// whatever had started is stopped again.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{}
	var err error
	if n.cluster, err = membership.New(ctx, cfg.Membership); err != nil {
		return nil, err
	}
	if n.tree, err = naming.New(n.cluster, cfg.Naming); err != nil {
		n.Shutdown()
		return nil, err
	}
	if n.sessions, err = replication.NewSessions(ctx, n.cluster, cfg.Sessions); err != nil {
		n.Shutdown()
		return nil, err
	}
	if n.pins, err = pins.New(ctx, n.cluster, n.tree, cfg.Pins); err != nil {
		n.Shutdown()
		return nil, err
	}
	return n, nil
}

// Name is this node's name in the cluster.
func (n *Node) Name() string { return n.cluster.Name() }

// Cluster returns the membership layer: members, events, metadata.
func (n *Node) Cluster() *membership.Cluster { return n.cluster }

// Names returns the cluster-wide naming tree.
func (n *Node) Names() *naming.Tree { return n.tree }

// Sessions returns the replicated session store.
func (n *Node) Sessions() *replication.Sessions { return n.sessions }

// Pins returns pinned objects and singleton services.
func (n *Node) Pins() *pins.Pins { return n.pins }

// Leave hands everything over and leaves the cluster, top down: the
// singletons running here stop and move to other nodes and this node's
// pins are released; its sessions move to their secondaries, which pick
// new secondaries; its bindings are removed from every copy of the naming
// tree; then membership announces the departure, so peers see a leave,
// not a failure. Then everything is shut down. ctx bounds the whole.
func (n *Node) Leave(ctx context.Context) error {
	errs := []error{
		n.pins.Leave(ctx),
		n.sessions.Leave(ctx),
		n.tree.Close(),
		n.cluster.Leave(ctx),
	}
	n.Shutdown()
	return errors.Join(errs...)
}

// Shutdown stops the node at once, as a crash would for its peers: they
// detect the failure and take over its sessions, pins and singletons. It
// waits for every goroutine of every part. Safe to call more than once.
func (n *Node) Shutdown() {
	n.stopOnce.Do(func() {
		if n.pins != nil {
			n.pins.Shutdown()
		}
		if n.sessions != nil {
			n.sessions.Shutdown()
		}
		if n.cluster != nil {
			n.cluster.Shutdown()
		}
		if n.tree != nil {
			n.tree.Close()
		}
	})
}
