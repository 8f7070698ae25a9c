package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/proxy"
)

// A worker binds its URL under the service name; a client node runs the
// proxy in front of it. (Both in one process here; in production each is
// its own process, see examples/proxy.)
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := membership.GenerateKey()
	member := func(name string) membership.Config {
		return membership.Config{ClusterName: "example-proxy", NodeName: name, BindAddr: "127.0.0.1:0",
			Profile: membership.ProfileLocal, SecretKeys: [][]byte{key}}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	worker, err := troupe.Start(ctx, troupe.Config{
		Membership: member("worker-1"),
		HTTPAddr:   ln.Addr().String(),
		Services:   []string{proxy.DefaultService}, // binds http://<HTTPAddr>
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer worker.Shutdown()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s served %s", worker.Name(), r.URL.Path)
	})}
	go func() { _ = app.Serve(ln) }()
	defer app.Close()

	cfg := member("proxy")
	cfg.WellKnown = []string{worker.Cluster().Addr()}
	client, err := troupe.Start(ctx, troupe.Config{Client: true, Membership: cfg})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Shutdown()
	h, err := proxy.New(proxy.Config{Names: client.Names()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	front := httptest.NewServer(h)
	defer front.Close()

	// The offer reaches the client's tree by gossip; until then the
	// proxy answers 503.
	for ctx.Err() == nil {
		resp, err := http.Get(front.URL + "/hello")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			fmt.Println(string(body))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Output: worker-1 served /hello
}
