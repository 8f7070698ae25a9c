// Command load is the load generator of the HTTP benchmark
// (bench/http/run.sh). Each of -clients clients has one keep-alive
// connection and, in update mode, one session of its own, whose cookies
// it keeps from the responses: wrk's Lua API has no per-connection
// state (request and response run per thread and a response cannot be
// tied to the connection or request that produced it), so it cannot keep
// one session per client without two connections sharing a session.
//
//	-mode update    POST /counter with the client's cookie: read and
//	                update the session; checks that the counter went up
//	                by one (a lower value is a lost acknowledged update)
//	-mode create    POST /counter without a cookie: every request
//	                creates a session (the response must set a cookie)
//	-mode failover  update, and -kill-after into the run kill -9 of
//	                -kill-pid, the node named -kill-node; reports the gap
//	                from the kill to the first response for a session that
//	                node served, from another node, and the failures
//	-mode wait      GET /counter until responses came from -nodes
//	                distinct nodes (X-Bench-Node), or a 200 from every
//	                target if the servers do not name themselves
//
// With several -targets, client i sends everything to target i mod n:
// it sticks to the worker that created its session (its primary). It
// prints one line of key=value pairs.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const nodeHeader = "X-Bench-Node"

type config struct {
	mode      string
	targets   []string
	path      string
	clients   int
	duration  time.Duration
	warmup    time.Duration
	idem      bool
	killPid   int
	killNode  string
	killAfter time.Duration
	nodes     int
	timeout   time.Duration
	cpuPids   []namedPid
}

// namedPid is a process whose CPU time the measured window reports.
type namedPid struct {
	name string
	pid  int
}

func main() {
	var c config
	targets := flag.String("targets", "", "comma-separated base URLs (http://ip:port); client i uses target i mod n")
	flag.StringVar(&c.mode, "mode", "update", "`update|create|failover|wait`")
	flag.StringVar(&c.path, "path", "/counter", "request path")
	flag.IntVar(&c.clients, "clients", 32, "concurrent clients, one connection (and in update mode one session) each")
	flag.DurationVar(&c.duration, "duration", 8*time.Second, "measured time (failover: the time after the kill)")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "time before the measured window; update mode's sessions are made in it")
	flag.BoolVar(&c.idem, "idempotency", false, "send an Idempotency-Key with every POST, so that the proxy may retry it")
	flag.IntVar(&c.killPid, "kill-pid", 0, "failover: process to kill -9")
	flag.StringVar(&c.killNode, "kill-node", "", "failover: name of that node (X-Bench-Node)")
	flag.DurationVar(&c.killAfter, "kill-after", 3*time.Second, "failover: time from the start to the kill")
	flag.IntVar(&c.nodes, "nodes", 2, "wait: distinct nodes to see")
	flag.DurationVar(&c.timeout, "timeout", time.Minute, "wait: give up after")
	cpuPids := flag.String("cpu", "", "`name:pid,...`: report each process's CPU time in the measured window (cpu_name_ms)")
	flag.Parse()
	for _, np := range strings.Split(*cpuPids, ",") {
		if np == "" {
			continue
		}
		name, pid, ok := strings.Cut(np, ":")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil {
			log.Fatalf("-cpu %q: want name:pid", np)
		}
		c.cpuPids = append(c.cpuPids, namedPid{name, n})
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSuffix(strings.TrimSpace(t), "/"); t != "" {
			c.targets = append(c.targets, t)
		}
	}
	if len(c.targets) == 0 || c.clients < 1 {
		log.Fatal("need -targets and -clients >= 1")
	}
	var err error
	switch c.mode {
	case "update", "create":
		err = throughput(c)
	case "failover":
		if c.killPid <= 0 || c.killNode == "" {
			log.Fatal("failover needs -kill-pid and -kill-node")
		}
		err = failover(c)
	case "wait":
		err = wait(c)
	default:
		err = fmt.Errorf("-mode %q: want update, create, failover or wait", c.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// client is one connection and, in update mode, one session.
type client struct {
	id      int
	hc      *http.Client
	target  string
	cfg     *config
	cookies map[string]string // name -> value, from Set-Cookie
	value   int64             // the counter last acknowledged
	unsure  bool              // the last POST failed: it may or may not have counted
	seq     int
	node    string // the node that served the last successful request
}

func newClient(i int, c *config) *client {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	return &client{
		id:      i,
		hc:      &http.Client{Transport: tr, Timeout: 30 * time.Second},
		target:  c.targets[i%len(c.targets)],
		cfg:     c,
		cookies: map[string]string{},
	}
}

// result of one request.
type result struct {
	ok      bool
	status  int
	value   int64
	node    string
	cookie  bool // the response set a cookie
	err     error
	latency time.Duration
}

// do sends one request; withSession sends the client's cookies and keeps
// the ones the response sets.
func (cl *client) do(method string, withSession bool) result {
	req, err := http.NewRequest(method, cl.target+cl.cfg.path, http.NoBody)
	if err != nil {
		return result{err: err}
	}
	if withSession {
		for name, v := range cl.cookies {
			req.AddCookie(&http.Cookie{Name: name, Value: v})
		}
		if cl.cfg.idem && method == http.MethodPost {
			cl.seq++
			req.Header.Set("Idempotency-Key", strconv.Itoa(cl.id)+"-"+strconv.Itoa(cl.seq))
		}
	}
	t0 := time.Now()
	resp, err := cl.hc.Do(req)
	if err != nil {
		return result{err: err, latency: time.Since(t0)}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := result{status: resp.StatusCode, node: resp.Header.Get(nodeHeader), latency: time.Since(t0), err: err}
	for _, ck := range resp.Cookies() {
		r.cookie = true
		if !withSession {
			continue
		}
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(cl.cookies, ck.Name)
		} else {
			cl.cookies[ck.Name] = ck.Value
		}
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		return r
	}
	r.value, r.ok = parseValue(body)
	return r
}

// parseValue reads n from {"value":n...}.
func parseValue(b []byte) (int64, bool) {
	i := bytes.Index(b, []byte(`"value":`))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(`"value":`):]
	j := 0
	for j < len(b) && (b[j] == '-' || (b[j] >= '0' && b[j] <= '9')) {
		j++
	}
	v, err := strconv.ParseInt(string(b[:j]), 10, 64)
	return v, err == nil
}

// update sends one increment and checks the counter: it must be one
// more than the last acknowledged value, or, after a failed POST (which
// may or may not have counted), one or two more. A value at or below the
// last acknowledged one is a lost update; two more after a success is a
// doubly applied one.
func (cl *client) update(cnt *counts) result {
	r := cl.do(http.MethodPost, true)
	if !r.ok {
		cl.unsure = true
		return r
	}
	switch {
	case r.value <= cl.value:
		cnt.lost.Add(1)
	case r.value > cl.value+1 && !cl.unsure:
		cnt.dup.Add(1)
	}
	cl.value, cl.unsure, cl.node = r.value, false, r.node
	return r
}

// counts are what clients add up.
type counts struct {
	ok, fail, lost, dup atomic.Int64
	mu                  sync.Mutex
	lats                []time.Duration
	firstErr            atomic.Pointer[string]
}

func (c *counts) failed(r result) {
	c.fail.Add(1)
	msg := fmt.Sprintf("status %d err %v", r.status, r.err)
	c.firstErr.CompareAndSwap(nil, &msg)
}

func throughput(c config) error {
	clients := make([]*client, c.clients)
	for i := range clients {
		clients[i] = newClient(i, &c)
	}
	var cnt counts
	start := time.Now()
	from, until := start.Add(c.warmup), start.Add(c.warmup+c.duration)
	cpu := make(chan []float64, 1)
	go func() {
		time.Sleep(time.Until(from))
		cpu <- c.cpuNow()
	}()
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Go(func() {
			var lats []time.Duration
			if c.mode == "update" {
				// The session, made in the warm-up.
				for time.Now().Before(from) {
					if r := cl.do(http.MethodPost, true); r.ok && len(cl.cookies) > 0 {
						cl.value, cl.node = r.value, r.node
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			for {
				var r result
				if c.mode == "update" {
					r = cl.update(&cnt)
				} else {
					r = cl.do(http.MethodPost, false)
					r.ok = r.ok && r.cookie
				}
				now := time.Now()
				if now.After(until) {
					break
				}
				if now.Before(from) {
					continue
				}
				if r.ok {
					cnt.ok.Add(1)
					lats = append(lats, r.latency)
				} else {
					cnt.failed(r)
					time.Sleep(time.Millisecond)
				}
			}
			cnt.mu.Lock()
			cnt.lats = append(cnt.lats, lats...)
			cnt.mu.Unlock()
		})
	}
	wg.Wait()
	cpuEnd, cpuStart := c.cpuNow(), <-cpu
	slices.Sort(cnt.lats)
	rate := float64(cnt.ok.Load()) / c.duration.Seconds()
	fmt.Printf("rate=%.0f ok=%d fail=%d lost=%d dup=%d p50_us=%.0f p99_us=%.0f",
		rate, cnt.ok.Load(), cnt.fail.Load(), cnt.lost.Load(), cnt.dup.Load(), micros(pct(cnt.lats, 50)), micros(pct(cnt.lats, 99)))
	fmt.Printf(" cpu_load_ms=%.0f", cpuEnd[0]-cpuStart[0])
	for i, np := range c.cpuPids {
		fmt.Printf(" cpu_%s_ms=%.0f", np.name, cpuEnd[i+1]-cpuStart[i+1])
	}
	fmt.Println()
	if e := cnt.firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "load: first failure:", *e)
	}
	return nil
}

// failover runs the update workload, kills -kill-pid after -kill-after,
// and goes on for -duration.
func failover(c config) error {
	clients := make([]*client, c.clients)
	for i := range clients {
		clients[i] = newClient(i, &c)
	}
	var (
		cnt      counts
		failBef  atomic.Int64
		killed   atomic.Pointer[time.Time]
		mu       sync.Mutex
		affected = map[int]time.Duration{} // client -> gap, -1 until served again
		maxStall time.Duration             // longest request after the kill
	)
	start := time.Now()
	killAt := start.Add(c.killAfter)
	until := killAt.Add(c.duration)
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Go(func() {
			for time.Now().Before(until) {
				if len(cl.cookies) == 0 {
					// No session yet: make one (not counted as an update).
					if r := cl.do(http.MethodPost, true); r.ok {
						cl.value, cl.node = r.value, r.node
					} else {
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				before := cl.node
				sent := time.Now()
				r := cl.update(&cnt)
				k := killed.Load()
				if k == nil || sent.Before(*k) && r.ok && r.node == c.killNode {
					// Served before the kill took effect.
					if !r.ok {
						failBef.Add(1)
					}
					continue
				}
				mu.Lock()
				if r.latency > maxStall {
					maxStall = r.latency
				}
				if _, ok := affected[cl.id]; !ok && before == c.killNode {
					affected[cl.id] = -1
				}
				if r.ok && affected[cl.id] == -1 && r.node != c.killNode {
					affected[cl.id] = time.Since(*k)
				}
				mu.Unlock()
				if r.ok {
					cnt.ok.Add(1)
				} else {
					cnt.failed(r)
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	time.Sleep(time.Until(killAt))
	t0 := time.Now()
	killed.Store(&t0)
	if err := syscall.Kill(c.killPid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", c.killPid, err)
	}
	wg.Wait()
	var gaps []time.Duration
	never := 0
	for _, g := range affected {
		if g < 0 {
			never++
			continue
		}
		gaps = append(gaps, g)
	}
	slices.Sort(gaps)
	first, all := time.Duration(-1), time.Duration(-1)
	if len(gaps) > 0 {
		first = gaps[0]
		if never == 0 {
			all = gaps[len(gaps)-1]
		}
	}
	fmt.Printf("gap_first_ms=%.1f gap_all_ms=%.1f affected=%d never=%d ok_after=%d fail_after=%d fail_before=%d lost=%d dup=%d max_latency_ms=%.1f\n",
		millis(first), millis(all), len(affected), never, cnt.ok.Load(), cnt.fail.Load(), failBef.Load(), cnt.lost.Load(), cnt.dup.Load(), millis(maxStall))
	if e := cnt.firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "load: first failure:", *e)
	}
	return nil
}

// wait polls until the targets serve: responses from c.nodes distinct
// nodes, or (servers that do not name themselves) a 200 from each target.
func wait(c config) error {
	deadline := time.Now().Add(c.timeout)
	seen := map[string]bool{}
	okTargets := map[string]bool{}
	cl := newClient(0, &c)
	for i := 0; time.Now().Before(deadline); i++ {
		cl.target = c.targets[i%len(c.targets)]
		r := cl.do(http.MethodGet, false)
		if r.status == http.StatusOK {
			okTargets[cl.target] = true
			if r.node != "" {
				seen[r.node] = true
			}
		}
		if len(seen) >= c.nodes || (len(seen) == 0 && len(okTargets) == len(c.targets)) {
			fmt.Printf("ready nodes=%d targets=%d\n", len(seen), len(okTargets))
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out: saw nodes " + strings.Join(keys(seen), ",") + " and " + strconv.Itoa(len(okTargets)) + " targets answering 200")
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

// cpuNow returns the CPU time, user and system, in ms, used so far by
// this process and then by each of c.cpuPids (-1 for one that is gone).
func (c *config) cpuNow() []float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	ms := []float64{float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6}
	for _, np := range c.cpuPids {
		ms = append(ms, procCPU(np.pid))
	}
	return ms
}

// procCPU reads utime and stime of pid from /proc, in ms; Linux reports
// them in clock ticks of 10 ms (USER_HZ 100).
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 on
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) * 10
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
