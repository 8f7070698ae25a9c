// Package nodeflags holds the command-line flags that every process of
// the example application server shares (examples/appserver and
// examples/proxy): the cluster's name and discovery, the node's
// addresses, the cluster key, mutual TLS between nodes, the timings and
// the logs. Each flag can also be set by an environment variable,
// TROUPE_ and its name in capitals (-key-file by TROUPE_KEY_FILE), which
// suits containers; a flag on the command line wins.
//
// A program registers them beside its own, parses, checks, and builds
// the node's membership section:
//
//	var c nodeflags.Cluster
//	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
//	c.Register(fs, "proxy")
//	err := nodeflags.Parse(fs, os.Args[1:], os.Getenv)
//	errs := c.Check(os.Getenv)
//	key, err := c.Key()
//	mc, err := c.Membership("proxy", key, logger)
package nodeflags

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/troupe-go/troupe/internal/clusterkey"
	"github.com/troupe-go/troupe/membership"
)

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "TROUPE_"

// EnvName is the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Cluster are the shared flags.
type Cluster struct {
	Name           string
	Cluster        string
	Multicast      string
	MulticastIface string
	MulticastTTL   int
	WKA            string
	Bind           string
	Advertise      string
	Transport      string
	KeyFile        string
	Insecure       bool
	TLSCA          string
	TLSCert        string
	TLSKey         string
	LogLevel       string
	Profile        string

	prog string
}

// Register defines the shared flags on fs; prog names the program in
// the default node name.
func (c *Cluster) Register(fs *flag.FlagSet, prog string) {
	c.prog = prog
	fs.StringVar(&c.Name, "name", "", "node `name`, unique in the cluster (default: the gossip address ip:port, or host-pid when its port is 0)")
	fs.StringVar(&c.Cluster, "cluster", "appserver", "cluster `name`: nodes of other clusters on the network are ignored")
	fs.StringVar(&c.Multicast, "multicast", "", "discover members by IP multicast on `group:port` (\"default\": "+
		membership.DefaultMulticastGroup+":"+strconv.Itoa(membership.DefaultMulticastPort)+")")
	fs.StringVar(&c.MulticastIface, "multicast-interface", "", "network `interface` for -multicast (default: the one the kernel routes the group to)")
	fs.IntVar(&c.MulticastTTL, "multicast-ttl", 0, "`hops` of multicast announcements (default 1: they never cross a router)")
	fs.StringVar(&c.WKA, "wka", "", "well-known members, `host:port,...` (a host may be a DNS name with several addresses); "+
		"list the manager, and on the manager itself")
	fs.StringVar(&c.Bind, "bind", "127.0.0.1:7946", "gossip `ip:port` (TCP and UDP; port 0: any free port)")
	fs.StringVar(&c.Advertise, "advertise", "", "`ip[:port]` peers reach the gossip at (default: -bind; required when -bind is 0.0.0.0)")
	fs.StringVar(&c.Transport, "transport", "", "session and channel transport `ip:port` (TCP; default: the -bind IP with the gossip port + 1, "+
		"so that a firewall can open a fixed port)")
	fs.StringVar(&c.KeyFile, "key-file", "", "`file` holding the cluster key in base64 (default: $"+clusterkey.EnvVar+
		"); make one with: head -c 32 /dev/urandom | base64")
	fs.BoolVar(&c.Insecure, "insecure", false, "run without a cluster key: everything between nodes is plaintext; for a test on one host only")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM `file` of the CA for mutual TLS between nodes (with -tls-cert and -tls-key); "+
		"also trusted for peers' https")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM `file` of this node's certificate for mutual TLS between nodes")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM `file` of this node's private key for mutual TLS between nodes")
	fs.StringVar(&c.LogLevel, "log-level", "info", "`level` of the logs on stderr: debug, info, warn or error")
	fs.StringVar(&c.Profile, "profile", "lan", "failure detection `timings`: lan (crash detected in 5-10 s), local (one host) or wan")
}

// Parse parses args, then sets each flag not on the command line from
// its environment variable (getenv). Call it once every flag is defined:
// it also adds the variable's name to each flag's usage. It returns
// flag.ErrHelp for -h.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [$" + EnvName(f.Name) + "]" })
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: every setting is a flag", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("$%s: %w", EnvName(f.Name), err))
			}
		}
	})
	return errors.Join(errs...)
}

// Check returns every bad value or combination of the shared flags.
func (c *Cluster) Check(getenv func(string) string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Multicast == "" && c.WKA == "" {
		bad("no discovery: give -wka host:port,... (well-known members; the manager lists itself) or -multicast group:port")
	}
	if c.Multicast == "" && (c.MulticastIface != "" || c.MulticastTTL != 0) {
		bad("-multicast-interface and -multicast-ttl need -multicast")
	}
	if n := countSet(c.TLSCA, c.TLSCert, c.TLSKey); n != 0 && n != 3 {
		bad("mutual TLS between nodes needs all of -tls-ca, -tls-cert and -tls-key")
	}
	if c.Insecure && (c.KeyFile != "" || getenv(clusterkey.EnvVar) != "") {
		bad("-insecure, but a cluster key is given (-key-file or $%s): drop one", clusterkey.EnvVar)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("-log-level: %v", err)
	}
	if _, err := parseProfile(c.Profile); err != nil {
		bad("-profile: %v", err)
	}
	if _, err := netip.ParseAddrPort(c.Bind); err != nil {
		bad("-bind %q: want ip:port: %v", c.Bind, err)
	}
	if c.Transport != "" {
		if _, err := netip.ParseAddrPort(c.Transport); err != nil {
			bad("-transport %q: want ip:port: %v", c.Transport, err)
		}
	}
	if c.Multicast != "" && c.Multicast != "default" {
		if _, _, err := parseGroup(c.Multicast); err != nil {
			bad("-multicast %q: %v", c.Multicast, err)
		}
	}
	return errs
}

// CheckAddr adds to errs an error if the flag name's value v is set and
// not an ip:port.
func CheckAddr(errs []error, name, v string) []error {
	if v == "" {
		return errs
	}
	if _, err := netip.ParseAddrPort(v); err != nil {
		return append(errs, fmt.Errorf("%s %q: want ip:port: %v", name, v, err))
	}
	return errs
}

func countSet(vs ...string) int {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	return n
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func parseProfile(s string) (membership.Profile, error) {
	for _, p := range []membership.Profile{membership.ProfileLAN, membership.ProfileLocal, membership.ProfileWAN} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%q: want lan, local or wan", s)
}

// parseGroup parses a multicast "group:port" or a bare group (the
// default port).
func parseGroup(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, strconv.Itoa(membership.DefaultMulticastPort)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() || !ip.IsMulticast() {
		return "", 0, fmt.Errorf("%q is not an IPv4 multicast group (224.0.0.0/4)", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("port %q is not a port number", port)
	}
	return host, p, nil
}

// Logger is a text logger on w at -log-level (checked by Check).
func (c *Cluster) Logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// PublicIP is the IP peers reach this node at: the advertised one, or
// the bound one.
func (c *Cluster) PublicIP() netip.Addr {
	if c.Advertise != "" {
		if ap, err := netip.ParseAddrPort(c.Advertise); err == nil {
			return ap.Addr()
		}
		if ip, err := netip.ParseAddr(c.Advertise); err == nil {
			return ip
		}
	}
	return netip.MustParseAddrPort(c.Bind).Addr()
}

// NodeName is -name, or the default it documents.
func (c *Cluster) NodeName() string {
	if c.Name != "" {
		return c.Name
	}
	bind := netip.MustParseAddrPort(c.Bind)
	if bind.Port() == 0 {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = c.prog
		}
		return host + "-" + strconv.Itoa(os.Getpid())
	}
	return netip.AddrPortFrom(c.PublicIP(), bind.Port()).String()
}

// TransportAddr is -transport, or the bind IP with the gossip port + 1
// (port 0 when the gossip port is 0).
func (c *Cluster) TransportAddr() string {
	if c.Transport != "" {
		return c.Transport
	}
	bind := netip.MustParseAddrPort(c.Bind)
	port := uint16(0)
	if bind.Port() != 0 && bind.Port() < 65535 {
		port = bind.Port() + 1
	}
	return netip.AddrPortFrom(bind.Addr(), port).String()
}

// PublishAddr turns a listener's address into one peers can dial: an
// unspecified IP (listening on every interface) becomes the public IP.
func (c *Cluster) PublishAddr(ln net.Addr) string {
	ap := netip.MustParseAddrPort(ln.String())
	if ap.Addr().IsUnspecified() {
		ap = netip.AddrPortFrom(c.PublicIP(), ap.Port())
	}
	return ap.String()
}

// NodeTLS loads the mutual TLS configuration between nodes, nil without
// -tls-ca.
func (c *Cluster) NodeTLS() (*tls.Config, error) {
	if c.TLSCA == "" {
		return nil, nil
	}
	pool, err := LoadPool(c.TLSCA)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert, -tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// LoadPool reads a PEM file of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// PeerRoots are the roots trusted for peers' https: the system's plus
// -tls-ca's.
func (c *Cluster) PeerRoots() (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if c.TLSCA == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(pem)
	return pool, nil
}

// Key loads the cluster key from -key-file or the environment; nil with
// -insecure.
func (c *Cluster) Key() ([]byte, error) {
	if c.Insecure {
		return nil, nil
	}
	key, err := clusterkey.Load(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w; or -insecure for a test on one host", err)
	}
	return key, nil
}

// Membership builds the node's membership section for role, with key as
// the cluster key (nil with -insecure).
func (c *Cluster) Membership(role string, key []byte, logger *slog.Logger) (membership.Config, error) {
	profile, _ := parseProfile(c.Profile)
	mc := membership.Config{
		ClusterName:   c.Cluster,
		NodeName:      c.NodeName(),
		Role:          role,
		BindAddr:      c.Bind,
		AdvertiseAddr: c.Advertise,
		TransportAddr: c.TransportAddr(),
		Profile:       profile,
		Insecure:      c.Insecure,
		Logger:        logger,
	}
	if key != nil {
		mc.SecretKeys = [][]byte{key}
	}
	for _, a := range strings.Split(c.WKA, ",") {
		if a = strings.TrimSpace(a); a != "" {
			mc.WellKnown = append(mc.WellKnown, a)
		}
	}
	if c.Multicast != "" {
		m := &membership.MulticastConfig{Interface: c.MulticastIface, TTL: c.MulticastTTL}
		if c.Multicast != "default" {
			m.Group, m.Port, _ = parseGroup(c.Multicast)
		}
		mc.Multicast = m
	}
	tlsCfg, err := c.NodeTLS()
	if err != nil {
		return mc, err
	}
	mc.TLS = tlsCfg
	return mc, nil
}
