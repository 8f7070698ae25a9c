package faultsuite

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/troupe-go/troupe/internal/netns"
)

const (
	clusterSize = 5
	numSessions = 6
	// faultDwell is how long the workload runs under a fault once the
	// cluster has reacted to it: a length of the scenario, not a wait for
	// a condition.
	faultDwell = 2 * time.Second
	// starveFor is how long a starved node runs at a fifth of its speed.
	starveFor = 8 * time.Second
	// digestWithin is the promise checked after a heal: every node's
	// naming tree is the same within this time.
	digestWithin = 30 * time.Second
)

// scenario is one fault: inject it, hold it until the cluster reacted,
// and undo it.
type scenario struct {
	name string
	run  func(r *round)
}

var scenarios = []scenario{
	{"kill-9 primary and restart", (*round).killPrimary},
	{"partition 2|3", (*round).partitionUneven},
	{"one-way isolation", (*round).muteSender},
	{"SIGSTOP/SIGCONT", (*round).pause},
	{"CPU starvation (SIGSTOP duty cycle)", (*round).starve},
	{"partition 2|2|1 (no majority)", (*round).partitionNoMajority},
}

// ciScenarios is the two-minute selection of TestFaultSuite.
var ciScenarios = scenarios

func TestFaultSuite(t *testing.T) {
	rounds := 0
	if s := os.Getenv("TROUPE_FAULT_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("TROUPE_FAULT_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	if rounds == 0 && os.Getenv("TROUPE_FAULTS") != "1" {
		t.Skip("the fault suite runs only with TROUPE_FAULTS=1 (the CI variant) or TROUPE_FAULT_ROUNDS=n (the long run); it needs root and iproute2")
	}
	if !netns.Run(t) {
		return
	}
	for _, tool := range []string{"ip", "tc", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("the fault suite needs %s (Debian: iproute2 for ip and tc): %v", tool, err)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + " (CI=true: refusing to skip)")
			}
			t.Skip(msg)
		}
	}

	plan := ciScenarios
	if rounds > 0 {
		seed := uint64(time.Now().UnixNano())
		t.Logf("long run: %d rounds, seed %d", rounds, seed)
		rng := rand.New(rand.NewPCG(seed, 0))
		pool := scenarios
		if only := os.Getenv("TROUPE_FAULT_SCENARIO"); only != "" {
			pool = slices.DeleteFunc(slices.Clone(scenarios), func(sc scenario) bool { return !strings.Contains(sc.name, only) })
			if len(pool) == 0 {
				t.Fatalf("TROUPE_FAULT_SCENARIO=%q names no scenario", only)
			}
		}
		plan = nil
		for range rounds {
			plan = append(plan, pool[rng.IntN(len(pool))])
		}
	}

	began := time.Now()
	c := startCluster(t, clusterSize)
	t.Logf("cluster of %d up in %v", clusterSize, time.Since(began).Round(time.Millisecond))
	var sum summary
	sum.debug = make([][]debugInfo, clusterSize)
	for k, sc := range plan {
		r := &round{t: t, c: c, n: k + 1, rng: rand.New(rand.NewPCG(uint64(k), 1))}
		res := r.play(sc)
		sum.add(res)
		t.Logf("round %d (%s): %d ops, %d violations, %d lost writes, failovers %v, names equal after %v, singleton settled after %v, in %v",
			k+1, sc.name, res.ops, len(res.violations), res.lost, res.failovers, res.digestAfter.Round(time.Millisecond),
			res.singletonAfter.Round(time.Millisecond), res.took.Round(time.Millisecond))
		for _, v := range res.violations {
			t.Errorf("round %d (%s): %s", k+1, sc.name, v)
		}
		if res.fatal != "" {
			t.Fatalf("round %d (%s): %s", k+1, sc.name, res.fatal)
		}
		for i := range c.nodes {
			if d, ok := c.quietDebug(i); ok {
				sum.debug[i] = append(sum.debug[i], d)
			}
		}
	}
	for _, g := range sum.growth() {
		t.Error(g.msg)
		t.Logf("goroutines of %s:\n%s", c.nodes[g.node].name, c.goroutines(g.node))
	}
	if os.Getenv("TROUPE_FAULT_GOROUTINES") != "" {
		for i, p := range c.nodes {
			t.Logf("goroutines of %s after the last round:\n%s", p.name, c.goroutines(i))
		}
	}
	sum.took = time.Since(began)
	text := sum.String()
	fmt.Print(text)
	if path := os.Getenv("TROUPE_FAULT_SUMMARY"); path != "" {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// round is one scenario under the workload, with its checks.
type round struct {
	t   *testing.T
	c   *cluster
	n   int
	rng *rand.Rand
	w   *workload

	// What the scenario records for the checks.
	killedAt time.Duration // 0: nobody's primary was killed
	killed   []int         // sessions whose primary was killed
	healedAt time.Time
}

type result struct {
	ops            int
	violations     []string
	lost           int
	failovers      []time.Duration
	digestAfter    time.Duration
	singletonAfter time.Duration
	took           time.Duration
	fatal          string // the cluster did not come back: no point going on
}

func (r *round) play(sc scenario) (res result) {
	began := time.Now()
	defer func() { res.took = time.Since(began) }()
	r.w = &workload{c: r.c, epoch: began, round: r.n, hist: &History{}}
	// Operations are timed from here; the nodes' logs use the wall clock.
	r.t.Logf("round %d began at %s UTC", r.n, began.UTC().Format("15:04:05.000"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.w.createSessions(ctx, numSessions); err != nil {
		res.fatal = err.Error()
		return res
	}
	r.w.start()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			r.w.stop()
		}
	}
	defer stop()
	// The cluster works before the fault: every session answered twice.
	if err := r.waitServed(2, 0, 30*time.Second); err != nil {
		res.fatal = "before the fault: " + err.Error()
		return res
	}

	sc.run(r)
	if r.healedAt.IsZero() {
		r.healedAt = time.Now()
	}
	convCtx, convCancel := context.WithTimeout(context.Background(), 90*time.Second)
	err := r.c.waitConverged(convCtx)
	convCancel()
	if err != nil {
		res.fatal = "after the heal: " + err.Error()
		return res
	}
	// Every session serves again after the heal.
	if err := r.waitServed(2, r.w.now(), 30*time.Second); err != nil {
		res.violations = append(res.violations, "after the heal: "+err.Error())
	}
	stop()

	res.digestAfter, err = r.checkDigests()
	if err != nil {
		res.violations = append(res.violations, err.Error())
	}
	res.singletonAfter, err = r.checkSingleton()
	if err != nil {
		res.violations = append(res.violations, err.Error())
	}
	r.w.mu.Lock()
	res.violations = append(res.violations, r.w.mu.violations...)
	r.w.mu.Unlock()
	r.checkSessions(&res)
	return res
}

// waitServed waits until every session has had n successful operations
// that began after from.
func (r *round) waitServed(n int, from time.Duration, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, func() error {
		for _, s := range r.w.sessions {
			ok := 0
			for _, o := range r.w.hist.Session(s.idx) {
				if o.Call >= from && !o.Unknown && o.Value != Absent {
					ok++
				}
			}
			if ok < n {
				return fmt.Errorf("session %d had %d successful operations since %v", s.idx, ok, from.Round(time.Millisecond))
			}
		}
		return nil
	})
}

// waitMembers waits until node i's member list has want members, or
// within has passed (the scenario goes on anyway: the check is in what
// the workload saw, not here).
func (r *round) waitMembers(i, want int, within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	err := poll(ctx, 100*time.Millisecond, func() error {
		var m struct{ Members []string }
		if _, err := r.c.callTimeout(time.Second, i, "GET", "/members", &m); err != nil {
			return err
		}
		if len(m.Members) != want {
			return fmt.Errorf("%s sees %v", r.c.nodes[i].name, m.Members)
		}
		return nil
	})
	if err != nil {
		r.t.Logf("round %d: %v", r.n, err)
	}
}

// dwell lets the workload run under the fault.
func dwell() { time.Sleep(faultDwell) }

func (r *round) killPrimary() {
	victim := r.c.index(mustRoute(r.w.sessions[0].ID()))
	if victim < 0 {
		victim = r.rng.IntN(clusterSize)
	}
	vid := r.c.nodes[victim].id
	for _, s := range r.w.sessions {
		if mustRoute(s.ID()) == vid {
			r.killed = append(r.killed, s.idx)
		}
	}
	r.killedAt = r.w.now()
	r.c.kill(victim)
	// Hold until every session of the victim answered elsewhere.
	if err := r.waitServedSessions(r.killed, r.killedAt, 45*time.Second); err != nil {
		r.t.Logf("round %d: after kill -9 of %s: %v", r.n, r.c.nodes[victim].name, err)
	}
	dwell()
	r.c.start(victim)
}

func (r *round) waitServedSessions(idx []int, from time.Duration, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, func() error {
		for _, k := range idx {
			if firstSuccess(r.w.hist.Session(k), from) < 0 {
				return fmt.Errorf("session %d not served since %v", k, from)
			}
		}
		return nil
	})
}

// firstSuccess is the return time of the first successful operation of
// ops that returned after from, or -1.
func firstSuccess(ops []Op, from time.Duration) time.Duration {
	first := time.Duration(-1)
	for _, o := range ops {
		if !o.Unknown && o.Value != Absent && o.Return > from && (first < 0 || o.Return < first) {
			first = o.Return
		}
	}
	return first
}

func mustRoute(id string) string {
	r, err := parseRoute(id)
	if err != nil {
		return ""
	}
	return r
}

func (r *round) partitionUneven() {
	perm := r.rng.Perm(clusterSize)
	minority, majority := perm[:2], perm[2:]
	r.t.Logf("round %d: partition %v | %v", r.n, r.names(minority), r.names(majority))
	r.c.net.Partition(minority, majority)
	r.waitMembers(majority[0], len(majority), 30*time.Second)
	dwell()
	r.c.net.Heal()
}

func (r *round) partitionNoMajority() {
	perm := r.rng.Perm(clusterSize)
	a, b, alone := perm[:2], perm[2:4], perm[4:]
	r.t.Logf("round %d: partition %v | %v | %v", r.n, r.names(a), r.names(b), r.names(alone))
	r.c.net.Partition(a, b, alone)
	r.waitMembers(a[0], 2, 30*time.Second)
	dwell()
	r.c.net.Heal()
}

func (r *round) muteSender() {
	victim := r.rng.IntN(clusterSize)
	r.t.Logf("round %d: %s can receive but not send", r.n, r.c.nodes[victim].name)
	r.c.net.MuteSender(victim)
	r.waitMembers((victim+1)%clusterSize, clusterSize-1, 30*time.Second)
	dwell()
	r.c.net.Heal()
}

func (r *round) pause() {
	victim := r.rng.IntN(clusterSize)
	r.t.Logf("round %d: SIGSTOP %s", r.n, r.c.nodes[victim].name)
	r.c.signal(victim, syscall.SIGSTOP)
	r.waitMembers((victim+1)%clusterSize, clusterSize-1, 30*time.Second)
	dwell()
	r.c.signal(victim, syscall.SIGCONT)
}

// starve runs one node at a fifth of its speed: stopped 80 ms out of
// every 100 ms. A cgroup's cpu.max would do the same more smoothly, but
// needs a writable cgroup v2 hierarchy, which containers often lack; a
// duty cycle of signals works wherever the test runs, and its pauses
// (80 ms) are in the range a starved process sees.
func (r *round) starve() {
	victim := r.rng.IntN(clusterSize)
	r.t.Logf("round %d: starving %s", r.n, r.c.nodes[victim].name)
	ctx, cancel := context.WithTimeout(context.Background(), starveFor)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r.c.signal(victim, syscall.SIGSTOP)
			if !pace(ctx, 80*time.Millisecond) {
				break
			}
			r.c.signal(victim, syscall.SIGCONT)
			if !pace(ctx, 20*time.Millisecond) {
				break
			}
		}
		r.c.signal(victim, syscall.SIGCONT)
	}()
	wg.Wait()
}

func (r *round) names(idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, r.c.nodes[i].name)
	}
	return out
}

// checkDigests waits until every node's naming tree is the same, and
// returns how long after the heal that was.
func (r *round) checkDigests() (time.Duration, error) {
	ctx, cancel := context.WithDeadline(context.Background(), r.healedAt.Add(digestWithin))
	defer cancel()
	err := poll(ctx, 100*time.Millisecond, func() error {
		var first string
		for i := range r.c.nodes {
			var d struct {
				Digest string
				Names  int
			}
			if _, err := r.c.callTimeout(2*time.Second, i, "GET", "/digest", &d); err != nil {
				return err
			}
			got := fmt.Sprintf("%s (%d names)", d.Digest[:12], d.Names)
			if i == 0 {
				first = got
			} else if got != first {
				return fmt.Errorf("naming trees differ: %s has %s, %s has %s", r.c.nodes[0].name, first, r.c.nodes[i].name, got)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("naming trees not equal within %v of the heal: %v%s", digestWithin, err, r.namesDiff())
	}
	return time.Since(r.healedAt), nil
}

// namesDiff lists the bindings that not every node shows, with the nodes
// that show each, for the report of trees that stayed apart.
func (r *round) namesDiff() string {
	shownBy := map[string][]string{}
	for i, n := range r.c.nodes {
		var d struct{ Lines []string }
		if _, err := r.c.callTimeout(2*time.Second, i, "GET", "/digest?lines", &d); err != nil {
			return fmt.Sprintf("\n\t(%s: %v)", n.name, err)
		}
		for _, l := range d.Lines {
			shownBy[l] = append(shownBy[l], n.name)
		}
	}
	var b strings.Builder
	for _, l := range slices.Sorted(maps.Keys(shownBy)) {
		if len(shownBy[l]) < len(r.c.nodes) {
			fmt.Fprintf(&b, "\n\t%s shown by %v", l, shownBy[l])
		}
	}
	for i, n := range r.c.nodes {
		var d debugInfo
		if _, err := r.c.callTimeout(10*time.Second, i, "GET", "/debug", &d); err == nil {
			fmt.Fprintf(&b, "\n\t%s naming counters: %v", n.name, d.Naming)
		}
	}
	return b.String()
}

// checkSingleton waits until exactly one node runs the singleton.
func (r *round) checkSingleton() (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := poll(ctx, 100*time.Millisecond, func() error {
		var running []string
		for i, st := range r.w.singletonStates() {
			if st.Running {
				running = append(running, fmt.Sprintf("%s (token %d)", r.c.nodes[i].name, st.Token))
			}
		}
		if len(running) != 1 {
			return fmt.Errorf("singleton running on %v", running)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("singleton not settled on one node within 30s: %v", err)
	}
	return time.Since(r.healedAt), nil
}

// checkSessions reads every session a last time, then checks its
// history: linearizable, and no acknowledged write lost.
func (r *round) checkSessions(res *result) {
	for _, s := range r.w.sessions {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var final Op
		attempt := 0
		err := poll(ctx, 200*time.Millisecond, func() error {
			order := r.w.routeOrder(s.ID())
			attempt++
			op, ok := r.w.sessionOp(ctx, 99, s, order[(attempt-1)%len(order)], s.ID(), false)
			if !ok {
				return fmt.Errorf("final read of session %d got no answer", s.idx)
			}
			final = op
			return nil
		})
		cancel()
		if err != nil {
			res.violations = append(res.violations, err.Error())
			continue
		}
		r.w.hist.Add(final)
		ops := r.w.hist.Session(s.idx)
		res.ops += len(ops)
		if lost := LostWrites(ops, final.Value); len(lost) > 0 {
			res.lost += len(lost)
			res.violations = append(res.violations, fmt.Sprintf(
				"session %d (logged as session=%s): final read %v loses %d acknowledged writes, the first:\n\t%v\n",
				s.idx, s.logRef(), final, len(lost), lost[0]))
		}
		switch Linearizable(ops, 20*time.Second) {
		case porcupine.Illegal:
			msg := fmt.Sprintf("session %d (logged as session=%s): history of %d operations is not linearizable", s.idx, s.logRef(), len(ops))
			if read, w, w2, ok := StaleRead(ops); ok && !w.Write {
				msg += fmt.Sprintf("; read %v\n\treturned a value no write wrote; around it:\n%s",
					read, Excerpt(ops, read.Call-time.Second, read.Return, 25))
			} else if ok {
				msg += fmt.Sprintf("; read %v\n\treturned the value of %v\n\treplaced by %v before it began; around it:\n%s",
					read, w, w2, Excerpt(ops, read.Call-time.Second, read.Return, 25))
			} else {
				msg += ":\n" + Excerpt(ops, 0, ops[len(ops)-1].Return, 25)
			}
			res.violations = append(res.violations, msg)
		case porcupine.Unknown:
			// A history not checked is not a pass.
			res.violations = append(res.violations, fmt.Sprintf("session %d: porcupine ran out of time on %d operations: not checked", s.idx, len(ops)))
		}
	}
	for _, k := range r.killed {
		if d := firstSuccess(r.w.hist.Session(k), r.killedAt); d >= 0 {
			res.failovers = append(res.failovers, d-r.killedAt)
		}
	}
}

// summary adds up the rounds.
type summary struct {
	rounds, ops, violations, lost int
	byKind                        map[string]int
	failovers                     []time.Duration
	debug                         [][]debugInfo // per node, per round
	took                          time.Duration
}

func (s *summary) add(r result) {
	s.rounds++
	s.ops += r.ops
	s.violations += len(r.violations)
	s.lost += r.lost
	s.failovers = append(s.failovers, r.failovers...)
	if s.byKind == nil {
		s.byKind = map[string]int{}
	}
	for _, v := range r.violations {
		s.byKind[kindOf(v)]++
	}
}

func kindOf(v string) string {
	switch {
	case strings.Contains(v, "not linearizable"):
		return "not linearizable"
	case strings.Contains(v, "acknowledged writes"):
		return "lost writes"
	case strings.HasPrefix(v, "pin "):
		return "pin token regression"
	case strings.HasPrefix(v, "singleton:"):
		return "singleton token regression"
	case strings.HasPrefix(v, "singleton not settled"):
		return "singleton not settled"
	case strings.HasPrefix(v, "naming trees"):
		return "naming trees differ"
	}
	return "other"
}

// growth reports nodes whose goroutines or heap grew without bound
// across rounds, comparing the first and last samples of one process
// (a restarted node starts a new series).
// growth is a node whose goroutines or heap grew across rounds.
type growth struct {
	node int
	msg  string
}

func (s *summary) growth() []growth {
	var msgs []growth
	for node, series := range s.debug {
		if len(series) < 3 {
			continue
		}
		last := series[len(series)-1]
		i := slices.IndexFunc(series, func(d debugInfo) bool { return d.PID == last.PID })
		if len(series)-i < 3 {
			continue
		}
		first := series[i]
		if last.Goroutines > 2*first.Goroutines+50 {
			msgs = append(msgs, growth{node, fmt.Sprintf("pid %d: goroutines grew from %d to %d over %d rounds", last.PID, first.Goroutines, last.Goroutines, len(series)-i)})
		}
		if last.HeapAlloc > 4*first.HeapAlloc+32<<20 {
			msgs = append(msgs, growth{node, fmt.Sprintf("pid %d: heap grew from %d to %d bytes over %d rounds", last.PID, first.HeapAlloc, last.HeapAlloc, len(series)-i)})
		}
	}
	return msgs
}

func (s *summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fault suite | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| rounds | %d (%d nodes, %v) |\n", s.rounds, clusterSize, s.took.Round(time.Second))
	fmt.Fprintf(&b, "| session operations checked | %d |\n", s.ops)
	fmt.Fprintf(&b, "| violations | %d |\n", s.violations)
	kinds := make([]string, 0, len(s.byKind))
	for k := range s.byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "| — %s | %d |\n", k, s.byKind[k])
	}
	fmt.Fprintf(&b, "| acknowledged writes lost | %d |\n", s.lost)
	fmt.Fprintf(&b, "| failover (kill -9 to first answer) | median %v, p99 %v, n=%d |\n",
		Percentile(s.failovers, 50).Round(time.Millisecond), Percentile(s.failovers, 99).Round(time.Millisecond), len(s.failovers))
	for i, series := range s.debug {
		if len(series) == 0 {
			continue
		}
		first, last := series[0], series[len(series)-1]
		fmt.Fprintf(&b, "| node n%d goroutines, heap | %d → %d, %.1f → %.1f MiB |\n", i+1,
			first.Goroutines, last.Goroutines, float64(first.HeapAlloc)/(1<<20), float64(last.HeapAlloc)/(1<<20))
	}
	return b.String()
}
