// Command appserver is one node of an application server cluster, in the
// manner of a WSO2 or WebLogic cluster: a manager that serves the
// management console, and workers that serve the application with
// replicated HTTP sessions, so that a client's session survives the
// worker that served it.
//
// One process is one node. Make a cluster key once, then start a manager
// and two workers on one machine (127.0.0.2-4 are loopback addresses that
// Linux answers without setup; on real hosts use their real addresses):
//
//	head -c 32 /dev/urandom | base64 > cluster.key
//	go build -o appserver ./examples/appserver
//	./appserver -role manager -name manager -key-file cluster.key -bind 127.0.0.2:7946 -http 127.0.0.2:8080 -wka 127.0.0.2:7946
//	./appserver -role worker  -name worker-1 -key-file cluster.key -bind 127.0.0.3:7946 -http 127.0.0.3:8080 -wka 127.0.0.2:7946
//	./appserver -role worker  -name worker-2 -key-file cluster.key -bind 127.0.0.4:7946 -http 127.0.0.4:8080 -wka 127.0.0.2:7946
//
// Each node gossips on its -bind port (TCP and UDP) and carries sessions
// on the next port (-transport, TCP). Open the console at
// http://127.0.0.2:8080/console/ (the same as JSON at /console/api/state),
// and use the application through either worker with one cookie jar:
//
//	curl -c jar -b jar -X POST http://127.0.0.3:8080/counter   # {"value":1,"node":"worker-1","session":"..."}
//	curl -c jar -b jar -d item=book -d qty=2 http://127.0.0.3:8080/cart
//	sed -i s/127.0.0.3/127.0.0.4/ jar                         # the client moves to the other worker...
//	curl -c jar -b jar http://127.0.0.4:8080/counter           # ...which takes the session over: value 1
//
// Kill worker-1 with kill -9 at any point: its sessions live on their
// secondaries, and worker-2 serves them. Stop a node with SIGTERM or
// SIGINT: it leaves gracefully (its service offer goes first, then its
// sessions move to their secondaries) and exits 0.
//
// Every flag can be set by an environment variable (-wka by TROUPE_WKA,
// -key-file by TROUPE_KEY_FILE; the key itself may be in
// TROUPE_CLUSTER_KEY), which suits containers; a flag on the command line
// wins. appserver -h lists them. Discovery by multicast instead of
// well-known members is -multicast default (or a group:port).
//
// # Endpoints
//
// Every node: GET /healthz (200 while the process runs), GET /readyz (200
// once the node has joined and bound its service, 503 before and while it
// leaves), GET /_troupe/status (this node and its session counts, as
// JSON), GET /metrics.
//
// Workers, through the session middleware: GET and POST /counter; GET,
// POST (item, qty) and DELETE /cart; POST /login (user) and POST /logout.
// A POST to /counter (or /cart) with an Idempotency-Key header equal to
// the key of the session's last change of its counter (or cart) is
// answered without being applied again, so that a client or a proxy can
// retry it on another worker after a crash.
// Every response names the node that served it in X-Troupe-Node.
//
// The manager: the console at /console/ (members, the naming tree,
// sessions per node, pins and singletons, refreshed every 2 s), and the
// same as JSON at /console/api/state.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/troupe-go/troupe"
)

// Timeouts of the node's lifecycle.
const (
	// startTimeout bounds troupe.Start: finding a well-known member (the
	// membership.DefaultJoinTimeout within it) and the first binds.
	startTimeout = time.Minute
	// leaveTimeout bounds a graceful stop: Leave and the HTTP shutdown.
	leaveTimeout = 10 * time.Second
)

func main() {
	var usage bytes.Buffer
	o, err := parseOptions(os.Args[1:], os.Getenv, &usage)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Stdout.WriteString(usage.String())
		os.Exit(0)
	case err != nil:
		os.Stderr.WriteString(usage.String())
		fmt.Fprintf(os.Stderr, "appserver: %v\n(appserver -h lists the flags)\n", err)
		os.Exit(2)
	}
	logger := o.Logger(os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, o, logger); err != nil {
		logger.Error("appserver stopped", "err", err)
		os.Exit(1)
	}
}

// run runs one node until ctx ends (a signal), then leaves the cluster.
// stopSignals is called then, so that a second signal kills the process
// at once. Once the node serves, it prints one line to stdout:
//
//	appserver: node <name> role <role> gossip <ip:port> transport <ip:port> url <url>
func run(ctx context.Context, stopSignals func(), o options, logger *slog.Logger) error {
	key, err := o.Key()
	if err != nil {
		return err
	}

	// The HTTP address goes into the node's member tags and its service
	// URL, so listen first to learn the ports.
	var plain, secure net.Listener
	if addr := o.plainHTTP(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("-http: %w", err)
		}
		defer ln.Close()
		plain = ln
	}
	if o.httpsAddr != "" {
		cert, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return fmt.Errorf("-cert, -key: %w", err)
		}
		ln, err := net.Listen("tcp", o.httpsAddr)
		if err != nil {
			return fmt.Errorf("-https: %w", err)
		}
		defer ln.Close()
		secure = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	published, https := "", secure != nil
	if https {
		published = o.PublishAddr(secure.Addr())
	} else {
		published = o.PublishAddr(plain.Addr())
	}
	cfg, err := o.troupeConfig(key, published, https, logger)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	// Serve at once: /healthz answers while the node starts, /readyz and
	// the application answer 503 until it has.
	srv := newServer(o, cfg.Membership.NodeName, logger)
	var servers []*http.Server
	serveErr := make(chan error, 2)
	for _, ln := range []net.Listener{plain, secure} {
		if ln == nil {
			continue
		}
		hs := &http.Server{
			Handler:           srv,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		servers = append(servers, hs)
		go func() { serveErr <- hs.Serve(ln) }()
	}
	shutdownHTTP := func(ctx context.Context) error {
		var errs []error
		for _, hs := range servers {
			errs = append(errs, hs.Shutdown(ctx))
		}
		return errors.Join(errs...)
	}

	// The console's goroutines end when the node shuts down: wait for
	// them after the deferred node.Shutdown.
	var wg sync.WaitGroup
	defer wg.Wait()
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	node, err := troupe.Start(startCtx, cfg)
	cancel()
	if err != nil {
		_ = shutdownHTTP(context.Background())
		return err
	}
	defer node.Shutdown()
	if err := srv.started(node, &wg); err != nil {
		_ = shutdownHTTP(context.Background())
		return err
	}

	fmt.Printf("appserver: node %s role %s gossip %s transport %s url %s\n",
		node.Name(), o.role, node.Cluster().Addr(), node.Cluster().TransportAddr(), node.URL())

	select {
	case err := <-serveErr:
		return err // the deferred node.Shutdown stops the node as a crash would
	case <-ctx.Done():
	}
	stopSignals() // a second signal kills at once
	logger.Info("leaving the cluster")
	srv.leaving()
	stopCtx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	err = node.Leave(stopCtx)
	if e := shutdownHTTP(stopCtx); e != nil {
		err = errors.Join(err, e)
	}
	if err == nil {
		logger.Info("left the cluster")
	}
	return err
}
