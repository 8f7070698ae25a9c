package main

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

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clusterkey"
	"github.com/troupe-go/troupe/membership"
)

// Roles a node can take.
const (
	roleManager = "manager"
	roleWorker  = "worker"
)

// consoleService is the name under which the manager binds its URL.
const consoleService = "troupe/console"

// httpsTag is the member tag by which a node says that its HTTP address
// (the tag pins.DefaultHTTPTag) speaks https, so that the console asks
// it for its status over https.
const httpsTag = "appserver.https"

// defaultHTTPPort is the HTTP port used when neither -http nor -https is
// given.
const defaultHTTPPort = "8080"

// envPrefix starts the environment variable of every flag: -wka is
// TROUPE_WKA, -key-file TROUPE_KEY_FILE.
const envPrefix = "TROUPE_"

// options are the command line, as parsed and checked by parseOptions.
type options struct {
	role, name, cluster    string
	multicast              string
	multicastIface         string
	multicastTTL           int
	wka                    string
	bind, advertise        string
	transport              string
	httpAddr, httpsAddr    string
	cert, key              string
	group                  string
	weight                 int
	keyFile                string
	insecure               bool
	tlsCA, tlsCert, tlsKey string
	service                string
	logLevel               string
	profile                string
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// newFlagSet defines the flags on a new FlagSet writing its usage to out.
func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("appserver", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.role, "role", "", "`manager|worker`: a manager serves the console, a worker the application; required")
	fs.StringVar(&o.name, "name", "", "node `name`, unique in the cluster (default: the gossip address ip:port, or host-pid when its port is 0)")
	fs.StringVar(&o.cluster, "cluster", "appserver", "cluster `name`: nodes of other clusters on the network are ignored")
	fs.StringVar(&o.multicast, "multicast", "", "discover members by IP multicast on `group:port` (\"default\": "+
		membership.DefaultMulticastGroup+":"+strconv.Itoa(membership.DefaultMulticastPort)+")")
	fs.StringVar(&o.multicastIface, "multicast-interface", "", "network `interface` for -multicast (default: the one the kernel routes the group to)")
	fs.IntVar(&o.multicastTTL, "multicast-ttl", 0, "`hops` of multicast announcements (default 1: they never cross a router)")
	fs.StringVar(&o.wka, "wka", "", "well-known members, `host:port,...` (a host may be a DNS name with several addresses); "+
		"list the manager, and on the manager itself")
	fs.StringVar(&o.bind, "bind", "127.0.0.1:7946", "gossip `ip:port` (TCP and UDP; port 0: any free port)")
	fs.StringVar(&o.advertise, "advertise", "", "`ip[:port]` peers reach the gossip at (default: -bind; required when -bind is 0.0.0.0)")
	fs.StringVar(&o.transport, "transport", "", "session and channel transport `ip:port` (TCP; default: the -bind IP with the gossip port + 1, "+
		"so that a firewall can open a fixed port)")
	fs.StringVar(&o.httpAddr, "http", "", "plain HTTP `ip:port` (default: the -bind IP with port "+defaultHTTPPort+" unless -https is given; port 0: any free port)")
	fs.StringVar(&o.httpsAddr, "https", "", "HTTPS `ip:port`, with -cert and -key; the address published to peers when set")
	fs.StringVar(&o.cert, "cert", "", "PEM `file` of the HTTPS certificate (chain)")
	fs.StringVar(&o.key, "key", "", "PEM `file` of the HTTPS private key")
	fs.StringVar(&o.group, "group", "", "replication `group` (machine, rack or zone): session secondaries go outside it when possible")
	fs.IntVar(&o.weight, "weight", 0, "`share` in weighted load balancing (default 100)")
	fs.StringVar(&o.keyFile, "key-file", "", "`file` holding the cluster key in base64 (default: $"+clusterkey.EnvVar+
		"); make one with: head -c 32 /dev/urandom | base64")
	fs.BoolVar(&o.insecure, "insecure", false, "run without a cluster key: everything between nodes is plaintext; for a test on one host only")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM `file` of the CA for mutual TLS between nodes (with -tls-cert and -tls-key); "+
		"the console also trusts it for peers' https")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM `file` of this node's certificate for mutual TLS between nodes")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM `file` of this node's private key for mutual TLS between nodes")
	fs.StringVar(&o.service, "service", "services/web", "naming `name` under which workers offer their URL")
	fs.StringVar(&o.logLevel, "log-level", "info", "`level` of the logs on stderr: debug, info, warn or error")
	fs.StringVar(&o.profile, "profile", "lan", "failure detection `timings`: lan (crash detected in 5-10 s), local (one host) or wan")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [$" + envName(f.Name) + "]" })
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: appserver -role manager|worker [flags]

One node of an application server cluster: a worker serves a counter and a
cart in replicated sessions, a manager serves the console at /console/.
Every flag may also be set by the environment variable in brackets; a flag
on the command line wins.

`)
		fs.PrintDefaults()
	}
	return fs
}

// parseOptions parses args, then sets each flag not on the command line
// from its environment variable (getenv), then checks the combination.
// It returns flag.ErrHelp for -h.
func parseOptions(args []string, getenv func(string) string, usage io.Writer) (options, error) {
	var o options
	fs := newFlagSet(&o, usage)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: every setting is a flag", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("$%s: %w", envName(f.Name), err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	return o, o.check(getenv)
}

// check reports every bad value or combination at once.
func (o *options) check(getenv func(string) string) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch o.role {
	case roleManager, roleWorker:
	case "":
		bad("-role is required: manager or worker")
	default:
		bad("-role %q: want manager or worker", o.role)
	}
	if o.multicast == "" && o.wka == "" {
		bad("no discovery: give -wka host:port,... (well-known members; the manager lists itself) or -multicast group:port")
	}
	if o.multicast == "" && (o.multicastIface != "" || o.multicastTTL != 0) {
		bad("-multicast-interface and -multicast-ttl need -multicast")
	}
	if o.httpsAddr != "" && (o.cert == "" || o.key == "") {
		bad("-https needs -cert and -key")
	}
	if o.httpsAddr == "" && (o.cert != "" || o.key != "") {
		bad("-cert and -key are for -https, which is not set")
	}
	if n := countSet(o.tlsCA, o.tlsCert, o.tlsKey); n != 0 && n != 3 {
		bad("mutual TLS between nodes needs all of -tls-ca, -tls-cert and -tls-key")
	}
	if o.insecure && (o.keyFile != "" || getenv(clusterkey.EnvVar) != "") {
		bad("-insecure, but a cluster key is given (-key-file or $%s): drop one", clusterkey.EnvVar)
	}
	if o.weight < 0 {
		bad("-weight %d is negative", o.weight)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		bad("-log-level: %v", err)
	}
	if _, err := parseProfile(o.profile); err != nil {
		bad("-profile: %v", err)
	}
	if _, err := netip.ParseAddrPort(o.bind); err != nil {
		bad("-bind %q: want ip:port: %v", o.bind, err)
	}
	for _, f := range []struct{ name, v string }{{"-http", o.httpAddr}, {"-https", o.httpsAddr}, {"-transport", o.transport}} {
		if f.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(f.v); err != nil {
			bad("%s %q: want ip:port: %v", f.name, f.v, err)
		}
	}
	if o.multicast != "" && o.multicast != "default" {
		if _, _, err := parseGroup(o.multicast); err != nil {
			bad("-multicast %q: %v", o.multicast, err)
		}
	}
	return errors.Join(errs...)
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

// publicIP is the IP peers reach this node at: the advertised one, or
// the bound one.
func (o *options) publicIP() netip.Addr {
	if o.advertise != "" {
		if ap, err := netip.ParseAddrPort(o.advertise); err == nil {
			return ap.Addr()
		}
		if ip, err := netip.ParseAddr(o.advertise); err == nil {
			return ip
		}
	}
	return netip.MustParseAddrPort(o.bind).Addr()
}

// nodeName is -name, or the default it documents.
func (o *options) nodeName() string {
	if o.name != "" {
		return o.name
	}
	bind := netip.MustParseAddrPort(o.bind)
	if bind.Port() == 0 {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "appserver"
		}
		return host + "-" + strconv.Itoa(os.Getpid())
	}
	return netip.AddrPortFrom(o.publicIP(), bind.Port()).String()
}

// transportAddr is -transport, or the bind IP with the gossip port + 1
// (port 0 when the gossip port is 0).
func (o *options) transportAddr() string {
	if o.transport != "" {
		return o.transport
	}
	bind := netip.MustParseAddrPort(o.bind)
	port := uint16(0)
	if bind.Port() != 0 && bind.Port() < 65535 {
		port = bind.Port() + 1
	}
	return netip.AddrPortFrom(bind.Addr(), port).String()
}

// plainHTTP is the plain HTTP address to listen on, "" for none.
func (o *options) plainHTTP() string {
	if o.httpAddr != "" || o.httpsAddr != "" {
		return o.httpAddr
	}
	return net.JoinHostPort(netip.MustParseAddrPort(o.bind).Addr().String(), defaultHTTPPort)
}

// services are the names this node binds its URL under.
func (o *options) services() []string {
	if o.role == roleManager {
		return []string{consoleService}
	}
	return []string{o.service}
}

// nodeTLS loads the mutual TLS configuration between nodes, nil without
// -tls-ca.
func (o *options) nodeTLS() (*tls.Config, error) {
	if o.tlsCA == "" {
		return nil, nil
	}
	pool, err := loadPool(o.tlsCA)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert, -tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
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

// peerRoots are the roots the console trusts for its peers' https: the
// system's plus -tls-ca's.
func (o *options) peerRoots() (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if o.tlsCA == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(o.tlsCA)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(pem)
	return pool, nil
}

// membershipConfig builds the membership section; the key is nil when
// -insecure.
func (o *options) membershipConfig(key []byte, logger *slog.Logger) (membership.Config, error) {
	profile, _ := parseProfile(o.profile)
	c := membership.Config{
		ClusterName:   o.cluster,
		NodeName:      o.nodeName(),
		Role:          o.role,
		Group:         o.group,
		Weight:        o.weight,
		BindAddr:      o.bind,
		AdvertiseAddr: o.advertise,
		TransportAddr: o.transportAddr(),
		Profile:       profile,
		Insecure:      o.insecure,
		Logger:        logger,
	}
	if key != nil {
		c.SecretKeys = [][]byte{key}
	}
	if o.wka != "" {
		for _, a := range strings.Split(o.wka, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.WellKnown = append(c.WellKnown, a)
			}
		}
	}
	if o.multicast != "" {
		m := &membership.MulticastConfig{Interface: o.multicastIface, TTL: o.multicastTTL}
		if o.multicast != "default" {
			m.Group, m.Port, _ = parseGroup(o.multicast)
		}
		c.Multicast = m
	}
	tlsCfg, err := o.nodeTLS()
	if err != nil {
		return c, err
	}
	c.TLS = tlsCfg
	return c, nil
}

// troupeConfig builds the node's configuration around the published HTTP
// address.
func (o *options) troupeConfig(key []byte, httpAddr string, https bool, logger *slog.Logger) (troupe.Config, error) {
	mc, err := o.membershipConfig(key, logger)
	if err != nil {
		return troupe.Config{}, err
	}
	if https {
		mc.Tags = map[string]string{httpsTag: "true"}
	}
	return troupe.Config{
		Membership: mc,
		HTTPAddr:   httpAddr,
		HTTPS:      https,
		Services:   o.services(),
		Logger:     logger,
	}, nil
}

// publishAddr turns a listener's address into one peers can dial: an
// unspecified IP (listening on every interface) becomes the public IP.
func (o *options) publishAddr(ln net.Addr) string {
	ap := netip.MustParseAddrPort(ln.String())
	if ap.Addr().IsUnspecified() {
		ap = netip.AddrPortFrom(o.publicIP(), ap.Port())
	}
	return ap.String()
}
