// Command proxy is the load balancer in front of an application server
// cluster (examples/appserver), as the WSO2 load balancer or WebLogic's
// proxy plug-in is: it joins the cluster as a client (it holds no
// sessions and counts toward no quorum), and sends each request to a
// worker that offers the service in the naming tree, a request with a
// session to the worker that holds it (package proxy).
//
// With the manager and two workers of examples/appserver running on
// 127.0.0.2-4, start it on 127.0.0.5:
//
//	./proxy -name proxy -key-file cluster.key -bind 127.0.0.5:7946 -wka 127.0.0.2:7946 -http 127.0.0.5:8080
//
//	curl -c jar -b jar -X POST http://127.0.0.5:8080/counter   # one worker serves the session...
//	curl -c jar -b jar -X POST http://127.0.0.5:8080/counter   # ...every time, until it dies
//	open http://127.0.0.5:8080/console/                        # the manager's console, through the proxy
//
// Kill the worker that holds the session (its name is in X-Troupe-Node)
// with kill -9: the next request goes to the session's secondary, which
// serves it with the session intact. HTTPS: -https with -cert and -key;
// workers that serve https are trusted through -tls-ca (or the system
// roots). SIGTERM or SIGINT stops taking new connections, lets the
// requests under way finish, and leaves the cluster.
//
// Every flag can be set by an environment variable (proxy -h lists
// them). The proxy's own endpoints are under /_proxy/ (or on -admin when
// given): healthz, readyz (200 once it sees a worker), stats (JSON) and
// metrics (Prometheus).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/nodeflags"
	"github.com/troupe-go/troupe/metrics"
	"github.com/troupe-go/troupe/proxy"
)

// options are the command line.
type options struct {
	cluster        nodeflags.Cluster
	httpAddr       string
	httpsAddr      string
	cert, key      string
	admin          string
	service        string
	consolePrefix  string
	consoleService string
	dialTimeout    time.Duration
	headerTimeout  time.Duration
	downFor        time.Duration
	maxBody        int64
	retryUnsafe    bool
	trustForwarded bool
}

func parseOptions(args []string, getenv func(string) string, usage io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(usage)
	o.cluster.Register(fs, "proxy")
	fs.StringVar(&o.httpAddr, "http", "", "plain HTTP `ip:port` to serve (default: the -bind IP with port 8080 unless -https is given)")
	fs.StringVar(&o.httpsAddr, "https", "", "HTTPS `ip:port` to serve, with -cert and -key")
	fs.StringVar(&o.cert, "cert", "", "PEM `file` of the HTTPS certificate (chain)")
	fs.StringVar(&o.key, "key", "", "PEM `file` of the HTTPS private key")
	fs.StringVar(&o.admin, "admin", "", "`ip:port` for the proxy's own endpoints (default: under /_proxy/ on -http and -https)")
	fs.StringVar(&o.service, "service", proxy.DefaultService, "naming `name` the workers offer their URL under")
	fs.StringVar(&o.consolePrefix, "console-prefix", "/console", "path `prefix` passed to the manager's console (\"\": none)")
	fs.StringVar(&o.consoleService, "console-service", "troupe/console", "naming `name` the manager offers its console under")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", proxy.DefaultDialTimeout, "bound on connecting to a worker")
	fs.DurationVar(&o.headerTimeout, "header-timeout", proxy.DefaultHeaderTimeout, "bound on a worker's response headers; a worker that exceeds it is marked down")
	fs.DurationVar(&o.downFor, "down-for", proxy.DefaultDownFor, "how long a worker that refused or timed out gets no request")
	fs.Int64Var(&o.maxBody, "max-body-buffer", proxy.DefaultMaxBodyBuffer, "request body `bytes` kept to send a request again to another worker")
	fs.BoolVar(&o.retryUnsafe, "retry-unsafe", false, "send a POST without Idempotency-Key to another worker after the first failed mid-request")
	fs.BoolVar(&o.trustForwarded, "trust-forwarded", false, "keep the clients' X-Forwarded-For and Forwarded (behind another proxy)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: proxy [flags]

The load balancer of an application server cluster: it joins the cluster
as a client and sends each request to a worker, a request with a session
to the worker that holds it. Every flag may also be set by the environment
variable in brackets; a flag on the command line wins.

`)
		fs.PrintDefaults()
	}
	if err := nodeflags.Parse(fs, args, getenv); err != nil {
		return o, err
	}
	errs := o.cluster.Check(getenv)
	for _, f := range []struct{ name, v string }{{"-http", o.httpAddr}, {"-https", o.httpsAddr}, {"-admin", o.admin}} {
		errs = nodeflags.CheckAddr(errs, f.name, f.v)
	}
	if o.httpsAddr != "" && (o.cert == "" || o.key == "") {
		errs = append(errs, errors.New("-https needs -cert and -key"))
	}
	if o.httpsAddr == "" && (o.cert != "" || o.key != "") {
		errs = append(errs, errors.New("-cert and -key are for -https, which is not set"))
	}
	return o, errors.Join(errs...)
}

func main() {
	var usage bytes.Buffer
	o, err := parseOptions(os.Args[1:], os.Getenv, &usage)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Stdout.WriteString(usage.String())
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "proxy: %v\n(proxy -h lists the flags)\n", err)
		os.Exit(2)
	}
	logger := o.cluster.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, o, logger); err != nil {
		logger.Error("proxy stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then drains and leaves. Once it serves it
// prints one line to stdout:
//
//	proxy: node <name> gossip <ip:port> http <ip:port> https <ip:port>
func run(ctx context.Context, stopSignals func(), o options, logger *slog.Logger) error {
	key, err := o.cluster.Key()
	if err != nil {
		return err
	}
	mc, err := o.cluster.Membership("proxy", key, logger)
	if err != nil {
		return err
	}
	roots, err := o.cluster.PeerRoots()
	if err != nil {
		return err
	}
	lns, err := listen(o)
	if err != nil {
		return err
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()

	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	node, err := troupe.Start(startCtx, troupe.Config{Client: true, Membership: mc, Logger: logger})
	cancel()
	if err != nil {
		return err
	}
	defer node.Shutdown()

	cfg := proxy.Config{
		Names:          node.Names(),
		Service:        o.service,
		DialTimeout:    o.dialTimeout,
		HeaderTimeout:  o.headerTimeout,
		DownFor:        o.downFor,
		MaxBodyBuffer:  o.maxBody,
		RetryUnsafe:    o.retryUnsafe,
		TrustForwarded: o.trustForwarded,
		TLS:            &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Logger:         logger,
	}
	if o.consolePrefix != "" {
		cfg.Routes = []proxy.Route{{Prefix: o.consolePrefix, Service: o.consoleService}}
	}
	h, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	defer h.Close()

	var leaving atomic.Bool
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(node), metrics.NewProxy(h))
	admin := http.NewServeMux()
	admin.HandleFunc("/_proxy/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	admin.HandleFunc("/_proxy/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := node.Names().Candidates(o.service); err != nil || leaving.Load() {
			http.Error(w, "not ready: no worker offers "+o.service, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	admin.HandleFunc("/_proxy/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.Stats())
	})
	admin.Handle("/_proxy/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	front := http.Handler(h)
	if o.admin == "" {
		mux := http.NewServeMux()
		mux.Handle("/", h)
		mux.Handle("/_proxy/", admin)
		front = mux
	}
	var servers []*http.Server
	serveErr := make(chan error, len(lns))
	for name, ln := range lns {
		handler := front
		if name == "admin" {
			handler = admin
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		servers = append(servers, srv)
		go func() { serveErr <- srv.Serve(ln) }()
	}
	fmt.Printf("proxy: node %s gossip %s http %s https %s\n", node.Name(), node.Cluster().Addr(), addrOf(lns["http"]), addrOf(lns["https"]))

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	stopSignals()
	logger.Info("draining")
	leaving.Store(true)
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(stopCtx))
	}
	errs = append(errs, node.Leave(stopCtx))
	return errors.Join(errs...)
}

// listen opens the listeners, by name: http, https, admin.
func listen(o options) (map[string]net.Listener, error) {
	lns := map[string]net.Listener{}
	fail := func(err error) (map[string]net.Listener, error) {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	plain := o.httpAddr
	if plain == "" && o.httpsAddr == "" {
		plain = net.JoinHostPort(o.cluster.PublicIP().String(), "8080")
	}
	for name, addr := range map[string]string{"http": plain, "https": o.httpsAddr, "admin": o.admin} {
		if addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("-%s: %w", name, err))
		}
		lns[name] = ln
	}
	if ln := lns["https"]; ln != nil {
		cert, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return fail(fmt.Errorf("-cert, -key: %w", err))
		}
		lns["https"] = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	return lns, nil
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return "-"
	}
	return ln.Addr().String()
}
