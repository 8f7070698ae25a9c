// Command jmsqueue is a message queue run as a singleton service, as a
// WebLogic cluster runs a JMS server: every node accepts requests for the
// queue, exactly one node holds it, and when that node fails another takes
// it over.
//
// One process is one node. Start a few on one machine:
//
//	go run ./examples/jmsqueue -name n1 -bind 127.0.0.2:7946 -http 127.0.0.2:8080
//	go run ./examples/jmsqueue -name n2 -bind 127.0.0.3:7946 -http 127.0.0.3:8080 -join 127.0.0.2:7946
//	go run ./examples/jmsqueue -name n3 -bind 127.0.0.4:7946 -http 127.0.0.4:8080 -join 127.0.0.2:7946
//
// and use the queue through any of them:
//
//	curl -d 'order 1' http://127.0.0.3:8080/queue/orders   # enqueue: 202 Accepted
//	curl -i http://127.0.0.4:8080/queue/orders             # dequeue: 200 and the message, or 204 when empty
//	curl http://127.0.0.2:8080/queue/orders/depth          # messages waiting: 200 and a number
//
// Every answer from the queue names the node that holds it (Queue-Node)
// and the singleton's fencing token there (Queue-Token).
//
// # How it works
//
// Every node registers the singleton "jms/orders" with
// Pins().RunSingleton; the cluster runs its function on one of them at a
// time. Every node's HTTP handler is wrapped in Pins().Handler, which serves
// a request locally on the node holding the queue and forwards it there
// from any other node. While the queue has no holder (its last one failed
// and the cluster has not yet noticed, about 5 s with
// membership.ProfileLocal, or the next one is starting), requests get 503
// Service Unavailable: clients retry.
//
// # What this example does not do
//
// The messages live in the holder's memory, so a crash of the holder loses
// the messages waiting in the queue; a graceful stop (SIGINT, SIGTERM)
// hands the singleton over but not the messages either. A real JMS server
// keeps them in a store that survives its node, a database or a
// replicated log, and fences its writes with the singleton's token: the
// store refuses a write carrying a token lower than one it has seen, so
// that a holder that was cut off and does not yet know it has lost the
// queue cannot write after its successor started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clusterkey"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication/pins"
)

const (
	// singleton is the queue's singleton service name.
	singleton = "jms/orders"
	// maxMessage bounds one message, in bytes.
	maxMessage = 64 << 10
)

func main() {
	var (
		name   = flag.String("name", "", "node name, unique in the cluster (required)")
		bind   = flag.String("bind", "127.0.0.1:0", "membership address, ip:port (port 0: any free port)")
		join   = flag.String("join", "", "membership address of a node already in the cluster")
		httpAt = flag.String("http", "127.0.0.1:0", "HTTP address, ip:port (port 0: any free port)")
		keyAt  = flag.String("key-file", "", "file holding the cluster key in base64 (default: $TROUPE_CLUSTER_KEY); make one with: head -c 32 /dev/urandom | base64")
	)
	flag.Parse()
	if *name == "" {
		flag.Usage()
		os.Exit(2)
	}
	key, err := clusterkey.Load(*keyAt)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *name, *bind, *join, *httpAt, key); err != nil {
		log.Fatal(err)
	}
}

// run runs one node until ctx ends, then leaves the cluster. Once the node
// serves, it prints one line to stdout:
//
//	jmsqueue: node <name> cluster <ip:port> http <ip:port>
func run(ctx context.Context, name, bind, join, httpAt string, key []byte) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)) // Troupe's logs name the node already

	// The HTTP address goes into the node's member tags, so listen first
	// to learn the port.
	ln, err := net.Listen("tcp", httpAt)
	if err != nil {
		return err
	}
	defer ln.Close()

	cfg := troupe.Config{
		Membership: membership.Config{
			ClusterName: "jmsqueue",
			NodeName:    name,
			BindAddr:    bind,
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{key},
		},
		HTTPAddr: ln.Addr().String(),
		Logger:   logger,
	}
	if join != "" {
		cfg.Membership.WellKnown = []string{join}
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := troupe.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer node.Shutdown()

	q := &queue{node: name, log: logger.With("node", name)}
	// Registered for the node's lifetime (not ctx's): Leave then hands the
	// queue over to another node at once.
	if _, err := node.Pins().RunSingleton(context.WithoutCancel(ctx), singleton, q.run); err != nil {
		return err
	}

	// Requests for the queue, on any node, go to the node holding it.
	// Requests are routed by the singleton's pin key to the node running it.
	pinKey := pins.SingletonKey(singleton)
	routed := node.Pins().Handler(func(*http.Request) string { return pinKey }, q.handler())
	mux := http.NewServeMux()
	mux.Handle("/queue/orders", routed)
	mux.Handle("/queue/orders/", routed)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	fmt.Printf("jmsqueue: node %s cluster %s http %s\n", name, node.Cluster().Addr(), ln.Addr())

	select {
	case err := <-serveErr:
		return err // the deferred node.Shutdown stops the node as a crash would
	case <-ctx.Done():
	}
	// Hand the queue over and leave, then stop serving.
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = node.Leave(stopCtx)
	if e := srv.Shutdown(stopCtx); e != nil {
		err = errors.Join(err, e)
	}
	<-serveErr // http.ErrServerClosed
	return err
}

// queue is the message queue. It is open on the node that holds the
// singleton; on the others it answers 503 (Pins.Handler sends it nothing
// there, except in the moment when the singleton moves).
type queue struct {
	node string
	log  *slog.Logger

	mu struct {
		sync.Mutex
		open  bool
		token uint64
		msgs  [][]byte
	}
}

// run is the singleton's function: the queue is open on this node from
// the moment it starts until ctx ends. It starts empty: see the package
// documentation.
func (q *queue) run(ctx context.Context, token uint64) {
	q.mu.Lock()
	q.mu.open, q.mu.token, q.mu.msgs = true, token, nil
	q.mu.Unlock()
	q.log.Info("queue open", "token", token)

	<-ctx.Done()

	q.mu.Lock()
	q.mu.open, q.mu.msgs = false, nil
	q.mu.Unlock()
	q.log.Info("queue closed")
}

// handler serves the queue on the node that holds it.
func (q *queue) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /queue/orders", func(w http.ResponseWriter, r *http.Request) {
		msg, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessage))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q.serve(w, func() {
			q.mu.msgs = append(q.mu.msgs, msg)
			w.WriteHeader(http.StatusAccepted)
		})
	})
	mux.HandleFunc("GET /queue/orders", func(w http.ResponseWriter, r *http.Request) {
		q.serve(w, func() {
			if len(q.mu.msgs) == 0 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			var msg []byte
			msg, q.mu.msgs = q.mu.msgs[0], q.mu.msgs[1:]
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(msg)
		})
	})
	mux.HandleFunc("GET /queue/orders/depth", func(w http.ResponseWriter, r *http.Request) {
		q.serve(w, func() { fmt.Fprintln(w, len(q.mu.msgs)) })
	})
	return mux
}

// serve runs fn under the queue's lock if the queue is open here, with
// the headers naming this node and its token set; otherwise it answers
// 503.
func (q *queue) serve(w http.ResponseWriter, fn func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.mu.open {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "queue not open on "+q.node+": the singleton is moving", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Queue-Node", q.node)
	w.Header().Set("Queue-Token", strconv.FormatUint(q.mu.token, 10))
	fn()
}
