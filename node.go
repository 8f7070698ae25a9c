package troupe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

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

	// Client makes this node a client of the cluster, as a load balancer
	// or a console is: it runs membership and the naming tree only. It
	// holds no sessions and no secondaries, takes no pins, runs no
	// singletons, and counts toward no quorum; Sessions and Pins return
	// nil. Default false: a full member.
	Client bool

	// HTTPAddr is the "ip:port" of this node's HTTP server, if it has one:
	// the one setting for where peers, proxies and the console reach it,
	// so the IP must be one they can reach (not 0.0.0.0 or empty; listen on
	// every interface if you like, but publish a real address). It is
	// published in the member tag Pins.HTTPTag, so that a Pins().Handler
	// on another node can forward requests for the keys this node owns,
	// and is the URL that Services bind. Optional.
	HTTPAddr string
	// HTTPS says that the server at HTTPAddr speaks https: the URL that
	// Services bind starts with https://. Default false.
	HTTPS bool
	// Services are names under which Start binds this node's URL (URL:
	// http://HTTPAddr) as a clusterable offer, so that the nodes serving
	// one application share one name: a proxy (package proxy) or a
	// naming.RoundTripper sends requests to its live offers. Leave
	// unbinds them first, so that no new request is sent here while the
	// node hands its sessions over. Requires HTTPAddr.
	Services []string

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
		if err := checkHTTPAddr(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("troupe: HTTPAddr %q: %w", c.HTTPAddr, err))
		}
	}
	if len(c.Services) > 0 && c.HTTPAddr == "" {
		errs = append(errs, errors.New("troupe: Services need HTTPAddr: there is no URL to bind"))
	}
	for _, name := range c.Services {
		if _, err := naming.NormalizeName(name); err != nil {
			errs = append(errs, fmt.Errorf("troupe: Services: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkHTTPAddr accepts an "ip:port" or "host:port" that others can
// dial: a port, and a host that is not empty or unspecified.
func checkHTTPAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("port %q is not a port number", port)
	}
	if host == "" {
		return errors.New("no host: publish an address peers can reach")
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return errors.New("unspecified IP: publish an address peers can reach")
	}
	return nil
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
	url      string
	services []string

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
	if !cfg.Client {
		if n.sessions, err = replication.NewSessions(ctx, n.cluster, cfg.Sessions); err != nil {
			n.Shutdown()
			return nil, err
		}
		if n.pins, err = pins.New(ctx, n.cluster, n.tree, cfg.Pins); err != nil {
			n.Shutdown()
			return nil, err
		}
	}
	if cfg.HTTPAddr != "" {
		scheme := "http"
		if cfg.HTTPS {
			scheme = "https"
		}
		n.url = scheme + "://" + cfg.HTTPAddr
	}
	for _, name := range cfg.Services {
		if err := n.tree.Bind(ctx, name, []byte(n.url), naming.Clusterable()); err != nil {
			n.Shutdown()
			return nil, fmt.Errorf("troupe: bind service %q: %w", name, err)
		}
		n.services = append(n.services, name)
	}
	return n, nil
}

// Name is this node's name in the cluster.
func (n *Node) Name() string { return n.cluster.Name() }

// URL is this node's HTTP URL ("http://" or "https://" and
// Config.HTTPAddr), "" without HTTPAddr.
func (n *Node) URL() string { return n.url }

// Cluster returns the membership layer: members, events, metadata.
func (n *Node) Cluster() *membership.Cluster { return n.cluster }

// Names returns the cluster-wide naming tree.
func (n *Node) Names() *naming.Tree { return n.tree }

// Sessions returns the replicated session store; nil on a client
// (Config.Client).
func (n *Node) Sessions() *replication.Sessions { return n.sessions }

// Pins returns pinned objects and singleton services; nil on a client
// (Config.Client).
func (n *Node) Pins() *pins.Pins { return n.pins }

// serviceUnbindWait bounds how long Leave waits for every member to
// confirm that it dropped this node's Services.
const serviceUnbindWait = 2 * time.Second

// Leave hands everything over and leaves the cluster, top down: this
// node's Services are unbound, so that no new request is sent here; the
// singletons running here stop and move to other nodes and this node's
// pins are released; its sessions move to their secondaries, which pick
// new secondaries; its bindings are removed from every copy of the naming
// tree; then membership announces the departure, so peers see a leave,
// not a failure. Then everything is shut down. ctx bounds the whole.
func (n *Node) Leave(ctx context.Context) error {
	var errs []error
	if len(n.services) > 0 {
		// Confirmed: once every member (a proxy too) has dropped the
		// offer, no new request comes here while the sessions move. A
		// member that does not answer must not eat the time the sessions
		// need: past serviceUnbindWait the unbinds go on by gossip.
		uctx, cancel := context.WithTimeout(ctx, serviceUnbindWait)
		for _, name := range n.services {
			err := n.tree.Unbind(uctx, name, naming.Confirmed())
			if err != nil && !errors.Is(err, naming.ErrNotFound) && uctx.Err() == nil {
				errs = append(errs, err)
			}
		}
		cancel()
	}
	if n.pins != nil {
		errs = append(errs, n.pins.Leave(ctx))
	}
	if n.sessions != nil {
		errs = append(errs, n.sessions.Leave(ctx))
	}
	errs = append(errs, n.tree.Close(), n.cluster.Leave(ctx))
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
