package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/nodeflags"
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

// options are the command line, as parsed and checked by parseOptions:
// the flags every process of the cluster shares (nodeflags) and the
// node's own.
type options struct {
	nodeflags.Cluster
	role                string
	httpAddr, httpsAddr string
	cert, key           string
	group               string
	weight              int
	service             string
}

// parseOptions parses args, then sets each flag not on the command line
// from its environment variable (getenv), then checks the combination.
// It returns flag.ErrHelp for -h.
func parseOptions(args []string, getenv func(string) string, usage io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("appserver", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&o.role, "role", "", "`manager|worker`: a manager serves the console, a worker the application; required")
	o.Register(fs, "appserver")
	fs.StringVar(&o.httpAddr, "http", "", "plain HTTP `ip:port` (default: the -bind IP with port "+defaultHTTPPort+" unless -https is given; port 0: any free port)")
	fs.StringVar(&o.httpsAddr, "https", "", "HTTPS `ip:port`, with -cert and -key; the address published to peers when set")
	fs.StringVar(&o.cert, "cert", "", "PEM `file` of the HTTPS certificate (chain)")
	fs.StringVar(&o.key, "key", "", "PEM `file` of the HTTPS private key")
	fs.StringVar(&o.group, "group", "", "replication `group` (machine, rack or zone): session secondaries go outside it when possible")
	fs.IntVar(&o.weight, "weight", 0, "`share` in weighted load balancing (default 100)")
	fs.StringVar(&o.service, "service", "services/web", "naming `name` under which workers offer their URL")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: appserver -role manager|worker [flags]

One node of an application server cluster: a worker serves a counter and a
cart in replicated sessions, a manager serves the console at /console/.
Every flag may also be set by the environment variable in brackets; a flag
on the command line wins.

`)
		fs.PrintDefaults()
	}
	if err := nodeflags.Parse(fs, args, getenv); err != nil {
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
	errs = append(errs, o.Cluster.Check(getenv)...)
	if o.httpsAddr != "" && (o.cert == "" || o.key == "") {
		bad("-https needs -cert and -key")
	}
	if o.httpsAddr == "" && (o.cert != "" || o.key != "") {
		bad("-cert and -key are for -https, which is not set")
	}
	if o.weight < 0 {
		bad("-weight %d is negative", o.weight)
	}
	errs = nodeflags.CheckAddr(errs, "-http", o.httpAddr)
	errs = nodeflags.CheckAddr(errs, "-https", o.httpsAddr)
	return errors.Join(errs...)
}

// plainHTTP is the plain HTTP address to listen on, "" for none.
func (o *options) plainHTTP() string {
	if o.httpAddr != "" || o.httpsAddr != "" {
		return o.httpAddr
	}
	return net.JoinHostPort(netip.MustParseAddrPort(o.Bind).Addr().String(), defaultHTTPPort)
}

// services are the names this node binds its URL under.
func (o *options) services() []string {
	if o.role == roleManager {
		return []string{consoleService}
	}
	return []string{o.service}
}

// membershipConfig builds the membership section; the key is nil when
// -insecure.
func (o *options) membershipConfig(key []byte, logger *slog.Logger) (membership.Config, error) {
	c, err := o.Membership(o.role, key, logger)
	c.Group, c.Weight = o.group, o.weight
	return c, err
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
