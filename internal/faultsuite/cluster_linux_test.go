package faultsuite

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// cluster is n faultnode processes, one per namespace of a testNet.
type cluster struct {
	t      *testing.T
	net    *testNet
	bin    string
	key    string // path of the key file
	logDir string
	debug  bool // nodes log at Debug level (TROUPE_FAULT_LOGS)
	client *http.Client
	nodes  []*proc
}

// proc is one node: its name and address are fixed, its process changes
// with every restart.
type proc struct {
	i    int
	name string
	id   string // replication.NodeID(name), as session routes name it
	log  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	stopped bool          // SIGSTOPped
}

// buildFaultnode builds the node program once per test, with the race
// detector when this test binary has it.
func buildFaultnode(t *testing.T, dir string) string {
	bin := filepath.Join(dir, "faultnode")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./faultnode")
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build faultnode: %v\n%s", err, out)
	}
	return bin
}

// startCluster starts n nodes and waits until each sees all the others.
func startCluster(t *testing.T, n int) *cluster {
	dir := t.TempDir()
	c := &cluster{
		t:      t,
		net:    newTestNet(t, n),
		bin:    buildFaultnode(t, dir),
		key:    filepath.Join(dir, "cluster.key"),
		logDir: dir,
		// No proxy, no keep-alive surprises: every request has its own
		// deadline through its context.
		client: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}},
	}
	if err := os.WriteFile(c.key, []byte(base64.StdEncoding.EncodeToString(membership.GenerateKey())), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &proc{i: i, name: name, id: replication.NodeID(name), log: filepath.Join(dir, name+".log")})
	}
	// TROUPE_FAULT_LOGS=dir keeps every node's log, at Debug level, in
	// dir after the run: a violation's session appears there by the hash
	// the nodes log for its key.
	if keep := os.Getenv("TROUPE_FAULT_LOGS"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		c.debug = true
		for _, p := range c.nodes {
			p.log = filepath.Join(keep, p.name+".log")
		}
	}
	// Registered after the namespaces' cleanup, so it runs before it:
	// processes go first, then their namespaces.
	t.Cleanup(c.stopAll)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(40)
		}
	})
	for i := range n {
		c.start(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.waitConverged(ctx); err != nil {
		t.Fatalf("cluster did not form: %v", err)
	}
	return c
}

// start starts node i's process (again, after a kill).
func (c *cluster) start(i int) {
	p := c.nodes[i]
	var join []string
	for j := range c.nodes {
		join = append(join, nodeIP(j)+":7946")
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", c.net.ns[i], c.bin,
		"-cluster", "faultsuite", "-name", p.name,
		"-bind", nodeIP(i)+":7946", "-http", nodeIP(i)+":8080",
		"-join", strings.Join(join, ","), "-key-file", c.key, fmt.Sprintf("-debug=%v", c.debug))
	cmd.Stdout, cmd.Stderr = logf, logf
	// ip netns exec execs the node in place, so the pid is the node's;
	// the node dies with the test process even if cleanup never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logf, "==== %s start\n", time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("starting %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // a killed node exits with an error: expected
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.stopped = cmd, done, false
	p.mu.Unlock()
}

// signal sends sig to node i's process, if it runs.
func (c *cluster) signal(i int, sig syscall.Signal) {
	p := c.nodes[i]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig) // fails only if it has exited already
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
}

// kill kills node i with SIGKILL and waits for it to be gone.
func (c *cluster) kill(i int) {
	p := c.nodes[i]
	c.signal(i, syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.cmd = nil
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

// stopAll stops every node: SIGTERM (they Leave), then SIGKILL for any
// that is still there after a while.
func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	for _, p := range c.nodes {
		p.mu.Lock()
		cmd, done := p.cmd, p.done
		p.cmd = nil
		p.mu.Unlock()
		if cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				c.t.Errorf("%s did not leave within 20s of SIGTERM; killing it", p.name)
				_ = cmd.Process.Kill()
				<-done
			}
		}()
	}
	wg.Wait()
	c.client.CloseIdleConnections()
}

func (c *cluster) dumpLogs(lines int) {
	for _, p := range c.nodes {
		b, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		c.t.Logf("---- last %d lines of %s ----\n%s", lines, p.name, strings.Join(all[max(0, len(all)-lines):], "\n"))
	}
}

// index returns the node index of a route's node id, or -1.
func (c *cluster) index(nodeID string) int {
	return slices.IndexFunc(c.nodes, func(p *proc) bool { return p.id == nodeID })
}

// call makes one request to node i and decodes a JSON answer into out
// (when the status is 200). It returns the status, or an error when no
// answer came.
func (c *cluster) call(ctx context.Context, i int, method, path string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+nodeIP(i)+":8080"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s %s on %s: %d %s", method, path, c.nodes[i].name, resp.StatusCode, bytes.TrimSpace(body))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s on %s: %v", method, path, c.nodes[i].name, err)
		}
	}
	return resp.StatusCode, nil
}

// callTimeout is call with its own deadline.
func (c *cluster) callTimeout(d time.Duration, i int, method, path string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.call(ctx, i, method, path, out)
}

// poll calls cond every interval until it returns nil or ctx ends, and
// returns cond's last error then.
func poll(ctx context.Context, interval time.Duration, cond func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// waitConverged waits until every node is ready and sees every node alive.
func (c *cluster) waitConverged(ctx context.Context) error {
	var want []string
	for _, p := range c.nodes {
		want = append(want, p.name)
	}
	return poll(ctx, 100*time.Millisecond, func() error {
		for i := range c.nodes {
			if _, err := c.callTimeout(time.Second, i, "GET", "/ready", nil); err != nil {
				return err
			}
			var m struct{ Members []string }
			if _, err := c.callTimeout(time.Second, i, "GET", "/members", &m); err != nil {
				return err
			}
			slices.Sort(m.Members)
			if !slices.Equal(m.Members, want) {
				return fmt.Errorf("%s sees %v", c.nodes[i].name, m.Members)
			}
		}
		return nil
	})
}

// debugInfo is a node's /debug answer.
type debugInfo struct {
	PID        int    `json:"pid"`
	Goroutines int    `json:"goroutines"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	// Naming is the tree's counters, for the report of trees that stayed
	// apart.
	Naming map[string]any `json:"naming"`
}

// quietDebug samples node i's goroutines and heap a few times, a tenth
// of a second apart, and keeps the fewest goroutines: a round ends with
// requests and retries still under way, which are not growth.
func (c *cluster) quietDebug(i int) (debugInfo, bool) {
	var best debugInfo
	ok := false
	for k := range 5 {
		if k > 0 {
			time.Sleep(100 * time.Millisecond) // spacing between samples of a measure, not a wait for a condition
		}
		var d debugInfo
		if _, err := c.callTimeout(10*time.Second, i, "GET", "/debug", &d); err != nil {
			continue
		}
		if !ok || d.Goroutines < best.Goroutines {
			best, ok = d, true
		}
	}
	return best, ok
}

// goroutines returns node i's goroutines grouped by stack, the groups
// of more than one first, for the report of a node whose count grew.
func (c *cluster) goroutines(i int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+nodeIP(i)+":8080/debug/goroutines", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err.Error()
	}
	// Groups begin "<count> @ <pcs>"; the biggest first.
	count := func(g string) int {
		n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(g, " @", 2)[0]))
		return n
	}
	total, rest, _ := strings.Cut(string(body), "\n") // "goroutine profile: total N"
	groups := strings.Split(rest, "\n\n")
	slices.SortStableFunc(groups, func(a, b string) int { return count(b) - count(a) })
	return total + "\n" + strings.Join(groups[:min(len(groups), 12)], "\n\n")
}
