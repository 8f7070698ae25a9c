package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupe-go/troupe/internal/proctest"
	"github.com/troupe-go/troupe/membership"
)

// TestJMSQueueSurvivesOwnerKill runs the example as three real processes,
// kills the one holding the queue with SIGKILL, and checks that the queue
// keeps taking and giving messages through the two others.
func TestMain(m *testing.M) {
	code := m.Run()
	proctest.Cleanup()
	os.Exit(code)
}

func TestJMSQueueSurvivesOwnerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs it as three processes")
	}
	bin := proctest.Build(t, ".")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	n1 := start(ctx, t, bin, "n1", "127.0.0.2", "")
	n2 := start(ctx, t, bin, "n2", "127.0.0.3", n1.cluster)
	n3 := start(ctx, t, bin, "n3", "127.0.0.4", n1.cluster)
	nodes := []*node{n1, n2, n3}
	for _, n := range nodes {
		proctest.WaitFor(ctx, t, "the queue is served through "+n.name, func() bool {
			r, err := n.do(http.MethodGet, "/queue/orders/depth", "")
			return err == nil && r.status == http.StatusOK
		})
	}

	for i, n := range nodes {
		msg := fmt.Sprintf("order-%d", i+1)
		if r := n.mustDo(t, http.MethodPost, "/queue/orders", msg); r.status != http.StatusAccepted {
			t.Fatalf("POST %s through %s: %s", msg, n.name, r)
		}
	}
	first := n2.mustDo(t, http.MethodGet, "/queue/orders", "")
	if first.status != http.StatusOK || first.body != "order-1" {
		t.Fatalf("GET through n2: %s, want 200 order-1", first)
	}
	var owner *node
	for _, n := range nodes {
		if n.name == first.queueNode {
			owner = n
		}
	}
	if owner == nil {
		t.Fatalf("GET through n2: Queue-Node %q names no node", first.queueNode)
	}
	t.Logf("the queue is on %s (token %d); messages sent through every node", owner.name, first.token)

	killed := time.Now()
	owner.Kill(t)
	var survivors []*node
	for _, n := range nodes {
		if n != owner {
			survivors = append(survivors, n)
		}
	}

	// Until the others declare the owner failed, requests for the queue
	// fail (503): its owner is unreachable, then the queue has none, then
	// its new owner is starting it.
	moved, cancelMoved := context.WithTimeout(ctx, time.Minute)
	defer cancelMoved()
	var next response
	for _, n := range survivors {
		proctest.WaitFor(moved, t, "the queue is served again through "+n.name, func() bool {
			r, err := n.do(http.MethodGet, "/queue/orders/depth", "")
			if err != nil || r.status != http.StatusOK {
				return false
			}
			next = r
			return true
		})
	}
	if next.queueNode == owner.name || next.token <= first.token {
		t.Fatalf("after the kill: queue on %s with token %d; was on %s with token %d", next.queueNode, next.token, owner.name, first.token)
	}
	t.Logf("the queue moved to %s (token %d) %.1fs after the kill", next.queueNode, next.token, time.Since(killed).Seconds())
	if next.body != "0\n" {
		t.Fatalf("depth on the new owner: %q, want 0 (messages live in the old owner's memory)", next.body)
	}

	// Send through one survivor, receive through the other, both ways.
	a, b := survivors[0], survivors[1]
	for _, step := range []struct {
		from, to *node
		msg      string
	}{{a, b, "order-4"}, {b, a, "order-5"}} {
		if r := step.from.mustDo(t, http.MethodPost, "/queue/orders", step.msg); r.status != http.StatusAccepted {
			t.Fatalf("POST %s through %s: %s", step.msg, step.from.name, r)
		}
		r := step.to.mustDo(t, http.MethodGet, "/queue/orders", "")
		if r.status != http.StatusOK || r.body != step.msg || r.queueNode != next.queueNode {
			t.Fatalf("GET through %s: %s, want 200 %s from %s", step.to.name, r, step.msg, next.queueNode)
		}
	}
	if r := a.mustDo(t, http.MethodGet, "/queue/orders", ""); r.status != http.StatusNoContent {
		t.Fatalf("GET from the empty queue through %s: %s, want 204", a.name, r)
	}
}

// node is one running process of the example.
type node struct {
	*proctest.Proc
	name          string
	cluster, http string // addresses it reported
	client        *http.Client
}

// testKey is the cluster key of the test's nodes, in base64.
var testKey = base64.StdEncoding.EncodeToString(membership.GenerateKey())

// start runs one node on ip with free ports, joining the cluster at join
// (none for the first node), and waits until it reports its addresses.
// Cleanup kills it, and logs its stderr if the test failed.
func start(ctx context.Context, t *testing.T, bin, name, ip, join string) *node {
	t.Helper()
	args := []string{"-name", name, "-bind", ip + ":0", "-http", ip + ":0"}
	if join != "" {
		args = append(args, "-join", join)
	}
	n := &node{name: name, Proc: proctest.Start(t, name, bin, args, append(os.Environ(), "TROUPE_CLUSTER_KEY="+testKey)),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	proctest.WaitFor(ctx, t, name+" reports its addresses", func() bool {
		line, ok := n.FirstLine(t)
		if !ok {
			return false
		}
		var got string
		if _, err := fmt.Sscanf(line, "jmsqueue: node %s cluster %s http %s", &got, &n.cluster, &n.http); err != nil || got != name {
			t.Fatalf("%s: unexpected first line %q (%v)", name, line, err)
		}
		return true
	})
	return n
}

// response is what a request for the queue got.
type response struct {
	status    int
	body      string
	queueNode string // the node holding the queue, from Queue-Node
	token     uint64 // its fencing token, from Queue-Token
}

func (r response) String() string {
	return fmt.Sprintf("%d %q (Queue-Node %q, Queue-Token %d)", r.status, r.body, r.queueNode, r.token)
}

// do sends a request to the node's HTTP server.
func (n *node) do(method, path, body string) (response, error) {
	req, err := http.NewRequest(method, "http://"+n.http+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode, body: string(b), queueNode: resp.Header.Get("Queue-Node")}
	if tok := resp.Header.Get("Queue-Token"); tok != "" {
		if r.token, err = strconv.ParseUint(tok, 10, 64); err != nil {
			return response{}, fmt.Errorf("Queue-Token %q: %w", tok, err)
		}
	}
	return r, nil
}

func (n *node) mustDo(t *testing.T, method, path, body string) response {
	t.Helper()
	r, err := n.do(method, path, body)
	if err != nil {
		t.Fatalf("%s %s through %s: %v", method, path, n.name, err)
	}
	return r
}
